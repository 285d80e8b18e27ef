"""The arguments of one extraction (:class:`ExtractConfig`), their checks, and what they
resolve to (:class:`ExtractSetup`): the dataset, the preprocessing, the model on its
device, the layer shapes and the run's identity attributes; plus the default numbers of
decoding workers and torch threads.
"""
from __future__ import annotations

import math

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import zarr

from cache import activations as cache_acts
from cache.zarr_io import COMPRESSIONS
from pipeline.broden import BrodenDataset
from pipeline.devices import resolve_device
from pipeline.models.checkpoints import WeightsFile, model_fingerprint
from pipeline.models.hooks import plan_layers
from pipeline.models.layouts import parse_layouts
from pipeline.models.sources import load_model
from pipeline.models.zoo import declared_preprocessing, zoo_seed
from pipeline.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocessing

DTYPES = ("float16", "float32")


class ExtractError(RuntimeError):
    """Extraction cannot proceed (message names the argument/file and the fix)."""


@dataclass
class ExtractConfig:
    """Arguments of one extraction (see scripts/extract.py --help). ``model``: a SPEC
    (--model, pipeline/models/sources.py) or an ``nn.Module`` in memory (used as it is,
    put in eval mode and moved to the device; its identity is :func:`module_identity`)."""
    dataset: str | Path
    model: str | torch.nn.Module
    layers: Sequence[str]
    out: str | Path
    weights: str | Path | None = None
    trust_checkpoint: bool = False  # --trust-checkpoint: full unpickler, model files
    batch_size: int = 32
    workers: int | None = None           # None: default_workers()
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    dtype: str = "float16"               # float16 | float32
    input_size: tuple[int, int] | None = None   # None: the model's (timm), else the dataset's
    mean: tuple[float, float, float] | None = None   # None: the model's (timm), else ImageNet
    std: tuple[float, float, float] | None = None
    bgr: bool = False
    limit: int | None = None             # only the first N images
    overwrite: bool = False
    yes: bool = False                    # --yes: --overwrite may delete scorings, results
    compression: str = "lz4"             # lz4 | zstd | none; not part of the identity
    threads: int | None = None           # torch CPU threads; None: the free cores
    progress: bool = True                # tqdm bar on stderr
    repair: bool = False                 # re-extract the blocks holding damaged chunks
    layouts: Sequence[str] | None = None  # --layout values: LAYOUT or LAYER=LAYOUT
    weights_key: str | None = None       # --weights-key: the checkpoint entry to load
    weights_prefix: str | None = None    # --weights-prefix: stripped from the keys


@dataclass
class ExtractSetup:
    """An ExtractConfig resolved: num_images (after --limit), shapes: layer -> (K, h, w),
    attrs: the run's identity attributes (compared on resume, see pipeline/extract_run.py),
    notes: lines for the log (preprocessing taken from the model, layouts, warnings),
    layouts: layer -> pipeline.models.layouts.Layout (how its output becomes maps)."""
    dataset: BrodenDataset
    num_images: int
    prep: Preprocessing
    model: torch.nn.Module
    device: torch.device
    shapes: dict[str, tuple[int, int, int]]
    attrs: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)   # what to tell the user (and warnings)
    layouts: dict = field(default_factory=dict)      # layer -> Layout (LayerCapture's)


def default_workers() -> int:
    return min(4, max(1, (os.cpu_count() or 2) - 1))


def default_threads(sample_s: float = 0.25) -> int:
    """torch threads for a CPU forward pass: the usable cores not busy with other work
    (CPU use over ``sample_s`` seconds, measured by psutil before the decoding workers
    start), at least 1. The decoding workers and the writer thread are not subtracted: at
    224 px they wait on the forward pass most of the time. Measured on 2 idle cores, 640
    images at 224 px, 1 decoding worker: torchvision resnet18 layer3+layer4 extracted at
    17-18 img/s with 1 thread and 27-31 img/s with 2; the demo CNN (decoding-bound) at
    180 and 184 img/s."""
    import psutil
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:            # not Linux
        cores = os.cpu_count() or 1
    busy = psutil.cpu_percent(interval=sample_s) / 100 * (os.cpu_count() or cores)
    return max(1, min(cores, round(cores - busy)))


def config_workers(config: ExtractConfig) -> int:
    """The number of decoding worker processes: ``config.workers`` or the default."""
    return default_workers() if config.workers is None else config.workers


class torch_threads:
    """Set torch's intra-op threads for a CPU run, restoring them afterwards."""

    def __init__(self, config: ExtractConfig, device: torch.device):
        auto = default_threads() if device.type == "cpu" else None
        self.n = config.threads or auto
        self.chosen = config.threads is None      # the default, not --threads

    def describe(self, workers: int) -> str:
        """The log line of a CPU run: threads and decoding workers, and how to change them."""
        how = "the cores not busy now" if self.chosen else "--threads"
        return (f"forward pass on the CPU: {self.n} torch thread(s) ({how}), {workers} "
                f"image-decoding worker process(es); --threads N / --workers N to change")

    def __enter__(self):
        self.saved = torch.get_num_threads()
        if self.n:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.saved)


def _check_config(c: ExtractConfig) -> None:
    if c.compression not in COMPRESSIONS:
        raise ExtractError(f"--compression {c.compression!r}: expected one of "
                           f"{COMPRESSIONS}")
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
        if v is None:
            continue
        if len(v) != 3:
            raise ExtractError(f"{name}: expected three numbers, got {list(v)}")
        if not all(math.isfinite(float(x)) for x in v):
            raise ExtractError(f"{name} {list(v)}: every value must be a finite number")
    if c.std is not None and any(float(s) == 0 for s in c.std):
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


def _preprocessing(c: ExtractConfig, model: torch.nn.Module, image_size: tuple[int, int],
                   notes: list[str]) -> tuple[Preprocessing, dict]:
    """The preprocessing of a run: each of --input-size/--mean/--std if given, else what the
    model declares (pipeline.models.zoo.declared_preprocessing), else the dataset's image
    size and ImageNet's mean/std; plus the record of where each came from. Notes say
    when the model's values are used or overridden."""
    declared = declared_preprocessing(model)
    defaults = {"input_size": tuple(image_size), "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
    given = {"input_size": c.input_size, "mean": c.mean, "std": c.std}
    chosen, sources = {}, {}
    for key, default in defaults.items():
        flag, model_value = f"--{key.replace('_', '-')}", declared.get(key)
        if given[key] is not None:
            chosen[key], sources[key] = tuple(given[key]), flag
            if model_value is not None and tuple(model_value) != tuple(given[key]):
                notes.append(f"{flag} {list(given[key])} overrides the model's "
                             f"{list(model_value)} (its pretrained_cfg)")
        elif model_value is not None:
            chosen[key], sources[key] = tuple(model_value), "model"
            if tuple(model_value) != tuple(default):
                notes.append(f"{key} {list(model_value)} from the model (its "
                             f"pretrained_cfg; {flag} overrides)")
        else:
            chosen[key] = default
            sources[key] = "dataset" if key == "input_size" else "default (ImageNet)"
    trained = declared.get("trained_size")
    if trained and c.input_size is None and tuple(trained) != tuple(image_size):
        notes.append(f"the model was trained at {trained[0]}x{trained[1]} (its "
                     f"pretrained_cfg); extracting at the dataset's {image_size[0]}x"
                     f"{image_size[1]} (--input-size {trained[0]} to resize)")
    if declared.get("transform_input"):
        notes.append("the model's transform_input is on: it re-normalises its input from "
                     "ImageNet's mean/std to its own, so keep the ImageNet --mean/--std")
    prep = Preprocessing(tuple(int(v) for v in chosen["input_size"]),
                         tuple(float(v) for v in chosen["mean"]),
                         tuple(float(v) for v in chosen["std"]), bool(c.bgr))
    extra = {"sources": sources}
    if "transform_input" in declared:
        extra["transform_input"] = declared["transform_input"]
    return prep, extra


def module_identity(model: torch.nn.Module) -> dict:
    """What a run records of an in-memory model: ``class`` (module.qualname of its type)
    and ``fingerprint`` (:func:`pipeline.models.checkpoints.model_fingerprint`, SHA-256
    of its state_dict: names, dtypes, shapes, bytes). A resume compares both
    (pipeline/extract_run.py): the same module resumes, a changed one is refused."""
    cls = type(model)
    return {"class": f"{cls.__module__}.{cls.__qualname__}",
            "fingerprint": model_fingerprint(model)}


def _model_record(c: ExtractConfig, model: torch.nn.Module) -> dict:
    """The run's ``model`` attribute: spec, weights, seed and fingerprint; for an
    in-memory module ``source: "module"``, its class and a spec naming it."""
    if isinstance(c.model, torch.nn.Module):
        ident = module_identity(model)
        return {"spec": f"in-memory {ident['class']}", "source": "module",
                "class": ident["class"], "weights": None, "weights_key": None,
                "weights_prefix": None, "seed": None, "fingerprint": ident["fingerprint"]}
    return {"spec": str(c.model),
            "weights": str(Path(c.weights).resolve()) if c.weights else None,
            "weights_key": c.weights_key, "weights_prefix": c.weights_prefix,
            "seed": zoo_seed(str(c.model).strip()) if c.weights is None else None,
            "fingerprint": model_fingerprint(model)}


def setup_extraction(c: ExtractConfig) -> ExtractSetup:
    """Check ``c`` (a comma-separated ``c.layers`` string is split in place), open the
    dataset, load the model onto its device, choose the preprocessing and check its
    layers and their layouts (pipeline/models/layouts.py)."""
    if isinstance(c.layers, str):
        c.layers = [t.strip() for t in c.layers.split(",") if t.strip()]
    _check_config(c)
    ds = BrodenDataset(c.dataset)
    n = len(ds) if c.limit is None else min(c.limit, len(ds))
    if n == 0:
        raise ExtractError(f"--dataset {c.dataset}: index.csv has no image")
    image_size = ds.image_size()
    seg_size = ds.segmentation_size()
    device = resolve_device(c.device)
    weights = (WeightsFile(c.weights, c.weights_key, c.weights_prefix)
               if c.weights is not None else None)
    if weights is None and (c.weights_key or c.weights_prefix):
        raise ExtractError("--weights-key/--weights-prefix need --weights FILE")
    if isinstance(c.model, torch.nn.Module):
        if weights is not None or c.trust_checkpoint:
            raise ExtractError("weights=/trust_checkpoint= apply to a model spec; with an "
                               "nn.Module, load the weights into it first "
                               "(module.load_state_dict(...)) and leave weights out")
        model = c.model.eval().to(device)
    else:
        model = load_model(c.model, weights, c.trust_checkpoint).to(device)
    notes: list[str] = []
    prep, prep_extra = _preprocessing(c, model, image_size, notes)
    plan = plan_layers(model, list(c.layers), prep.input_size, device,
                       parse_layouts(list(c.layouts or [])))
    shapes = plan.shapes
    for name in c.layers:
        lay = plan.layouts[name]
        if lay.kind != "channels_first" or lay.source == "declared":
            notes.append(f"layer {name}: layout {lay.describe()} "
                         f"({'--layout' if lay.source == 'declared' else 'from the model'}), "
                         f"stored as {'x'.join(map(str, shapes[name]))} maps")
    notes += plan.warnings
    attrs = cache_acts.run_attrs(
        dataset={"path": str(Path(c.dataset).resolve()), "fingerprint": ds.fingerprint(),
                 "num_images": n, "image_size": list(image_size),
                 "seg_size": list(seg_size)},
        model=_model_record(c, model),
        layer_shapes={name: shapes[name] for name in c.layers}, dtype=c.dtype,
        preprocessing={**prep.to_attrs(), **prep_extra}, versions=_versions(),
        layer_layouts={name: plan.layouts[name].to_attrs() for name in c.layers})
    return ExtractSetup(ds, n, prep, model, device, shapes, attrs, notes, plan.layouts)
