"""COCO-style annotations as a converter source: instances (polygons, RLE) and panoptic.

- *instances*: a JSON with ``images`` (``id, file_name, height, width``), ``categories``
  (``id, name``) and ``annotations`` (``image_id, category_id, segmentation`` as polygons,
  uncompressed RLE (``counts`` a list) or compressed RLE (``counts`` a string),
  ``iscrowd``). Masks are drawn with pycocotools at the image's size; all instances of a
  class make one region (instances may overlap: a pixel then carries both classes).
  Crowd regions count as their class unless ``include_crowd=False``.
- *panoptic*: a JSON whose ``annotations`` hold ``file_name`` (a PNG in the panoptic mask
  folder; segment id = R + 256*G + 256^2*B, 0 = void) and ``segments_info`` (``id,
  category_id, iscrowd``). Recognised by ``segments_info``.

Every class takes the source's ``category`` unless ``class_categories`` names another.
Errors name the JSON, the image or annotation id and the file at fault.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import defaultdict
from pathlib import Path
from typing import Iterator, Mapping

import numpy as np
from PIL import Image

from pipeline.converters.base import (ClassSpec, ConvertError, Labels, SourceImage,
                                      class_category, concept_name, relative_key,
                                      resize_nearest)


def _load_json(path: Path) -> dict:
    if not path.is_file():
        raise ConvertError(f"{path}: annotation file not found")
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise ConvertError(f"{path}: not a readable JSON file ({e})") from e
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise ConvertError(f"{path}: no {key!r} list; a COCO-style annotation file "
                               f"has 'images', 'annotations' and 'categories'")
    return doc


class CocoSource:
    """A COCO-style annotation file (module docstring) over the image folder ``images``.

    ``panoptic_masks``: the folder of panoptic PNGs (default: the JSON's path without
    ``.json``, COCO's layout); ``name``: the output folder under images/ (default: the
    JSON's stem); ``split``: index.csv's split column for these images.
    """

    def __init__(self, annotations: str | os.PathLike, images: str | os.PathLike,
                 category: str, class_categories: Mapping[str, str] | None = None,
                 name: str | None = None, panoptic_masks: str | os.PathLike | None = None,
                 include_crowd: bool = True, split: str = "train"):
        self.path = Path(annotations)
        self.image_dir = Path(images)
        self.name = name or self.path.stem
        self.split = split
        self.include_crowd = include_crowd
        doc = _load_json(self.path)
        self.panoptic = any("segments_info" in a for a in doc["annotations"])
        self.mask_dir = Path(panoptic_masks) if panoptic_masks else self.path.with_suffix("")
        self._classes: dict[int, ClassSpec] = {}
        for i, c in enumerate(doc["categories"]):
            where = f"{self.path}: categories[{i}] (id {c.get('id')})"
            if "id" not in c or "name" not in c:
                raise ConvertError(f"{where}: a category needs 'id' and 'name'")
            n = concept_name(str(c["name"]), where)
            if c["id"] in self._classes:
                raise ConvertError(f"{where}: category id {c['id']} listed twice")
            self._classes[c["id"]] = ClassSpec(n, class_category(n, category,
                                                                 class_categories), where)
        self._images: dict[int, dict] = {}
        for i, im in enumerate(doc["images"]):
            missing = [k for k in ("id", "file_name", "height", "width") if k not in im]
            if missing:
                raise ConvertError(f"{self.path}: images[{i}] lacks {missing}")
            self._images[im["id"]] = im
        self._anns: dict[int, list[dict]] = defaultdict(list)
        for i, a in enumerate(doc["annotations"]):
            aid = a.get("id", a.get("file_name", i))
            if a.get("image_id") not in self._images:
                raise ConvertError(f"{self.path}: annotation {aid}: image_id "
                                   f"{a.get('image_id')!r} is not in 'images'")
            for cid in ([s.get("category_id") for s in a.get("segments_info", [])]
                        if self.panoptic else [a.get("category_id")]):
                if cid not in self._classes:
                    raise ConvertError(f"{self.path}: annotation {aid}: category_id {cid!r} "
                                       f"is not in 'categories'")
            self._anns[a["image_id"]].append(a)

    def classes(self) -> list[ClassSpec]:
        return list(self._classes.values())

    def images(self) -> Iterator[SourceImage]:
        for iid, im in self._images.items():
            where = f"{self.path}: image id {iid} ({im['file_name']})"
            key = relative_key(im["file_name"], where)
            load = (self._panoptic_loader if self.panoptic else self._instance_loader)(iid)
            yield SourceImage(key, self.image_dir / im["file_name"], where, load,
                              (int(im["height"]), int(im["width"])))

    # ------------------------------------------------------------------ instances
    def _instance_loader(self, iid: int):
        def load(sh: int, sw: int) -> Labels:
            from pycocotools import mask as mask_utils
            im = self._images[iid]
            h, w = int(im["height"]), int(im["width"])
            rles: dict[int, list] = defaultdict(list)
            for a in self._anns[iid]:
                if a.get("iscrowd") and not self.include_crowd:
                    continue
                rles[a["category_id"]] += self._rles(a, h, w, mask_utils)
            out = Labels()
            for cid, parts in rles.items():
                with warnings.catch_warnings():     # pycocotools' numpy-2 copy= notice
                    warnings.simplefilter("ignore", DeprecationWarning)
                    full = mask_utils.decode(mask_utils.merge(parts) if len(parts) > 1
                                             else parts[0])
                out.regions.append((self._classes[cid],
                                    resize_nearest(np.asarray(full, dtype=bool), sh, sw)))
            return out
        return load

    def _rles(self, a: dict, h: int, w: int, mask_utils) -> list:
        where = f"{self.path}: annotation {a.get('id')} (image id {a['image_id']})"
        seg = a.get("segmentation")
        try:
            if isinstance(seg, list):                         # polygons
                polys = [p for p in seg if len(p) >= 6]
                if len(polys) != len(seg):
                    raise ConvertError(f"{where}: a polygon with fewer than 3 points")
                return mask_utils.frPyObjects(polys, h, w) if polys else []
            if isinstance(seg, dict) and "counts" in seg and "size" in seg:
                if list(seg["size"]) != [h, w]:
                    raise ConvertError(f"{where}: RLE of size {seg['size']} on an image "
                                       f"of {h} x {w}; fix the annotation")
                if isinstance(seg["counts"], list):            # uncompressed RLE
                    return [mask_utils.frPyObjects(seg, h, w)]
                counts = seg["counts"]
                return [{"size": [h, w], "counts": counts.encode() if isinstance(
                    counts, str) else counts}]
        except ConvertError:
            raise
        except (TypeError, ValueError, IndexError, OverflowError) as e:
            raise ConvertError(f"{where}: unreadable segmentation ({e})") from e
        raise ConvertError(f"{where}: 'segmentation' must be polygons or an RLE with "
                           f"'counts' and 'size'")

    # ------------------------------------------------------------------- panoptic
    def _panoptic_loader(self, iid: int):
        def load(sh: int, sw: int) -> Labels:
            out = Labels()
            for a in self._anns[iid]:
                path = self.mask_dir / a.get("file_name", "")
                where = f"{self.path}: annotation of image id {iid}"
                ids = _read_panoptic(path, where)
                im = self._images[iid]
                if ids.shape != (int(im["height"]), int(im["width"])):
                    raise ConvertError(f"{path} ({where}): mask is {ids.shape[0]} x "
                                       f"{ids.shape[1]}, the image {im['height']} x "
                                       f"{im['width']}")
                ids = resize_nearest(ids, sh, sw)
                known = {0}
                for s in a.get("segments_info", []):
                    if s.get("iscrowd") and not self.include_crowd:
                        known.add(s["id"])
                        continue
                    known.add(s["id"])
                    out.regions.append((self._classes[s["category_id"]], ids == s["id"]))
                stray = sorted(set(np.unique(ids).tolist()) - known)
                if stray:
                    raise ConvertError(f"{path} ({where}): segment id(s) {stray[:5]} are not "
                                       f"in the annotation's segments_info; fix the PNG or "
                                       f"the JSON")
            return out
        return load


def _read_panoptic(path: Path, where: str) -> np.ndarray:
    """(H, W) int64 segment ids of a panoptic PNG: R + 256*G + 256^2*B."""
    if not path.is_file():
        raise ConvertError(f"{path} ({where}): panoptic mask not found; pass the folder "
                           f"of panoptic PNGs")
    try:
        with Image.open(path) as im:
            im.load()
            rgb = np.asarray(im.convert("RGB")).astype(np.int64)
    except (OSError, SyntaxError, ValueError) as e:
        raise ConvertError(f"{path} ({where}): unreadable or truncated mask ({e})") from e
    return rgb[:, :, 0] + 256 * rgb[:, :, 1] + 65536 * rgb[:, :, 2]


def convert_coco(out: str | os.PathLike, annotations: str | os.PathLike,
                 images: str | os.PathLike, category: str = "object",
                 options=None, progress: bool = False, **source_options) -> Path:
    """Convert one COCO-style annotation file (instances or panoptic) to a Broden
    directory at ``out``; returns its path. ``source_options``: :class:`CocoSource`'s;
    ``options``: writer.ConvertOptions."""
    from pipeline.converters.writer import ConvertOptions, convert
    return convert(out, [CocoSource(annotations, images, category, **source_options)],
                   options or ConvertOptions(), progress=progress)
