"""Verify a run without writing anything: every chunk of its finished blocks, all its
metadata against its digests, its stored thresholds and cubes, its label cache and the
derived runs made from it; each problem found is a :class:`Finding` naming what is
damaged, incomplete or stale and the command that repairs it (scripts/verify.py).

    verify_run(run, label_cache=None, dataset=None, full=False) -> (findings, notes)

The checks are the functions of ``CHECKS`` (and ``RUN_CHECKS`` for each derived run),
each ``(Target) -> list[Finding]``; add one by appending it. Nothing takes a lock:
stores are opened read-only, and a store another process is writing may show as
incomplete (run verify when no writer is running).
"""
from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import zarr

from cache import integrity, metadata, store
from cache.cube import CUBE_ARRAYS, THRESHOLD_ARRAYS, node_problem
from cache.labels import LabelCacheError, default_label_cache_path

DAMAGED, STALE, INCOMPLETE = "damaged", "stale", "incomplete"


@dataclass(frozen=True)
class Finding:
    """One problem: ``what`` (array and chunk, or file), ``state`` (damaged | stale |
    incomplete), ``problem``, ``fix`` (the command that repairs it)."""
    what: str
    state: str
    problem: str
    fix: str

    def __str__(self) -> str:
        return f"{self.state}: {self.what}: {self.problem} -- repair: {self.fix}"


@dataclass
class Target:
    """What the checks look at: the run's location, the --label-cache and --dataset
    given (or None), and what earlier checks found out (``attrs``: the trusted root
    attrs; ``group``: the run opened read-only once its metadata is intact)."""
    run: Path | str
    label_cache: str | None = None
    dataset: str | None = None
    full: bool = False                      # --full: hash every dataset file
    attrs: dict | None = None
    group: zarr.Group | None = None
    notes: list[str] = field(default_factory=list)


def _run_fix(t: Target) -> str:
    return integrity.run_fix(t.run, t.attrs)


def check_run_metadata(t: Target) -> list[Finding]:
    """Every zarr.json of the run readable and matching its digest, the root's attrs
    equal to their copy (cache/metadata.py). Later run checks need this one to pass."""
    damage, t.attrs = metadata.find_damage(metadata.open_store(t.run))
    if damage:
        t.notes.append(f"{t.run}: chunks and stored results not checked until its "
                       f"metadata is repaired")
        return [Finding(d.file, DAMAGED, d.problem, _run_fix(t)) for d in damage]
    t.group = zarr.open_group(str(t.run), mode="r")
    digests = len((t.attrs or {}).get(metadata.DIGESTS) or {})
    t.notes.append(f"metadata: {digests} node(s) match their digests" if digests else
                   "metadata: readable (a run made before metadata digests)")
    return []


def check_run_chunks(t: Target) -> list[Finding]:
    """Every chunk of the finished blocks present and CRC32C-valid; extraction finished."""
    if t.group is None:
        return []
    out = []
    done, total = store.progress(t.group)
    if done != total:
        out.append(Finding(str(t.run), INCOMPLETE, f"extraction finished {done} of {total} "
                           f"blocks", _run_fix(t).replace(" --repair", "")))
    damage = integrity.scan_run(t.group)
    out += [Finding(f"{d.array} chunk {d.chunk} ({d.file})", DAMAGED, d.problem,
                    _run_fix(t)) for d in damage]
    t.notes.append(f"chunks: {done} finished block(s) of {len(store.layer_names(t.group))} "
                   f"layer(s) checked")
    return out


def check_stored_results(t: Target) -> list[Finding]:
    """Stored thresholds and cubes: metadata intact, computed from the run as it is now,
    every chunk valid. All are derived data: the next score.py recomputes them."""
    if t.group is None:
        return []
    from pipeline.layer_stages import layer_source
    more = ["--label-cache", str(t.label_cache)] if t.label_cache else []
    fix = shlex.join(["scripts/score.py", str(t.run), *more]) + " (recomputes it)"
    out = []
    for layer in store.layer_names(t.group):
        g = store.layer_group(t.group, layer)
        try:
            source = layer_source(t.group, layer)
        except (store.RunError, LabelCacheError):
            continue            # what it reads is damaged: check_run_chunks names it
        labels = _label_cache(t)
        wanted = {"quantiles": (THRESHOLD_ARRAYS, source),
                  "cube": (CUBE_ARRAYS, _cube_wanted(t, layer, source, labels))}
        for name, (arrays, want) in wanted.items():
            attrs, problem = node_problem(g, name, arrays)
            where = str(store.store_location(g.store, f"{g.path}/{name}"))
            if attrs is None and problem is None:
                continue
            if problem:
                out.append(Finding(f"{where}/zarr.json", DAMAGED, problem, fix))
            elif _without_labels(attrs.get("source"), labels) != want:
                out.append(Finding(where, STALE, "computed from other activations or labels "
                                   "than the run holds now", fix))
            else:
                out += [Finding(f"{d.array} chunk {d.chunk} ({d.file})", DAMAGED, d.problem,
                                fix) for n in arrays
                        for d in integrity.scan_array(g[f"{name}/{n}"])]
    return out


def _cube_wanted(t: Target, layer: str, source: dict, labels) -> dict:
    """The source a layer's cube (and its set counts) must record now: with the label
    cache, its label-PNG digests too (compared without them otherwise)."""
    from pipeline.layer_stages import cube_source
    return (cube_source(t.group, layer, labels) if labels else
            {**source, "labels": t.attrs["dataset"]["fingerprint"]})


def check_set_counts(t: Target) -> list[Finding]:
    """The compositional search's stored label-set counts (cache/set_counts.py) of every
    layer and quantile: metadata intact, computed from the run, labels and thresholds as
    they are now, every chunk valid. Derived data: netdissect compositional recomputes
    them (a stale or damaged node is ignored, never read)."""
    if t.group is None:
        return []
    from cache.cube import read_thresholds, thresholds_at
    from cache.set_counts import ARRAYS, GROUP, thresholds_digest
    from pipeline.layer_stages import layer_source
    labels = _label_cache(t)
    more = ["--label-cache", str(t.label_cache)] if t.label_cache else []
    out = []
    for layer in store.layer_names(t.group):
        g = store.layer_group(t.group, layer)
        if GROUP not in g:
            continue
        try:
            source = layer_source(t.group, layer)
        except (store.RunError, LabelCacheError):
            continue            # what it reads is damaged: check_run_chunks names it
        cube = _cube_wanted(t, layer, source, labels)
        stored_T = read_thresholds(g, source)
        for node in sorted(g[GROUP].group_keys()):
            name = f"{GROUP}/{node}"
            where = str(store.store_location(g.store, f"{g.path}/{name}"))
            fix = shlex.join(["scripts/compositional.py", str(t.run), "--layer", layer,
                              "--quantile", node[1:], *more]) + " (recomputes them)"
            attrs, problem = node_problem(g, name, ARRAYS)
            if attrs is None and problem is None:
                continue
            if problem:
                out.append(Finding(f"{where}/zarr.json", DAMAGED, problem, fix))
                continue
            src = dict(attrs.get("source") or {})
            digest, q = src.pop("thresholds", None), src.pop("quantile", None)
            fresh = _without_labels(src, labels) == cube
            T = None if q is None else thresholds_at(stored_T, q)
            if fresh and T is not None:         # (no stored T: the digest is not judged)
                fresh = thresholds_digest(T) == digest
            if not fresh:
                out.append(Finding(where, STALE, "computed from other activations, labels or "
                                   "thresholds than the run holds now", fix))
                continue
            out += [Finding(f"{d.array} chunk {d.chunk} ({d.file})", DAMAGED, d.problem, fix)
                    for n in ARRAYS for d in integrity.scan_array(g[f"{name}/{n}"])]
    return out


def _label_cache(t: Target):
    """The run's label cache (--label-cache or the default path) when complete, of the
    run's dataset and readable, else None (check_label_cache names why; a cube is then
    judged without the label-PNG digests)."""
    from cache.labels import LabelCache
    fp = t.attrs["dataset"]["fingerprint"]
    try:
        labels = LabelCache.open(t.label_cache or default_label_cache_path(fp))
        labels.content_key                      # reads label_files
    except (LabelCacheError, store.RunError, OSError, KeyError):
        return None
    return labels if labels.fingerprint == fp else None


def _without_labels(source, labels):
    """A stored cube's source, without the label-PNG digests when there is no label
    cache to compare them with."""
    if labels is not None or not isinstance(source, dict):
        return source
    return {k: v for k, v in source.items() if k != "label_files"}


def check_dataset_files(t: Target) -> list[Finding]:
    """The images the run was extracted from and the label PNGs its label cache was
    decoded from, compared with the files now (pipeline/dataset_files.py; --full hashes
    every file, else only those whose size or mtime changed)."""
    if t.group is None:
        return []
    from pipeline.broden import BrodenDataset
    from pipeline.dataset_files import find_changes, image_files, label_files
    where = t.dataset or t.attrs["dataset"]["path"]
    if not (Path(where) / "index.csv").is_file():
        t.notes.append(f"dataset files: not checked (no dataset at {where}; pass --dataset)")
        return []
    ds = BrodenDataset(where)
    if ds.fingerprint() != t.attrs["dataset"]["fingerprint"]:
        return []                                   # check_dataset names it (with --dataset)
    out = []
    try:
        stored = store.image_records(t.group)
    except store.RunError:
        stored = None                   # damaged: check_run_chunks names it
    if stored is not None:
        c = find_changes(ds, stored, image_files, t.full)
        if c.stale:
            block = int(t.attrs["block_images"])
            out.append(Finding(f"{t.run}/image_files", STALE,
                               f"{c.describe('image files')}; block(s) "
                               f"{c.units(block)[:10]}",
                               f"{integrity.extract_command(t.attrs, t.run)} --repair"))
    labels = _label_cache(t)
    if labels is not None and labels.has_file_records:
        c = find_changes(ds, labels.file_records(), label_files, t.full)
        if c.stale:
            out.append(Finding(f"{labels.path}/label_files", STALE,
                               c.describe("label PNGs"),
                               shlex.join(["scripts/cache_labels.py", "--dataset", str(where),
                                           "--out", str(labels.path)])
                               + " (decodes their chunks again)"))
    t.notes.append(f"dataset files: {len(ds)} rows checked"
                   + (" (every file hashed)" if t.full else " (stat; --full hashes)"))
    return out


def check_derived_source(t: Target) -> list[Finding]:
    """A derived run (rotation, pipeline/experiments/derived_runs.py) made from its
    source run as the source is now; stale when the source changed."""
    if t.group is None or not integrity.is_derived(t.attrs):
        return []
    from pipeline.experiments.derived_runs import derived_fingerprint, source_identity
    src, layer = t.attrs["source"]["run"], t.attrs["source"]["layer"]
    fix = integrity.rotate_command(t.attrs, t.run) + " (rewrites it)"
    try:
        source = store.open_run(src)
        now = derived_fingerprint(source_identity(source, layer), layer, t.attrs["transform"])
    except (store.RunError, KeyError) as e:
        return [Finding(str(t.run), STALE, f"its source run {src} cannot be read ({e})", fix)]
    if now != t.attrs["model"]["fingerprint"]:
        return [Finding(str(t.run), STALE, f"its source {src} layer {layer!r} changed since "
                        f"it was made", fix)]
    return []


def check_dataset(t: Target) -> list[Finding]:
    """With --dataset: the Broden directory is the one the run was extracted from (its
    fingerprint, pipeline/broden.py)."""
    if t.dataset is None or t.attrs is None:
        return []
    from pipeline.broden import BrodenDataset
    fp, want = BrodenDataset(t.dataset).fingerprint(), t.attrs["dataset"]["fingerprint"]
    if fp == want:
        return []
    fix = (f"pass the Broden directory the run was made from, or extract again: "
           f"{integrity.extract_command(t.attrs, t.run)} --dataset {shlex.quote(t.dataset)} "
           f"--overwrite")
    return [Finding(t.dataset, STALE, f"dataset fingerprint {fp[:16]} differs from the "
                    f"run's {want[:16]}", fix)]


def check_label_cache(t: Target) -> list[Finding]:
    """The run's label cache (--label-cache, or the default path of its dataset
    fingerprint): metadata, completeness, dataset, every finished chunk."""
    if t.attrs is None:
        return []
    fp = t.attrs["dataset"]["fingerprint"]
    path = str(store.location(t.label_cache or default_label_cache_path(fp)))
    zstore = metadata.open_store(path)
    if not metadata.exists(zstore):
        t.notes.append(f"label cache: none at {path} (scripts/score.py builds it)")
        return []
    damage, attrs = metadata.find_damage(zstore, integrity.LABEL_VOLATILE)
    fix = integrity.label_fix(path, attrs)
    if damage:
        return [Finding(d.file, DAMAGED, d.problem, fix) for d in damage]
    group = zarr.open_group(path, mode="r")
    if not group.attrs.get("complete"):             # (the copy holds it as laid out)
        return [Finding(path, INCOMPLETE, "the label cache build has not finished",
                        fix.replace(" --repair", ""))]
    if attrs["dataset"]["fingerprint"] != fp:
        return [Finding(path, STALE, f"built from another dataset (fingerprint "
                        f"{attrs['dataset']['fingerprint'][:16]}, the run's {fp[:16]})",
                        f"pass the right --label-cache, or {fix.replace('--repair', '--rebuild')}")]
    out = [Finding(f"{path}: {d.array} chunk {d.chunk} ({d.file})", DAMAGED, d.problem, fix)
           for d in integrity.scan_label_cache(group)]
    t.notes.append(f"label cache: {path} checked")
    return out


def derived_runs(t: Target) -> list[Path]:
    """The derived runs made from the run in its default place, RUN/rotations/*
    (pipeline/experiments/rotation.py; derived runs written elsewhere with --out are
    verified by naming them as runs)."""
    where = store.run_path(t.group) if t.group is not None else t.run
    if isinstance(where, str) or not (Path(where) / "rotations").is_dir():
        return []
    return sorted(p for p in (Path(where) / "rotations").iterdir()
                  if p.is_dir() and metadata.exists(metadata.open_store(p)))


def check_derived_runs(t: Target) -> list[Finding]:
    """RUN_CHECKS on every derived run of :func:`derived_runs`."""
    out = []
    for d in derived_runs(t):
        sub = Target(d)
        out += [f for check in RUN_CHECKS for f in check(sub)]
    if derived_runs(t):
        t.notes.append(f"derived runs: {len(derived_runs(t))} checked")
    return out


RUN_CHECKS: list[Callable[[Target], list[Finding]]] = [
    check_run_metadata, check_run_chunks, check_stored_results, check_set_counts,
    check_derived_source]
CHECKS: list[Callable[[Target], list[Finding]]] = [
    *RUN_CHECKS, check_dataset, check_label_cache, check_dataset_files, check_derived_runs]


def verify_run(run: str | os.PathLike, label_cache: str | None = None,
               dataset: str | None = None, full: bool = False
               ) -> tuple[list[Finding], list[str]]:
    """(findings, summary notes) of every check of ``CHECKS`` on the run at ``run``.
    Raises RunError when ``run`` is no run at all (a bad argument)."""
    where = store.location(run)
    if not metadata.exists(metadata.open_store(where)):
        raise store.RunError(f"{where}: not a run (no zarr.json); give a run directory "
                             f"written by scripts/extract.py")
    t = Target(where, label_cache, dataset, full)
    findings = [f for check in CHECKS for f in check(t)]
    return findings, t.notes
