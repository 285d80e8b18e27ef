"""Network Dissection on Zarr activation caches: how interpretable are a network's units?

netdissect SUBCOMMAND [OPTIONS]; netdissect SUBCOMMAND --help describes the
options of one. Extract a network's activations once, score them as often as you like:

    netdissect synthetic --out data/synthetic --num-images 2000
    netdissect extract --dataset data/synthetic --model demo --layers conv3,conv5 --out runs/demo
    netdissect score runs/demo
"""
from __future__ import annotations

import argparse
import ast
import importlib
import sys
from pathlib import Path
from typing import Sequence

from pipeline import cli, commandline

# the subcommands, in the order --help lists them; NAME runs pipeline/commandline/MODULE.py
# (module_of(NAME)), which scripts/MODULE.py also runs (but synthetic is
# scripts/make_synthetic_broden.py and train-demo scripts/train_demo_model.py)
SUBCOMMANDS = ("extract", "score", "compositional", "concept-vectors", "rotate", "compare",
               "cache-labels", "synthetic", "convert", "download", "bench", "demo", "verify",
               "unpack", "experiments", "train-demo")
HERE = Path(__file__).resolve().parent


def module_of(subcommand: str) -> str:
    """``cache-labels`` -> ``cache_labels``: the subcommand's module of this package."""
    return subcommand.replace("-", "_")


def summary(module: str) -> str:
    """The first paragraph of ``pipeline/commandline/<module>.py``'s docstring on one line,
    read from the source (nothing is imported: ``netdissect --help`` stays light)."""
    doc = ast.get_docstring(ast.parse((HERE / f"{module}.py").read_text()), clean=False)
    return " ".join(doc.split("\n\n")[0].split())


def version() -> str:
    """The installed distribution's version, else the checkout's pyproject.toml's."""
    from importlib.metadata import PackageNotFoundError, version as installed
    try:
        return installed("netdissect-zarr")
    except PackageNotFoundError:
        import tomllib
        with open(HERE.parents[1] / "pyproject.toml", "rb") as f:
            return tomllib.load(f)["project"]["version"]


def chosen_subcommand(argv: Sequence[str]) -> str | None:
    """The first argument that is not an option (the top level takes no values)."""
    return next((x for x in argv if not x.startswith("-")), None)


def build_parser(chosen: str | None = None) -> tuple[argparse.ArgumentParser,
                                                     argparse.ArgumentParser | None]:
    """The ``netdissect`` parser and the subparser of ``chosen`` (None when ``chosen`` is no
    subcommand); only ``chosen``'s module is imported and gets its options."""
    top = argparse.ArgumentParser(prog="netdissect", description=cli.description(__doc__),
                                  epilog=__doc__.split("\n\n", 1)[1].strip(),
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    top.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    subs = top.add_subparsers(dest="subcommand", metavar="SUBCOMMAND", title="subcommands",
                              required=True)
    sub = None
    for name in SUBCOMMANDS:
        module = module_of(name)
        if name != chosen:
            subs.add_parser(name, help=summary(module), add_help=False)
            continue
        command = importlib.import_module(f"pipeline.commandline.{module}")
        sub = subs.add_parser(name, help=summary(module),
                              description=cli.description(command.__doc__),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
        command.add_arguments(sub)
    return top, sub


def main(argv: Sequence[str] | None = None) -> int:
    """``netdissect [--version] SUBCOMMAND ARGS...``: the exit status of the subcommand
    (2 with the list of subcommands for an unknown one)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = chosen_subcommand(argv)
    top, sub = build_parser(chosen)
    if not argv:
        top.print_help(sys.stderr)
        return 2
    a = top.parse_args(argv)                # exits for --help, --version, a bad subcommand
    command = importlib.import_module(f"pipeline.commandline.{module_of(a.subcommand)}")
    return command.run(commandline.prepare(sub, command, a, argv[argv.index(chosen) + 1:]))
