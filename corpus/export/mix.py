"""Mixing by source, the deterministic global shuffle, packing layout and shard cuts.

Pure functions over document index arrays (uint64 document numbers, int64 lengths): no
token is touched here, so planning a 1 TB export costs a few dozen bytes per document.

* **Mix.** A source with weight ``w`` contributes ``floor(w)`` full copies of every document
  plus, for the fraction ``w - floor(w)``, the documents that come first in a seeded order
  until the fraction of the source's *tokens* is reached (the sample stops at the document
  that lands closest to the target, so the token ratio is exact to within one document).
  ``w < 1`` is therefore a deterministic downsample and ``w = 0`` drops the source.
* **Shuffle.** Every (document, copy) gets a 64-bit key from the document's id hash, the
  copy number and the seed; output order is the keys' sorted order. The order depends on
  the ids and the seed only, not on input sharding, task count or worker count.
* **Layout.** Each output document gets a start offset ``pos`` in one flat token stream.
  Document formats and split packing place documents back to back; ``--no-split`` packing
  moves a document that does not fit in the rest of a ``seq_len`` row to the next row
  (padding the gap), and a document longer than a row starts a fresh row.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import xxhash

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer, vectorized: a bijective, well-mixed uint64 -> uint64 map."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def salt(seed: int, label: str) -> np.uint64:
    """A 64-bit constant for ``label`` under ``seed`` (xxh3 with an explicit seed)."""
    return np.uint64(xxhash.xxh3_64_intdigest(label.encode("utf-8"), seed=seed & 0xFFFFFFFFFFFFFFFF))


def id_hashes(ids: Sequence[str]) -> np.ndarray:
    """Seed-independent 64-bit hash of each document id (the seed enters through :func:`salt`)."""
    h = xxhash.xxh3_64_intdigest
    return np.fromiter((h(i.encode("utf-8")) for i in ids), dtype=np.uint64, count=len(ids))


def select_fraction(docs: np.ndarray, lengths: np.ndarray, hashes: np.ndarray, fraction: float,
                    seed: int, source: str) -> np.ndarray:
    """Documents of one source, in seeded order, whose tokens come closest to ``fraction`` of its total."""
    if fraction <= 0 or docs.size == 0:
        return docs[:0]
    keys = mix64(hashes[docs] ^ salt(seed, f"select/{source}"))
    ordered = docs[np.lexsort((docs, keys))]
    cum = np.cumsum(lengths[ordered])
    target = fraction * float(cum[-1])
    k = int(np.searchsorted(cum, target, side="left"))  # cum[k-1] < target <= cum[k]
    if k >= cum.size:
        return ordered
    below = float(cum[k - 1]) if k > 0 else 0.0
    take = k + 1 if float(cum[k]) - target < target - below else k
    return ordered[:take]


def mix_entries(source_codes: np.ndarray, lengths: np.ndarray, hashes: np.ndarray, weights: Sequence[float],
                names: Sequence[str], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(document number, copy number) of every output document, unshuffled."""
    docs_out: list[np.ndarray] = []
    copies_out: list[np.ndarray] = []
    for code, (w, name) in enumerate(zip(weights, names)):
        docs = np.flatnonzero(source_codes == code).astype(np.uint64)
        full = int(math.floor(w))
        for c in range(full):
            docs_out.append(docs)
            copies_out.append(np.full(docs.size, c, dtype=np.uint32))
        frac = float(w) - full
        if frac > 1e-12:
            picked = select_fraction(docs, lengths, hashes, frac, seed, name)
            docs_out.append(picked)
            copies_out.append(np.full(picked.size, full, dtype=np.uint32))
    if not docs_out:
        return np.zeros(0, np.uint64), np.zeros(0, np.uint32)
    return np.concatenate(docs_out), np.concatenate(copies_out)


def shuffle_entries(docs: np.ndarray, copies: np.ndarray, hashes: np.ndarray, seed: int) -> np.ndarray:
    """The permutation putting (doc, copy) entries in the seeded global order."""
    keys = mix64(hashes[docs] ^ mix64(copies.astype(np.uint64) ^ salt(seed, "order")))
    # ties (duplicate ids) fall back to document then copy number: still deterministic
    return np.lexsort((copies, docs, keys))


def _pack_whole_py(lengths: np.ndarray, seq_len: int) -> tuple[np.ndarray, int]:
    pos = np.empty(lengths.size, dtype=np.uint64)
    cur = 0
    for i, n in enumerate(lengths.tolist()):
        col = cur % seq_len
        if col and n > seq_len - col:
            cur += seq_len - col
        pos[i] = cur
        cur += n
    return pos, cur


def _pack_whole(lengths: np.ndarray, seq_len: int) -> tuple[np.ndarray, int]:
    """Greedy sequential packing without splitting documents that fit in a row (numba when big)."""
    if lengths.size < 200_000:
        return _pack_whole_py(lengths, seq_len)
    import numba

    @numba.njit(cache=False)
    def kernel(lens: np.ndarray, width: int) -> tuple[np.ndarray, int]:  # pragma: no cover - jitted
        pos = np.empty(lens.size, dtype=np.uint64)
        cur = 0
        for i in range(lens.size):
            n = lens[i]
            col = cur % width
            if col != 0 and n > width - col:
                cur += width - col
            pos[i] = cur
            cur += n
        return pos, cur

    pos, cur = kernel(lengths.astype(np.int64), np.int64(seq_len))
    return pos, int(cur)


def layout(lengths: np.ndarray, seq_len: int, packed: bool, split: bool) -> tuple[np.ndarray, int]:
    """Start offset of each output document in the flat stream, and the stream's length.

    Packed streams are padded to a whole number of ``seq_len`` rows.
    """
    if packed and not split:
        pos, total = _pack_whole(lengths, seq_len)
    else:
        pos = np.zeros(lengths.size, dtype=np.uint64)
        if lengths.size > 1:
            np.cumsum(lengths[:-1], out=pos[1:])
        total = int(lengths.sum())
    if packed:
        total = -(-total // seq_len) * seq_len
    return pos, total


def cut_shards(pos: np.ndarray, total: int, shard_tokens: int, seq_len: int, packed: bool) -> np.ndarray:
    """Flat start offset of every shard (shard i covers ``[starts[i], starts[i+1])``).

    Packed formats cut at row boundaries; document formats cut before the first document
    that starts at or beyond each multiple of ``shard_tokens``, so no shard is empty.
    """
    if total == 0:
        return np.zeros(0, dtype=np.uint64)
    if packed:
        step = max(1, shard_tokens // seq_len) * seq_len
        return np.arange(0, total, step, dtype=np.uint64)
    bucket = pos // np.uint64(shard_tokens)
    first = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    return pos[first].astype(np.uint64)


def clip(pos: np.ndarray, lengths: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For documents overlapping ``[lo, hi)``: (tokens skipped at the start, start in the region, count)."""
    start = np.maximum(pos.astype(np.int64), lo)
    end = np.minimum(pos.astype(np.int64) + lengths, hi)
    return start - pos.astype(np.int64), start - lo, np.maximum(end - start, 0)


def split_rows(starts: np.ndarray, lengths: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut pieces ``[start, start+len)`` (row-aligned coordinates) at every row boundary."""
    keep = lengths > 0
    starts, lengths = starts[keep], lengths[keep]
    if starts.size == 0:
        return starts, lengths
    first = starts // seq_len
    last = (starts + lengths - 1) // seq_len
    count = last - first + 1
    rep = np.repeat(np.arange(starts.size), count)
    k = np.arange(rep.size) - np.repeat(np.cumsum(count) - count, count)
    row = first[rep] + k
    s = np.maximum(starts[rep], row * seq_len)
    e = np.minimum(starts[rep] + lengths[rep], (row + 1) * seq_len)
    return s, e - s
