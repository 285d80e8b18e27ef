"""Every chart of the reports, drawn with matplotlib (the one module that imports it, on
the Agg backend): the layer chart of the HTML page, the IoU-threshold sweep, the rotation
experiment, the comparison and the concept vectors (Net2Vec).

matplotlib is imported on the first chart drawn (importing this module is cheap), with the
Agg backend set there once, so charts are drawn without a display. Files are PNG at 100 dpi;
the layer chart is returned as PNG bytes for embedding in the page.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.files import write_bytes
from pipeline.reports.netdissect_csv import ResultTable
from pipeline.reports.tables import CONVENTIONS, RotationPoint, categories_of, category_order

DPI = 100


def _pyplot():
    """matplotlib.pyplot on the Agg backend (no display needed)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _saved(fig, target):
    """:func:`_save` as PNG to ``target``: a path (returned as a Path) or a binary buffer
    (returned as it is)."""
    if isinstance(target, (str, os.PathLike)):
        _save(fig, Path(target))
        return Path(target)
    _save(fig, target, format="png")
    return target


def _save(fig, target, **savefig_kw) -> None:
    """Lay out, save at DPI to ``target`` (a path, written atomically as PNG, or a binary
    buffer), close the figure."""
    fig.tight_layout()
    if isinstance(target, (str, os.PathLike)):
        buf = io.BytesIO()
        fig.savefig(buf, dpi=DPI, format="png", **savefig_kw)
        write_bytes(target, buf.getvalue())
    else:
        fig.savefig(target, dpi=DPI, **savefig_kw)
    _pyplot().close(fig)


def layer_chart_png(summary: dict, title: str = "") -> bytes:
    """PNG bytes: unique detectors per category, per-category sum (the published
    convention) and unique top labels as grouped bars, detector units as outlines."""
    plt = _pyplot()
    cats = list(summary["categories"])
    x = np.arange(len(cats))
    per = [summary["per_category_sum_per_category"][c] for c in cats]
    topl = [summary["unique_top_labels_per_category"][c] for c in cats]
    det = [summary["detectors_per_category"][c] for c in cats]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    w = 0.38
    b1 = ax.bar(x - w / 2, per, w, color="#3b75af",
                label=f"unique (per-cat sum) = {summary['per_category_sum']}")
    b2 = ax.bar(x + w / 2, topl, w, color="#ef8636",
                label=f"unique (top labels) = {summary['unique_top_labels']}")
    b3 = ax.bar(x + w / 2, det, w, fill=False, edgecolor="grey", linestyle="--",
                linewidth=0.8, label=f"detector units = {summary['detectors']} (outlines)")
    for bars in (b1, b2):
        ax.bar_label(bars, fontsize=7, padding=1)
    ax.bar_label(b3, labels=[f"{d} units" if d else "" for d in det], fontsize=6,
                 padding=1, color="grey")
    ax.set_xticks(x, cats)
    ax.set_ylabel("unique concepts (bars), units (outlines)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize=10)
    buf = io.BytesIO()
    _save(fig, buf, format="png")
    return buf.getvalue()


def sweep_chart(path: str | os.PathLike, summaries: Sequence[dict], title: str = "",
                mark: float | None = 0.04) -> Path:
    """PNG: left, detectors / unique top labels / per-category sum against the threshold;
    right, the per-category sum by category. ``mark``: a dashed line (the usual 0.04)."""
    plt = _pyplot()
    t = [s["iou_threshold"] for s in summaries]
    cats = categories_of(summaries)
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, lab, style in (("detectors", "detector units", "-"),
                            ("unique_top_labels", "unique detectors (top labels)", "--"),
                            ("per_category_sum", "unique detectors (per-category sum)", ":")):
        a.plot(t, [s[key] for s in summaries], style, marker=".", label=lab)
    for c in cats:
        b.plot(t, [s["per_category_sum_per_category"][c] for s in summaries], marker=".",
               label=c)
    for ax, ttl in ((a, "all categories"), (b, "per-category sum, by category")):
        if mark is not None:
            ax.axvline(mark, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel("IoU threshold")
        ax.set_ylabel("count")
        ax.set_title(ttl, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    path = Path(path)
    _save(fig, path)
    return path


def rotation_chart(path: str | os.PathLike, points: Sequence[RotationPoint],
                   title: str = "") -> Path:
    """PNG like the paper's Figure 4: unique detectors (per-category-sum convention: for
    each category the distinct best-in-category labels above the IoU threshold, as the
    published figures count) by category against alpha; a dashed grey line for the
    total. Combination baselines are drawn as markers at the right edge."""
    plt = _pyplot()
    rot = sorted([(a, s) for k, a, s in points if k == "rotation"], key=lambda p: p[0])
    base = [s for k, a, s in points if k != "rotation"]
    cats = categories_of([s for _, _, s in points])
    fig, ax = plt.subplots(figsize=(7, 4.5))
    xs = [a for a, _ in rot]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, c in enumerate(cats):
        col = colors[i % len(colors)]
        ax.plot(xs, [s["per_category_sum_per_category"][c] for _, s in rot], marker="o",
                color=col, label=c)
        for s in base:
            ax.plot([1.08], [s["per_category_sum_per_category"][c]], marker="x",
                    color=col, linestyle="none")
    ax.plot(xs, [s["per_category_sum"] for _, s in rot], linestyle="--", color="grey",
            marker=".", label="total")
    for s in base:
        ax.plot([1.08], [s["per_category_sum"]], marker="x", color="grey", linestyle="none")
    ax.set_xlabel("rotation alpha (Q^alpha; x at 1.08: random combination)" if base
                  else "rotation alpha (Q^alpha)")
    ax.set_ylabel("unique detectors (per-category sum)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _saved(fig, path)


def comparison_chart(path: str | os.PathLike, tables: Sequence[ResultTable],
                     summaries: Sequence[dict]) -> Path:
    """PNG of grouped bars: unique detectors per category, one bar per source; left panel
    unique top labels, right panel per-category sum."""
    plt = _pyplot()
    cats = category_order(tables)
    x = np.arange(len(cats))
    n = max(1, len(tables))
    width = 0.8 / n
    fig, axes = plt.subplots(1, 2, figsize=(max(8, 1.2 * len(cats) * 2 + 2), 4.5),
                             sharey=True)
    for ax, (tot, key, _), ttl in zip(
            axes, CONVENTIONS[1:], ("unique top labels", "per-category sum (published)")):
        for i, (t, s) in enumerate(zip(tables, summaries)):
            vals = [s[key].get(c, 0) for c in cats]
            ax.bar(x - 0.4 + width * (i + 0.5), vals, width,
                   label=f"{t.name} ({s[tot]})")
        ax.set_xticks(x, cats, rotation=20)
        ax.set_title(f"unique detectors: {ttl}", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel(f"count (IoU > {summaries[0]['iou_threshold'] if summaries else ''})")
    path = Path(path)
    _save(fig, path)
    return path


def concept_vector_chart(path, unit_iou: Sequence[float],
                         vector_iou: Sequence[float], categories: Sequence[str],
                         names: Sequence[str], title: str = "", labelled: int = 12):
    """PNG written to ``path`` (a file, returned as a Path, or a binary buffer, returned
    as it is): one point per concept, its best single unit's held-out IoU (x) against its
    concept vector's (y), coloured by category, with the diagonal; the ``labelled``
    concepts farthest from the diagonal are named."""
    plt = _pyplot()
    x = np.asarray(unit_iou, dtype=np.float64)
    y = np.asarray(vector_iou, dtype=np.float64)
    cats = list(categories)
    fig, ax = plt.subplots(figsize=(6.5, 6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, c in enumerate(dict.fromkeys(cats)):
        sel = np.array([k == c for k in cats], dtype=bool)
        ax.scatter(x[sel], y[sel], s=18, color=colors[i % len(colors)],
                   label=f"{c} ({int(sel.sum())})")
    top = max(1e-3, float(np.max(np.r_[x, y], initial=0.0))) * 1.05
    ax.plot([0, top], [0, top], color="grey", linestyle="--", linewidth=0.8)
    for j in np.argsort(-np.abs(y - x))[:labelled]:
        ax.annotate(str(names[j]), (x[j], y[j]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlim(0, top)
    ax.set_ylim(0, top)
    ax.set_xlabel("best single unit IoU (held-out)")
    ax.set_ylabel("concept vector IoU (held-out)")
    ax.grid(alpha=0.3)
    if len(x):
        ax.legend(fontsize=8, title=f"{int((y > x).sum())} of {len(x)} above the diagonal",
                  title_fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _saved(fig, path)
