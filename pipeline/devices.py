"""Which torch device a --device argument means."""
from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A --device value that is malformed or names a device this machine lacks."""


def check_device(device: str, local: bool = True) -> None:
    """DeviceError now, before any work, for a --device that is malformed or (``local``:
    counted on this machine, not on a cluster's workers) names a device this machine
    lacks."""
    if device == "auto":
        return
    if local:
        resolve_device(device)
        return
    try:
        torch.device(device)
    except RuntimeError:
        raise DeviceError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cpu', 'cuda', 'cuda:N' as given.
    Errors name the argument and what to pass instead."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise DeviceError(f"--device {device!r}: expected auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"--device {device}: CUDA is not available in this torch build "
                          f"({torch.__version__}); use --device cpu or auto")
    return dev
