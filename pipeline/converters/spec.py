"""A conversion described in a JSON file: several sources merged into one dataset.

::

    {"options": {"image_size": [224, 224], "seg_size": [112, 112],
                 "numbering": "frequency", "drop_empty": false, "shared_names": false},
     "sources": [
       {"kind": "coco", "annotations": "coco/instances_val2017.json",
        "images": "coco/val2017", "category": "object"},
       {"kind": "masks", "images": "voc/JPEGImages", "masks": "voc/SegmentationClass",
        "classes": "voc/classes.txt", "category": "object", "ignore": [0, 255]},
       {"kind": "scalars", "csv": "places/labels.csv", "category": "scene"}]}

A source's keys are the keyword arguments of its class (``CocoSource``,
``MaskFolderSource``, ``ScalarSource``) plus ``kind``; relative paths are relative to the
spec file's folder; ``class_categories`` is a {class: category} object or the path of a
``name,category`` CSV. ``options`` holds writer.ConvertOptions' fields (all optional).
"""
from __future__ import annotations

import inspect
import json
import os
from pathlib import Path

from pipeline.converters.base import ConvertError, read_class_categories
from pipeline.converters.coco import CocoSource
from pipeline.converters.masks import MaskFolderSource
from pipeline.converters.scalars import ScalarSource
from pipeline.converters.writer import ConvertOptions

#: kind -> source class
KINDS = {"coco": CocoSource, "masks": MaskFolderSource, "scalars": ScalarSource}
#: keyword arguments holding paths (made relative to the spec file)
PATH_KEYS = ("annotations", "images", "masks", "classes", "csv", "panoptic_masks")


def source_from_dict(entry: dict, base: Path, where: str):
    """One source from its spec entry (module docstring); ``where`` names it in errors."""
    if not isinstance(entry, dict) or entry.get("kind") not in KINDS:
        raise ConvertError(f"{where}: needs \"kind\": one of {sorted(KINDS)}")
    cls = KINDS[entry["kind"]]
    accepted = [p for p in inspect.signature(cls).parameters]
    kwargs = {k: v for k, v in entry.items() if k != "kind"}
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ConvertError(f"{where}: unknown key(s) {unknown} for a {entry['kind']} source; "
                           f"it accepts {accepted}")
    for k in PATH_KEYS:
        if isinstance(kwargs.get(k), str):
            kwargs[k] = base / kwargs[k]
    if isinstance(kwargs.get("class_categories"), str):
        kwargs["class_categories"] = read_class_categories(base / kwargs["class_categories"])
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConvertError(f"{where}: {e}") from None


def read_spec(path: str | os.PathLike) -> tuple[list, dict]:
    """(sources, ConvertOptions fields) of a spec file."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConvertError(f"{path}: spec file not found") from None
    except (OSError, ValueError) as e:
        raise ConvertError(f"{path}: not a readable JSON file ({e})") from e
    if not isinstance(doc, dict) or not isinstance(doc.get("sources"), list) \
            or not doc["sources"]:
        raise ConvertError(f"{path}: needs a non-empty \"sources\" list")
    options = doc.get("options", {})
    fields = set(ConvertOptions.__dataclass_fields__)
    if not isinstance(options, dict) or set(options) - fields:
        raise ConvertError(f"{path}: \"options\" may hold {sorted(fields)}")
    for k in ("image_size", "seg_size"):
        if k in options:
            v = options[k]
            options[k] = (v, v) if isinstance(v, int) else tuple(v)
    sources = [source_from_dict(e, path.parent, f"{path}: sources[{i}]")
               for i, e in enumerate(doc["sources"])]
    return sources, options
