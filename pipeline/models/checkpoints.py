"""Checkpoints: read a weights file safely, load its state_dict strictly into a model, and
fingerprint a model's weights.

A checkpoint is a plain state_dict, a dict with one entry that holds it (``state_dict``,
``model``, ``model_state_dict``, ``net``, ... at most two levels deep), a ``.safetensors``
file, or (trusted only) a pickled ``nn.Module``. A dict holding several sets of weights
(DINO ``student``/``teacher``, timm ``state_dict``/``state_dict_ema``) needs
``--weights-key`` and is refused listing them. Key prefixes: ``--weights-prefix P`` strips
``P``; without it a prefix of :data:`COMMON_PREFIXES` is stripped only when the stripped
keys are exactly the model's. A mismatch lists the keys on both sides, the closest match
(difflib) and the prefix that would fit.

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
import difflib
import hashlib
import json
import pickle
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from pipeline.models.errors import ModelError

TRUST_FLAG = "--trust-checkpoint"
# entries that conventionally hold the weights (suggested first when there are several)
NESTED_KEYS = ("state_dict", "model", "model_state_dict", "net", "teacher", "state_dict_ema",
               "model_ema")
# prefixes tried when the keys do not fit as they are (longest first where nested):
# DataParallel/DDP, Lightning, mmpretrain, MoCo's query encoder, encoder-wrapped models
COMMON_PREFIXES = ("module.encoder_q.", "module.", "model.", "backbone.", "encoder.")


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


@dataclass(frozen=True)
class WeightsFile:
    """A --weights file and how to find the model's tensors in it: ``key`` (--weights-key:
    the entry holding them, e.g. ``teacher`` or ``state_dict_ema``; dots descend into
    nested dicts) and ``prefix`` (--weights-prefix: stripped from the keys that have it;
    the others are dropped)."""
    path: str | Path
    key: str | None = None
    prefix: str | None = None


Weights = str | Path | WeightsFile | None


def as_weights_file(weights: str | Path | WeightsFile) -> WeightsFile:
    return weights if isinstance(weights, WeightsFile) else WeightsFile(weights)


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _tensor_dict(obj: Any) -> Any:
    return obj.state_dict() if isinstance(obj, nn.Module) else obj


def _candidates(obj: Mapping, where: str = "") -> list[str]:
    """The (dotted) keys of ``obj`` whose entries are name -> tensor dicts (or modules),
    two levels deep."""
    found = []
    for k, v in obj.items():
        v = _tensor_dict(v)
        if _is_tensor_dict(v):
            found.append(f"{where}{k}")
        elif isinstance(v, Mapping) and not where:
            found += _candidates(v, f"{k}.")
    return found


def _entry(obj: Mapping, key: str) -> Any:
    """``obj[key]``, or for a dotted key the nested entry; KeyError if absent."""
    if key in obj:
        return _tensor_dict(obj[key])
    head, dot, rest = key.partition(".")
    if dot and isinstance(obj.get(head), Mapping):
        return _entry(obj[head], rest)
    raise KeyError(key)


def _closest(word: str, options: list[str], n: int = 3) -> str:
    near = difflib.get_close_matches(word, options, n=n, cutoff=0.4)
    return f"; closest: {', '.join(near)}" if near else ""


def unwrap_state_dict(obj: Any, path: str | Path, key: str | None = None
                      ) -> dict[str, torch.Tensor]:
    """The name -> tensor dict inside a checkpoint object (module docstring): the entry
    ``key`` if given, else the object itself, else its one entry that is a tensor dict;
    several such entries without ``key`` are refused, listing them."""
    obj = _tensor_dict(obj)
    where = f"--weights {path}"
    if key is not None:
        if not isinstance(obj, Mapping):
            raise ModelError(f"{where}: --weights-key {key!r} given, but the file holds a "
                             f"{type(obj).__name__}, not a dict")
        try:
            obj = _entry(obj, key)
        except KeyError:
            cands = _candidates(obj)
            raise ModelError(f"{where}: no entry {key!r} (--weights-key); entries holding "
                             f"weights: {', '.join(cands) or 'none'}; top-level keys: "
                             f"{', '.join(map(str, list(obj)[:20]))}"
                             f"{_closest(key, cands or [str(k) for k in obj])}") from None
    elif isinstance(obj, Mapping) and not _is_tensor_dict(obj):
        cands = _candidates(obj)
        preferred = [k for k in NESTED_KEYS if k in cands]
        if len(cands) > 1:
            raise ModelError(f"{where} holds several sets of weights: {', '.join(cands)}; "
                             f"choose one with --weights-key (e.g. --weights-key "
                             f"{(preferred or cands)[0]})")
        if cands:
            obj = _entry(obj, cands[0])
    if not _is_tensor_dict(obj):
        keys = list(obj)[:20] if isinstance(obj, Mapping) else []
        raise ModelError(f"{where}: holds no state_dict (expected a dict of tensors, or a "
                         f"dict with one entry holding them, e.g. 'state_dict' or 'model')"
                         + (f"; its keys: {', '.join(map(str, keys))}" if keys else ""))
    return dict(obj)


def _meaningful(keys) -> set[str]:
    return {k for k in keys if not k.endswith("num_batches_tracked")}


def strip_prefix(sd: Mapping[str, torch.Tensor], own_keys, prefix: str | None, path
                 ) -> tuple[dict[str, torch.Tensor], str | None]:
    """(state_dict for the model, the prefix stripped or None). ``prefix`` given: the keys
    that start with it, stripped (none do: refused, naming the prefixes found). Not given:
    the keys as they are when they fit ``own_keys``, else the first of
    :data:`COMMON_PREFIXES` whose stripped keys are exactly the model's; else unchanged."""
    if prefix:
        kept = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
        if not kept:
            found = sorted({k.split(".")[0] + "." for k in sd if "." in k})
            raise ModelError(f"--weights {path}: no key starts with --weights-prefix "
                             f"{prefix!r}; the keys start with {', '.join(found[:10])} "
                             f"(e.g. {next(iter(sd))!r})")
        return kept, prefix
    own = _meaningful(own_keys)
    if _meaningful(sd) == own:
        return dict(sd), None
    for p in COMMON_PREFIXES:
        kept = {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
        if kept and _meaningful(kept) == own:
            return kept, p
    return dict(sd), None


def read_state_dict(path: str | Path, trust: bool = False, key: str | None = None
                    ) -> dict[str, torch.Tensor]:
    """Tensors of a checkpoint (:func:`unwrap_state_dict`), before any prefix is stripped.
    ``trust``: as :func:`read_checkpoint`."""
    return unwrap_state_dict(read_checkpoint(path, trust), path, key)


def _few(xs: list[str], n: int = 5) -> str:
    return ", ".join(xs[:n]) + (f" (and {len(xs) - n} more)" if len(xs) > n else "")


def _prefix_hint(missing: list[str], unexpected: list[str]) -> str:
    """A --weights-prefix that would turn unexpected keys into missing ones, if any."""
    found: dict[str, int] = {}
    wanted = set(missing)
    for u in unexpected:
        for i in range(len(u)):
            if u[i - 1:i] == "." and u[i:] in wanted:
                found[u[:i]] = found.get(u[:i], 0) + 1
                break
    if not found:
        return ""
    best = max(found, key=found.get)
    return f"; the checkpoint's keys carry a prefix: try --weights-prefix {best}"


def apply_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], path: str | Path
                     ) -> None:
    """Load ``sd`` into ``model`` strictly; mismatches raise ModelError listing a few keys
    of each kind, the closest checkpoint key to a missing one (difflib) and, when the
    keys differ by a prefix, the --weights-prefix to pass."""
    own = model.state_dict()
    missing = [k for k in own if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in own]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and tuple(sd[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"{len(missing)} key(s) missing from the checkpoint: "
                         f"{_few(missing)}{_closest(missing[0], list(sd), 1)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
        if shapes:
            parts.append(f"{len(shapes)} shape mismatch(es): {_few(shapes)}")
        hint = _prefix_hint(missing, unexpected)
        if not hint and shapes and not missing:
            hint = " (check the architecture's options, e.g. num_classes, match the checkpoint)"
        elif not hint:
            hint = (f"; the checkpoint's keys: {_few(list(sd), 8)} (a different architecture,"
                    f" or pass --weights-key/--weights-prefix)")
        raise ModelError(f"--weights {path} does not fit the model: " + "; ".join(parts)
                         + hint)
    with torch.no_grad():
        model.load_state_dict(dict(sd), strict=False)


def load_weights(model: nn.Module, weights: str | Path | WeightsFile, trust: bool = False
                 ) -> str | None:
    """Read a checkpoint (:class:`WeightsFile`, :func:`read_state_dict`), strip a prefix
    (:func:`strip_prefix`) and load it strictly. Returns the prefix stripped (or None)."""
    w = as_weights_file(weights)
    sd = read_state_dict(w.path, trust, w.key)
    sd, prefix = strip_prefix(sd, model.state_dict().keys(), w.prefix, w.path)
    apply_state_dict(model, sd, w.path)
    return prefix


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
