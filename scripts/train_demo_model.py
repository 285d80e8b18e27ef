#!/usr/bin/env python
"""Train the demo CNN (pipeline/models/demo.py DemoCNN) to classify synthetic Broden scenes.

Example (what made pipeline/demo_weights/demo_cnn.pt; see the JSON next to it):
    python scripts/train_demo_model.py --dataset data/synthetic_train_s1_n4000 \\
        --generate-images 4000 --generate-seed 1 --out runs/demo_training \\
        --iterations 1200 --save-at 0,100,300,600,1200 --eval-every 100 --install

--dataset is generated first (pipeline/synthetic/writer.py) when --generate-images is given
and the directory has no index.csv; without --dataset, the recipe's dataset above is
generated and used. Checkpoints: OUT/demo_cnn_iter*.pt at the --save-at iterations,
OUT/demo_cnn.pt + OUT/demo_cnn.json at the end; --install copies the final pair to
pipeline/demo_weights/.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from pathlib import Path

import _bootstrap  # repo root on sys.path

from pipeline.broden import BrodenDataset, BrodenError  # noqa: E402
from pipeline.models.demo import DEMO_WEIGHTS  # noqa: E402
from pipeline.models.train import TrainConfig, train_demo  # noqa: E402


def _ints(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")


def _size(text: str) -> tuple[int, int]:
    v = _ints(text.lower().replace("x", ","))
    if len(v) == 1:
        v = v * 2
    if len(v) != 2 or min(v) < 1:
        raise argparse.ArgumentTypeError(f"--input-size: expected S or H,W, got {text!r}")
    return v[0], v[1]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default=None,
                   help="Broden directory with a scene column (default: generate "
                        "data/synthetic_train_s1_n4000 as for the committed weights)")
    p.add_argument("--out", required=True, help="directory for checkpoints")
    p.add_argument("--generate-images", type=int, default=None,
                   help="generate a synthetic Broden of this many images into --dataset "
                        "if it has no index.csv")
    p.add_argument("--generate-seed", type=int, default=0)
    p.add_argument("--image-size", type=int, default=224, help="generated image size")
    p.add_argument("--seg-size", type=int, default=112, help="generated segmentation size")
    p.add_argument("--iterations", type=int, default=1200)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--input-size", type=_size, default=None,
                   help="S or H,W (default: the dataset's image size)")
    p.add_argument("--save-at", type=_ints, default=[], help="e.g. 0,100,300,1000")
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-batchnorm", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--conv5-width", type=int, default=256)
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--install", action="store_true",
                   help=f"copy the final checkpoint and JSON to {DEMO_WEIGHTS.parent}")
    a = p.parse_args(argv)
    if a.dataset is None:
        a.dataset = str(_bootstrap.ROOT / "data" / "synthetic_train_s1_n4000")
        a.generate_images = a.generate_images or 4000
        a.generate_seed = 1

    meta = {"command": "python " + " ".join(shlex.quote(x) for x in
                                            ["scripts/train_demo_model.py", *sys.argv[1:]])}
    ds_dir = Path(a.dataset)
    try:
        if a.generate_images and not (ds_dir / "index.csv").is_file():
            from pipeline.synthetic.writer import write_dataset
            print(f"generating {a.generate_images} synthetic images into {ds_dir}")
            write_dataset(ds_dir, num_images=a.generate_images, image_size=a.image_size,
                          seg_size=a.seg_size, seed=a.generate_seed)
        ds = BrodenDataset(ds_dir)
        meta["dataset"] = {"path": str(ds_dir), "fingerprint": ds.fingerprint(),
                           "num_images": len(ds), "image_size": list(ds.image_size()),
                           "seg_size": list(ds.segmentation_size())}
        if a.generate_images:
            meta["dataset"]["generator"] = {
                "function": "pipeline.synthetic.writer.write_dataset",
                "num_images": a.generate_images, "seed": a.generate_seed,
                "image_size": a.image_size, "seg_size": a.seg_size}
        cfg = TrainConfig(dataset=ds_dir, out_dir=a.out, iterations=a.iterations,
                          batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
                          input_size=a.input_size, save_at=a.save_at,
                          eval_every=a.eval_every, seed=a.seed,
                          batchnorm=not a.no_batchnorm, dropout=a.dropout,
                          conv5_width=a.conv5_width, threads=a.threads)
        r = train_demo(cfg, meta=meta)
    except (BrodenError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; checkpoints saved so far are kept", file=sys.stderr)
        return 130
    print(f"done in {r.seconds:.0f} s: {r.train_images} train / {r.val_images} val images, "
          f"{len(r.classes)} classes; train acc {r.train_accuracy:.3f}, val acc "
          f"{r.val_accuracy:.3f} (chance {r.chance:.3f}, majority {r.majority:.3f})")
    out = Path(a.out)
    if a.install:
        DEMO_WEIGHTS.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(out / "demo_cnn.pt", DEMO_WEIGHTS)
        shutil.copyfile(out / "demo_cnn.json", DEMO_WEIGHTS.with_suffix(".json"))
        print(f"installed {DEMO_WEIGHTS} ({DEMO_WEIGHTS.stat().st_size / 2**20:.1f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
