"""MinHash LSH: choosing bands x rows for a threshold, the candidate curve, and the bucket
step that turns sorted band signatures of all tasks into duplicate pairs.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from corpus.errors import ConfigError

# ============================================================================ LSH parameters
def collision_probability(similarity: float | np.ndarray, bands: int, rows: int) -> float | np.ndarray:
    """Probability that two documents of Jaccard ``similarity`` share at least one band."""
    return 1.0 - (1.0 - np.power(similarity, rows)) ** bands


def _simpson(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Composite Simpson rule along the last axis (odd number of equally spaced points)."""
    h = (x[-1] - x[0]) / (len(x) - 1)
    return h / 3.0 * (y[..., 0] + y[..., -1] + 4.0 * y[..., 1:-1:2].sum(-1) + 2.0 * y[..., 2:-1:2].sum(-1))


_GRID = 801


def false_positive_area(threshold: float, bands: int, rows: int) -> float:
    """Area under the collision curve below ``threshold`` (pairs found that are not similar)."""
    s = np.linspace(0.0, threshold, _GRID)
    return float(_simpson(collision_probability(s, bands, rows), s))


def false_negative_area(threshold: float, bands: int, rows: int) -> float:
    """Area above the collision curve beyond ``threshold`` (similar pairs that are missed)."""
    s = np.linspace(threshold, 1.0, _GRID)
    return float(_simpson(1.0 - collision_probability(s, bands, rows), s))


@functools.lru_cache(maxsize=64)
def optimal_bands_rows(threshold: float, num_perm: int, fp_weight: float = 0.5,
                       fn_weight: float = 0.5) -> tuple[int, int]:
    """``(bands, rows)`` with ``bands*rows <= num_perm`` minimizing the weighted FP + FN area.

    The same criterion and search order as datasketch's ``MinHashLSH`` (``_optimal_param``),
    with the integrals done by Simpson's rule on a fixed grid so it is fast and exact
    enough for the choice to agree.
    """
    if not 0.0 < threshold < 1.0:
        raise ConfigError(f"threshold must be between 0 and 1 (exclusive), got {threshold}")
    if num_perm < 2:
        raise ConfigError(f"num_perm must be at least 2, got {num_perm}")
    combos = [(b, r) for b in range(1, num_perm + 1) for r in range(1, num_perm // b + 1)]
    bs = np.array([c[0] for c in combos], dtype=np.float64)[:, None]
    rs = np.array([c[1] for c in combos], dtype=np.float64)[:, None]
    lo = np.linspace(0.0, threshold, _GRID)
    hi = np.linspace(threshold, 1.0, _GRID)
    fp = _simpson(1.0 - (1.0 - lo[None, :] ** rs) ** bs, lo)
    fn = _simpson((1.0 - hi[None, :] ** rs) ** bs, hi)
    err = fp * fp_weight + fn * fn_weight
    return combos[int(np.argmin(err))]  # argmin keeps the first of equal errors, like datasketch


def curve_table(threshold: float, num_perm: int, similarities: tuple[float, ...] = (
        0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)) -> str:
    """Plain-text table of the LSH choice for ``threshold`` and its collision curve."""
    b, r = optimal_bands_rows(threshold, num_perm)
    fp = false_positive_area(threshold, b, r)
    fn = false_negative_area(threshold, b, r)
    lines = [f"threshold {threshold:g}, {num_perm} permutations -> {b} bands x {r} rows "
             f"(FP area {fp:.4f}, FN area {fn:.4f})",
             "  Jaccard   P(pair becomes a candidate)"]
    for s in similarities:
        lines.append(f"  {s:7.2f}   {float(collision_probability(s, b, r)):.4f}")
    return "\n".join(lines)


def thresholds_table(num_perm: int, thresholds: tuple[float, ...] = (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)
                     ) -> str:
    """Plain-text table: for each threshold, the chosen bands x rows and FP / FN areas."""
    lines = ["  threshold  bands x rows  FP area   FN area   P(cand) at t-0.1  at t  at t+0.05"]
    for t in thresholds:
        b, r = optimal_bands_rows(t, num_perm)
        p = [float(collision_probability(min(1.0, max(0.0, s)), b, r)) for s in (t - 0.1, t, t + 0.05)]
        lines.append(f"  {t:9.2f}  {b:5d} x {r:<5d}  {false_positive_area(t, b, r):.4f}    "
                     f"{false_negative_area(t, b, r):.4f}    {p[0]:.3f}            {p[1]:.3f}  {p[2]:.3f}")
    return "\n".join(lines)

def _sig_dtype(rows: int) -> np.dtype:
    """datatrove's ``.minhash.sig`` record: ``rows`` uint64 hashes then a uint32 doc index, packed."""
    return np.dtype([(f"h{j}", "<u8") for j in range(rows)] + [("idx", "<u4")])


def _sort_rows(cols: list[np.ndarray], tiebreak: list[np.ndarray]) -> np.ndarray:
    """Order of rows by ``cols`` lexicographically, then ``tiebreak``.

    Sorts by the first column alone and lexsorts only the runs where it ties (so the
    first sort need not be stable): minhash values are almost always distinct, so this is
    one argsort instead of a 13-key lexsort.
    """
    order = np.argsort(cols[0])
    h0 = cols[0][order]
    eq = h0[1:] == h0[:-1]
    if eq.any():
        tie = np.zeros(len(h0), dtype=bool)
        tie[1:] |= eq
        tie[:-1] |= eq
        pos = np.flatnonzero(tie)
        sub = order[pos]
        keys = [t[sub] for t in reversed(tiebreak)] + [c[sub] for c in reversed(cols)]
        order[pos] = sub[np.lexsort(keys)]
    return order


def _bisect_left(column: np.ndarray, value: int) -> int:
    """Binary search in a sorted, possibly strided memmap column without copying it."""
    lo, hi = 0, len(column)
    while lo < hi:
        mid = (lo + hi) // 2
        if int(column[mid]) < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def band_pairs(runs: list[np.ndarray], run_ranks: list[int], rows: int, window_rows: int = 1_000_000) -> np.ndarray:
    """Duplicate pairs ``(rank1, idx1, rank2, idx2)`` of one LSH band, as an ``(n, 4)`` uint32 array.

    ``runs`` are sorted signature records (``_sig_dtype(rows)``, e.g. memory-mapped sig
    files) and ``run_ranks`` the task each came from. Records are merged in windows of
    about ``window_rows`` by first hash value, so memory stays bounded whatever the corpus
    size; equal signatures share their first hash and so their window. Each run of equal
    signatures gives the chain of consecutive pairs (enough for union-find), exactly
    like datatrove's ``MinhashDedupBuckets``.
    """
    total = sum(len(r) for r in runs)
    empty = np.zeros((0, 4), dtype=np.uint32)
    if total == 0:
        return empty
    n_win = max(1, math.ceil(total / max(1, window_rows)))
    cuts: list[int] = []
    if n_win > 1:
        sample = np.concatenate([np.asarray(r["h0"][:: max(1, len(r) * n_win // 4096 + 1)]) for r in runs if len(r)])
        sample.sort()
        cuts = sorted({int(sample[len(sample) * k // n_win]) for k in range(1, n_win)})
    edges: list[int | None] = [None, *cuts, None]
    out = []
    for w in range(len(edges) - 1):
        pieces, ranks = [], []
        for r, rank in zip(runs, run_ranks):
            lo = 0 if edges[w] is None else _bisect_left(r["h0"], edges[w])  # type: ignore[arg-type]
            hi = len(r) if edges[w + 1] is None else _bisect_left(r["h0"], edges[w + 1])  # type: ignore[arg-type]
            if hi > lo:
                pieces.append(np.asarray(r[lo:hi]))
                ranks.append(np.full(hi - lo, rank, dtype=np.uint32))
        if not pieces:
            continue
        cat = np.concatenate(pieces)
        rk = np.concatenate(ranks)
        cols = [cat[f"h{j}"] for j in range(rows)]
        order = _sort_rows(cols, [rk, cat["idx"]])
        eq = np.ones(len(order) - 1, dtype=bool)
        for c in cols:
            cs = c[order]
            eq &= cs[1:] == cs[:-1]
        i = np.flatnonzero(eq) + 1
        if len(i):
            prev, cur = order[i - 1], order[i]
            out.append(np.stack([rk[prev], cat["idx"][prev], rk[cur], cat["idx"][cur]], axis=1).astype(np.uint32))
    return np.concatenate(out) if out else empty
