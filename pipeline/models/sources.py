"""Model sources: a model SPEC (``scripts/extract.py --model``) -> an ``nn.Module``.

A SPEC is one of:

- ``demo``: :class:`pipeline.models.demo.DemoCNN`; weights default to the committed
  checkpoint ``pipeline/demo_weights/demo_cnn.pt`` (its architecture options come from
  the checkpoint's ``config``, also when another demo checkpoint is given as weights).
- ``path/to/file.py:function`` or ``package.module:function``: a factory called with
  no arguments that returns an ``nn.Module``.
- ``torchvision:NAME`` / ``timm:NAME`` (optionally ``:key=value,...`` keyword
  arguments, e.g. ``torchvision:resnet18:num_classes=365``): an architecture with
  random weights seeded by ``seed=N`` (default 0; pass ``--weights``), see
  :mod:`pipeline.models.zoo` (which also makes torchvision import on a CPU torch).
- a model file (``.pt``/``.pth``/``.ts``/...): TorchScript (loadable by
  ``torch.jit.load``; its layers are what its ``forward`` returns, see
  :mod:`pipeline.models.hooks`) or a whole pickled ``nn.Module``. Either runs code from
  the file, so both need ``--trust-checkpoint`` (``trust``), which prints a warning.

:data:`SOURCES` is the registry: the first source whose ``matches(spec)`` is true
builds the model. A new source (e.g. Hugging Face) is one function ``spec -> nn.Module``
plus one :class:`ModelSource` entry.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from pipeline.models.checkpoints import (TRUST_FLAG, UntrustedCheckpoint, Weights,
                                         WeightsFile, load_weights, read_checkpoint,
                                         trust_warning)
from pipeline.models.demo import load_demo
from pipeline.models.errors import ModelError
from pipeline.models.zoo import build_zoo_model

TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".ptc", ".torchscript")


@dataclass(frozen=True)
class ModelSource:
    """One form of SPEC: ``matches(spec)`` says whether ``spec`` has this form;
    ``load(spec, weights, trust)`` returns the model with ``weights`` loaded (if given;
    ``trust``: --trust-checkpoint, see pipeline/models/checkpoints.py)."""
    name: str
    matches: Callable[[str], bool]
    load: Callable[[str, Weights, bool], nn.Module]


def _then_weights(build: Callable[[str], nn.Module]) -> Callable[[str, Weights], nn.Module]:
    """The loader of an architecture ``build(spec)``: the weights file, if given, is then
    loaded strictly (:func:`pipeline.models.checkpoints.load_weights`)."""
    def load(spec: str, weights: Weights, trust: bool = False) -> nn.Module:
        model = build(spec)
        if weights is not None:
            load_weights(model, weights, trust)
        return model
    return load


def _looks_like_file(spec: str) -> bool:
    p = Path(spec)
    return p.suffix.lower() in TORCHSCRIPT_SUFFIXES or (p.is_file() and ":" not in spec)


def _factory_model(spec: str) -> nn.Module:
    """``path/to/file.py:function`` or ``package.module:function``, called with no arguments."""
    target, _, func_name = spec.rpartition(":")
    if not func_name.isidentifier():
        raise ModelError(f"--model {spec!r}: {func_name!r} is not a function name; "
                         f"expected path/to/file.py:function or package.module:function")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise ModelError(f"--model {spec!r}: {path} is not a file")
        mod_name = "_netdissect_factory_" + hashlib.sha1(
            str(path.resolve()).encode()).hexdigest()[:12]
        try:
            s = importlib.util.spec_from_file_location(mod_name, path)
            module = importlib.util.module_from_spec(s)
            sys.modules[mod_name] = module      # lets pickling/dataclasses find it
            s.loader.exec_module(module)
        except Exception as e:
            sys.modules.pop(mod_name, None)
            raise ModelError(f"--model {spec!r}: importing {path} failed "
                             f"({type(e).__name__}: {e})") from e
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:
            raise ModelError(f"--model {spec!r}: cannot import module {target!r} "
                             f"({type(e).__name__}: {e}); is it on PYTHONPATH?") from e
    factory = getattr(module, func_name, None)
    if not callable(factory):
        raise ModelError(f"--model {spec!r}: {target} has no function {func_name!r}")
    try:
        model = factory()
    except Exception as e:
        raise ModelError(f"--model {spec!r}: calling {func_name}() failed "
                         f"({type(e).__name__}: {e})") from e
    if not isinstance(model, nn.Module):
        raise ModelError(f"--model {spec!r}: {func_name}() returned "
                         f"{type(model).__name__}, not a torch.nn.Module")
    return model


def _is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip holding ``<root>/constants.pkl`` or ``<root>/code/``
    (a torch.save checkpoint has neither)."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _file_model(spec: str, weights: Weights, trust: bool = False) -> nn.Module:
    """A model file: TorchScript (a program: only with ``trust``, --trust-checkpoint, after
    a warning) or a whole pickled ``nn.Module`` (read as a checkpoint: its classes need
    ``trust`` too); then ``weights``, if given."""
    path = Path(spec)
    if not path.is_file():
        raise ModelError(f"--model {spec!r}: file not found")
    if _is_torchscript(path):
        if not trust:
            raise UntrustedCheckpoint(
                f"--model {spec}: a TorchScript file is a program, and torch runs its code "
                f"when the model runs. If you trust where it comes from, pass {TRUST_FLAG}; "
                f"or give the architecture as --model and its weights as --weights (a "
                f"state_dict or .safetensors file)")
        trust_warning(path, "as TorchScript, a program that runs when the model runs")
        try:
            with warnings.catch_warnings():  # torch 2.9+: "torch.jit.load is deprecated"
                warnings.simplefilter("ignore", DeprecationWarning)
                model = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise ModelError(f"--model {spec!r}: not a TorchScript file (torch.jit.load: "
                             f"{str(e).splitlines()[0] if str(e) else type(e).__name__})"
                             ) from None
    else:
        model = read_checkpoint(path, trust, flag="--model")
        if not isinstance(model, nn.Module):
            raise ModelError(f"--model {spec!r}: not a TorchScript file or a pickled model "
                             f"(it holds a {type(model).__name__}); for a checkpoint of "
                             f"weights pass --model ARCH --weights {spec}")
    if weights is not None:
        load_weights(model, weights, trust)
    return model


def _demo(_spec: str, weights: Weights, trust: bool = False) -> nn.Module:
    if isinstance(weights, WeightsFile):
        if weights.key or weights.prefix:
            raise ModelError("--model demo reads its own checkpoint format; "
                             "--weights-key/--weights-prefix do not apply")
        weights = weights.path
    return load_demo(weights, trust)


# Checked in order: a zoo spec also contains ":" and must match before a factory spec.
SOURCES: tuple[ModelSource, ...] = (
    ModelSource("demo", lambda spec: spec == "demo", _demo),
    ModelSource("torchvision", lambda spec: spec.startswith("torchvision:"),
                _then_weights(build_zoo_model)),
    ModelSource("timm", lambda spec: spec.startswith("timm:"), _then_weights(build_zoo_model)),
    ModelSource("factory", lambda spec: ":" in spec and not _looks_like_file(spec),
                _then_weights(_factory_model)),
    ModelSource("file", _looks_like_file, _file_model),
)


def load_model(spec: str, weights: Weights = None, trust_checkpoint: bool = False
               ) -> nn.Module:
    """Build the model named by ``spec`` (module docstring), load ``weights`` if given (a
    path, or a :class:`pipeline.models.checkpoints.WeightsFile` with --weights-key and
    --weights-prefix; safely, unless ``trust_checkpoint``: pipeline/models/checkpoints.py),
    and return it on the CPU in eval mode."""
    spec = str(spec).strip()
    if not spec:
        raise ModelError("--model is empty; pass e.g. demo, path/to/file.py:function, "
                         "package.module:function, torchvision:resnet18 or a TorchScript file")
    for source in SOURCES:
        if source.matches(spec):
            return source.load(spec, weights, trust_checkpoint).eval()
    raise ModelError(
        f"--model {spec!r}: not a known form; pass demo, path/to/file.py:function, "
        f"package.module:function, torchvision:NAME, timm:NAME or a TorchScript file "
        f"({', '.join(TORCHSCRIPT_SUFFIXES)})")
