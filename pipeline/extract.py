"""Extraction: Broden images -> model -> activation cache (a run, see cache/store.py).

Per image: decode (PIL, RGB, in DataLoader worker processes); resize to the input
size with PIL ``Image.resize(..., BILINEAR)`` (antialiased when shrinking) only when
it differs from the dataset's image size; then on the device
``x = (pixels / 255 - mean) / std`` per channel in float32, channels in RGB order
or, with ``bgr``, reversed (mean/std are given in RGB order and reversed with them).
So ``mean=(0,0,0), std=(1,1,1)`` feeds pixels / 255 exactly, and a Caffe model with
0..255 inputs and mean (104, 117, 123) BGR takes ``bgr=True, mean=(123/255, 117/255,
104/255), std=(1/255,)*3``.

Forward passes run on the main thread; a writer thread with a bounded queue computes
maxima and writes the zarr chunks, so writing overlaps the next forward pass. Work is
done in blocks of B images (B = the run's ``block_images``, the first extraction's
batch size); a block is marked done only after all its arrays are written, so a run
killed at any moment resumes where it stopped and ends bit-identical.
"""
from __future__ import annotations

import os
import platform
import queue
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import zarr
from PIL import Image
from tqdm import tqdm

from cache import activations as cache_acts
from cache.store import (RUN_FORMAT, RUN_VERSION, LOCK_NAME, RunError, RunLock,
                         clear_run_dir, is_url, layer_node, location)
from pipeline.broden import BrodenDataset, BrodenError
from pipeline.devices import resolve_device
from pipeline.models.checkpoints import model_fingerprint
from pipeline.models.hooks import LayerCapture, resolve_layers
from pipeline.models.sources import load_model

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
RESIZE_METHOD = "PIL.Image.resize BILINEAR (only when input_size != image_size)"
DTYPES = ("float16", "float32")

Log = Callable[[str], None]


class ExtractError(RuntimeError):
    """Extraction cannot proceed (message names the argument/file and the fix)."""


class ExtractInterrupted(KeyboardInterrupt):
    """Ctrl-C during the loop: the computed blocks were written and the way to resume
    was logged (``str(e)`` repeats it)."""


# ------------------------------------------------------------------ preprocessing
@dataclass(frozen=True)
class Preprocessing:
    """How pixels become model input: (H, W) = input_size, mean/std on the 0..1
    scale in RGB order, bgr = feed channels reversed (Caffe)."""
    input_size: tuple[int, int]
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    bgr: bool = False

    def to_attrs(self) -> dict:
        return {"input_size": [int(v) for v in self.input_size],
                "mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std],
                "bgr": bool(self.bgr), "resize": RESIZE_METHOD,
                "formula": "(pixels/255 - mean) / std, per channel"}


def resize_image(img: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(ih, iw, 3) uint8 -> (H, W, 3) uint8 by PIL bilinear; unchanged if same size."""
    if img.shape[:2] == tuple(size):
        return img
    return np.asarray(Image.fromarray(img).resize((size[1], size[0]), Image.BILINEAR))


def to_model_input(pixels: torch.Tensor, prep: Preprocessing,
                   device: str | torch.device = "cpu") -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 on ``device``, normalised."""
    x = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(prep.mean, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(prep.std, dtype=torch.float32, device=x.device).view(1, 3, 1, 1)
    x = (x - mean) / std
    if prep.bgr:
        x = x.flip(1)
    return x.contiguous()


class _Images(torch.utils.data.Dataset):
    """Item i -> (i, (H, W, 3) uint8 or None, error message or None)."""

    def __init__(self, dataset: BrodenDataset, size: tuple[int, int]):
        self.dataset, self.size = dataset, size

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        try:
            return i, resize_image(self.dataset.load_image(i), self.size), None
        except BrodenError as e:
            return i, None, str(e)


def _collate(items):
    idx = [i for i, _, _ in items]
    errors = [e for _, _, e in items if e is not None]
    if errors:
        return idx, None, errors[0]
    return idx, torch.from_numpy(np.stack([im for _, im, _ in items])), None


def default_workers() -> int:
    return min(4, max(1, (os.cpu_count() or 2) - 1))


def default_threads(workers: int) -> int:
    """torch threads for a CPU forward pass: the cores left after the decoding workers
    and the writer thread (at least 1). Oversubscribed OpenMP threads wait on each other:
    on a 2-core machine 2 threads ran extraction ~1.5x (and training ~10x, with other jobs
    on the machine) slower than 1."""
    return max(1, (os.cpu_count() or 2) - workers - 1)


class _torch_threads:
    """Set torch's intra-op threads for a CPU run, restoring them afterwards."""

    def __init__(self, config: "ExtractConfig", device: torch.device, workers: int):
        auto = default_threads(workers) if device.type == "cpu" else None
        self.n = config.threads or auto

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)


def _loader(images: _Images, batches: list[list[int]], workers: int, pin: bool):
    return torch.utils.data.DataLoader(
        images, batch_sampler=batches, num_workers=workers, collate_fn=_collate,
        pin_memory=pin, prefetch_factor=2 if workers > 0 else None)


# ------------------------------------------------------------------------ config
@dataclass
class ExtractConfig:
    """Arguments of one extraction (see scripts/extract.py --help)."""
    dataset: str | Path
    model: str
    layers: Sequence[str]
    out: str | Path
    weights: str | Path | None = None
    batch_size: int = 32
    workers: int | None = None           # None: default_workers()
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    dtype: str = "float16"               # float16 | float32
    input_size: tuple[int, int] | None = None   # None: the dataset's image size
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    bgr: bool = False
    limit: int | None = None             # only the first N images
    overwrite: bool = False
    compression: str = "lz4"             # lz4 | zstd | none; not part of the identity
    threads: int | None = None           # torch CPU threads; None: default_threads()
    progress: bool = True                # tqdm bar on stderr
    repair: bool = False                 # re-extract the blocks holding damaged chunks


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


@dataclass
class _Setup:
    dataset: BrodenDataset
    num_images: int
    prep: Preprocessing
    model: torch.nn.Module
    device: torch.device
    shapes: dict[str, tuple[int, int, int]]
    attrs: dict = field(default_factory=dict)


def _check_config(c: ExtractConfig) -> None:
    if c.compression not in cache_acts.COMPRESSIONS:
        raise ExtractError(f"--compression {c.compression!r}: expected one of "
                           f"{cache_acts.COMPRESSIONS}")
    if c.dtype not in DTYPES:
        raise ExtractError(f"--dtype {c.dtype!r}: expected one of {DTYPES}")
    if c.batch_size < 1:
        raise ExtractError(f"--batch-size {c.batch_size}: must be >= 1")
    if c.limit is not None and c.limit < 1:
        raise ExtractError(f"--limit {c.limit}: must be >= 1")
    if c.workers is not None and c.workers < 0:
        raise ExtractError(f"--workers {c.workers}: must be >= 0")
    if c.threads is not None and c.threads < 1:
        raise ExtractError(f"--threads {c.threads}: must be >= 1")
    for name, v in (("--mean", c.mean), ("--std", c.std)):
        if len(v) != 3:
            raise ExtractError(f"{name}: expected three numbers, got {list(v)}")
    if any(float(s) == 0 for s in c.std):
        raise ExtractError(f"--std {list(c.std)}: must not contain 0")
    if c.input_size is not None and (len(c.input_size) != 2 or min(c.input_size) < 1):
        raise ExtractError(f"--input-size {c.input_size}: expected H,W >= 1")


def _versions() -> dict:
    try:
        from importlib.metadata import version
        tool = version("netdissect-zarr")
    except Exception:
        tool = "0.1.0"
    return {"torch": torch.__version__, "numpy": np.__version__, "zarr": zarr.__version__,
            "python": platform.python_version(), "tool": tool}


def _setup(c: ExtractConfig) -> _Setup:
    if isinstance(c.layers, str):
        c.layers = [t.strip() for t in c.layers.split(",") if t.strip()]
    _check_config(c)
    ds = BrodenDataset(c.dataset)
    n = len(ds) if c.limit is None else min(c.limit, len(ds))
    if n == 0:
        raise ExtractError(f"--dataset {c.dataset}: index.csv has no image")
    image_size = ds.image_size()
    seg_size = ds.segmentation_size()
    prep = Preprocessing(tuple(int(v) for v in (c.input_size or image_size)),
                         tuple(float(v) for v in c.mean), tuple(float(v) for v in c.std),
                         bool(c.bgr))
    device = resolve_device(c.device)
    model = load_model(c.model, c.weights).to(device)
    shapes = resolve_layers(model, list(c.layers), prep.input_size, device)
    attrs = {
        "format": RUN_FORMAT, "version": RUN_VERSION,
        "dataset": {"path": str(Path(c.dataset).resolve()), "fingerprint": ds.fingerprint(),
                    "num_images": n, "image_size": list(image_size),
                    "seg_size": list(seg_size)},
        "model": {"spec": str(c.model),
                  "weights": str(Path(c.weights).resolve()) if c.weights else None,
                  "fingerprint": model_fingerprint(model)},
        "preprocessing": prep.to_attrs(),
        "layers": list(c.layers),
        "dtype": c.dtype,
        "layer_nodes": {n_: layer_node(n_) for n_ in c.layers},
        "layer_shapes": {n_: list(s) for n_, s in shapes.items()},
        "versions": _versions(),
    }
    return _Setup(ds, n, prep, model, device, shapes, attrs)


# ------------------------------------------------------------- run create/resume
def _differences(old: dict, new: dict) -> list[str]:
    """What makes an existing run another cache than the one asked for."""
    def get(d, *keys):
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None
        return d
    diffs = []
    checks = [
        ("model fingerprint (weights)", ("model", "fingerprint")),
        ("dataset fingerprint", ("dataset", "fingerprint")),
        ("number of images (--limit)", ("dataset", "num_images")),
        ("image size", ("dataset", "image_size")),
        ("dtype (--dtype)", ("dtype",)),
    ]
    for what, keys in checks:
        a, b = get(old, *keys), get(new, *keys)
        if a != b:
            if what.startswith("model"):
                a = f"{a[:12] if a else a} (spec {get(old, 'model', 'spec')!r}, weights " \
                    f"{get(old, 'model', 'weights')!r})"
                b = f"{b[:12]} (spec {get(new, 'model', 'spec')!r}, weights " \
                    f"{get(new, 'model', 'weights')!r})"
            diffs.append(f"{what}: run has {a}, this command {b}")
    if set(old.get("layers") or []) != set(new["layers"]):
        diffs.append(f"layers (--layers): run has {old.get('layers')}, this command "
                     f"{new['layers']}")
    op, np_ = old.get("preprocessing") or {}, new["preprocessing"]
    for k in ("input_size", "mean", "std", "bgr", "resize"):
        if op.get(k) != np_.get(k):
            diffs.append(f"preprocessing {k}: run has {op.get(k)}, this command {np_.get(k)}")
    if not diffs and old.get("layer_shapes") != new["layer_shapes"]:
        diffs.append(f"layer shapes: run has {old.get('layer_shapes')}, this command "
                     f"{new['layer_shapes']}")
    return diffs


def _create_run(out: Path, s: _Setup, block: int, c: ExtractConfig) -> zarr.Group:
    clear_run_dir(out)
    attrs = dict(s.attrs, block_images=block, compression=c.compression,
                 layout_complete=False)
    # one write of zarr.json with all attrs; never mode="w": it would delete .lock
    group = zarr.open_group(out, mode="a", attributes=attrs)
    for name, shape in s.shapes.items():
        cache_acts.create_layer_arrays(group, name, shape, s.num_images, block, c.dtype,
                                       c.compression)
    cache_acts.create_progress(group, s.num_images, block)
    group.attrs.update({"layout_complete": True})
    return group


def _open_or_create(out: Path, s: _Setup, c: ExtractConfig, log: Log
                    ) -> tuple[zarr.Group, int, bool]:
    """(group, block_images, created)."""
    if (out / "zarr.json").is_file():
        try:
            group = zarr.open_group(out, mode="r+")
            old = dict(group.attrs)
        except Exception as e:
            if not c.overwrite:
                raise RunError(f"--out {out}: zarr.json is unreadable ({type(e).__name__}: "
                               f"{e}); pass --overwrite to start the cache again") from e
            old = None
        if old is not None and old.get("format") != RUN_FORMAT and not c.overwrite:
            raise RunError(f"--out {out}: a Zarr group that is not a netdissect run; "
                           f"choose another --out")
        if old is not None and not c.overwrite:
            diffs = _differences(old, s.attrs)
            if diffs:
                raise RunError(f"--out {out} holds a cache made differently:\n  - "
                               + "\n  - ".join(diffs)
                               + "\npass --overwrite to replace it, or choose another --out")
            block = int(old["block_images"])
            if old.get("layout_complete"):
                if block != c.batch_size:
                    log(f"note: resuming with the run's block size {block} "
                        f"(--batch-size {c.batch_size} applies to new runs)")
                return group, block, False
            return _create_run(out, s, block, c), block, True
    elif any(p.name != LOCK_NAME for p in out.iterdir()):
        raise RunError(f"--out {out}: the directory holds files but is not a run; "
                       f"choose a new or empty directory")
    return _create_run(out, s, c.batch_size, c), c.batch_size, True


# --------------------------------------------------------------------- the writer
class _Writer(threading.Thread):
    """Writes (block, {layer: (activations (n, K, h, w), maxima (n, K) float32)}) items
    (CPU tensors) from a bounded queue."""

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
            b, outs = item
            try:
                acts = {n: a.numpy() for n, (a, _m) in outs.items()}
                mx = {n: m.numpy() for n, (_a, m) in outs.items()}
                self.target.write(b, acts, mx)
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
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            try:
                total += os.stat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


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
    s = _setup(config)
    dtype = torch.float16 if config.dtype == "float16" else torch.float32
    with RunLock(out):
        group, block, created = _open_or_create(out, s, config, log)
        if config.repair and not created:
            from cache.integrity import repair_run
            repair_run(group, list(config.layers), log)
        N = s.num_images
        done = cache_acts.read_progress(group)
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

        batches = [list(range(*cache_acts.block_range(int(b), block, N))) for b in pending]
        todo = sum(len(b) for b in batches)
        workers = default_workers() if config.workers is None else config.workers
        loader = _loader(_Images(s.dataset, s.prep.input_size), batches, workers,
                         pin=s.device.type == "cuda")
        on_gpu = s.device.type != "cpu"

        def transform(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            """(stored copy, maxima). Copy in the hook: a later in-place op (ReLU(inplace))
            must not change what we keep. Rounding to float16 is monotonic, so the max of
            the rounded maps is the rounded max of the float32 maps (and cheaper)."""
            t = t.detach()
            return (t.to(dtype, copy=True),
                    t.amax(dim=(2, 3)).to(dtype).to(torch.float32))
        writer = _Writer(group, list(config.layers))
        writer.start()
        bar = tqdm(total=N, initial=N - todo, unit="img", desc="extract", smoothing=0.1,
                   disable=not config.progress, dynamic_ncols=True)
        t0, c0 = time.perf_counter(), time.process_time()
        interrupted = False
        try:
            with LayerCapture(s.model, list(config.layers), transform) as cap, \
                    torch.inference_mode(), _torch_threads(config, s.device, workers):
                for idx, pixels, err in loader:
                    if err is not None:
                        raise ExtractError(f"{err}\n(blocks written so far are kept; "
                                           f"after fixing, rerun the same command to resume)")
                    outs = cap(to_model_input(pixels, s.prep, s.device))
                    if on_gpu:
                        outs = {n: (a.cpu(), m.cpu()) for n, (a, m) in outs.items()}
                    writer.put((idx[0] // block, outs))
                    bar.update(len(idx))
                    stats.images += len(idx)
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
            d, t = cache_acts.progress(group)
            msg = f"interrupted: {d} of {t} blocks are in {out}; rerun the same command " \
                  f"to resume"
            log(msg)
            stats.status = "interrupted"
            raise ExtractInterrupted(msg)
        _warn_overflow(group, config.layers, log)
        stats.bytes_on_disk = _dir_bytes(out)
        return stats


def _warn_disk(out: Path, s: _Setup, dtype: str, fraction: float, log: Log) -> None:
    itemsize = np.dtype(dtype).itemsize
    raw = s.num_images * sum(K * h * w for K, h, w in s.shapes.values()) * itemsize * fraction
    try:
        free = shutil.disk_usage(out).free
    except OSError:
        return
    if free < 0.6 * raw:   # zstd gives ~2x on float16 ReLU maps
        log(f"warning: {out} has {free / 2**30:.1f} GiB free; the cache may need up to "
            f"{raw / 2**30:.1f} GiB raw (about half after compression)")


def _warn_overflow(group: zarr.Group, layers: Sequence[str], log: Log) -> None:
    if group.attrs.get("dtype") != "float16":
        return
    for name in layers:
        mx = np.asarray(cache_acts.maxima(group, name)[:])
        if not np.isfinite(mx).all():
            log(f"warning: layer {name!r} has activations beyond the float16 range "
                f"(+-65504), stored as inf/nan; rerun with --dtype float32 --overwrite")


# ------------------------------------------------------------------ bare forward
@dataclass
class LoopStats:
    """images, wall seconds and process CPU seconds (all threads) of a loop."""
    images: int
    seconds: float
    cpu_seconds: float

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def bare_forward_stats(config: ExtractConfig) -> LoopStats:
    """The same pipeline as extract() (decoding workers, preprocessing, forward pass
    over the first ``config.limit`` images in batches of ``config.batch_size``) with
    no hooks and no writes: the baseline the cache's cost is measured against."""
    s = _setup(config)
    N, B = s.num_images, config.batch_size
    batches = [list(range(i, min(i + B, N))) for i in range(0, N, B)]
    workers = default_workers() if config.workers is None else config.workers
    loader = _loader(_Images(s.dataset, s.prep.input_size), batches, workers,
                     pin=s.device.type == "cuda")
    t0, c0 = time.perf_counter(), time.process_time()
    with torch.inference_mode(), _torch_threads(config, s.device, workers):
        for _idx, pixels, err in loader:
            if err is not None:
                raise ExtractError(err)
            s.model(to_model_input(pixels, s.prep, s.device))
        if s.device.type == "cuda":
            torch.cuda.synchronize()
    return LoopStats(N, time.perf_counter() - t0, time.process_time() - c0)


def bare_forward_loop(config: ExtractConfig, log: Log | None = None) -> float:
    """images/s of :func:`bare_forward_stats` (compare with ExtractStats.images_per_s)."""
    st = bare_forward_stats(config)
    if log:
        log(f"bare forward loop: {st.images} images in {st.seconds:.2f} s = "
            f"{st.images_per_s:.1f} images/s")
    return st.images_per_s
