"""Edges: a full disk (the real EFBIG of a file-size limit) while writing the lock, the
layout, the label cache's last array and a cube; temp files left by a failure or a kill;
read-only work under another process's write lock and on a read-only filesystem.

Each full-disk case runs a script in a child with RLIMIT_FSIZE set (tests/fsize_runner.py),
checks the message (the path, "disk is full", how to resume), exit 1 and no traceback,
that no temp file is left, then reruns it without the limit and compares with an
uninterrupted reference, bit for bit.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest

from cache import store
from cache.integrity import check_present
from cache.labels import LabelCache
from pipeline.broden import BrodenDataset
from pipeline.extract import extract_with_stats
from pipeline.extract_config import ExtractConfig
from pipeline.label_decoding import build_label_cache
import scoring_fixtures as sf

slow = pytest.mark.slow              # subprocesses: seconds each
ROOT = sf.ROOT
FSIZE = str(ROOT / "tests" / "fsize_runner.py")
LEVELS = ("--levels", "0.005,0.02")
DEAD_PID = 4194304 + 12345           # above any Linux pid_max (2**22): never alive


def extract_args(data: Path, out: Path) -> list:
    """sf.cli_extract's command (tiny_cli_run is its uninterrupted reference)."""
    return ["scripts/extract.py", "--dataset", data, "--model",
            "tests/model_factories.py:tiny_net", "--layers", "features.2,features.3",
            "--input-size", "26", "--out", out, "--workers", "0", "--quiet"]


def labels_args(data: Path, out: Path) -> list:
    """sf.make_labels's build (tiny_labels is its uninterrupted reference)."""
    return ["scripts/cache_labels.py", "--dataset", data, "--out", out, "--workers", "1",
            "--chunk-images", "8", "--quiet"]


def limited(nbytes: int, *args, at: str | None = None):
    """The script ``args`` in a child whose files may not exceed ``nbytes``."""
    return sf.cli(FSIZE, nbytes, *([at] if at else []), *args, check=False)


def assert_full_disk(r: subprocess.CompletedProcess, path: Path | str, resume: str) -> None:
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    assert f"cannot write {path}" in r.stderr, r.stderr
    assert "the disk is full" in r.stderr, r.stderr
    assert resume in r.stderr, r.stderr


def temp_files(*roots: Path) -> list[Path]:
    """Temp files (ours: *.tmp; zarr's: *.partial) anywhere under ``roots``."""
    return [p for root in roots if root.exists() for p in root.rglob("*")
            if p.name.endswith((".tmp", ".partial"))]


def assert_runs_equal(a: Path, b: Path) -> None:
    for layer in sf.LAYERS:
        for get in (store.activations, store.maxima):
            x, y = get(a, layer), get(b, layer)
            assert x.dtype == y.dtype
            np.testing.assert_array_equal(x[:], y[:], err_msg=f"{layer} {get.__name__}")


def assert_labels_equal(a: LabelCache, b: LabelCache) -> None:
    for name in ("planes", "scalars", "present", "label_pixels"):
        np.testing.assert_array_equal(a.group[name][:], b.group[name][:], err_msg=name)


# ------------------------------------------------------------------- full disk
def test_full_disk_writing_the_lock_is_named_and_rerun_completes(tiny_data, tiny_cli_run,
                                                                 tmp_path):
    out = tmp_path / "run"
    r = limited(0, *extract_args(tiny_data, out))          # "<pid> extraction" fails
    assert_full_disk(r, out / ".lock", "rerun the same command to resume")
    assert not temp_files(out)
    sf.cli(*extract_args(tiny_data, out))
    assert_runs_equal(out, tiny_cli_run)
    assert (out / ".lock").read_text() == ""                # released: emptied


@slow
def test_full_disk_creating_the_run_layout_is_named_and_rerun_completes(tiny_data,
                                                                        tiny_cli_run,
                                                                        tmp_path):
    out = tmp_path / "run"
    r = limited(100, *extract_args(tiny_data, out))        # the lock fits, zarr.json not
    assert_full_disk(r, out, "rerun the same command to resume")
    assert (out / ".lock").stat().st_size == 0              # released
    assert not temp_files(out)
    sf.cli(*extract_args(tiny_data, out))
    assert_runs_equal(out, tiny_cli_run)


@slow
def test_full_disk_laying_out_the_label_cache_is_named_and_rerun_completes(
        tiny_data, tiny_labels, tmp_path):
    out = tmp_path / "labels.zarr"
    r = limited(100, *labels_args(tiny_data, out))
    assert_full_disk(r, out, "run the same command to resume")
    assert not temp_files(tmp_path)
    sf.cli(*labels_args(tiny_data, out))
    assert_labels_equal(LabelCache.open(out), tiny_labels)


@slow
def test_full_disk_finishing_the_label_cache_is_named_and_rerun_completes(
        tiny_data, tiny_labels, tmp_path):
    out = tmp_path / "labels.zarr"
    r = limited(0, *labels_args(tiny_data, out), at="cache.labels:LabelCacheWriter.finish")
    assert_full_disk(r, out / "label_pixels", "run the same command to resume")
    assert not temp_files(tmp_path)
    sf.cli(*labels_args(tiny_data, out))
    assert_labels_equal(LabelCache.open(out), tiny_labels)


@slow
def test_full_disk_storing_a_cube_is_named_and_rerun_completes(tiny_run, tiny_labels,
                                                               tmp_path):
    run = sf.copy_fresh(tiny_run, tmp_path / "run")
    ref = sf.copy_fresh(tiny_run, tmp_path / "ref")
    args = ["--label-cache", tiny_labels.path, *LEVELS, "--layers", "features.3",
            "--quiet"]
    sf.cli("scripts/score.py", ref, *args)
    r = limited(0, "scripts/score.py", run, *args, at="pipeline.layer_stages:write_cube")
    assert_full_disk(r, run / "layers" / "features.3", "rerun the same command")
    assert not temp_files(run)
    sf.cli("scripts/score.py", run, *args)
    sf.assert_cubes_equal(sf.stored_cube(run), sf.stored_cube(ref))
    assert sf.units_of(run / "results/features.3.json") == \
        sf.units_of(ref / "results/features.3.json")


@slow
def test_full_disk_writing_a_report_leaves_no_temp_file(tiny_run, tiny_labels, tmp_path):
    run = sf.copy_fresh(tiny_run, tmp_path / "run")
    args = ["--label-cache", tiny_labels.path, *LEVELS, "--layers", "features.3",
            "--quiet"]
    r = limited(0, "scripts/score.py", run, *args, at="pipeline.layer_stages:write_json")
    assert_full_disk(r, run / "results" / "features.3.json", "rerun the same command")
    assert not temp_files(run)
    assert not (run / "results" / "features.3.json").exists()
    sf.stored_cube(run)                        # the cube was stored before: kept


# ------------------------------------------------------------------ temp files
def test_temp_files_a_kill_left_are_removed_and_listed(tiny_run, tiny_labels, tmp_path):
    """A kill -9 cannot clean up: the next writer of the run removes the zarr partial
    files (under the lock, after a note naming the dead holder) and our temp files
    whose writer is gone; a temp file of a live process is kept."""
    run = sf.copy_fresh(tiny_run, tmp_path / "run")
    (run / ".lock").write_text(f"{DEAD_PID} scoring")
    partial = run / "layers/features.3/zarr.json.0123456789abcdef0123456789abcdef.partial"
    partial.write_bytes(b"half")
    (run / "results").mkdir()
    stale = run / "results" / f"features.3.json.ab_cd123.{DEAD_PID}.tmp"
    live = run / "results" / f"features.3.json.ab_cd123.{os.getpid()}.tmp"
    stale.write_text("{")
    live.write_text("{")
    r = sf.cli("scripts/score.py", run, "--label-cache", tiny_labels.path, *LEVELS,
               "--layers", "features.3", "--quiet")
    assert (f"the previous scoring of {run} (pid {DEAD_PID}) ended without finishing; "
            f"resuming") in r.stderr
    assert "removed 2 temp file(s)" in r.stderr and str(partial) in r.stderr \
        and str(stale) in r.stderr, r.stderr
    assert not partial.exists() and not stale.exists() and live.exists()


# -------------------------------------------------------------------- read-only
@pytest.fixture(scope="module")
def scored(tiny_run, tiny_labels, tmp_path_factory) -> Path:
    """A copy of tiny_run scored at LEVELS (both layers)."""
    run = sf.copy_fresh(tiny_run, tmp_path_factory.mktemp("edges_scored") / "run")
    sf.cli("scripts/score.py", run, "--label-cache", tiny_labels.path, *LEVELS, "--quiet")
    return run


def snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*")}


@slow
def test_export_and_compare_work_while_another_process_holds_the_lock(scored, tiny_labels,
                                                                     tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; sys.path.insert(0, sys.argv[1]); "
         "from cache.store import RunLock; RunLock(sys.argv[2], 'extraction').acquire(); "
         "print('held', flush=True); sys.stdin.read()", str(ROOT), str(scored)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        r = sf.cli("scripts/score.py", scored, "--label-cache", tiny_labels.path, *LEVELS,
                   "--layers", "features.3", "--export-iou", tmp_path / "iou.npy",
                   "--export-thresholds", tmp_path / "t.npy", "--quiet")
        assert np.load(tmp_path / "t.npy").shape == (16,)
        assert np.load(tmp_path / "iou.npy").shape[0] == 16
        assert "features.3" in r.stdout
        r = sf.cli("scripts/compare.py", scored, "--out", tmp_path / "cmp")
        assert (tmp_path / "cmp" / "comparison.csv").is_file()
        # a level not in the cube must be computed and stored: refused while locked
        r = sf.cli("scripts/score.py", scored, "--label-cache", tiny_labels.path,
                   "--levels", "0.01", "--layers", "features.3", "--quiet", check=False)
        assert r.returncode == 2 and "being written by another extraction" in r.stderr
    finally:
        holder.stdin.close()
        holder.wait(30)


def _read_only(monkeypatch, root: Path) -> None:
    """Make writes under ``root`` fail with EROFS as on a read-only filesystem: creating
    or opening a file for writing (the lock, every temp file of pipeline/files.py) and
    creating a directory."""
    real_open, real_mkdir = os.open, Path.mkdir
    root = str(root.resolve())
    writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def ro_open(path, flags, *a, **k):
        if flags & writes and os.path.abspath(path).startswith(root):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_open(path, flags, *a, **k)

    def ro_mkdir(self, *a, **k):
        if str(self.resolve()).startswith(root) and not self.exists():
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *a, **k)
    monkeypatch.setattr(os, "open", ro_open)
    monkeypatch.setattr(Path, "mkdir", ro_mkdir)


def score_main():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import score
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return score.main


@slow
def test_read_only_run_reports_elsewhere_and_names_the_option(scored, tiny_labels,
                                                             tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    shutil.copytree(scored, run)
    shutil.rmtree(run / "results")
    before = snapshot(run)
    main = score_main()
    _read_only(monkeypatch, run)
    args = [str(run), "--label-cache", str(tiny_labels.path), *LEVELS, "--quiet"]
    # stored thresholds and cubes: only read; the reports go to --results-dir
    assert main([*args, "--results-dir", str(tmp_path / "out")]) == 0
    for layer in sf.LAYERS:
        assert sf.units_of(tmp_path / "out" / f"{layer}.json") == \
            sf.units_of(scored / "results" / f"{layer}.json")
    # without it the report cannot be written: named read-only, with the option
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    assert f"cannot write {run / 'results'}" in err and "read-only filesystem" in err, err
    assert "--results-dir DIR" in err and "free disk space" not in err, err
    # a level to compute needs the lock: read-only, copy the run
    assert main([*args[:-3], "--levels", "0.01", "--quiet",
                 "--results-dir", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err
    assert f"cannot write {run / '.lock'}" in err and f"cp -r {run} COPY" in err, err
    monkeypatch.undo()
    assert snapshot(run) == before


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    r = subprocess.run(["unshare", "-r", "-m", "true"], capture_output=True)
    return r.returncode == 0


@slow
@pytest.mark.skipif(not _unshare_works(), reason="the kernel refuses user and mount "
                    "namespaces here; test_read_only_run_reports_elsewhere_and_names_the_"
                    "option covers the same code")
def test_real_read_only_bind_mount(scored, tiny_labels, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(scored, run)
    shutil.rmtree(run / "results")
    before = snapshot(run)
    score = [sys.executable, "scripts/score.py", str(run), "--label-cache",
             str(tiny_labels.path), *LEVELS, "--quiet"]
    inner = (f"mount --bind {run} {run} && mount -o remount,bind,ro {run} && "
             f"{' '.join(score)} --results-dir {tmp_path / 'out'} && "
             f"{{ {' '.join(score)}; echo rc=$?; }}")
    r = subprocess.run(["unshare", "-r", "-m", "sh", "-c", inner], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert "rc=1" in r.stdout, r.stdout + r.stderr
    assert "read-only filesystem" in r.stderr and "--results-dir DIR" in r.stderr
    assert "Traceback" not in r.stderr
    for layer in sf.LAYERS:
        assert sf.units_of(tmp_path / "out" / f"{layer}.json") == \
            sf.units_of(scored / "results" / f"{layer}.json")
    assert snapshot(run) == before


# ----------------------------------------------------------------- stale lock
def test_a_lock_left_by_a_dead_holder_is_taken_over_with_a_note(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text(f"{DEAD_PID} extraction")
    with store.RunLock(run, "scoring"):
        assert (run / ".lock").read_text() == f"{os.getpid()} scoring"
    assert (f"note: the previous extraction of {run} (pid {DEAD_PID}) ended without "
            f"finishing; resuming") in capsys.readouterr().err
    assert (run / ".lock").read_text() == ""             # released: emptied
    with store.RunLock(run, "scoring"):
        pass
    assert "note" not in capsys.readouterr().err          # a released lock: no note
    (tmp_path / "labels.zarr.lock").write_text(f"{DEAD_PID} label-cache build")
    with store.RunLock(tmp_path, "label-cache build", name="labels.zarr.lock"):
        pass
    assert (f"the previous label-cache build of {tmp_path / 'labels'}.zarr (pid "
            f"{DEAD_PID})") in capsys.readouterr().err


# ------------------------------------------------------------------- URL runs
@contextlib.contextmanager
def in_memory(local: Path | str, name: str, damaged: str):
    """A memory:// copy of the store at ``local`` whose first chunk of the array
    ``damaged`` is deleted: yields its URL; removed afterwards."""
    fs = fsspec.filesystem("memory")
    fs.put(f"{local}/", f"/{name}", recursive=True)
    try:
        fs.rm(sorted(p for p in fs.find(f"/{name}/{damaged}") if "/c/" in p)[0])
        yield f"memory://{name}"
    finally:
        fs.rm(f"/{name}", recursive=True)


def test_damaged_chunk_of_a_url_run_names_a_repair_that_works(tiny_data, tiny_run,
                                                              tiny_labels, tmp_path):
    """extract.py --repair refuses URLs: the message says to copy the run to a local
    directory, repair it there and copy it back, and doing so restores it."""
    with in_memory(tiny_run, f"edges-run-{os.getpid()}",
                   "layers/features.3/activations") as url:
        with pytest.raises(store.RunError) as e:
            check_present(url, "features.3")
        msg, where = str(e.value), url
        assert f"The activation cache of {where} is damaged" in msg and "missing" in msg
        assert "extract.py --repair writes to local directories only" in msg, msg
        get = f"fsspec.filesystem('memory').get('{where}/', 'LOCAL_RUN', recursive=True)"
        put = f"fsspec.filesystem('memory').put('LOCAL_RUN/', '{where}', recursive=True)"
        assert get in msg and put in msg and "--out LOCAL_RUN --repair" in msg, msg
        local = tmp_path / "LOCAL_RUN"                  # what the message says, done
        fs = fsspec.filesystem("memory")
        fs.get(f"{where}/", str(local), recursive=True)
        extract_with_stats(ExtractConfig(dataset=tiny_data, model=sf.TINY, layers=sf.LAYERS,
                                         out=local, input_size=(26, 26), batch_size=8,
                                         workers=0, progress=False, repair=True),
                           log=lambda m: None)
        fs.put(f"{local}/", where, recursive=True)
        check_present(url, "features.3")
        np.testing.assert_array_equal(store.activations(url, "features.3")[:],
                                      store.activations(tiny_run, "features.3")[:])


def test_damaged_chunk_of_a_url_label_cache_is_repaired_in_place(tiny_data, tiny_run,
                                                                 tiny_labels):
    """cache_labels.py --repair, which the label cache's message prescribes, works on a
    URL (it is the same build_label_cache)."""
    with in_memory(tiny_labels.path, f"edges-labels-{os.getpid()}.zarr", "planes") as url:
        with pytest.raises(store.RunError, match=r"--out memory://.* --repair"):
            check_present(tiny_run, "features.3", LabelCache.open(url))
        repaired = build_label_cache(BrodenDataset(tiny_data), url, chunk_images=8,
                                     workers=1, repair=True, progress=False,
                                     log=lambda m: None)
        check_present(tiny_run, "features.3", repaired)
        assert_labels_equal(repaired, tiny_labels)


def test_sibling_write_failures_of_a_full_disk_print_no_traceback():
    """zarr writes chunks concurrently: on a full disk several futures fail, one is
    raised, and asyncio would print the others' tracebacks when they are collected."""
    child = """if True:
        import asyncio, errno, gc, sys
        sys.path.insert(0, sys.argv[1])
        from pipeline import cli

        def body():
            loop = asyncio.new_event_loop()
            fut = loop.create_future()
            fut.set_exception(OSError(errno.ENOSPC, "No space left on device"))
            del fut
            gc.collect()                    # "Future exception was never retrieved"
            loop.close()
            raise OSError(errno.ENOSPC, "No space left on device", "/data/run/x")
        sys.exit(cli.run_main(body, (), disk_note="kept", interrupt_note=""))
    """
    r = subprocess.run([sys.executable, "-c", child, str(ROOT)], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 1, r.stderr
    assert "cannot write /data/run/x: the disk is full" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr and "never retrieved" not in r.stderr, r.stderr


def test_a_run_with_a_link_out_is_not_written(tiny_run, tiny_labels, tmp_path):
    """A run (e.g. unpacked from elsewhere) holding a symbolic link out of itself is
    refused by every writer, the links listed; the file it points to is untouched;
    links inside the run are fine."""
    run = sf.copy_fresh(tiny_run, tmp_path / "run")
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    (run / "inside").symlink_to(run / "zarr.json")
    deep = next(p for p in sorted(run.rglob("*")) if p.is_dir() and p.parent != run)
    (deep / "planted").symlink_to(victim)
    r = sf.cli("scripts/score.py", run, "--label-cache", tiny_labels.path, "--layer",
               "features.3", *LEVELS, "--quiet", check=False)
    assert r.returncode == 2, r.stderr
    assert "1 symbolic link(s) pointing outside it" in r.stderr
    assert f"{deep / 'planted'} -> {victim}" in r.stderr
    assert victim.read_text() == "mine" and not (run / "results").exists()
    assert store.links_out(run) == [(deep / "planted", str(victim))]
    (deep / "planted").unlink()
    sf.cli("scripts/score.py", run, "--label-cache", tiny_labels.path, "--layer",
           "features.3", *LEVELS, "--quiet")
    assert (run / "results" / "features.3.json").is_file()
