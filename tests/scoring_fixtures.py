"""Helpers shared by the distributed, fault and bad-input tests: a small extracted run,
its label cache, and comparisons of what scoring stored."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import zarr

from cache import store
from pipeline.label_decoding import build_label_cache
from pipeline.broden import BrodenDataset
from pipeline.layer_stages import ScoreConfig, layer_cube, layer_results
from pipeline.extract import extract
from pipeline.extract_config import ExtractConfig
from pipeline.synthetic.writer import write_dataset
from clirun import cli, kill9, reap, signal_group, start  # noqa: F401  (for the tests)

ROOT = Path(__file__).resolve().parents[1]
TINY = f"{ROOT / 'tests' / 'model_factories.py'}:tiny_net"
LAYERS = ["features.2", "features.3"]
LEVELS = (0.005, 0.02)
CUBE_ARRAYS = ("thresholds", "intersect", "activation", "label_pixels")


def make_dataset(path: Path, num_images: int = 30) -> Path:
    """A synthetic Broden directory: 48 px images, 24 px segmentations, seed 11."""
    return write_dataset(path, num_images=num_images, image_size=48, seg_size=24, seed=11,
                         workers=1, progress=False)


def cli_extract(data: Path, run: Path, layers: str = "features.2,features.3") -> Path:
    """scripts/extract.py of tiny_net at input 26 from ``data`` into ``run``, as a user
    would run it."""
    cli("scripts/extract.py", "--dataset", data, "--model", "tests/model_factories.py:tiny_net",
        "--layers", layers, "--input-size", "26", "--out", run, "--workers", "0", "--quiet")
    return run


def make_run(dataset: Path, out: Path, batch_size: int = 8, **kw) -> Path:
    """tiny_net features.2/.3 at input 26 (13 x 13 maps of 16 units)."""
    extract(ExtractConfig(dataset=dataset, model=TINY, layers=LAYERS, out=out,
                          input_size=(26, 26), batch_size=batch_size, workers=0,
                          progress=False, **kw), log=lambda m: None)
    return out


def make_labels(dataset: Path, path, chunk_images: int = 8):
    return build_label_cache(BrodenDataset(dataset), path, chunk_images=chunk_images,
                             workers=1, progress=False)


def score_library(run, labels, layer: str = "features.3", **kw):
    """layer_cube + layer_results with the small levels; returns the Cube."""
    cfg = ScoreConfig(levels=LEVELS, progress=False, **kw)
    cube = layer_cube(run, layer, labels, cfg, log=lambda m: None)
    layer_results(run, layer, cube, labels, cfg, log=lambda m: None)
    return cube


def stored_cube(run, layer: str = "features.3") -> dict[str, np.ndarray]:
    """The cube arrays stored in a run (local path or URL)."""
    g = store.layer_group(store.open_run(run), layer)["cube"]
    assert g.attrs["complete"]
    return {n: np.asarray(g[n][:]) for n in CUBE_ARRAYS}


def assert_cubes_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for n in a:
        assert a[n].dtype == b[n].dtype, n
        np.testing.assert_array_equal(a[n], b[n], err_msg=n)


def units_of(results_json: Path | str) -> list[dict]:
    """The per-unit records of a results document (a local path)."""
    return json.loads(Path(results_json).read_text())["units"]




def copy_fresh(run: Path, dest: Path) -> Path:
    """A copy of ``run`` without its thresholds, cubes and results (never scored)."""
    import shutil
    shutil.copytree(run, dest)
    for layer_dir in (dest / "layers").iterdir():
        for sub in ("quantiles", "cube"):
            shutil.rmtree(layer_dir / sub, ignore_errors=True)
    shutil.rmtree(dest / "results", ignore_errors=True)
    return dest


def open_group(path) -> zarr.Group:
    return zarr.open_group(str(path), mode="r")
