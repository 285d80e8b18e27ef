"""Checkpoints: read a weights file, load its state_dict strictly into a model, and
fingerprint a model's weights.

A checkpoint is a plain state_dict, ``{'state_dict': ...}``, ``{'model': ...}``,
``{'model_state_dict': ...}``, ``{'net': ...}`` or a pickled ``nn.Module``; a
``module.`` prefix on every key (DataParallel) is stripped.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from pipeline.models.errors import ModelError


def read_checkpoint(path: str | Path) -> Any:
    """The object ``torch.load`` reads from ``path`` on the CPU (weights only when it can)."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"--weights {path}: file not found")
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as first:
        # Checkpoints that pickle other objects (e.g. an argparse Namespace, as some
        # published ones do) need the full unpickler; the user chose this file.
        try:
            return torch.load(str(path), map_location="cpu", weights_only=False)
        except Exception:
            raise ModelError(f"--weights {path}: not a torch checkpoint "
                             f"({type(first).__name__}: {str(first).splitlines()[0]})"
                             ) from None


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


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint: a plain state_dict, ``{'state_dict': ...}`` or
    ``{'model': ...}``; a ``module.`` prefix on every key (DataParallel) is stripped."""
    return unwrap_state_dict(read_checkpoint(path), path)


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


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Read a checkpoint (see :func:`read_state_dict`) and load it strictly."""
    apply_state_dict(model, read_state_dict(path), path)


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
