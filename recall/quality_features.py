"""Word-presence features for the quality scorer: fastText's input tokens hashed into buckets.

Owns the bag-of-words representation of the ``fasttext`` quality kind. A document is
prepared exactly like a recall model's fastText line (:func:`recall.features.preprocess`:
lowercased tokens, LaTeX commands kept, CJK segmented), then every distinct token (and,
with ``ngrams`` > 1, every distinct run of up to ``ngrams`` tokens, combined polynomially
like fastText's word n-grams) is hashed into one of ``buckets`` slots. A feature is present or
absent (counts would let long pages win on length alone).

Why presence and not fastText's own vectors: on a scripted grading rule over real math
pages, a ridge head on these features ranked held-out pages at Spearman 0.92 from 600
labels, against at best 0.70 for a ridge head on fastText supervised sentence vectors and 0.72
for the expected value of a 6-class fastText model (``bench/quality.py heads`` reproduces it).

Both passes are numba loops over the preprocessed Arrow buffer: :func:`csr_features`
(training: the sparse matrix) and :class:`LinearScorer` (scoring: the dot product with
the head's weights, without building the matrix).
"""

from __future__ import annotations

import numba
import numpy as np
import pyarrow as pa

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_NGRAM_MUL = np.uint64(116049371)  # fastText's word n-gram hash combination


def _buffers(lines: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(utf-8 bytes, int64 offsets) of a string array, read in place."""
    if isinstance(lines, pa.ChunkedArray):
        lines = lines.combine_chunks() if lines.num_chunks != 1 else lines.chunk(0)
    n = len(lines)
    off_type = np.int64 if pa.types.is_large_string(lines.type) else np.int32
    bufs = lines.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_type)[lines.offset: lines.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    return data, offsets


@numba.njit(cache=True)
def _doc_buckets(data: np.ndarray, start: int, end: int, ngrams: int, buckets: int, stamp: np.ndarray, doc: int,
                 out: np.ndarray) -> int:
    """Distinct bucket ids of one document into ``out``; returns how many."""
    hist = np.zeros(ngrams, dtype=np.uint64)  # hashes of the last tokens, newest first
    seen = 0
    k = 0
    i = start
    while i < end:
        while i < end and data[i] == 0x20:
            i += 1
        if i >= end:
            break
        h = _FNV_OFFSET
        while i < end and data[i] != 0x20:
            h = (h ^ np.uint64(data[i])) * _FNV_PRIME
            i += 1
        for j in range(ngrams - 1, 0, -1):
            hist[j] = hist[j - 1]
        hist[0] = h
        seen += 1
        g = np.uint64(0)
        m = np.uint64(1)
        for n in range(min(ngrams, seen)):
            # the run of the last n+1 tokens: a polynomial in their hashes, like fastText's n-grams
            g = g + hist[n] * m
            m = m * _NGRAM_MUL
            b = int((g + np.uint64(n)) % np.uint64(buckets))
            if stamp[b] != doc:
                stamp[b] = doc
                out[k] = b
                k += 1
    return k


@numba.njit(cache=True)
def _csr(data: np.ndarray, offsets: np.ndarray, ngrams: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    n = offsets.shape[0] - 1
    stamp = np.full(buckets, -1, dtype=np.int64)
    indptr = np.zeros(n + 1, dtype=np.int64)
    cap = 1024
    idx = np.empty(cap, dtype=np.int32)
    tmp = np.empty(1024, dtype=np.int32)
    for d in range(n):
        s, e = offsets[d], offsets[d + 1]
        need = (e - s + 2) * ngrams
        if tmp.shape[0] < need:
            tmp = np.empty(need, dtype=np.int32)
        k = _doc_buckets(data, s, e, ngrams, buckets, stamp, d, tmp)
        if indptr[d] + k > cap:
            while indptr[d] + k > cap:
                cap *= 2
            grown = np.empty(cap, dtype=np.int32)
            grown[: indptr[d]] = idx[: indptr[d]]
            idx = grown
        idx[indptr[d]: indptr[d] + k] = np.sort(tmp[:k])
        indptr[d + 1] = indptr[d] + k
    return indptr, idx[: indptr[n]].copy()


@numba.njit(cache=True)
def _dot(data: np.ndarray, offsets: np.ndarray, ngrams: int, weights: np.ndarray, stamp: np.ndarray,
         base: int) -> np.ndarray:
    n = offsets.shape[0] - 1
    buckets = weights.shape[0]
    out = np.zeros(n, dtype=np.float64)
    tmp = np.empty(1024, dtype=np.int32)
    for d in range(n):
        s, e = offsets[d], offsets[d + 1]
        need = (e - s + 2) * ngrams
        if tmp.shape[0] < need:
            tmp = np.empty(need, dtype=np.int32)
        k = _doc_buckets(data, s, e, ngrams, buckets, stamp, base + d, tmp)
        acc = 0.0
        for j in range(k):
            acc += weights[tmp[j]]
        out[d] = acc
    return out


def csr_features(lines: pa.Array, ngrams: int, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """(indptr, bucket ids) of the presence matrix of preprocessed ``lines`` (CSR, sorted ids per row)."""
    data, offsets = _buffers(lines)
    return _csr(data, offsets, ngrams, buckets)


class LinearScorer:
    """Dot products of documents' presence features with a weight vector, batch after batch.

    Keeps one stamp array (which bucket was last seen in which document) across batches so
    no per-batch allocation of ``buckets`` slots is needed.
    """

    def __init__(self, weights: np.ndarray, ngrams: int) -> None:
        self.weights = np.ascontiguousarray(weights, dtype=np.float32)
        self.ngrams = ngrams
        self._stamp = np.full(len(self.weights), -1, dtype=np.int64)
        self._base = 0

    def __call__(self, lines: pa.Array) -> np.ndarray:
        data, offsets = _buffers(lines)
        out = _dot(data, offsets, self.ngrams, self.weights, self._stamp, self._base)
        self._base += len(offsets) - 1
        return out
