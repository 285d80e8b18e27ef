"""The Broden reader on a hand-written directory with the real format's corner cases."""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from pipeline.broden import BrodenDataset, BrodenError, decode_segmentation
import tiny_broden as tb


@pytest.fixture
def tiny(tmp_path):
    return tb.write_tiny_broden(tmp_path / "broden")


def test_concepts_and_primary_categories(tiny):
    ds = BrodenDataset(tiny)
    assert ds.all_categories == tb.CATEGORIES
    assert ds.num_labels == 301
    got = {c.number: (c.name, c.category) for c in ds.concepts}
    assert got == {n: (tb.LABELS[n], tb.PRIMARY[n]) for n in tb.LABELS}
    # window: part coverage wins; wood: a tie goes to the category listed later (texture)
    assert ds.all_categories[ds.primary_category[4]] == "part"
    assert ds.all_categories[ds.primary_category[6]] == "texture"
    assert ds.primary_category[0] == -1 and ds.primary_category[150] == -1
    assert list(ds.category_codes["object"]) == [0, 3, 4, 300]


def test_planes_scalars_and_presence(tiny):
    ds = BrodenDataset(tiny)
    truth = tb.planes_of_rows()
    for i, row in enumerate(ds.rows):
        r = i + 1
        lab = ds.load_labels(i)
        want = [(c, p) for c in tb.CATEGORIES for p in truth[r].get(c, [])]
        assert lab.plane_categories == [c for c, _ in want]
        for got, (_, p) in zip(lab.planes, want):
            np.testing.assert_array_equal(got, p)
        want_sc = [(c, v) for c in tb.CATEGORIES for v in tb.SCALARS[r].get(c, [])]
        assert list(zip(lab.scalar_categories, lab.scalars.tolist())) == want_sc
        labels = set(np.unique(np.concatenate([p.ravel() for _, p in want]))) - {0}
        labels |= {v for _, v in want_sc}
        cats = {tb.PRIMARY[int(n)] for n in labels}
        present = ds.categories_present(lab)
        assert {c for c, p in zip(ds.all_categories, present) if p} == cats
    # row 2: "8;0" and scene "0": zero scalars mean no label; the object cell is empty
    assert ds.load_labels(1).scalars.tolist() == [8]
    # row 3 has only a material plane, but wood's primary category is texture
    p3 = ds.categories_present(ds.load_labels(2))
    assert p3[ds.all_categories.index("texture")] and not p3[ds.all_categories.index("material")]


def test_sizes_image_and_fingerprint(tiny):
    ds = BrodenDataset(tiny)
    assert len(ds) == 4
    assert ds.segmentation_size() == (4, 4) and ds.image_size() == (8, 8)
    img = ds.load_image(0)
    assert img.shape == (8, 8, 3) and img.dtype == np.uint8
    fp = ds.fingerprint()
    assert fp == BrodenDataset(tiny).fingerprint()
    with open(tiny / "label.csv", "a") as f:
        f.write("9,extra,color(1),1,0.1,\n")
    assert BrodenDataset(tiny).fingerprint() != fp


def test_category_subset(tiny):
    ds = BrodenDataset(tiny, categories=["texture", "color"])
    assert ds.categories == ["color", "texture"]
    assert {c.category for c in ds.concepts} == {"color", "texture"}
    # primary categories are decided over all categories: wood stays texture
    assert any(c.number == 6 for c in ds.concepts)
    lab = ds.load_labels(0)
    assert lab.plane_categories == ["color"] and lab.scalars.size == 0
    cc = ds.concept_categories()
    assert cc[3] == -1 and cc[1] == 0
    with pytest.raises(BrodenError, match="unknown category.*'colour'"):
        BrodenDataset(tiny, categories=["colour"])


def test_decode_segmentation_uses_green_as_high_byte():
    rgb = np.zeros((1, 2, 3), dtype=np.uint8)
    rgb[0, 0] = (44, 1, 0)
    rgb[0, 1] = (255, 255, 255)
    assert decode_segmentation(rgb).tolist() == [[300, 255 + 256 * 255]]


# ------------------------------------------------------------------ bad input
def _rewrite_index(root, fn):
    with open(root / "index.csv", newline="") as f:
        rows = list(csv.reader(f))
    rows = fn(rows)
    with open(root / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def test_missing_directory_and_files(tiny, tmp_path):
    with pytest.raises(BrodenError, match="not a directory"):
        BrodenDataset(tmp_path / "nowhere")
    for name in ["index.csv", "label.csv", "category.csv", "c_part.csv"]:
        d = tmp_path / f"copy_{name}"
        shutil.copytree(tiny, d)
        (d / name).unlink()
        with pytest.raises(BrodenError, match=rf"{name}: file not found"):
            BrodenDataset(d)


def test_missing_column(tiny):
    _rewrite_index(tiny, lambda rows: [r[:-1] for r in rows])   # drop 'texture'
    with pytest.raises(BrodenError, match=r"index.csv: missing column\(s\) texture"):
        BrodenDataset(tiny)


def test_malformed_row(tiny):
    _rewrite_index(tiny, lambda rows: rows[:2] + [rows[2][:4]] + rows[3:])
    with pytest.raises(BrodenError, match=r"index.csv, row 2: expected 12 fields"):
        BrodenDataset(tiny)


def test_non_integer_size(tiny):
    def bad(rows):
        rows[3][2] = "big"
        return rows
    _rewrite_index(tiny, bad)
    with pytest.raises(BrodenError, match=r"index.csv, row 3, column 'ih'.*'big'"):
        BrodenDataset(tiny)


def test_scalar_label_not_in_label_csv(tiny):
    def bad(rows):
        rows[1][10] = "77"       # scene cell of row 1
        return rows
    _rewrite_index(tiny, bad)
    with pytest.raises(BrodenError, match=r"index.csv, row 1, column 'scene': scalar label 77"):
        BrodenDataset(tiny)


def test_png_label_not_in_label_csv(tiny):
    p = tiny / "images" / "src" / "1_object_0.png"
    tb._png(p, np.full((4, 4), 42, dtype=np.int32))
    ds = BrodenDataset(tiny)
    with pytest.raises(BrodenError, match=r"1_object_0.png \(.*row 1, column 'object'\): "
                                          r"label number\(s\) \[42\] not in label.csv"):
        ds.load_labels(0)


def test_png_of_wrong_size(tiny):
    p = tiny / "images" / "src" / "2_color_0.png"
    tb._png(p, np.full((5, 4), 2, dtype=np.int32))
    with pytest.raises(BrodenError, match=r"2_color_0.png.*row 2.*5 x 4 but the row says "
                                          r"sh x sw = 4 x 4"):
        BrodenDataset(tiny).load_labels(1)


def test_truncated_png_and_image(tiny):
    p = tiny / "images" / "src" / "3_material_0.png"
    p.write_bytes(p.read_bytes()[:30])
    ds = BrodenDataset(tiny)
    with pytest.raises(BrodenError, match=r"3_material_0.png \(.*row 3, column 'material'\): "
                                          r"unreadable or "
                                          r"truncated"):
        ds.load_labels(2)
    j = tiny / "images" / "src" / "4.jpg"
    j.write_bytes(j.read_bytes()[:40])
    with pytest.raises(BrodenError, match=r"4.jpg \(.*row 4\): unreadable or truncated"):
        ds.load_image(3)
    (tiny / "images" / "src" / "1.jpg").unlink()
    with pytest.raises(BrodenError, match=r"1.jpg \(.*row 1\): file not found"):
        ds.load_image(0)


def test_image_of_wrong_size(tiny):
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(tiny / "images" / "src" / "2.jpg")
    with pytest.raises(BrodenError, match=r"2.jpg \(index.csv row 2\): image is 9 x 8"):
        BrodenDataset(tiny).load_image(1)


def test_mixed_sizes_are_named(tiny):
    def bad(rows):
        rows[4][4] = "5"
        return rows
    _rewrite_index(tiny, bad)
    with pytest.raises(BrodenError, match=r"row 4: sh x sw = 5 x 4 differs from row 1"):
        BrodenDataset(tiny).segmentation_size()


def test_category_map_label_unknown(tiny):
    with open(tiny / "c_color.csv", "a") as f:
        f.write("3,12,ghost,1,0.1\n")
    with pytest.raises(BrodenError, match=r"c_color.csv, row 3: label number 12 is not in "
                                          r"label.csv"):
        BrodenDataset(tiny)


@pytest.mark.parametrize("entry, column", [("/etc/passwd", 0), ("../../secret.png", 6),
                                           ("a/../../x.jpg", 0), ("C:\\x.png", 6),
                                           ("\\\\host\\share.png", 6)])
def test_rows_naming_files_outside_the_dataset_are_refused(tiny, entry, column):
    def bad(rows):
        rows[2][column] = entry
        return rows
    _rewrite_index(tiny, bad)
    header = open(tiny / "index.csv").readline().strip().split(",")
    with pytest.raises(BrodenError, match=r"index.csv, row 2, column '%s'.*outside" % header[column]):
        BrodenDataset(tiny)


@pytest.mark.parametrize("mode", ["I;16", "L", "LA"])
def test_segmentation_png_of_a_wrong_mode_is_named(tiny, mode):
    """16-bit or grayscale PNGs hold no R and G channels: named by mode, not read as
    unknown label numbers."""
    p = tiny / "images" / "src" / "1_object_0.png"
    Image.new(mode, (4, 4), 1).save(p)
    with pytest.raises(BrodenError) as e:
        BrodenDataset(tiny).load_labels(0)
    msg = str(e.value)
    assert f"{p} (" in msg and "row 1, column 'object'" in msg, msg
    assert f"mode {mode!r}" in msg, msg
    assert "Broden segmentation PNGs are 8-bit RGB: label = R + 256*G" in msg, msg
    assert "not in label.csv" not in msg


def test_rgba_and_palette_segmentation_pngs_read_as_rgb(tiny):
    p = tiny / "images" / "src" / "1_object_0.png"
    want = BrodenDataset(tiny).load_labels(0).planes
    rgb = np.asarray(Image.open(p).convert("RGB"))
    Image.fromarray(rgb).convert("RGBA").save(p)
    np.testing.assert_array_equal(BrodenDataset(tiny).load_labels(0).planes, want)
    colours, index = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    pal = Image.fromarray(index.reshape(rgb.shape[:2]).astype(np.uint8), "P")
    pal.putpalette(colours.astype(np.uint8).ravel().tolist())
    pal.save(p)
    assert Image.open(p).mode == "P"
    np.testing.assert_array_equal(BrodenDataset(tiny).load_labels(0).planes, want)
