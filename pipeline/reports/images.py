"""The unit images of the HTML page: each unit's top images with its scored mask drawn, as
thumbnail strips, and images as base64 ``data:`` URIs.

Top images of unit k: the N images with the largest per-image maximum ``maxima[:, k]``
(descending; ties by image index). On each, the scored mask M = S > T_k, S the map upsampled
to the segmentation size with :func:`pipeline.upsample.upsample` (the scoring's definition),
is resized to the thumbnail (nearest) and drawn over the image: outside the mask the image
is dimmed, the mask's outline is drawn in yellow; an image whose mask is empty (its map
never exceeds T_k once upsampled: common for coarse maps) is dimmed whole and framed in
red (EMPTY_FRAME). Strips are (THUMB, W, 3) uint8, tiles GAP white pixels apart.

Cost: images are loaded and thumbnailed once per layer and shared between units (many
units share top images); activations are read per group of units for just the chosen
images. Measured on the demo: README, "Output files".
"""
from __future__ import annotations

import base64
import io
from typing import Callable, Sequence

import numpy as np

DEFAULT_TOP_IMAGES = 8
ROW_IMAGES = 8                  # tiles per strip; more top images make further rows
MAX_TOP_IMAGES = 64
THUMB = 80                      # thumbnail height in px (width keeps the image's aspect)
GAP = 2                         # px between the images of a strip
DIM = 0.3                       # brightness kept outside the mask
OUTLINE = (255, 221, 0)         # mask outline colour
EMPTY_FRAME = (220, 20, 20)     # frame of a tile whose mask is empty
FRAME = 3                       # its width in px
JPEG_QUALITY = 80


# ---------------------------------------------------------------- the pieces, tested alone
def top_images(maxima: np.ndarray, n: int) -> np.ndarray:
    """(K, min(n, N)) int64: per unit, the images by per-image maximum, descending, ties by
    image index. maxima: (N, K)."""
    mx = np.asarray(maxima, dtype=np.float64)
    order = np.argsort(-mx, axis=0, kind="stable")      # stable: ties by image index
    return np.ascontiguousarray(order[: min(n, mx.shape[0])].T)


def unit_masks(maps: np.ndarray, threshold: float, seg_size: tuple[int, int]) -> np.ndarray:
    """(n, sh, sw) bool: the scored masks S > T of maps (n, h, w) of one unit, S the
    float64 lerp-form bilinear upsampling of pipeline.upsample (exactly as scored)."""
    import torch
    from pipeline.upsample import upsample
    s = upsample(torch.from_numpy(np.ascontiguousarray(maps)), tuple(seg_size))
    return (s > float(threshold)).numpy()


def resize_nearest(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W) nearest-neighbour resize of a 2-D array (pixel centres)."""
    h, w = mask.shape
    H, W = size
    ys = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    xs = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    return mask[ys[:, None], xs[None, :]]


def overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: ``image`` dimmed outside ``mask`` (H, W bool), the mask's outline
    (mask pixels with a 4-neighbour outside it or on the border) in OUTLINE."""
    out = image.astype(np.float32)
    out[~mask] *= DIM
    out = out.astype(np.uint8)
    p = np.pad(mask, 1, constant_values=False)
    inner = p[:-2, 1:-1] & p[2:, 1:-1] & p[1:-1, :-2] & p[1:-1, 2:]
    out[mask & ~inner] = OUTLINE
    return out


def frame_empty(tile: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8: ``tile`` with a FRAME px border in EMPTY_FRAME (an empty mask)."""
    out = tile.copy()
    out[:FRAME], out[-FRAME:], out[:, :FRAME], out[:, -FRAME:] = (EMPTY_FRAME,) * 4
    return out


def thumbnail(image: np.ndarray, height: int = THUMB) -> np.ndarray:
    """(height, W, 3) uint8 bilinear resize of an (H, W, 3) image, aspect kept."""
    from PIL import Image
    h, w = image.shape[:2]
    W = max(1, round(w * height / h))
    return np.asarray(Image.fromarray(image).resize((W, height), Image.BILINEAR))


def strip(tiles: Sequence[np.ndarray]) -> np.ndarray:
    """Tiles of one height side by side, GAP white pixels apart."""
    h = tiles[0].shape[0]
    gap = np.full((h, GAP, 3), 255, np.uint8)
    parts = []
    for i, t in enumerate(tiles):
        if i:
            parts.append(gap)
        parts.append(t)
    return np.concatenate(parts, axis=1)


def data_uri(pixels: np.ndarray | bytes, fmt: str = "JPEG") -> str:
    """A base64 ``data:`` URI of PNG bytes (a chart) or of pixels (H, W, 3) uint8 encoded
    as ``fmt`` (JPEG at JPEG_QUALITY by default)."""
    if isinstance(pixels, bytes):
        raw, mime = pixels, "image/png"
    else:
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, fmt, **({"quality": JPEG_QUALITY} if fmt == "JPEG"
                                                  else {}))
        raw, mime = buf.getvalue(), f"image/{fmt.lower()}"
    return f"data:{mime};base64," + base64.b64encode(raw).decode("ascii")


# ----------------------------------------------------------------------- unit strips
def unit_strips(acts, maxima, thresholds: np.ndarray, load_image: Callable[[int], np.ndarray],
                seg_size: tuple[int, int], n: int = DEFAULT_TOP_IMAGES, *,
                progress: bool = False, desc: str = "unit images"
                ) -> tuple[list[list[np.ndarray]], np.ndarray, np.ndarray]:
    """(strips, top, empty): per unit its top-n images with the mask drawn as strips of
    ROW_IMAGES tiles ((THUMB, W, 3) uint8 each: the first row, then the rest), top (K, n)
    the image indices shown, empty (K, n) bool those whose mask is empty (framed in red).
    acts: (N, K, h, w) array-like (zarr), maxima (N, K), thresholds (K,)."""
    import torch
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # tiny upsamplings: threads only contend (100x slower)
    try:
        return _unit_strips(acts, maxima, thresholds, load_image, seg_size, n,
                            progress=progress, desc=desc)
    finally:
        torch.set_num_threads(threads)


def _unit_strips(acts, maxima, thresholds, load_image, seg_size, n, *, progress, desc):
    from tqdm.auto import tqdm
    mx = np.asarray(maxima[:])
    K = mx.shape[1]
    top = top_images(mx, n)
    thumbs: dict[int, np.ndarray] = {}          # image index -> thumbnail, shared by units
    strips: list[list[np.ndarray]] = [None] * K     # type: ignore[list-item]
    empty = np.zeros(top.shape, dtype=bool)
    chunks = getattr(acts, "chunks", None)
    group = max(1, min(K, int(chunks[1]) if chunks else 32, 64))
    with tqdm(total=K, unit="unit", desc=desc, disable=not progress,
              dynamic_ncols=True) as bar:
        for g0 in range(0, K, group):
            units = np.arange(g0, min(K, g0 + group))
            imgs = np.unique(top[units].ravel())
            if hasattr(acts, "oindex"):
                block = np.asarray(acts.oindex[imgs, g0:g0 + len(units)])
            else:
                block = np.asarray(acts[imgs][:, g0:g0 + len(units)])
            pos = {int(i): j for j, i in enumerate(imgs)}
            for u in units:
                rows = [pos[int(i)] for i in top[u]]
                masks = unit_masks(block[rows, u - g0], thresholds[u], seg_size)
                tiles = []
                for j, (i, m) in enumerate(zip(top[u], masks)):
                    i = int(i)
                    if i not in thumbs:
                        thumbs[i] = thumbnail(load_image(i))
                    t = thumbs[i]
                    tile = overlay(t, resize_nearest(m, t.shape[:2]))
                    empty[u, j] = not m.any()
                    tiles.append(frame_empty(tile) if empty[u, j] else tile)
                strips[u] = [strip(tiles[i:i + ROW_IMAGES])
                             for i in range(0, len(tiles), ROW_IMAGES)]
                bar.update(1)
    return strips, top, empty
