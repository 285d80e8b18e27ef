"""Layer hooks: which layers a model has, and their outputs in a forward pass.

:class:`ModuleHooks` is the only code that registers forward hooks (and it removes
them on exit); :func:`module_outputs` and :class:`LayerCapture` are built on it.

Layers of an eager model are its named modules (``model.named_modules()`` names,
e.g. ``conv5``, ``layer4.1``, ``features.10``); a module called several times in one
forward pass yields the output of its last call. Only layers whose output is a 4-D
tensor (B, K, h, w) can be extracted. PyTorch cannot hook modules inside TorchScript,
so a TorchScript model's layers are what its ``forward`` returns: a tensor (layer
``output``), a tuple/list (``output.0``, ``output.1``, ...) or a dict of tensors (its
keys).
"""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from pipeline.models.errors import LayerError, ModelError


def is_torchscript(model: nn.Module) -> bool:
    return isinstance(model, torch.jit.ScriptModule)


class ModuleHooks:
    """Forward hooks on named modules of an eager model, for the duration of a ``with``.

    ``with ModuleHooks(model, names, record): model(x)`` calls ``record(name, output)``
    after each call of each module in ``names`` (names from ``model.named_modules()``;
    all must exist); the hooks are removed on exit, also after an error.
    """

    def __init__(self, model: nn.Module, names: Sequence[str],
                 record: Callable[[str, Any], None]):
        self.model = model
        self.names = list(names)
        self.record = record
        self._handles: list = []

    def __enter__(self) -> "ModuleHooks":
        modules = dict(self.model.named_modules())
        for n in self.names:
            def hook(_m, _i, o, n=n):
                self.record(n, o)
            self._handles.append(modules[n].register_forward_hook(hook))
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


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

    def record(name: str, o: Any) -> None:
        seen[name] = tuple(o.shape) if isinstance(o, torch.Tensor) else type(o).__name__
    names = [n for n, _ in model.named_modules() if n]
    with ModuleHooks(model, names, record):
        try:
            with torch.inference_mode():
                model(x)
        except Exception as e:
            raise ModelError(f"a forward pass of a zero image of size {input_size[0]}x"
                             f"{input_size[1]} failed ({type(e).__name__}: {e}); check "
                             f"--input-size") from e
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
        self._hooks: ModuleHooks | None = None

    def _check(self, name: str, o: Any) -> torch.Tensor:
        if not isinstance(o, torch.Tensor) or o.dim() != 4:
            raise LayerError(f"layer {name!r} produced {_describe(o)}, not (B, K, h, w) maps")
        return o

    def _record(self, name: str, o: Any) -> None:
        self._out[name] = self.transform(self._check(name, o))

    def __enter__(self) -> "LayerCapture":
        if not is_torchscript(self.model):
            modules = dict(self.model.named_modules())
            missing = [n for n in self.names if n not in modules or not n]
            if missing:
                raise LayerError(f"unknown layer(s) {missing}")
            self._hooks = ModuleHooks(self.model, self.names, self._record).__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self._hooks is not None:
            self._hooks.__exit__(*exc)
            self._hooks = None

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
