"""Where the published NetDissect result tables (shared/golden) are: $NETDISSECT_GOLDEN, else
shared/golden beside the checkout (as in CI) or inside it. Tests that need them skip, saying
so, when none is found."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_CANDIDATES = [Path(p) for p in [os.environ.get("NETDISSECT_GOLDEN")] if p] + [
    ROOT.parent / "shared" / "golden", ROOT / "shared" / "golden"]
GOLDEN = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
ALEXNET = GOLDEN / "caffe_reference_places205.csv"
RESNET18 = GOLDEN / "resnet18_places365_layer4.csv"

needs_golden = pytest.mark.skipif(not ALEXNET.is_file() or not RESNET18.is_file(),
                                  reason=f"golden files not found in {GOLDEN} "
                                         f"(set NETDISSECT_GOLDEN)")
