"""Exact IoU tally kernels (DESIGN.md, "Scoring kernels") and the :class:`Tally` that
accumulates their counts. Two pixel stages count the same integers: on CPU, one compiled
pass (numba, :mod:`pipeline.tally_numba`: steps 1-4 below, at the granularity of cells
and rows of cells instead of pieces); on CUDA (and on CPU without numba), the array
code below, torch tensors on CUDA and numpy views of them on CPU.

A :class:`Tally` is a mergeable accumulator: ``add`` counts one tile, ``merge`` adds
another Tally's counts, ``state_dict`` / ``from_state`` carry the counts between processes
(a Tally pickles as its state) and ``result`` gives the per-level counts. Every replay
(threads, worker processes, Dask tasks) is one reduction over tiles in the sense of dask's
array reductions: chunk = :func:`tally_tile`, combine = :meth:`Tally.merge` /
:func:`merged`, aggregate = :meth:`Tally.result`. The counts are int64 sums, so neither
the order nor the grouping of tiles changes them.

For a tile of B images and V quantile levels the kernel counts, in int64,

  intersect[v, k, c]  = sum_x |M_vk(x) ∩ L_c(x)|
  activation[v, k, g] = sum over x with present[x, g] of |M_vk(x)|

with M_vk(x) = S_k(x) > T[v, k] (strict) and S the float64 lerp-form bilinear
upsampling of :mod:`pipeline.upsample`. Work scales with the active pixels:

1. (image, unit) maps whose maximum cannot exceed min_v T[v, k] are skipped, then cells
   (the output pixels sharing four source values) whose corner maximum cannot;
2. cells are cut into "pieces" of about 8 x 8 pixels (:func:`piece_length`,
   :func:`pipeline.upsample.axis_pieces`). A bilinear patch takes its extremes at its
   corners, so S at a piece's four corner pixels bounds S over the piece: pieces that
   cannot exceed min_v T are skipped; pieces whose every pixel passes the same levels are
   binned without upsampling ("uniform"); the rest are upsampled in pixel-major blocks.
   Every bound carries a slack of _SLACK times the largest |corner| (the lerp form may
   round a few ulps past its inputs), so each skip is exact;
3. each pixel of the tile has a *label-set id*: the number of its (image, canonical
   label slots) combination among those of the tile, sets ordered by image
   (:mod:`pipeline.label_sets`: a compiled hash pass on CPU, rounds of packed
   torch.unique on CUDA; neither depends on the label numbers). An active pixel
   is binned with one scatter-add at (c, k, set), c = the number of levels it passes
   (c = #{v : T[v, k] < S}, found by testing the sorted levels on shrinking subsets,
   only in pieces whose bound passes a second level);
4. the (c, k, set) histogram is expanded once per image group: each non-zero entry
   adds its count to the set's plane labels, its image's scalar labels (a scalar
   label covers every pixel) and its image's categories;
5. the count at level v is the sum over c > rank(v, k), rank = position of T[v, k]
   among the unit's thresholds in ascending order (a pixel passes exactly the c
   smallest thresholds); accumulation is by c, the per-level view is built at the end.

``planes`` must be canonical (:mod:`cache.labelsets`): each pixel's distinct labels,
none repeated as a scalar label of the image, so no de-duplication is needed here.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .label_sets import LabelSets, label_sets
from .upsample import axis_pieces, bilinear_weights

__all__ = ["Tally", "merged", "tally_tile", "piece_length"]

# Relative bound on how far the float64 lerp form may round above the largest |corner|
# of its cell (a few ulps; 2^-40 leaves a wide margin). Skips use it, so they are exact.
_SLACK = 2.0 ** -40

# labels are held as int32 (the label cache's are uint16)
MAX_LABELS = 2 ** 31


def _as_tensor(x, device=None, dtype=None) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        if x.dtype == torch.uint16:
            x = x.to(torch.int32)
        return x.to(device=device if device is not None else x.device, dtype=dtype or x.dtype)
    a = np.asarray(x)
    if a.dtype in (np.uint16, np.uint32):
        a = a.astype(np.int64)
    return torch.as_tensor(a, device=device, dtype=dtype)


def _flatnonzero(mask):
    """Flat indices (int64) of the True entries of a bool tensor or array; numpy on CPU
    (several times faster than torch.nonzero there), torch elsewhere. An array gives an
    array, a tensor a tensor."""
    if isinstance(mask, np.ndarray):
        return np.flatnonzero(mask)
    if mask.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(mask.numpy()))
    return mask.reshape(-1).nonzero().squeeze(1)


def _take(a, idx, dim: int = 0):
    """``a`` indexed by ``idx`` along ``dim``: a numpy array or a tensor (index_select)."""
    if isinstance(a, np.ndarray):
        return a.take(idx, axis=dim)
    return a.index_select(dim, idx)


def _bounds(corners: torch.Tensor, mags: torch.Tensor | None = None
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """(low, high): the range S can take given corner rows (4, M), widened by the rounding
    slack of the lerp form relative to the largest magnitude of ``mags`` (default the
    corners themselves)."""
    m = mags if mags is not None else corners
    mag = torch.maximum(torch.maximum(m[0].abs(), m[1].abs()),
                        torch.maximum(m[2].abs(), m[3].abs())) * _SLACK
    low = torch.minimum(torch.minimum(corners[0], corners[1]),
                        torch.minimum(corners[2], corners[3]))
    high = torch.maximum(torch.maximum(corners[0], corners[1]),
                         torch.maximum(corners[2], corners[3]))
    return low - mag, high + mag


def _nonzero2(mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, cols) of the True entries of a 2-D bool tensor."""
    flat = _flatnonzero(mask)
    ncol = mask.shape[1]
    rows = flat // ncol
    return rows, flat - rows * ncol


def piece_length(n_in: int, n_out: int, target: int = 8) -> int:
    """Output pixels per piece along one axis: a cell's run of ceil(n_out / n_in)
    pixels cut into near-equal parts of about ``target`` (16 -> 8, 9 -> 9, 4 -> 4)."""
    run = max(1, -(-n_out // n_in))
    return -(-run // max(1, round(run / target)))


@dataclass
class _Geometry:
    """Pieces of the (h, w) -> (sh, sw) upsampling, flattened to n_pieces = Py * Px."""
    gg: int                 # pixels per piece (gy * gx)
    gy: int
    gx: int
    cell: torch.Tensor      # (n_pieces,) int64 source cell y0 * w + x0 of each piece
    wy_t: torch.Tensor      # (gy, Py) float64 weight of each pixel, NaN at padding
    wx_t: torch.Tensor      # (gx, Px) float64
    wy_ends: torch.Tensor   # (2, Py) float64 weights of the first and last pixel
    wx_ends: torch.Tensor   # (2, Px) float64
    py: torch.Tensor        # (n_pieces,) int64 row-piece index
    px: torch.Tensor        # (n_pieces,) int64 column-piece index
    pix: torch.Tensor       # (n_pieces, gg) int64 output pixel Y * sw + X (0 at padding)
    full: torch.Tensor      # (n_pieces,) bool: the piece has no padding
    cell_hi_y: torch.Tensor  # (h,) int64 y1 of each source row (clamped y0 + 1)
    cell_hi_x: torch.Tensor  # (w,) int64


_NUMBA: list = []       # [the module pipeline.tally_numba or None] once the import was tried


def _numba_tally():
    """The compiled pixel stage's module (:mod:`pipeline.tally_numba`), or None without
    numba."""
    if not _NUMBA:
        try:
            from pipeline import tally_numba
        except ImportError:
            tally_numba = None
        _NUMBA.append(tally_numba)
    return _NUMBA[0]


def _compiled_axes(h: int, w: int, sh: int, sw: int) -> tuple:
    """(y1s (h,), wy (sh,), ystart (h + 1,), x1s (w,), wx (sw,), xstart (w + 1,)): the
    cells of the (h, w) -> (sh, sw) upsampling as the compiled kernel reads them."""
    out = []
    for n_in, n_out in ((h, sh), (w, sw)):
        idx0, _, w1 = bilinear_weights(n_in, n_out)
        hi = np.minimum(np.arange(n_in) + 1, n_in - 1)         # idx1 of each cell
        out += [hi.astype(np.int64), np.ascontiguousarray(w1, dtype=np.float64),
                _numba_tally().cell_starts(idx0, n_in)]
    return tuple(out)


def _ends(ax) -> np.ndarray:
    """(2, n_pieces) weights of the first and last (non-padding) pixel of each piece."""
    last = (ax.pos >= 0).sum(axis=1) - 1
    return np.stack([ax.w[:, 0], ax.w[np.arange(len(last)), last]])


def _geometry(h: int, w: int, sh: int, sw: int, device) -> _Geometry:
    ay = axis_pieces(h, sh, piece_length(h, sh))
    ax = axis_pieces(w, sw, piece_length(w, sw))
    Py, Px = len(ay.lo), len(ax.lo)
    py, px = np.meshgrid(np.arange(Py), np.arange(Px), indexing="ij")
    py, px = py.ravel(), px.ravel()
    cell = ay.lo[py] * w + ax.lo[px]
    pos_y, pos_x = ay.pos[py][:, :, None], ax.pos[px][:, None, :]        # (n, gy, 1), (n, 1, gx)
    valid = ((pos_y >= 0) & (pos_x >= 0)).reshape(len(py), -1)
    pix = np.where(valid, (pos_y * sw + pos_x).reshape(len(py), -1), 0)
    wy = np.where(ay.pos >= 0, ay.w, np.nan)                             # NaN: S is NaN there,
    wx = np.where(ax.pos >= 0, ax.w, np.nan)                             # never > T
    hi_y = np.minimum(np.arange(h) + 1, h - 1)
    hi_x = np.minimum(np.arange(w) + 1, w - 1)
    t = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=device)
    return _Geometry(ay.g * ax.g, ay.g, ax.g, t(cell), t(wy.T), t(wx.T), t(_ends(ay)), t(_ends(ax)),
                     t(py), t(px), t(pix), t(valid.all(axis=1)), t(hi_y), t(hi_x))


class _Kernel:
    """The counting machinery of a :class:`Tally` (module docstring, steps 1-5): the
    thresholds sorted per unit, the pieces of the upsampling, scratch buffers and the
    memory knobs (see :class:`Tally`). A Tally builds it on its first :meth:`Tally.add`,
    so a Tally that only merges counts never does."""

    def __init__(self, T: torch.Tensor, num_labels: int, num_categories: int,
                 map_size: tuple[int, int], seg_size: tuple[int, int],
                 chunk_values: int | None, max_maps: int, hist_entries: int | None,
                 numpy_on_cpu: bool, label_set_method: str, pixel_kernel: str = "auto"):
        self.device = T.device
        self.V, self.K = T.shape
        self.L, self.G = num_labels, num_categories
        self.h, self.w = map_size
        self.Tmin = T.min(dim=0).values                               # (K,)
        order = torch.argsort(T, dim=0, stable=True)
        self._Tsorted = torch.gather(T, 0, order)                     # (V, K) ascending
        self._ones = torch.ones(1, dtype=torch.int64, device=self.device)
        if chunk_values is None:   # CPU: blocks that stay in cache (measured best); GPU: big
            chunk_values = 1 << 18 if self.device.type == "cpu" else 1 << 22
        self.chunk_values = int(chunk_values)
        self.max_maps = max(1, min(int(max_maps), self.chunk_values // (self.h * self.w)))
        if hist_entries is None:
            hist_entries = 1 << 17 if self.device.type == "cpu" else 1 << 23
        self.hist_entries = int(hist_entries)
        self.numpy_on_cpu = bool(numpy_on_cpu)
        # the torch pixel stage (numpy_on_cpu False) goes with the torch label sets CUDA runs
        self.set_method = "torch" if label_set_method == "auto" and not numpy_on_cpu \
            else label_set_method
        if pixel_kernel == "auto":
            pixel_kernel = "numba" if self.device.type == "cpu" and numpy_on_cpu \
                and _numba_tally() is not None else "arrays"
        if pixel_kernel == "numba":
            if _numba_tally() is None:
                raise ValueError("pixel_kernel 'numba' needs numba: pip install numba, or "
                                 "use pixel_kernel='arrays'")
            if self.device.type != "cpu":
                raise ValueError(f"pixel_kernel 'numba' runs on CPU, the tally is on "
                                 f"{self.device}: use pixel_kernel='arrays'")
            if self.set_method == "auto":
                self.set_method = "numba"
            self._axes = _compiled_axes(self.h, self.w, *seg_size)
        self.pixel_kernel = pixel_kernel
        # the pieces of the array code (the compiled pass works on cells and rows)
        self.geo = _geometry(self.h, self.w, *seg_size, self.device) \
            if pixel_kernel == "arrays" else None
        self._hbuf: torch.Tensor | None = None  # the (c, k, set) histogram's allocation
        self._hbuf_zero = True                  # whether it is all zero

    def count(self, acts, planes, scalars, present, maxima, hist, cat) -> None:
        """Add the counts of one tile, checked by :meth:`Tally.add`, to ``hist`` (flat
        (c, k, label)) and ``cat`` (flat (c, k, g)), int64."""
        K, L = self.K, self.L
        C = self.V + 1
        B = acts.shape[0]
        # canonical slots hold zeros last: only slots used somewhere in the tile matter
        planes = planes.reshape(B, planes.shape[1], -1)
        if planes.shape[1]:
            used = (planes != 0).any(2).any(0)                        # (P,) bool
            used = used if isinstance(used, np.ndarray) else used.cpu().numpy()
            nslots = int(np.flatnonzero(used).max()) + 1 if used.any() else 0
            planes = planes[:, :nslots]
        sets = label_sets(planes, scalars, L, self.set_method)
        if self.pixel_kernel == "numba":
            self._count_compiled(acts, sets, present, hist, cat)
            return
        g = self.geo
        sid = sets.sid[:, g.pix].reshape(-1, g.gg).t().reshape(-1)     # (gg * B * n_pieces,)
        # maps that may hold an active pixel: S <= map maximum (+ rounding slack)
        span = torch.maximum(maxima.abs(), acts.amin(dim=(2, 3)).abs()).to(torch.float64)
        bound = maxima.to(torch.float64) + span * _SLACK
        cand_b, cand_k = _nonzero2(bound > self.Tmin[None, :])        # sorted by b

        # image groups whose (c, unit, set) histogram fits hist_entries
        per_set = C * K
        b0 = 0
        while b0 < B:
            b1 = b0 + 1
            while b1 < B and (sets.offsets[b1 + 1] - sets.offsets[b0]) * per_set <= self.hist_entries:
                b1 += 1
            s0, s1 = sets.offsets[b0], sets.offsets[b1]
            ns = s1 - s0
            H = self._buffer(per_set * ns)
            self._hbuf_zero = False                 # until _expand has cleared it
            lo = int(torch.searchsorted(cand_b, b0))
            hi = int(torch.searchsorted(cand_b, b1))
            for s in range(lo, hi, self.max_maps):
                e = min(hi, s + self.max_maps)
                self._count_maps(acts, cand_b[s:e], cand_k[s:e], sid, s0, ns, H)
            self._expand(H, sets, s0, s1, present, hist, cat)
            self._hbuf_zero = True
            b0 = b1

    def _count_compiled(self, acts, sets: LabelSets, present, hist, cat) -> None:
        """Steps 1-4 in one compiled pass (:mod:`pipeline.tally_numba`), which counts at
        most MAX_LEVELS levels: more levels are counted in groups of consecutive
        sorted levels, whose per-level counts give the counts by c of all V levels."""
        a = acts.numpy()
        if a.dtype != np.float64:                   # exact; float16 has no compiled loops
            a = a.astype(np.float32, copy=False)
        a = np.ascontiguousarray(a)
        args = (*self._axes, sets.sid.reshape(sets.sid.shape[0], -1).numpy(),
                sets.labels.numpy(), np.asarray(sets.offsets, dtype=np.int64), present.numpy())
        Ts, V = self._Tsorted.numpy(), self.V
        compiled = _numba_tally()
        most = compiled.MAX_LEVELS
        if V <= most:
            compiled.count_tile(a, Ts, _SLACK, *args, hist.numpy(), cat.numpy())
            return
        # passing[v]: pixels above the v-th smallest level; exactly c levels: passing[c - 1]
        # - passing[c] (sorted levels: a pixel above one is above every lower one)
        passing = [np.zeros((V, self.K * n), np.int64) for n in (self.L, self.G)]
        for v0 in range(0, V, most):
            part = np.ascontiguousarray(Ts[v0:v0 + most])
            n = part.shape[0]
            by_c = [np.zeros((n + 1) * self.K * x, np.int64) for x in (self.L, self.G)]
            compiled.count_tile(a, part, _SLACK, *args, *by_c)
            for acc, counts in zip(passing, by_c):
                above = counts.reshape(n + 1, -1)[::-1].cumsum(axis=0)[::-1]   # c >= r
                acc[v0:v0 + n] += above[1:]
        for acc, out in zip(passing, (hist, cat)):
            exact = out.numpy().reshape(V + 1, -1)
            exact[1:V] += acc[:-1] - acc[1:]
            exact[V] += acc[-1]

    def _buffer(self, n: int) -> torch.Tensor:
        """A zeroed int64 histogram of n entries (reuses one allocation, which _expand
        leaves all zero; zeroed whole only if a count stopped before its _expand)."""
        if self._hbuf is None or self._hbuf.numel() < n:
            self._hbuf = torch.zeros(max(n, min(self.hist_entries, 4 * n)), dtype=torch.int64,
                                     device=self.device)
        elif not self._hbuf_zero:
            self._hbuf.zero_()
        return self._hbuf[:n]

    def _count_maps(self, acts, b_m, k_m, sid, s0, ns, H) -> None:
        """Bin the active pixels of maps (b_m[i], k_m[i]) into H[(c * K + k) * ns + set - s0].

        sid: (gg * B * n_pieces,) int64 global label-set id of pixel r of piece (b, p) at
        r * B * n_pieces + b * n_pieces + p (pixel-major, like the blocks below)."""
        g, hw = self.geo, self.h * self.w
        n = b_m.numel()
        # corners a00, a01, a10, a11 of every cell, as rows (4, n * hw): the inner loop of
        # every op below runs over cells, pieces or pixels, never over 4 or 8 values
        A = acts[b_m, k_m].to(torch.float64)                     # (n, h, w)
        Ay = A[:, g.cell_hi_y]
        corners = torch.stack((A, A[:, :, g.cell_hi_x], Ay, Ay[:, :, g.cell_hi_x])).view(4, -1)
        tmin = self.Tmin.index_select(0, k_m)                    # (n,)
        # cells that may hold an active pixel: S <= max corner (+ rounding slack)
        bound = _bounds(corners)[1]
        pi, pp = _nonzero2(bound.view(n, hw)[:, g.cell] > tmin[:, None])
        # their pieces: S over a piece <= max of S at the piece's four corner pixels
        c = corners.index_select(1, pi * hw + g.cell.index_select(0, pp))   # (4, M)
        wx = g.wx_ends.index_select(1, g.px.index_select(0, pp))            # (2, M)
        wy = g.wy_ends.index_select(1, g.py.index_select(0, pp))
        top = c[0] + wx * (c[1] - c[0])                                     # (2, M)
        bot = c[2] + wx * (c[3] - c[2])
        Sc = torch.mul(wy[:, None, :], (bot - top)[None]).add_(top[None]).view(4, -1)
        low, bound = _bounds(Sc, c)
        keep = _flatnonzero(bound > tmin.index_select(0, pi))
        if keep.numel() == 0:
            return
        pi, pp, c = pi.index_select(0, keep), pp.index_select(0, keep), c.index_select(1, keep)
        kp = k_m.index_select(0, pi)                             # unit of each piece
        col = b_m.index_select(0, pi) * g.cell.numel() + pp      # column of each piece in sid
        # levels every pixel of a piece passes (cmin) and that one may pass (cmax):
        # c = #{v : T[v, k] < S} and low <= S <= bound
        Tp = self._Tsorted.index_select(1, kp)                   # (V, M)
        cmax = (Tp < bound.index_select(0, keep)).sum(dim=0)
        cmin = (Tp < low.index_select(0, keep)).sum(dim=0)
        uniform = (cmin == cmax) & g.full.index_select(0, pp)   # every pixel has c = cmin
        for sel, how in ((uniform, "uniform"), (~uniform & (cmax == 1), "one level"),
                         (~uniform & (cmax > 1), "levels")):
            idx = _flatnonzero(sel)
            if idx.numel() == 0:
                continue
            args = (kp.index_select(0, idx), col.index_select(0, idx), sid, ns, s0, H)
            if how == "uniform":
                self._count_uniform(cmin.index_select(0, idx), *args)
            else:
                self._count_pixels(pp.index_select(0, idx), c.index_select(1, idx), how == "levels",
                                   *args)

    def _count_uniform(self, cp, k, col, sid, ns, s0, H) -> None:
        """Pieces whose pixels all pass exactly cp levels: bin every pixel's label set."""
        gg, K = self.geo.gg, self.K
        BN = sid.numel() // gg
        per = max(1, self.chunk_values // gg)
        rows = torch.arange(gg, device=sid.device)[:, None] * BN
        for s in range(0, k.numel(), per):
            keys = sid.index_select(0, (rows + col[None, s:s + per]).view(-1)).view(gg, -1)
            keys += ((cp[s:s + per] * K + k[s:s + per]) * ns - s0)[None, :]
            H.scatter_add_(0, keys.view(-1), self._ones.expand(keys.numel()))

    def _count_pixels(self, p, c, levels: bool, k_p, col_p, sid, ns, s0, H) -> None:
        """Upsample pieces p (corners c (4, M)) in blocks and bin their active pixels;
        ``levels``: some pixels may pass more than the lowest level.

        Written with operators and :func:`_take`, so on CPU it runs on numpy views of the
        tensors (numpy's elementwise and gather loops are 2-3x faster on one thread than
        torch's) and on CUDA on the tensors themselves."""
        g, K, gg = self.geo, self.K, self.geo.gg
        if H.device.type == "cpu" and self.numpy_on_cpu:
            p, c, k_p, col_p, sid = (t.numpy() for t in (p, c, k_p, col_p, sid))
            wx_t, wy_t, px, py, Ts = self._host()
        else:
            wx_t, wy_t, px, py, Ts = g.wx_t, g.wy_t, g.px, g.py, self._Tsorted
        BN = sid.shape[0] // gg
        per = 1 << max(0, (self.chunk_values // gg).bit_length() - 1)   # a power of two
        for s in range(0, p.shape[0], per):
            # one block of m pieces, pixel-major (gy, gx, m)
            pc, col, k = p[s:s + per], col_p[s:s + per], k_p[s:s + per]
            c00, c01, c10, c11 = c[:, s:s + per]
            m = pc.shape[0]
            wx = _take(wx_t, _take(px, pc), 1)                 # (gx, m)
            wy = _take(wy_t, _take(py, pc), 1)                 # (gy, m)
            top = c00 + wx * (c01 - c00)                       # (gx, m)
            bot = c10 + wx * (c11 - c10)
            S = wy[:, None, :] * (bot - top)[None]             # S = top + wy * (bot - top)
            S += top[None]
            S = S.reshape(-1)                                  # (gg * m,) pixel r, piece j
            Tk = _take(Ts, k, 1)                               # (V, m) ascending
            flat = _flatnonzero(S.reshape(gg, m) > Tk[0][None, :])
            if flat.shape[0] == 0:
                continue
            if m == per:
                j, r = flat & (m - 1), flat >> (m.bit_length() - 1)
            else:
                r = flat // m
                j = flat - r * m
            r *= BN
            r += _take(col, j)
            keys = _take(sid, r)                               # label set of each pixel
            keys += _take((K + k) * ns - s0, j)                # (c * K + k) * ns + set, c = 1
            if levels:                                         # levels by ascending T
                val = _take(S, flat)
                sub = None
                for lev in range(1, self.V):
                    t = Tk[lev]
                    if sub is None:
                        sub = _flatnonzero(val > _take(t, j))
                    else:
                        sub = _take(sub, _flatnonzero(_take(val, sub) > _take(t, _take(j, sub))))
                    if sub.shape[0] == 0:
                        break
                    keys[sub] += K * ns                        # sub holds no index twice
            keys = torch.from_numpy(keys) if isinstance(keys, np.ndarray) else keys
            H.scatter_add_(0, keys, self._ones.expand(keys.shape[0]))

    def _host(self) -> tuple:
        """numpy views of the CPU geometry used by :meth:`_count_pixels`."""
        if getattr(self, "_host_views", None) is None:
            g = self.geo
            self._host_views = tuple(t.numpy() for t in (g.wx_t, g.wy_t, g.px, g.py,
                                                         self._Tsorted))
        return self._host_views

    def _expand(self, H, sets: LabelSets, s0: int, s1: int, present, hist, cat) -> None:
        """Add the (c, k, set) histogram H to the label and category accumulators (flat
        (V + 1) * K * L and (V + 1) * K * G int64) and zero H's non-zero entries (the
        buffer is all zero again)."""
        ns = s1 - s0
        nz_all = _flatnonzero(H != 0)
        gi = torch.arange(self.G, device=H.device)
        step = max(1, self.chunk_values // max(1, sets.labels.shape[1] + self.G))
        for a in range(0, nz_all.numel(), step):
            nz = nz_all[a:a + step]
            cnt = H[nz]
            ck = nz // ns                                       # c * K + k
            s = nz - ck * ns + s0
            labels = sets.labels[s]                             # (nnz, P + S)
            if labels.shape[1]:
                idx = (ck * self.L)[:, None] + labels
                hist.scatter_add_(0, idx.view(-1),
                                        cnt[:, None].expand_as(labels).reshape(-1))
            cats = present[sets.image[s]]                       # (nnz, G)
            idx = (ck * self.G)[:, None] + gi[None, :]
            cat.scatter_add_(0, idx.view(-1), (cnt[:, None] * cats).view(-1))
        H[nz_all] = 0


class Tally:
    """Exact counts over tiles of images for fixed thresholds: a mergeable accumulator.

    :meth:`add` counts one tile; :meth:`merge` adds another Tally's counts;
    :meth:`state_dict` / :meth:`from_state` carry the counts as numpy arrays (a Tally
    pickles as its state, so worker processes and Dask tasks return Tallies, not the
    kernel's scratch); :meth:`result` gives the per-level counts. Counts are int64 sums,
    so any order or grouping of tiles gives the same result: a reduction over tiles is
    chunk = :func:`tally_tile`, combine = :meth:`merge` (:func:`merged`), aggregate =
    :meth:`result`. Counts are kept by c = levels passed, (V + 1, K, L) and (V + 1, K, G).

    thresholds:     (V, K) float64 T[v, k]
    num_labels:     L (labels 0..L-1; label 0 is never counted)
    num_categories: G
    map_size:       (h, w) of activation maps; seg_size: (sh, sw) of label planes
    device:         where counts are kept and counting happens (CPU or CUDA); tiles are
                    moved there
    The kernel's knobs (not part of the state; they never change the counts):
    numpy_on_cpu:   run the pixel stage on numpy views on CPU (False: the torch code CUDA
                    runs, which the tests check on CPU)
    label_set_method: "auto" (numba on CPU when installed and numpy_on_cpu, else torch),
                    "numba" or "torch" (:func:`pipeline.label_sets.label_sets`)
    pixel_kernel:   "auto" (numba on CPU when installed and numpy_on_cpu, else arrays),
                    "numba" (steps 1-4 in one compiled pass, :mod:`pipeline.tally_numba`)
                    or "arrays" (the numpy / torch array code below, the code CUDA runs;
                    chunk_values, max_maps and hist_entries bound its memory)
    chunk_values:   upsampled float64 values per block (default 2^18 on CPU, 2^22 on GPU)
    max_maps:       bound on candidate (image, unit) maps converted to float64 at once
                    (also kept below chunk_values / (h * w))
    hist_entries:   bound on the (c, unit, label set) histogram of one image group
                    (default 2^17 on CPU: scatters into it stay in cache; 2^23 on GPU)
    """

    def __init__(self, thresholds, num_labels: int, num_categories: int,
                 map_size: tuple[int, int], seg_size: tuple[int, int], device=None, *,
                 numpy_on_cpu: bool = True, chunk_values: int | None = None,
                 max_maps: int = 1 << 14, hist_entries: int | None = None,
                 label_set_method: str = "auto", pixel_kernel: str = "auto"):
        T = _as_tensor(thresholds, device=device, dtype=torch.float64)
        if T.ndim != 2 or T.shape[0] < 1:
            raise ValueError(f"thresholds must be (V, K), got shape {tuple(T.shape)}")
        if bool(torch.isnan(T).any()):
            raise ValueError("thresholds contain NaN")
        self.device = T.device
        self.V, self.K = T.shape
        self.L, self.G = int(num_labels), int(num_categories)
        if not 1 <= self.L <= MAX_LABELS:
            raise ValueError(f"num_labels must be in 1..{MAX_LABELS}, got {num_labels}")
        if label_set_method not in ("auto", "numba", "torch"):
            raise ValueError(f"label_set_method must be 'auto', 'numba' or 'torch', got "
                             f"{label_set_method!r}")
        self.h, self.w = map_size
        self.sh, self.sw = seg_size
        self.T = T
        # rank[v, k]: position of T[v, k] in ascending order of T[:, k] (stable)
        order = torch.argsort(T, dim=0, stable=True)
        self.rank = torch.argsort(order, dim=0, stable=True)          # (V, K)
        C = self.V + 1
        self._hist = torch.zeros(C * self.K * self.L, dtype=torch.int64, device=self.device)
        self._cat = torch.zeros(C * self.K * self.G, dtype=torch.int64, device=self.device)
        self.images = 0
        if pixel_kernel not in ("auto", "numba", "arrays"):
            raise ValueError(f"pixel_kernel must be 'auto', 'numba' or 'arrays', got "
                             f"{pixel_kernel!r}")
        self._knobs = dict(numpy_on_cpu=numpy_on_cpu, pixel_kernel=pixel_kernel,
                           chunk_values=chunk_values,
                           max_maps=max_maps, hist_entries=hist_entries,
                           label_set_method=label_set_method)
        self._kernel: _Kernel | None = None

    # ------------------------------------------------------------------ tiles
    def add(self, acts, planes, scalars, present, maxima=None) -> None:
        """Count one tile.

        acts:    (B, K, h, w) float16/float32 activations
        planes:  (B, P, sh, sw) integer canonical label slots (P may be 0)
        scalars: (B, S) integer distinct non-zero scalar labels, zero padded (S may be 0)
        present: (B, G) bool, category membership X_g of each image
        maxima:  (B, K) exact per-map maxima of acts; computed from acts when None
        """
        if self._kernel is None:
            self._kernel = _Kernel(self.T, self.L, self.G, (self.h, self.w),
                                   (self.sh, self.sw), **self._knobs)
        tile = self._checked(acts, planes, scalars, present, maxima)
        self._kernel.count(*tile, self._hist, self._cat)
        self.images += tile[0].shape[0]

    def _checked(self, acts, planes, scalars, present, maxima) -> tuple:
        """(acts, planes int32, scalars (B, S) int64, present (B, G) bool, maxima) on
        self.device (planes: a numpy array of up to 32-bit integers stays as it is for the
        compiled pass); ValueError naming the input whose shape or labels do not fit."""
        dev, K, L = self.device, self.K, self.L
        acts = _as_tensor(acts, device=dev)
        B = acts.shape[0]
        if tuple(acts.shape[1:]) != (K, self.h, self.w):
            raise ValueError(f"acts has shape {tuple(acts.shape)}, expected (B, {K}, "
                             f"{self.h}, {self.w})")
        for name, lab in (("planes", planes), ("scalars", scalars)):
            _check_integer(name, lab)
        # the compiled pass reads the label cache's integers as they are (no copy)
        keep = isinstance(planes, np.ndarray) and planes.dtype.kind in "iu" \
            and planes.dtype.itemsize <= 4 and self._kernel is not None \
            and self._kernel.pixel_kernel == "numba"
        planes = planes if keep else _as_tensor(planes, device=dev)   # int32 once in range
        if planes.ndim != 4 or planes.shape[0] != B or tuple(planes.shape[2:]) != (self.sh, self.sw):
            raise ValueError(f"planes has shape {tuple(planes.shape)}, expected "
                             f"({B}, P, {self.sh}, {self.sw})")
        scalars = _as_tensor(scalars, device=dev, dtype=torch.int64).reshape(B, -1)
        present = _as_tensor(present, device=dev).reshape(B, -1).to(torch.bool)
        if present.shape[1] != self.G:
            raise ValueError(f"present has {present.shape[1]} categories, expected {self.G}")
        for name, lab in (("planes", planes), ("scalars", scalars)):
            array = isinstance(lab, np.ndarray)
            if lab.size if array else lab.numel():
                lo = 0 if array and lab.dtype.kind == "u" else int(lab.min())
                hi = int(lab.max())
                if lo < 0 or hi >= L:
                    raise ValueError(f"{name} hold labels in {lo}..{hi}, outside 0..{L - 1}: "
                                     f"raise num_labels")
        if not keep:
            planes = planes.to(torch.int32)
        if maxima is None:
            maxima = acts.amax(dim=(2, 3))
        maxima = _as_tensor(maxima, device=dev)
        return acts, planes, scalars, present, maxima

    # ------------------------------------------------------------------ merging
    def merge(self, other: "Tally") -> "Tally":
        """Add ``other``'s counts (made at the same thresholds, for the same labels,
        categories and sizes; on any device) to this Tally's; returns self."""
        if other._sizes() != self._sizes() or not torch.equal(other.T.to(self.device), self.T):
            raise ValueError(f"cannot merge a Tally of thresholds {tuple(other.T.shape)} and "
                             f"(L, G, map, seg) {other._sizes()[2:]} into one of "
                             f"{tuple(self.T.shape)} and {self._sizes()[2:]}, or of other "
                             f"threshold values")
        self._hist += other._hist.to(self.device)
        self._cat += other._cat.to(self.device)
        self.images += other.images
        return self

    def _sizes(self) -> tuple:
        return (self.V, self.K, self.L, self.G, (self.h, self.w), (self.sh, self.sw))

    def state_dict(self) -> dict:
        """The counts and what they count, as numpy copies: thresholds (V, K) float64,
        num_labels, num_categories, map_size, seg_size, images, and int64 counts by
        c = levels passed, intersect_by_c (V + 1, K, L) and activation_by_c (V + 1, K, G)
        (intersect_by_c[:, :, 0] is not zeroed; :meth:`result` zeroes label 0)."""
        C = self.V + 1
        return {"thresholds": _numpy(self.T), "num_labels": self.L,
                "num_categories": self.G, "map_size": (self.h, self.w),
                "seg_size": (self.sh, self.sw), "images": self.images,
                "intersect_by_c": _numpy(self._hist).reshape(C, self.K, self.L),
                "activation_by_c": _numpy(self._cat).reshape(C, self.K, self.G)}

    @classmethod
    def from_state(cls, state: dict, device=None, **knobs) -> "Tally":
        """A Tally holding the counts of ``state`` (:meth:`state_dict`) on ``device``
        (default CPU), with the kernel knobs ``knobs`` for further :meth:`add` calls."""
        t = cls(state["thresholds"], state["num_labels"], state["num_categories"],
                tuple(state["map_size"]), tuple(state["seg_size"]), device=device, **knobs)
        for acc, name in ((t._hist, "intersect_by_c"), (t._cat, "activation_by_c")):
            counts = torch.as_tensor(np.asarray(state[name], dtype=np.int64))
            if counts.numel() != acc.numel():
                raise ValueError(f"state {name} has shape {tuple(counts.shape)}, expected "
                                 f"{acc.numel()} counts")
            acc.copy_(counts.reshape(-1))
        t.images = int(state["images"])
        return t

    def __reduce__(self):
        return (_from_state, (self.state_dict(),))

    def __sizeof__(self) -> int:         # what Dask's memory accounting sees of a Tally
        return object.__sizeof__(self) + self._hist.nbytes + self._cat.nbytes

    # ------------------------------------------------------------------ results
    def _by_level(self, raw: torch.Tensor) -> torch.Tensor:
        """raw (C, K, X) counts by c = levels passed -> (V, K, X) counts per level."""
        geq = raw.flip(0).cumsum(0).flip(0)                     # geq[r] = sum_{c >= r}
        above = geq[1:]                                         # above[r] = sum_{c > r}
        idx = self.rank[:, :, None].expand(self.V, self.K, raw.shape[2])
        return torch.gather(above, 0, idx)

    def result(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(intersect (V, K, L) int64, activation (V, K, G) int64) on self.device.
        intersect[:, :, 0] is zero (label 0 = unlabelled is never counted)."""
        C = self.V + 1
        I = self._by_level(self._hist.view(C, self.K, self.L))
        I[:, :, 0] = 0
        return I, self._by_level(self._cat.view(C, self.K, self.G))


def _numpy(t: torch.Tensor) -> np.ndarray:
    """A numpy copy of a tensor (never a view of it)."""
    return t.numpy().copy() if t.device.type == "cpu" else t.cpu().numpy()


def _from_state(state: dict) -> Tally:
    """Unpickling: :meth:`Tally.from_state` on CPU."""
    return Tally.from_state(state)


def merged(*parts: Tally) -> Tally:
    """A new Tally holding the counts of all ``parts``, on the first one's device (the
    parts are left unchanged): the combine step of a tree reduction over tiles."""
    total = Tally.from_state(parts[0].state_dict(), device=parts[0].device)
    for p in parts[1:]:
        total.merge(p)
    return total


def _check_integer(name: str, labels) -> None:
    """ValueError unless ``labels`` (a numpy array, tensor or sequence) holds integers (or
    nothing): label numbers are never rounded (a float plane is a caller's mistake)."""
    if not isinstance(labels, (np.ndarray, torch.Tensor)):
        labels = np.asarray(labels)
    dtype = labels.dtype
    if isinstance(labels, torch.Tensor):
        ok = labels.numel() == 0 or not (dtype.is_floating_point or dtype.is_complex
                                         or dtype == torch.bool)
    else:
        ok = labels.size == 0 or dtype.kind in "iu"
    if not ok:
        raise ValueError(f"{name} hold {dtype} values: label numbers must be integers (the "
                         f"label cache's slots are uint16); convert exact whole numbers "
                         f"with .astype(np.int32), never round")


def tally_tile(acts, maxima, thresholds, planes, scalars, present, num_labels: int,
               **kwargs) -> Tally:
    """A Tally that has counted one tile of images (module docstring), its sizes taken
    from the tile's shapes: the chunk step of a reduction over tiles; device = acts.device.

    acts:       (B, K, h, w) float16/float32 tensor
    maxima:     (B, K) exact per-map maxima of acts, or None to compute them
    thresholds: (V, K) float64
    planes:     (B, P, sh, sw) integer canonical label slots
    scalars:    (B, S) integer distinct non-zero scalar labels, zero padded
    present:    (B, G) bool
    kwargs:     kernel knobs of :class:`Tally`
    Its :meth:`Tally.result`: intersect (V, K, L) int64, activation (V, K, G) int64.
    """
    acts = _as_tensor(acts)
    present = _as_tensor(present).reshape(acts.shape[0], -1)
    t = Tally(thresholds, num_labels, present.shape[1], tuple(acts.shape[2:]),
              tuple(planes.shape[2:]), device=acts.device, **kwargs)
    t.add(acts, planes, scalars, present, maxima)
    return t
