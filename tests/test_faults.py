"""Faults: kill -9 and Ctrl-C during label caching and scoring, a full disk, a second
writer, a moved or copied run, and damaged chunks (named, then repaired).

Covered elsewhere: kill -9, Ctrl-C (SIGINT to the script and KeyboardInterrupt in the
loop), a full disk and a second writer during *extraction* are in tests/test_extract.py
(test_resume_after_kill9_is_bit_identical_and_lock_refuses,
test_ctrl_c_in_the_script_leaves_resumable_cache, test_keyboard_interrupt_leaves_resumable_cache,
test_write_error_is_clear_and_resumable, test_second_extraction_refused_while_locked);
kill -9 of every script with worker processes at many moments, then an immediate rerun, is
in tests/test_kill_resume.py.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from cache import metadata, store
from cache.integrity import scan_label_cache, scan_run
from cache.labels import LabelCache, LabelCacheError
from cache.store import RunLockedError
from pipeline.extract import extract_with_stats
from pipeline.extract_config import ExtractConfig
import scoring_fixtures as sf

pytestmark = pytest.mark.slow        # subprocess pipelines, kills, clusters: seconds each

ROOT = sf.ROOT
SLOW = str(ROOT / "tests" / "slow_runner.py")
LABEL_ARRAYS = ("planes", "scalars", "present", "label_pixels")


@pytest.fixture(scope="module")
def setup(tmp_path_factory, tiny_data, tiny_run):
    """A dataset, a run, a label cache (chunks of 4 images), and the uninterrupted
    scoring of a copy of the run (both layers)."""
    tmp = tmp_path_factory.mktemp("faults")
    data, run = tiny_data, tiny_run
    labels = sf.make_labels(data, tmp / "labels.zarr", chunk_images=4)
    ref = sf.copy_fresh(run, tmp / "reference")
    for layer in sf.LAYERS:
        sf.score_library(ref, labels, layer)
    return {"tmp": tmp, "data": data, "run": run, "labels": labels, "ref": ref}


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    """Poll ``condition()`` until true; fail if ``proc`` ended or time ran out first."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the subprocess ended before {what}:\n{out}\n{err}")
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


def files_in(path: Path) -> int:
    return len([p for p in path.rglob("*") if p.is_file()]) if path.is_dir() else 0


def assert_label_caches_equal(a: LabelCache, b: LabelCache) -> None:
    for name in LABEL_ARRAYS:
        np.testing.assert_array_equal(a.group[name][:], b.group[name][:], err_msg=name)


def assert_scored_like_reference(run: Path, ref: Path) -> None:
    for layer in sf.LAYERS:
        sf.assert_cubes_equal(sf.stored_cube(run, layer), sf.stored_cube(ref, layer))
        assert (sf.units_of(run / "results" / f"{layer}.json")
                == sf.units_of(ref / "results" / f"{layer}.json"))


def thresholds_stored(run: Path, layer: str):
    """A condition: the layer's thresholds are stored for good (their node sealed with its
    digest, after the arrays), so a scoring killed from now on keeps them."""
    node = run / "layers" / layer / "quantiles" / "zarr.json"

    def sealed() -> bool:
        try:
            return "digest" in json.loads(node.read_text()).get("attributes", {})
        except (OSError, ValueError):
            return False            # not there yet, or being written
    return sealed


def score_cmd(run: Path, labels: Path, *extra) -> list:
    """score.py with each tile slowed down; --workers 1 keeps the tiles in the process
    that slow_runner patched (see test_scoring_ctrl_c_stops_worker_processes)."""
    return [SLOW, "tally", "0.4", "scripts/score.py", run, "--label-cache", labels,
            "--levels", "0.005,0.02", "--tile-images", "4", "--workers", "1", "--quiet",
            *extra]


def children(pid: int) -> set[int]:
    """Live child processes of ``pid`` (from /proc)."""
    out = set()
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.add(int(d.name))
    return out


# ------------------------------------------------------------------ label cache
def test_label_cache_kill9_resumes_and_second_builder_is_refused(setup, tmp_path):
    path = tmp_path / "labels.zarr"
    proc = sf.start(SLOW, "decode", "0.3", "scripts/cache_labels.py", "--dataset",
                    setup["data"], "--out", path, "--workers", "1", "--chunk-images", "4",
                    "--quiet")
    try:
        wait_for(lambda: files_in(path / "done" / "c") >= 2, proc, "2 label chunks")
        with pytest.raises(RunLockedError, match="another label-cache build"):
            sf.make_labels(setup["data"], path, chunk_images=4)
        sf.kill9(proc)
    finally:
        sf.reap(proc)
    with pytest.raises(LabelCacheError, match="incomplete"):
        LabelCache.open(path)
    done = np.asarray(zarr.open_group(path)["done"][:])
    assert 2 <= done.sum() < done.size == 8
    resumed = sf.make_labels(setup["data"], path, chunk_images=4)
    assert_label_caches_equal(resumed, setup["labels"])


def test_label_cache_ctrl_c_is_clean_and_resumes(setup, tmp_path):
    path = tmp_path / "labels.zarr"
    proc = sf.start(SLOW, "decode", "0.3", "scripts/cache_labels.py", "--dataset",
                    setup["data"], "--out", path, "--workers", "1", "--chunk-images", "4",
                    "--quiet")
    wait_for(lambda: files_in(path / "done" / "c") >= 1, proc, "1 label chunk")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "finished chunks are kept" in err and "Traceback" not in err
    assert np.asarray(zarr.open_group(path)["done"][:]).sum() < 8
    assert_label_caches_equal(sf.make_labels(setup["data"], path, chunk_images=4),
                              setup["labels"])


def test_label_cache_layout_cut_short_is_laid_out_again(setup, tmp_path):
    """A kill while the layout is created can leave a zarr.json with only some attributes
    (no dataset, no layout_ready): the next build starts over instead of failing on it."""
    path = tmp_path / "labels.zarr"
    zarr.open_group(path, mode="w", attributes={"format": "netdissect-labels", "version": 1})
    r = sf.cli("scripts/cache_labels.py", "--dataset", setup["data"], "--out", path,
               "--workers", "1", "--chunk-images", "4", "--quiet")
    assert "label cache:" in r.stdout
    assert_label_caches_equal(LabelCache.open(path), setup["labels"])


def test_label_cache_full_disk_is_clear_and_resumable(setup, tmp_path, monkeypatch):
    path = tmp_path / "labels.zarr"
    real = zarr.Array.__setitem__
    calls = {"n": 0}

    def full_disk(self, key, value):
        if self.path == "planes":
            calls["n"] += 1
            if calls["n"] == 3:
                raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, key, value)
    monkeypatch.setattr(zarr.Array, "__setitem__", full_disk)
    with pytest.raises(LabelCacheError, match=r"(?s)label chunk 2 .*No space left on device"
                                              r".*rerun the same command to resume"):
        sf.make_labels(setup["data"], path, chunk_images=4)
    monkeypatch.setattr(zarr.Array, "__setitem__", real)
    assert np.asarray(zarr.open_group(path)["done"][:]).sum() == 2
    assert_label_caches_equal(sf.make_labels(setup["data"], path, chunk_images=4),
                              setup["labels"])


# ---------------------------------------------------------------------- scoring
def test_scoring_kill9_rerun_equals_uninterrupted_and_second_writer_refused(setup, tmp_path):
    run = sf.copy_fresh(setup["run"], tmp_path / "run")
    labels = setup["labels"].path
    proc = sf.start(*score_cmd(run, labels))
    try:
        wait_for(thresholds_stored(run, "features.2"), proc, "features.2")
        second = sf.cli("scripts/score.py", run, "--label-cache", labels, "--quiet",
                        check=False)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "being written by another scoring (pid" in second.stderr
        assert "wait for it to finish, then score again" in second.stderr
        assert "--out" not in second.stderr                 # score.py has no --out
        # its tiles take 0.4 s each (score_cmd): the kill lands before the cube is stored
        wait_for(thresholds_stored(run, "features.3"), proc, "features.3")
        sf.kill9(proc)
    finally:
        sf.reap(proc)
    assert not (run / "results" / "features.3.json").exists()
    r = sf.cli("scripts/score.py", run, "--label-cache", labels, "--levels", "0.005,0.02",
               "--quiet")
    assert "[features.3] IoU cube" in r.stdout            # recounted after the kill
    assert "[features.3] exact quantiles" not in r.stdout  # thresholds were kept
    assert_scored_like_reference(run, setup["ref"])


def test_scoring_ctrl_c_is_clean_and_rerun_completes(setup, tmp_path):
    run = sf.copy_fresh(setup["run"], tmp_path / "run")
    proc = sf.start(*score_cmd(run, setup["labels"].path))
    wait_for(thresholds_stored(run, "features.2"), proc, "the thresholds of features.2")
    proc.send_signal(signal.SIGINT)                     # in its slowed tiles
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "rerun the same command" in err
    assert "Traceback" not in err
    sf.cli("scripts/score.py", run, "--label-cache", setup["labels"].path, "--levels",
           "0.005,0.02", "--quiet")
    assert_scored_like_reference(run, setup["ref"])


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_scoring_ctrl_c_stops_worker_processes(setup, tmp_path):
    """Tiles counted in 2 worker processes: Ctrl-C in a terminal (SIGINT to the whole
    process group) ends the scoring with exit 130 and no traceback from it or a worker,
    and no worker outlives it; the rerun completes."""
    run = sf.copy_fresh(setup["run"], tmp_path / "run")
    proc = sf.start("scripts/score.py", run, "--label-cache", setup["labels"].path,
                    "--levels", "0.005,0.02", "--tile-images", "2", "--workers", "2",
                    "--quiet", session=True)
    workers: set[int] = set()
    try:
        wait_for(lambda: len(children(proc.pid)) >= 2, proc, "two worker processes")
        workers = children(proc.pid)
        sf.signal_group(proc, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        sf.reap(proc)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "Traceback" not in err and "KeyboardInterrupt" not in err
    deadline = time.time() + 10
    while time.time() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
        time.sleep(0.1)
    assert not [p for p in workers if Path(f"/proc/{p}").exists()], "a worker outlived it"
    sf.cli("scripts/score.py", run, "--label-cache", setup["labels"].path, "--levels",
           "0.005,0.02", "--workers", "2", "--tile-images", "2", "--quiet")
    assert_scored_like_reference(run, setup["ref"])


def test_scoring_full_disk_is_clear_and_rerun_completes(setup, tmp_path, monkeypatch,
                                                        capsys):
    run = sf.copy_fresh(setup["run"], tmp_path / "run")
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import score
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    import pipeline.layer_stages as layer_stages
    real = layer_stages.write_cube

    def full_disk(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(layer_stages, "write_cube", full_disk)
    args = [str(run), "--label-cache", str(setup["labels"].path), "--levels", "0.005,0.02",
            "--quiet"]
    assert score.main(args) == 1
    err = capsys.readouterr().err
    assert "No space left on device" in err and "rerun the same command" in err
    assert f"cannot write {run / 'layers'}/" in err and "the disk is full" in err, err
    monkeypatch.setattr(layer_stages, "write_cube", real)
    assert score.main(args) == 0
    assert_scored_like_reference(run, setup["ref"])


# ------------------------------------------------------------- moved and copied
def test_moved_or_copied_run_and_dataset_still_work(setup, tmp_path, monkeypatch):
    """A copy of the run and of the dataset elsewhere: extraction sees it complete,
    scoring finds the label cache by fingerprint (or takes --dataset) and gives the
    same results; a vanished dataset path is named with the fix."""
    run = sf.copy_fresh(setup["run"], tmp_path / "moved" / "run")
    data = tmp_path / "moved" / "broden"
    shutil.copytree(setup["data"], data)
    st = extract_with_stats(ExtractConfig(dataset=data, model=sf.TINY, layers=sf.LAYERS,
                                          out=run, input_size=(26, 26), batch_size=8,
                                          workers=0, progress=False), log=lambda m: None)
    assert st.status == "complete"
    monkeypatch.setenv("NETDISSECT_CACHE", str(tmp_path / "cache"))
    attrs = store.read_run_attrs(run)
    assert attrs["dataset"]["path"] == str(Path(setup["data"]).resolve())
    # the recorded dataset path is gone (simulated by rewriting it), no label cache yet:
    metadata.update_root_attrs(zarr.open_group(run, mode="r+"),
                               {"dataset": dict(attrs["dataset"], path=str(tmp_path / "gone"))})
    r = sf.cli("scripts/score.py", run, "--quiet", check=False,
               env=dict(os.environ, NETDISSECT_CACHE=str(tmp_path / "cache")))
    assert r.returncode == 2 and "pass its new location with --dataset" in r.stderr
    env = dict(os.environ, NETDISSECT_CACHE=str(tmp_path / "cache"))
    sf.cli("scripts/score.py", run, "--dataset", data, "--levels", "0.005,0.02", "--quiet",
           env=env)
    assert_scored_like_reference(run, setup["ref"])
    # once the label cache exists (keyed by fingerprint), no dataset is needed at all
    copy = sf.copy_fresh(run, tmp_path / "copied")
    sf.cli("scripts/score.py", copy, "--levels", "0.005,0.02", "--quiet", env=env)
    assert_scored_like_reference(copy, setup["ref"])


# ---------------------------------------------------------------- damaged chunks
def flip_byte(path: Path, offset: int = 5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_activation_chunk_is_named_and_repaired(setup, tmp_path):
    run = sf.copy_fresh(setup["run"], tmp_path / "run")
    chunk = run / "layers" / "features.3" / "activations" / "c" / "2" / "0" / "0" / "0"
    assert chunk.is_file()
    flip_byte(chunk)
    (run / "layers" / "features.2" / "maxima" / "c" / "1" / "0").unlink()   # a lost chunk
    damage = scan_run(run)
    assert [(d.array, d.chunk) for d in damage] == [
        ("layers/features.2/maxima", (1, 0)), ("layers/features.3/activations", (2, 0, 0, 0))]
    assert "missing" in damage[0].problem and "checksum" in damage[1].problem
    assert damage[1].file == str(chunk)
    # scoring names the chunk, its file and the fix
    r = sf.cli("scripts/score.py", run, "--label-cache", setup["labels"].path, "--levels",
               "0.005,0.02", "--quiet", "--layer", "features.3", check=False)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "layers/features.3/activations chunk (2, 0, 0, 0)" in r.stderr
    assert str(chunk) in r.stderr and "--repair" in r.stderr
    # --repair re-extracts only the two damaged blocks (8 images each)
    r = sf.cli("scripts/extract.py", "--dataset", setup["data"], "--model", sf.TINY,
               "--layers", ",".join(sf.LAYERS), "--input-size", "26", "--out", run,
               "--workers", "0", "--no-progress", "--repair")
    assert "2 damaged chunk(s)" in r.stdout and str(chunk) in r.stdout
    assert "re-extracting block(s) [1, 2]" in r.stdout and "resumed 16 images" in r.stdout
    assert scan_run(run) == []
    for layer in sf.LAYERS:
        for get in (store.activations, store.maxima):
            np.testing.assert_array_equal(get(run, layer)[:], get(setup["run"], layer)[:])
    r = sf.cli("scripts/extract.py", "--dataset", setup["data"], "--model", sf.TINY,
               "--layers", ",".join(sf.LAYERS), "--input-size", "26", "--out", run,
               "--workers", "0", "--no-progress", "--repair")
    assert "intact" in r.stdout and "nothing to do" in r.stdout


def test_corrupted_label_chunk_is_named_and_repaired(setup, tmp_path):
    path = tmp_path / "labels.zarr"
    shutil.copytree(setup["labels"].path, path)
    flip_byte(path / "planes" / "c" / "3" / "0" / "0" / "0", 10)
    damage = scan_label_cache(zarr.open_group(path))
    assert [(d.array, d.chunk) for d in damage] == [("planes", (3, 0, 0, 0))]
    run = sf.copy_fresh(setup["run"], tmp_path / "run")
    r = sf.cli("scripts/score.py", run, "--label-cache", path, "--levels", "0.005",
               "--quiet", "--layer", "features.3", check=False)
    assert r.returncode == 2 and "planes chunk (3, 0, 0, 0)" in r.stderr, r.stderr
    assert "cache_labels.py" in r.stderr and "--repair" in r.stderr
    r = sf.cli("scripts/cache_labels.py", "--dataset", setup["data"], "--out", path,
               "--repair", "--workers", "1", "--no-progress")
    assert "re-decoding label chunk(s) [3]" in r.stdout
    assert_label_caches_equal(LabelCache.open(path), setup["labels"])


def test_damaged_stored_cube_is_recomputed(setup, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(setup["ref"], run)
    flip_byte(run / "layers" / "features.3" / "cube" / "intersect" / "c" / "0" / "0" / "0")
    r = sf.cli("scripts/score.py", run, "--label-cache", setup["labels"].path, "--levels",
               "0.005,0.02", "--quiet", "--layer", "features.3")
    assert "[features.3] IoU cube" in r.stdout
    assert_scored_like_reference(run, setup["ref"])


# ------------------------------------------------------------------ absent chunks
# (every node of a run, its label cache and a derived run, deleted, flipped and truncated:
# tests/test_corruption.py)
def _delete_a_chunk(root: Path, array: str) -> Path:
    """Delete the last chunk file of ``array`` (a path in the group at ``root``)."""
    from cache.zarr_io import chunk_key
    arr = zarr.open_group(root, mode="r")[array]
    last = tuple(int(n) - 1 for n in arr._chunk_grid_shape)
    f = root / chunk_key(arr, last)
    assert f.is_file(), f
    f.unlink()
    return f


def test_absent_label_pixels_is_repaired(setup, tmp_path):
    path = tmp_path / "labels.zarr"
    shutil.copytree(setup["labels"].path, path)
    gone = _delete_a_chunk(path, "label_pixels")
    with pytest.raises(LabelCacheError, match="label_pixels chunk"):
        LabelCache.open(path)
    assert [d.file for d in scan_label_cache(zarr.open_group(path))] == [str(gone)]
    r = sf.cli("scripts/cache_labels.py", "--dataset", setup["data"], "--out", path,
               "--repair", "--workers", "1", "--quiet")
    assert "label_pixels chunk (0,)" in r.stdout
    assert_label_caches_equal(LabelCache.open(path), setup["labels"])
