"""Per-image (scalar) labels as a converter source: image classes as whole-image concepts.

Two layouts:

- a folder of class folders (ImageNet, Places, DTD style): ``images/<class>/...`` (any
  depth below the class folder); every image is labelled with its class folder's name,
  and a class folder without an image is an empty class;
- a CSV with columns ``image,label``: ``image`` relative to ``images`` (default: the
  CSV's folder), ``label`` one or more class names separated by ``;`` (DTD's several
  textures per image). A row naming a missing image is refused with its row number.

Every class takes the source's ``category`` (e.g. ``scene``) unless
``class_categories`` names another.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator, Mapping

from pipeline.converters.base import (IMAGE_SUFFIXES, ClassSpec, ConvertError, Labels,
                                      SourceImage, read_table, class_category,
                                      concept_name, relative_key)


class ScalarSource:
    """Whole-image labels from class folders under ``images`` or from ``csv`` (module
    docstring); ``name``: the output folder under images/ (default: the folder's or
    the CSV's name)."""

    def __init__(self, images: str | os.PathLike | None = None, category: str = "scene",
                 csv: str | os.PathLike | None = None,
                 class_categories: Mapping[str, str] | None = None,
                 name: str | None = None, split: str = "train"):
        if images is None and csv is None:
            raise ConvertError("a scalar source needs --images (class folders) or --csv")
        self.csv = Path(csv) if csv is not None else None
        self.image_dir = Path(images) if images is not None else self.csv.parent
        if not self.image_dir.is_dir():
            raise ConvertError(f"--images {self.image_dir}: not a folder")
        self.name = name or (self.csv.stem if self.csv is not None else self.image_dir.name)
        self.split = split
        self._category, self._overrides = category, class_categories
        self._specs: dict[str, ClassSpec] = {}
        self._items: list[tuple[str, Path, str, list[ClassSpec]]] = []
        if self.csv is not None:
            self._read_csv()
        else:
            self._read_folders()

    def _spec(self, name: str, where: str) -> ClassSpec:
        if name not in self._specs:
            self._specs[name] = ClassSpec(
                name, class_category(name, self._category, self._overrides), where)
        return self._specs[name]

    def _read_csv(self) -> None:
        for i, r in read_table(self.csv, ("image", "label")):
            where = f"{self.csv}, row {i}"
            names = [concept_name(t, where) for t in r["label"].split(";") if t.strip()]
            if not names:
                raise ConvertError(f"{where}: no label for image {r['image']!r}; give one "
                                   f"or remove the row")
            key = relative_key(r["image"], where)
            self._items.append((key, self.image_dir / r["image"], where,
                                [self._spec(n, where) for n in dict.fromkeys(names)]))

    def _read_folders(self) -> None:
        folders = sorted(p for p in self.image_dir.iterdir() if p.is_dir())
        if not folders:
            raise ConvertError(f"--images {self.image_dir}: holds no class folder; put each "
                               f"class's images in images/<class>/ or pass --csv")
        for folder in folders:
            spec = self._spec(concept_name(folder.name, f"folder {folder}"),
                              f"folder {folder}")
            for path in sorted(folder.rglob("*")):
                if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
                    rel = path.relative_to(self.image_dir).as_posix()
                    self._items.append((relative_key(rel, f"image {path}"), path,
                                        f"image {path}", [spec]))

    def classes(self) -> list[ClassSpec]:
        return list(self._specs.values())

    def images(self) -> Iterator[SourceImage]:
        for key, path, where, specs in self._items:
            yield SourceImage(key, path, where,
                              lambda sh, sw, specs=specs: Labels(scalars=list(specs)))


def convert_scalars(out: str | os.PathLike, images: str | os.PathLike | None,
                    category: str = "scene", options=None, progress: bool = False,
                    **source_options) -> Path:
    """Convert whole-image labels (class folders or a CSV) to a Broden directory at
    ``out``; returns its path. ``source_options``: :class:`ScalarSource`'s;
    ``options``: writer.ConvertOptions."""
    from pipeline.converters.writer import ConvertOptions, convert
    return convert(out, [ScalarSource(images, category, **source_options)],
                   options or ConvertOptions(), progress=progress)
