"""Checkpoints: read a weights file safely, load its state_dict strictly into a model, and
fingerprint a model's weights.

A checkpoint is a plain state_dict, ``{'state_dict': ...}``, ``{'model': ...}``,
``{'model_state_dict': ...}``, ``{'net': ...}``, a ``.safetensors`` file, or (trusted
only) a pickled ``nn.Module``; a ``module.`` prefix on every key (DataParallel) is
stripped.

A downloaded checkpoint is untrusted data: unpickling can run any code the file names.
So files are read with torch's safe loader (``weights_only=True``) only, which creates
tensors, containers and the harmless types of :data:`SAFE_GLOBALS` (an argparse
Namespace, as timm and many training scripts save; numpy scalars, dtypes and arrays).
A file that asks for anything else is refused (:class:`UntrustedCheckpoint`, naming the
types) unless the user passes ``--trust-checkpoint``, which loads it with the full
unpickler after a warning on stderr.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from pipeline.models.errors import ModelError

TRUST_FLAG = "--trust-checkpoint"


def _numpy_globals() -> list:
    """numpy's scalar, dtype and array reconstruction types (numpy 1 and 2 paths)."""
    try:
        from numpy._core import multiarray
    except ImportError:                             # numpy < 2
        from numpy.core import multiarray           # type: ignore[no-redef]
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [multiarray.scalar, multiarray._reconstruct, np.ndarray, np.dtype, *dtypes]


SAFE_GLOBALS: list = [argparse.Namespace, *_numpy_globals()]


class UntrustedCheckpoint(ModelError):
    """A checkpoint asks the unpickler for types outside :data:`SAFE_GLOBALS`."""


def trust_warning(path: str | Path, what: str) -> None:
    """The stderr warning of --trust-checkpoint: ``path`` is loaded ``what``."""
    print(f"warning: {TRUST_FLAG}: loading {path} {what}", file=sys.stderr)


def read_checkpoint(path: str | Path, trust: bool = False, flag: str = "--weights") -> Any:
    """The object in the checkpoint at ``path``, on the CPU (module docstring).
    ``trust``: a file the safe loader refuses is loaded with the full unpickler (which
    runs whatever code it names), after a warning on stderr; ``flag`` is the option that
    named the file (in messages)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{flag} {path}: file not found")
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        with torch.serialization.safe_globals(SAFE_GLOBALS):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        unsafe = _unsafe_globals(path, e)
        if not unsafe:
            raise ModelError(f"{flag} {path}: not a torch checkpoint "
                             f"({str(e).splitlines()[0]})") from None
        if not trust:
            raise UntrustedCheckpoint(
                f"{flag} {path}: the checkpoint asks the unpickler for "
                f"{', '.join(unsafe)}, which the safe loader does not create (unpickling "
                f"them can run code from the file). Save its state_dict (or a "
                f".safetensors file) instead, or, if you trust where the file comes from, "
                f"pass {TRUST_FLAG} to load it with the full unpickler") from None
        trust_warning(path, f"with the full unpickler, which runs any code the file names "
                            f"(it asks for {', '.join(unsafe)})")
        try:
            return torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception as full:
            raise ModelError(f"{flag} {path}: the full unpickler failed too "
                             f"({type(full).__name__}: {full})") from None
    except Exception as e:                              # noqa: BLE001 - not a checkpoint
        first = str(e).splitlines()[0] if str(e) else ""
        raise ModelError(f"{flag} {path}: not a torch checkpoint "
                         f"({type(e).__name__}: {first})") from None


def _unsafe_globals(path: Path, error: Exception) -> list[str]:
    """The globals outside SAFE_GLOBALS that a checkpoint names: listed from the file
    (zip checkpoints), else the one torch's refusal names (legacy format)."""
    allowed = {f"{g.__module__}.{g.__qualname__}" for g in SAFE_GLOBALS}
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:                                   # noqa: BLE001 - legacy format
        names = re.findall(r"GLOBAL ([\w.]+)", str(error))
    return sorted(n for n in set(names) if n not in allowed)


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file (tensors only: nothing in it can run)."""
    try:
        from safetensors.torch import load_file
    except ImportError:
        raise ModelError(f"{path}: reading .safetensors needs the safetensors "
                         f"package (pip install safetensors)") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:                              # noqa: BLE001
        raise ModelError(f"{path}: not a safetensors file ({e})") from None


def unwrap_state_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
    """The name -> tensor dict inside a checkpoint object (module docstring)."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict", "net"):
            inner = obj.get(key)
            if isinstance(inner, nn.Module):
                inner = inner.state_dict()
            if isinstance(inner, Mapping) and inner and all(
                    isinstance(v, torch.Tensor) for v in inner.values()):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise ModelError(f"--weights {path}: holds no state_dict (expected a dict of "
                         f"tensors, or a dict with a 'state_dict' or 'model' entry)")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):   # DataParallel checkpoints
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def read_state_dict(path: str | Path, trust: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint: a plain state_dict, ``{'state_dict': ...}`` or
    ``{'model': ...}``; a ``module.`` prefix on every key (DataParallel) is stripped.
    ``trust``: as :func:`read_checkpoint`."""
    return unwrap_state_dict(read_checkpoint(path, trust), path)


def apply_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], path: str | Path
                     ) -> None:
    """Load ``sd`` into ``model`` strictly; mismatches raise ModelError listing a few."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        def few(xs):
            return ", ".join(xs[:5]) + (f" (and {len(xs) - 5} more)" if len(xs) > 5 else "")
        parts = []
        if missing:
            parts.append(f"{len(missing)} key(s) missing from the checkpoint: {few(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {few(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {few(shapes)}")
        raise ModelError(f"--weights {path} does not fit the model: " + "; ".join(parts)
                         + " (check the architecture, e.g. num_classes, matches the checkpoint)")
    with torch.no_grad():
        model.load_state_dict({k: v for k, v in sd.items()}, strict=False)


def load_weights(model: nn.Module, path: str | Path, trust: bool = False) -> None:
    """Read a checkpoint (see :func:`read_state_dict`) and load it strictly."""
    apply_state_dict(model, read_state_dict(path, trust), path)


def model_fingerprint(model: nn.Module) -> str:
    """sha256 over the state_dict in key order: each name, dtype, shape and raw bytes."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(json.dumps(list(t.shape)).encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
