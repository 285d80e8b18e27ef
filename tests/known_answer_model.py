"""A hand-built "network" whose units are known detectors of the synthetic Broden.

Used as ``--model tests/known_answer_model.py:build --layers units --mean 0,0,0 --std 1,1,1``
by ``tests/test_known_answer.py``: no training, no randomness; every unit is written from the
rendering rules of :mod:`pipeline.synthetic`, so Network Dissection must name it.

The layer ``units`` maps a (B, 3, H, W) batch of pixels / 255 to (B, K, H/2, W/2) maps: the
synthetic data's segmentations are half the image size (64 -> 32 px, 224 -> 112 px), so the maps
are at segmentation resolution and upsampling is the identity. Units (:data:`UNITS`, in order):

``red-c``, ``yellow-c`` (colour)
    The generator names colours on the image box-downsampled to segmentation size, via a
    lookup table over 5-bit RGB bins (:func:`pipeline.synthetic.colors.color_labels`). The unit
    box-downsamples its input the same way (2 x 2 mean, rounded), looks the bins up in the same
    table and fires where the name is the unit's colour, graded by closeness (CIELAB Delta E)
    to the colour's nearest naming prototype: 1 + exp(-dE / 25), in (1, 2]. Only JPEG error
    near bin boundaries separates it from the ground truth.
``sky`` (object)
    Skies are painted first over the top band of outdoor scenes as a vertical gradient from a
    saturated blue at the top to a light blue at the horizon (68% of skies), with little noise.
    The unit fires where a pixel is sky-blue (B > R + 30 and B > G + 10), smooth (3 x 3 local
    residual small), brightening downwards in R and G (the gradient) and flat sideways, in the
    upper 60% of the image, graded by blueness and height. Blue walls and blue paint are flat
    (no gradient), water is rippled (not smooth), blue cars are small metal with stripes.
``banded`` (texture)
    Texture images are one whole-image pattern of two colours. Banded images are straight
    stripes: the structure tensor of every one of 4 x 4 tiles of the image is coherent (one
    gradient orientation) and strong. The unit computes, per image, the minimum over the tiles
    of the coherence (lambda1 - lambda2) / (lambda1 + lambda2) and of the gradient energy; it
    fires over the whole image (a constant map, so it covers every pixel of the image the
    scalar label covers) when the minimum coherence exceeds 0.62 and the minimum energy 150,
    graded by the coherence. In a 2,000-image sample banded images were at 0.73-0.97, other
    textures at most 0.47 (zigzag, spirals), scenes and objects at most 0.55; 4 materials
    images with a full-image striped-fabric or rippled-water background reached 0.67-0.78,
    which costs the texture IoU nothing (those images hold no texture label, so they are
    outside X_texture) and is far too little to make fabric or water the unit's label.
``dead``
    0 everywhere: T = 0 and M = S > T is empty, so it is no detector.

Frequencies decide the quantile (q): the colour units' supports are about 4-5% of all pixels,
the banded texture ~1.7% (15% of images are textures, 1 in 9 banded), the sky unit ~3.3%
(blue sky is ~6% of pixels, all skies ~9%). The test scores at q = 0.05 (a level of the default
cube): a unit whose support is below 5% has T = 0 and fires on its whole support; above 5% (a
colour in some seeds) its grading decides which pixels make the top 5%. It also checks
q = 0.02, where only the grading keeps the colour and sky masks inside their concepts.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pipeline.synthetic.catalogue import LABELS  # noqa: E402
from pipeline.synthetic.colors import (COLOR_BITS, PROTOTYPES, color_lut,  # noqa: E402
                                       srgb_to_lab)

#: Unit names in channel order: concept names of pipeline.synthetic.catalogue, and "dead".
UNITS: tuple[str, ...] = ("red-c", "sky", "banded", "dead", "yellow-c")
#: The live units (each must come out as a detector of its own name).
LIVE_UNITS: tuple[str, ...] = tuple(u for u in UNITS if u != "dead")
#: The activation quantile the test scores at (see the module docstring).
QUANTILE = 0.05

_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]) / 8.0


def _lab_torch(rgb: torch.Tensor) -> torch.Tensor:
    """CIELAB of (..., 3) float64 sRGB in [0, 255] (as pipeline.synthetic.colors.srgb_to_lab)."""
    c = rgb / 255.0
    lin = torch.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    m = torch.tensor([[0.4124564, 0.3575761, 0.1804375],
                      [0.2126729, 0.7151522, 0.0721750],
                      [0.0193339, 0.1191920, 0.9503041]], dtype=torch.float64)
    m = m / torch.tensor([[0.95047], [1.0], [1.08883]], dtype=torch.float64)
    xyz = lin @ m.T
    f = torch.where(xyz > 0.008856, torch.pow(xyz.clamp_min(0), 1.0 / 3.0),
                    7.787 * xyz + 16.0 / 116.0)
    return torch.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]),
                        200.0 * (f[..., 1] - f[..., 2])], dim=-1)


class KnownUnits(nn.Module):
    """(B, 3, H, W) float pixels / 255 -> (B, len(UNITS), H // 2, W // 2) float32."""

    def __init__(self):
        super().__init__()
        self.register_buffer("color_lut", torch.from_numpy(color_lut().astype(np.int64)))
        protos = {}
        for name in ("red", "yellow"):
            protos[name] = torch.from_numpy(srgb_to_lab(np.array(PROTOTYPES[name], float)))
        self.register_buffer("red_protos", protos["red"])
        self.register_buffer("yellow_protos", protos["yellow"])

    # --- helpers
    @staticmethod
    def _down(x255: torch.Tensor) -> torch.Tensor:
        """2 x 2 box mean, rounded like PIL's BOX resize: (B, 3, h, w) float64 0..255."""
        return torch.floor(F.avg_pool2d(x255, 2) + 0.5).clamp(0, 255)

    def _color_unit(self, down: torch.Tensor, name: str, protos: torch.Tensor) -> torch.Tensor:
        q = down.to(torch.int64) >> (8 - COLOR_BITS)
        idx = (q[:, 0] << (2 * COLOR_BITS)) | (q[:, 1] << COLOR_BITS) | q[:, 2]
        hit = self.color_lut[idx] == LABELS[f"{name}-c"]                    # (B, h, w)
        lab = _lab_torch(down.permute(0, 2, 3, 1))                           # (B, h, w, 3)
        de = torch.cdist(lab.reshape(-1, 3), protos).min(dim=1).values.reshape(hit.shape)
        return hit * (1.0 + torch.exp(-de / 25.0))

    @staticmethod
    def _sky_unit(d: torch.Tensor) -> torch.Tensor:
        """d: (B, 3, h, w) float64 box-downsampled pixels 0..255."""
        B, _, h, w = d.shape
        pad = F.pad(d, (1, 1, 1, 1), mode="replicate")
        blur = F.avg_pool2d(pad, 3, stride=1)
        resid = (d - blur).abs().sum(1)                                      # (B, h, w)
        gy = (pad[:, :, 2:, 1:-1] - pad[:, :, :-2, 1:-1]) / 2                # d/dy per row
        gx = (pad[:, :, 1:-1, 2:] - pad[:, :, 1:-1, :-2]) / 2
        gy = F.avg_pool2d(F.pad(gy, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        gx = F.avg_pool2d(F.pad(gx, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        r, g, b = d[:, 0], d[:, 1], d[:, 2]
        y = (torch.arange(h, dtype=d.dtype) + 0.5) / h
        blue = (b > r + 30) & (b > g + 10)
        ramp = (gy[:, 0] > 1.0) & (gy[:, 1] > 0.7) & (gx[:, :2].abs().amax(1) < 2.0)
        smooth = resid < 12.0
        top = (y < 0.6)[None, :, None]
        grade = (b - r).clamp(0, 255) / 255.0 + (1.0 - y)[None, :, None]
        return (blue & ramp & smooth & top) * (0.5 + grade)

    @staticmethod
    def _banded_unit(x255: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
        """Whole-image unit: constant over each image. x255: (B, 3, H, W) float64."""
        B, C, H, W = x255.shape
        k = _SOBEL.to(x255.dtype)
        kx = k.view(1, 1, 3, 3).repeat(C, 1, 1, 1)
        ky = k.T.contiguous().view(1, 1, 3, 3).repeat(C, 1, 1, 1)
        pad = F.pad(x255, (1, 1, 1, 1), mode="replicate")
        gx = F.conv2d(pad, kx, groups=C)
        gy = F.conv2d(pad, ky, groups=C)
        jxx, jyy, jxy = (gx * gx).sum(1), (gy * gy).sum(1), (gx * gy).sum(1)   # (B, H, W)
        tiles = lambda a: F.adaptive_avg_pool2d(a[:, None], 4)[:, 0]        # noqa: E731
        txx, tyy, txy = tiles(jxx), tiles(jyy), tiles(jxy)                   # (B, 4, 4)
        tr = txx + tyy
        coh = torch.sqrt((txx - tyy) ** 2 + 4 * txy ** 2) / tr.clamp_min(1e-9)
        cmin = coh.flatten(1).min(1).values                                  # (B,)
        emin = tr.flatten(1).min(1).values
        fire = (cmin > 0.62) & (emin > 150.0)
        val = fire * (0.5 + cmin)
        return val[:, None, None].expand(B, *out_hw)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x255 = (x.detach().to(torch.float64) * 255.0).round().clamp(0, 255)
        B, _, H, W = x255.shape
        down = self._down(x255)
        h, w = down.shape[-2:]
        maps = {
            "red-c": self._color_unit(down, "red", self.red_protos),
            "yellow-c": self._color_unit(down, "yellow", self.yellow_protos),
            "sky": self._sky_unit(down),
            "banded": self._banded_unit(x255, (h, w)),
            "dead": torch.zeros((B, h, w), dtype=torch.float64),
        }
        return torch.stack([maps[u] for u in UNITS], dim=1).to(torch.float32)


class KnownAnswerNet(nn.Module):
    """The whole model: its only layer is ``units``."""

    def __init__(self):
        super().__init__()
        self.units = KnownUnits()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.units(x)


def build() -> nn.Module:
    """Factory for ``--model tests/known_answer_model.py:build`` (eval mode)."""
    return KnownAnswerNet().eval()


#: The red detector written into torchvision resnet18's conv1 unit 0 (centre tap of the
#: 7 x 7 kernel, on pixels / 255) and bn1's bias: relu(R - 1.5 G - 0.5 B - 0.15).
RED_WEIGHTS, RED_THRESHOLD = (1.0, -1.5, -0.5), 0.15


def red_resnet18_state_dict() -> dict[str, torch.Tensor]:
    """Weights for ``--model torchvision:resnet18``: layer ``relu`` (after conv1, bn1; stride
    2, so its maps are at the synthetic data's segmentation size) has unit 0 =
    relu(R - 1.5 G - 0.5 B - 0.15) at input pixel (2i, 2j) and 63 dead units; the rest of
    the network is its seeded random init."""
    from pipeline.models.sources import load_model
    m = load_model("torchvision:resnet18")
    with torch.no_grad():
        m.conv1.weight.zero_()
        m.conv1.weight[0, :, 3, 3] = torch.tensor(RED_WEIGHTS)
        m.bn1.weight.zero_()
        m.bn1.bias.zero_()
        m.bn1.weight[0] = 1.0
        m.bn1.bias[0] = -RED_THRESHOLD
        m.bn1.running_mean.zero_()
        m.bn1.running_var.fill_(1.0 - m.bn1.eps)         # (x - 0) / sqrt(var + eps) = x
    return m.state_dict()
