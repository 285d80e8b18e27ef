"""Published NetDissect results (the golden files) read and counted under both conventions.

The golden files are real dissections on real Broden (see ../shared/golden/README.md); they
are looked up in $NETDISSECT_GOLDEN, else ../shared/golden next to the repository. The
numbers asserted are the published ones (issue 8): at IoU > 0.04, AlexNet conv5 Places205
has 107 detector units, 60 unique top labels and 79 unique detectors by per-category sum;
ResNet-18 layer4 Places365 has 434, 187 and 265.
"""
from __future__ import annotations


import pytest

from pipeline.reports.netdissect_csv import ResultCSVError, read_result_csv
from pipeline.sweep import sweep

from golden_files import ALEXNET, GOLDEN, RESNET18, needs_golden

pytestmark = needs_golden


def test_alexnet_places205_published_counts():
    t = read_result_csv(ALEXNET)
    assert len(t.units) == 256 and t.name == "caffe_reference_places205"
    s = t.summary(0.04)
    assert s["detectors"] == 107
    assert s["unique_top_labels"] == 60
    assert s["per_category_sum"] == 79
    assert s["per_category_sum_per_category"] == {
        "object": 36, "part": 8, "scene": 12, "material": 1, "texture": 20, "color": 2}


def test_resnet18_layer4_published_counts():
    t = read_result_csv(RESNET18)
    assert len(t.units) == 512
    s = t.summary(0.04)
    assert (s["detectors"], s["unique_top_labels"], s["per_category_sum"]) == (434, 187, 265)


def test_reader_keeps_columns_and_quirks():
    t = read_result_csv(ALEXNET)
    # category order is the file's column order; units are in unit order
    assert t.categories == ["object", "color", "material", "scene", "texture", "part"]
    assert [u.unit for u in t.units] == list(range(256))
    u = t.units[208]                                    # unit 209, the first row
    assert (u.label, u.category) == ("grass", "object")
    assert u.iou == pytest.approx(0.19224911061721658)
    st = t.stats[208]["object"]
    assert (st.label, st.truth, st.activation, st.intersect) == ("grass", 13100838, 4017464,
                                                                 2760311)   # "4017464.0"
    assert t.stats[208]["color"].label == "green-c"     # Broden suffixes kept verbatim


def test_empty_texture_label_is_kept_but_never_counted():
    t = read_result_csv(RESNET18)
    empty = [i for i, s in enumerate(t.stats) if s["texture"].label == ""]
    assert len(empty) == 166
    assert all(t.stats[i]["texture"].truth == 24924928 for i in empty)
    # at threshold 0 every unit with any overlap counts: the nameless label still does not
    s0 = t.summary(0.0)
    named = {s["texture"].label for s in t.stats if s["texture"].iou > 0} - {""}
    assert s0["per_category_sum_per_category"]["texture"] == len(named)


def test_per_category_sum_bounds_unique_top_labels():
    """A detector's top label is also its best in its category with the same IoU, so the
    per-category sum is never below the unique top labels, category by category."""
    for path in sorted(GOLDEN.glob("*.csv")):
        t = read_result_csv(path)
        for s in sweep(t.units, t.categories, [0.0, 0.02, 0.04, 0.08, 0.16]):
            for c in t.categories:
                assert (s["per_category_sum_per_category"][c]
                        >= s["unique_top_labels_per_category"][c]), (path.name, c)


def test_sweep_of_published_table():
    t = read_result_csv(ALEXNET)
    thresholds = [round(0.01 * i, 2) for i in range(21)]
    sums = sweep(t.units, t.categories, thresholds)
    at = {s["iou_threshold"]: s for s in sums}
    assert at[0.04] == t.summary(0.04)
    for key in ("detectors", "unique_top_labels", "per_category_sum"):
        vals = [s[key] for s in sums]
        assert vals == sorted(vals, reverse=True), key       # non-increasing
    assert at[0.0]["detectors"] == sum(u.iou > 0 for u in t.units)
    assert at[0.2]["detectors"] == 0                         # best AlexNet unit: 0.192


def test_bad_csv_errors_name_file_row_column(tmp_path):
    lines = ALEXNET.read_text().splitlines()
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1].replace(",grass,", ",grass,", 1),
                              lines[2].replace("0.", "zero.", 1)]) + "\n")
    with pytest.raises(ResultCSVError, match=r"bad.csv: row 3, column 'score'"):
        read_result_csv(bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("\n".join([lines[0], lines[1], lines[1]]) + "\n")
    with pytest.raises(ResultCSVError, match="row 3: unit 209 appears twice"):
        read_result_csv(dup)
    gap = tmp_path / "gap.csv"
    gap.write_text("\n".join(lines[:3]) + "\n")
    with pytest.raises(ResultCSVError, match=r"units must be numbered 1..2"):
        read_result_csv(gap)
    nocol = tmp_path / "nocol.csv"
    nocol.write_text("unit,label,score\n1,x,0.1\n")
    with pytest.raises(ResultCSVError, match=r"no column\(s\) \['category'\]"):
        read_result_csv(nocol)
    part = tmp_path / "part.csv"
    part.write_text("unit,category,label,score,object-label,object-iou\n1,object,x,0.1,x,0.1\n")
    with pytest.raises(ResultCSVError, match="category 'object' lacks column"):
        read_result_csv(part)
    with pytest.raises(ResultCSVError, match="cannot read"):
        read_result_csv(tmp_path / "missing.csv")
