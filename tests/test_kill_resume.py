"""kill -9 at many moments of every script with worker processes, then an immediate rerun.

Scripts: make_synthetic_broden.py, cache_labels.py, extract.py (DataLoader workers),
score.py (label decoding and tally worker processes; and --cluster local:2), rotate.py,
demo.py (its steps are subprocesses) and bench.py (each stage in a spawned process), each
on the tiny fixtures with 2 workers. For each, an uninterrupted reference is made once, in
the same work directory the kills use (so paths written into outputs agree). Then for each
moment - deterministic ones keyed to what is observed (the workers are up, a first chunk or
block is on disk, most of them are, a step has begun) and seeded-random delays within the
reference's duration - only the script's own process is killed with SIGKILL (not its
group: its workers must end by themselves) and the same command is run again at once.
Whatever the moment (before anything is written, during a layout, between a write and its
done flag, after completion), the rerun must succeed (never refused by a lock of the dead
run), its outputs must equal the reference (:func:`snapshot`: every zarr array's values
and metadata, every other file byte for byte, apart from lock files, which hold the writer's pid), and no
process of the killed run or of the rerun may be alive once the rerun has ended. Those
processes are found by a tag in their environment (``/proc/PID/environ``), which every
descendant inherits, forked or spawned.

Also here: the portable fallback of ``pipeline.parallel.worker_start`` (a worker whose
platform has no ``PR_SET_PDEATHSIG`` polls its parent), and a worker started after its
parent already died (the race ``PR_SET_PDEATHSIG`` alone leaves open).
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import zarr

import scoring_fixtures as sf
from clirun import cli, kill9, reap, start


ROOT = sf.ROOT
SLOW = "tests/slow_runner.py"
TAG = "NETDISSECT_KILL_TEST_TAG"
LOCK_SUFFIX = ".lock"         # lock files (RUN/.lock, LABELS.zarr.lock) hold the writer's pid
# temp files of atomic writes (zarr's LocalStore: NAME.<uuid>.partial; pipeline.files:
# NAME...tmp) a kill can leave behind: their removal is not this module's subject (issue 13,
# item 7), so they are left out of the comparison
TEMP_FILE = re.compile(r"\.[0-9a-f]{32}\.partial$|\.tmp$")
# the results document's creation time (its "created" and the HTML page's "created ...")
# a worker spawned just as its parent is killed finds its start-up data cut short and ends
# with this traceback, before it can do anything (multiprocessing.spawn); allowed
SPAWN_CUT_SHORT = re.compile(r"Traceback \(most recent call last\):\n(?:[ \t].*\n)*?"
                             r"(?:EOFError|_pickle.UnpicklingError): .*\n")
FILE_RECORDS = ("image_files", "label_files")    # (N, 32): stamp | digest (dataset_files.py)
CREATED = re.compile(rb"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d")


# --------------------------------------------------------------------------- processes
def tagged(tag: str) -> set[int]:
    """The live (not zombie) processes whose environment holds ``TAG=tag``."""
    needle = f"\0{TAG}={tag}\0".encode()
    found = set()
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = (d / "environ").read_bytes()
            stat = (d / "stat").read_text()
        except OSError:
            continue
        if needle in b"\0" + env and stat[stat.rindex(")") + 2] != "Z":
            found.add(int(d.name))
    return found


def kill_tagged(tag: str) -> None:
    """Kill what is left of a failed test's processes (so they do not disturb the next)."""
    for pid in tagged(tag):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


# --------------------------------------------------------------------------- outputs
def snapshot(root: Path) -> dict[str, tuple]:
    """Everything under ``root``: per zarr node its metadata (attributes included) and,
    for an array, its values; per other file its bytes. Chunk files are compared through
    their array's values; lock files (the writer's pid) and temp files (:data:`TEMP_FILE`)
    are left out, the results document's creation time is masked, and of the records of
    dataset files (:data:`FILE_RECORDS`) only the content digests are compared: their
    stamps hold file mtimes, which a regenerated dataset changes."""
    metas = {p.parent: json.loads(p.read_text()) for p in root.rglob("zarr.json")}
    arrays = {d for d, m in metas.items() if m.get("node_type") == "array"}
    snap: dict[str, tuple] = {}
    for d, meta in metas.items():
        rel = str(d.relative_to(root))
        values = np.asarray(zarr.open_array(d, mode="r")[...]) if d in arrays else None
        if d.name in FILE_RECORDS:          # keep the digests, drop the stamps (mtimes)
            values = values[:, 16:]
        snap[rel] = ("zarr", meta, values)
    for p in root.rglob("*"):
        if (p.is_file() and p.name != "zarr.json" and not p.name.endswith(LOCK_SUFFIX)
                and not TEMP_FILE.search(p.name)
                and not any(a in arrays for a in p.parents)):
            text = p.read_bytes()
            if p.suffix in (".json", ".html"):
                text = CREATED.sub(b"<created>", text)
            snap[str(p.relative_to(root))] = ("file", text, None)
    return snap


def assert_same(got: dict[str, tuple], ref: dict[str, tuple]) -> None:
    assert sorted(got) == sorted(ref), (f"extra: {sorted(set(got) - set(ref))}, "
                                        f"missing: {sorted(set(ref) - set(got))}")
    for k, (kind, a, values) in ref.items():
        assert got[k][1] == a, f"{k}: {kind} differs from the uninterrupted run"
        if values is not None:
            np.testing.assert_array_equal(got[k][2], values, err_msg=k)


# --------------------------------------------------------------------------- scripts
Moment = Callable[[Path, str], bool]       # (work dir, tag of the run) -> kill now?


def files(path: Path, pattern: str = "*") -> int:
    return sum(1 for p in path.rglob(pattern) if p.is_file()) if path.is_dir() else 0


def workers_up(n: int = 2, where: str | None = None) -> Moment:
    """At least ``n`` processes of the run besides the script itself (and ``where``, a
    path under the work dir, exists)."""
    def ready(w: Path, tag: str) -> bool:
        return (where is None or (w / where).exists()) and len(tagged(tag)) > n
    return ready


def exists(where: str) -> Moment:
    return lambda w, tag: (w / where).exists()


def at_least(n: int, where: str, pattern: str = "*") -> Moment:
    return lambda w, tag: files(w / where, pattern) >= n


@dataclass(frozen=True)
class Script:
    """A command of ``args(work dir, fixtures)``, its inputs made by ``prepare``, extra
    environment (``{w}``: the work dir), its deterministic kill moments and how many
    seeded-random ones (fewer for the slow commands)."""
    args: Callable[[Path, dict], list]
    moments: dict[str, Moment]
    random_moments: int = 2
    prepare: Callable[[Path, dict], None] = lambda w, fx: None
    env: dict[str, str] = field(default_factory=dict)
    rerun_says: str = ""            # what the rerun after a deterministic moment prints


def _fresh_run(w: Path, fx: dict) -> None:
    sf.copy_fresh(fx["run"], w / "run")


RUN_THRESHOLDS = "run/layers/features.3/quantiles/thresholds/zarr.json"
DERIVED = "run/rotations/features.3-seed0-a1"
PARTIAL = "run/layers/features.3/tally_partial"      # the replay's checkpoint slots
SCRIPTS: dict[str, Script] = {
    "synthetic": Script(
        lambda w, fx: [SLOW, "render", "0.05", "scripts/make_synthetic_broden.py", "--out",
                       w / "broden", "--num-images", 40, "--image-size", 48, "--seg-size",
                       24, "--seed", 3, "--workers", 2, "--quiet"],
        {"workers": workers_up(), "half": at_least(20, "broden/images", "*.jpg")}),
    "cache_labels": Script(
        lambda w, fx: [SLOW, "decode", "0.15", "scripts/cache_labels.py", "--dataset",
                       fx["data"], "--out", w / "labels.zarr", "--workers", 2,
                       "--chunk-images", 2, "--quiet"],
        {"workers": workers_up(), "first-chunk": at_least(1, "labels.zarr/done/c"),
         "most-chunks": at_least(13, "labels.zarr/done/c")}, random_moments=1),
    "extract": Script(
        lambda w, fx: ["scripts/extract.py", "--dataset", fx["data"], "--model",
                       "tests/model_factories.py:slow_net", "--layers",
                       "features.2,features.3", "--input-size", 26, "--out", w / "run",
                       "--workers", 2, "--batch-size", 2, "--quiet"],
        {"workers": workers_up(), "most-blocks": at_least(12, "run/progress/c")},
        random_moments=1, env={"SLOW_NET_SECONDS": "0.05"}),
    "score": Script(
        lambda w, fx: ["scripts/score.py", w / "run", "--layers", "features.3", "--levels",
                       "0.005,0.02", "--tile-images", 2, "--workers", 2, "--quiet"],
        {"label-cache-build": exists("cache"),      # both locks held (one chunk: no workers)
         "tally-workers": workers_up(where=RUN_THRESHOLDS)},
        random_moments=0, prepare=_fresh_run, env={"NETDISSECT_CACHE": "{w}/cache"}),
    "score-tiles": Script(                          # killed inside the replay
        lambda w, fx: [SLOW, "tally", "0.1", "scripts/score.py", w / "run", "--label-cache",
                       fx["labels"], "--layers", "features.3", "--levels", "0.005,0.02",
                       "--tile-images", 2, "--workers", 1, "--quiet"],
        {"checkpointed": exists(f"{PARTIAL}/b/zarr.json")}, random_moments=0,
        prepare=_fresh_run, env={"NETDISSECT_CHECKPOINT_SECONDS": "0"},
        rerun_says="tally features.3: resuming from a checkpoint"),
    "score-cluster": Script(
        lambda w, fx: ["scripts/score.py", w / "run", "--label-cache", fx["labels"],
                       "--layers", "features.3", "--levels", "0.005,0.02", "--cluster",
                       "local:2", "--quiet"],
        {"dask-workers": workers_up()}, random_moments=0, prepare=_fresh_run),
    "rotate": Script(
        lambda w, fx: ["scripts/rotate.py", w / "run", "--layers", "features.3", "--alphas",
                       "1", "--label-cache", fx["labels"], "--tile-images", 2, "--workers",
                       2, "--quiet"],
        {"tally-workers": workers_up(where=f"{DERIVED}/layers/features.3/quantiles")},
        random_moments=0, prepare=_fresh_run),
    "demo": Script(
        lambda w, fx: ["scripts/demo.py", "--out", w, "--num-images", 16, "--layers",
                       "conv2", "--device", "cpu", "--quiet"],
        {"generate-step": at_least(1, "broden_synthetic_16_s2/images", "*.jpg"),
         "score-step": exists("run/layers/conv2/quantiles")},
        random_moments=0, env={"NETDISSECT_CACHE": "{w}/cache"}),
    "bench": Script(
        lambda w, fx: ["scripts/bench.py", "generate", "labels", "--work", w,
                       "--num-images", 30, "--image-size", 48, "--seg-size", 24, "--quiet"],
        {"labels-stage": exists("labels_broden_30_48.zarr")}, random_moments=0),
}
CASES = [(name, m) for name, s in SCRIPTS.items()
         for m in [*s.moments, *(f"random-{i}" for i in range(s.random_moments))]]


@pytest.fixture(scope="module")
def fx(tiny_data, tiny_cli_run, tiny_labels, tmp_path_factory) -> dict:
    return {"data": tiny_data, "run": tiny_cli_run, "labels": tiny_labels.path,
            "root": tmp_path_factory.mktemp("kills"), "references": {}}


def environment(script: Script, w: Path, tag: str) -> dict[str, str]:
    extra = {k: v.format(w=w) for k, v in script.env.items()}
    return dict(os.environ, PYTHONPATH=str(ROOT), **extra, **{TAG: tag})


def fresh(name: str, fx: dict) -> tuple[Script, Path, list]:
    """The script, its work dir (emptied, inputs prepared) and its command."""
    script, w = SCRIPTS[name], fx["root"] / name
    shutil.rmtree(w, ignore_errors=True)
    w.mkdir()
    script.prepare(w, fx)
    return script, w, script.args(w, fx)


def reference(name: str, fx: dict) -> tuple[dict, float]:
    """The uninterrupted outputs of script ``name`` and its wall time (made once)."""
    if name not in fx["references"]:
        script, w, args = fresh(name, fx)
        tag = f"{name}-reference-{os.getpid()}"
        t0 = time.perf_counter()
        cli(*args, env=environment(script, w, tag))
        fx["references"][name] = (snapshot(w), time.perf_counter() - t0)
        assert not tagged(tag), "a process of the uninterrupted run outlived it"
    return fx["references"][name]


def wait_for_moment(proc: subprocess.Popen, ready: Moment, w: Path, tag: str,
                    what: str) -> None:
    deadline = time.time() + 120
    while not ready(w, tag):
        if proc.poll() is not None:
            out, _ = proc.communicate(timeout=30)
            pytest.fail(f"the command ended (exit {proc.returncode}) before {what}:\n{out}")
        if time.time() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(),
                    reason="finds the processes of a killed run in /proc")
@pytest.mark.parametrize("name,moment", CASES, ids=[f"{n}-{m}" for n, m in CASES])
def test_kill9_then_immediate_rerun_is_identical_and_leaves_no_process(fx, name, moment):
    ref, seconds = reference(name, fx)
    script, w, args = fresh(name, fx)
    killed, rerun = (f"{name}-{moment}-{kind}-{os.getpid()}" for kind in ("killed", "rerun"))
    proc = start(*args, env=environment(script, w, killed), merge_stderr=True)
    try:
        if moment.startswith("random-"):
            time.sleep(random.Random(f"{name}-{moment}").uniform(0, seconds))
        else:
            wait_for_moment(proc, script.moments[moment], w, killed, moment)
        kill9(proc)                               # the script only: not its group
        r = cli(*args, env=environment(script, w, rerun), check=False)
        left = tagged(killed) | tagged(rerun)
    finally:
        reap(proc)
        kill_tagged(killed)
        kill_tagged(rerun)
        said = proc.stdout.read()        # to its end: every process writing to it is gone
        proc.stdout.close()
    assert r.returncode == 0, f"rerun failed ({r.returncode}):\n{r.stdout}\n{r.stderr}"
    assert "being written by another" not in r.stdout + r.stderr
    if not moment.startswith("random-"):
        assert script.rerun_says in r.stdout + r.stderr, r.stdout + r.stderr
    assert not left, f"processes of the killed run or the rerun are alive: {sorted(left)}"
    went_on = SPAWN_CUT_SHORT.sub(lambda m: "" if "multiprocessing/spawn.py" in m[0] else m[0],
                                  said)
    assert "Traceback" not in went_on, f"a worker of the killed run went on:\n{said}"
    assert_same(snapshot(w), ref)


# ------------------------------------------------------------- ending with the parent
SLEEPER = "import os, time; print('ready', os.getpid(), flush=True); time.sleep(600)"
WATCHER = ("import os; from pipeline import parallel; "
           "parallel.watch_parent(os.getppid(), 0.05); " + SLEEPER)


def assert_descendant_ends_with(job: str) -> None:
    """Run ``python -c JOB``, whose descendant prints ``ready PID`` and then sleeps; kill
    -9 the job only, and check the descendant ends by itself: it shares the test's stdout
    pipe, so reading that pipe to its end returns only once the descendant is gone."""
    proc = start("-c", job)
    pid = None
    try:
        for line in proc.stdout:
            if line.startswith("ready "):
                pid = int(line.split()[1])
                break
        assert pid is not None, proc.communicate(timeout=30)
        kill9(proc)
        proc.communicate(timeout=60)        # EOF: the orphaned descendant has ended
    finally:
        reap(proc)
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def test_without_the_kernel_signal_a_worker_ends_when_its_parent_is_killed():
    """The portable fallback where there is no PR_SET_PDEATHSIG: a worker watching its
    parent (pipeline.parallel.watch_parent) ends once the parent is killed."""
    assert_descendant_ends_with(f"import subprocess, sys; subprocess.run([sys.executable, "
                                f"'-c', {WATCHER!r}])")


def test_a_worker_whose_parent_died_before_it_started_ends_at_once():
    """A kill while a worker is starting: by the time it asks to end with its parent, the
    parent is gone (so no signal will come); it ends at once, exit status 1."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    r = cli("-c", f"from pipeline import parallel; parallel.end_with_parent("
                  f"{int(gone.stdout)}); print('went on')", check=False)
    assert r.returncode == 1 and "went on" not in r.stdout, r.stdout + r.stderr


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG: Linux")
def test_a_step_of_a_killed_job_ends_with_it():
    """demo.py / experiments.py run their steps as subprocesses (pipeline.commands): a
    step whose job is killed -9 ends too, instead of holding its run's lock on."""
    assert_descendant_ends_with(f"import sys; from pipeline.commands import command, "
                                f"run_steps; run_steps([command(sys.executable, '-c', "
                                f"{SLEEPER!r})], 'job')")


def test_a_stage_of_a_killed_benchmark_ends_with_it(tmp_path):
    """bench.py runs each stage in a spawned process (pipeline.benchmark.run_stage): a
    stage whose benchmark is killed -9 ends too (it would hold a label cache's lock on)."""
    stage = tmp_path / "stage.py"
    stage.write_text(SLEEPER)
    assert_descendant_ends_with(f"import runpy; from pipeline.benchmark import run_stage; "
                                f"run_stage(runpy.run_path, path_name={str(stage)!r})")
