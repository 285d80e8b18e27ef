#!/usr/bin/env python
"""The paper's experiments in miniature, on the embedded default (synthetic Broden + demo CNN).

    python scripts/experiments.py [--out runs/experiments] [--figures docs/figures]
        [--num-images 2000] [--variant-iterations 300] [--skip-variants]

1. by layer: conv1..conv5 of the committed demo CNN;
2. over training: conv5 of the checkpoints saved at iterations 0, 100, 300, 600, 1200
   (runs/demo_training, trained with the committed weights' command if missing);
3. regularisers and width: conv5 of the demo CNN trained for --variant-iterations without
   BatchNorm, with dropout 0.5, and with a 512-unit conv5, against the baseline's own
   checkpoint at the same iteration;
4. rotation: conv3 and conv5 of the committed model under Q^alpha, alpha = 0 .. 1.
Every step is the real command line (extract.py, score.py, compare.py, rotate.py), printed
first; comparisons go to <out>/<experiment>/comparison.{csv,png}, copied to --figures.
Runs that exist are reused, so a rerun only does what is missing.
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import _bootstrap  # noqa: F401
from _bootstrap import ROOT
from demo import run

TRAIN = ROOT / "runs" / "demo_training"
TRAIN_DATA = ROOT / "data" / "synthetic_train_s1_n4000"
ITERATIONS = (0, 100, 300, 600, 1200)


def extract_and_score(py, dataset, model, weights, layers, out: Path) -> Path:
    if not (out / "results").is_dir():
        cmd = [py, str(ROOT / "scripts/extract.py"), "--dataset", str(dataset), "--model",
               model, "--layers", layers, "--out", str(out), "--no-progress"]
        if weights:
            cmd += ["--weights", str(weights)]
        run(cmd)
        run([py, str(ROOT / "scripts/score.py"), str(out), "--quiet", "--top-images", "0"])
    return out


def compare(py, sources, out: Path, figures: Path, name: str, layers=None) -> None:
    cmd = [py, str(ROOT / "scripts/compare.py"), *map(str, sources), "--out", str(out)]
    if layers:
        cmd += ["--layers", layers]
    run(cmd)
    figures.mkdir(parents=True, exist_ok=True)
    shutil.copy(out / "comparison.png", figures / f"{name}.png")
    shutil.copy(out / "comparison.csv", figures / f"{name}.csv")


def train(py, out: Path, iterations: int, extra: list[str]) -> Path:
    ckpt = out / "demo_cnn.pt"
    if not ckpt.is_file():
        run([py, str(ROOT / "scripts/train_demo_model.py"), "--dataset", str(TRAIN_DATA),
             "--generate-images", "4000", "--generate-seed", "1", "--out", str(out),
             "--iterations", str(iterations), "--save-at", str(iterations), *extra])
    return ckpt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/experiments")
    p.add_argument("--figures", default="docs/figures")
    p.add_argument("--num-images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=2)
    p.add_argument("--variant-iterations", type=int, default=300)
    p.add_argument("--skip-variants", action="store_true")
    a = p.parse_args(argv)
    py, out, fig = sys.executable, Path(a.out), Path(a.figures)
    dataset = out / f"broden_synthetic_{a.num_images}_s{a.seed}"
    if not (dataset / "index.csv").is_file():
        run([py, str(ROOT / "scripts/make_synthetic_broden.py"), "--out", str(dataset),
             "--num-images", str(a.num_images), "--seed", str(a.seed)])

    # 1. by layer
    layers = extract_and_score(py, dataset, "demo", None, "conv1,conv2,conv3,conv4,conv5",
                               out / "layers")
    compare(py, [layers], out / "by_layer", fig, "by_layer")

    # 2. over training
    if not (TRAIN / f"demo_cnn_iter{ITERATIONS[-1]:06d}.pt").is_file():
        train(py, TRAIN, ITERATIONS[-1], ["--save-at", ",".join(map(str, ITERATIONS))])
    runs = [extract_and_score(py, dataset, "demo", TRAIN / f"demo_cnn_iter{i:06d}.pt",
                              "conv5", out / f"iter{i:06d}") for i in ITERATIONS]
    compare(py, runs, out / "over_training", fig, "over_training", layers="conv5")

    # 3. regularisers and width, against the baseline at the same iteration
    if not a.skip_variants:
        it = a.variant_iterations
        base = TRAIN / f"demo_cnn_iter{it:06d}.pt"
        variants = [("baseline", base, [])] + [
            (name, train(py, out / f"train_{name}", it, extra), extra)
            for name, extra in [("no_batchnorm", ["--no-batchnorm"]),
                                ("dropout", ["--dropout", "0.5"]),
                                ("wide_conv5", ["--conv5-width", "512"])]]
        runs = [extract_and_score(py, dataset, "demo", ckpt, "conv5", out / f"variant_{n}")
                for n, ckpt, _ in variants]
        compare(py, runs, out / "variants", fig, "variants", layers="conv5")

    # 4. rotation, of conv3 and conv5
    rot = out / "rotation"
    fig.mkdir(parents=True, exist_ok=True)
    for layer in ("conv3", "conv5"):
        run([py, str(ROOT / "scripts/rotate.py"), str(layers), "--layer", layer, "--alphas",
             "0,0.2,0.4,0.6,0.8,1", "--seed", "0", "--baseline", "combination", "--out",
             str(rot), "--quiet"])
        shutil.copy(rot / f"{layer}-seed0.png", fig / f"rotation_{layer}.png")
        shutil.copy(rot / f"{layer}-seed0.csv", fig / f"rotation_{layer}.csv")
    print(f"\nfigures and tables in {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
