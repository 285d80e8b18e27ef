"""Scoring on a dask.distributed LocalCluster of 2 processes and on fsspec URLs equals the
local threaded run bit for bit.

Stores: memory:// lives inside one process, so it is tested with the threaded scheduler
(run and label cache at memory:// URLs, reports uploaded there); the cluster tests use
file:// URLs and paths, which worker processes open themselves (the shared-filesystem
case). A memory:// run given to a cluster is refused with a clear message.
"""
from __future__ import annotations

import json
import os

import fsspec
import numpy as np
import pytest

from cache import store
from pipeline.distributed import (SchedulerError, check_shared, dask_scheduler,
                                  replay_cube_dask, tally_range)
from pipeline.replay import replay_cube
import scoring_fixtures as sf

pytestmark = pytest.mark.slow        # subprocess pipelines, kills, clusters: seconds each


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_data, tiny_run, tiny_labels):
    """A dataset, an extracted run, its label cache, and the threaded scoring of a copy."""
    tmp = tmp_path_factory.mktemp("distributed")
    data, run, labels = tiny_data, tiny_run, tiny_labels
    ref = sf.copy_fresh(run, tmp / "reference")
    for layer in sf.LAYERS:
        sf.score_library(ref, labels, layer)
    return {"tmp": tmp, "data": data, "run": run, "labels": labels, "ref": ref}


@pytest.fixture(scope="module")
def client():
    with dask_scheduler(cluster="local:2", log=lambda m: None) as c:
        yield c


def test_cluster_scoring_equals_threaded(setup, client, tmp_path):
    """Quantiles and tally on 2 worker processes, the run given as a file:// URL."""
    assert len(client.scheduler_info()["workers"]) == 2
    run = sf.copy_fresh(setup["run"], tmp_path / "run")
    for layer in sf.LAYERS:
        sf.score_library(f"file://{run}", setup["labels"], layer, client=client)
        sf.assert_cubes_equal(sf.stored_cube(run, layer), sf.stored_cube(setup["ref"], layer))
        assert (sf.units_of(run / "results" / f"{layer}.json")
                == sf.units_of(setup["ref"] / "results" / f"{layer}.json"))


def test_tally_graph_splits_into_tasks_and_sums_exactly(setup, client):
    """Odd tile sizes (ranges across chunks) give the same counts as the threaded replay."""
    labels = setup["labels"]
    acts = store.activations(setup["run"], "features.3")
    T = np.quantile(np.asarray(acts[:], np.float64).transpose(1, 0, 2, 3).reshape(16, -1),
                    [0.99, 0.95], axis=1)
    want = replay_cube(acts, store.maxima(setup["run"], "features.3"), labels,
                       [0.01, 0.05], T, device="cpu", progress=False)
    got = replay_cube_dask(setup["run"], "features.3", labels, [0.01, 0.05], T,
                           device="cpu", tile_images=7, compute_kwargs={"scheduler": client})
    for name in ("intersect", "activation", "label_pixels", "thresholds"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)
    assert want.intersect.sum() > 0
    # one task alone is a plain function of paths and a range
    i, a = tally_range(str(setup["run"]), "features.3", str(labels.path), 0, 30, T,
                       "cpu").result()
    np.testing.assert_array_equal(i.numpy(), want.intersect)


def test_score_cli_on_an_existing_scheduler(setup, client, tmp_path):
    """score.py --scheduler ADDRESS equals the threaded scoring (all layers)."""
    run = sf.copy_fresh(setup["run"], tmp_path / "run")
    r = sf.cli("scripts/score.py", run, "--label-cache", setup["labels"].path, "--levels",
               "0.005,0.02", "--quiet", "--scheduler", client.scheduler.address)
    assert "dask: 2 worker(s)" in r.stdout
    for layer in sf.LAYERS:
        sf.assert_cubes_equal(sf.stored_cube(run, layer), sf.stored_cube(setup["ref"], layer))


def test_score_cli_with_its_own_local_cluster(setup, tmp_path):
    """... and its temporary directory is removed afterwards, as is one a killed run
    left (named by a pid that is gone)."""
    run = sf.copy_fresh(setup["run"], tmp_path / "run")
    tmp = tmp_path / "tmp"
    stale = tmp / "netdissect-dask-4206649-abc"          # pid above any pid_max
    (stale / "worker-x").mkdir(parents=True)
    r = sf.cli("scripts/score.py", run, "--label-cache", setup["labels"].path, "--levels",
               "0.005,0.02", "--quiet", "--layer", "features.3", "--cluster", "local:2",
               env={**os.environ, "TMPDIR": str(tmp)})
    assert "dask: 2 worker(s) at tcp://127.0.0.1" in r.stdout
    sf.assert_cubes_equal(sf.stored_cube(run), sf.stored_cube(setup["ref"]))
    assert f"removed 1 temp directories an interrupted run left: {stale}" in r.stderr
    assert not [p for p in tmp.iterdir() if p.name.startswith("netdissect-")]


@pytest.mark.parametrize("args, message", [
    (["--cluster", "local:0"], "--cluster 'local:0': expected local:N"),
    (["--cluster", "kubernetes"], "expected local:N"),
    (["--cluster", "local:2", "--scheduler", "tcp://127.0.0.1:8786"], "not both"),
])
def test_bad_scheduler_arguments(setup, args, message):
    r = sf.cli("scripts/score.py", setup["ref"], "--label-cache", setup["labels"].path,
               "--quiet", *args, check=False)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_memory_url_run_and_label_cache(setup):
    """A run and a label cache at memory:// URLs, threaded scheduler: same cube, reports
    written into the URL run."""
    fs = fsspec.filesystem("memory")
    name = f"/run-{id(setup)}"
    fresh = sf.copy_fresh(setup["run"], setup["tmp"] / "for_memory")
    fs.put(str(fresh), name, recursive=True)
    labels = sf.make_labels(setup["data"], f"memory:/{name}-labels.zarr")
    url = f"memory:/{name}"
    cube = sf.score_library(url, labels)
    assert store.run_path(store.open_run(url)) == f"memory://{name}"
    sf.assert_cubes_equal(sf.stored_cube(url), sf.stored_cube(setup["ref"]))
    assert cube.intersect.sum() > 0
    doc = json.loads(fs.cat(f"{name}/results/features.3.json"))
    assert doc["units"] == sf.units_of(setup["ref"] / "results" / "features.3.json")
    assert fs.exists(f"{name}/results/features.3.csv")
    with pytest.raises(SchedulerError, match="memory:// exists only inside this process"):
        check_shared(url, labels)
    fs.rm(name, recursive=True)


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """A TLS-only LocalCluster (one in-process worker) and the PEM files of its CA, a
    client certificate and key (one self-signed pair: Security.temporary)."""
    from distributed import LocalCluster
    from distributed.security import Security
    pytest.importorskip("cryptography")              # what Security.temporary needs
    sec = Security.temporary()
    d = tmp_path_factory.mktemp("tls")
    files = {"ca": d / "ca.pem", "cert": d / "cert.pem", "key": d / "key.pem"}
    files["ca"].write_text(sec.tls_ca_file)
    files["cert"].write_text(sec.tls_client_cert)
    files["key"].write_text(sec.tls_client_key)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, protocol="tls://",
                      host="127.0.0.1", security=sec, dashboard_address=None) as lc:
        yield lc.scheduler_address, files


def test_score_cli_on_a_tls_scheduler(setup, tls_cluster, tmp_path):
    """--scheduler tls://... with --tls-* scores over TLS (bit for bit); without the files
    it is refused before connecting, with the options named."""
    address, f = tls_cluster
    assert address.startswith("tls://")
    run = sf.copy_fresh(setup["run"], tmp_path / "run")
    r = sf.cli("scripts/score.py", run, "--label-cache", setup["labels"].path, "--levels",
               "0.005,0.02", "--quiet", "--layer", "features.3", "--scheduler", address,
               "--tls-ca-file", f["ca"], "--tls-cert", f["cert"], "--tls-key", f["key"])
    assert f"dask: 1 worker(s) at {address}" in r.stdout
    sf.assert_cubes_equal(sf.stored_cube(run), sf.stored_cube(setup["ref"]))
    r = sf.cli("scripts/score.py", run, "--label-cache", setup["labels"].path, "--quiet",
               "--scheduler", address, check=False)
    assert r.returncode == 2 and "needs TLS files: give --tls-ca-file, --tls-cert" in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--tls-ca-file", "ca.pem"], "apply to a tls:// --scheduler address, got none"),
    (["--scheduler", "tcp://127.0.0.1:8786", "--tls-cert", "c.pem"],
     "apply to a tls:// --scheduler address, got tcp://127.0.0.1:8786"),
    (["--scheduler", "tls://127.0.0.1:8786", "--tls-ca-file", "missing.pem"],
     "--tls-ca-file missing.pem: no such file"),
])
def test_bad_tls_arguments(setup, args, message):
    r = sf.cli("scripts/score.py", setup["ref"], "--label-cache", setup["labels"].path,
               "--quiet", *args, check=False)
    assert r.returncode == 2 and message in r.stderr, r.stderr


def test_plain_tcp_to_another_machine_is_named():
    from pipeline.distributed import scheduler_security
    said = []
    assert scheduler_security("tcp://10.0.0.5:8786", log=said.append) is None
    assert len(said) == 1 and "unencrypted" in said[0] and "--tls-ca-file" in said[0]
    assert scheduler_security("tcp://127.0.0.1:8786", log=said.append) is None
    assert scheduler_security(None, log=said.append) is None and len(said) == 1
