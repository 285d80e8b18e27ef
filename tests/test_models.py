"""Model specs, checkpoint variants, fingerprints, layer capture, the demo CNN."""
from __future__ import annotations

import importlib
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from pipeline.models.checkpoints import model_fingerprint
from pipeline.models.demo import DEMO_WEIGHTS, DemoCNN, DemoConfig, save_demo_checkpoint
from pipeline.models.errors import LayerError, ModelError
from pipeline.models.hooks import LayerCapture, conv_layer_names, module_outputs, resolve_layers
from pipeline.models.sources import load_model

FACTORIES = Path(__file__).with_name("model_factories.py")
TINY = f"{FACTORIES}:tiny_net"


def _outputs(model, x):
    with torch.no_grad():
        return model(x)


# ---------------------------------------------------------------------- specs
def test_factory_by_file_path_and_by_module_path():
    m = load_model(TINY)
    assert type(m).__name__ == "TinyNet" and not m.training
    m2 = load_model("pipeline.models.demo:DemoCNN")
    assert isinstance(m2, DemoCNN) and not m2.training
    with pytest.raises(ModelError, match="no function 'nope'"):
        load_model(f"{FACTORIES}:nope")
    with pytest.raises(ModelError, match="returned int, not a torch.nn.Module"):
        load_model(f"{FACTORIES}:not_a_model")
    with pytest.raises(ModelError, match="cannot import module"):
        load_model("no_such_package.sub:f")
    with pytest.raises(ModelError, match="not a file"):
        load_model("missing/file.py:f")
    with pytest.raises(ModelError, match="not a known form"):
        load_model("resnet18")


def test_torchscript_spec_exposes_forward_outputs(tmp_path):
    from model_factories import dict_out, tiny_net
    eager = dict_out()
    path = tmp_path / "scripted.pt"
    torch.jit.script(eager).save(str(path))
    m = load_model(str(path), trust_checkpoint=True)
    assert model_fingerprint(m) == model_fingerprint(eager)
    assert conv_layer_names(m, (16, 16)) == ["c1", "c2"]
    assert resolve_layers(m, ["c2"], (16, 16)) == {"c2": (6, 8, 8)}
    with pytest.raises(LayerError, match=r"'logits'.*\(1, 6\)"):
        resolve_layers(m, ["logits"], (16, 16))
    x = torch.randn(2, 3, 16, 16)
    with LayerCapture(m, ["c1", "c2"]) as cap:
        got = cap(x)
    want = _outputs(eager, x)
    for k in ("c1", "c2"):
        assert torch.allclose(got[k], want[k], atol=1e-6)
    # a traced model returning one 4-D tensor: its layer is "output"
    feats = tiny_net().features.eval()
    traced = tmp_path / "traced.pth"
    torch.jit.trace(feats, torch.zeros(1, 3, 16, 16)).save(str(traced))
    mt = load_model(str(traced), trust_checkpoint=True)
    assert conv_layer_names(mt, (16, 16)) == ["output"]
    # a state-dict file is not TorchScript: the error says how to pass it
    sd_file = tmp_path / "weights.pt"
    torch.save(feats.state_dict(), sd_file)
    with pytest.raises(ModelError, match="not a TorchScript file or a pickled model.*--weights"):
        load_model(str(sd_file))


def test_zoo_specs_fail_clearly_without_the_package(monkeypatch):
    import pipeline.models.zoo as zoo
    real = importlib.import_module

    def no_timm(name, *a, **k):
        if name == "timm":
            raise ImportError("No module named 'timm'")
        return real(name, *a, **k)
    monkeypatch.setattr(zoo.importlib, "import_module", no_timm)
    with pytest.raises(ModelError, match="needs the timm package.*--no-deps"):
        load_model("timm:resnet18")


# ------------------------------------------------------------------- weights
@pytest.mark.parametrize("wrap", ["plain", "state_dict", "model", "module_prefix",
                                  "state_dict_module_prefix", "whole_module"])
def test_checkpoint_variants_load(tmp_path, wrap):
    src = load_model(TINY)
    with torch.no_grad():
        for p in src.parameters():
            p.add_(0.5)
    sd = src.state_dict()
    prefixed = {f"module.{k}": v for k, v in sd.items()}
    obj = {"plain": sd, "state_dict": {"state_dict": sd, "epoch": 3, "arch": "tiny"},
           "model": {"model": sd, "optimizer": {}},
           "module_prefix": prefixed,
           "state_dict_module_prefix": {"state_dict": prefixed, "best_prec1": 51.2},
           "whole_module": src}[wrap]
    path = tmp_path / "ckpt.pth"
    torch.save(obj, path)
    # a whole pickled module names its class: only with --trust-checkpoint
    m = load_model(TINY, weights=path, trust_checkpoint=wrap == "whole_module")
    assert model_fingerprint(m) == model_fingerprint(src)
    assert model_fingerprint(m) != model_fingerprint(load_model(TINY))
    x = torch.randn(1, 3, 8, 8)
    assert torch.equal(_outputs(m, x), _outputs(src, x))


def test_mismatched_checkpoint_lists_keys(tmp_path):
    sd = load_model(TINY).state_dict()
    sd.pop("fc.bias")
    sd["extra.weight"] = torch.zeros(1)
    sd["features.0.weight"] = torch.zeros(5, 3, 3, 3)
    path = tmp_path / "bad.pt"
    torch.save(sd, path)
    with pytest.raises(ModelError) as e:
        load_model(TINY, weights=path)
    msg = str(e.value)
    assert str(path) in msg and "fc.bias" in msg and "extra.weight" in msg
    assert "features.0.weight: checkpoint (5, 3, 3, 3) vs model (8, 3, 3, 3)" in msg
    with pytest.raises(ModelError, match="not a torch checkpoint"):
        (tmp_path / "junk.pt").write_bytes(b"junk")
        load_model(TINY, weights=tmp_path / "junk.pt")
    with pytest.raises(ModelError, match="file not found"):
        load_model(TINY, weights=tmp_path / "missing.pt")


def test_fingerprint_depends_on_weights_only():
    a, b = load_model(TINY), load_model(TINY)
    assert model_fingerprint(a) == model_fingerprint(b)
    with torch.no_grad():
        b.fc.bias[0] += 1e-3
    assert model_fingerprint(a) != model_fingerprint(b)
    c = load_model(TINY).half()
    assert model_fingerprint(c) != model_fingerprint(a)      # dtype is part of it


# -------------------------------------------------------------------- layers
def test_demo_layers_and_resolutions():
    m = DemoCNN().eval()
    names = conv_layer_names(m, (224, 224))
    outs = module_outputs(m, (224, 224))
    assert [n for n in names if n.startswith("conv") and "." not in n] == \
        ["conv1", "conv2", "conv3", "conv4", "conv5"]
    assert [outs[f"conv{i}"][2:] for i in range(1, 6)] == \
        [(56, 56), (28, 28), (14, 14), (14, 14), (7, 7)]
    assert "fc" not in names and "gap" in names
    shapes = resolve_layers(m, ["conv1", "conv5"], (224, 224))
    assert shapes == {"conv1": (32, 56, 56), "conv5": (256, 7, 7)}
    wide = DemoCNN(DemoConfig(conv5_width=64, batchnorm=False, dropout=0.3)).eval()
    assert resolve_layers(wide, ["conv5"], (224, 224)) == {"conv5": (64, 7, 7)}
    assert not any(isinstance(x, nn.BatchNorm2d) for x in wide.modules())
    assert any(isinstance(x, nn.Dropout2d) for x in wide.modules())


def test_demo_conv_layers_are_post_relu():
    torch.manual_seed(0)
    m = DemoCNN().eval()
    x = torch.randn(2, 3, 64, 64)
    with LayerCapture(m, ["conv2", "conv2.conv", "conv2.relu"]) as cap, torch.no_grad():
        got = cap(x)
    assert (got["conv2"] >= 0).all() and torch.equal(got["conv2"], got["conv2.relu"])
    bn = m.conv2.bn
    assert torch.allclose(got["conv2"], torch.relu(bn(got["conv2.conv"])), atol=1e-5)
    assert (got["conv2.conv"] < 0).any()       # copied before ReLU(inplace) changed it


def test_unknown_and_non_4d_layer_errors():
    m = DemoCNN().eval()
    with pytest.raises(LayerError) as e:
        resolve_layers(m, ["conv6"], (224, 224))
    msg = str(e.value)
    assert "unknown layer 'conv6'" in msg
    assert "conv1 32x56x56" in msg and "conv5 256x7x7" in msg and "fc" not in msg
    with pytest.raises(LayerError, match=r"layer 'fc' outputs a tensor of shape \(1, 10\)"):
        resolve_layers(m, ["fc"], (224, 224))
    with pytest.raises(LayerError, match="listed twice"):
        resolve_layers(m, ["conv1", "conv1"], (224, 224))


def test_layer_capture_several_layers_one_pass():
    torch.manual_seed(0)
    m = DemoCNN().eval()
    calls = {"n": 0}
    m.conv1.register_forward_hook(lambda *a: calls.__setitem__("n", calls["n"] + 1))
    with LayerCapture(m, ["conv1", "conv3", "conv5"]) as cap, torch.no_grad():
        got = cap(torch.randn(3, 3, 96, 96))
    assert calls["n"] == 1
    assert {k: tuple(v.shape) for k, v in got.items()} == {
        "conv1": (3, 32, 24, 24), "conv3": (3, 128, 6, 6), "conv5": (3, 256, 3, 3)}
    # hooks are removed afterwards
    assert not m.conv3._forward_hooks


# ----------------------------------------------------------------- demo CNN
def test_demo_checkpoint_roundtrip_keeps_config(tmp_path):
    cfg = DemoConfig(num_classes=4, conv5_width=48, batchnorm=False, classes=(3, 5, 7, 9))
    torch.manual_seed(0)
    m = DemoCNN(cfg).eval()
    path = tmp_path / "d.pt"
    save_demo_checkpoint(path, m, {"note": "x"})
    back = load_model("demo", weights=path)
    assert back.config == cfg
    assert model_fingerprint(back) == model_fingerprint(m)


def test_committed_demo_checkpoint_loads():
    assert DEMO_WEIGHTS.is_file(), "pipeline/demo_weights/demo_cnn.pt is missing"
    assert DEMO_WEIGHTS.stat().st_size < 5 * 2**20
    m = load_model("demo")
    info = json.loads(DEMO_WEIGHTS.with_suffix(".json").read_text())
    assert m.config.num_classes == len(info["classes"]) == len(m.config.classes)
    assert info["val_accuracy"] > 2 * info["chance"]
    shapes = resolve_layers(m, ["conv1", "conv2", "conv3", "conv4", "conv5"], (224, 224))
    assert shapes["conv1"][1:] == (56, 56) and shapes["conv5"][1:] == (7, 7)
    with torch.no_grad():
        assert torch.isfinite(m(torch.zeros(1, 3, 224, 224))).all()


@pytest.mark.slow
def test_demo_training_beats_chance(tmp_path):
    """Train briefly on a small synthetic set (64 px); val accuracy clearly above chance."""
    from pipeline.synthetic.writer import write_dataset
    from pipeline.models.train import TrainConfig, train_demo
    ds = write_dataset(tmp_path / "syn", num_images=500, image_size=64, seg_size=32, seed=3,
                       workers=1, progress=False)
    # one thread: on a shared 2-core machine two OpenMP threads can be 10x slower
    r = train_demo(TrainConfig(dataset=ds, out_dir=tmp_path / "ckpt", iterations=100,
                               save_at=[0, 50], threads=1), log=lambda m: None)
    assert r.val_images >= 15 and len(r.classes) == 10
    assert r.val_accuracy >= max(3 * r.chance, r.majority + 0.2), r.history
    names = sorted(p.name for p in (tmp_path / "ckpt").iterdir())
    assert names == ["demo_cnn.json", "demo_cnn.pt", "demo_cnn_iter000000.pt",
                     "demo_cnn_iter000050.pt"]
    back = load_model("demo", weights=tmp_path / "ckpt" / "demo_cnn.pt")
    assert model_fingerprint(back) == model_fingerprint(r.model)
    assert list(back.config.classes) == r.classes


def test_training_dataset_record_meta_and_install(tmp_path, monkeypatch):
    """What train_demo_model.py records in demo_cnn.json (the committed record's keys)
    and where --install copies the final checkpoint."""
    from pipeline.broden import BrodenDataset
    from pipeline.models import train
    data = tmp_path / "syn"
    ds_dir, rec = train.prepare_dataset(data, 12, 3, 32, 16, progress=False,
                                        log=lambda m: None)
    assert ds_dir == data and (data / "index.csv").is_file()
    assert rec == {"path": str(data), "fingerprint": BrodenDataset(data).fingerprint(),
                   "num_images": 12, "image_size": [32, 32], "seg_size": [16, 16],
                   "generator": {"function": "pipeline.synthetic.writer.write_dataset",
                                 "num_images": 12, "seed": 3, "image_size": 32,
                                 "seg_size": 16}}
    committed = json.loads(DEMO_WEIGHTS.with_suffix(".json").read_text())
    assert list(rec) == list(committed["dataset"])
    assert list(rec["generator"]) == list(committed["dataset"]["generator"])

    def no_generation(message):
        raise AssertionError(message)
    _, again = train.prepare_dataset(data, log=no_generation)       # there: read only
    assert again == {k: v for k, v in rec.items() if k != "generator"}
    monkeypatch.setattr(train, "RECIPE_DATASET", data)
    _, recipe = train.prepare_dataset(None, log=no_generation)
    assert recipe["path"] == str(data)
    assert (recipe["generator"]["num_images"], recipe["generator"]["seed"]) == (4000, 1)

    meta = train.training_meta(["scripts/train_demo_model.py", "--out", "a b"], rec)
    assert meta == {"command": "python scripts/train_demo_model.py --out 'a b'",
                    "dataset": rec}
    assert committed["command"].startswith("python scripts/train_demo_model.py --dataset")

    out = tmp_path / "run"
    out.mkdir()
    (out / "demo_cnn.pt").write_bytes(b"pt")
    (out / "demo_cnn.json").write_text("{}")
    target = tmp_path / "weights" / "demo_cnn.pt"
    monkeypatch.setattr(train, "DEMO_WEIGHTS", target)
    assert train.install_weights(out) == target
    assert target.read_bytes() == b"pt" and target.with_suffix(".json").read_text() == "{}"
