"""Checkpoints are untrusted data (pipeline/models/checkpoints.py): a file whose unpickling
would run code is refused without running it, loads only with --trust-checkpoint (and a
warning), and the harmless extras that published checkpoints carry load without it."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.models.checkpoints import UntrustedCheckpoint, read_checkpoint
from pipeline.models.sources import load_model
import scoring_fixtures as sf

TINY = sf.TINY


def leave_marker(path: str) -> int:
    """What a hostile checkpoint runs when unpickled: it creates a file."""
    Path(path).write_text("code from the checkpoint ran")
    return 0


class Hostile:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (leave_marker, (self.marker,))


def _weights(scale: float = 0.5) -> dict[str, torch.Tensor]:
    m = load_model(TINY)
    return {k: v + scale for k, v in m.state_dict().items()}


def test_hostile_checkpoint_is_refused_and_never_runs(tmp_path, capsys):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "hostile.pth"
    torch.save({"state_dict": _weights(), "extra": Hostile(marker)}, path)
    with pytest.raises(UntrustedCheckpoint) as e:
        load_model(TINY, weights=path)
    msg = str(e.value)
    assert str(path) in msg and "leave_marker" in msg and "--trust-checkpoint" in msg
    assert not marker.exists()

    m = load_model(TINY, weights=path, trust_checkpoint=True)      # the user's choice
    assert marker.exists()
    err = capsys.readouterr().err
    assert "warning: --trust-checkpoint" in err and str(path) in err and "leave_marker" in err
    sd = _weights()
    assert all(torch.equal(m.state_dict()[k], sd[k]) for k in sd)


def test_allow_listed_extras_load_without_trust(tmp_path, capsys):
    path = tmp_path / "timm_style.pth.tar"
    torch.save({"state_dict": _weights(), "args": argparse.Namespace(lr=0.1, model="tiny"),
                "epoch": np.int64(7), "best": np.float32(51.5), "hist": np.arange(4),
                "dtype": np.dtype("float32")}, path)
    obj = read_checkpoint(path)
    assert obj["args"].lr == 0.1 and int(obj["epoch"]) == 7
    np.testing.assert_array_equal(obj["hist"], np.arange(4))
    m = load_model(TINY, weights=path)
    sd = _weights()
    assert all(torch.equal(m.state_dict()[k], sd[k]) for k in sd)
    assert "warning" not in capsys.readouterr().err


def test_safetensors_weights_load(tmp_path):
    from safetensors.torch import save_file
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in _weights(0.25).items()}, str(path))
    m = load_model(TINY, weights=path)
    sd = _weights(0.25)
    assert all(torch.equal(m.state_dict()[k], sd[k]) for k in sd)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(Exception, match="not a safetensors file"):
        load_model(TINY, weights=tmp_path / "bad.safetensors")


def test_whole_pickled_module_needs_trust(tmp_path, capsys):
    path = tmp_path / "whole.pt"
    torch.save(load_model(TINY), path)
    with pytest.raises(UntrustedCheckpoint, match="TinyNet"):
        load_model(TINY, weights=path)
    with pytest.raises(UntrustedCheckpoint, match=r"--model .*whole.pt.*TinyNet"):
        load_model(str(path))                       # a whole model as --model: the same
    assert "warning" not in capsys.readouterr().err
    m = load_model(str(path), trust_checkpoint=True)
    assert "warning: --trust-checkpoint" in capsys.readouterr().err
    sd = load_model(TINY).state_dict()
    assert all(torch.equal(m.state_dict()[k], sd[k]) for k in sd)


def test_torchscript_model_is_a_program_and_needs_trust(tmp_path, capsys):
    path = tmp_path / "program.pt"
    feats = load_model(TINY).features
    torch.jit.trace(feats, torch.zeros(1, 3, 16, 16)).save(str(path))
    with pytest.raises(UntrustedCheckpoint) as e:
        load_model(str(path))
    assert "TorchScript file is a program" in str(e.value) and "--trust-checkpoint" in str(e.value)
    assert "warning" not in capsys.readouterr().err
    m = load_model(str(path), trust_checkpoint=True)
    err = capsys.readouterr().err
    assert "warning: --trust-checkpoint" in err and str(path) in err and "TorchScript" in err
    x = torch.randn(2, 3, 16, 16)
    assert torch.equal(m(x), feats(x))


@pytest.mark.slow
def test_extract_refuses_a_hostile_checkpoint_with_exit_2(tiny_data, tmp_path):
    marker = tmp_path / "marker.txt"
    path = tmp_path / "hostile.pth"
    torch.save({"state_dict": _weights(), "extra": Hostile(marker)}, path)
    r = sf.cli("scripts/extract.py", "--dataset", tiny_data, "--model", TINY, "--weights", path,
               "--layers", "features.2", "--input-size", "26", "--out", tmp_path / "run",
               "--workers", "0", "--quiet", check=False)
    assert r.returncode == 2, r.stderr
    assert "--trust-checkpoint" in r.stderr and "leave_marker" in r.stderr
    assert not marker.exists() and "Traceback" not in r.stderr
