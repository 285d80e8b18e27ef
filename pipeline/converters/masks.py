"""A folder of index-PNG masks plus a class list as a converter source (VOC, ADE, Cityscapes).

Each mask is one PNG per image whose pixel values are class ids (8-bit grey, palette
indices as VOC stores them, or 16-bit grey). Masks are found under ``masks`` (sub-folders
kept, as in Cityscapes' city folders); mask ``<key><mask_suffix>`` belongs to the image
``<key><image_suffix>`` under ``images`` (suffixes default to ``.png`` and any of
.jpg/.jpeg/.png; Cityscapes: ``_gtFine_labelIds.png`` and ``_leftImg8bit.png``). Only
images with a mask are converted (VOC's JPEGImages holds many without).

The class list (:func:`read_class_list`) is a text file (line k names id k, counting from
0; an empty line: no class with that id) or a CSV with columns ``id,name`` and optionally
``category`` (overriding the source's category for that class). Pixels whose value is
in ``ignore`` (e.g. 255, VOC's void; 0 where it means "unlabelled") are unlabelled, even
when the class list names them (VOC's ``background`` at id 0); any other value missing
from the class list is refused, naming the mask.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Iterator, Mapping

import numpy as np

from pipeline.converters.base import (IMAGE_SUFFIXES, ClassSpec, ConvertError, Labels,
                                      SourceImage, read_table, check_name, class_category,
                                      concept_name, read_index_mask, relative_key,
                                      resize_nearest)


def read_class_list(path: str | os.PathLike, category: str,
                    class_categories: Mapping[str, str] | None = None) -> dict[int, ClassSpec]:
    """{class id: ClassSpec} from a class list (module docstring); each class in
    ``class_categories`` or its CSV row's category, else ``category``."""
    path = Path(path)
    if not path.is_file():
        raise ConvertError(f"{path}: class list not found")
    out: dict[int, ClassSpec] = {}
    if path.suffix.lower() == ".csv":
        for i, r in read_table(path, ("id", "name")):
            where = f"{path}, row {i}"
            try:
                cid = int(r["id"])
            except ValueError:
                raise ConvertError(f"{where}: id {r['id']!r} is not an integer") from None
            if cid in out:
                raise ConvertError(f"{where}: id {cid} listed twice ({out[cid].where})")
            name = concept_name(r["name"], where)
            cat = (r.get("category") or "").strip()
            cat = check_name(cat, f"{where}: category") if cat else \
                class_category(name, category, class_categories)
            out[cid] = ClassSpec(name, cat, where)
    else:
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except UnicodeDecodeError as e:
            raise ConvertError(f"{path}: not a UTF-8 text file ({e})") from e
        for cid, line in enumerate(lines):
            if line.strip():
                where = f"{path}, line {cid + 1}"
                name = concept_name(line, where)
                out[cid] = ClassSpec(name, class_category(name, category, class_categories),
                                     where)
    if not out:
        raise ConvertError(f"{path}: lists no class")
    return out


class MaskFolderSource:
    """Index-PNG masks under ``masks`` for the images under ``images`` (module
    docstring); ``classes``: a class-list path or {id: ClassSpec}; ``name``: output
    folder under images/ (default: the masks folder's name)."""

    def __init__(self, images: str | os.PathLike, masks: str | os.PathLike,
                 classes: str | os.PathLike | Mapping[int, ClassSpec], category: str,
                 class_categories: Mapping[str, str] | None = None,
                 ignore: Iterable[int] = (255,), mask_suffix: str = ".png",
                 image_suffix: str | None = None, name: str | None = None,
                 split: str = "train"):
        self.image_dir, self.mask_dir = Path(images), Path(masks)
        for what, d in (("--images", self.image_dir), ("--masks", self.mask_dir)):
            if not d.is_dir():
                raise ConvertError(f"{what} {d}: not a folder")
        self.class_ids = dict(classes) if isinstance(classes, Mapping) else \
            read_class_list(classes, category, class_categories)
        self.ignore = frozenset(int(v) for v in ignore)
        for v in self.ignore:               # ignored wins: VOC lists background as id 0
            self.class_ids.pop(v, None)
        if not self.class_ids:
            raise ConvertError(f"--classes {classes}: every class id is in --ignore "
                               f"{sorted(self.ignore)}; nothing is left to label")
        self.mask_suffix, self.image_suffix = mask_suffix, image_suffix
        self.name = name or self.mask_dir.name
        self.split = split

    def classes(self) -> list[ClassSpec]:
        return list(self.class_ids.values())

    def images(self) -> Iterator[SourceImage]:
        masks = sorted(p for p in self.mask_dir.rglob(f"*{self.mask_suffix}") if p.is_file())
        if not masks:
            raise ConvertError(f"--masks {self.mask_dir}: holds no *{self.mask_suffix} file")
        for mask in masks:
            rel = mask.relative_to(self.mask_dir).as_posix()[:-len(self.mask_suffix)]
            image = self._image_of(rel, mask)
            key = relative_key(rel, f"mask {mask}", strip_suffix=False)
            yield SourceImage(key, image, f"mask {mask}", self._loader(mask))

    def _image_of(self, rel: str, mask: Path) -> Path:
        suffixes = (self.image_suffix,) if self.image_suffix else IMAGE_SUFFIXES
        for s in suffixes:
            for cand in (self.image_dir / f"{rel}{s}", self.image_dir / f"{rel}{s.upper()}"):
                if cand.is_file():
                    return cand
        raise ConvertError(f"mask {mask}: no image {self.image_dir / rel}"
                           f"{'|'.join(suffixes)}; add the image, remove the mask, or set "
                           f"--image-suffix/--mask-suffix to how the files are named")

    def _loader(self, mask: Path):
        def load(sh: int, sw: int) -> Labels:
            ids = read_index_mask(mask, f"masks of source {self.name!r}")
            values = np.unique(ids)
            unknown = [int(v) for v in values if int(v) not in self.class_ids
                       and int(v) not in self.ignore]
            if unknown:
                raise ConvertError(f"{mask}: pixel value(s) {unknown[:8]} are neither class "
                                   f"ids of the class list nor ignored; add them to the "
                                   f"class list or pass --ignore")
            ids = resize_nearest(ids, sh, sw)
            return Labels(regions=[(self.class_ids[int(v)], ids == v) for v in values
                                   if int(v) in self.class_ids])
        return load


def convert_masks(out: str | os.PathLike, images: str | os.PathLike,
                  masks: str | os.PathLike, classes: str | os.PathLike,
                  category: str = "object", options=None, progress: bool = False,
                  **source_options) -> Path:
    """Convert one folder of index-PNG masks to a Broden directory at ``out``; returns
    its path. ``source_options``: :class:`MaskFolderSource`'s; ``options``:
    writer.ConvertOptions."""
    from pipeline.converters.writer import ConvertOptions, convert
    return convert(out, [MaskFolderSource(images, masks, classes, category,
                                          **source_options)],
                   options or ConvertOptions(), progress=progress)
