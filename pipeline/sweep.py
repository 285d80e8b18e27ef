"""IoU-threshold sweep: detectors and unique detectors against the detector threshold.

A unit's best concept (overall and per category) does not depend on the IoU threshold, so a
sweep is one labelling (from the stored cube, or from a result CSV) counted at many
thresholds with :func:`pipeline.scoring.count_detectors`: no replay, milliseconds. The
``--sweep`` grid is parsed by :func:`pipeline.cli.parse_thresholds`. The sweep's
table, CSV rows and chart are in :mod:`pipeline.reports.tables` and
:mod:`pipeline.reports.charts`.
"""
from __future__ import annotations

from typing import Sequence

from pipeline.scoring import UnitResult, count_detectors


def sweep(units: Sequence[UnitResult], categories: Sequence[str],
          thresholds: Sequence[float]) -> list[dict]:
    """count_detectors() at each threshold (one summary dict per threshold)."""
    return [count_detectors(units, categories, float(t)) for t in thresholds]
