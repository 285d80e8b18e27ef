"""Names from a downloaded dataset stay inert: label and category names holding markup and
spreadsheet formulas reach the HTML report as text (headless Chromium: no script of theirs
runs), the CSVs for people as text cells, and the NetDissect CSV exactly, with a note."""
from __future__ import annotations

import csv
import html
import json
import re
from pathlib import Path

import pytest

from browser import dump_dom
from pipeline.reports.spreadsheet import formula_cells, inert, inert_table
from pipeline.reports.tables import comparison_rows, rotation_rows, sweep_rows
from scoring_fixtures import cli, make_dataset

LAYER = "features.3"
#: Label-name prefixes: markup that would run if pasted unescaped, and formulas.
PAYLOADS = ("<script>document.body.setAttribute('data-pwned','script')</script>",
            "<img src=x onerror=\"document.body.setAttribute('data-pwned','img')\">",
            "' onmouseover='document.body.setAttribute(\"data-pwned\",\"attr\")' x='",
            "=HYPERLINK(\"http://example.invalid\",\"x\")", "+1+1", "-2+3", "@SUM(1)")
#: A category name doing both (no '/', so c_<name>.csv is a valid file name).
CATEGORY = "=1+1<img src=x onerror=document.body.setAttribute('data-pwned','cat')>"
RENAMED = "texture"


def _rewrite(path: Path, edit) -> None:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(edit(rows))


def hostile_dataset(root: Path) -> tuple[Path, dict[str, str]]:
    """The synthetic dataset with every label renamed to payload + name and the texture
    category renamed to :data:`CATEGORY`; returns (root, old name -> new name)."""
    make_dataset(root)
    names: dict[str, str] = {}

    def labels(rows):
        i, c = rows[0].index("name"), rows[0].index("category")
        for j, r in enumerate(rows[1:]):
            names[r[i]] = r[i] = PAYLOADS[j % len(PAYLOADS)] + r[i]
            r[c] = r[c].replace(f"{RENAMED}(", f"{CATEGORY}(")
        return rows

    def category_lists(rows):
        i = rows[0].index("name")
        for r in rows[1:]:
            r[i] = names[r[i]]
        return rows

    _rewrite(root / "label.csv", labels)
    for path in root.glob("c_*.csv"):
        _rewrite(path, category_lists)
    (root / f"c_{RENAMED}.csv").rename(root / f"c_{CATEGORY}.csv")
    _rewrite(root / "category.csv",
             lambda rows: [[CATEGORY if r[0] == RENAMED else r[0], *r[1:]] for r in rows])
    _rewrite(root / "index.csv",
             lambda rows: [[CATEGORY if c == RENAMED else c for c in rows[0]], *rows[1:]])
    return root, names


@pytest.fixture(scope="module")
def scored(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("untrusted_names")
    data, names = hostile_dataset(tmp / "data")
    run = tmp / "run"
    cli("scripts/extract.py", "--dataset", data, "--model", "tests/model_factories.py:tiny_net",
        "--layers", LAYER, "--input-size", "26", "--out", run, "--workers", "0", "--quiet")
    r = cli("scripts/score.py", run, "--levels", "0.005", "--sweep", "0.02:0.1:0.04",
            "--top-images", "2", "--quiet")
    cli("scripts/compare.py", run, "--out", tmp / "cmp")
    return {"tmp": tmp, "run": run, "names": names, "score_out": r.stdout + r.stderr,
            "doc": json.loads((run / "results" / f"{LAYER}.json").read_text())}


def _cells(path: Path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


def test_dataset_names_reach_the_results(scored):
    """The fixture is hostile indeed: payload names are the units' labels and categories."""
    doc, names = scored["doc"], set(scored["names"].values())
    assert {u["label"] for u in doc["units"]} <= names
    assert CATEGORY in doc["summary"]["categories"]
    assert any(u["label"].startswith("<") for u in doc["units"])


@pytest.mark.slow
def test_report_runs_no_script_of_a_name(scored):
    page_path = scored["run"] / "results" / f"{LAYER}.top2.html"
    page = page_path.read_text()
    doc = scored["doc"]
    for u in doc["units"]:                                  # every name shown, as text
        assert html.escape(u["label"]) in page
        for best in u["best"].values():                     # (0.000 entries left out)
            assert html.escape(best["label"]) in page or best["iou"] == 0
    assert html.escape(CATEGORY) in page
    dom = dump_dom(page_path, scored["tmp"])
    assert not re.search(r"\sdata-pwned=", dom), "a name's script ran in the report"
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert m, "the page's own script did not run"
    assert m.groups() == (str(1 + len(doc["units"])),) * 2      # chart + strips, no <img> added


def test_netdissect_csv_keeps_names_exactly_and_says_so(scored):
    rows = _cells(scored["run"] / "results" / f"{LAYER}.csv")
    header, body = rows[0], rows[1:]
    col = header.index("label")
    by_unit = {u["unit"]: u["label"] for u in scored["doc"]["units"]}
    assert [r[col] for r in body] == [by_unit[int(r[header.index("unit")])] for r in body]
    assert f"{CATEGORY}-label" in header
    assert formula_cells(header, body)
    assert f"{LAYER}.csv keeps them exactly" in scored["score_out"]


@pytest.mark.parametrize("name", [f"results/{LAYER}.sweep.csv", "../cmp/comparison.csv"])
def test_people_csvs_hold_no_formula(scored, name):
    rows = _cells(scored["run"] / name)
    assert formula_cells(rows[0], rows[1:]) == []
    flat = [c for r in rows for c in r]
    assert any(c.startswith("'" + CATEGORY) for c in flat)        # shown, as text


def test_inert_cells():
    assert [inert(c) for c in ("=A1", "+1+1", "-2+3", "@SUM(1)", "\t=1", "\r=1")] == \
        ["'=A1", "'+1+1", "'-2+3", "'@SUM(1)", "'\t=1", "'\r=1"]
    kept = ("-0.5", "+3", "1e-3", "", "a=b", "sky", "'=x", -1, 0.25, None)
    assert [inert(c) for c in kept] == list(kept)
    header, rows = inert_table(["=h", "x"], [["-1", "-x"], [2, "@y"]])
    assert header == ["'=h", "x"] and rows == [["-1", "'-x"], [2, "'@y"]]
    assert formula_cells(["=h", "x"], [["=h", "-x"], ["-1"]]) == ["=h", "-x"]


def test_every_people_table_is_inert():
    cats = [CATEGORY, "object"]
    per = {c: 1 for c in cats}
    s = {"categories": cats, "units": 4, "iou_threshold": 0.04, "detectors": 2,
         "unique_top_labels": 1, "per_category_sum": 2, "detectors_per_category": per,
         "unique_top_labels_per_category": per, "per_category_sum_per_category": per}

    class Table:                                         # what comparison_rows reads
        name, categories = "=cmd|' /C calc'!A0", cats
    for header, rows in (sweep_rows([s]), rotation_rows([("=x", 0.5, s)]),
                         comparison_rows([Table()], [s])):
        assert formula_cells(header, rows) == []
        assert any(str(c).startswith("'") for c in [*header, *(c for r in rows for c in r)])
