"""Layer hooks: which layers a model has, and their outputs in a forward pass.

:class:`ModuleHooks` is the only code that registers forward hooks (and it removes
them on exit); :func:`module_outputs` and :class:`LayerCapture` are built on it.

Layers of an eager model are its named modules (``model.named_modules()`` names,
e.g. ``conv5``, ``layer4.1``, ``features.10``, ``blocks.11``); a module called several
times in one forward pass yields the output of its last call. A layer's output is read
as (B, K, h, w) maps through its layout (pipeline/models/layouts.py: declared, implied
by the model family, or the only reading of the shape); the capture adapts it, so what
is stored is always (B, K, h, w). :func:`plan_layers` also warns when an in-place module
(ReLU(inplace=True)) changes a hooked output afterwards: the stored maps precede it. PyTorch cannot hook modules inside TorchScript,
so a TorchScript model's layers are what its ``forward`` returns: a tensor (layer
``output``), a tuple/list (``output.0``, ``output.1``, ...) or a dict of tensors (its
keys).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from pipeline.models.errors import LayerError, ModelError
from pipeline.models.layouts import Layout, complete_layout, infer_layout

CHANNELS_FIRST = Layout("channels_first")


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


IN_PLACE_CODE = ""      # a follower that is no module: an in-place op of forward's code


def _dry_pass(model: nn.Module, input_size: tuple[int, int], device: str | torch.device
              ) -> tuple[dict[str, Any], dict[str, str]]:
    """One forward pass of a (1, 3, H, W) zero image with hooks on every module: (name ->
    output shape tuple or type name, in module order; name -> what changes that output in
    place after it is computed, which the stored copy precedes: the in-place module (e.g.
    ReLU(inplace=True)) called next on the same tensor, or :data:`IN_PLACE_CODE` for an
    in-place op of the forward code (``F.relu(x, inplace=True)``, ``x += y``), seen by the
    tensor's version counter). For TorchScript models: the named outputs of ``forward``
    and no followers."""
    x = torch.zeros((1, 3, *input_size), device=device)
    if is_torchscript(model):
        with torch.inference_mode():
            out = model(x)
        return ({k: (tuple(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__)
                 for k, v in _script_outputs(out).items()}, {})
    seen: dict[str, Any] = {}
    # (name, output data_ptr, the output, its version): holding every output keeps its
    # memory from being reused, so equal data pointers mean the same tensor (a batch-1
    # pass is small)
    calls: list[tuple[str, int, Any, int]] = []
    modules = dict(model.named_modules())

    def record(name: str, o: Any) -> None:
        tensor = isinstance(o, torch.Tensor)
        seen[name] = tuple(o.shape) if tensor else type(o).__name__
        calls.append((name, o.data_ptr() if tensor else -1, o, o._version if tensor else 0))
    names = [n for n in modules if n]
    with ModuleHooks(model, names, record):
        try:
            with torch.no_grad():       # not inference_mode: it keeps no version counters
                model(x)
        except Exception as e:
            raise ModelError(f"a forward pass of a zero image of size {input_size[0]}x"
                             f"{input_size[1]} failed ({type(e).__name__}: {e}); check "
                             f"--input-size") from e
    followers: dict[str, str] = {}
    for i, (name, ptr, out, version) in enumerate(calls):
        later = [n for n, p, _, _ in calls[i + 1:] if p == ptr and p != -1
                 and getattr(modules[n], "inplace", False) is True]
        if later:
            followers[name] = later[0]
        elif ptr != -1 and out._version != version:
            followers[name] = IN_PLACE_CODE
        else:
            followers.pop(name, None)                     # its last call is what is kept
    return {n: seen[n] for n in names if n in seen}, followers


def module_outputs(model: nn.Module, input_size: tuple[int, int],
                   device: str | torch.device = "cpu") -> dict[str, Any]:
    """Dry forward pass of a (1, 3, H, W) zero image with hooks on every module.

    Returns name -> output shape tuple (tensor outputs) or a type name (others),
    in module order. For TorchScript models: the named outputs of ``forward``.
    """
    return _dry_pass(model, input_size, device)[0]


def _map_layers(model: nn.Module, outputs: Mapping[str, Any], input_size: tuple[int, int]
                ) -> dict[str, tuple[Layout, tuple[int, int, int]]]:
    """The layers readable as maps without a declared layout: name -> (layout, (K, h, w))."""
    found = {}
    for n, s in outputs.items():
        try:
            layout = infer_layout(model, n, s, input_size)
        except LayerError:
            continue
        found[n] = (layout, layout.map_shape(s))
    return found


def conv_layer_names(model: nn.Module, input_size: tuple[int, int] = (224, 224),
                     device: str | torch.device = "cpu") -> list[str]:
    """Names of the layers whose output reads as (B, K, h, w) maps without a declared
    layout (pipeline/models/layouts.py), in module order."""
    return list(_map_layers(model, module_outputs(model, input_size, device), input_size))


def _list_layers(model: nn.Module, outputs: Mapping[str, Any], input_size: tuple[int, int],
                 limit: int = 60) -> str:
    """The layers that read as maps, ``name KxHxW (layout)``; beyond ``limit`` only the
    shallowest ones (fewest dots in the name) that fit, and a count of the others."""
    found = _map_layers(model, outputs, input_size)
    if not found:
        return "(no layer of this model reads as maps without --layout)"
    depth = max(n.count(".") for n in found)
    while depth > 0 and sum(n.count(".") <= depth for n in found) > limit:
        depth -= 1
    shown = [n for n in found if n.count(".") <= depth][:limit]
    text = ", ".join(f"{n} {K}x{h}x{w}" + ("" if lay.kind == "channels_first"
                                           else f" ({lay.kind})")
                     for n in shown for lay, (K, h, w) in [found[n]])
    hidden = [n for n in found if n not in set(shown)]
    return text + (f", and {len(hidden)} more inside them, e.g. {hidden[0]}" if hidden else "")


@dataclass
class LayerPlan:
    """Requested layers resolved: shapes name -> (K, h, w) as stored, layouts name ->
    Layout (how the output becomes those maps), warnings (messages for the user)."""
    shapes: dict[str, tuple[int, int, int]]
    layouts: dict[str, Layout]
    warnings: list[str] = field(default_factory=list)


def _check_names(names: Sequence[str]) -> None:
    if not names:
        raise LayerError("no layer given; pass --layers a,b,...")
    dup = sorted({n for n in names if list(names).count(n) > 1})
    if dup:
        raise LayerError(f"layer(s) {dup} listed twice in --layers")


def plan_layers(model: nn.Module, names: Sequence[str], input_size: tuple[int, int],
                device: str | torch.device = "cpu",
                layouts: Mapping[str, Layout] | None = None) -> LayerPlan:
    """Check each requested layer exists and reads as maps: by its declared layout
    (``layouts[name]``, else ``layouts[""]``), else :func:`infer_layout`. LayerError names
    the layer (unknown or unreadable: listing the layers that read as maps, K x h x w).
    Warns for a layer whose output an in-place module changes afterwards."""
    _check_names(names)
    layouts = dict(layouts or {})
    unknown = [k for k in layouts if k and k not in names]
    if unknown:
        raise LayerError(f"--layout names layer(s) {unknown} that are not in --layers")
    outputs, followers = _dry_pass(model, input_size, device)
    modules = (set(outputs) if is_torchscript(model)
               else {n for n, _ in model.named_modules() if n})
    plan = LayerPlan({}, {})
    for n in names:
        listing = f"layers that read as maps (name KxHxW at input {input_size[0]}x" \
                  f"{input_size[1]}): {_list_layers(model, outputs, input_size)}"
        if n not in modules:
            raise LayerError(f"unknown layer {n!r}; {listing}")
        if n not in outputs:
            raise LayerError(f"layer {n!r} is not called in a forward pass; {listing}")
        declared = layouts.get(n, layouts.get(""))
        try:
            layout = (complete_layout(declared, model, n, outputs[n], input_size)
                      if declared else infer_layout(model, n, outputs[n], input_size))
        except LayerError as e:
            raise type(e)(f"{e}. {listing}") from None
        plan.layouts[n], plan.shapes[n] = layout, layout.map_shape(outputs[n])
        if n in followers:
            plan.warnings.append(_in_place_warning(model, n, followers[n]))
    return plan


def _in_place_warning(model: nn.Module, name: str, follower: str) -> str:
    if follower == IN_PLACE_CODE:
        return (f"warning: layer {name!r} is changed in place after it is computed, by the "
                f"model's forward code (an op such as F.relu(x, inplace=True), x.relu_() or "
                f"x += y, not a module): its maps are stored before that change (e.g. "
                f"pre-ReLU); hook a module whose output follows the change for the maps "
                f"after it")
    kind = type(dict(model.named_modules())[follower]).__name__
    return (f"warning: layer {name!r} is followed by the in-place {kind} {follower!r}: its "
            f"maps are stored before {follower!r} changes them (e.g. pre-ReLU); pass "
            f"--layers {follower} for the maps after it")


def resolve_layers(model: nn.Module, names: Sequence[str], input_size: tuple[int, int],
                   device: str | torch.device = "cpu") -> dict[str, tuple[int, int, int]]:
    """:func:`plan_layers` without declared layouts: name -> (K, h, w)."""
    return plan_layers(model, names, input_size, device).shapes


class LayerCapture:
    """Capture several layers in one forward pass.

    ``with LayerCapture(model, names, transform, layouts) as cap: outs = cap(x)`` returns
    name -> ``transform(maps)`` for each layer, where maps is the output adapted to
    (B, K, h, w) by ``layouts[name]`` (:class:`pipeline.models.layouts.Layout`; default
    channels_first, i.e. the output as it is). ``transform`` must copy (the default does:
    ``.detach().clone()``), because a later in-place op (e.g. ReLU(inplace=True)) may
    overwrite a hooked output. An output that does not fit its layout raises LayerError
    naming the layer and the shape.
    """

    def __init__(self, model: nn.Module, names: Sequence[str],
                 transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
                 layouts: Mapping[str, Layout] | None = None):
        self.model = model
        self.names = list(names)
        self.transform = transform or (lambda t: t.detach().clone())
        self.layouts = {n: (layouts or {}).get(n, CHANNELS_FIRST) for n in self.names}
        self._out: dict[str, torch.Tensor] = {}
        self._hooks: ModuleHooks | None = None

    def _maps(self, name: str, o: Any) -> torch.Tensor:
        if not isinstance(o, torch.Tensor):
            raise LayerError(f"layer {name!r} produced {_describe(o)}, not (B, K, h, w) maps")
        try:
            return self.layouts[name].adapt(o)
        except LayerError as e:
            raise LayerError(f"layer {name!r} produced {_describe(o)}, not (B, K, h, w) "
                             f"maps ({e})") from None

    def _record(self, name: str, o: Any) -> None:
        self._out[name] = self.transform(self._maps(name, o))

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
            return {n: self.transform(self._maps(n, named[n])) for n in self.names}
        missing = [n for n in self.names if n not in self._out]
        if missing:
            raise LayerError(f"layer(s) {missing} were not called in the forward pass")
        return {n: self._out[n] for n in self.names}
