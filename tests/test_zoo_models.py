"""The models researchers dissect, as typed: torchvision and timm architectures (random
weights, seeded) import on the CPU torch, their layers resolve to the shapes and layouts
of the table below, the capture stores (B, K, h, w) maps equal to the outputs reshaped by
hand, and anything ambiguous is refused naming --layout."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.extract_config import ExtractConfig, _preprocessing
from pipeline.models.checkpoints import model_fingerprint
from pipeline.models.errors import LayerError
from pipeline.models.hooks import LayerCapture, ModuleHooks, plan_layers
from pipeline.models.layouts import Layout, LayoutError, parse_layouts
from pipeline.models.sources import load_model
from pipeline.models.zoo import ensure_torchvision_ops

FACTORIES = Path(__file__).with_name("model_factories.py")

#: spec, input size, {layer users type: (K, h, w) stored, layout}
ARCHITECTURES = [
    ("torchvision:resnet18", 64, {"conv1": (64, 32, 32, "channels_first"),
                                  "layer3": (256, 4, 4, "channels_first"),
                                  "layer4": (512, 2, 2, "channels_first")}),
    ("torchvision:alexnet", 64, {"features.10": (256, 3, 3, "channels_first"),
                                 "features.11": (256, 3, 3, "channels_first")}),
    ("torchvision:vgg16", 32, {"features.29": (512, 2, 2, "channels_first"),
                               "features.30": (512, 1, 1, "channels_first")}),
    ("torchvision:densenet161", 64, {"features.denseblock3": (2112, 4, 4, "channels_first"),
                                     "features.norm5": (2208, 2, 2, "channels_first")}),
    ("torchvision:densenet121", 64, {"features.denseblock3": (1024, 4, 4, "channels_first"),
                                     "features.norm5": (1024, 2, 2, "channels_first")}),
    ("torchvision:googlenet", 64, {"inception4e": (832, 4, 4, "channels_first"),
                                   "inception5b": (1024, 2, 2, "channels_first")}),
    ("timm:resnet50", 64, {"layer3": (1024, 4, 4, "channels_first"),
                           "layer4": (2048, 2, 2, "channels_first")}),
    ("timm:convnext_tiny", 64, {"stages.2": (384, 4, 4, "channels_first"),
                                "stages.1.blocks.0.mlp.fc1": (768, 8, 8, "channels_last"),
                                "stages.3.blocks.2.norm": (768, 2, 2, "channels_last")}),
    ("timm:vit_small_patch16_224", 224, {"blocks.11": (384, 14, 14, "tokens"),
                                         "blocks.5.mlp.fc1": (1536, 14, 14, "tokens"),
                                         "blocks.5.mlp.act": (1536, 14, 14, "tokens"),
                                         "patch_embed.proj": (384, 14, 14, "channels_first")}),
    ("timm:vit_small_patch14_reg4_dinov2:img_size=56", 56,
     {"blocks.11": (384, 4, 4, "tokens")}),
    ("timm:swin_tiny_patch4_window7_224", 224, {"layers.2.blocks.5": (384, 14, 14,
                                                                      "channels_last"),
                                                "layers.3": (768, 7, 7, "channels_last"),
                                                "patch_embed.proj": (96, 56, 56,
                                                                     "channels_first")}),
    ("torchvision:vit_b_16", 224, {"encoder.layers.encoder_layer_11": (768, 14, 14,
                                                                        "tokens")}),
    ("torchvision:swin_t", 224, {"features.7": (768, 7, 7, "channels_last")}),
]
SLOW = {"torchvision:vit_b_16", "torchvision:swin_t", "torchvision:vgg16",
        "torchvision:densenet161"}          # seconds each on 2 shared cores


@pytest.fixture(scope="module")
def zoo():
    """spec -> model, each built once per module."""
    built: dict[str, torch.nn.Module] = {}

    def get(spec: str) -> torch.nn.Module:
        if spec not in built:
            built[spec] = load_model(spec)
        return built[spec]
    return get


def _images(size: int, n: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (torch.rand(n, 3, size, size, generator=g) - 0.45) / 0.225


def _raw(model, names, x) -> dict[str, torch.Tensor]:
    """The layers' outputs as the model produces them (no layout), copied."""
    got = {}
    with ModuleHooks(model, names, lambda n, o: got.__setitem__(n, o.detach().clone())), \
            torch.no_grad():
        model(x)
    return got


def test_torchvision_imports_on_this_torch():
    assert ensure_torchvision_ops() in ("present", "extension", "schemas")
    import torchvision
    assert hasattr(torch.ops.torchvision, "nms") and hasattr(torch.ops.torchvision, "qnms")
    assert ensure_torchvision_ops() == "present"                      # idempotent
    assert torchvision.models.get_model("resnet18", weights=None) is not None


@pytest.mark.parametrize("spec,size,table", [
    pytest.param(*a, marks=[pytest.mark.slow] if a[0] in SLOW else [], id=a[0])
    for a in ARCHITECTURES])
def test_architecture_layers(zoo, spec, size, table):
    model = zoo(spec)
    plan = plan_layers(model, list(table), (size, size))
    assert {n: (*plan.shapes[n], plan.layouts[n].kind) for n in table} == table
    with LayerCapture(model, list(table), layouts=plan.layouts) as cap, torch.no_grad():
        out = cap(_images(size))
    for n, (K, h, w, _) in table.items():
        assert tuple(out[n].shape) == (2, K, h, w) and out[n].is_contiguous()
        assert torch.isfinite(out[n]).all() and out[n].std() > 0


def test_vit_tokens_are_the_patches_reshaped_by_hand(zoo):
    model = zoo("timm:vit_small_patch16_224")
    names = ["blocks.5", "blocks.5.mlp.fc1", "blocks.5.mlp.act", "patch_embed.norm"]
    plan = plan_layers(model, names, (224, 224))
    assert plan.layouts["blocks.5"].to_attrs() == {"kind": "tokens", "source": "model",
                                                    "prefix": 1, "grid": [14, 14]}
    assert plan.layouts["patch_embed.norm"].prefix == 0          # before the CLS token
    x = _images(224)
    raw = _raw(model, names, x)
    with LayerCapture(model, names, layouts=plan.layouts) as cap, torch.no_grad():
        got = cap(x)
    for n in names:
        prefix = plan.layouts[n].prefix
        want = torch.empty_like(got[n])
        for b in range(2):
            for t in range(196):                     # patch t sits at row t // 14, col t % 14
                want[b, :, t // 14, t % 14] = raw[n][b, prefix + t, :]
        assert torch.equal(got[n], want), n


def test_register_tokens_are_dropped(zoo):
    model = zoo("timm:vit_small_patch14_reg4_dinov2:img_size=56")
    assert model.num_prefix_tokens == 5                           # CLS + 4 registers
    plan = plan_layers(model, ["blocks.3"], (56, 56))
    x = _images(56)
    raw = _raw(model, ["blocks.3"], x)["blocks.3"]
    with LayerCapture(model, ["blocks.3"], layouts=plan.layouts) as cap, torch.no_grad():
        got = cap(x)["blocks.3"]
    for t in range(16):
        assert torch.equal(got[:, :, t // 4, t % 4], raw[:, 5 + t, :])


@pytest.mark.parametrize("spec,size,layer", [
    ("timm:swin_tiny_patch4_window7_224", 224, "layers.3"),
    ("timm:convnext_tiny", 64, "stages.1.blocks.0.mlp.fc1")])
def test_channels_last_maps_are_permuted_by_hand(zoo, spec, size, layer):
    model = zoo(spec)
    plan = plan_layers(model, [layer], (size, size))
    x = _images(size)
    raw = _raw(model, [layer], x)[layer]                            # (B, h, w, K)
    with LayerCapture(model, [layer], layouts=plan.layouts) as cap, torch.no_grad():
        got = cap(x)[layer]
    for i in range(raw.shape[1]):
        for j in range(raw.shape[2]):
            assert torch.equal(got[:, :, i, j], raw[:, i, j, :])


def test_ambiguous_vit_and_swin_layers_are_refused(zoo):
    vit = zoo("timm:vit_small_patch16_224")
    with pytest.raises(LayoutError) as e:
        plan_layers(vit, ["blocks.11.attn.q_norm"], (224, 224))
    msg = str(e.value)
    assert "(1, 6, 197, 64)" in msg and "attention" in msg and "--layout" in msg
    listed = msg.split("read as maps", 1)[1]
    assert "blocks.11 384x14x14 (tokens)" in listed and "q_norm" not in listed
    assert "more inside them, e.g. blocks.0.norm1" in listed
    with pytest.raises(LayerError) as e:
        plan_layers(vit, ["blocks.12"], (224, 224))
    assert "unknown layer 'blocks.12'" in str(e.value) and "q_norm" not in str(e.value)
    swin = zoo("timm:swin_tiny_patch4_window7_224")
    with pytest.raises(LayoutError, match=r"\(64, 49, 96\).*not the batch"):
        plan_layers(swin, ["layers.0.blocks.0.attn"], (224, 224))


def test_channels_last_output_of_unknown_model_needs_layout():
    model = load_model(f"{FACTORIES}:channels_last")
    with pytest.raises(LayoutError) as e:
        plan_layers(model, ["nhwc"], (32, 32))
    assert "channels-last" in str(e.value) and "--layout" in str(e.value)
    assert "nhwc" not in str(e.value).split("read as maps", 1)[1]
    plan = plan_layers(model, ["conv", "nhwc"], (32, 32), layouts=parse_layouts(
        ["nhwc=channels_last"]))
    assert plan.shapes == {"conv": (6, 16, 16), "nhwc": (6, 16, 16)}
    assert plan.layouts["conv"].source == "shape"
    x = torch.randn(2, 3, 32, 32)
    with LayerCapture(model, ["conv", "nhwc"], layouts=plan.layouts) as cap, torch.no_grad():
        got = cap(x)
    assert torch.equal(got["nhwc"], got["conv"])
    with pytest.raises(LayoutError, match=r"'conv'.*read as channels_last its maps would "
                                          r"be 6x16.*--layout conv="):
        plan_layers(model, ["conv", "nhwc"], (32, 32), layouts=parse_layouts(
            ["channels_last"]))                       # a layout for every layer: not conv
    with pytest.raises(LayoutError, match=r"needs a \(B, tokens, K\) output"):
        plan_layers(model, ["nhwc"], (32, 32), layouts=parse_layouts(["tokens:prefix=1"]))
    with pytest.raises(LayoutError, match="needs a 4-D output"):
        plan_layers(load_model(f"{FACTORIES}:token_net"), ["tokens"], (32, 32),
                    layouts=parse_layouts(["channels_last"]))


def test_tokens_of_unknown_model_need_layout():
    model = load_model(f"{FACTORIES}:token_net")
    with pytest.raises(LayoutError, match=r"\(1, 17, 5\).*--layout"):
        plan_layers(model, ["tokens"], (32, 32))
    x = torch.randn(2, 3, 32, 32)
    raw = _raw(model, ["tokens"], x)["tokens"]
    for given in ("tokens:prefix=1,grid=4x4", "tokens:prefix=1", "tokens:grid=4x4"):
        plan = plan_layers(model, ["tokens"], (32, 32), layouts=parse_layouts([given]))
        assert plan.shapes == {"tokens": (5, 4, 4)} and plan.layouts["tokens"].prefix == 1
        with LayerCapture(model, ["tokens"], layouts=plan.layouts) as cap, torch.no_grad():
            got = cap(x)["tokens"]
        for t in range(16):
            assert torch.equal(got[:, :, t // 4, t % 4], raw[:, 1 + t, :])
    with pytest.raises(LayoutError, match="tokens = prefix"):
        plan_layers(model, ["tokens"], (32, 32), layouts=parse_layouts(
            ["tokens:prefix=2,grid=4x4"]))
    with pytest.raises(LayoutError, match="cannot tell its prefix and grid"):
        plan_layers(model, ["tokens"], (32, 64), layouts=parse_layouts(["tokens:prefix=1"]))
    plan = plan_layers(model, ["tokens"], (32, 64), layouts=parse_layouts(
        ["tokens=tokens:prefix=1,grid=4x8"]))
    assert plan.shapes == {"tokens": (5, 4, 8)}


def test_parse_layouts():
    got = parse_layouts(["blocks.3=tokens:prefix=1,grid=14x14", "channels-last"])
    assert got == {"blocks.3": Layout("tokens", 1, (14, 14)), "": Layout("channels_last")}
    for bad, match in (("nchw", "expected"), ("tokens:prefix=x", "bad argument"),
                       ("tokens:grid=0x4", "bad argument"),
                       ("channels_last:prefix=1", "only tokens takes arguments")):
        with pytest.raises(LayerError, match=match):
            parse_layouts([bad])
    with pytest.raises(LayerError, match="given twice"):
        parse_layouts(["a=tokens", "a=channels_last"])
    model = load_model(f"{FACTORIES}:tiny_net")
    with pytest.raises(LayerError, match=r"not in --layers"):
        plan_layers(model, ["features.0"], (16, 16), layouts=parse_layouts(["fc=tokens"]))


def test_in_place_relu_after_a_hooked_layer_warns(zoo):
    model = zoo("torchvision:alexnet")
    plan = plan_layers(model, ["features.10", "features.11", "features.12"], (64, 64))
    assert len(plan.warnings) == 1
    w = plan.warnings[0]
    assert "'features.10'" in w and "in-place ReLU 'features.11'" in w and \
        "--layers features.11" in w
    assert not plan_layers(load_model(f"{FACTORIES}:channels_last"), ["conv"],
                           (32, 32)).warnings


class _FunctionalInPlace(torch.nn.Module):
    """conv's output is changed by ``F.relu(.., inplace=True)`` in forward; head's is not."""

    def __init__(self):
        super().__init__()
        self.conv, self.head = torch.nn.Conv2d(3, 4, 3), torch.nn.Identity()

    def forward(self, x):
        y = self.conv(x)
        torch.nn.functional.relu(y, inplace=True)
        return self.head(y)


def test_in_place_code_after_a_hooked_layer_warns(zoo):
    """An in-place op of forward's code (no module) is seen by the tensor's version
    counter: torchvision DenseNet's F.relu(features, inplace=True) after features.norm5."""
    plan = plan_layers(_FunctionalInPlace(), ["conv", "head"], (16, 16))
    assert len(plan.warnings) == 1 and "'conv' is changed in place" in plan.warnings[0]
    model = zoo("torchvision:densenet121")
    w = plan_layers(model, ["features.norm5", "features.denseblock4"], (64, 64)).warnings
    assert len(w) == 1 and "'features.norm5'" in w[0] and "F.relu(x, inplace=True)" in w[0]


def test_random_init_is_seeded():
    state = torch.get_rng_state()
    a, b = load_model("timm:resnet18"), load_model("timm:resnet18:seed=0")
    assert torch.equal(torch.get_rng_state(), state)                 # global RNG untouched
    assert model_fingerprint(a) == model_fingerprint(b)
    assert model_fingerprint(load_model("timm:resnet18:seed=1")) != model_fingerprint(a)
    with pytest.raises(Exception, match="seed=-1 must be an integer"):
        load_model("timm:resnet18:seed=-1")


def _prep(model, image_size=(48, 48), **given):
    cfg = ExtractConfig(dataset=".", model="x", layers=["a"], out=".", **given)
    notes: list[str] = []
    prep, extra = _preprocessing(cfg, model, image_size, notes)
    return prep, extra, notes


def test_preprocessing_from_the_model(zoo):
    vit = zoo("timm:vit_small_patch16_224")
    prep, extra, notes = _prep(vit)
    assert prep.mean == (0.5, 0.5, 0.5) and prep.std == (0.5, 0.5, 0.5)
    assert prep.input_size == (224, 224)                  # the ViT runs at no other size
    assert extra["sources"] == {"input_size": "model", "mean": "model", "std": "model"}
    assert any("mean [0.5, 0.5, 0.5] from the model" in n for n in notes)
    prep, extra, notes = _prep(vit, mean=(0.4, 0.4, 0.4))
    assert prep.mean == (0.4, 0.4, 0.4) and extra["sources"]["mean"] == "--mean"
    assert any(n.startswith("--mean [0.4, 0.4, 0.4] overrides the model's [0.5, 0.5, 0.5]")
               for n in notes)
    prep, extra, notes = _prep(zoo("timm:resnet50"))
    assert prep.input_size == (48, 48) and extra["sources"]["input_size"] == "dataset"
    assert any("trained at 224x224" in n for n in notes)
    prep, extra, notes = _prep(load_model("torchvision:googlenet:transform_input=True"))
    assert extra["transform_input"] is True and any("transform_input is on" in n for n in notes)
    assert extra["sources"]["mean"] == "default (ImageNet)"
    prep, extra, notes = _prep(load_model(f"{FACTORIES}:tiny_net"), input_size=(26, 26))
    assert not notes and extra == {"sources": {"input_size": "--input-size",
                                               "mean": "default (ImageNet)",
                                               "std": "default (ImageNet)"}}


@pytest.mark.slow
def test_extract_a_vit_block_then_score(tiny_data, tmp_path):
    """scripts/extract.py on a timm ViT (48 px, 3 x 3 patches) as a user types it: the
    layout and preprocessing come from the model and are recorded; a random-init rerun is
    not refused; DINO-style teacher weights load with --weights-key; scoring labels it."""
    import csv
    import numpy as np
    from cache import store
    from clirun import cli
    from pipeline.broden import BrodenDataset
    from pipeline.preprocess import resize_image, to_model_input, Preprocessing
    spec = "timm:vit_tiny_patch16_224:img_size=48"
    layers = "blocks.11,blocks.5.mlp.fc1"
    common = ["--dataset", tiny_data, "--model", spec, "--layers", layers, "--workers", "0",
              "--quiet"]
    first = cli("scripts/extract.py", *common, "--out", tmp_path / "init").stdout
    assert "layer blocks.11: layout tokens:prefix=1,grid=3x3 (from the model)" in first
    assert "mean [0.5, 0.5, 0.5] from the model" in first
    again = cli("scripts/extract.py", *common, "--out", tmp_path / "init").stdout
    assert "the cache is complete" in again                      # same seed, same weights
    attrs = store.read_run_attrs(tmp_path / "init")
    assert attrs["model"]["seed"] == 0
    assert attrs["layer_layouts"]["blocks.11"] == {"kind": "tokens", "source": "model",
                                                   "prefix": 1, "grid": [3, 3]}
    assert attrs["layer_shapes"] == {"blocks.11": [192, 3, 3],
                                     "blocks.5.mlp.fc1": [768, 3, 3]}
    assert attrs["preprocessing"]["mean"] == [0.5] * 3
    assert attrs["preprocessing"]["sources"]["mean"] == "model"

    teacher = load_model(spec + ",seed=7")
    ckpt = tmp_path / "dino.pth"
    torch.save({"teacher": {f"backbone.{k}": v for k, v in teacher.state_dict().items()},
                "student": load_model(spec).state_dict(), "epoch": 10}, ckpt)
    run = tmp_path / "run"
    cli("scripts/extract.py", *common, "--out", run, "--weights", ckpt, "--weights-key",
        "teacher")
    assert store.read_run_attrs(run)["model"]["weights_key"] == "teacher"
    ds = BrodenDataset(tiny_data)
    prep = Preprocessing((48, 48), (0.5,) * 3, (0.5,) * 3)
    x = to_model_input(torch.from_numpy(np.stack([resize_image(ds.load_image(i), (48, 48))
                                                  for i in range(4)])), prep)
    raw = _raw(teacher.eval(), ["blocks.11"], x)["blocks.11"]
    want = np.stack([[raw[b, 1 + t].numpy() for t in range(9)] for b in range(4)])
    got = np.asarray(store.activations(run, "blocks.11")[:4], dtype=np.float32)
    np.testing.assert_allclose(got.reshape(4, 192, 9).transpose(0, 2, 1), want,
                               rtol=2e-3, atol=2e-3)             # float16 storage
    cli("scripts/score.py", run, "--label-cache", tmp_path / "labels.zarr", "--levels",
        "0.005,0.02", "--quiet")
    for layer, K in (("blocks.11", 192), ("blocks.5.mlp.fc1", 768)):
        rows = list(csv.DictReader(open(run / "results" / f"{layer}.csv")))
        assert len(rows) == K and all(r["label"] for r in rows)


@pytest.mark.slow
def test_layout_options_on_the_command_line(tiny_data, tmp_path):
    """A model of no known family: its token output is refused (exit 2, naming --layout),
    then extracted with --layout; --weights-prefix strips a prefix no rule knows."""
    from cache import store
    from clirun import cli
    base = ["--dataset", tiny_data, "--model", f"{FACTORIES}:token_net", "--layers",
            "tokens,patch", "--input-size", "32", "--workers", "0", "--quiet"]
    r = cli("scripts/extract.py", *base, "--out", tmp_path / "refused", check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert "layer 'tokens'" in r.stderr and "--layout" in r.stderr
    sd = load_model(f"{FACTORIES}:token_net").state_dict()
    ckpt = tmp_path / "w.pth"
    torch.save({"net": {f"trunk.{k}": v + 1 for k, v in sd.items()}}, ckpt)
    run = tmp_path / "run"
    out = cli("scripts/extract.py", *base, "--out", run, "--layout",
              "tokens=tokens:prefix=1", "--weights", ckpt, "--weights-prefix", "trunk.").stdout
    assert "layer tokens: layout tokens:prefix=1,grid=4x4 (--layout)" in out
    attrs = store.read_run_attrs(run)
    assert attrs["layer_shapes"] == {"tokens": [5, 4, 4], "patch": [5, 4, 4]}
    assert attrs["layer_layouts"]["tokens"] == {"kind": "tokens", "source": "declared",
                                                "prefix": 1, "grid": [4, 4]}
    assert attrs["layer_layouts"]["patch"]["kind"] == "channels_first"
    assert attrs["model"]["weights_prefix"] == "trunk." and attrs["model"]["seed"] is None
    import numpy as np
    tokens = np.asarray(store.activations(run, "tokens")[:])
    patch = np.asarray(store.activations(run, "patch")[:])
    np.testing.assert_array_equal(tokens, patch)       # the patch tokens are the patch maps
