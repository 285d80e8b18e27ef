"""IoU-threshold sweep: detectors and unique detectors against the detector threshold.

A unit's best concept (overall and per category) does not depend on the IoU threshold, so a
sweep is one labelling (from the stored cube, or from a result CSV) counted at many
thresholds with :func:`pipeline.scoring.count_detectors`: no replay, milliseconds. The sweep's
table, CSV rows and chart are in :mod:`pipeline.reports.tables` and
:mod:`pipeline.reports.charts`.
"""
from __future__ import annotations

from typing import Sequence

from pipeline.scoring import UnitResult, count_detectors


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
