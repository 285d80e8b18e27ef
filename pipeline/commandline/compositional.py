"""Compositional explanations of a layer's units: the best formula of concepts (AND, OR,
AND NOT, up to --length atoms) for each unit, by beam search, from the run's caches.

    netdissect compositional RUN --layer L [--quantile 0.005] [--length 3] [--beam 5] [--units 1-10]
        [--categories object,part,...] [--label-cache PATH] [--dataset DIR]
        [--workers N] [--results-dir DIR] [--quiet]

A unit's mask is S_k > T_k at the quantile's exact threshold, as in scoring; a formula's
IoU is counted over every image of the run. The first call replays the layer's
activation cache once at that quantile and stores, per unit, its active pixels per label
set in the run (layers/<layer>/set_counts/q<quantile>); any other --length, --beam,
--units or --categories is then answered from them without a replay. Writes
results/[q<quantile>/]<layer>.formulas.csv and .formulas.json.
"""
from __future__ import annotations

import argparse
import sys

from cache.labels import LabelCacheError
from cache.store import RunError
from pipeline import cli, commandline
from pipeline.broden import BrodenError


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run", help="run directory written by netdissect extract")
    cli.add_layers(p, required=True, help="the layer of the run to explain (one)")
    p.add_argument("--quantile", type=float, default=0.005,
                   help="activation quantile q: T_k is the (1-q) quantile (default 0.005)")
    p.add_argument("--length", type=int, default=3,
                   help="most atoms (labels) in a formula (default 3)")
    p.add_argument("--beam", type=int, default=5, help="beam size (default 5)")
    p.add_argument("--units", default=None,
                   help="units to explain, numbered from 1: e.g. 1-10,12 (default: all)")
    p.add_argument("--categories", default=None,
                   help="comma-separated categories whose labels may be atoms (default: all)")
    cli.add_run_data(p)
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="tiles counted at once by the replay, in threads (default: one per "
                        "core)")
    p.add_argument("--results-dir", default=None,
                   help="write the report files here instead of RUN/results")
    cli.add_quiet(p)


def check(p: argparse.ArgumentParser, a: argparse.Namespace) -> None:
    if len(a.layers) != 1:
        p.error(f"--layer: explain one layer at a time, got {a.layers}")
    cli.check_at_least(p, a, 1, "length", "beam", "workers")


def run(a: argparse.Namespace) -> int:
    def body() -> None:
        from pipeline.compositional.explain import compositional
        res = compositional(a.run, a.layers[0], a.quantile, a.length, a.beam, a.units,
                            a.label_cache, progress=not a.quiet,
                            categories=cli.comma_list(a.categories), dataset=a.dataset,
                            workers=a.workers, results_dir=a.results_dir)
        top = sorted(res.rows, key=lambda r: -r[4])[:10]
        print(f"{res.layer}: {len(res.rows)} units, q = {res.quantile:g}, length "
              f"{res.length}, beam {res.beam}")
        for r in top:
            print(f"  unit {r[0]:>4}  IoU {r[4]:.3f} (single {r[10]:.3f})  {r[1]}")
        print(f"  table: {res.csv_path}\n  document: {res.json_path}")

    return cli.run_main(body, (RunError, LabelCacheError, BrodenError),
                        disk_note="stored thresholds and set counts are kept; free space "
                                  "and rerun the same command",
                        interrupt_note="nothing of this search was stored; rerun the same "
                                       "command")


def main(argv=None) -> int:
    return commandline.standalone(sys.modules[__name__], argv)
