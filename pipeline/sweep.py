"""IoU-threshold sweep: detectors and unique detectors against the detector threshold.

A unit's best concept (overall and per category) does not depend on the IoU threshold, so a
sweep is one labelling (from the stored cube, or from a result CSV) counted at many
thresholds with :func:`pipeline.scoring.count_detectors`: no replay, milliseconds.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from pipeline.scoring import UnitResult, count_detectors
from pipeline.report import write_result_csv

TOTALS = ("detectors", "unique_top_labels", "per_category_sum")
PER_CAT = (("detectors", "detectors_per_category"),
           ("unique_top_labels", "unique_top_labels_per_category"),
           ("per_category_sum", "per_category_sum_per_category"))


def parse_thresholds(spec: str, arg: str = "--sweep") -> list[float]:
    """``start:stop:step`` (stop included when on the grid) or ``a,b,c`` -> thresholds.

    Values are rounded to 10 decimals (0.01:0.2:0.01 gives 0.07, not 0.07000000000000001)."""
    spec = spec.strip()
    try:
        if ":" in spec:
            parts = [float(p) for p in spec.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step <= 0 or stop < start:
                raise ValueError(f"{arg} {spec!r}: need step > 0 and stop >= start")
            n = int(round((stop - start) / step + 1e-9)) + 1
            vals = [round(start + i * step, 10) for i in range(n)]
            vals = [v for v in vals if v <= stop + 1e-12]
        else:
            vals = [float(p) for p in spec.split(",") if p.strip()]
    except ValueError as e:
        if str(e).startswith(arg):
            raise
        raise ValueError(f"{arg} {spec!r}: expected start:stop:step (e.g. 0.01:0.2:0.01) "
                         f"or a comma-separated list of thresholds") from None
    if not vals:
        raise ValueError(f"{arg} {spec!r}: no threshold")
    bad = [v for v in vals if not 0.0 <= v <= 1.0]
    if bad:
        raise ValueError(f"{arg} {spec!r}: thresholds must be in [0, 1], got {bad[:3]}")
    if len(vals) > 10000:
        raise ValueError(f"{arg} {spec!r}: {len(vals)} thresholds; at most 10000")
    return vals


def sweep(units: Sequence[UnitResult], categories: Sequence[str],
          thresholds: Sequence[float]) -> list[dict]:
    """count_detectors() at each threshold (one summary dict per threshold)."""
    return [count_detectors(units, categories, float(t)) for t in thresholds]


def sweep_rows(summaries: Sequence[dict]) -> tuple[list[str], list[list]]:
    """(header, rows): iou_threshold, the three totals, then per category
    ``<cat>-detectors``, ``<cat>-unique_top_labels``, ``<cat>-per_category_sum``."""
    cats = list(summaries[0]["categories"]) if summaries else []
    header = ["iou_threshold", *TOTALS] + [f"{c}-{name}" for c in cats for name, _ in PER_CAT]
    rows = []
    for s in summaries:
        rows.append([s["iou_threshold"], *(s[t] for t in TOTALS)]
                    + [s[key][c] for c in cats for _, key in PER_CAT])
    return header, rows


def sweep_table(summaries: Sequence[dict], title: str = "") -> str:
    """A printable table: threshold, detectors, unique (top), unique (per-cat)."""
    lines = [title] if title else []
    lines.append(f"  {'IoU >':>7}  detectors  unique(top)  unique(per-cat)")
    for s in summaries:
        lines.append(f"  {s['iou_threshold']:>7.4g}  {s['detectors']:>9}  "
                     f"{s['unique_top_labels']:>11}  {s['per_category_sum']:>15}")
    return "\n".join(lines)


def write_sweep_csv(path: str | os.PathLike, summaries: Sequence[dict]) -> Path:
    """Write the table atomically (temp file + rename)."""
    header, rows = sweep_rows(summaries)
    return write_result_csv(path, header, rows)


def sweep_chart(path: str | os.PathLike, summaries: Sequence[dict], title: str = "",
                mark: float | None = 0.04) -> Path:
    """PNG: left, detectors / unique top labels / per-category sum against the threshold;
    right, the per-category sum by category. ``mark``: a dashed line (the usual 0.04)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    t = [s["iou_threshold"] for s in summaries]
    cats = list(summaries[0]["categories"]) if summaries else []
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
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
