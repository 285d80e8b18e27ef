"""Train the demo CNN (pipeline/models/demo.py DemoCNN) to classify synthetic Broden scenes.

    netdissect train-demo --out DIR [--dataset BRODEN_DIR]
        [--generate-images N --generate-seed S] [--iterations 1200] [--save-at 0,100,...]
        [--eval-every 100] [--no-batchnorm] [--dropout P] [--conv5-width 256] [--install]
        [--quiet]

Example (what made pipeline/demo_weights/demo_cnn.pt; see the JSON next to it):
    python scripts/train_demo_model.py --dataset data/synthetic_train_s1_n4000 \\
        --generate-images 4000 --generate-seed 1 --out runs/demo_training \\
        --iterations 1200 --save-at 0,100,300,600,1200 --eval-every 100 --install

--dataset is generated first (pipeline/synthetic/writer.py) when --generate-images is given
and the directory has no index.csv; without --dataset, the recipe's dataset above is
generated and used. Checkpoints: OUT/demo_cnn_iter*.pt at the --save-at iterations,
OUT/demo_cnn.pt + OUT/demo_cnn.json at the end; --install copies the final pair to
pipeline/demo_weights/. The work is pipeline/models/train.py (prepare_dataset,
training_meta, train_demo, install_weights); this command parses and prints
(`python scripts/train_demo_model.py` takes the same arguments; the checkpoint's JSON
records the command as that).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

from pipeline import cli, commandline
from pipeline.broden import BrodenError
from pipeline.models.demo import DEMO_WEIGHTS
from pipeline.models.train import (TrainConfig, install_weights, prepare_dataset,
                                   train_demo, training_meta)


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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", default=None,
                   help="Broden directory with a scene column (default: generate "
                        "data/synthetic_train_s1_n4000 as for the committed weights)")
    p.add_argument("--out", required=True, help="directory for checkpoints")
    p.add_argument("--generate-images", type=int, default=None,
                   help="generate a synthetic Broden of this many images into --dataset "
                        "if it has no index.csv")
    p.add_argument("--generate-seed", type=int, default=0,
                   help="seed of the generated dataset (default 0)")
    p.add_argument("--image-size", type=int, default=224, help="generated image size")
    p.add_argument("--seg-size", type=int, default=112, help="generated segmentation size")
    p.add_argument("--iterations", type=int, default=1200,
                   help="training iterations (default 1200)")
    p.add_argument("--batch-size", type=int, default=32,
                   help="images per iteration (default 32)")
    p.add_argument("--lr", type=float, default=2e-3, help="learning rate (default 0.002)")
    p.add_argument("--weight-decay", type=float, default=5e-4,
                   help="weight decay (default 0.0005)")
    p.add_argument("--input-size", type=_size, default=None,
                   help="S or H,W (default: the dataset's image size)")
    p.add_argument("--save-at", type=_ints, default=[], help="e.g. 0,100,300,1000")
    p.add_argument("--eval-every", type=int, default=0,
                   help="evaluate on the held-out images every N iterations (default 0: "
                        "at the --save-at iterations and the end only)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the initial weights and the batches (default 0)")
    p.add_argument("--no-batchnorm", action="store_true", help="a model without BatchNorm")
    p.add_argument("--dropout", type=float, default=0.0,
                   help="dropout rate after each block and before the classifier "
                        "(default 0: none)")
    p.add_argument("--conv5-width", type=int, default=256,
                   help="units of conv5 (default 256)")
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--install", action="store_true",
                   help=f"copy the final checkpoint and JSON to {DEMO_WEIGHTS.parent}")
    cli.add_quiet(p)


def run(a: argparse.Namespace) -> int:
    def body() -> None:
        cfg = TrainConfig(dataset=a.dataset or "", out_dir=a.out, iterations=a.iterations,
                          batch_size=a.batch_size, lr=a.lr, weight_decay=a.weight_decay,
                          input_size=a.input_size, save_at=a.save_at,
                          eval_every=a.eval_every, seed=a.seed,
                          batchnorm=not a.no_batchnorm, dropout=a.dropout,
                          conv5_width=a.conv5_width, threads=a.threads)
        cfg.check()                                 # before any dataset is generated
        if a.generate_images is not None and a.generate_images < 1:
            raise ValueError(f"--generate-images {a.generate_images}: must be >= 1")
        ds_dir, dataset = prepare_dataset(a.dataset, a.generate_images, a.generate_seed,
                                          a.image_size, a.seg_size, progress=not a.quiet)
        meta = training_meta(["scripts/train_demo_model.py", *a.command_argv], dataset)
        r = train_demo(dataclasses.replace(cfg, dataset=ds_dir), meta=meta)
        print(f"done in {r.seconds:.0f} s: {r.train_images} train / {r.val_images} val "
              f"images, {len(r.classes)} classes; train acc {r.train_accuracy:.3f}, val acc "
              f"{r.val_accuracy:.3f} (chance {r.chance:.3f}, majority {r.majority:.3f})")
        if a.install:
            weights = install_weights(a.out)
            print(f"installed {weights} ({weights.stat().st_size / 2**20:.1f} MiB)")

    return cli.run_main(
        body, (BrodenError,),
        disk_note="checkpoints saved so far are kept: fix the cause and rerun",
        interrupt_note="checkpoints saved so far are kept",
        read_only_note="choose a writable --out (and --dataset when generating) and rerun")


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
