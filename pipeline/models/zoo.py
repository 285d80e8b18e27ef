"""The torchvision and timm model zoos: importing them on a CPU torch build, building a
seeded random-init architecture from a ``torchvision:NAME`` / ``timm:NAME`` spec, and the
preprocessing such a model declares.

Importing torchvision on a CPU torch: PyPI's torchvision wheel is built against a CUDA
torch; on the CPU build its C extension (``torchvision/_C.so``) does not load, and
torchvision's import then fails registering kernels for ``torchvision::nms`` ("operator
torchvision::nms does not exist"). :func:`ensure_torchvision_ops` runs before the
import (timm imports torchvision too): it loads the C extension the way torchvision
does, and only when that fails defines the two op schemas (``nms`` and ``qnms``) with
``torch.library.Library("torchvision", "DEF")``. Classification models never call these
ops; detection code that does fails with torch's "no kernel" error.

Random init is seeded: ``:seed=N`` (default 0) in the spec's arguments, so a rerun or a
resume builds the same weights (the same fingerprint); the seed is recorded in the run.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from torch import nn

from pipeline.models.errors import ModelError

ZOO_PACKAGES = ("torchvision", "timm")
DEFAULT_SEED = 0
TORCHVISION_OP_SCHEMAS = (
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
)
_torchvision_library: torch.library.Library | None = None   # kept alive: owns the schemas


def _has_schema(op: str) -> bool:
    try:
        torch._C._dispatch_find_schema_or_throw(op, "")
        return True
    except RuntimeError:
        return False


def ensure_torchvision_ops() -> str:
    """Make ``torchvision::nms``/``qnms`` exist before torchvision is imported (module
    docstring). Returns how: "present", "extension" (torchvision's _C loaded),
    "schemas" (defined here) or "no torchvision" (not installed)."""
    global _torchvision_library
    if _has_schema("torchvision::nms"):
        return "present"
    spec = importlib.util.find_spec("torchvision")   # finds, does not import
    if spec is None or not spec.submodule_search_locations:
        return "no torchvision"
    for lib in sorted(Path(list(spec.submodule_search_locations)[0]).glob("_C*.so")):
        try:
            torch.ops.load_library(str(lib))
        except (OSError, RuntimeError):
            continue
        if _has_schema("torchvision::nms"):
            return "extension"
    _torchvision_library = torch.library.Library("torchvision", "DEF")
    for schema in TORCHVISION_OP_SCHEMAS:
        _torchvision_library.define(schema)
    return "schemas"


def import_zoo(package: str, spec: str = "") -> ModuleType:
    """``torchvision`` or ``timm``, imported after :func:`ensure_torchvision_ops`.
    ``spec``: the --model value, for the message when the package is missing."""
    ensure_torchvision_ops()
    try:
        return importlib.import_module(package)
    except Exception as e:
        raise ModelError(f"--model {spec or package!r} needs the {package} package, which "
                         f"is not installed or does not import here ({type(e).__name__}: "
                         f"{e}); install it with `pip install --no-deps {package}==VERSION` "
                         f"(the Makefile's setup pins one), or use a factory spec "
                         f"(file.py:function)") from None


def parse_kwargs(text: str, spec: str) -> dict[str, Any]:
    """``k=v,k2=v2`` -> {k: literal or string}; a part without ``=`` is refused."""
    kwargs: dict[str, Any] = {}
    for part in filter(None, (t.strip() for t in text.split(","))):
        key, eq, val = part.partition("=")
        if not eq or not key.strip().isidentifier():
            raise ModelError(f"--model {spec!r}: expected key=value arguments after the "
                             f"name, got {part!r}")
        try:
            kwargs[key.strip()] = ast.literal_eval(val.strip())
        except (ValueError, SyntaxError):
            kwargs[key.strip()] = val.strip()
    return kwargs


def split_zoo_spec(spec: str) -> tuple[str, str, dict[str, Any], int]:
    """``PACKAGE:NAME[:k=v,...]`` -> (package, name, kwargs without seed, seed)."""
    package, _, rest = spec.partition(":")
    name, _, args = rest.partition(":")
    kwargs = parse_kwargs(args, spec)
    seed = kwargs.pop("seed", DEFAULT_SEED)
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ModelError(f"--model {spec!r}: seed={seed!r} must be an integer >= 0")
    if not name:
        raise ModelError(f"--model {spec!r}: no architecture name; e.g. {package}:resnet18")
    return package, name, kwargs, seed


def zoo_seed(spec: str) -> int | None:
    """The random-init seed of a zoo spec (None for other specs)."""
    if spec.partition(":")[0] not in ZOO_PACKAGES:
        return None
    return split_zoo_spec(spec)[3]


def build_zoo_model(spec: str) -> nn.Module:
    """``torchvision:NAME[:k=v,...]`` or ``timm:NAME[:k=v,...]`` with random weights drawn
    from torch's generator seeded with ``seed`` (default 0); the global RNG is restored."""
    package, name, kwargs, seed = split_zoo_spec(spec)
    mod = import_zoo(package, spec)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        try:
            if package == "torchvision":
                return mod.models.get_model(name, weights=None, **kwargs)
            return mod.create_model(name, pretrained=False, **kwargs)
        except Exception as e:
            raise ModelError(f"--model {spec!r}: {package} cannot build {name!r} "
                             f"({type(e).__name__}: {e})") from None


def declared_preprocessing(model: nn.Module) -> dict[str, Any]:
    """What the model says about its input: "mean", "std" (RGB, 0..1 scale) from timm's
    ``pretrained_cfg``; "input_size" (H, W) only where the model runs at no other size (a
    strict ``patch_embed.img_size``, e.g. timm ViTs and Swin, else ``pretrained_cfg`` with
    ``fixed_input_size``), "trained_size" (H, W) otherwise; "transform_input" (bool) for
    torchvision's GoogLeNet/Inception3 (which then re-normalise ImageNet-normalised input
    themselves); {} when the model says nothing."""
    out: dict[str, Any] = {}
    cfg = getattr(model, "pretrained_cfg", None)
    cfg = cfg if isinstance(cfg, dict) else {}
    if _three(cfg.get("mean")) and _three(cfg.get("std")):
        out["mean"] = tuple(float(v) for v in cfg["mean"])
        out["std"] = tuple(float(v) for v in cfg["std"])
    size = cfg.get("input_size")
    size = (int(size[1]), int(size[2])) if _three(size) else None
    pe = getattr(model, "patch_embed", None)
    strict = getattr(pe, "strict_img_size", False) and not getattr(pe, "dynamic_img_size",
                                                                    False)
    if strict and isinstance(getattr(pe, "img_size", None), (tuple, list)):
        out["input_size"] = tuple(int(v) for v in pe.img_size)
    elif size and cfg.get("fixed_input_size"):
        out["input_size"] = size
    elif size:
        out["trained_size"] = size
    if isinstance(getattr(model, "transform_input", None), bool):
        out["transform_input"] = bool(model.transform_input)
    return out


def _three(v: Any) -> bool:
    return isinstance(v, (tuple, list)) and len(v) == 3
