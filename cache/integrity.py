"""Integrity of cached chunks: find the damaged ones, name them, mark them for redoing.

Every chunk of an activation cache and a label cache ends with a CRC32C of its stored
bytes (``cache/activations.codecs``), so a flipped or truncated byte fails the read.
This module turns such failures into names (array, chunk index, file) and into the
resume bookkeeping that makes the ordinary resume recompute exactly the damaged parts:

    scan_array(arr, rows)             Damage of one array (chunk rows = image chunks)
    scan_run(run, layers)             Damage of a run's finished blocks
    repair_run(group, layers, log)    scan_run + clear the progress of damaged blocks
    scan_label_cache(group)           Damage of a label cache's finished chunks
    repair_label_cache(group, log)    scan + clear ``done`` of damaged chunks
    explain(run, layer, labels)       RunError naming the damage, or None
    check_present(run, layer, labels) RunError when a chunk scoring reads is absent on disk
    check_run_metadata(where)         MetadataError naming each damaged zarr.json (digests
    check_label_metadata(where)         and the copy of the root attrs, cache/metadata.py)
    repair_run_metadata(where, log)   restore damaged zarr.json from the layout (no chunk
    repair_label_metadata(where, log)   is touched; the chunk scan decides what to redo)
    run_fix / label_fix               the command that repairs a run (extract.py, or
                                      rotate.py for a derived run) or a label cache

Chunks are scanned a chunk row at a time (one read of every chunk of an image chunk row);
only a row that fails is read chunk by chunk to name the damaged ones.

A chunk of a finished block that is missing on disk is damage as well (extraction
writes every chunk, all-zero ones included), since zarr would read it as zeros.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import zarr
from zarr.core.sync import sync

from cache import activations as acts
from cache import labels, metadata, store
from cache.zarr_io import absent_chunks, chunk_key, clear_flags, read_flags, read_whole

Log = Callable[[str], None]
SHOWN = 10          # damaged chunks named in one message


@dataclass(frozen=True)
class Damage:
    """One unreadable or missing chunk: ``array`` (node path in its group), ``chunk``
    (index in the chunk grid), ``file`` (path or URL of the chunk), ``problem``."""
    array: str
    chunk: tuple[int, ...]
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.array} chunk {self.chunk} ({self.file}): {self.problem}"


def _chunk_file(arr: zarr.Array, coords: tuple[int, ...]) -> tuple[str, str]:
    """(store key, path or URL) of chunk ``coords`` of ``arr``."""
    key = chunk_key(arr, coords)
    return key, str(store.store_location(arr.store, key))


def _check_chunk(arr: zarr.Array, coords: tuple[int, ...], need: bool) -> Damage | None:
    """Damage of one chunk, or None when it decodes (or is absent and not ``need``ed)."""
    key, where = _chunk_file(arr, coords)
    if not sync(arr.store.exists(key)):
        return Damage(arr.path, coords, where, "missing") if need else None
    try:
        arr.get_block_selection(coords)
    except Exception as e:                      # noqa: BLE001 - any decode failure
        if "checksum" in str(e).lower():
            return Damage(arr.path, coords, where, "CRC32C checksum mismatch (the stored "
                                                   "bytes changed after writing)")
        return Damage(arr.path, coords, where, f"unreadable ({type(e).__name__}: {e})")
    return None


def scan_array(arr: zarr.Array, rows: Iterable[int] | None = None, need: bool = True
               ) -> list[Damage]:
    """Damage among the chunks of ``arr`` whose first chunk index is in ``rows``
    (default: all). ``need``: a missing chunk counts as damage."""
    grid = arr._chunk_grid_shape
    rows = range(grid[0]) if rows is None else rows
    absent = set(absent_chunks(arr))            # one listing of the array's keys
    n = arr.chunks[0]
    out = []
    for r in rows:
        row = [(int(r),) + tuple(int(v) for v in rest) for rest in np.ndindex(*grid[1:])]
        if not absent.intersection(row):
            try:                                # the whole row at once: usually intact
                arr[int(r) * n:(int(r) + 1) * n]
                continue
            except Exception:                   # noqa: BLE001 - then chunk by chunk
                pass
        out += [d for d in (_check_chunk(arr, c, need) for c in row) if d is not None]
    return out


def _rows_of_blocks(arr: zarr.Array, blocks: Sequence[int], block: int) -> list[int]:
    """Chunk rows of ``arr`` (chunked along images) inside the given blocks."""
    n = arr.chunks[0]
    N = arr.shape[0]
    rows = set()
    for b in blocks:
        start, stop = b * block, min((b + 1) * block, N)
        rows.update(range(start // n, -(-stop // n)))
    return sorted(rows)


def _block_of(damage: Damage, group: zarr.Group, block: int) -> int:
    arr = group[damage.array]
    return damage.chunk[0] * arr.chunks[0] // block


def scan_run(run, layers: Sequence[str] | None = None) -> list[Damage]:
    """Damage in the activations and maxima of ``layers`` (default all) over the blocks
    a run has marked done (unfinished blocks are redone by any resume anyway)."""
    group = store.as_group(run)
    block = int(group.attrs["block_images"])
    done = np.flatnonzero(store.read_progress(group))
    out: list[Damage] = []
    for arr in _run_arrays(group, layers or store.layer_names(group)):
        out += scan_array(arr, _rows_of_blocks(arr, done, block))
    return out


def _run_arrays(group: zarr.Group, layers: Sequence[str]) -> list[zarr.Array]:
    """The arrays of a run written block by block: each layer's activations and maxima,
    and ``image_files`` where the run has it."""
    arrays = [a for name in layers
              for a in (store.activations(group, name), store.maxima(group, name))]
    return arrays + ([group["image_files"]] if "image_files" in group else [])


def read_named(arr: zarr.Array, fix: str, error: type = store.RunError) -> np.ndarray:
    """``arr[:]`` (an array read whole), or ``error`` naming every missing or damaged
    chunk (:func:`describe`) with ``fix``."""
    try:
        return np.asarray(read_whole(arr))
    except Exception as e:                      # noqa: BLE001 - named below
        damage = scan_array(arr)
        if not damage:
            raise
        raise error(describe(damage, fix)) from e


def describe(damage: Sequence[Damage], fix: str) -> str:
    """A message naming up to SHOWN damaged chunks and what to do."""
    lines = [str(d) for d in damage[:SHOWN]]
    if len(damage) > SHOWN:
        lines.append(f"... and {len(damage) - SHOWN} more")
    return f"{len(damage)} damaged chunk(s):\n  " + "\n  ".join(lines) + f"\n{fix}"


def repair_run(group: zarr.Group, layers: Sequence[str] | None = None,
               log: Log = print) -> list[Damage]:
    """Scan a run (opened writable, lock held) and mark the blocks holding damaged
    chunks as not done, so that the resume that follows re-extracts exactly those."""
    damage = scan_run(group, layers)
    if not damage:
        log(f"{store.run_path(group)}: every chunk of the finished blocks reads back intact")
        return damage
    block = int(group.attrs["block_images"])
    blocks = sorted({_block_of(d, group, block) for d in damage})
    clear_flags(group["progress"], blocks)
    log(describe(damage, f"re-extracting block(s) {blocks} "
                         f"({len(blocks) * block} images at most)"))
    return damage


# ------------------------------------------------------------------ label cache
LABEL_ARRAYS = ("planes", "scalars", "present", "chunk_label_pixels",    # by image chunk
                "label_files")                 # (absent in caches made before it)


def has_checksum(arr: zarr.Array) -> bool:
    """True when ``arr``'s chunks carry a CRC32C (caches made before it was added don't,
    and their label caches may lack all-zero chunks, which is then no damage)."""
    return any(getattr(c, "to_dict", lambda: {})().get("name") == "crc32c"
               for c in arr.metadata.codecs)


def scan_label_cache(group: zarr.Group) -> list[Damage]:
    """Damage among the finished chunks of a label cache (``cache/labels.py``)."""
    done = np.flatnonzero(read_flags(group["done"]) == 1)
    damage = [d for name in LABEL_ARRAYS if name in group
              for d in scan_array(group[name], done, need=has_checksum(group[name]))]
    if group.attrs.get("complete"):         # every flag is 1, label_pixels written
        damage += scan_array(group["done"], need=has_checksum(group["done"]))
        if "label_pixels" in group:
            damage += scan_array(group["label_pixels"],
                                 need=has_checksum(group["label_pixels"]))
    return damage


def repair_label_cache(group: zarr.Group, log: Log = print) -> list[Damage]:
    """Mark the image chunks of a label cache that hold damaged chunks as not done
    (and the cache incomplete), so that the build's resume re-decodes only those (and
    its finish rewrites ``label_pixels``, the sum of ``chunk_label_pixels``)."""
    damage = scan_label_cache(group)
    if not damage:
        return damage
    chunks = sorted({d.chunk[0] for d in damage if d.array in (*LABEL_ARRAYS, "done")})
    group.attrs["complete"] = False
    clear_flags(group["done"], chunks)
    log(describe(damage, f"re-decoding label chunk(s) {chunks}"))
    return damage


# --------------------------------------------------------------------- scoring
def explain(run, layer: str, labels=None) -> store.RunError | None:
    """After a read failed while scoring ``layer``: a RunError naming the damaged chunks
    of the layer's cache (and of the label cache ``labels``) with the fix, or None
    when nothing is damaged (the failure had another cause)."""
    damage = scan_run(run, [layer])
    if damage:
        return store.RunError(describe(damage, _activation_fix(run)))
    if labels is not None:
        damage = scan_label_cache(labels.group)
        if damage:
            return store.RunError(describe(damage, _label_fix(labels)))
    return None


def check_present(run, layer: str, labels=None) -> None:
    """Raise explain()'s RunError when a chunk of ``layer``'s activations or maxima, or
    of the label cache's arrays, is absent on disk (zarr would read it as zeros and the
    numbers would be silently wrong). One listing per array: milliseconds."""
    damage = [d for arr in _run_arrays(store.as_group(run), [layer]) for d in _absent(arr)]
    if damage:
        raise store.RunError(describe(damage, _activation_fix(run)))
    if labels is None:
        return
    arrays = [labels.group[n] for n in (*LABEL_ARRAYS, "label_pixels") if n in labels.group]
    damage = [d for arr in arrays if has_checksum(arr) for d in _absent(arr)]
    if damage:
        raise store.RunError(describe(damage, _label_fix(labels)))


def _absent(arr: zarr.Array) -> list[Damage]:
    return [Damage(arr.path, c, _chunk_file(arr, c)[1], "missing")
            for c in absent_chunks(arr)]


def _activation_fix(run) -> str:
    return run_fix(store.run_path(run), store.read_run_attrs(run))


def _copy_commands(url: str, local: str) -> tuple[str, str]:
    """Shell commands copying ``url`` to the directory ``local`` and back."""
    proto = url.split("://", 1)[0]
    if proto in ("s3", "s3a"):
        return f"aws s3 sync {url} {local}", f"aws s3 sync {local} {url}"
    if proto in ("gs", "gcs"):
        return f"gsutil -m rsync -r {url} {local}", f"gsutil -m rsync -r {local} {url}"
    py = "python -c \"import fsspec; fsspec.filesystem('" + proto + "')"
    return (f"{py}.get('{url}/', '{local}', recursive=True)\"",
            f"{py}.put('{local}/', '{url}', recursive=True)\"")


def _label_fix(labels) -> str:
    return label_fix(labels.path, labels.attrs)


# ------------------------------------------------------------ repair commands
def extract_command(attrs: dict, where) -> str:
    """The scripts/extract.py command line that made the run at ``where`` (its root
    attrs ``attrs``): resuming it with --repair re-does only what is damaged. A run of an
    in-memory module (pipeline.api.extract) names a factory to write in its place: one
    returning the same weights resumes it (the same keywords to pipeline.api.extract do)."""
    ds, model, prep = attrs["dataset"], attrs["model"], attrs.get("preprocessing") or {}
    spec = (f"<file.py:function returning your {model.get('class')} with the same weights>"
            if model.get("source") == "module" else model["spec"])
    args = ["scripts/extract.py", "--dataset", ds["path"], "--model", spec]
    if model.get("weights"):
        args += ["--weights", model["weights"]]
    args += ["--layers", ",".join(attrs["layers"])]
    if prep.get("input_size"):
        args += ["--input-size", ",".join(str(v) for v in prep["input_size"])]
    for flag in ("mean", "std"):
        if prep.get(flag):
            args += [f"--{flag}", ",".join(str(v) for v in prep[flag])]
    if prep.get("bgr"):
        args.append("--bgr")
    args += ["--dtype", attrs["dtype"], "--limit", str(ds["num_images"]),
             "--batch-size", str(attrs["block_images"]),
             "--compression", attrs.get("compression", "lz4"), "--out", str(where)]
    return shlex.join(args)


def rotate_command(attrs: dict, where) -> str:
    """The scripts/rotate.py command line that made the derived run at ``where``
    (pipeline/experiments/rotation.py names it OUT/<layer>-seed<S>-a<alpha>)."""
    src, tr = attrs["source"], attrs["transform"]
    args = ["scripts/rotate.py", src["run"], "--layers", src["layer"],
            "--seed", str(tr.get("seed", 0))]
    if tr.get("kind") == "rotation":
        args += ["--alphas", str(tr.get("alpha"))]
    else:
        args += ["--alphas", "0", "--baseline", str(tr.get("kind"))]
    args += ["--dtype", tr.get("dtype", "float32"), "--out", str(Path(str(where)).parent)]
    return shlex.join(args)


def is_derived(attrs: dict | None) -> bool:
    return bool(attrs) and "source" in attrs and "transform" in attrs


def run_fix(where, attrs: dict | None) -> str:
    """What repairs the run at ``where`` (trusted root attrs ``attrs``, None if lost)."""
    if attrs is None:
        return (f"No copy of the run's attributes survives ({where}/"
                f"{metadata.COPY_NAME}): start it again with the scripts/extract.py command "
                f"that made it plus --out {where} --overwrite.")
    if isinstance(where, str):        # a URL: extract.py writes local directories only
        down, up = _copy_commands(where, "LOCAL_RUN")
        return (f"The activation cache of {where} is damaged. extract.py --repair writes "
                f"to local directories only: copy the run to one (`{down}`), rerun the "
                f"scripts/extract.py command that made it with --out LOCAL_RUN --repair "
                f"(re-extracts only the blocks holding these chunks), copy it back "
                f"(`{up}`), then score again.")
    if is_derived(attrs):
        return (f"{where} is a derived run: repair it with {rotate_command(attrs, where)} "
                f"--repair (rewrites only what is damaged, from its source run), then score "
                f"again.")
    return (f"Repair it with {extract_command(attrs, where)} --repair (lays metadata out "
            f"again and re-extracts only the blocks holding damaged chunks), then score "
            f"again.")


def label_fix(where, attrs: dict | None) -> str:
    """What repairs the label cache at ``where`` (trusted root attrs, None if lost)."""
    if attrs is None:
        return (f"No copy of the label cache's attributes survives: rebuild it with "
                f"scripts/cache_labels.py --dataset DATASET --out {where} --rebuild.")
    cmd = shlex.join(["scripts/cache_labels.py", "--dataset", attrs["dataset"]["path"],
                      "--out", str(where), "--repair"])
    return (f"The label cache {where} is damaged: repair it with {cmd} (lays metadata out "
            f"again and re-decodes only damaged chunks), then score again.")


# ------------------------------------------------------------------ metadata
LABEL_VOLATILE = ("complete",)      # root attrs of a label cache that change legitimately


def check_run_metadata(where) -> dict:
    """The run's trusted root attrs; MetadataError naming each damaged zarr.json (or the
    copy of the root attrs) and the repair command."""
    return metadata.check(metadata.open_store(where), lambda a: run_fix(where, a))


def check_label_metadata(where) -> dict:
    """As check_run_metadata, for a label cache."""
    return metadata.check(metadata.open_store(where), lambda a: label_fix(where, a),
                          LABEL_VOLATILE)


def repair_run_metadata(where, log: Log = print) -> list[metadata.MetaDamage]:
    """Restore every damaged zarr.json of the run at ``where`` (lock held) from its
    layout and the copy of its root attrs; chunks are not touched."""
    return _repair_metadata(where, acts.layout_metadata, (), lambda a: run_fix(where, a), log)


def repair_label_metadata(where, log: Log = print) -> list[metadata.MetaDamage]:
    """As repair_run_metadata, for a label cache (its root restored as not complete)."""
    return _repair_metadata(where, labels.layout_metadata, LABEL_VOLATILE,
                            lambda a: label_fix(where, a), log)


def _repair_metadata(where, layout, volatile, fix, log: Log) -> list[metadata.MetaDamage]:
    zstore = metadata.open_store(where, read_only=False)
    if not metadata.exists(zstore):
        return []
    damage, trusted = metadata.find_damage(zstore, volatile)
    if not damage:
        return damage
    if trusted is None:
        raise metadata.MetadataError(metadata.describe(damage, fix(None)))
    left = metadata.restore(zstore, layout(trusted), damage, trusted)
    if left:
        raise metadata.MetadataError(metadata.describe(
            left, "These cannot be laid out again from the layout. " + fix(None)))
    log(metadata.describe(damage, f"restored from the layout and {metadata.COPY_NAME} "
                                  f"(no chunk was touched)"))
    return damage
