"""Shared pytest fixtures.

``small_broden``: a small synthetic Broden directory (pipeline/synthetic/: 24 images
of 64 x 64 px, 32 x 32 segmentations, seed 0), made once per session; do not modify it
(copy it first).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


@pytest.fixture(scope="session")
def small_broden(tmp_path_factory) -> Path:
    from pipeline.synthetic.writer import write_dataset
    return write_dataset(tmp_path_factory.mktemp("small_broden") / "broden", num_images=24,
                         image_size=64, seg_size=32, seed=0, workers=1, progress=False)
