"""Checkpoints are untrusted data (pipeline/models/checkpoints.py): a file whose unpickling
would run code is refused without running it, loads only with --trust-checkpoint (and a
warning), and the harmless extras that published checkpoints carry load without it."""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.models.checkpoints import UntrustedCheckpoint, WeightsFile, read_checkpoint
from pipeline.models.errors import ModelError
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


# ------------------------------------------------- checkpoints as the field ships them
def _prefixed(sd: dict, prefix: str) -> dict:
    return {prefix + k: v for k, v in sd.items()}


def _loads(m, sd) -> bool:
    return all(torch.equal(m.state_dict()[k], sd[k]) for k in sd)


@pytest.mark.parametrize("fmt", ["lightning", "mmpretrain", "moco", "encoder", "ddp_safetensors",
                                 "nested"])
def test_common_prefixes_are_stripped_when_they_fit_exactly(tmp_path, fmt):
    sd = _weights(0.75)
    obj = {"lightning": {"state_dict": _prefixed(sd, "model."), "epoch": 3,
                         "optimizer_states": [{}], "hyper_parameters": {"lr": 0.1}},
           "mmpretrain": {"meta": {"epoch": 1}, "state_dict": _prefixed(sd, "backbone.")},
           "moco": {"state_dict": {**_prefixed(sd, "module.encoder_q."),
                                   **_prefixed(sd, "module.encoder_k."),
                                   "module.queue": torch.zeros(4, 8)}, "arch": "tiny"},
           "encoder": _prefixed(sd, "encoder."),
           "ddp_safetensors": _prefixed(sd, "module."),
           "nested": {"model": {"weights": _prefixed(sd, "model.")}}}[fmt]
    path = tmp_path / ("w.safetensors" if fmt == "ddp_safetensors" else "w.pth")
    if fmt == "ddp_safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in obj.items()}, str(path))
    else:
        torch.save(obj, path)
    assert _loads(load_model(TINY, weights=path), sd)


def test_a_prefix_that_does_not_fit_exactly_is_not_taken(tmp_path):
    sd = _weights(0.75)
    with_head = tmp_path / "mm_head.pth"      # the backbone fits exactly: its head is dropped
    torch.save({"state_dict": {**_prefixed(sd, "backbone."),
                               "head.fc.weight": torch.zeros(2, 2)}}, with_head)
    assert _loads(load_model(TINY, weights=with_head), sd)
    no_fc = {k: v for k, v in sd.items() if not k.startswith("fc.")}
    path = tmp_path / "mm.pth"                # the backbone lacks fc: not taken
    torch.save({"state_dict": {**_prefixed(no_fc, "backbone."),
                               "head.fc.weight": torch.zeros(2, 2)}}, path)
    with pytest.raises(ModelError) as e:
        load_model(TINY, weights=path)
    msg = str(e.value)
    assert "try --weights-prefix backbone." in msg and "closest: backbone.features.0" in msg
    assert "num_classes" not in msg
    with pytest.raises(ModelError, match=r"2 key\(s\) missing from the checkpoint: fc.weight, "
                                         r"fc.bias"):
        load_model(TINY, weights=WeightsFile(path, prefix="backbone."))
    with pytest.raises(ModelError, match=r"no key starts with --weights-prefix 'neck\.'.*"
                                         r"backbone\., head\."):
        load_model(TINY, weights=WeightsFile(path, prefix="neck."))


def test_several_sets_of_weights_need_weights_key(tmp_path):
    student, teacher = _weights(0.1), _weights(0.2)
    path = tmp_path / "dino.pth"
    torch.save({"student": _prefixed(student, "module.backbone."),
                "teacher": _prefixed(teacher, "backbone."), "epoch": 100,
                "optimizer": {"state": {}, "param_groups": [{"lr": 0.1}]}}, path)
    with pytest.raises(ModelError, match=r"several sets of weights: student, teacher; "
                                         r"choose one with --weights-key \(e.g. "
                                         r"--weights-key teacher\)"):
        load_model(TINY, weights=path)
    assert _loads(load_model(TINY, weights=WeightsFile(path, key="teacher")), teacher)
    m = load_model(TINY, weights=WeightsFile(path, key="student", prefix="module.backbone."))
    assert _loads(m, student)
    with pytest.raises(ModelError, match=r"no entry 'teachr' \(--weights-key\); entries "
                                         r"holding weights: student, teacher.*closest: teacher"):
        load_model(TINY, weights=WeightsFile(path, key="teachr"))
    timm_path = tmp_path / "timm.pth.tar"
    ema = _weights(0.3)
    torch.save({"epoch": 9, "state_dict": _weights(0.4), "state_dict_ema": ema,
                "args": argparse.Namespace(model="tiny")}, timm_path)
    with pytest.raises(ModelError, match="state_dict, state_dict_ema"):
        load_model(TINY, weights=timm_path)
    assert _loads(load_model(TINY, weights=WeightsFile(timm_path, key="state_dict_ema")), ema)
    nested = tmp_path / "nested.pth"
    torch.save({"model": {"ema": ema, "raw": _weights(0.5)}}, nested)
    assert _loads(load_model(TINY, weights=WeightsFile(nested, key="model.ema")), ema)
    with pytest.raises(ModelError, match="model.ema, model.raw"):
        load_model(TINY, weights=nested)


def test_weights_options_do_not_apply_to_demo(tmp_path):
    with pytest.raises(ModelError, match="do not apply"):
        load_model("demo", weights=WeightsFile(tmp_path / "x.pt", key="teacher"))


def test_a_different_architecture_lists_the_keys_found(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"stem.weight": torch.zeros(1), "head.weight": torch.zeros(1)}, path)
    with pytest.raises(ModelError) as e:
        load_model(TINY, weights=path)
    msg = str(e.value)
    assert "the checkpoint's keys: stem.weight, head.weight" in msg
    assert "--weights-key/--weights-prefix" in msg and "num_classes" not in msg
