"""Messages that name what is at fault and the command that fixes it, given before any
work: a dataset passed where a run belongs, null-model options without --null, a
malformed --device, an unfinished extraction, a label cache of another dataset."""
from __future__ import annotations

import numpy as np
import pytest
import zarr

from scoring_fixtures import cli, copy_fresh, make_dataset, make_labels

pytestmark = pytest.mark.slow        # subprocesses: seconds each


def score(run, *args):
    return cli("scripts/score.py", run, "--quiet", *args, check=False)


def test_a_dataset_given_as_the_run(tiny_data):
    r = score(tiny_data)
    assert r.returncode == 2
    assert f"{tiny_data} is a Broden dataset (it holds index.csv), not a run" in r.stderr
    assert f"scripts/extract.py --dataset {tiny_data}" in r.stderr


@pytest.mark.parametrize("args, named", [
    (["--null-images", "10"], "--null-images only apply with --null"),
    (["--null-permutations", "5", "--null-seed", "1"],
     "--null-permutations, --null-seed only apply with --null"),
    (["--device", "gpu"], "--device 'gpu': expected auto, cpu, cuda or cuda:N"),
])
def test_options_that_cannot_apply_are_refused_before_any_work(tiny_cli_run, tiny_labels,
                                                               tmp_path, args, named):
    run = copy_fresh(tiny_cli_run, tmp_path / "run")
    r = score(run, "--label-cache", tiny_labels.path, *args)
    assert r.returncode == 2 and named in r.stderr, r.stderr
    assert not (run / "results").exists() and "quantiles" not in r.stdout


def test_unfinished_extraction_names_the_command(tiny_cli_run, tiny_labels, tmp_path):
    run = copy_fresh(tiny_cli_run, tmp_path / "run")
    done = zarr.open_array(str(run / "progress"), mode="r+")
    flags = np.asarray(done[:])
    flags[-1] = 0
    done[:] = flags
    r = score(run, "--label-cache", tiny_labels.path)
    assert r.returncode == 2
    n = flags.size
    assert f"extraction is incomplete ({n - 1} of {n} blocks); rerun scripts/extract.py " \
        f"--dataset" in r.stderr and f"--out {run}" in r.stderr, r.stderr


def test_label_cache_of_another_dataset(tiny_cli_run, tmp_path):
    other = make_dataset(tmp_path / "other", num_images=12)
    cache = make_labels(other, tmp_path / "other_labels.zarr")
    r = score(copy_fresh(tiny_cli_run, tmp_path / "run"), "--label-cache", cache.path)
    assert r.returncode == 2
    assert f"{cache.path} holds the label cache of another dataset ({other}" in r.stderr
    assert "--rebuild" in r.stderr and "building the label cache" not in r.stdout


def test_coarse_maps_are_warned_about_everywhere(tiny_data, tmp_path):
    import json
    from pipeline.reports.document import map_warnings
    assert map_warnings([30, 16, 7, 9]) == [] and map_warnings(None) == []
    assert "6 x 9 cells" in map_warnings([30, 16, 6, 9])[0]
    run = tmp_path / "run"
    cli("scripts/extract.py", "--dataset", tiny_data, "--model",
        "tests/model_factories.py:tiny_net", "--layers", "features.3", "--input-size", "8",
        "--out", run, "--workers", "0", "--quiet")
    r = score(run, "--label-cache", tmp_path / "labels.zarr", "--levels", "0.005")
    assert r.returncode == 0, r.stderr
    assert "warning: coarse maps: 4 x 4 cells per image" in r.stdout
    doc = json.loads((run / "results" / "features.3.json").read_text())
    assert doc["summary"]["warnings"] == map_warnings([30, 16, 4, 4])
    page = (run / "results" / "features.3.html").read_text()
    assert "<p class=warn><b>Warning</b>: coarse maps: 4 x 4" in page
