#!/usr/bin/env python
"""The main job on the embedded default (what `make demo` runs).

1. generate a synthetic Broden dataset (skipped when already there),
2. use the committed demo CNN checkpoint (trains one if it is missing),
3. scripts/extract.py on several layers,
4. scripts/score.py on every extracted layer,
and say where the results are. Each step is the real command line, printed first.
"""
from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401
from _bootstrap import ROOT

DEMO_WEIGHTS = ROOT / "pipeline" / "demo_weights" / "demo_cnn.pt"


def run(cmd: list[str]) -> None:
    print("\n$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    t0 = time.perf_counter()
    r = subprocess.run(cmd)
    if r.returncode != 0:
        sys.exit(f"demo: step failed (exit {r.returncode}): {' '.join(cmd)}")
    print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/demo", help="where the dataset and run go")
    p.add_argument("--num-images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=2,
                   help="dataset seed (the demo model was trained on seed 1 images)")
    p.add_argument("--layers", default="conv2,conv3,conv4,conv5")
    p.add_argument("--device", default="auto")
    a = p.parse_args(argv)
    out = Path(a.out)
    dataset = out / f"broden_synthetic_{a.num_images}_s{a.seed}"
    run_dir = out / "run"
    py = sys.executable
    t0 = time.perf_counter()
    if not (dataset / "index.csv").is_file():
        run([py, str(ROOT / "scripts/make_synthetic_broden.py"), "--out", str(dataset),
             "--num-images", str(a.num_images), "--seed", str(a.seed)])
    else:
        print(f"dataset: {dataset} (already generated)")
    if not DEMO_WEIGHTS.is_file():
        run([py, str(ROOT / "scripts/train_demo_model.py"), "--out", str(out / "training"),
             "--install"])
    run([py, str(ROOT / "scripts/extract.py"), "--dataset", str(dataset), "--model", "demo",
         "--layers", a.layers, "--out", str(run_dir), "--device", a.device])
    run([py, str(ROOT / "scripts/score.py"), str(run_dir), "--device", a.device])
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f} s")
    print(f"results: {run_dir / 'results'}  (per layer: <layer>.csv in the NetDissect layout, "
          f"<layer>.json results document, <layer>.html page)")
    print(f"try re-scoring without replay: {py} scripts/score.py {run_dir} --iou-threshold 0.08")
    return 0


if __name__ == "__main__":
    sys.exit(main())
