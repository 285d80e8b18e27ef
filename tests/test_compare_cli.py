"""scripts/compare.py: runs and published NetDissect tables side by side, both conventions."""
from __future__ import annotations

import csv
import html
import re

import pytest

from pipeline.reports.compare import compare, load_sources, settings_lines, write_comparison
from pipeline.reports.tables import comparison_rows
from clirun import cli
import scoring_fixtures as sf
from golden_files import ALEXNET, GOLDEN, RESNET18, needs_golden  # noqa: F401

pytestmark = pytest.mark.slow        # subprocess pipelines, kills, clusters: seconds each


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_cli_run):
    """A run with two layers, only features.3 scored."""
    tmp = tmp_path_factory.mktemp("compare")
    run = sf.copy_fresh(tiny_cli_run, tmp / "run")
    cli("scripts/score.py", run, "--label-cache", tmp / "labels.zarr", "--levels", "0.005",
        "--layer", "features.3", "--quiet")
    return run


@needs_golden
def test_published_tables_side_by_side(tmp_path):
    r = cli("scripts/compare.py", ALEXNET, RESNET18, "--out", tmp_path / "cmp")
    lines = r.stdout.splitlines()
    assert "caffe_reference_places205" in lines[0] and "resnet18_places365_layer4" in lines[0]
    total = next(l for l in lines if l.startswith("total")).split()
    assert total[1:] == ["107", "60", "79", "434", "187", "265"]
    obj = next(l for l in lines if l.startswith("object")).split()
    assert obj[3] == "36"                                        # AlexNet per-cat object
    rows = _csv(tmp_path / "cmp" / "comparison.csv")
    alex = {r["category"]: r for r in rows if r["source"] == "caffe_reference_places205"}
    assert {c: int(alex[c]["per_category_sum"]) for c in alex} == {
        "object": 36, "part": 8, "scene": 12, "material": 1, "texture": 20, "color": 2,
        "total": 79}
    assert (alex["total"]["detectors"], alex["total"]["unique_top_labels"]) == ("107", "60")
    assert alex["total"]["units"] == "256" and alex["total"]["iou_threshold"] == "0.04"
    assert (tmp_path / "cmp" / "comparison.png").read_bytes()[:4] == b"\x89PNG"


@needs_golden
def test_threshold_is_an_argument():
    r = cli("scripts/compare.py", ALEXNET, "--iou-threshold", "0.08")
    s = compare(load_sources([ALEXNET]), 0.08)[0]
    total = next(l for l in r.stdout.splitlines() if l.startswith("total")).split()
    assert total[1:] == [str(s["detectors"]), str(s["unique_top_labels"]),
                         str(s["per_category_sum"])]
    assert s["detectors"] < 107 and r.stdout.startswith("IoU > 0.08")


@needs_golden
def test_run_next_to_published(run, tmp_path):
    r = cli("scripts/compare.py", run, ALEXNET, "--out", tmp_path)
    assert "run/features.3" in r.stdout and "run/features.2" not in r.stdout
    rows = _csv(tmp_path / "comparison.csv")
    assert {r["source"] for r in rows} == {"run/features.3", "caffe_reference_places205"}
    ours = [r for r in rows if r["source"] == "run/features.3"]
    assert {r["units"] for r in ours} == {"16"}


def test_run_directory_document_and_our_csv_agree(run):
    res = run / "results"
    tables = load_sources([run, res / "features.3.json", res / "features.3.csv"])
    assert [t.name for t in tables] == ["run/features.3", "features.3", "features.3#2"]
    sums = compare(tables, 0.02)
    assert sums[0] == sums[1] == sums[2]
    header, rows = comparison_rows(tables, sums)
    assert header == ["source", "category", "units", "iou_threshold", "detectors",
                      "unique_top_labels", "per_category_sum"]
    assert len(rows) == 3 * 7                                   # 6 categories + total


def read_sources_with_other_categories(tables):
    """A copy of the first source scored on its first two categories only."""
    import copy
    t = copy.deepcopy(tables[0])
    t.name = "subset"
    t.categories = list(t.categories)[:2]
    t.settings = dict(t.settings, categories=t.categories)
    return [t]


def test_write_comparison_writes_the_rows_the_chart_and_the_page(run, tmp_path):
    tables = load_sources([run])
    sums = compare(tables, 0.04)
    tables += read_sources_with_other_categories(tables)
    sums = compare(tables, 0.04)
    settings = settings_lines(tables, 0.04)
    csv_path, png, page = write_comparison(tmp_path / "a" / "b", tables, sums, settings)
    assert (csv_path, png, page) == (tmp_path / "a" / "b" / "comparison.csv",
                                     tmp_path / "a" / "b" / "comparison.png",
                                     tmp_path / "a" / "b" / "comparison.html")
    header, rows = comparison_rows(tables, sums)
    assert _csv(csv_path) == [dict(zip(header, map(str, r))) for r in rows]
    assert png.read_bytes()[:4] == b"\x89PNG"
    # the page: every source's column group, its totals, the warning, the chart
    text = page.read_text()
    for t, s in zip(tables, sums):
        assert f"<th colspan=3>{html.escape(t.name)}</th>" in text
    totals = re.search(r"<tr><td class=l><b>total</b></td>(.*)</tr>", text).group(1)
    assert re.findall(r"<td>([^<]*)</td>", totals) == [
        str(s[k]) for s in sums for k in ("detectors", "unique_top_labels", "per_category_sum")]
    assert "<p class=warn><b>Warning</b>: the sources were scored on different categories" \
        in text and "<td>-</td>" in text
    assert text.count("src='data:image/png;base64,") == 1
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"^--out .*sub: cannot create the directory"):
        write_comparison(tmp_path / "file" / "sub", tables, sums)


def test_layers_argument(run):
    r = cli("scripts/compare.py", run, "--layers", "features.3")
    assert "run/features.3" in r.stdout
    r = cli("scripts/compare.py", run, "--layers", "features.2", check=False)
    assert r.returncode == 2 and "layer 'features.2' has not been scored" in r.stderr
    r = cli("scripts/compare.py", run, "--layers", "conv9", check=False)
    assert r.returncode == 2 and "--layers: ['conv9'] not in the run" in r.stderr


def test_errors_name_the_argument(run, tmp_path):
    r = cli("scripts/compare.py", tmp_path / "nothing.csv", check=False)
    assert r.returncode == 2 and "nothing.csv: no such run directory or result file" in r.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    r = cli("scripts/compare.py", bad, check=False)
    assert r.returncode == 2 and "bad.csv: no column(s)" in r.stderr
    r = cli("scripts/compare.py", run, "--iou-threshold", "2", check=False)
    assert r.returncode == 2 and "--iou-threshold must be in [0, 1], got 2.0" in r.stderr
    r = cli("scripts/compare.py", tmp_path, check=False)
    assert r.returncode == 2 and "not a run" in r.stderr
    (tmp_path / "file").write_text("")
    r = cli("scripts/compare.py", run, "--out", tmp_path / "file" / "sub", check=False)
    assert r.returncode == 2 and "--out" in r.stderr
