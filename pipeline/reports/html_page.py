"""The per-layer HTML report ``RUN/results/<layer>.html``: one self-contained page generated
from the results document (:mod:`pipeline.reports.document`).

The page holds, from the document plus, for the unit images, the dataset's images and the
run's activation cache (never the network):

- run facts, a link to the run's index of scorings (``index.html``,
  :mod:`pipeline.reports.index_page`) and the summary table (detectors, unique (top),
  unique (per-cat) per category);
- what the layer detects: one bar per concept, grouped and coloured by category, with
  the number of units under both conventions (:mod:`pipeline.reports.concept_chart`),
  each bar a link to the concept's row of the concept table; then the category chart
  (:func:`pipeline.reports.charts.layer_chart_png`);
- every unit sorted by IoU (ties: unit number), row anchor ``#unit-<n>`` (1-based, as in
  the CSV): rank, unit, label, category, IoU, detector flag, p-values when the null model
  ran, best concept per category (0.000 entries left out), and a strip of its top-N
  images with its mask drawn (:mod:`pipeline.reports.images`; images with an empty mask
  framed in red). The chosen image indices (0-based rows of index.csv) are in the strip's
  ``data-images`` attribute;
- the concept table: per concept its units as links, and a link showing only them;
- when ``netdissect compositional`` ran at the page's thresholds, a "formula (IoU)" column
  beside the labels; when ``netdissect concept-vectors`` did, a section with its chart
  and one row per concept (the document's ``analyses``, :mod:`pipeline.reports.analyses`).

Sorting, filtering and enlarging come from one inline script (:mod:`page_script`); the
page is complete without it. Every image is embedded as a base64 ``data:`` URI (chart
PNG, strips JPEG), so the page opens from disk and survives being moved or mailed;
nothing is fetched. Every name from the dataset, the run or the document (labels,
categories, layer, model, paths) goes through ``html.escape`` (quotes too), so a name
holding markup shows as text and runs nothing (tests/test_untrusted_names.py checks it in
headless Chromium).
"""
from __future__ import annotations

import html
import io
import time
from typing import Sequence

import numpy as np

from pipeline.reports.charts import concept_vector_chart, layer_chart_png
from pipeline.reports.concept_chart import chart_html, concept_units, table_html
from pipeline.reports.images import DEFAULT_TOP_IMAGES, ROW_IMAGES, data_uri, unit_strips
from pipeline.reports.netdissect_csv import p_columns
from pipeline.reports.page_script import SCRIPT, STYLE

def render(doc: dict, chart: bytes | None = None, strips: Sequence[np.ndarray] | None = None,
           top: np.ndarray | None = None, note: str = "", empty: np.ndarray | None = None
           ) -> str:
    """The page (module docstring). chart: PNG bytes or None; strips/top: per unit (unit
    order) or None (no images; ``note`` says why); empty (K, n) bool: top images whose
    mask is empty (framed in red, counted in the cell). The units' formulas and the
    concept vectors come from the document's ``analyses`` (pipeline/reports/analyses.py)."""
    s = doc["summary"]
    concepts = concept_units(doc)
    out = _summary_section(doc)
    out.append("<h2 id=concepts-chart>What the layer detects</h2>"
               "<p>One bar per concept, grouped and coloured by category: solid, the "
               "detector units whose top label it is (the number above); light, the units "
               "whose best concept in its category it is with IoU above the threshold (the "
               "per-category convention). A bar links to the concept's units.</p>")
    out.append(chart_html(concepts, s["categories"]))
    if chart is not None:
        out.append(f"<p><img class=chart alt='unique detectors per category' "
                   f"src='{data_uri(chart)}'></p>")
    if doc.get("null"):
        n = doc["null"]
        sig = s.get("significant_detectors", {})
        e = html.escape
        out.append(f"<p>Null model: {e(', '.join(map(str, n['kinds'])))}; "
                   f"{e(str(n['permutations']))} permutations on {e(str(n['images']))} "
                   f"images (seed {e(str(n['seed']))}); detectors with p &le; "
                   f"{e(str(sig.get('alpha')))}: "
                   + ", ".join(f"{e(str(k))} {e(str(v))}" for k, v in sig.items()
                               if k != "alpha") + "</p>")
    out += _units_section(doc, strips, top, note, empty)
    out.append("<h2 id=concepts>Concepts</h2>" + table_html(concepts))
    vectors = (doc.get("analyses") or {}).get("concept_vectors")
    if vectors:
        out += _vectors_section(vectors, str(doc["run"].get("layer")))
    out.append("<div id=lightbox hidden><p></p><img alt=''></div>" + SCRIPT
               + "</body></html>\n")
    return "\n".join(out)


def _summary_section(doc: dict) -> list[str]:
    """The page's head, run facts and summary table (lines of the page)."""
    s, run = doc["summary"], doc["run"]
    e = html.escape
    layer = str(run.get("layer"))
    out = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        "<meta name=viewport content='width=device-width, initial-scale=1'>",
        f"<title>Network Dissection: {e(layer)}</title>",
        f"<style>{STYLE}</style></head><body>",
        f"<h1>Layer {e(layer)}</h1>",
        "<p><a href='index.html'>all scorings of this run</a> &middot; "
        "<a href='#concepts-chart'>what it detects</a> &middot; <a href='#units'>units</a>"
        " &middot; <a href='#concepts'>concepts</a>"
        + (" &middot; <a href='#concept-vectors'>concept vectors</a>"
           if (doc.get("analyses") or {}).get("concept_vectors") else "") + "</p>",
        *(f"<p class=warn><b>Warning</b>: {e(w)}.</p>" for w in s.get("warnings", [])),
        f"<p>model {e(str(run.get('model', {}).get('spec')))}, dataset "
        f"{e(str(run.get('dataset', {}).get('path')))} "
        f"({e(str(run.get('dataset', {}).get('num_images')))} images); "
        f"{e(str(s['units']))} units; quantile {e(str(s['quantile']))}, IoU &gt; "
        f"{e(str(s['iou_threshold']))}; schema "
        f"{e(doc['schema'])} v{doc['schema_version']}, created {e(doc['created'])}</p>",
        "<h2>Detectors</h2><p><b>unique (top)</b>: distinct top labels among detector "
        "units; <b>unique (per-cat)</b>: per category, distinct best-in-category labels of "
        "units whose IoU in that category exceeds the threshold, summed (the published "
        "convention).</p>",
        "<table><tr><th class=l>category</th><th>detectors</th><th>unique (top)</th>"
        "<th>unique (per-cat)</th></tr>"]
    for c in s["categories"]:
        out.append(f"<tr><td class=l>{e(c)}</td><td>{s['detectors_per_category'][c]}</td>"
                   f"<td>{s['unique_top_labels_per_category'][c]}</td>"
                   f"<td>{s['per_category_sum_per_category'][c]}</td></tr>")
    out.append(f"<tr><th class=l>total</th><th>{s['detectors']}</th>"
               f"<th>{s['unique_top_labels']}</th><th>{s['per_category_sum']}</th></tr>"
               "</table>")
    return out


# the units table's columns: (header, data-sort key or "", width)
_COLUMNS = (("rank", "rank", "3.2em"), ("unit", "unit", "3.6em"), ("label", "label", "9em"),
            ("category", "category", "6.5em"), ("IoU", "iou", "4.6em"),
            ("detector", "", "5.6em"))


def _controls(categories) -> str:
    """The sort/filter form, hidden until the page's script shows it."""
    e = html.escape
    opts = "".join(f"<option value='{e(c)}'>{e(c)}</option>" for c in categories)
    return ("<form id=controls hidden onsubmit='return false'>"
            f"<label>category <select id=f-cat><option value=''>all</option>{opts}</select>"
            "</label><label>label <input id=f-q type=search size=14></label>"
            "<label><input id=f-det type=checkbox> detectors only</label>"
            "<button type=button id=f-reset>show all</button> <span id=shown></span>"
            "</form>")


def _units_section(doc: dict, strips: Sequence[np.ndarray] | None, top: np.ndarray | None,
                   note: str, empty: np.ndarray | None = None) -> list[str]:
    """The units heading, its notes, the controls and the units table."""
    e = html.escape
    cats = doc["summary"]["categories"]
    pcols = p_columns(doc)
    out = ["<h2 id=units>Units</h2>",
           "<p>Units are numbered from 1 here and in the CSV (anchor <code>#unit-N</code>); "
           "the rows of arrays exported with <code>--export-iou</code> and "
           "<code>--export-thresholds</code>, and the API's <code>unit</code> column, are "
           "0-based (N &minus; 1). Click a column name marked dotted to sort.</p>"]
    if strips is not None:
        rows = (f" (the first {ROW_IMAGES} in the row, the rest under 'more')"
                if top.shape[1] > ROW_IMAGES else "")
        out.append(f"<p>Top {top.shape[1]} images{rows} of each unit by per-image maximum "
                   "activation; outside the unit's mask (upsampled map &gt; T<sub>k</sub>, "
                   "as scored) the image is dimmed, the mask's outline is yellow; an image "
                   "framed in red has an empty mask (the map never exceeds T<sub>k</sub> "
                   "there once upsampled). Click a strip to enlarge it.</p>")
    elif note:
        out.append(f"<p>{e(note)}</p>")
    out.append(_controls(cats))
    cols = list(_COLUMNS) + [(p, "", "4.6em") for p in pcols]
    formulas = (doc.get("analyses") or {}).get("formulas")
    if formulas:
        cols.append(("formula (IoU)", "", "12em"))
        out.insert(2, "<p>Formula: the unit's best formula of concepts (AND, OR, AND NOT) "
                      "found by <code>netdissect compositional</code> at this quantile, its "
                      "IoU counted over every image (not per category).</p>")
    cols.append(("best per category", "", "12em"))
    if strips is not None:
        cols.append(("top images", "", "auto"))
    out.append("<table id=unit-table><colgroup>"
               + "".join(f"<col style='width:{w}'>" for _, _, w in cols) + "</colgroup>"
               "<thead><tr>" + "".join(
                   f"<th{' class=l' if h in ('label', 'category', 'best per category', 'top images') else ''}"
                   + (f" data-sort={k}" if k else "") + f">{e(h)}</th>" for h, k, _ in cols)
               + "</tr></thead><tbody>")
    order = sorted(doc["units"], key=lambda u: (-u["iou"], u["unit"]))
    for rank, u in enumerate(order, 1):
        k = u["unit"] - 1
        best = [f"{e(c)}: {e(u['best'][c]['label'])} {u['best'][c]['iou']:.3f}"
                for c in cats if u["best"].get(c) and u["best"][c]["iou"] > 0]
        cell = ""
        if strips is not None:
            idx = ",".join(str(int(i)) for i in top[k])
            n_empty = int(empty[k].sum()) if empty is not None else 0
            marks = ("" if empty is None else
                     " data-empty='" + ",".join(str(int(v)) for v in empty[k]) + "'")
            said = (f"<div class=empty>{n_empty} of {top.shape[1]} with an empty mask</div>"
                    if n_empty else "")
            first, *rest = strips[k]
            more = ""
            if rest:
                more = (f"<details><summary>{top.shape[1] - ROW_IMAGES} more</summary>"
                        + "".join(f"<img class=strip loading=lazy alt='unit {u['unit']}: "
                                  f"{e(u['label'])} ({j + 2})' src='{data_uri(r)}'>"
                                  for j, r in enumerate(rest)) + "</details>")
            cell = (f"<td class=l><img class=strip data-unit='{u['unit']}' "
                    f"data-images='{idx}'{marks} alt='unit {u['unit']}: {e(u['label'])}' "
                    f"src='{data_uri(first)}'>{more}{said}</td>")
        data = (f" data-rank={rank} data-unit={u['unit']} data-iou='{u['iou']:.6f}' "
                f"data-label='{e(u['label'])}' data-category='{e(u['category'])}' "
                f"data-det={int(bool(u['detector']))}")
        out.append(f"<tr id=unit-{u['unit']}{' class=det' if u['detector'] else ''}{data}>"
                   f"<td>{rank}</td><td>{u['unit']}</td>"
                   f"<td class=l>{e(u['label'])}</td><td class=l>{e(u['category'])}</td>"
                   f"<td>{u['iou']:.4f}</td><td>{'yes' if u['detector'] else ''}</td>"
                   + "".join(f"<td>{u[p]:.3g}</td>" for p in pcols)
                   + (_formula_cell(u.get("formula")) if formulas else "")
                   + f"<td class=best title='{' / '.join(best)}'>{'<br>'.join(best)}</td>"
                   f"{cell}</tr>")
    out.append("</tbody></table>")
    return out


def _formula_cell(found: dict | None) -> str:
    if not found:
        return "<td class=l></td>"
    text = html.escape(str(found["formula"]))
    return f"<td class=best title='{text}'>{text} {float(found['iou']):.3f}</td>"


def _vectors_section(block: dict, layer: str) -> list[str]:
    """Concept vectors (Net2Vec) of the layer: the chart (best single unit against vector,
    held-out IoU, by category) and one row per concept, largest gain first."""
    e = html.escape
    rows = block.get("concepts") or []
    summ = block.get("summary") or {}
    cfg = block.get("config") or {}
    buf = io.BytesIO()
    concept_vector_chart(buf, [r["unit_iou"] for r in rows], [r["vector_iou"] for r in rows],
                         [r["category"] for r in rows], [r["concept"] for r in rows],
                         title=f"{layer}: concept vectors vs best single unit (held-out)")
    out = ["<h2 id=concept-vectors>Concept vectors</h2>",
           f"<p>Per concept, a weighting of the layer's units learned by per-pixel logistic "
           f"regression (<code>netdissect concept-vectors</code>, {e(str(block['file']))}) "
           f"on {e(str((block.get('split') or {}).get('train_images')))} training images, "
           f"and its IoU on the {e(str((block.get('split') or {}).get('heldout_images')))} "
           f"held-out ones against the unit best on the training images (seed "
           f"{e(str(cfg.get('seed')))}). The vector beats the best single unit on "
           f"{e(str(summ.get('vector_better')))} of {e(str(summ.get('concepts')))} "
           f"concepts. Units carrying 50% / 90%: the fewest units holding that share of "
           f"the weights' absolute sum.</p>",
           f"<p><img class=chart alt='concept vectors against single units' "
           f"src='{data_uri(buf.getvalue())}'></p>",
           "<table id=vector-table><thead><tr><th class=l>concept</th><th class=l>category"
           "</th><th>best unit</th><th>unit IoU</th><th>vector IoU</th><th>gain</th>"
           "<th>units 50%</th><th>units 90%</th></tr></thead><tbody>"]
    for r in sorted(rows, key=lambda r: (-(r["vector_iou"] - r["unit_iou"]), r["label"])):
        out.append(f"<tr><td class=l>{e(str(r['concept']))}</td>"
                   f"<td class=l>{e(str(r['category']))}</td>"
                   f"<td><a href='#unit-{int(r['unit'])}'>{int(r['unit'])}</a></td>"
                   f"<td>{r['unit_iou']:.4f}</td><td>{r['vector_iou']:.4f}</td>"
                   f"<td>{r['vector_iou'] - r['unit_iou']:+.4f}</td>"
                   f"<td>{int(r['units_50'])}</td><td>{int(r['units_90'])}</td></tr>")
    out.append("</tbody></table>")
    return out


def layer_report(doc: dict, run=None, layer: str | None = None, dataset=None,
                 top_n: int = DEFAULT_TOP_IMAGES, *, progress: bool = False,
                 log=print) -> str:
    """The page of one scored layer. ``run``/``dataset`` (a BrodenDataset, a path, or None
    for the path the run recorded) give the unit images; ``top_n`` 0 or no readable dataset
    gives the page without them (``log`` says why)."""
    s = doc["summary"]
    title = (f"{doc['run'].get('layer')}: unique detectors per category (quantile "
             f"{s['quantile']}, IoU > {s['iou_threshold']})")
    chart = layer_chart_png(s, title)
    if top_n <= 0 or run is None:
        return render(doc, chart, note="" if top_n <= 0 else "no run: no unit images")
    from cache import store
    from pipeline.broden import BrodenError
    try:
        dataset, seg = _open_dataset(doc, run, dataset)
    except (BrodenError, OSError) as ex:
        note = f"unit images left out: the dataset could not be read ({ex}); pass --dataset"
        log(f"[{layer}] {note}")
        return render(doc, chart, note=note)
    t0 = time.perf_counter()
    strips, top, empty = unit_strips(store.activations(run, layer), store.maxima(run, layer),
                              np.asarray(doc["thresholds"]["T"], dtype=np.float64),
                              dataset.load_image, seg, top_n, progress=progress,
                              desc=f"images {layer}")
    page = render(doc, chart, strips, top, empty=empty)
    log(f"[{layer}] HTML report with top-{top.shape[1]} images of {len(strips)} units: "
        f"{time.perf_counter() - t0:.1f} s, {len(page) / 1e6:.1f} MB")
    return page


def _open_dataset(doc: dict, run, dataset) -> tuple:
    """(BrodenDataset, segmentation size) of the unit images: ``dataset`` (a BrodenDataset
    or a path) or the one the run recorded; BrodenError (or OSError) unless readable and the
    very dataset the document was scored on (same fingerprint)."""
    from cache import store
    from pipeline.broden import BrodenDataset, BrodenError
    if not isinstance(dataset, BrodenDataset):
        dataset = BrodenDataset(dataset or store.read_run_attrs(run)["dataset"]["path"])
    seg = dataset.segmentation_size()
    want = doc["run"].get("dataset", {}).get("fingerprint")
    if want and dataset.fingerprint() != want:
        raise BrodenError(f"{dataset.directory} is not the dataset the run was "
                          f"extracted from (fingerprint differs)")
    return dataset, seg

