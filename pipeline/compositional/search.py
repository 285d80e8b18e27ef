"""Beam search for compositional explanations (Mu & Andreas, NeurIPS 2020) over the
label-set counts of a layer (cache/set_counts.py), without another pass over the caches.

A formula is left-deep: an atom (a label), then steps (op, label) with op one of AND,
OR, AND NOT, e.g. ``(water OR river) AND NOT blue``; its *length* is its number of
atoms. Its mask over the dataset's pixels is a union of global label sets, held as the
sorted array of their indices (its *support*). With A = the unit's active pixels per
set and P = the pixels per set, IoU(k, f) = I / (|M_k| + |f| - I), I = sum of A over
the support, |f| = sum of P over it, |M_k| = sum of A over all sets (the whole dataset;
0 when the union is 0).

Extending a formula f by label c needs only two numbers per c, both one bincount over
the labels of f's support: I(f AND c) and |f AND c|. Then

    f AND c:      I = I(f AND c),              |.| = |f AND c|
    f OR c:       I = I(f) + I(c) - I(f AND c), |.| = |f| + |c| - |f AND c|
    f AND NOT c:  I = I(f) - I(f AND c),        |.| = |f| - |f AND c|

so all 3 L extensions of a beam formula cost O(support x W), not O(L x S).

The search, per unit: the beam starts as the ``beam`` best single labels with IoU > 0
(ties: lower label number); for each further length, every beam formula is extended by
every allowed label with each op, and the new beam is the best ``beam`` of the old beam
and its extensions (as in the authors' code, so a shorter formula may stay and be
extended later). Candidates are ranked by IoU (ties: the old beam first, then beam rank,
op in the order AND, OR, AND NOT, then label number). An extension that does not change
its formula's mask (f AND c with f inside c, f OR c with c inside f, f AND NOT c with c
disjoint from f) or leaves it empty is not a candidate, and a candidate whose mask
equals one already kept is skipped, so the beam holds ``beam`` distinct masks (the
authors' code keeps such duplicates).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from cache.set_counts import SetCounts

__all__ = ["Formula", "UnitFormulas", "SetIndex", "search_unit", "OPS"]

OPS = ("AND", "OR", "AND NOT")
#: |f AND c| vectors kept for reuse across units (each (L,) int64: 10 kB at L = 1,198)
CACHED_FORMULAS = 4096


@dataclass(frozen=True)
class Formula:
    """A left-deep formula: ``atoms[0]``, then (ops[i], atoms[i + 1]) in turn."""
    atoms: tuple[int, ...]
    ops: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.atoms)

    def extend(self, op: str, label: int) -> "Formula":
        return Formula(self.atoms + (int(label),), self.ops + (op,))

    def text(self, names=None) -> str:
        """``(a OR b) AND NOT c``: label names (``names[label]``), or numbers without."""
        name = (lambda c: str(c)) if names is None else (lambda c: str(names[c]))
        out = name(self.atoms[0])
        for i, (op, c) in enumerate(zip(self.ops, self.atoms[1:])):
            out = f"({out}) {op} {name(c)}" if i else f"{out} {op} {name(c)}"
        return out

    def evaluate(self, has_label) -> np.ndarray:
        """The formula's truth given ``has_label(c)`` -> bool array (any shape)."""
        m = np.asarray(has_label(self.atoms[0]), dtype=bool)
        for op, c in zip(self.ops, self.atoms[1:]):
            x = np.asarray(has_label(c), dtype=bool)
            m = m & x if op == "AND" else m | x if op == "OR" else m & ~x
        return m


@dataclass
class Scored:
    """A formula with its support (sorted set indices) and exact counts."""
    formula: Formula
    support: np.ndarray         # (n,) int64
    intersect: int              # I
    pixels: int                 # |f|
    iou: float


@dataclass
class UnitFormulas:
    """What the search found for one unit (0-based ``unit``)."""
    unit: int
    unit_pixels: int                         # |M_k|
    best: Scored | None                      # best formula of any length (None: nothing)
    by_length: list[Scored | None] = field(default_factory=list)   # index l - 1

    @property
    def single(self) -> Scored | None:
        return self.by_length[0] if self.by_length else None


class SetIndex:
    """The label structure of a SetCounts, built once for every unit's search.

    sets (S, W) -> for each label c: the sorted sets containing it (CSC ``col_start``,
    ``col_sets``) and |L_c| = ``label_pixels`` (L,) int64."""

    def __init__(self, counts: SetCounts, num_labels: int):
        self.counts = counts
        self.L = int(num_labels)
        sets = counts.sets.astype(np.int64)
        self.S, self.W = sets.shape
        if sets.size and sets.max() >= self.L:
            raise ValueError(f"set counts hold label {int(sets.max())} but the label cache "
                             f"has {self.L} labels: they come from different datasets")
        self.flat = sets.reshape(-1)                                    # (S * W,)
        self.pixels = counts.pixels.astype(np.int64)
        if int(self.pixels.sum()) >= 2 ** 53:
            raise ValueError("more than 2^53 pixels: the float64 bincounts would round")
        order = np.argsort(self.flat, kind="stable")
        self.col_sets = order // max(1, self.W)                         # ascending per label
        self.col_start = np.concatenate([[0], np.cumsum(np.bincount(self.flat,
                                                                    minlength=self.L))])
        self.label_pixels = self._label_sums(np.arange(self.S), self.pixels)
        self._pixel_sums: dict[Formula, np.ndarray] = {}

    def pixels_with(self, f: "Scored") -> np.ndarray:
        """(L,) int64 |f AND c| for every label c. It depends on the formula only, not
        on the unit, so it is kept for the next units whose beam holds the same formula
        (the common labels and their combinations: at most CACHED_FORMULAS at once)."""
        got = self._pixel_sums.get(f.formula)
        if got is None:
            if len(self._pixel_sums) >= CACHED_FORMULAS:
                self._pixel_sums.clear()
            got = self._pixel_sums[f.formula] = self._label_sums(f.support,
                                                                 self.pixels[f.support])
        return got

    def label_sets(self, c: int) -> np.ndarray:
        """(n,) int64 sorted indices of the sets holding label c."""
        return self.col_sets[self.col_start[c]:self.col_start[c + 1]]

    def _label_sums(self, support: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """(L,) int64: per label c, the sum of ``weights`` (per set of ``support``) over
        the sets of ``support`` holding c (label 0, the padding, set to 0)."""
        if support.size == 0:
            return np.zeros(self.L, np.int64)
        idx = (support[:, None] * self.W + np.arange(self.W)[None, :]).reshape(-1)
        out = np.bincount(self.flat[idx], weights=np.repeat(weights, self.W).astype(np.float64),
                          minlength=self.L)
        out = np.rint(out).astype(np.int64)
        out[0] = 0
        return out


def _iou(inter, pixels, unit_pixels):
    union = unit_pixels + pixels - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def search_unit(index: SetIndex, k: int, allowed: np.ndarray, length: int = 3,
                beam: int = 5) -> UnitFormulas:
    """Beam search (module docstring) for unit k over labels ``allowed`` ((L,) bool;
    label 0 and labels absent from the data are never used)."""
    if length < 1 or beam < 1:
        raise ValueError(f"--length and --beam must be at least 1, got {length} and {beam}")
    counts = index.counts
    a_sets, a_cnt = counts.unit(k)
    M = int(a_cnt.sum())
    out = UnitFormulas(k, M, None, [None] * length)
    active = np.zeros(index.S, np.int64)
    active[a_sets] = a_cnt
    Ic = index._label_sums(a_sets, a_cnt)                             # I(c) (L,)
    Pc = index.label_pixels                                           # |c|
    ok = allowed.copy()
    ok[0] = False
    ok &= Pc > 0
    single = np.where(ok, _iou(Ic, Pc, M), 0.0)
    labels = np.flatnonzero(ok)
    if M == 0 or not (single[labels] > 0).any():
        return out
    ranked = labels[np.argsort(-single[labels], kind="stable")]       # ties: lower label
    ranked = ranked[single[ranked] > 0]
    beam_now = [_scored(index, active, M, Formula((int(c),)), index.label_sets(int(c)))
                for c in ranked[:beam]]
    out.by_length[0] = beam_now[0]
    for _ in range(length - 1):
        beam_now = _step(index, active, M, beam_now, Ic, Pc, ok, beam, out)
    out.best = max((s for s in out.by_length if s is not None), key=lambda s: s.iou)
    # the first of equal IoUs is the shortest (max keeps the first maximum)
    return out


def _scored(index: SetIndex, active: np.ndarray, M: int, f: Formula, support: np.ndarray
            ) -> Scored:
    inter = int(active[support].sum())
    pix = int(index.pixels[support].sum())
    return Scored(f, support, inter, pix, float(_iou(inter, pix, M)))


def _step(index, active, M, beam_now: list[Scored], Ic, Pc, ok, beam: int,
          out: UnitFormulas) -> list[Scored]:
    """One extension step: the new beam (the best ``beam`` distinct masks among the old
    beam and its extensions); updates ``out.by_length`` with the best new formula of
    each length."""
    L = index.L
    ious, lens = [np.array([s.iou for s in beam_now])], [[len(s.formula) for s in beam_now]]
    for f in beam_now:
        a = active[f.support]
        hit = a > 0
        Ifc = index._label_sums(f.support[hit], a[hit])               # I(f AND c) (L,)
        Pfc = index.pixels_with(f)                                     # |f AND c|
        cand_I = np.stack([Ifc, f.intersect + Ic - Ifc, f.intersect - Ifc])     # (3, L)
        cand_P = np.stack([Pfc, f.pixels + Pc - Pfc, f.pixels - Pfc])
        changes = np.stack([(Pfc < f.pixels) & (Pfc > 0),       # AND: shrinks, not empty
                            Pfc < Pc,                            # OR: grows
                            Pfc > 0])                            # AND NOT: shrinks
        iou = np.where(changes & ok[None, :], _iou(cand_I, cand_P, M), 0.0)
        ious.append(iou.reshape(-1))
        lens.append([len(f.formula) + 1] * iou.size)
    flat, lens = np.concatenate(ious), np.concatenate(lens)
    order = np.argsort(-flat, kind="stable")
    order = order[flat[order] > 0]
    n_old = len(beam_now)
    materialized: dict[int, Scored] = {}

    def scored(i: int) -> Scored:
        if i < n_old:
            return beam_now[i]
        if i not in materialized:
            b, rest = divmod(int(i) - n_old, 3 * L)
            op, c = divmod(rest, L)
            materialized[i] = _extended(index, active, M, beam_now[b], OPS[op], int(c))
        return materialized[i]

    new = order[order >= n_old]
    for n in np.unique(lens[new]):
        s = scored(int(new[np.argmax(lens[new] == n)]))        # best new one of length n
        cur = out.by_length[n - 1]
        if cur is None or s.iou > cur.iou:
            out.by_length[n - 1] = s
    kept: list[Scored] = []
    seen: set[bytes] = set()
    for i in order:
        if len(kept) >= beam:
            break
        s = scored(int(i))
        key = s.support.tobytes()
        if key not in seen:
            seen.add(key)
            kept.append(s)
    return kept


def _extended(index: SetIndex, active, M, f: Scored, op: str, c: int) -> Scored:
    col = index.label_sets(c)
    if op == "AND":
        sup = np.intersect1d(f.support, col, assume_unique=True)
    elif op == "OR":
        sup = np.union1d(f.support, col)
    else:
        sup = np.setdiff1d(f.support, col, assume_unique=True)
    return _scored(index, active, M, f.formula.extend(op, c), sup.astype(np.int64))
