"""The main job on the embedded default (what ``make demo`` runs), planned as command lines.

1. generate a synthetic Broden dataset (skipped when already there),
2. use the committed demo CNN checkpoint (train one if it is missing),
3. scripts/extract.py on several layers,
4. scripts/score.py on every extracted layer.

:func:`plan_demo` looks at what exists and returns the steps (pipeline/commands.py runs
them); each check is on the output of the step it guards, so planning first is the same
as deciding step by step. Nothing here imports torch (``make demo`` on a fresh machine).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from pipeline.commands import ROOT, Note, Step, command, script

# the file of pipeline.models.demo.DEMO_WEIGHTS, named here without importing torch
DEMO_WEIGHTS = ROOT / "pipeline" / "demo_weights" / "demo_cnn.pt"
DEMO_LAYERS = ("conv2", "conv3", "conv4", "conv5")


@dataclass(frozen=True)
class DemoJob:
    """The demo's dataset directory, its run directory and the steps that make them."""
    dataset: Path
    run_dir: Path
    steps: list[Step]


def plan_demo(out: str | Path, num_images: int = 2000, seed: int = 2,
              layers: Sequence[str] = DEMO_LAYERS, device: str = "auto", quiet: bool = False,
              python: str = sys.executable) -> DemoJob:
    """The demo's steps into ``out``: OUT/broden_synthetic_<N>_s<seed> (generated unless
    its index.csv exists), the demo CNN trained into OUT/training and installed if
    :data:`DEMO_WEIGHTS` is missing, then extract.py of ``layers`` into OUT/run and
    score.py of it on ``device``. ``quiet``: every command without progress bars."""
    out = Path(out)
    dataset = out / f"broden_synthetic_{num_images}_s{seed}"
    run_dir = out / "run"
    no_bars = ["--quiet"] if quiet else []
    steps: list[Step] = []
    if not (dataset / "index.csv").is_file():
        steps.append(command(python, script("make_synthetic_broden.py"), "--out", dataset,
                             "--num-images", num_images, "--seed", seed, *no_bars))
    else:
        steps.append(Note(f"dataset: {dataset} (already generated)"))
    if not DEMO_WEIGHTS.is_file():
        steps.append(command(python, script("train_demo_model.py"), "--out",
                             out / "training", "--install", *no_bars))
    steps.append(command(python, script("extract.py"), "--dataset", dataset, "--model",
                         "demo", "--layers", ",".join(layers), "--out", run_dir, "--device",
                         device, *no_bars))
    steps.append(command(python, script("score.py"), run_dir, "--device", device, *no_bars))
    return DemoJob(dataset, run_dir, steps)
