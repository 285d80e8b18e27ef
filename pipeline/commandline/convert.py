"""Convert your own concepts to a Broden directory: COCO annotations, index-PNG masks, per-image labels.

    netdissect convert coco    --annotations instances.json --images DIR --category object --out OUT
    netdissect convert masks   --images DIR --masks DIR --classes classes.txt --category object
                    --ignore 255 --out OUT
    netdissect convert scalars (--images CLASS_FOLDERS | --csv labels.csv [--images DIR])
                    --category scene --out OUT
    netdissect convert spec    SPEC.json --out OUT       (several sources merged: pipeline/converters/spec.py)

Shared options: --image-size S|H,W (default 224), --seg-size S|H,W (default 112),
--numbering frequency|name, --drop-empty, --shared-names, --overwrite, --quiet; per source:
--name (folder under images/), --split, --class-categories name,category CSV.
The result is read by every command that takes --dataset. Exit code: 0 written, 2 refused
(the message names the file, row or class; nothing is written), 1 an environment failure.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from pipeline import cli, commandline
from pipeline.converters.base import ConvertError, read_class_categories
from pipeline.converters.writer import NUMBERINGS, ConvertOptions, convert


def _size(text: str) -> tuple[int, int]:
    try:
        parts = [int(t) for t in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give S or H,W in pixels") from None
    if len(parts) not in (1, 2) or min(parts) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give S or H,W, positive")
    return (parts[0], parts[-1])


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in cli.comma_list(text) or []]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give class ids as a comma list, "
                                         f"e.g. 0,255") from None


def _common(p: argparse.ArgumentParser, category: str | None) -> None:
    """The options every subcommand shares; a single source's (``category``: the default
    of its --category) unless ``category`` is None (a spec file names its own)."""
    p.add_argument("--out", required=True, help="the Broden directory to write (new)")
    p.add_argument("--image-size", type=_size, default=None, metavar="S|H,W",
                   help="size of the written images, resized bilinearly (default 224)")
    p.add_argument("--seg-size", type=_size, default=None, metavar="S|H,W",
                   help="size of the label planes, resized by nearest neighbour "
                        "(default 112)")
    p.add_argument("--numbering", choices=NUMBERINGS, default=None,
                   help="label numbers by frequency, as Broden (default), or by name")
    p.add_argument("--drop-empty", action="store_true", default=None,
                   help="leave out classes with no pixel instead of refusing")
    p.add_argument("--shared-names", action="store_true", default=None,
                   help="one name in several categories is one label (primary category "
                        "by coverage) instead of refused")
    p.add_argument("--min-frequency", type=int, default=None, metavar="N",
                   help="leave out concepts on fewer than N images (Broden: 10)")
    p.add_argument("--min-coverage", type=float, default=None, metavar="C",
                   help="leave out concepts covering less than C images' worth of pixels "
                        "(Broden: 0.5)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace a dataset already at --out")
    cli.add_quiet(p)
    if category is not None:
        p.add_argument("--category", default=category,
                       help=f"category of its classes (default {category})")
        p.add_argument("--name", default=None,
                       help="the source's folder under images/ (default: from its path)")
        p.add_argument("--split", default="train", help="index.csv's split (default train)")
        p.add_argument("--class-categories", default=None, metavar="CSV",
                       help="name,category CSV: categories of single classes")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The subcommands coco, masks, scalars and spec with their options, on ``p``
    (pipeline/commandline/'s interface: ``netdissect convert`` can use it as it is)."""
    sub = p.add_subparsers(dest="kind", required=True, metavar="{coco,masks,scalars,spec}",
                           help="the kind of source: coco, masks, scalars, or a spec of "
                                "several (netdissect convert KIND --help)")
    c = sub.add_parser("coco", help="COCO-style instances (polygons, RLE) or panoptic JSON")
    c.add_argument("--annotations", required=True, help="instances or panoptic JSON")
    c.add_argument("--images", required=True, help="folder of the images it names")
    c.add_argument("--panoptic-masks", default=None,
                   help="folder of the panoptic PNGs (default: the JSON's path without .json)")
    c.add_argument("--no-crowd", action="store_true", help="leave out iscrowd regions")
    _common(c, "object")
    m = sub.add_parser("masks", help="a folder of index-PNG masks plus a class list")
    m.add_argument("--images", required=True, help="folder of the images")
    m.add_argument("--masks", required=True, help="folder of the index-PNG masks")
    m.add_argument("--classes", required=True,
                   help="class list: text (line k = id k, from 0) or CSV id,name[,category]")
    m.add_argument("--ignore", type=_ints, default=[255], metavar="V[,V...]",
                   help="pixel values meaning unlabelled (default 255)")
    m.add_argument("--mask-suffix", default=".png", help="mask name = KEY + this")
    m.add_argument("--image-suffix", default=None,
                   help="image name = KEY + this (default: .jpg, .jpeg or .png)")
    _common(m, "object")
    s = sub.add_parser("scalars", help="per-image labels: class folders or an image,label CSV")
    s.add_argument("--images", default=None, help="folder of class folders, or the folder "
                                                  "--csv's images are relative to")
    s.add_argument("--csv", default=None, help="CSV image,label (labels ';'-separated)")
    _common(s, "scene")
    j = sub.add_parser("spec", help="several sources merged, described in a JSON file")
    j.add_argument("spec", help="the JSON spec (pipeline/converters/spec.py)")
    _common(j, None)


def _source(a: argparse.Namespace):
    from pipeline.converters.coco import CocoSource
    from pipeline.converters.masks import MaskFolderSource
    from pipeline.converters.scalars import ScalarSource
    per_class = read_class_categories(a.class_categories) if a.class_categories else None
    common = dict(class_categories=per_class, name=a.name, split=a.split)
    if a.kind == "coco":
        return CocoSource(a.annotations, a.images, a.category, panoptic_masks=a.panoptic_masks,
                          include_crowd=not a.no_crowd, **common)
    if a.kind == "masks":
        return MaskFolderSource(a.images, a.masks, a.classes, a.category, ignore=a.ignore,
                                mask_suffix=a.mask_suffix, image_suffix=a.image_suffix,
                                **common)
    return ScalarSource(a.images, a.category, csv=a.csv, **common)


def convert_from_args(a: argparse.Namespace) -> Path:
    """The conversion ``a`` asks for; returns the written directory."""
    if a.kind == "spec":
        from pipeline.converters.spec import read_spec
        sources, fields = read_spec(a.spec)
    else:
        sources, fields = [_source(a)], {}
    for k in ("image_size", "seg_size", "numbering", "drop_empty", "shared_names",
              "min_frequency", "min_coverage"):
        if getattr(a, k) is not None:
            fields[k] = getattr(a, k)
    options = ConvertOptions(**{**fields, "overwrite": a.overwrite})
    return convert(a.out, sources, options, progress=not a.quiet)


def run(a: argparse.Namespace) -> int:
    """Convert as ``a`` asks and print a summary; the exit status (module docstring)."""
    def body() -> None:
        from pipeline.broden import BrodenDataset
        out = convert_from_args(a)
        ds = BrodenDataset(out)
        per_cat = {c: sum(1 for k in ds.concepts if k.category == c) for c in ds.categories}
        print(f"wrote {out}: {len(ds)} images, {len(ds.concepts)} concepts ("
              + ", ".join(f"{c} {n}" for c, n in per_cat.items()) + ")")

    return cli.run_main(body, (ConvertError,),
                        interrupt_note=f"nothing was written at {a.out}; rerun the command",
                        disk_note=f"nothing was written at {a.out}: free space and rerun",
                        read_only_note=f"--out {a.out} is not writable: choose another --out")


def main(argv: Sequence[str] | None = None) -> int:
    """The stand-alone command (``python -m pipeline.converters.cli``)."""
    return commandline.standalone(sys.modules[__name__], argv)


if __name__ == "__main__":
    raise SystemExit(main())
