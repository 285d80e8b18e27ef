"""Model specs, checkpoint loading, weight fingerprints, layer capture and the demo CNN.

A model SPEC (``scripts/extract.py --model``) is one of:

- ``demo``: :class:`DemoCNN`; weights default to the committed checkpoint
  ``pipeline/demo_weights/demo_cnn.pt`` (its architecture options come from the
  checkpoint's ``config``, also when another demo checkpoint is given as weights).
- ``path/to/file.py:function`` or ``package.module:function``: a factory called with
  no arguments that returns an ``nn.Module``.
- ``torchvision:NAME`` / ``timm:NAME`` (optionally ``:key=value,...`` keyword
  arguments, e.g. ``torchvision:resnet18:num_classes=365``): an architecture with
  random weights (pass ``--weights``), only when that package imports.
- a TorchScript file (``.pt``/``.pth``/``.ts``/... loadable by ``torch.jit.load``).
  PyTorch cannot hook modules inside TorchScript, so a TorchScript model's layers
  are what its ``forward`` returns: a tensor (layer ``output``), a tuple/list
  (``output.0``, ``output.1``, ...) or a dict of tensors (its keys).

Layers of an eager model are its named modules (``model.named_modules()`` names,
e.g. ``conv5``, ``layer4.1``, ``features.10``); a module called several times in one
forward pass yields the output of its last call. Only layers whose output is a 4-D
tensor (B, K, h, w) can be extracted.
"""
from __future__ import annotations

import ast
import hashlib
import importlib
import importlib.util
import json
import sys
import warnings
from collections import OrderedDict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

DEMO_WEIGHTS = Path(__file__).resolve().parent / "demo_weights" / "demo_cnn.pt"
DEMO_FORMAT = "netdissect-demo-cnn"
TORCHSCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".ptc", ".torchscript")


class ModelError(ValueError):
    """A model spec, checkpoint or weights file cannot be used (message says why)."""


class LayerError(ValueError):
    """A requested layer does not exist or does not produce (B, K, h, w) maps."""


# --------------------------------------------------------------------- demo CNN
@dataclass(frozen=True)
class DemoConfig:
    """Architecture of :class:`DemoCNN`.

    widths: channels of conv1..conv4; conv5_width: channels of conv5 (the last
    conv layer); batchnorm: BatchNorm after each conv; dropout: Dropout2d rate at
    the end of each block and before the classifier (0 = off; identity in eval);
    num_classes: classifier outputs; classes: the scene label number of each
    class index (metadata for training and reports).
    """
    num_classes: int = 10
    widths: tuple[int, int, int, int] = (32, 64, 128, 128)
    conv5_width: int = 256
    batchnorm: bool = True
    dropout: float = 0.0
    classes: tuple[int, ...] = ()

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DemoConfig":
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(f"demo CNN config has unknown field(s) {unknown}; "
                             f"known: {sorted(known)}")
        d = dict(d)
        for k in ("widths", "classes"):
            if k in d:
                d[k] = tuple(int(v) for v in d[k])
        return cls(**d)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"], d["classes"] = list(self.widths), list(self.classes)
        return d


def _block(cin: int, cout: int, k: int, stride: int, cfg: DemoConfig) -> nn.Sequential:
    layers: dict[str, nn.Module] = {
        "conv": nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=not cfg.batchnorm)}
    if cfg.batchnorm:
        layers["bn"] = nn.BatchNorm2d(cout)
    layers["relu"] = nn.ReLU(inplace=True)
    if cfg.dropout > 0:
        layers["drop"] = nn.Dropout2d(cfg.dropout)
    return nn.Sequential(OrderedDict(layers))


class DemoCNN(nn.Module):
    """Small scene classifier; hooking ``convN`` gives post-ReLU maps.

    Input (B, 3, H, W) float32 -> logits (B, num_classes). Layer resolutions at
    H = W = 224 (K = channels with the default config):

        conv1  (32, 56, 56)   7x7 stride 4   -> pool1 (max 2x2)
        conv2  (64, 28, 28)   3x3            -> pool2
        conv3  (128, 14, 14)  3x3
        conv4  (128, 14, 14)  3x3            -> pool4
        conv5  (256, 7, 7)    3x3            -> global average pool -> fc

    Each ``convN`` is Sequential(conv, [bn], relu, [drop]).
    """

    def __init__(self, config: DemoConfig = DemoConfig()):
        super().__init__()
        self.config = config
        w1, w2, w3, w4 = config.widths
        self.conv1 = _block(3, w1, 7, 4, config)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = _block(w1, w2, 3, 1, config)
        self.pool2 = nn.MaxPool2d(2)
        self.conv3 = _block(w2, w3, 3, 1, config)
        self.conv4 = _block(w3, w4, 3, 1, config)
        self.pool4 = nn.MaxPool2d(2)
        self.conv5 = _block(w4, config.conv5_width, 3, 1, config)
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.fc = nn.Linear(config.conv5_width, config.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.pool4(self.conv4(self.conv3(x)))
        x = self.conv5(x)
        return self.fc(self.drop(torch.flatten(self.gap(x), 1)))


def save_demo_checkpoint(path: str | Path, model: DemoCNN, meta: Mapping[str, Any] | None = None
                         ) -> None:
    """Write ``{"format", "config", "state_dict", "meta"}`` (torch.save, float32 weights)."""
    torch.save({"format": DEMO_FORMAT, "config": model.config.to_dict(),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "meta": dict(meta or {})}, str(path))


def load_demo(weights: str | Path | None = None) -> DemoCNN:
    """DemoCNN with ``weights`` (default: the committed checkpoint), in eval mode."""
    path = Path(weights) if weights is not None else DEMO_WEIGHTS
    if weights is None and not path.is_file():
        raise ModelError(f"{path}: the committed demo weights are missing; train them with "
                         f"scripts/train_demo_model.py or pass --weights")
    obj = _torch_load(path)
    cfg = DemoConfig()
    if isinstance(obj, Mapping) and isinstance(obj.get("config"), Mapping):
        cfg = DemoConfig.from_dict(obj["config"])
    elif isinstance(obj, Mapping):
        sd = _unwrap_state_dict(obj, path)
        if "fc.weight" in sd:   # infer the class count of a foreign demo checkpoint
            cfg = DemoConfig(num_classes=int(sd["fc.weight"].shape[0]),
                             conv5_width=int(sd["fc.weight"].shape[1]))
    model = DemoCNN(cfg)
    apply_state_dict(model, _unwrap_state_dict(obj, path), path)
    return model.eval()


# ---------------------------------------------------------------------- loading
def load_model(spec: str, weights: str | Path | None = None) -> nn.Module:
    """Build the model named by ``spec`` (module docstring), load ``weights`` if given,
    and return it on the CPU in eval mode."""
    spec = str(spec).strip()
    if not spec:
        raise ModelError("--model is empty; pass e.g. demo, path/to/file.py:function, "
                         "package.module:function, torchvision:resnet18 or a TorchScript file")
    if spec == "demo":
        return load_demo(weights)
    if spec.startswith(("torchvision:", "timm:")):
        model = _zoo_model(spec)
    elif ":" in spec and not _looks_like_file(spec):
        model = _factory_model(spec)
    elif _looks_like_file(spec):
        model = _torchscript_model(spec)
    else:
        raise ModelError(
            f"--model {spec!r}: not a known form; pass demo, path/to/file.py:function, "
            f"package.module:function, torchvision:NAME, timm:NAME or a TorchScript file "
            f"({', '.join(TORCHSCRIPT_SUFFIXES)})")
    if weights is not None:
        load_weights(model, weights)
    return model.eval()


def _looks_like_file(spec: str) -> bool:
    p = Path(spec)
    return p.suffix.lower() in TORCHSCRIPT_SUFFIXES or (p.is_file() and ":" not in spec)


def _parse_kwargs(text: str, spec: str) -> dict[str, Any]:
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


def _zoo_model(spec: str) -> nn.Module:
    package, _, rest = spec.partition(":")
    name, _, args = rest.partition(":")
    kwargs = _parse_kwargs(args, spec)
    try:
        mod = importlib.import_module(package)
    except Exception as e:  # torchvision's CUDA wheels fail on CPU torch with RuntimeError
        raise ModelError(f"--model {spec!r} needs the {package} package, which is not "
                         f"installed or does not import here ({type(e).__name__}: {e}); "
                         f"use a factory spec (file.py:function) or a TorchScript file "
                         f"instead") from None
    try:
        if package == "torchvision":
            return mod.models.get_model(name, weights=None, **kwargs)
        return mod.create_model(name, pretrained=False, **kwargs)
    except Exception as e:
        raise ModelError(f"--model {spec!r}: {package} cannot build {name!r} "
                         f"({type(e).__name__}: {e})") from None


def _factory_model(spec: str) -> nn.Module:
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


def _torchscript_model(spec: str) -> nn.Module:
    path = Path(spec)
    if not path.is_file():
        raise ModelError(f"--model {spec!r}: file not found")
    try:
        with warnings.catch_warnings():     # torch 2.9+: "torch.jit.load is deprecated"
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location="cpu")
    except Exception as e:
        raise ModelError(f"--model {spec!r}: not a TorchScript file (torch.jit.load: "
                         f"{str(e).splitlines()[0] if str(e) else type(e).__name__}); for a "
                         f"checkpoint of weights pass --model ARCH --weights {spec}") from None


def is_torchscript(model: nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


# ---------------------------------------------------------------------- weights
def _torch_load(path: str | Path) -> Any:
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


def _unwrap_state_dict(obj: Any, path: str | Path) -> dict[str, torch.Tensor]:
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
    return _unwrap_state_dict(_torch_load(path), path)


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


# ------------------------------------------------------------------ layer hooks
def _script_outputs(out: Any) -> dict[str, Any]:
    """Name the outputs of a TorchScript forward: output / output.i / dict keys."""
    if isinstance(out, torch.Tensor):
        return {"output": out}
    if isinstance(out, (tuple, list)):
        return {f"output.{i}": v for i, v in enumerate(out)}
    if isinstance(out, Mapping):
        return {str(k): v for k, v in out.items()}
    return {"output": out}


def _describe(out: Any) -> str:
    if isinstance(out, torch.Tensor):
        return f"tensor of shape {tuple(out.shape)}"
    return type(out).__name__


def module_outputs(model: nn.Module, input_size: tuple[int, int],
                   device: str | torch.device = "cpu") -> dict[str, Any]:
    """Dry forward pass of a (1, 3, H, W) zero image with hooks on every module.

    Returns name -> output shape tuple (tensor outputs) or a type name (others),
    in module order. For TorchScript models: the named outputs of ``forward``.
    """
    x = torch.zeros((1, 3, *input_size), device=device)
    seen: dict[str, Any] = {}
    if is_torchscript(model):
        with torch.inference_mode():
            out = model(x)
        return {k: (tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__)
                for k, v in _script_outputs(out).items()}
    handles = []

    def hook(name):
        def f(_m, _i, o):
            seen[name] = tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
        return f
    names = [n for n, _ in model.named_modules() if n]
    for n, m in model.named_modules():
        if n:
            handles.append(m.register_forward_hook(hook(n)))
    try:
        with torch.inference_mode():
            model(x)
    except Exception as e:
        raise ModelError(f"a forward pass of a zero image of size {input_size[0]}x"
                         f"{input_size[1]} failed ({type(e).__name__}: {e}); check "
                         f"--input-size") from e
    finally:
        for h in handles:
            h.remove()
    return {n: seen[n] for n in names if n in seen}


def conv_layer_names(model: nn.Module, input_size: tuple[int, int] = (224, 224),
                     device: str | torch.device = "cpu") -> list[str]:
    """Names of the layers whose output is a 4-D tensor (B, K, h, w), in module order."""
    return [n for n, s in module_outputs(model, input_size, device).items()
            if isinstance(s, tuple) and len(s) == 4]


def _list_layers(outputs: Mapping[str, Any], limit: int = 60) -> str:
    four = [f"{n} {s[1]}x{s[2]}x{s[3]}" for n, s in outputs.items()
            if isinstance(s, tuple) and len(s) == 4]
    if not four:
        return "(this model has no layer with a 4-D output)"
    more = f", ... ({len(four) - limit} more)" if len(four) > limit else ""
    return ", ".join(four[:limit]) + more


def resolve_layers(model: nn.Module, names: Sequence[str], input_size: tuple[int, int],
                   device: str | torch.device = "cpu") -> dict[str, tuple[int, int, int]]:
    """Check each requested layer exists and outputs (B, K, h, w); return name -> (K, h, w).

    Raises LayerError naming the layer (unknown: listing the 4-D layers with K x h x w;
    not 4-D: naming the shape).
    """
    if not names:
        raise LayerError("no layer given; pass --layers a,b,...")
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise LayerError(f"layer(s) {dup} listed twice in --layers")
    outputs = module_outputs(model, input_size, device)
    modules = (set(outputs) if is_torchscript(model)
               else {n for n, _ in model.named_modules() if n})
    result = {}
    for n in names:
        if n not in modules:
            raise LayerError(f"unknown layer {n!r}; layers of this model with 4-D outputs "
                             f"(name KxHxW at input {input_size[0]}x{input_size[1]}): "
                             f"{_list_layers(outputs)}")
        if n not in outputs:
            raise LayerError(f"layer {n!r} is not called in a forward pass; layers with "
                             f"4-D outputs: {_list_layers(outputs)}")
        s = outputs[n]
        if not (isinstance(s, tuple) and len(s) == 4):
            what = s if isinstance(s, str) else f"a tensor of shape {s}"
            raise LayerError(f"layer {n!r} outputs {what}, not (B, K, h, w) maps; choose "
                             f"a layer with 4-D outputs: "
                             f"{_list_layers(outputs)}")
        result[n] = (int(s[1]), int(s[2]), int(s[3]))
    return result


class LayerCapture:
    """Capture several layers in one forward pass.

    ``with LayerCapture(model, names, transform) as cap: outs = cap(x)`` returns
    name -> ``transform(output)`` for each layer, where output is (B, K, h, w).
    ``transform`` must copy (the default does: ``.detach().clone()``), because a
    later in-place op (e.g. ReLU(inplace=True)) may overwrite a hooked output.
    A layer whose output is not 4-D raises LayerError naming it and the shape.
    """

    def __init__(self, model: nn.Module, names: Sequence[str],
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None):
        self.model = model
        self.names = list(names)
        self.transform = transform or (lambda t: t.detach().clone())
        self._out: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def _check(self, name: str, o: Any) -> torch.Tensor:
        if not isinstance(o, torch.Tensor) or o.dim() != 4:
            raise LayerError(f"layer {name!r} produced {_describe(o)}, not (B, K, h, w) maps")
        return o

    def __enter__(self) -> "LayerCapture":
        if not is_torchscript(self.model):
            modules = dict(self.model.named_modules())
            missing = [n for n in self.names if n not in modules or not n]
            if missing:
                raise LayerError(f"unknown layer(s) {missing}")
            for n in self.names:
                def hook(_m, _i, o, n=n):
                    self._out[n] = self.transform(self._check(n, o))
                self._handles.append(modules[n].register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        self._out = {}
        out = self.model(x)
        if is_torchscript(self.model):
            named = _script_outputs(out)
            missing = [n for n in self.names if n not in named]
            if missing:
                raise LayerError(f"TorchScript forward returned no output(s) {missing}; "
                                 f"it returned {sorted(named)}")
            return {n: self.transform(self._check(n, named[n])) for n in self.names}
        missing = [n for n in self.names if n not in self._out]
        if missing:
            raise LayerError(f"layer(s) {missing} were not called in the forward pass")
        return {n: self._out[n] for n in self.names}
