"""A run from a notebook: :func:`extract` (a model object or a spec -> the activation
cache) and :class:`Run`, the handle of a run directory (its layers, shapes, arrays)."""
from __future__ import annotations

import contextlib
import dataclasses
import os
from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from cache import store
from pipeline.extract import ExtractStats, extract_with_stats
from pipeline.extract_config import ExtractConfig

Log = Callable[[str], None]
#: ExtractConfig's options that extract() takes as keywords (the others are arguments).
EXTRACT_OPTIONS = tuple(f.name for f in dataclasses.fields(ExtractConfig)
                        if f.name not in ("dataset", "model", "layers", "out", "progress"))


def silent(_message: str) -> None:
    """A log that drops every line."""


def chosen_log(progress: bool, log: Log | None) -> Log:
    """``log`` when given, else print with ``progress`` and nothing without."""
    if log is not None:
        return log
    return print if progress else silent


@dataclasses.dataclass
class Run:
    """A run directory (or fsspec URL) written by extraction.

    path: where it is; extraction: what the :func:`extract` call that returned this
    handle did (None for a handle from ``Run(path)``)."""
    path: Path | str
    extraction: ExtractStats | None = None

    def __post_init__(self):
        self.path = store.location(self.path)
        self._group = store.open_run(self.path, mode="r")

    @property
    def attrs(self) -> dict:
        """The run's root attributes (model, dataset, preprocessing, layers, ...)."""
        return store.read_run_attrs(self._group)

    @property
    def layers(self) -> list[str]:
        return store.layer_names(self._group)

    @property
    def shapes(self) -> dict[str, tuple[int, int, int]]:
        """layer -> (K, h, w): units and map size."""
        return {layer: tuple(int(v) for v in store.activations(self._group, layer).shape[1:])
                for layer in self.layers}

    @property
    def num_images(self) -> int:
        return int(self.attrs["dataset"]["num_images"])

    def activations(self, layer: str, dask: bool = False):
        """The layer's activation maps (N, K, h, w) float16 (or float32): the Zarr array,
        or with ``dask`` a dask array over its chunks."""
        store.check_layer(self._group, layer)
        arr = store.activations(self._group, layer)
        if dask:
            import dask.array as da
            return da.from_zarr(arr)
        return arr

    def maxima(self, layer: str):
        """Per-image maxima of every unit's map (N, K) float32 (a Zarr array)."""
        store.check_layer(self._group, layer)
        return store.maxima(self._group, layer)

    def score(self, layer=None, **options):
        """:func:`pipeline.api.score` of this run."""
        from pipeline.api.results import score
        return score(self, layer, **options)

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {'x'.join(map(str, v))}" for k, v in self.shapes.items())
        return f"Run({str(self.path)!r}, {self.num_images} images, {shapes})"


def as_run(run: "Run | str | os.PathLike") -> Run:
    """A Run handle of ``run`` (a handle, a path or a URL)."""
    return run if isinstance(run, Run) else Run(run)


@contextlib.contextmanager
def lent(model) -> Iterator[None]:
    """Give back an in-memory module as it was: extraction puts it in eval mode and on
    the device; afterwards every submodule's training flag is restored and, when it
    was on one device, the module is moved back there. Specs pass through."""
    if not isinstance(model, torch.nn.Module):
        yield
        return
    training = [(m, m.training) for m in model.modules()]
    devices = {t.device for t in list(model.parameters()) + list(model.buffers())}
    try:
        yield
    finally:
        for m, flag in training:
            m.training = flag
        if len(devices) == 1:
            model.to(next(iter(devices)))


def extract(model: "torch.nn.Module | str", dataset: str | os.PathLike,
            layers: "str | Sequence[str]", out: str | os.PathLike, *,
            progress: bool = False, log: Log | None = None, **options) -> Run:
    """Extract (or resume, or find complete) the activation cache of ``layers`` of
    ``model`` over the Broden directory ``dataset`` into the run ``out``; return its
    :class:`Run`.

    model: an ``nn.Module`` (used as it is, its training mode and device given back
    afterwards; the run records its class and a SHA-256 of its state_dict, so a resume
    with the same module continues and one with a changed module is refused) or a
    spec string as ``--model`` takes (``demo``, ``torchvision:resnet18``, ``file.py:fn``).
    layers: module names (a list or ``"a,b"``). options: the other fields of
    :class:`pipeline.extract_config.ExtractConfig` (``batch_size``, ``workers``,
    ``device``, ``dtype``, ``input_size``, ``mean``, ``std``, ``limit``, ``overwrite``,
    ``weights`` (specs only), ...). Without explicit ``input_size``/``mean``/``std`` the
    preprocessing is the model's own where it declares one (timm), else the dataset's
    image size and ImageNet's mean/std. progress: tqdm bars and the log lines (else
    silent); log: where log lines go instead."""
    unknown = sorted(set(options) - set(EXTRACT_OPTIONS))
    if unknown:
        raise TypeError(f"extract(): unknown option(s) {unknown}; the options are "
                        f"{list(EXTRACT_OPTIONS)}")
    config = ExtractConfig(dataset=dataset, model=model, layers=layers, out=out,
                           progress=progress, **options)
    with lent(model):
        stats = extract_with_stats(config, chosen_log(progress, log))
    return Run(stats.path, stats)
