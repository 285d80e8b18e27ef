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

A chunk of a finished block that is missing on disk is damage as well (extraction
writes every chunk, all-zero ones included), since zarr would read it as zeros.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import numpy as np
import zarr
from zarr.core.sync import sync

from cache import store
from cache.zarr_io import absent_chunks, chunk_key, clear_flags, read_flags

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
    out = []
    for r in rows:
        for rest in np.ndindex(*grid[1:]):
            d = _check_chunk(arr, (int(r),) + tuple(int(v) for v in rest), need)
            if d is not None:
                out.append(d)
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
    if group.attrs.get("complete") and "label_pixels" in group:   # written by the finish
        damage += scan_array(group["label_pixels"], need=has_checksum(group["label_pixels"]))
    return damage


def repair_label_cache(group: zarr.Group, log: Log = print) -> list[Damage]:
    """Mark the image chunks of a label cache that hold damaged chunks as not done
    (and the cache incomplete), so that the build's resume re-decodes only those (and
    its finish rewrites ``label_pixels``, the sum of ``chunk_label_pixels``)."""
    damage = scan_label_cache(group)
    if not damage:
        return damage
    chunks = sorted({d.chunk[0] for d in damage if d.array in LABEL_ARRAYS})
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
    where = store.run_path(run)
    if isinstance(where, str):        # a URL: extract.py writes local directories only
        down, up = _copy_commands(where, "LOCAL_RUN")
        return (f"The activation cache of {where} is damaged. extract.py --repair writes "
                f"to local directories only: copy the run to one (`{down}`), rerun the "
                f"scripts/extract.py command that made it with --out LOCAL_RUN --repair "
                f"(re-extracts only the blocks holding these chunks), copy it back "
                f"(`{up}`), then score again.")
    return (f"The activation cache of {where} is damaged: rerun the "
            f"scripts/extract.py command that made it with --repair (re-extracts only "
            f"the blocks holding these chunks), then score again.")


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
    return (f"The label cache {labels.path} is damaged: run scripts/cache_labels.py "
            f"--dataset DATASET --out {labels.path} --repair (re-decodes only these "
            f"chunks), then score again.")
