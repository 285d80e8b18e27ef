"""Layouts: how a layer's output tensor holds its (K units) x (h, w) maps, and turning it
into the (B, K, h, w) maps the cache stores.

- ``channels_first``: (B, K, h, w) as it is (CNNs).
- ``channels_last``: (B, h, w, K) (Swin stages, layers inside ConvNeXt blocks).
- ``tokens``: (B, prefix + h*w, K), the ``prefix`` tokens (CLS, distillation, registers)
  first, then the patches in row-major order of an (h, w) grid (ViTs); the prefix is
  dropped. Written ``tokens[:prefix=P,grid=HxW]``; what is not given is taken from the
  model (timm ViTs: ``num_prefix_tokens`` and ``patch_embed``).

A layer's layout is the one the user declares (``--layout``), else the one its model
family implies (:func:`infer_layout`: timm/torchvision ViTs -> tokens; Swin and ConvNeXt
-> channels_last where the shape shows it), else channels_first when the shape can only
be (B, K, h, w). Anything else (a 4-D output whose dims 1-2, not 2-3, look like the map
grid; a (B, heads, tokens, d) attention tensor; a 3-D output of a model without known
tokens) is refused by :class:`LayoutError` naming the option, never guessed.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from pipeline.models.errors import LayerError

LAYOUTS = ("channels_first", "channels_last", "tokens")
LAYOUT_OPTION = "--layout [LAYER=]channels_last|tokens[:prefix=1,grid=14x14]|channels_first"
# families whose 4-D outputs may be channels-last: class paths in a model's MRO
CHANNELS_LAST_FAMILIES = (
    "timm.models.swin_transformer.SwinTransformer",
    "timm.models.swin_transformer_v2.SwinTransformerV2",
    "timm.models.convnext.ConvNeXt",
    "torchvision.models.swin_transformer.SwinTransformer",
    "torchvision.models.convnext.ConvNeXt",
)


class LayoutError(LayerError):
    """A layer's output cannot be read as maps without a declared --layout."""


@dataclass(frozen=True)
class Layout:
    """kind: one of :data:`LAYOUTS`; tokens: ``prefix`` tokens dropped and the patches on a
    ``grid`` (h, w); None = from the model. ``source``: "declared" (--layout), "model"
    (its family) or "shape" (the only reading of a 4-D shape)."""
    kind: str
    prefix: int | None = None
    grid: tuple[int, int] | None = None
    source: str = "declared"

    def describe(self) -> str:
        if self.kind != "tokens":
            return self.kind
        grid = "x".join(map(str, self.grid)) if self.grid else "model"
        return f"tokens:prefix={self.prefix},grid={grid}"

    def to_attrs(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "source": self.source}
        if self.kind == "tokens":
            out.update(prefix=self.prefix, grid=list(self.grid) if self.grid else None)
        return out

    def map_shape(self, shape: tuple[int, ...]) -> tuple[int, int, int]:
        """(K, h, w) of an output of ``shape`` (checked: LayoutError if it does not fit)."""
        if self.kind == "tokens":
            if len(shape) != 3 or self.grid is None or self.prefix is None or \
                    shape[1] != self.prefix + self.grid[0] * self.grid[1]:
                raise LayoutError(f"layout {self.describe()} needs a (B, tokens, K) output "
                                  f"with tokens = prefix + h*w, got shape {tuple(shape)}")
            return int(shape[2]), int(self.grid[0]), int(self.grid[1])
        if len(shape) != 4:
            raise LayoutError(f"layout {self.kind} needs a 4-D output, got shape "
                              f"{tuple(shape)}")
        if self.kind == "channels_last":
            return int(shape[3]), int(shape[1]), int(shape[2])
        return int(shape[1]), int(shape[2]), int(shape[3])

    def adapt(self, t: torch.Tensor) -> torch.Tensor:
        """The output ``t`` as contiguous (B, K, h, w) maps (a contiguous channels_first
        output is returned as it is, not copied)."""
        K, h, w = self.map_shape(tuple(t.shape))
        if self.kind == "channels_first":
            return t.contiguous()
        if self.kind == "channels_last":
            return t.permute(0, 3, 1, 2).contiguous()
        patches = t[:, self.prefix:, :]                          # (B, h*w, K)
        return patches.transpose(1, 2).reshape(t.shape[0], K, h, w).contiguous()


def parse_layout(text: str, flag: str = "--layout") -> Layout:
    """``channels_first`` | ``channels_last`` | ``tokens[:prefix=P,grid=HxW]``."""
    kind, _, args = text.strip().partition(":")
    kind = kind.strip().replace("-", "_")
    if kind not in LAYOUTS:
        raise LayerError(f"{flag} {text!r}: expected {LAYOUT_OPTION.split(' ', 1)[1]}")
    if args and kind != "tokens":
        raise LayerError(f"{flag} {text!r}: only tokens takes arguments (prefix=, grid=)")
    prefix, grid = None, None
    for part in filter(None, (p.strip() for p in args.split(","))):
        key, _, val = part.partition("=")
        if key == "prefix" and val.isdigit():
            prefix = int(val)
        elif key == "grid" and re.fullmatch(r"[1-9]\d*x[1-9]\d*", val):
            grid = tuple(int(v) for v in val.split("x"))
        else:
            raise LayerError(f"{flag} {text!r}: bad argument {part!r}; expected prefix=N "
                             f"(tokens before the patches) or grid=HxW (e.g. grid=14x14)")
    return Layout(kind, prefix, grid, "declared")


def parse_layouts(values: list[str] | None) -> dict[str, Layout]:
    """--layout values -> {layer name or "" (every layer without its own): Layout}.
    A value is ``LAYOUT`` or ``LAYER=LAYOUT``."""
    out: dict[str, Layout] = {}
    for v in values or []:
        head = v.partition(":")[0]
        name, eq, _ = head.partition("=")
        key, text = (name.strip(), v.split("=", 1)[1]) if eq else ("", v)
        if key in out:
            raise LayerError(f"--layout given twice for {key or 'every layer'!r}")
        out[key] = parse_layout(text)
    return out


def _mro_names(model: nn.Module) -> set[str]:
    return {f"{c.__module__}.{c.__qualname__}" for c in type(model).__mro__}


def token_geometry(model: nn.Module, input_size: tuple[int, int]
                   ) -> tuple[int, tuple[int, int]] | None:
    """(number of prefix tokens, patch grid (h, w)) of a ViT at ``input_size``: timm
    (``num_prefix_tokens``, ``patch_embed.patch_size``) or torchvision
    (``class_token``, ``patch_size``); None for other models."""
    pe = getattr(model, "patch_embed", None)
    if isinstance(getattr(model, "num_prefix_tokens", None), int) and pe is not None:
        patch = getattr(pe, "patch_size", None)
        if isinstance(patch, (tuple, list)) and len(patch) == 2:
            if getattr(pe, "dynamic_img_size", False) or not hasattr(pe, "grid_size"):
                return model.num_prefix_tokens, (input_size[0] // patch[0],
                                                 input_size[1] // patch[1])
            return model.num_prefix_tokens, tuple(int(g) for g in pe.grid_size)
    if "torchvision.models.vision_transformer.VisionTransformer" in _mro_names(model):
        p = int(model.patch_size)
        return 1, (input_size[0] // p, input_size[1] // p)
    return None


def _grid_like(h: int, w: int, size: tuple[int, int]) -> bool:
    """Could (h, w) be a feature-map grid of an (H, W) input: within it and of its aspect
    ratio to one cell (a stride-s map has ~H/s x W/s cells)."""
    H, W = size
    return 1 <= h <= H and 1 <= w <= W and abs(h * W - w * H) <= max(H, W)


def _check_batch(name: str, shape: tuple) -> None:
    """A dry-pass output (batch 1) whose first dimension is not 1 mixes the batch with
    something else (e.g. Swin's attention windows): refused."""
    if len(shape) >= 2 and shape[0] != 1:
        raise LayoutError(f"layer {name!r} outputs a tensor of shape {shape} for one "
                          f"image: its first dimension is not the batch (e.g. attention "
                          f"windows); choose another layer (e.g. the block or stage "
                          f"around it)")


def infer_layout(model: nn.Module, name: str, shape: Any, input_size: tuple[int, int]
                 ) -> Layout:
    """The layout of layer ``name`` (dry-pass output ``shape``, batch 1) without a declared
    one (module docstring); LayoutError (naming --layout) when the shape is ambiguous or
    not maps."""
    where = f"layer {name!r} outputs"
    if not isinstance(shape, tuple):
        raise LayerError(f"{where} {shape}, not (B, K, h, w) maps")
    _check_batch(name, shape)
    tokens = token_geometry(model, input_size)
    if len(shape) == 3 and tokens is not None:
        prefix, (gh, gw) = tokens
        for p in dict.fromkeys((prefix, 0)):
            if shape[1] == p + gh * gw:
                return Layout("tokens", p, (gh, gw), "model")
    if len(shape) == 4:
        cf, cl = _grid_like(shape[2], shape[3], input_size), \
            _grid_like(shape[1], shape[2], input_size)
        channels_last_family = bool(_mro_names(model) & set(CHANNELS_LAST_FAMILIES))
        attention = tokens is not None and shape[2] == tokens[0] + math.prod(tokens[1])
        if cf and not attention and not (cl and channels_last_family):
            return Layout("channels_first", source="shape")
        if cl and not cf and channels_last_family:
            return Layout("channels_last", source="model")
        why = ("an attention tensor (B, heads, tokens, d)" if attention else
               "channels-last (B, h, w, K) maps" if cl and not cf else
               "ambiguous: (B, K, h, w) or (B, h, w, K)" if cl else
               "not a (B, K, h, w) map")
        raise LayoutError(f"{where} a tensor of shape {shape}, which looks like {why}; "
                          f"declare how it holds maps with {LAYOUT_OPTION}, or choose "
                          f"another layer")
    if len(shape) == 3:
        raise LayoutError(f"{where} a tensor of shape {shape} (B, N, K) of a model whose "
                          f"tokens are unknown here; if it holds a prefix and an h x w "
                          f"grid of patch tokens, declare them with {LAYOUT_OPTION}")
    raise LayerError(f"{where} a tensor of shape {shape}, not (B, K, h, w) maps")


def complete_layout(declared: Layout, model: nn.Module, name: str, shape: Any,
                    input_size: tuple[int, int]) -> Layout:
    """A declared layout with what it leaves out filled in (tokens: the prefix and grid
    from the model, or the one the other and the token count imply), checked against
    layer ``name``'s dry-pass ``shape`` (LayoutError naming the layer)."""
    if not isinstance(shape, tuple):
        raise LayerError(f"layer {name!r} outputs {shape}, not a tensor")
    _check_batch(name, shape)
    layout = declared
    if layout.kind == "tokens" and len(shape) == 3 and (layout.prefix is None or
                                                         layout.grid is None):
        prefix, grid = layout.prefix, layout.grid
        geometry = token_geometry(model, input_size)
        tokens = shape[1]
        if prefix is None and grid is None and geometry is not None:
            prefix, grid = geometry
        elif prefix is None and grid is not None:
            prefix = tokens - grid[0] * grid[1]
        elif prefix is not None and grid is None:
            side = math.isqrt(max(0, tokens - prefix))
            if geometry is not None and math.prod(geometry[1]) == tokens - prefix:
                grid = geometry[1]
            elif side and side * side == tokens - prefix:
                grid = (side, side)
        if grid is None or prefix is None or prefix < 0:
            raise LayoutError(f"layer {name!r} outputs shape {shape}: --layout tokens "
                              f"cannot tell its prefix and grid here; give them, e.g. "
                              f"tokens:prefix=1,grid=14x14")
        layout = Layout("tokens", prefix, grid, "declared")
    try:
        K, h, w = layout.map_shape(shape)
    except LayoutError as e:
        raise LayoutError(f"layer {name!r}: {e}") from None
    if layout.kind != "tokens" and not _grid_like(h, w, input_size):
        raise LayoutError(f"layer {name!r} outputs shape {shape}: read as {layout.kind} its "
                          f"maps would be {h}x{w}, which cannot be a grid of a "
                          f"{input_size[0]}x{input_size[1]} input; give this layer its own "
                          f"layout (--layout {name}=...)")
    return layout
