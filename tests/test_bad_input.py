"""Bad input reaches the user as a clear message (exit code 2, no traceback).

Covered elsewhere, at the reader or argument level:
- malformed CSV rows, missing columns, non-integer sizes: tests/test_broden.py
  (test_malformed_row, test_missing_column, test_non_integer_size);
- images and segmentation PNGs of the wrong size, PNG or scalar labels not in label.csv,
  truncated files: tests/test_broden.py (test_image_of_wrong_size, test_png_of_wrong_size,
  test_png_label_not_in_label_csv, test_scalar_label_not_in_label_csv,
  test_truncated_png_and_image);
- a layer that is not convolutional (not 4-D) or unknown: tests/test_models.py
  (test_unknown_and_non_4d_layer_errors), tests/test_extract.py
  (test_non_4d_layer_error_names_layer_and_shape, test_unknown_layer_lists_4d_layers);
- a quantile outside (0, 1), an IoU threshold outside [0, 1]: tests/test_score_cli.py
  (test_bad_arguments_are_named), tests/test_quantiles.py
  (test_rejects_levels_outside_open_interval).
Here: the same errors through the command-line scripts, NaN/infinite activations, an
empty dataset.
"""
from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
import zarr
from PIL import Image

from pipeline.quantiles import NonFiniteActivations, exact_thresholds
import scoring_fixtures as sf
import tiny_broden as tb


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad_input")
    data = sf.make_dataset(tmp / "broden", num_images=16)
    run = sf.make_run(data, tmp / "run")
    labels = sf.make_labels(data, tmp / "labels.zarr")
    return {"tmp": tmp, "data": data, "run": run, "labels": labels}


def assert_clear(r, *fragments) -> None:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    for f in fragments:
        assert f in r.stderr, (f, r.stderr)


# ------------------------------------------------------------------ activations
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_activations_name_layer_units_and_fix(setup, tmp_path, value):
    run = sf.copy_fresh(setup["run"], tmp_path / "run")
    g = zarr.open_group(run / "layers" / "features.3", mode="r+")
    acts, mx = g["activations"], g["maxima"]
    a = acts[3]
    a[5, 2, 2] = value
    a[11, 0, 1] = value
    acts[3] = a                                  # what a float16 overflow leaves behind
    mx[3] = a.astype(np.float32).max(axis=(1, 2))
    r = sf.cli("scripts/score.py", run, "--label-cache", setup["labels"].path, "--quiet",
               "--layer", "features.3", check=False)
    assert_clear(r, "layer 'features.3'", "units [5, 11] (0-based)", "NaN or infinite",
                 "--dtype float32 --overwrite")


def test_non_finite_values_below_the_maxima_are_caught_by_the_quantiles():
    acts = np.zeros((4, 3, 2, 2), np.float16)
    acts[2, 1, 0, 0] = np.inf
    with pytest.raises(NonFiniteActivations, match=r"units \[1\]") as e:
        exact_thresholds(acts, [0.1], memory_budget=1)     # one unit per dask chunk
    assert e.value.units == [1]


# ---------------------------------------------------------------------- datasets
def test_empty_dataset(setup, tmp_path):
    data = tmp_path / "empty"
    shutil.copytree(setup["data"], data)
    header = (data / "index.csv").read_text().splitlines()[0]
    (data / "index.csv").write_text(header + "\n")
    r = sf.cli("scripts/extract.py", "--dataset", data, "--model", sf.TINY, "--layers",
               "features.2", "--out", tmp_path / "run", "--workers", "0", check=False)
    assert_clear(r, "index.csv has no image")
    assert not (tmp_path / "run" / "zarr.json").exists()
    r = sf.cli("scripts/cache_labels.py", "--dataset", data, "--out", tmp_path / "l.zarr",
               check=False)
    assert_clear(r, "index.csv: has no image rows")
    assert not list(tmp_path.glob("l.zarr*"))


def _tiny_with(tmp_path, change) -> str:
    root = tb.write_tiny_broden(tmp_path / "tiny")
    change(root)
    return str(root)


def _malformed_row(root):
    with open(root / "index.csv") as f:
        rows = list(csv.reader(f))
    rows[2] = rows[2][:4]
    with open(root / "index.csv", "w", newline="") as f:
        csv.writer(f).writerows(rows)


def _wrong_image_size(root):
    Image.fromarray(np.zeros((9, 8, 3), np.uint8)).save(root / "images" / "src" / "2.jpg")


def _unknown_png_label(root):
    tb._png(root / "images" / "src" / "1_object_0.png", np.full((4, 4), 42, dtype=np.int32))


@pytest.mark.parametrize("change, script, message", [
    (_malformed_row, "extract", "index.csv, row 2: expected 12 fields"),
    (_malformed_row, "labels", "index.csv, row 2: expected 12 fields"),
    (_wrong_image_size, "extract", "2.jpg (index.csv row 2): image is 9 x 8"),
    (_unknown_png_label, "labels", "label number(s) [42] not in label.csv"),
])
def test_bad_broden_files_through_the_scripts(tmp_path, change, script, message):
    data = _tiny_with(tmp_path, change)
    if script == "extract":
        r = sf.cli("scripts/extract.py", "--dataset", data, "--model", sf.TINY, "--layers",
                   "features.0", "--input-size", "16", "--out", tmp_path / "run",
                   "--workers", "0", "--no-progress", check=False)
    else:
        r = sf.cli("scripts/cache_labels.py", "--dataset", data, "--out",
                   tmp_path / "l.zarr", "--workers", "1", "--no-progress", check=False)
    assert_clear(r, message)


# ------------------------------------------------------------------ arguments
@pytest.mark.slow
def test_nonsense_tile_images_and_workers_are_refused_before_anything_is_stored(setup,
                                                                                tmp_path):
    run = sf.copy_fresh(setup["run"], tmp_path / "run")
    for flag, value, message in (
            ("--tile-images", "-4", "--tile-images must be >= 1, got -4"),
            ("--tile-images", "0", "--tile-images must be >= 1, got 0"),
            ("--workers", "0", "--workers must be >= 1, got 0"),
            ("--levels", "0,0.005", "--levels: every level must be in (0, 1), got 0.0"),
            ("--levels", "nan", "--levels: every level must be in (0, 1), got nan"),
            ("--quantile", "-1", "--quantile must be in (0, 1), got -1")):
        r = sf.cli("scripts/score.py", run, "--label-cache", setup["labels"].path, "--quiet",
                   "--layers", "features.3", flag, value, check=False)
        assert_clear(r, message)
    assert not (run / "layers" / "features.3" / "cube").exists()    # no all-zero cube
    assert not (run / "layers" / "features.3" / "quantiles").exists()


@pytest.mark.slow
@pytest.mark.parametrize("flag, value", [("--mean", "nan,0.4,0.4"), ("--std", "0.2,inf,0.2")])
def test_non_finite_normalisation_is_refused(setup, tmp_path, flag, value):
    r = sf.cli("scripts/extract.py", "--dataset", setup["data"], "--model", sf.TINY,
               "--layers", "features.2", "--out", tmp_path / "run", "--workers", "0",
               flag, value, check=False)
    assert_clear(r, flag, "finite")
    assert not (tmp_path / "run" / "zarr.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--chunk-images", "0"], "--chunk-images 0: must be >= 1"),
    (["--chunk-images", "-5"], "--chunk-images -5: must be >= 1"),
    (["--workers", "-2"], "--workers -2: must be >= 0"),
])
@pytest.mark.slow
def test_label_cache_bad_chunking_is_named(setup, tmp_path, args, message):
    r = sf.cli("scripts/cache_labels.py", "--dataset", setup["data"], "--out",
               tmp_path / "l.zarr", "--workers", "1", "--quiet", *args, check=False)
    assert_clear(r, message)
    assert not (tmp_path / "l.zarr").exists()


@pytest.mark.slow
def test_label_cache_out_that_is_a_file_is_named(setup, tmp_path):
    target = tmp_path / "notes.txt"
    target.write_text("keep me\n")
    r = sf.cli("scripts/cache_labels.py", "--dataset", setup["data"], "--out", target,
               "--workers", "1", "--quiet", check=False)
    assert_clear(r, f"--out {target}: is a file")
    assert target.read_text() == "keep me\n"


@pytest.mark.slow
def test_nonsense_training_numbers_are_named(setup, tmp_path):
    for flag, value, message in (
            ("--iterations", "0", "--iterations 0: must be >= 1"),
            ("--batch-size", "-2", "--batch-size -2: must be >= 1"),
            ("--lr", "0", "--lr 0.0: must be a finite number > 0"),
            ("--lr", "nan", "--lr nan: must be a finite number > 0"),
            ("--weight-decay", "-1", "--weight-decay -1.0: must be a finite number >= 0"),
            ("--eval-every", "-1", "--eval-every -1: must be >= 0"),
            ("--dropout", "1.5", "--dropout 1.5: must be in [0, 1)"),
            ("--conv5-width", "0", "--conv5-width 0: must be >= 1"),
            ("--threads", "0", "--threads 0: must be >= 1"),
            ("--generate-images", "0", "--generate-images 0: must be >= 1")):
        r = sf.cli("scripts/train_demo_model.py", "--dataset", tmp_path / "gen", "--out",
                   tmp_path / "out", flag, value, "--quiet", check=False)
        assert_clear(r, message)
        assert not (tmp_path / "out").exists() and not (tmp_path / "gen").exists()


@pytest.mark.slow
@pytest.mark.parametrize("script, args, message", [
    ("demo.py", ["--num-images", "0"], "--num-images 0: must be >= 1"),
    ("demo.py", ["--seed", "-1"], "--seed -1: must be >= 0"),
    ("experiments.py", ["--num-images", "-1"], "--num-images -1: must be >= 1"),
    ("experiments.py", ["--variant-iterations", "0"], "--variant-iterations 0: must be >= 1"),
    ("bench.py", ["--num-images", "0"], "--num-images 0: must be >= 1"),
    ("bench.py", ["--batch-size", "0"], "--batch-size 0: must be >= 1"),
    ("bench.py", ["--workers", "-1"], "--workers -1: must be >= 1"),
    ("bench.py", ["--image-size", "0"], "--image-size 0: must be >= 1"),
])
def test_nonsense_numbers_of_the_job_scripts_are_named(tmp_path, script, args, message):
    out = ["--work", tmp_path / "w"] if script == "bench.py" else ["--out", tmp_path / "w"]
    if script == "experiments.py":
        out += ["--figures", tmp_path / "f"]
    r = sf.cli(f"scripts/{script}", *out, *args, "--quiet", check=False)
    assert_clear(r, message)
    assert not (tmp_path / "w").exists()
