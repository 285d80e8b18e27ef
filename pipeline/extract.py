"""Extraction: Broden images -> model -> activation cache (a run, see cache/store.py).

The arguments and their resolution are in pipeline/extract_config.py, what the model is
fed in pipeline/preprocess.py, the resume-or-create decision in pipeline/extract_run.py.
Per layer the cache holds activations (N, K, h, w) float16 (or float32) and per-image
maxima (N, K) of the stored values.

Forward passes run on the main thread; a writer thread with a bounded queue computes
maxima and writes the zarr chunks, so writing overlaps the next forward pass. Work is
done in blocks of B images (B = the run's ``block_images``, the first extraction's
batch size); a block is marked done only after all its arrays are written, so a run
killed at any moment resumes where it stopped and ends bit-identical.
"""
from __future__ import annotations

import queue
import shutil
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import zarr
from tqdm.auto import tqdm

from cache import activations as cache_acts
from cache import store
from cache.store import RunError, RunLock, is_url, location
from cache.zarr_io import clear_flags
from pipeline.dataset_files import find_changes, image_files
from pipeline.extract_config import (ExtractConfig, ExtractError, ExtractSetup,
                                     config_workers, setup_extraction, torch_threads)
from pipeline.extract_grow import grow
from pipeline.extract_run import growth, inspects_run, open_or_create
from pipeline.models.hooks import LayerCapture
from pipeline.preprocess import ResizedImages, image_loader, to_model_input

Log = Callable[[str], None]


class ExtractInterrupted(KeyboardInterrupt):
    """Ctrl-C during the loop: the computed blocks were written and the way to resume
    was logged (``str(e)`` repeats it)."""


@dataclass
class ExtractStats:
    """What one extract() call did. images: processed in this call; seconds: the
    loop's wall time (first batch requested -> last block written); cpu_seconds: CPU
    time of this process over the loop (all threads, not the decoding workers)."""
    path: Path
    num_images: int
    images: int = 0
    seconds: float = 0.0
    blocks_total: int = 0
    blocks_before: int = 0
    status: str = "extracted"            # extracted | resumed | complete | interrupted
    bytes_on_disk: int = 0
    cpu_seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------- the writer
class _Writer(threading.Thread):
    """Writes (block, {layer: (activations (n, K, h, w), maxima (n, K) float32)}, image
    records (n, 32) uint8) items (CPU tensors) from a bounded queue."""

    def __init__(self, group: zarr.Group, layers: list[str], maxsize: int = 2):
        super().__init__(name="activation-writer", daemon=True)
        self.target = cache_acts.BlockWriter(group, layers)
        self.q: queue.Queue = queue.Queue(maxsize=maxsize)
        self.error: BaseException | None = None
        self.failed_block: int | None = None
        self.written = 0

    def run(self) -> None:
        while True:
            item = self.q.get()
            if item is None:
                return
            if self.error is not None:
                continue                    # drain after a failure
            b, outs, files = item
            try:
                acts = {n: a.numpy() for n, (a, _m) in outs.items()}
                mx = {n: m.numpy() for n, (_a, m) in outs.items()}
                self.target.write(b, acts, mx, files)
                self.written += 1
            except BaseException as e:      # noqa: BLE001 - reported by the main thread
                self.error, self.failed_block = e, b

    def put(self, item) -> None:
        while True:
            self._raise()
            try:
                self.q.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def close(self) -> None:
        """Finish the queued blocks, stop, and raise a write error if one happened."""
        self.q.put(None)
        self.join()
        self._raise()

    def _raise(self) -> None:
        if self.error is not None:
            raise ExtractError(
                f"writing block {self.failed_block} of the cache failed "
                f"({type(self.error).__name__}: {self.error}); blocks written before are "
                f"kept: fix the cause (e.g. free disk space) and rerun the same command "
                f"to resume") from self.error


def _dir_bytes(path: Path) -> int:
    return store.tree_size(path)[0]


# ---------------------------------------------------------------------- extract
def extract(config: ExtractConfig, log: Log = print) -> Path:
    """Extract (or resume, or confirm complete) the run at ``config.out``; return its path.
    With ``config.repair`` the finished blocks are first checked chunk by chunk and
    those holding a damaged (checksum-failing or missing) chunk are extracted again."""
    return extract_with_stats(config, log).path


def extract_with_stats(config: ExtractConfig, log: Log = print) -> ExtractStats:
    """As :func:`extract`, returning :class:`ExtractStats`.

    Raises RunLockedError (another extraction holds the run), RunError (a cache made
    differently is there; --overwrite), ExtractError/ModelError/LayerError/BrodenError
    (user errors, named), ExtractInterrupted (a KeyboardInterrupt) on Ctrl-C after
    writing the blocks already computed: the cache stays resumable.
    """
    if is_url(config.out):
        raise RunError(f"--out {config.out}: extraction writes to a local (or shared-"
                       f"filesystem) directory; copy the run to object storage afterwards "
                       f"(README, 'Running on a cluster')")
    out = Path(location(config.out))
    s = setup_extraction(config)
    for note in s.notes:
        log(note)
    with RunLock(out):
        plan = growth(out, s, config, log)
        if plan is not None:
            return _grow(plan, s, config, log)
        group, block, created = open_or_create(out, s, config, log,
                                               metadata_checked=inspects_run(out, config))
        if config.repair and not created:
            from cache.integrity import repair_run
            repair_run(group, list(config.layers), log)
            _repair_images(group, s, log)
        N = s.num_images
        done = store.read_progress(group)
        pending = np.flatnonzero(~done)
        stats = ExtractStats(out, N, blocks_total=int(done.size),
                             blocks_before=int(done.sum()),
                             status="extracted" if done.sum() == 0 else "resumed")
        if pending.size == 0:
            stats.status = "complete"
            stats.bytes_on_disk = _dir_bytes(out)
            log(f"{out}: the cache is complete ({N} images, layers "
                f"{', '.join(config.layers)}); nothing to do")
            return stats
        if stats.blocks_before:
            log(f"{out}: resuming: {stats.blocks_before} of {done.size} blocks already done")
        _warn_disk(out, s, config.dtype, len(pending) / max(1, done.size), log)
        _extract_blocks(out, group, s, config, pending, block, stats, log)
        _warn_overflow(group, config.layers, log)
        stats.bytes_on_disk = _dir_bytes(out)
        return stats


def _grow(plan, s: ExtractSetup, config: ExtractConfig, log: Log) -> ExtractStats:
    """Add the layers of ``plan`` (pipeline/extract_grow.py) to its complete run."""
    stats = grow(plan, config, extract_with_stats, log)
    if stats is None:
        log(f"{plan.out}: the cache is complete ({s.num_images} images, layers "
            f"{', '.join(plan.old_attrs['layers'])}); nothing to do")
        stats = ExtractStats(plan.out, s.num_images, status="complete")
    stats.bytes_on_disk = _dir_bytes(plan.out)
    return stats


def _repair_images(group: zarr.Group, s: ExtractSetup, log: Log) -> None:
    """Mark the finished blocks holding an image whose file changed since it was
    extracted (pipeline/dataset_files.py) as not done, so the resume re-extracts them.
    Called after the chunk repair: only the records of blocks still done are read."""
    if "image_files" not in group:
        return
    arr, block = group["image_files"], int(group.attrs["block_images"])
    done = [int(b) for b in np.flatnonzero(store.read_progress(group))]  # the damaged
    rows = [i for b in done for i in range(*cache_acts.block_range(b, block, arr.shape[0]))]
    if not rows:                                          # blocks are redone anyway
        return
    stored = np.concatenate([arr[slice(*cache_acts.block_range(b, block, arr.shape[0]))]
                             for b in done])
    changes = find_changes(s.dataset, stored, image_files, rows=rows)
    blocks = changes.units(block)
    if blocks:
        log(f"{changes.describe('image files')}: re-extracting block(s) {blocks}")
        clear_flags(group["progress"], blocks)


def _stored_and_maxima(dtype: torch.dtype
                       ) -> Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
    """The LayerCapture transform: (B, K, h, w) -> (stored copy in ``dtype``, maxima
    (B, K) float32 of the stored values)."""
    def transform(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(stored copy, maxima). Copy in the hook: a later in-place op (ReLU(inplace))
        must not change what we keep. Rounding to float16 is monotonic, so the max of
        the rounded maps is the rounded max of the float32 maps (and cheaper)."""
        t = t.detach()
        return (t.to(dtype, copy=True),
                t.amax(dim=(2, 3)).to(dtype).to(torch.float32))
    return transform


def _extract_blocks(out: Path, group: zarr.Group, s: ExtractSetup, config: ExtractConfig,
                    pending: np.ndarray, block: int, stats: ExtractStats, log: Log) -> None:
    """Extract and write the ``pending`` blocks (of ``block`` images), counting into
    ``stats``. On Ctrl-C the blocks already computed are written, the way to resume is
    logged and ExtractInterrupted raised."""
    N = s.num_images
    batches = [list(range(*cache_acts.block_range(int(b), block, N))) for b in pending]
    todo = sum(len(b) for b in batches)
    workers = config_workers(config)
    threads = torch_threads(config, s.device)    # before the workers start
    if s.device.type == "cpu":
        log(threads.describe(workers))
    loader = image_loader(ResizedImages(s.dataset, s.prep.input_size), batches, workers,
                          pin=s.device.type == "cuda")
    writer = _Writer(group, list(config.layers))
    writer.start()
    bar = tqdm(total=N, initial=N - todo, unit="img", desc="extract", smoothing=0.1,
               disable=not config.progress, dynamic_ncols=True)
    t0, c0 = time.perf_counter(), time.process_time()
    interrupted = False
    try:
        _forward_blocks(loader, s, config, threads, block, writer, bar, stats)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
        try:
            writer.close()          # finishes blocks already computed
        except ExtractError:
            if not interrupted:
                raise
        finally:
            stats.seconds = time.perf_counter() - t0
            stats.cpu_seconds = time.process_time() - c0
    if interrupted:
        d, t = store.progress(group)
        msg = f"interrupted: {d} of {t} blocks are in {out}; rerun the same command " \
              f"to resume"
        log(msg)
        stats.status = "interrupted"
        raise ExtractInterrupted(msg)


def _forward_blocks(loader, s: ExtractSetup, config: ExtractConfig, threads: torch_threads,
                    block: int, writer: _Writer, bar: tqdm, stats: ExtractStats) -> None:
    """The forward passes: each loaded block through the model, its captured layers
    queued to ``writer``."""
    dtype = torch.float16 if config.dtype == "float16" else torch.float32
    on_gpu = s.device.type != "cpu"
    with LayerCapture(s.model, list(config.layers), _stored_and_maxima(dtype),
                      s.layouts) as cap, \
            torch.inference_mode(), threads:
        for idx, pixels, err, files in loader:
            if err is not None:
                raise ExtractError(f"{err}\n(blocks written so far are kept; "
                                   f"after fixing, rerun the same command to resume)")
            outs = cap(to_model_input(pixels, s.prep, s.device))
            if on_gpu:
                outs = {n: (a.cpu(), m.cpu()) for n, (a, m) in outs.items()}
            writer.put((idx[0] // block, outs, files))
            bar.update(len(idx))
            stats.images += len(idx)


def _warn_disk(out: Path, s: ExtractSetup, dtype: str, fraction: float, log: Log) -> None:
    itemsize = np.dtype(dtype).itemsize
    raw = s.num_images * sum(K * h * w for K, h, w in s.shapes.values()) * itemsize * fraction
    try:
        free = shutil.disk_usage(out).free
    except OSError:
        return
    if free < 0.6 * raw:   # zstd gives ~2x on float16 ReLU maps
        log(f"warning: {out} has {free / 2**30:.1f} GiB free; the cache may need up to "
            f"{raw / 2**30:.1f} GiB raw (about half after compression)")


FLOAT16_SMALLEST_NORMAL = float(np.finfo(np.float16).tiny)       # 2**-14 ~ 6.1e-05


def _warn_overflow(group: zarr.Group, layers: Sequence[str], log: Log) -> None:
    """float16 runs: warn for a layer with values beyond float16's range (overflow), and
    for one whose maxima are all below its smallest normal in magnitude (underflow: the
    maps are stored all-zero or as subnormals with few bits)."""
    if group.attrs.get("dtype") != "float16":
        return
    for name in layers:
        mx = np.asarray(store.maxima(group, name)[:])
        if not np.isfinite(mx).all():
            log(f"warning: layer {name!r} has activations beyond the float16 range "
                f"(+-65504), stored as inf/nan; rerun with --dtype float32 --overwrite")
        elif mx.size and float(np.abs(mx).max()) < FLOAT16_SMALLEST_NORMAL:
            what = "all zero" if not mx.any() else "subnormal (few bits left)"
            log(f"warning: layer {name!r} has every maximum below float16's smallest "
                f"normal value ({FLOAT16_SMALLEST_NORMAL:.2g}), stored {what}: an underflow "
                f"(tiny activations, e.g. a random-init model) or a dead layer; rerun "
                f"with --dtype float32 --overwrite to keep them")
