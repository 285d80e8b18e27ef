"""Runs, label caches and results on s3://, against a local S3 server (moto, tests/s3_server.py).

A run is extracted locally and copied up with fsspec's ``put`` (as the README tells users
to), its label cache is built at an s3:// URL, and scoring it from s3:// (in this
process, with the score command, and on a LocalCluster of 2 processes) gives the same
cube and the same NetDissect CSV, byte for byte, as scoring the local run. ``verify``
writes nothing to the bucket. Object storage has no file lock: writers of s3:// say so,
and what needs a lock (extraction, derived runs) refuses an s3:// location naming what to
do instead. The endpoint reaches s3fs through ``AWS_ENDPOINT_URL`` (botocore reads it), so
the tool needs no flag for it.
"""
from __future__ import annotations

import errno
import io
import os

import fsspec
import numpy as np
import pytest

from cache import store
from pipeline.layer_stages import ScoreConfig
from pipeline.stages import Exports, score_run
from pipeline.verify import verify_run
import scoring_fixtures as sf
from s3_server import s3_server

LAYERS = sf.LAYERS


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server and the environment that points s3fs at it, for this module (the
    environment is restored and cached s3fs clients dropped at the end)."""
    import s3fs
    with s3_server() as server, pytest.MonkeyPatch.context() as mp:
        for k, v in server.env.items():
            mp.setenv(k, v)
        s3fs.S3FileSystem.clear_instance_cache()
        try:
            yield server
        finally:
            s3fs.S3FileSystem.clear_instance_cache()


def bucket_fs():
    fs = fsspec.filesystem("s3")
    fs.invalidate_cache()
    return fs


def upload(run, dest: str, tmp) -> str:
    """A never-scored copy of the local ``run`` (made in the folder ``tmp``) put at the
    s3:// URL ``dest``, as a user copies a run up."""
    fresh = sf.copy_fresh(run, tmp / "upload")
    bucket_fs().put(str(fresh), dest, recursive=True)
    return dest


def config(**kw) -> ScoreConfig:
    return ScoreConfig(levels=sf.LEVELS, progress=False, **kw)


@pytest.fixture(scope="module")
def local(tmp_path_factory, tiny_run, tiny_labels):
    """The reference: a local copy of the run scored in this process."""
    ref = sf.copy_fresh(tiny_run, tmp_path_factory.mktemp("s3_ref") / "run")
    score_run(ref, config(), label_cache=tiny_labels.path, log=lambda m: None)
    return ref


@pytest.fixture(scope="module")
def on_s3(s3, tiny_data, tiny_run, tmp_path_factory):
    """The run copied to s3://, its label cache built at an s3:// URL, and the run scored
    from s3:// in this process (reports into RUN/results on the bucket)."""
    url = upload(tiny_run, s3.url("runs", "tiny"), tmp_path_factory.mktemp("s3_up"))
    said: list[str] = []
    labels = sf.make_labels(tiny_data, s3.url("cache", "labels.zarr"))
    scored = score_run(url, config(), label_cache=labels.path, log=said.append)
    return {"url": url, "labels": labels, "said": said, "scored": scored}


def test_label_cache_at_an_s3_url(on_s3, tiny_labels):
    labels = on_s3["labels"]
    assert str(labels.path) == on_s3["url"].replace("runs/tiny", "cache/labels.zarr")
    assert labels.fingerprint == tiny_labels.fingerprint
    np.testing.assert_array_equal(labels.label_pixels, tiny_labels.label_pixels)


def test_scoring_from_s3_equals_the_local_run(on_s3, local):
    """Same cube and same CSV bytes as the local run; the reports are on the bucket."""
    fs = bucket_fs()
    url = on_s3["url"]
    for s, layer in zip(on_s3["scored"], LAYERS):
        assert s.csv_path == f"{url}/results/{layer}.csv"
        sf.assert_cubes_equal(sf.stored_cube(url, layer), sf.stored_cube(local, layer))
        assert fs.cat(s.csv_path) == (local / "results" / f"{layer}.csv").read_bytes()
        assert fs.exists(f"{url}/results/{layer}.json") and fs.exists(f"{url}/results/{layer}.html")
    assert on_s3["scored"][1].cube.intersect.sum() > 0
    index = fs.cat(f"{url}/results/index.html").decode()      # the run's index of scorings
    for layer in LAYERS:
        assert f"<a href='{layer}.html'>" in index and f"<a href='{layer}.csv'>" in index


def test_writers_of_s3_say_there_is_no_lock(on_s3, tiny_data):
    """Scoring and the label-cache build of an s3:// location take no lock and say so."""
    notes = [m for m in on_s3["said"] if "has no file lock" in m]
    assert any(on_s3["url"] in m and "second scoring" in m for m in notes), on_s3["said"]
    from pipeline.broden import BrodenDataset
    from pipeline.label_decoding import build_label_cache
    lab, cache_notes = on_s3["url"] + "-labels.zarr", []
    build_label_cache(BrodenDataset(tiny_data), lab, chunk_images=8, workers=1,
                      progress=False, log=cache_notes.append)
    assert any(lab in m and "second label-cache build" in m for m in cache_notes), cache_notes


def snapshot(prefix: str) -> dict[str, tuple]:
    """Every object under ``prefix``: (size, ETag)."""
    return {k: (v["size"], v.get("ETag")) for k, v in
            bucket_fs().find(prefix, detail=True).items()}


def test_verify_reads_an_s3_run_and_writes_nothing(s3, on_s3):
    before = snapshot(s3.url())
    findings, notes = verify_run(on_s3["url"], str(on_s3["labels"].path))
    assert findings == [], [str(f) for f in findings]
    assert any("label cache" in n for n in notes)
    assert snapshot(s3.url()) == before


def test_a_damaged_chunk_on_s3_is_named_with_the_copy_commands(s3, tiny_run, on_s3,
                                                                tmp_path):
    url = upload(tiny_run, s3.url("runs", "damaged"), tmp_path)
    chunk = f"{url}/layers/features.3/activations/c/1/0/0/0"
    fs = bucket_fs()
    assert fs.exists(chunk)
    fs.pipe(chunk, b"\x00" * 64)
    findings, _ = verify_run(url, str(on_s3["labels"].path))
    damaged = [f for f in findings if f.state == "damaged"]
    assert damaged and chunk in damaged[0].problem + damaged[0].what, [str(f) for f in findings]
    assert f"aws s3 sync {url} LOCAL_RUN" in damaged[0].fix
    assert f"aws s3 sync LOCAL_RUN {url}" in damaged[0].fix


def test_locks_on_object_storage_are_refused_with_what_to_do(s3):
    url = s3.url("runs", "locked")
    with pytest.raises(store.RunError, match="object storage cannot give; extract to a "
                                             "local .* and copy the run to object storage"):
        store.RunLock(url)
    with pytest.raises(store.RunError, match="score the run at its s3:// .* URL, which "
                                             "takes no lock"):
        store.RunLock(url, "scoring")
    assert not bucket_fs().exists(url)


def test_extraction_to_s3_is_refused(s3, tiny_data):
    from pipeline.extract import extract
    from pipeline.extract_config import ExtractConfig
    url = s3.url("runs", "extracted")
    with pytest.raises(store.RunError, match="copy the run to object storage afterwards"):
        extract(ExtractConfig(dataset=tiny_data, model=sf.TINY, layers=["features.3"],
                              out=url, input_size=(26, 26), workers=0, progress=False),
                log=lambda m: None)
    assert not bucket_fs().exists(url)


def test_rotation_out_at_a_url_is_refused_and_nothing_local_is_made(on_s3, tmp_path,
                                                                    monkeypatch):
    """--out s3://... once became a local folder named ``s3:`` (a URL made a Path)."""
    from pipeline.experiments.rotation import RotationSpec, run_experiment
    monkeypatch.chdir(tmp_path)
    out = on_s3["url"] + "-rotations"
    with pytest.raises(ValueError, match=r"--out s3://.*: derived runs are written to a "
                                         r"local .* give a local --out"):
        run_experiment(on_s3["url"], RotationSpec("features.3", alphas=(0.0,), out=out),
                       config(), label_cache=str(on_s3["labels"].path), log=lambda m: None)
    assert list(tmp_path.iterdir()) == []
    from pipeline.experiments.derived_runs import write_transformed_run
    with pytest.raises(store.RunError, match="local directories only"):
        write_transformed_run(on_s3["url"], "features.3", np.eye(16), out, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_a_filesystem_without_locks_is_named(tmp_path, monkeypatch):
    """flock failing for want of support (an object store mounted with FUSE) is a
    RunError naming the lock file and what to do, not a bare OSError."""
    import fcntl

    def no_locks(fd, op):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
    monkeypatch.setattr(fcntl, "flock", no_locks)
    with pytest.raises(store.RunError, match=r"\.lock: cannot lock it .*no file locks "
                                             r".*score the run at its s3://"):
        store.RunLock(tmp_path / "run", "scoring").acquire()


def test_exports_to_s3(on_s3, local, tmp_path):
    """--export-iou/--export-thresholds at s3:// URLs (once written to a local folder
    named ``s3:``); the run is only read (its cube is stored, the reports go to
    --results-dir): nothing in it changes, and no lock note is printed."""
    url = on_s3["url"]
    iou, thr = f"{url}-exports/iou", f"{url}-exports/T.npy"
    out = tmp_path / "results"
    before, said = snapshot(url + "/"), []
    [s] = score_run(url, config(results_dir=str(out)), layers=["features.3"],
                    label_cache=str(on_s3["labels"].path), exports=Exports(iou, thr),
                    log=said.append)
    assert snapshot(url + "/") == before and not [m for m in said if "lock" in m], said
    fs = bucket_fs()
    got = np.load(io.BytesIO(fs.cat(iou + ".npy")))
    np.testing.assert_array_equal(got, s.dissection.iou)
    T = np.load(io.BytesIO(fs.cat(thr)))
    np.testing.assert_array_equal(T, s.cube.thresholds[s.cube.level_index(0.005)])
    assert (out / "features.3.csv").read_bytes() == (local / "results" / "features.3.csv").read_bytes()


@pytest.mark.slow
def test_score_cli_on_a_local_cluster_from_s3(s3, tiny_run, local, tmp_path):
    """score S3_URL --cluster local:2: the workers (other processes) open the caches on
    the bucket themselves; the label cache is built at $NETDISSECT_CACHE=s3://...; the
    reports go to --results-dir s3://...; cube and CSVs equal the local run's."""
    url = upload(tiny_run, s3.url("runs", "cluster"), tmp_path)
    results = s3.url("results", "cluster")
    r = sf.cli("scripts/score.py", url, "--levels", "0.005,0.02", "--quiet", "--cluster",
               "local:2", "--results-dir", results,
               env={**os.environ, "NETDISSECT_CACHE": s3.url("netdissect-cache"),
                    "TMPDIR": str(tmp_path)})
    assert "dask: 2 worker(s) at tcp://127.0.0.1" in r.stdout
    assert f"{url} is on object storage, which has no file lock" in r.stdout
    fs = bucket_fs()
    assert [p.rsplit("/", 1)[-1] for p in fs.ls(s3.url("netdissect-cache"))] == [
        f"labels-{store.read_run_attrs(url)['dataset']['fingerprint'][:16]}.zarr"]
    for layer in LAYERS:
        sf.assert_cubes_equal(sf.stored_cube(url, layer), sf.stored_cube(local, layer))
        assert (fs.cat(f"{results}/{layer}.csv")
                == (local / "results" / f"{layer}.csv").read_bytes())
    assert not fs.exists(f"{url}/results")
    assert f"<a href='{LAYERS[0]}.csv'>" in fs.cat(f"{results}/index.html").decode()


def test_a_named_scoring_on_s3_is_listed_in_the_index(on_s3):
    """--iou-threshold 0.08 (no replay) goes to RUN/results/iou0.08/ on the bucket, and
    RUN/results/index.html lists it beside the default scoring."""
    url = on_s3["url"]
    [s] = score_run(url, config(iou_threshold=0.08), layers=["features.3"],
                    label_cache=str(on_s3["labels"].path), log=lambda m: None)
    assert s.csv_path == f"{url}/results/iou0.08/features.3.csv"
    index = bucket_fs().cat(f"{url}/results/index.html").decode()
    assert "<a href='iou0.08/features.3.csv'>" in index and "<a href='features.3.csv'>" in index
