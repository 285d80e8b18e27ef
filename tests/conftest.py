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


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    import scoring_fixtures as sf
    return sf.make_dataset(tmp_path_factory.mktemp("tiny") / "broden")


@pytest.fixture(scope="session")
def tiny_run(tiny_data, tmp_path_factory) -> Path:
    import scoring_fixtures as sf
    return sf.make_run(tiny_data, tmp_path_factory.mktemp("tiny_run") / "run")


@pytest.fixture(scope="session")
def tiny_labels(tiny_data, tmp_path_factory):
    import scoring_fixtures as sf
    return sf.make_labels(tiny_data, tmp_path_factory.mktemp("tiny_labels") / "labels.zarr")


@pytest.fixture(scope="session")
def tiny_cli_run(tiny_data, tmp_path_factory) -> Path:
    import scoring_fixtures as sf
    return sf.cli_extract(tiny_data, tmp_path_factory.mktemp("tiny_cli") / "run")
