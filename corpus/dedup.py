"""Exact and MinHash-LSH near-duplicate removal across all shards and workers.

Owns the ``dedup-exact`` and ``dedup-minhash`` stages, their pure functions (hashing,
signatures, LSH parameters, bucket matching, clustering, the keep rule) and the on-disk
formats of their global steps. Both stages run as a chain of datatrove phases through
:mod:`corpus.runner`, so they work on the Local, Slurm and Ray executors alike:

exact
    ``hash`` (one task per input share) writes, per task, the 128-bit hash of every
    document's normalized text plus what the keep rule needs, sorted by hash;
    ``clusters`` (one task per hash range) groups equal hashes across *all* tasks and picks
    the document to keep; the map phase then filters each batch.

minhash
    ``signatures`` (one task per input share) computes MinHash signatures for whole Arrow
    batches with numba kernels (tokens hashed with xxh64, n-gram shingles, universal
    hashing modulo the Mersenne prime 2**61-1, exactly datatrove's permutation family and
    seeds) and writes one sorted run per LSH band in datatrove's ``.minhash.sig`` record
    format; ``buckets`` (one task per band) finds equal band signatures with a windowed,
    vectorized k-way merge and writes datatrove-format ``.dups`` pairs; ``clusters``
    (one task) joins the pairs with union-find and applies the keep rule; the map phase
    filters each batch.

Document identity inside a run is ``(rank, idx)``: the task and the position of the
document in that task's input stream. Every phase reads a task's files in the same order
with the same batches, so the position is stable, and the keep rule orders ties by it,
which is the global input order whatever the number of tasks or workers.

Keep rule (one document per cluster): highest ``math_score`` (documents without one come
last), then the longest text (in characters), then the smallest ``id``, then input order.
Removed documents carry ``dedup_cluster`` and ``dedup_kept_id`` and the reason
``dedup:exact`` or ``dedup:minhash``; kept documents that belong to a cluster get the same
two columns (``dedup_kept_id`` is then their own id).

Tokens and shingles follow :mod:`corpus.textnorm` (the decontam normalization): each CJK
character is a token, other text is split into words, digits are kept. The ASCII path of
that normalization is a numba kernel over the Arrow byte buffer (tested equal to
:func:`corpus.textnorm.tokenize`); documents with other characters go through
:func:`corpus.textnorm.normalize_text` itself, because NFKC and Unicode case folding need
its tables.
"""

from __future__ import annotations

import math
import os
import shutil
from dataclasses import dataclass
from typing import Any, ClassVar

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpus import schema, textnorm
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError, FatalError, ShardError
from corpus.runner import BatchResult, Phase, RunContext, Stage, TaskContext
from corpus.shards import atomic_write_bytes, atomic_write_json, iter_batches

# ============================================================================ constants
#: The Mersenne prime 2**61 - 1 of datatrove's (and datasketch's legacy) permutation family.
MERSENNE_PRIME = (1 << 61) - 1
#: Seed of the token and shingle hashes (xxh64) and of the exact-text hashes.
HASH_SEED = 0x6D617468  # "math"
WORK_DIR = "_work"

_P1 = np.uint64(11400714785074694791)
_P2 = np.uint64(14029467366897019727)
_P3 = np.uint64(1609587929392839161)
_P4 = np.uint64(9650029242287828579)
_P5 = np.uint64(2870177450012600261)
_MP = np.uint64(MERSENNE_PRIME)
_U64_MAX = np.uint64(0xFFFFFFFFFFFFFFFF)


# ============================================================================ numba kernels
# xxh64 is written out here (rather than calling the xxhash package per token) so that a
# whole batch is hashed in one compiled loop; tests check it against xxhash.xxh64_intdigest.
@nb.njit(inline="always")
def _rotl(x: np.uint64, r: int) -> np.uint64:
    return (x << np.uint64(r)) | (x >> np.uint64(64 - r))


@nb.njit(inline="always")
def _xround(acc: np.uint64, lane: np.uint64) -> np.uint64:
    acc = acc + lane * _P2
    acc = _rotl(acc, 31)
    return acc * _P1


@nb.njit(inline="always")
def _xmerge(acc: np.uint64, v: np.uint64) -> np.uint64:
    acc ^= _xround(np.uint64(0), v)
    return acc * _P1 + _P4


@nb.njit(inline="always")
def _xavalanche(h: np.uint64) -> np.uint64:
    h ^= h >> np.uint64(33)
    h *= _P2
    h ^= h >> np.uint64(29)
    h *= _P3
    h ^= h >> np.uint64(32)
    return h


@nb.njit(inline="always")
def _read_le(d: np.ndarray, p: int, nbytes: int) -> np.uint64:
    v = np.uint64(0)
    for k in range(nbytes):
        v |= np.uint64(d[p + k]) << np.uint64(8 * k)
    return v


@nb.njit(cache=True)
def _xxh64(d: np.ndarray, start: int, end: int, seed: np.uint64) -> np.uint64:
    """xxh64 of the bytes ``d[start:end]`` (identical to ``xxhash.xxh64_intdigest``)."""
    p = start
    if end - start >= 32:
        v1 = seed + _P1 + _P2
        v2 = seed + _P2
        v3 = seed
        v4 = seed - _P1
        while p + 32 <= end:
            v1 = _xround(v1, _read_le(d, p, 8))
            v2 = _xround(v2, _read_le(d, p + 8, 8))
            v3 = _xround(v3, _read_le(d, p + 16, 8))
            v4 = _xround(v4, _read_le(d, p + 24, 8))
            p += 32
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _xmerge(h, v1)
        h = _xmerge(h, v2)
        h = _xmerge(h, v3)
        h = _xmerge(h, v4)
    else:
        h = seed + _P5
    h += np.uint64(end - start)
    while p + 8 <= end:
        h ^= _xround(np.uint64(0), _read_le(d, p, 8))
        h = _rotl(h, 27) * _P1 + _P4
        p += 8
    if p + 4 <= end:
        h ^= _read_le(d, p, 4) * _P1
        h = _rotl(h, 23) * _P2 + _P3
        p += 4
    while p < end:
        h ^= np.uint64(d[p]) * _P5
        h = _rotl(h, 11) * _P1
        p += 1
    return _xavalanche(h)


@nb.njit(cache=True)
def _xxh64_lanes(lanes: np.ndarray, start: int, count: int, seed: np.uint64) -> np.uint64:
    """xxh64 of ``lanes[start:start+count]`` read as ``8*count`` little-endian bytes.

    A shingle is hashed this way from its token hashes, so it never has to be joined into
    a string; tests check it against ``xxhash.xxh64_intdigest(lanes.tobytes())``.
    """
    p = start
    end = start + count
    if count >= 4:
        v1 = seed + _P1 + _P2
        v2 = seed + _P2
        v3 = seed
        v4 = seed - _P1
        while p + 4 <= end:
            v1 = _xround(v1, lanes[p])
            v2 = _xround(v2, lanes[p + 1])
            v3 = _xround(v3, lanes[p + 2])
            v4 = _xround(v4, lanes[p + 3])
            p += 4
        h = _rotl(v1, 1) + _rotl(v2, 7) + _rotl(v3, 12) + _rotl(v4, 18)
        h = _xmerge(h, v1)
        h = _xmerge(h, v2)
        h = _xmerge(h, v3)
        h = _xmerge(h, v4)
    else:
        h = seed + _P5
    h += np.uint64(8 * count)
    while p < end:
        h ^= _xround(np.uint64(0), lanes[p])
        h = _rotl(h, 27) * _P1 + _P4
        p += 1
    return _xavalanche(h)


# LaTeX commands of textnorm.LATEX_DROP / LATEX_RENAME as a flat byte table for the kernel.
def _latex_table() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    names = list(textnorm.LATEX_DROP) + list(textnorm.LATEX_RENAME)
    repl = [""] * len(textnorm.LATEX_DROP) + list(textnorm.LATEX_RENAME.values())
    blob = np.frombuffer("".join(names).encode("ascii"), dtype=np.uint8).copy()
    offs = np.zeros(len(names) + 1, dtype=np.int64)
    offs[1:] = np.cumsum([len(n) for n in names])
    rblob = np.frombuffer(("".join(repl) or " ").encode("ascii"), dtype=np.uint8).copy()
    roffs = np.zeros(len(repl) + 1, dtype=np.int64)
    roffs[1:] = np.cumsum([len(r) for r in repl])
    return blob, offs, rblob, roffs


_LATEX = _latex_table()


@nb.njit(cache=True)
def _normalize_docs(data: np.ndarray, offs: np.ndarray, is_ascii: np.ndarray, pre: np.ndarray,
                    pre_offs: np.ndarray, names: np.ndarray, name_offs: np.ndarray, repl: np.ndarray,
                    repl_offs: np.ndarray, out: np.ndarray, out_offs: np.ndarray) -> None:
    """textnorm.normalize_text of every document, written into ``out`` in document order.

    Non-ASCII documents were normalized in Python (``pre``, in order) and are copied.
    ASCII ones are normalized here: lowercase; a backslash followed by a maximal run of
    letters that is one of LATEX_DROP is removed (LATEX_RENAME: replaced); every byte that
    is not [a-z0-9] separates words; words are joined by single spaces. A maximal letter
    run is exactly textnorm's ``\\name(?![a-z])``, since the text is lowercased first.
    """
    o = 0
    k = 0
    for r in range(offs.shape[0] - 1):
        out_offs[r] = o
        if not is_ascii[r]:
            for j in range(pre_offs[k], pre_offs[k + 1]):
                out[o] = pre[j]
                o += 1
            k += 1
            continue
        p = offs[r]
        end = offs[r + 1]
        doc_start = o
        pending = False  # a separator was seen since the last word byte
        while p < end:
            c = data[p]
            if 65 <= c <= 90:
                c += 32
            if (97 <= c <= 122) or (48 <= c <= 57):
                if pending and o > doc_start:
                    out[o] = 32
                    o += 1
                pending = False
                out[o] = c
                o += 1
                p += 1
                continue
            if c == 92:  # backslash: maybe a LaTeX command to drop or rename
                q = p + 1
                while q < end and ((65 <= data[q] <= 90) or (97 <= data[q] <= 122)):
                    q += 1
                n = q - p - 1
                found = -1
                if n > 0:
                    for i in range(name_offs.shape[0] - 1):
                        if name_offs[i + 1] - name_offs[i] != n:
                            continue
                        same = True
                        for j in range(n):
                            b = data[p + 1 + j]
                            if 65 <= b <= 90:
                                b += 32
                            if b != names[name_offs[i] + j]:
                                same = False
                                break
                        if same:
                            found = i
                            break
                pending = True  # the backslash itself is a separator
                if found >= 0:
                    rl = repl_offs[found + 1] - repl_offs[found]
                    if rl > 0:
                        if o > doc_start:
                            out[o] = 32
                            o += 1
                        for j in range(rl):
                            out[o] = repl[repl_offs[found] + j]
                            o += 1
                        pending = False
                    p = q
                else:
                    p += 1
                continue
            pending = True
            p += 1
    out_offs[offs.shape[0] - 1] = o


@nb.njit(inline="always")
def _utf8_len(b: np.uint8) -> int:
    if b < 0x80:
        return 1
    if b >= 0xF0:
        return 4
    if b >= 0xE0:
        return 3
    return 2


@nb.njit(inline="always")
def _is_cjk_at(d: np.ndarray, p: int, n: int, ranges: np.ndarray) -> bool:
    if n < 3:
        return False
    if n == 3:
        cp = ((d[p] & 0x0F) << 12) | ((d[p + 1] & 0x3F) << 6) | (d[p + 2] & 0x3F)
    else:
        cp = ((d[p] & 0x07) << 18) | ((d[p + 1] & 0x3F) << 12) | ((d[p + 2] & 0x3F) << 6) | (d[p + 3] & 0x3F)
    for i in range(ranges.shape[0]):
        if ranges[i, 0] <= cp <= ranges[i, 1]:
            return True
    return False


@nb.njit(cache=True)
def _split_tokens(norm: np.ndarray, offs: np.ndarray, ranges: np.ndarray,
                  starts: np.ndarray, ends: np.ndarray, doc_tok: np.ndarray, count_only: bool) -> int:
    """Token spans of normalized texts: split at spaces, every CJK character on its own.

    With ``count_only`` it only counts (to size ``starts``/``ends``); returns the count.
    """
    t = 0
    for d in range(offs.shape[0] - 1):
        if not count_only:
            doc_tok[d] = t
        p = offs[d]
        end = offs[d + 1]
        in_word = False
        while p < end:
            c = norm[p]
            if c == 32:
                if in_word:
                    if not count_only:
                        ends[t] = p
                    t += 1
                    in_word = False
                p += 1
                continue
            n = _utf8_len(c)
            if n >= 3 and _is_cjk_at(norm, p, n, ranges):
                if in_word:
                    if not count_only:
                        ends[t] = p
                    t += 1
                    in_word = False
                if not count_only:
                    starts[t] = p
                    ends[t] = p + n
                t += 1
            elif not in_word:
                if not count_only:
                    starts[t] = p
                in_word = True
            p += n
        if in_word:
            if not count_only:
                ends[t] = end
            t += 1
    if not count_only:
        doc_tok[offs.shape[0] - 1] = t
    return t


@nb.njit(cache=True)
def _token_hashes(norm: np.ndarray, starts: np.ndarray, ends: np.ndarray, seed: np.uint64) -> np.ndarray:
    out = np.empty(starts.shape[0], dtype=np.uint64)
    for t in range(starts.shape[0]):
        out[t] = _xxh64(norm, starts[t], ends[t], seed)
    return out


@nb.njit(cache=True)
def _shingle_hashes(tok_hash: np.ndarray, doc_tok: np.ndarray, ngram: int, seed: np.uint64) -> tuple:
    """Shingle hashes of every document and their per-document offsets.

    A document with ``ngram`` or more tokens has ``ntok - ngram + 1`` shingles; a shorter,
    non-empty one has a single shingle of all its tokens (so short copies still match);
    an empty one has none.
    """
    ndocs = doc_tok.shape[0] - 1
    sh_off = np.zeros(ndocs + 1, dtype=np.int64)
    for d in range(ndocs):
        nt = doc_tok[d + 1] - doc_tok[d]
        sh_off[d + 1] = sh_off[d] + (0 if nt == 0 else max(1, nt - ngram + 1))
    out = np.empty(sh_off[ndocs], dtype=np.uint64)
    for d in range(ndocs):
        t0 = doc_tok[d]
        nt = doc_tok[d + 1] - t0
        k = min(ngram, nt)
        for i in range(sh_off[d + 1] - sh_off[d]):
            out[sh_off[d] + i] = _xxh64_lanes(tok_hash, t0 + i, k, seed)
    return out, sh_off


@nb.njit(cache=True)
def _minhash_from_shingles(shingles: np.ndarray, sh_off: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """MinHash signatures: ``min over shingles of ((a*h + b) mod 2**64) mod (2**61-1)``.

    The same arithmetic as datatrove's ``MinhashDedupSignature.get_signature`` (numpy
    uint64 wraps on overflow), with the modulo done by Mersenne folding instead of a
    division. Documents without shingles get all-ones rows.
    """
    ndocs = sh_off.shape[0] - 1
    nperm = a.shape[0]
    sig = np.empty((ndocs, nperm), dtype=np.uint64)
    row = np.empty(nperm, dtype=np.uint64)
    for d in range(ndocs):
        row[:] = _U64_MAX
        for i in range(sh_off[d], sh_off[d + 1]):
            h = shingles[i]
            for p in range(nperm):
                x = a[p] * h + b[p]
                x = (x & _MP) + (x >> np.uint64(61))
                x = x - _MP if x >= _MP else x
                row[p] = min(row[p], x)
        sig[d, :] = row
    return sig


@nb.njit(cache=True)
def _minhash_fused(norm: np.ndarray, starts: np.ndarray, ends: np.ndarray, doc_tok: np.ndarray, ngram: int,
                   a: np.ndarray, b: np.ndarray, seed: np.uint64) -> np.ndarray:
    """Tokens → token hashes → shingle hashes → signatures, one document at a time.

    Equal to ``_minhash_from_shingles(*_shingle_hashes(_token_hashes(...)))`` but only one
    document's shingles are ever materialized. The inner loop runs over permutations with
    the running minima in a small local row, which LLVM vectorizes.
    """
    ndocs = doc_tok.shape[0] - 1
    nperm = a.shape[0]
    sig = np.empty((ndocs, nperm), dtype=np.uint64)
    maxtok = 0
    for d in range(ndocs):
        maxtok = max(maxtok, doc_tok[d + 1] - doc_tok[d])
    th = np.empty(maxtok, dtype=np.uint64)
    sh = np.empty(maxtok, dtype=np.uint64)
    row = np.empty(nperm, dtype=np.uint64)
    for d in range(ndocs):
        row[:] = _U64_MAX
        t0 = doc_tok[d]
        nt = doc_tok[d + 1] - t0
        if nt > 0:
            for t in range(nt):
                th[t] = _xxh64(norm, starts[t0 + t], ends[t0 + t], seed)
            k = min(ngram, nt)
            nsh = max(1, nt - ngram + 1)
            for i in range(nsh):
                sh[i] = _xxh64_lanes(th, i, k, seed)
            for i in range(nsh):
                h = sh[i]
                for p in range(nperm):
                    x = a[p] * h + b[p]
                    x = (x & _MP) + (x >> np.uint64(61))
                    x = x - _MP if x >= _MP else x
                    row[p] = min(row[p], x)
        sig[d, :] = row
    return sig


@nb.njit(cache=True)
def _doc_hashes(data: np.ndarray, offs: np.ndarray, seed: np.uint64) -> tuple:
    """Two xxh64 hashes (seeds ``seed`` and ``seed+1``) of every ``data[offs[i]:offs[i+1]]``."""
    n = offs.shape[0] - 1
    h1 = np.empty(n, dtype=np.uint64)
    h2 = np.empty(n, dtype=np.uint64)
    for i in range(n):
        h1[i] = _xxh64(data, offs[i], offs[i + 1], seed)
        h2[i] = _xxh64(data, offs[i], offs[i + 1], seed + np.uint64(1))
    return h1, h2


@nb.njit(cache=True)
def _collapse_ascii_space(data: np.ndarray, offs: np.ndarray, out: np.ndarray, out_offs: np.ndarray) -> None:
    """Runs of ASCII whitespace become one space; leading and trailing ones are dropped."""
    o = 0
    for d in range(offs.shape[0] - 1):
        out_offs[d] = o
        start = o
        pending = False
        for p in range(offs[d], offs[d + 1]):
            c = data[p]
            if c == 32 or (9 <= c <= 13):
                pending = True
                continue
            if pending and o > start:
                out[o] = 32
                o += 1
            pending = False
            out[o] = c
            o += 1
    out_offs[offs.shape[0] - 1] = o


@nb.njit(cache=True)
def _union_find(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """Component label of each of ``n`` nodes given edges ``a[i]-b[i]``: its smallest node."""
    parent = np.arange(n)
    for i in range(a.shape[0]):
        x = a[i]
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        y = b[i]
        while parent[y] != y:
            parent[y] = parent[parent[y]]
            y = parent[y]
        if x != y:
            # the smaller index becomes the root, so labels do not depend on edge order
            if x < y:
                parent[y] = x
            else:
                parent[x] = y
    for i in range(n):
        x = i
        while parent[x] != x:
            x = parent[x]
        parent[i] = x
    return parent


# ============================================================================ batch functions
_CJK = np.array(textnorm.CJK_RANGES, dtype=np.int64)


def _string_buffers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """The UTF-8 bytes and int64 offsets of a string array, without copying the bytes."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.string())
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    bufs = arr.buffers()
    offs = np.frombuffer(bufs[1], dtype=np.int32)[arr.offset: arr.offset + len(arr) + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None and bufs[2].size else np.zeros(1, np.uint8)
    return data, offs


@dataclass
class Normalized:
    """The normalized texts of a batch as one byte buffer (``data[offs[i]:offs[i+1]]``)."""

    data: np.ndarray
    offs: np.ndarray

    def __len__(self) -> int:
        return len(self.offs) - 1

    def to_pylist(self) -> list[str]:
        b = self.data.tobytes()
        return [b[self.offs[i]:self.offs[i + 1]].decode("utf-8") for i in range(len(self))]


def normalize_batch(texts: pa.Array | pa.ChunkedArray) -> Normalized:
    """:func:`corpus.textnorm.normalize_text` of every text of an Arrow string array."""
    data, offs = _string_buffers(texts)
    n = len(offs) - 1
    if n == 0:
        return Normalized(np.zeros(1, np.uint8), np.zeros(1, np.int64))
    arr = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    is_ascii = pc.fill_null(pc.string_is_ascii(arr), True).to_numpy(zero_copy_only=False)
    if is_ascii.all():
        pre, pre_offs = np.zeros(1, np.uint8), np.zeros(1, np.int64)
    else:
        # NFKC and Unicode lowercasing need unicodedata's tables: these go through Python.
        idx = np.flatnonzero(~is_ascii)
        pieces = [textnorm.normalize_text(t).encode("utf-8") for t in arr.take(pa.array(idx)).to_pylist()]
        pre_offs = np.zeros(len(pieces) + 1, dtype=np.int64)
        pre_offs[1:] = np.cumsum([len(p) for p in pieces])
        pre = np.frombuffer(b"".join(pieces) or b" ", dtype=np.uint8)
    out = np.empty(int(offs[-1] - offs[0]) + len(pre) + 1, dtype=np.uint8)
    out_offs = np.empty(n + 1, dtype=np.int64)
    _normalize_docs(data, offs, is_ascii, pre, pre_offs, *_LATEX, out, out_offs)
    return Normalized(out, out_offs)


@dataclass
class Tokens:
    """Token spans of a :class:`Normalized` batch: token ``t`` is ``data[starts[t]:ends[t]]``."""

    data: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    doc_tok: np.ndarray  # tokens of document d are doc_tok[d]:doc_tok[d+1]

    def to_pylist(self) -> list[list[str]]:
        b = self.data.tobytes()
        return [[b[self.starts[t]:self.ends[t]].decode("utf-8") for t in range(self.doc_tok[d], self.doc_tok[d + 1])]
                for d in range(len(self.doc_tok) - 1)]


def tokenize_batch(texts: pa.Array | pa.ChunkedArray) -> Tokens:
    """:func:`corpus.textnorm.tokenize` of every text: CJK characters alone, words elsewhere."""
    norm = normalize_batch(texts)
    empty = np.zeros(0, np.int64)
    count = _split_tokens(norm.data, norm.offs, _CJK, empty, empty, empty, True)
    starts = np.empty(count, np.int64)
    ends = np.empty(count, np.int64)
    doc_tok = np.empty(len(norm) + 1, np.int64)
    _split_tokens(norm.data, norm.offs, _CJK, starts, ends, doc_tok, False)
    return Tokens(norm.data, starts, ends, doc_tok)


def permutations(num_perm: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``(a, b)`` of the hash family, drawn exactly as datatrove's MinhashDedupSignature does."""
    gen = np.random.RandomState(seed)
    a = gen.randint(1, MERSENNE_PRIME, dtype=np.uint64, size=(1, num_perm))
    b = gen.randint(0, MERSENNE_PRIME, dtype=np.uint64, size=(1, num_perm))
    return a[0].copy(), b[0].copy()


def token_hashes(tokens: Tokens, seed: int = HASH_SEED) -> np.ndarray:
    """xxh64 (``seed``) of every token's UTF-8 bytes, for all documents of the batch."""
    return _token_hashes(tokens.data, tokens.starts, tokens.ends, np.uint64(seed))


def shingle_hashes(tokens: Tokens, ngram: int, seed: int = HASH_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``(hashes, offsets)``: each shingle is xxh64 of its ``ngram`` token hashes (8 LE bytes each)."""
    return _shingle_hashes(token_hashes(tokens, seed), tokens.doc_tok, ngram, np.uint64(seed))


def minhash_signatures(texts: pa.Array | pa.ChunkedArray, ngram: int, a: np.ndarray, b: np.ndarray,
                       seed: int = HASH_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``(signatures[n_docs, num_perm] uint64, has_signature[n_docs] bool)`` of a batch of texts.

    Documents without any token have no signature (their row is all ones and the mask is
    False): they can only be exact duplicates, never near ones.
    """
    tok = tokenize_batch(texts)
    sig = _minhash_fused(tok.data, tok.starts, tok.ends, tok.doc_tok, ngram, a, b, np.uint64(seed))
    return sig, np.diff(tok.doc_tok) > 0
