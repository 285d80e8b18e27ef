#!/usr/bin/env python
"""Measure each stage: images/s, wall time, peak resident memory, bytes on disk.

    python scripts/bench.py [STAGE ...] --work DIR --num-images N
        [--dataset BRODEN_DIR] [--synthetic-activations K,h,w | --model SPEC --layers L]
        [--image-size 224 --seg-size 112] [--device auto] [--append BENCHMARKS.md]

Stages (default: all that apply, in this order): generate (synthetic Broden into
WORK/broden_N unless --dataset), labels (label cache), extract (a model, with the bare
forward loop as baseline) or activations (with --synthetic-activations: a cache of those
shapes with ReLU-like statistics, no model), quantiles (six levels), tally (IoU cube,
six levels), rescore (a new IoU threshold from the stored cube). Each stage runs in a
fresh process. The table is printed and, with --append, appended to the file together
with the machine and the command.
"""
from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import _bootstrap  # noqa: F401

from pipeline import benchmark as B
from pipeline.layer_stages import DEFAULT_LEVELS

ALL = ["generate", "labels", "extract", "activations", "quantiles", "tally", "rescore"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Benchmark the pipeline's stages.")
    p.add_argument("stages", nargs="*", help=f"subset of {ALL} (default: all that apply)")
    p.add_argument("--work", default="runs/bench", help="working directory")
    p.add_argument("--num-images", type=int, default=2000)
    p.add_argument("--dataset", help="existing Broden directory (skips generate)")
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--seg-size", type=int, default=112)
    p.add_argument("--synthetic-activations", help="K,h,w: measure a cache of these shapes")
    p.add_argument("--model", default="demo")
    p.add_argument("--layers", default="conv5")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None)
    p.add_argument("--append", help="append the table to this markdown file")
    a = p.parse_args(argv)

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    dataset = a.dataset or str(work / f"broden_{a.num_images}_{a.image_size}")
    labels = str(work / f"labels_{Path(dataset).name}.zarr")
    synth = tuple(int(v) for v in a.synthetic_activations.split(",")) \
        if a.synthetic_activations else None
    if synth:
        run, layer = str(work / f"run_synth_{'x'.join(map(str, synth))}_{a.num_images}"), \
            "synthetic"
    else:
        run, layer = str(work / f"run_{a.model.replace('/', '_')}_{a.num_images}"), \
            a.layers.split(",")[0]
    stages = a.stages or [s for s in ALL
                          if not (s == "generate" and a.dataset)
                          and not (s == "extract" and synth)
                          and not (s == "activations" and not synth)]
    bad = [s for s in stages if s not in ALL]
    if bad:
        p.error(f"unknown stage(s) {bad}; choose from {ALL}")
    levels = list(DEFAULT_LEVELS)
    results = []
    for s in stages:
        print(f"-- {s}", flush=True)
        if s == "generate":
            r = B.run_stage(B.stage_generate, out=dataset, num_images=a.num_images,
                            image_size=a.image_size, seg_size=a.seg_size, seed=0,
                            workers=a.workers)
        elif s == "labels":
            r = B.run_stage(B.stage_labels, dataset=dataset, out=labels, workers=a.workers)
        elif s == "extract":
            r = B.run_stage(B.stage_extract, dataset=dataset, out=run, model=a.model,
                            layers=a.layers, device=a.device, num_images=a.num_images,
                            batch_size=a.batch_size)
        elif s == "activations":
            r = B.run_stage(B.stage_activations, dataset=dataset, out=run, shape=synth,
                            num_images=a.num_images)
        elif s == "quantiles":
            r = B.run_stage(B.stage_quantiles, run=run, layer=layer, levels=levels)
        elif s == "tally":
            r = B.run_stage(B.stage_tally, run=run, layer=layer, labels=labels,
                            levels=levels, device=a.device)
        else:
            r = B.run_stage(B.stage_rescore, run=run, layer=layer, labels=labels,
                            levels=levels)
        results.append(r)
        print(B.table([r]).splitlines()[-1], flush=True)
    text = B.table(results)
    print("\n" + text)
    if a.append:
        cmd = "python scripts/bench.py " + " ".join(shlex.quote(x) for x in
                                                     (argv if argv is not None else sys.argv[1:]))
        with open(a.append, "a") as f:
            f.write(f"\n### {time.strftime('%Y-%m-%d %H:%M')} — N = {a.num_images}\n\n"
                    f"Machine: {B.machine_line()}  \nCommand: `{cmd}`\n\n{text}\n")
        print(f"appended to {a.append}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
