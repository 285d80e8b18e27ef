"""Converters to the Broden format (pipeline/converters/): every pixel's labels, the tables
and the refusals, on COCO (polygons, RLE, panoptic), index-PNG and scalar sources built
by hand."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.broden import BrodenDataset
from pipeline.commandline import convert as cli
from pipeline.converters.base import ConvertError, nearest_indices
from pipeline.converters.coco import CocoSource
from pipeline.converters.masks import MaskFolderSource, convert_masks
from pipeline.converters.scalars import ScalarSource
from pipeline.converters.writer import ConvertOptions, convert
from pipeline.label_decoding import build_label_cache

S = 8                        # source images are S x S


def _jpg(path: Path, h: int = S, w: int = S) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((h, w, 3), 120, np.uint8)).save(path)
    return path


def _box(r0, r1, c0, c1, h=S, w=S) -> np.ndarray:
    """Pixels rows r0..r1, columns c0..c1 (inclusive)."""
    m = np.zeros((h, w), bool)
    m[r0:r1 + 1, c0:c1 + 1] = True
    return m


def _csv(path: Path, header, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


def _index_png(path: Path, ids: np.ndarray, mode: str = "P") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(ids.astype(np.uint8), "L")
    if mode == "P":
        im = im.convert("P")
        im.putpalette([v for i in range(256) for v in (i, 255 - i, i // 2)])
        im.putdata(ids.astype(np.uint8).ravel().tolist())
    im.save(path)
    return path


def coco_instances(root: Path) -> Path:
    """Two 8x8 images: a (person polygon rows 1-4 cols 2-5; car: an uncompressed RLE rows
    4-7 cols 0-2 and a compressed RLE rows 0-1 cols 6-7), b (person as in a; car polygon
    rows 3-6 cols 4-7); category 'dog' is declared but never drawn."""
    from pycocotools import mask as mask_utils
    _jpg(root / "img" / "a.jpg")
    _jpg(root / "img" / "b.jpg")
    compressed = mask_utils.encode(np.asfortranarray(_box(0, 1, 6, 7).astype(np.uint8)))
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "height": S, "width": S},
                      {"id": 2, "file_name": "b.jpg", "height": S, "width": S}],
           "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"},
                          {"id": 7, "name": "dog"}],
           "annotations": [
               {"id": 10, "image_id": 1, "category_id": 1, "iscrowd": 0,
                "segmentation": [[2, 1, 6, 1, 6, 5, 2, 5]]},
               {"id": 11, "image_id": 1, "category_id": 3, "iscrowd": 1,
                "segmentation": {"size": [S, S], "counts": [4, 4, 4, 4, 4, 4, 40]}},
               {"id": 12, "image_id": 1, "category_id": 3, "iscrowd": 0,
                "segmentation": {"size": [S, S], "counts": compressed["counts"].decode()}},
               {"id": 13, "image_id": 2, "category_id": 1, "iscrowd": 0,
                "segmentation": [[2, 1, 6, 1, 6, 5, 2, 5]]},
               {"id": 14, "image_id": 2, "category_id": 3, "iscrowd": 0,
                "segmentation": [[4, 3, 8, 3, 8, 7, 4, 7]]}]}
    path = root / "instances.json"
    path.write_text(json.dumps(doc))
    return path


def coco_panoptic(root: Path) -> Path:
    """One 8x8 image p: segment 300 (R 44, G 1) = grass rows 0-3, segment 5 = person
    rows 4-7 cols 0-3, the rest void (0)."""
    _jpg(root / "img" / "p.jpg")
    ids = np.zeros((S, S), np.int64)
    ids[0:4] = 300
    ids[4:8, 0:4] = 5
    rgb = np.stack([ids % 256, (ids // 256) % 256, ids // 65536], -1).astype(np.uint8)
    (root / "panoptic").mkdir(parents=True)
    Image.fromarray(rgb, "RGB").save(root / "panoptic" / "p.png")
    doc = {"images": [{"id": 5, "file_name": "p.jpg", "height": S, "width": S}],
           "categories": [{"id": 1, "name": "person", "isthing": 1},
                          {"id": 40, "name": "grass", "isthing": 0}],
           "annotations": [{"image_id": 5, "file_name": "p.png", "segments_info": [
               {"id": 300, "category_id": 40, "iscrowd": 0},
               {"id": 5, "category_id": 1, "iscrowd": 0}]}]}
    path = root / "panoptic.json"
    path.write_text(json.dumps(doc))
    return path


def voc_masks(root: Path) -> tuple[Path, Path, Path]:
    """One image m1: palette mask with cat (1) rows 0-1, grass (2) rows 2-3, void (255)
    rows 4-5, background (0) rows 6-7; class list CSV gives grass the category material
    and lists background, which --ignore 0 leaves unlabelled (as VOC needs)."""
    _jpg(root / "JPEGImages" / "m1.jpg")
    ids = np.zeros((S, S), np.int64)
    ids[0:2], ids[2:4], ids[4:6] = 1, 2, 255
    _index_png(root / "SegmentationClass" / "m1.png", ids)
    classes = _csv(root / "classes.csv", ["id", "name", "category"],
                   [[0, "background", ""], [1, "cat", ""], [2, "grass", "material"]])
    return root / "JPEGImages", root / "SegmentationClass", classes


def texture_csv(root: Path) -> Path:
    _jpg(root / "t1.jpg")
    return _csv(root / "labels.csv", ["image", "label"], [["t1.jpg", "banded;dotted"]])


def all_sources(root: Path) -> list:
    images, masks, classes = voc_masks(root / "voc")
    return [CocoSource(coco_instances(root / "coco"), root / "coco" / "img", "object",
                       name="coco"),
            CocoSource(coco_panoptic(root / "pan"), root / "pan" / "img", "object",
                       class_categories={"grass": "material"}, name="pan",
                       panoptic_masks=root / "pan" / "panoptic"),
            MaskFolderSource(images, masks, classes, "object", ignore=(0, 255), name="voc"),
            ScalarSource(None, "texture", csv=texture_csv(root / "dtd"), name="dtd")]


# the hand computation: per output image, per label name, its pixels
EXPECTED = {
    "coco/a.jpg": {"person": _box(1, 4, 2, 5), "car": _box(4, 7, 0, 2) | _box(0, 1, 6, 7)},
    "coco/b.jpg": {"person": _box(1, 4, 2, 5), "car": _box(3, 6, 4, 7)},
    "pan/p.jpg": {"grass": _box(0, 3, 0, 7), "person": _box(4, 7, 0, 3)},
    "voc/m1.jpg": {"cat": _box(0, 1, 0, 7), "grass": _box(2, 3, 0, 7)},
    "dtd/t1.jpg": {"banded": _box(0, 7, 0, 7), "dotted": _box(0, 7, 0, 7)},
}
# by frequency (images), then coverage (pixels), then name
NUMBERS = {"person": 1, "grass": 2, "car": 3, "banded": 4, "dotted": 5, "cat": 6}


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def merged(tmp_path_factory):
    root = tmp_path_factory.mktemp("sources")
    out = convert(root / "out", all_sources(root),
                  ConvertOptions((S, S), (S, S), drop_empty=True), progress=False,
                  log=lambda m: None)                     # dog is declared, never drawn
    return out


def test_every_pixel_of_every_source_carries_its_labels(merged, tmp_path):
    ds = BrodenDataset(merged)
    assert {n: ds.label_names[n] for n in range(1, ds.num_labels)} == \
        {v: k for k, v in NUMBERS.items()}
    cache = build_label_cache(ds, tmp_path / "labels.zarr", workers=1, progress=False)
    tile = cache.read(0, len(ds))
    assert sorted(r.image for r in ds.rows) == sorted(EXPECTED)
    for i, row in enumerate(ds.rows):
        want = EXPECTED[row.image]
        planes, scalars = tile.planes[i].astype(int), set(tile.scalars[i].tolist()) - {0}
        for y in range(S):
            for x in range(S):
                got = (set(planes[:, y, x].tolist()) - {0}) | scalars
                expect = {NUMBERS[n] for n, m in want.items() if m[y, x]}
                assert got == expect, (row.image, y, x)
        assert ds.load_image(i).shape == (S, S, 3)
    # the overlap of person and car in image b needs a second object plane
    b = next(r for r in ds.rows if r.image == "coco/b.jpg")
    assert b.cells["object"] == ("coco/b_object_1.png", "coco/b_object_2.png")
    t = next(r for r in ds.rows if r.image == "dtd/t1.jpg")
    assert t.cells["texture"] == (4, 5) and t.cells["object"] == ()


def test_tables_hold_frequencies_coverage_and_categories_by_hand(merged):
    assert _rows(merged / "category.csv") == [
        {"name": "object", "first": "1", "last": "6", "count": "3", "frequency": "4"},
        {"name": "material", "first": "2", "last": "2", "count": "1", "frequency": "2"},
        {"name": "texture", "first": "4", "last": "5", "count": "2", "frequency": "1"}]
    npx = S * S
    assert [(r["code"], r["name"], r["frequency"], float(r["coverage"]))
            for r in _rows(merged / "c_object.csv")] == [
        ("1", "person", "3", 48 / npx), ("2", "car", "2", 32 / npx), ("3", "cat", "1", 16 / npx)]
    assert [(r["number"], r["frequency"], float(r["coverage"]))
            for r in _rows(merged / "c_material.csv")] == [("2", "2", 48 / npx)]
    assert [(r["name"], float(r["coverage"])) for r in _rows(merged / "c_texture.csv")] == \
        [("banded", 1.0), ("dotted", 1.0)]
    label = {r["name"]: r for r in _rows(merged / "label.csv")}
    assert label["person"]["category"] == "object(3)" and label["car"]["frequency"] == "2"
    ds = BrodenDataset(merged)
    assert {c.name: c.category for c in ds.concepts} == {
        "person": "object", "car": "object", "cat": "object", "grass": "material",
        "banded": "texture", "dotted": "texture"}


def _grass_sources(root: Path) -> list:
    """grass as an object (4 of 16 pixels of m.jpg) and as a material (scalar of s.jpg)."""
    _jpg(root / "img" / "m.jpg", 4, 4)
    ids = np.zeros((4, 4))
    ids[0, :] = 1
    _index_png(root / "masks" / "m.png", ids, "L")
    (root / "classes.txt").write_text("\ngrass\n")          # id 0: no class
    _jpg(root / "s" / "s.jpg", 4, 4)
    scal = _csv(root / "s" / "labels.csv", ["image", "label"], [["s.jpg", "grass"]])
    return [MaskFolderSource(root / "img", root / "masks", root / "classes.txt", "object",
                             ignore=(0,), name="seg"),
            ScalarSource(None, "material", csv=scal, name="mat")]


def test_a_name_in_two_categories_is_refused_unless_shared(tmp_path):
    with pytest.raises(ConvertError, match=r"'grass': material \(.*labels.csv.*\); "
                                           r"object \(.*classes.txt, line 2\)"):
        convert(tmp_path / "out", _grass_sources(tmp_path),
                ConvertOptions((4, 4), (4, 4), drop_empty=True), progress=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob("out.converting-*"))
    out = convert(tmp_path / "out", _grass_sources(tmp_path / "again"),
                  ConvertOptions((4, 4), (4, 4), drop_empty=True, shared_names=True),
                  progress=False, log=lambda m: None)
    ds = BrodenDataset(out)
    # object coverage 4/16, material coverage 1 -> primary material
    assert [(c.name, c.category) for c in ds.concepts] == [("grass", "material")]
    grass = next(r for r in _rows(out / "label.csv") if r["name"] == "grass")
    # categories tie on first label (1) -> by name: material, object
    assert (grass["category"], grass["frequency"], float(grass["coverage"])) == \
        ("material(1);object(1)", "2", 1.25)
    assert [float(r["coverage"]) for r in _rows(out / "c_object.csv")] == [0.25]


def test_empty_classes_are_listed_and_can_be_dropped(tmp_path):
    src = CocoSource(coco_instances(tmp_path / "coco"), tmp_path / "coco" / "img", "object")
    with pytest.raises(ConvertError, match=r"(?s)1 class\(es\) have no pixel.*'dog' \(object; "
                                           r".*instances.json: categories\[2\]"):
        convert(tmp_path / "out", [src], ConvertOptions((S, S), (S, S)), progress=False)
    said = []
    out = convert(tmp_path / "out", [src], ConvertOptions((S, S), (S, S), drop_empty=True),
                  progress=False, log=said.append)
    assert "'dog'" in said[0]
    # person and car: 2 images and 32 pixels each -> by name
    assert [c.name for c in BrodenDataset(out).concepts] == ["car", "person"]


def test_numbering_by_name_and_nearest_resizing(tmp_path):
    """6x6 masks to 4x4 labels: source rows/columns (2j+1)*6//8 = 0, 2, 3, 5; zebra
    covers more than apple (one image each) but is numbered after it by name."""
    assert nearest_indices(6, 4).tolist() == [0, 2, 3, 5]
    assert nearest_indices(8, 4).tolist() == [1, 3, 5, 7]
    ids = np.add.outer(np.arange(6), np.arange(6)) % 3      # 0 ignored, 1 zebra, 2 apple
    ids[ids == 2] = 0
    ids[0, 0] = 2
    _jpg(tmp_path / "img" / "a.jpg", 6, 6)
    _index_png(tmp_path / "masks" / "a.png", ids, "L")
    (tmp_path / "c.txt").write_text("\nzebra\napple\n")
    for numbering, numbers in (("frequency", {"zebra": 1, "apple": 2}),
                               ("name", {"apple": 1, "zebra": 2})):
        out = convert_masks(tmp_path / numbering, tmp_path / "img", tmp_path / "masks",
                            tmp_path / "c.txt", ignore=(0,),
                            options=ConvertOptions((5, 7), (4, 4), numbering=numbering))
        ds = BrodenDataset(out)
        assert {c.name: c.number for c in ds.concepts} == numbers
        lut = np.array([0, numbers["zebra"], numbers["apple"]])
        want = lut[ids[np.ix_([0, 2, 3, 5], [0, 2, 3, 5])]]
        assert np.array_equal(ds.load_labels(0).planes[0], want)
        assert ds.load_image(0).shape == (5, 7, 3)


def test_missing_images_and_bad_masks_are_refused_naming_the_file(tmp_path):
    images, masks, classes = voc_masks(tmp_path / "voc")
    opts = ConvertOptions((S, S), (S, S))
    (images / "m1.jpg").unlink()
    with pytest.raises(ConvertError, match=r"mask .*m1.png: no image .*JPEGImages/m1"):
        convert(tmp_path / "o1", [MaskFolderSource(images, masks, classes, "object",
                                                   ignore=(0, 255))], opts, progress=False)
    _jpg(images / "m1.jpg")
    (masks / "m1.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    with pytest.raises(ConvertError, match=r"m1.png .*unreadable or truncated mask"):
        convert(tmp_path / "o2", [MaskFolderSource(images, masks, classes, "object",
                                                   ignore=(0, 255))], opts, progress=False)
    _index_png(masks / "m1.png", np.full((S, S), 7))
    with pytest.raises(ConvertError, match=r"m1.png: pixel value\(s\) \[7\] are neither"):
        convert(tmp_path / "o3", [MaskFolderSource(images, masks, classes, "object",
                                                   ignore=(0, 255))], opts, progress=False)
    Image.fromarray(np.zeros((S, S, 3), np.uint8)).save(masks / "m1.png")
    with pytest.raises(ConvertError, match=r"m1.png .*mode 'RGB'.*not colours"):
        convert(tmp_path / "o4", [MaskFolderSource(images, masks, classes, "object",
                                                   ignore=(0, 255))], opts, progress=False)
    coco = coco_instances(tmp_path / "coco")
    (tmp_path / "coco" / "img" / "b.jpg").unlink()
    with pytest.raises(ConvertError, match=r"instances.json: image id 2 \(b.jpg\): image "
                                           r".*b.jpg not found"):
        convert(tmp_path / "o5", [CocoSource(coco, tmp_path / "coco" / "img", "object")],
                ConvertOptions((S, S), (S, S), drop_empty=True), progress=False)
    _jpg(tmp_path / "coco" / "img" / "b.jpg", S, S + 2)
    with pytest.raises(ConvertError, match=r"image id 2 .* is 8 x 10 but its masks are 8 x 8"):
        convert(tmp_path / "o6", [CocoSource(coco, tmp_path / "coco" / "img", "object")],
                ConvertOptions((S, S), (S, S), drop_empty=True), progress=False)
    assert not any(p.name.startswith("o") for p in tmp_path.iterdir())


def test_bad_coco_annotations_are_named(tmp_path):
    path = coco_instances(tmp_path)
    doc = json.loads(path.read_text())
    doc["annotations"][1]["category_id"] = 99
    path.write_text(json.dumps(doc))
    with pytest.raises(ConvertError, match=r"annotation 11: category_id 99 is not in"):
        CocoSource(path, tmp_path / "img", "object")
    doc["annotations"][1]["category_id"] = 3
    doc["annotations"][1]["segmentation"]["size"] = [4, 4]
    path.write_text(json.dumps(doc))
    with pytest.raises(ConvertError, match=r"annotation 11 \(image id 1\): RLE of size"):
        convert(tmp_path / "out", [CocoSource(path, tmp_path / "img", "object")],
                ConvertOptions((S, S), (S, S), drop_empty=True), progress=False)


def test_sources_need_distinct_names_and_a_new_out(tmp_path):
    root = tmp_path / "src"
    srcs = all_sources(root)
    srcs[1].name = "coco"
    with pytest.raises(ConvertError, match=r"sources 1 and 2 are both named 'coco'"):
        convert(tmp_path / "out", srcs, progress=False)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "x").write_text("mine")
    with pytest.raises(ConvertError, match=r"out: exists and is not empty"):
        convert(tmp_path / "out", all_sources(tmp_path / "src2"), progress=False)
    assert (tmp_path / "out" / "x").read_text() == "mine"
    opts = ConvertOptions((S, S), (S, S), drop_empty=True)
    (tmp_path / "ds.converting-999999").mkdir()         # left by a killed conversion
    said = []
    convert(tmp_path / "ds", all_sources(tmp_path / "src3"), opts, progress=False,
            log=said.append)
    assert not (tmp_path / "ds.converting-999999").exists() and "did not finish" in said[0]
    with pytest.raises(ConvertError, match=r"ds: exists and is not empty.*--overwrite"):
        convert(tmp_path / "ds", all_sources(tmp_path / "src4"), opts, progress=False,
                log=said.append)
    out = convert(tmp_path / "ds", all_sources(tmp_path / "src5")[:1],
                  ConvertOptions((S, S), (S, S), drop_empty=True, overwrite=True),
                  progress=False, log=said.append)
    assert [r.image for r in BrodenDataset(out).rows] == ["coco/a.jpg", "coco/b.jpg"]


def test_cli_spec_merges_sources_and_reports_refusals(tmp_path, capsys):
    root = tmp_path / "src"
    all_sources(root)                                   # writes the files
    spec = {"options": {"image_size": S, "seg_size": S, "drop_empty": True},
            "sources": [
                {"kind": "coco", "annotations": "coco/instances.json",
                 "images": "coco/img", "category": "object", "name": "coco"},
                {"kind": "coco", "annotations": "pan/panoptic.json", "images": "pan/img",
                 "panoptic_masks": "pan/panoptic", "category": "object", "name": "pan",
                 "class_categories": {"grass": "material"}},
                {"kind": "masks", "images": "voc/JPEGImages", "masks": "voc/SegmentationClass",
                 "classes": "voc/classes.csv", "category": "object", "ignore": [0, 255],
                 "name": "voc"},
                {"kind": "scalars", "csv": "dtd/labels.csv", "category": "texture",
                 "name": "dtd"}]}
    (root / "spec.json").write_text(json.dumps(spec))
    assert cli.main(["spec", str(root / "spec.json"), "--out", str(tmp_path / "a"),
                     "--quiet"]) == 0
    assert "wrote" in capsys.readouterr().out
    ds = BrodenDataset(tmp_path / "a")
    assert {c.name: c.number for c in ds.concepts} == NUMBERS
    # the same dataset from the single-source subcommands' building blocks
    assert cli.main(["coco", "--annotations", str(root / "coco" / "instances.json"),
                     "--images", str(root / "coco" / "img"), "--out", str(tmp_path / "b"),
                     "--image-size", "8", "--seg-size", "8", "--quiet"]) == 2
    assert "'dog'" in capsys.readouterr().err
    assert cli.main(["coco", "--annotations", str(root / "coco" / "instances.json"),
                     "--images", str(root / "coco" / "img"), "--out", str(tmp_path / "b"),
                     "--image-size", "8", "--seg-size", "4", "--drop-empty",
                     "--quiet"]) == 0
    assert BrodenDataset(tmp_path / "b").segmentation_size() == (4, 4)
    spec["sources"][0]["colour"] = "red"
    (root / "spec.json").write_text(json.dumps(spec))
    assert cli.main(["spec", str(root / "spec.json"), "--out", str(tmp_path / "c")]) == 2
    assert "sources[0]: unknown key(s) ['colour']" in capsys.readouterr().err


def test_scalar_class_folders_label_whole_images(tmp_path):
    for cls, n in (("beach", 2), ("street", 1)):
        for i in range(n):
            _jpg(tmp_path / "scenes" / cls / f"{i}.jpg")
    (tmp_path / "scenes" / "forest").mkdir()
    assert cli.main(["scalars", "--images", str(tmp_path / "scenes"), "--out",
                     str(tmp_path / "o"), "--quiet"]) == 2
    out = convert(tmp_path / "o", [ScalarSource(tmp_path / "scenes", "scene")],
                  ConvertOptions((S, S), (4, 4), drop_empty=True), progress=False,
                  log=lambda m: None)
    ds = BrodenDataset(out)
    assert [(r.image, r.cells["scene"]) for r in ds.rows] == [
        ("scenes/beach/0.jpg", (1,)), ("scenes/beach/1.jpg", (1,)),
        ("scenes/street/0.jpg", (2,))]
    assert [(r["name"], r["frequency"], float(r["coverage"]))
            for r in _rows(out / "c_scene.csv")] == [("beach", "2", 2.0), ("street", "1", 1.0)]


def test_rare_concepts_are_left_out_and_numbers_stay_dense(tmp_path):
    """--min-frequency 2 drops cat, banded, dotted (one image each); --min-coverage 0.6
    then also drops car (32 of 64 pixels x 1 = 0.5 images' worth)."""
    said = []
    out = convert(tmp_path / "a", all_sources(tmp_path / "src"),
                  ConvertOptions((S, S), (S, S), drop_empty=True, min_frequency=2),
                  progress=False, log=said.append)
    ds = BrodenDataset(out)
    assert {c.name: (c.number, c.category) for c in ds.concepts} == {
        "person": (1, "object"), "grass": (2, "material"), "car": (3, "object")}
    assert ds.all_categories == ["object", "material"]
    t1 = next(r for r in ds.rows if r.image == "dtd/t1.jpg")
    assert t1.cells == {"object": (), "material": ()}
    assert "banded, cat, dotted" in said[-1]
    out = convert(tmp_path / "b", all_sources(tmp_path / "src2"),
                  ConvertOptions((S, S), (S, S), drop_empty=True, min_frequency=2,
                                 min_coverage=0.6), progress=False, log=said.append)
    assert [c.name for c in BrodenDataset(out).concepts] == ["person", "grass"]


def test_one_file_named_by_two_sources_is_one_row_with_both_labels(tmp_path):
    """COCO objects on a.jpg and b.jpg, and a CSV giving a.jpg the scene street."""
    coco = coco_instances(tmp_path / "coco")
    scenes = _csv(tmp_path / "scenes.csv", ["image", "label"], [["a.jpg", "street"]])
    out = convert(tmp_path / "out",
                  [CocoSource(coco, tmp_path / "coco" / "img", "object", name="coco"),
                   ScalarSource(tmp_path / "coco" / "img", "scene", csv=scenes, name="sc")],
                  ConvertOptions((S, S), (S, S), drop_empty=True), progress=False,
                  log=lambda m: None)
    ds = BrodenDataset(out)
    numbers = {c.name: c.number for c in ds.concepts}
    assert [r.image for r in ds.rows] == ["coco/a.jpg", "coco/b.jpg"]
    a = ds.load_labels(0)
    assert a.scalars.tolist() == [numbers["street"]] and a.scalar_categories == ["scene"]
    assert set(np.unique(a.planes).tolist()) == {0, numbers["person"], numbers["car"]}
    assert ds.rows[1].cells["scene"] == ()
    assert not (out / "images" / "sc").exists()
