"""Concept vectors (Net2Vec): per concept, a weighting of a layer's units learned by
per-pixel logistic regression, against the best single unit on held-out images.

    netdissect concept-vectors RUN --layer L [--concepts a,b] [--quantile Q]
        [--train-fraction 0.5] [--pixels N] [--seed 0] [--device cpu] [--steps 100]
        [--l2 1e-4] [--weighting balanced|population] [--threshold 0.5]
        [--label-cache PATH] [--dataset DIR] [--results-dir DIR] [--quiet]

The experiment is pipeline/concept_vectors/experiment.py's concept_vectors; this command
parses and prints. The images are split at random (--seed) into training images
(--train-fraction) and held-out ones; each concept's weights are fit on a sample of at
most --pixels pixels of the training images (half of them the concept's pixels, the rest
other pixels of images of its category); its mask sigmoid(w . a + b) > --threshold and
the best single unit's mask (the unit best on the training images, at T_k of
--quantile) are counted exactly on the held-out images. Writes
RUN/results/[q<quantile>/]<layer>.concept_vectors.csv (one row per concept, units
numbered from 1), .npy (the weights, one row per concept), .png (single unit against
vector IoU, by category) and .json (the versioned document); a scoring's results document
and page at the same quantile there are updated to show them.
"""
from __future__ import annotations

import argparse
import sys

from cache.labels import LabelCacheError
from cache.store import RunError
from pipeline import cli, commandline
from pipeline.broden import BrodenError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by scripts/extract.py")
    cli.add_layers(p, required=True, help="the layer of the run (one)")
    p.add_argument("--concepts", default=None,
                   help="comma-separated concept names (default: every concept with pixels "
                        "on both the training and the held-out images)")
    p.add_argument("--quantile", type=float, default=0.005,
                   help="activation quantile q of the single units' T_k (default 0.005)")
    p.add_argument("--train-fraction", type=float, default=0.5,
                   help="fraction of the images the vectors are fit on (default 0.5)")
    p.add_argument("--pixels", type=int, default=10000,
                   help="sampled pixels per concept, at most half of them positives "
                        "(default 10000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split and the samples")
    cli.add_device(p, help="where torch runs: cpu (default), cuda, cuda:N or auto")
    p.set_defaults(device="cpu")
    p.add_argument("--steps", type=int, default=100, help="L-BFGS iterations (default 100)")
    p.add_argument("--l2", type=float, default=1e-4,
                   help="L2 penalty on the RMS-scaled weights (default 1e-4; 0: none)")
    p.add_argument("--weighting", choices=["balanced", "population"], default="balanced",
                   help="loss weight of positives vs negatives: balanced (Net2Vec's alpha; "
                        "default) or population (their share of the pixels)")
    p.add_argument("--threshold", type=float, default=0.5,
                   help="the vector's mask is sigmoid(w . a + b) > this (default 0.5)")
    cli.add_run_data(p)
    p.add_argument("--results-dir", default=None,
                   help="write the files here instead of RUN/results")
    cli.add_quiet(p)


def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if len(a.layers) != 1:
        p.error(f"--layer: one layer at a time, got {a.layers}")


def run(a: argparse.Namespace) -> int:
    def body() -> None:
        from pipeline.concept_vectors.experiment import concept_vectors
        frame, _ = concept_vectors(
            a.run, a.layers[0], concepts=cli.comma_list(a.concepts), quantile=a.quantile,
            train_fraction=a.train_fraction, pixels_per_concept=a.pixels, seed=a.seed,
            device=a.device, label_cache=a.label_cache, progress=not a.quiet,
            steps=a.steps, l2=a.l2, weighting=a.weighting, threshold=a.threshold,
            results_dir=a.results_dir, dataset=a.dataset)
        from pipeline.concept_vectors.document import numbered_from_one
        cols = ["concept", "category", "unit", "unit_iou", "vector_iou", "units_50",
                "units_90"]                 # units from 1, as in the files
        print(numbered_from_one(frame)[cols].to_string(index=False,
                                                       float_format=lambda v: f"{v:.3f}"))
        better = int((frame["vector_iou"] > frame["unit_iou"]).sum())
        print(f"{better} of {len(frame)} concepts: the vector's held-out IoU beats the best "
              f"single unit's (mean {frame['vector_iou'].mean():.3f} vs "
              f"{frame['unit_iou'].mean():.3f})")
        for k in ("csv", "npy", "png", "json"):
            print(f"  {k}: {frame.attrs[k]}")

    return cli.run_main(
        body, (BrodenError, LabelCacheError, RunError),
        disk_note="nothing but the thresholds is stored in the run before the results: "
                  "fix the cause and rerun the same command",
        interrupt_note="nothing was written; rerun the same command",
        read_only_note="thresholds and results are written into the run: copy it to a "
                       "writable place")


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
