"""The per-layer HTML report (pipeline/reports/html_page.py, images.py): chart, units table,
top-image strips whose images are chosen by the per-image maxima and whose masks are the
scored masks; the page loads every image in headless Chromium."""
from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cache import store
from pipeline.reports import html_page, images
from pipeline.broden import BrodenDataset
from pipeline.upsample import upsample
from browser import dump_dom
from scoring_fixtures import cli, copy_fresh, score_library

pytestmark = pytest.mark.slow        # subprocess pipelines, kills, clusters: seconds each

LAYER = "features.3"


@pytest.fixture(scope="module")
def report(tmp_path_factory, tiny_data, tiny_run, tiny_labels):
    tmp = tmp_path_factory.mktemp("report_html")
    data, labels = tiny_data, tiny_labels
    run = copy_fresh(tiny_run, tmp / "run")
    cube = score_library(run, labels, LAYER)
    res = run / "results"
    doc = json.loads((res / f"{LAYER}.json").read_text())
    return {"tmp": tmp, "data": data, "run": run, "labels": labels, "cube": cube, "doc": doc,
            "html": (res / f"{LAYER}.html").read_text(), "labels_path": labels.path}


def _strips(page: str) -> list[dict]:
    out = []
    for m in re.finditer(r"<img class=strip data-unit='(\d+)' data-images='([\d,]+)' "
                         r"(?:data-empty='([01,]+)' )?alt='[^']*' "
                         r"src='data:image/jpeg;base64,([^']+)'>", page):
        px = np.asarray(Image.open(io.BytesIO(base64.b64decode(m.group(4)))).convert("RGB"))
        out.append({"unit": int(m.group(1)),
                    "images": [int(i) for i in m.group(2).split(",")], "pixels": px,
                    "empty": [bool(int(v)) for v in m.group(3).split(",")]
                    if m.group(3) else None})
    return out


def test_top_images_order_and_ties():
    mx = np.array([[1.0, 0.0], [3.0, 0.0], [3.0, 2.0], [2.0, 0.0]], np.float32)
    np.testing.assert_array_equal(images.top_images(mx, 3), [[1, 2, 3], [2, 0, 1]])
    assert images.top_images(mx, 10).shape == (2, 4)


def test_masks_are_the_scored_masks(report):
    """unit_masks == upsample(A) > T_k (pipeline.upsample, the stored threshold), and summed
    over all images they give the cube's active-pixel count of a category every image has."""
    run, doc, cube = report["run"], report["doc"], report["cube"]
    acts = np.asarray(store.activations(run, LAYER)[:])
    T = np.asarray(doc["thresholds"]["T"])
    seg = BrodenDataset(report["data"]).segmentation_size()
    from cache.labels import LabelCache
    lc = LabelCache.open(report["labels_path"])
    present = np.asarray(lc.present[:])
    assert list(cube.categories) == lc.categories
    checked = 0
    v = cube.level_index(doc["config"]["quantile"])
    np.testing.assert_array_equal(cube.thresholds[v], T)
    for k in range(acts.shape[1]):
        m = images.unit_masks(acts[:, k], T[k], seg)
        ref = (upsample(torch.from_numpy(acts[:, k]), seg) > T[k]).numpy()
        np.testing.assert_array_equal(m, ref)
        for g, c in enumerate(cube.categories):
            if present[:, g].all():                     # e.g. color: every image has it
                assert m.sum() == cube.activation[v][k, g], (k, c)
                checked += 1
    assert checked >= acts.shape[1]


def test_overlay_and_resize():
    img = np.full((6, 6, 3), 200, np.uint8)
    mask = np.zeros((6, 6), bool)
    mask[1:5, 1:5] = True
    o = images.overlay(img, mask)
    assert (o[~mask] == int(200 * images.DIM)).all()
    assert (o[2:4, 2:4] == 200).all()                       # inside, unchanged
    assert (o[1, 1:5] == images.OUTLINE).all()              # outline
    m = images.resize_nearest(np.array([[True, False], [False, True]]), (4, 4))
    np.testing.assert_array_equal(m, np.kron([[1, 0], [0, 1]], np.ones((2, 2))).astype(bool))


def test_html_chart_units_and_strips(report):
    page, doc, run = report["html"], report["doc"], report["run"]
    K = len(doc["units"])
    assert page.startswith("<!DOCTYPE html>")
    assert page.count("<img class=chart") == 1
    chart = re.search(r"<img class=chart [^>]*src='data:image/png;base64,([^']+)'", page)
    png = Image.open(io.BytesIO(base64.b64decode(chart.group(1))))
    assert png.format == "PNG" and png.size[0] > 300
    strips = _strips(page)
    assert sorted(s["unit"] for s in strips) == list(range(1, K + 1))
    # units by IoU (rank order), detectors marked
    order = [u["unit"] for u in sorted(doc["units"], key=lambda u: (-u["iou"], u["unit"]))]
    assert [s["unit"] for s in strips] == order
    assert len(re.findall(r"<tr id=unit-\d+ class=det ", page)) == doc["summary"]["detectors"]
    # chosen images = argsort of the maxima; the first tile shows the top image and its mask
    mx = np.asarray(store.maxima(run, LAYER)[:])
    top = images.top_images(mx, 8)
    ds = BrodenDataset(report["data"])
    seg = ds.segmentation_size()
    acts = store.activations(run, LAYER)
    T = doc["thresholds"]["T"]
    assert page.count("<div class=empty>") == sum(any(s["empty"]) for s in strips)
    for s in strips:
        k = s["unit"] - 1
        assert s["images"] == list(top[k]) and len(s["images"]) == 8
        th = images.thumbnail(ds.load_image(s["images"][0]))
        h, w = th.shape[:2]
        assert s["pixels"].shape == (images.THUMB, 8 * w + 7 * images.GAP, 3)
        masks = images.unit_masks(np.asarray(acts.oindex[s["images"], k]), T[k], seg)
        assert s["empty"] == [not m.any() for m in masks]           # marked exactly
        mask = masks[0]
        want = images.overlay(th, images.resize_nearest(mask, (h, w)))
        if not mask.any():
            want = images.frame_empty(want)
        want = want.astype(float)
        got = s["pixels"][:, :w].astype(float)
        err = np.abs(got - want).mean()
        other = images.overlay(th, ~images.resize_nearest(mask, (h, w))).astype(float)
        assert err < 10, (k, err)                      # JPEG: close, not exact
        if mask.any() and not mask.all():
            assert err < np.abs(got - other).mean()   # and the mask, not its complement


def test_a_unit_that_never_fires_has_its_tiles_framed_as_empty():
    """Unit 1 never exceeds its threshold: every tile framed in red, flagged empty; unit 0
    fires on each image: none is."""
    acts = np.zeros((3, 2, 4, 4), np.float32)
    acts[:, 0, 1:3, 1:3] = 1.0
    maxima = acts.max(axis=(2, 3))
    pictures = np.full((3, 40, 40, 3), 200, np.uint8)
    strips, top, empty = images.unit_strips(acts, maxima, np.array([0.5, 0.5]),
                                            lambda i: pictures[i], (8, 8), 3)
    assert empty.tolist() == [[False] * 3, [True] * 3]
    w = images.THUMB
    tile = strips[1][0][:, :w]
    frame = images.FRAME
    for edge in (tile[:frame], tile[-frame:], tile[:, :frame], tile[:, -frame:]):
        assert (edge == images.EMPTY_FRAME).all()
    assert (strips[0][0][:frame, :w] != images.EMPTY_FRAME).any()


def test_no_images_and_missing_dataset(report):
    doc, run = report["doc"], report["run"]
    page = html_page.layer_report(doc, run, LAYER, None, 0, log=lambda m: None)
    assert "<img class=strip" not in page and page.count("<img class=chart") == 1
    msgs = []
    page = html_page.layer_report(doc, run, LAYER, report["tmp"] / "nowhere", 4, log=msgs.append)
    assert "<img class=strip" not in page and "unit images left out" in page and msgs


def test_score_cli_top_images(report, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(report["run"], run)        # stored cube: no replay
    cli("scripts/score.py", run, "--label-cache", report["labels_path"], "--layer", LAYER,
        "--levels", "0.005,0.02", "--quiet", "--top-images", "3")
    strips = _strips((run / "results" / f"{LAYER}.top3.html").read_text())
    assert len(strips) == 16 and all(len(s["images"]) == 3 for s in strips)
    assert (run / "results" / f"{LAYER}.html").read_text() == report["html"]   # kept
    cli("scripts/score.py", run, "--label-cache", report["labels_path"], "--layer", LAYER,
        "--levels", "0.005,0.02", "--quiet", "--top-images", "12")
    page = (run / "results" / f"{LAYER}.top12.html").read_text()
    strips = _strips(page)                   # the row strip: 8 tiles; 4 more under details
    assert len(strips) == 16 and all(len(s["images"]) == 12 for s in strips)
    w = images.thumbnail(BrodenDataset(report["data"]).load_image(0)).shape[1]
    assert all(s["pixels"].shape[1] == 8 * w + 7 * images.GAP for s in strips)
    assert page.count("<details><summary>4 more</summary><img class=strip loading=lazy") == 16
    for bad in ("-1", "65"):
        r = cli("scripts/score.py", run, "--label-cache", report["labels_path"], "--layer",
                LAYER, "--quiet", "--top-images", bad, check=False)
        assert r.returncode == 2 and "--top-images must be in 0..64" in r.stderr


def test_page_loads_every_image_in_chromium(report, tmp_path):
    page = tmp_path / "moved" / "report.html"           # opens from anywhere: self-contained
    page.parent.mkdir()
    page.write_text(report["html"])
    dom = dump_dom(page, tmp_path)
    m = re.search(r'data-images-loaded="(\d+)/(\d+)"', dom)
    assert m, f"no data-images-loaded attribute in the DOM:\n{dom[:500]}"
    loaded, total = map(int, m.groups())
    assert total == 1 + len(report["doc"]["units"]) and loaded == total


def _rows(dom: str) -> list[tuple[int, bool]]:
    """(unit, shown) of the units table's rows in the DOM's order."""
    return [(int(u), "hidden" not in rest)
            for u, rest in re.findall(r'<tr id="unit-(\d+)"([^>]*)>', dom)]


@pytest.fixture(scope="module")
def page_file(report, tmp_path_factory) -> Path:
    page = tmp_path_factory.mktemp("page") / "layer.html"
    page.write_text(report["html"])
    return page


def test_sorting_and_filtering_in_chromium(report, page_file, tmp_path):
    """The page's query string sorts and filters the units table as its controls do."""
    units = {u["unit"]: u for u in report["doc"]["units"]}
    rank = {u["unit"]: r for r, u in enumerate(
        sorted(units.values(), key=lambda u: (-u["iou"], u["unit"])), 1)}

    def shown(query: str) -> list[int]:
        dom = dump_dom(page_file, tmp_path, query)
        rows = _rows(dom)
        assert sorted(u for u, _ in rows) == sorted(units)            # none lost
        visible = [u for u, ok in rows if ok]
        assert f'data-shown="{len(visible)}"' in dom
        return visible
    assert shown("") == sorted(units, key=rank.get)                    # rank order
    assert shown("?sort=unit") == sorted(units)
    assert shown("?sort=unit&desc=1") == sorted(units, reverse=True)
    assert shown("?sort=iou&desc=0") == sorted(units, key=lambda n: (units[n]["iou"],
                                                                     rank[n]))
    assert shown("?sort=label") == sorted(units, key=lambda n: (units[n]["label"], rank[n]))
    cat = units[min(units, key=rank.get)]["category"]
    want = [n for n in sorted(units, key=rank.get)
            if units[n]["category"] == cat and units[n]["detector"]]
    assert want and shown(f"?cat={cat}&det=1") == want
    text = units[min(units, key=rank.get)]["label"][1:3]
    assert shown(f"?q={text}") == [n for n in sorted(units, key=rank.get)
                                   if text.lower() in units[n]["label"].lower()]
    concept = html_page.concept_units(report["doc"])[0]
    assert shown("?concept=0") == [n for n in sorted(units, key=rank.get)
                                   if n in set(concept.top) | set(concept.per_cat)]


def test_anchors_enlarging_and_the_page_without_scripts(report, page_file, tmp_path):
    page = report["html"]
    ids = set(re.findall(r"id=['\"]?([\w-]+)", page))
    for target in re.findall(r"href='#([\w-]+)'", page):
        assert target in ids, target                               # every anchor resolves
    assert {f"unit-{u['unit']}" for u in report["doc"]["units"]} <= ids
    unit = report["doc"]["units"][3]["unit"]
    dom = dump_dom(page_file, tmp_path, f"?open={unit}")
    assert f'data-open="{unit}"' in dom and '<div id="lightbox">' in dom   # shown
    # without scripts the page as written shows every unit in rank order, no controls
    rows = [(int(u), "hidden" not in rest) for u, rest in
            re.findall(r"<tr id=unit-(\d+)([^>]*)>", page)]
    assert all(ok for _, ok in rows) and [u for u, _ in rows] == [
        u["unit"] for u in sorted(report["doc"]["units"], key=lambda u: (-u["iou"], u["unit"]))]
    assert "<form id=controls hidden " in page


@pytest.mark.parametrize("width", [1024, 1280, 1920])
def test_layout_fits_the_window(report, page_file, tmp_path, width):
    dom = dump_dom(page_file, tmp_path, "", width=width)
    assert 'data-overflow="0"' in dom, f"the page is wider than a {width} px window"
