"""Colour naming: the colour label of each pixel, by nearest CIELAB prototype.

Colour labels name the colour of the rendered image box-downsampled to segmentation
resolution (:func:`downsample_rgb`), looked up per 5-bit RGB bin (:func:`color_labels`).
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from pipeline.synthetic.catalogue import COLOR_NAMES
from pipeline.synthetic.catalogue import LABELS as _L

# Colour-naming prototypes (sRGB). Like the colour-naming model behind Broden's colour
# labels (van de Weijer et al., a table over 32 x 32 x 32 RGB bins), names are looked up
# per 5-bit RGB bin: a bin gets the name of the prototype nearest to its centre in
# CIELAB, or 0 (no clear colour) when the nearest prototypes of the two closest names
# are less than COLOR_MARGIN (Delta E 1976) apart.
PROTOTYPES = {
    "black": [(0, 0, 0), (38, 38, 40)],
    "blue": [(25, 45, 180), (60, 110, 220), (130, 175, 235), (30, 55, 110), (60, 190, 235)],
    "brown": [(110, 66, 32), (150, 102, 62), (80, 52, 30)],
    "grey": [(128, 128, 128), (92, 92, 94), (172, 172, 170)],
    "green": [(35, 140, 45), (100, 170, 60), (30, 82, 32), (150, 200, 105), (30, 150, 120)],
    "orange": [(240, 140, 30), (220, 108, 40)],
    "pink": [(240, 160, 190), (220, 120, 160)],
    "purple": [(120, 42, 140), (160, 102, 190)],
    "red": [(200, 30, 30), (150, 22, 24)],
    "white": [(246, 246, 246), (222, 222, 226)],
    "yellow": [(240, 220, 40), (232, 206, 104)],
}
COLOR_MARGIN = 2.0
COLOR_BITS = 5


_RGB2XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                     [0.2126729, 0.7151522, 0.0721750],
                     [0.0193339, 0.1191920, 0.9503041]]) / np.array([[0.95047], [1.0], [1.08883]])


def srgb_to_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of sRGB colours: (..., 3) float in [0, 255] -> (..., 3) float64."""
    c = np.asarray(rgb, dtype=np.float64) / 255.0
    lin = np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)
    xyz = lin @ _RGB2XYZ.T
    f = np.where(xyz > 0.008856, np.cbrt(xyz), 7.787 * xyz + 16.0 / 116.0)
    return np.stack([116.0 * f[..., 1] - 16.0, 500.0 * (f[..., 0] - f[..., 1]),
                     200.0 * (f[..., 1] - f[..., 2])], axis=-1)


def name_colors(rgb: np.ndarray) -> np.ndarray:
    """Exact nearest-prototype colour naming.

    rgb: (n, 3) float sRGB in [0, 255]; returns (n,) int32 label numbers (0 = unclear).
    """
    lab = srgb_to_lab(rgb)
    names = [n for n in COLOR_NAMES for _ in PROTOTYPES[n]]
    protos = srgb_to_lab(np.array([p for n in COLOR_NAMES for p in PROTOTYPES[n]], float))
    d = np.sqrt(((lab[:, None, :] - protos[None, :, :]) ** 2).sum(-1))     # (n, P)
    dn = np.stack([d[:, [i for i, m in enumerate(names) if m == n]].min(1)
                   for n in COLOR_NAMES], axis=1)                           # (n, 11)
    order = np.argsort(dn, axis=1, kind="stable")
    rows = np.arange(len(dn))
    out = np.array([_L[f"{n}-c"] for n in COLOR_NAMES], dtype=np.int32)[order[:, 0]]
    out[dn[rows, order[:, 1]] - dn[rows, order[:, 0]] < COLOR_MARGIN] = 0
    return out


@functools.lru_cache(maxsize=1)
def color_lut() -> np.ndarray:
    """(2**(3*COLOR_BITS),) int32 colour label of each RGB bin (named at its centre)."""
    q = 1 << COLOR_BITS
    step = 256 / q
    centre = (np.arange(q) + 0.5) * step - 0.5
    r, g, b = np.meshgrid(centre, centre, centre, indexing="ij")
    return name_colors(np.stack([r, g, b], axis=-1).reshape(-1, 3))


def color_labels(rgb: np.ndarray) -> np.ndarray:
    """Colour label numbers of pixels: (h, w, 3) uint8 -> (h, w) int32 (0 = no clear
    colour): the name of each pixel's RGB bin (see :func:`name_colors`)."""
    s = 8 - COLOR_BITS
    q = np.asarray(rgb, dtype=np.uint8) >> s
    idx = (q[..., 0].astype(np.int32) << (2 * COLOR_BITS)) | \
        (q[..., 1].astype(np.int32) << COLOR_BITS) | q[..., 2]
    return color_lut()[idx]


def downsample_rgb(image: np.ndarray, sh: int, sw: int) -> np.ndarray:
    """Box-filtered image at segmentation size: (ih, iw, 3) uint8 -> (sh, sw, 3) uint8."""
    if image.shape[:2] == (sh, sw):
        return image.copy()
    return np.asarray(Image.fromarray(image).resize((sw, sh), Image.BOX))
