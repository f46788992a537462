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
    (one task) checks every candidate pair on its whole signature (estimated Jaccard at
    least the threshold; ``verify``), joins the pairs with union-find and applies the keep
    rule; the map phase filters each batch.

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
character is a token, other text is split into words, digits are kept. It runs as numba
kernels over the Arrow byte buffers: ASCII directly, other characters through a table of
``NFKC(ch).lower()`` built from ``unicodedata`` for every character whose normalization
does not depend on its neighbours; the rare documents holding any other character
(combining marks, Hangul jamo, astral symbols) go through
:func:`corpus.textnorm.normalize_text` itself. Tests check the kernels equal
:func:`corpus.textnorm.tokenize` on random and on every BMP character.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import numba as nb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpus import schema, textnorm
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError, FatalError, InputError, ShardError
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


@nb.njit(inline="always")
def _decode_utf8(d: np.ndarray, p: int) -> tuple:
    """(code point, byte length) of the UTF-8 character starting at ``d[p]`` (valid UTF-8)."""
    c = np.int64(d[p])
    if c < 0x80:
        return c, 1
    if c >= 0xF0:
        return ((c & 0x07) << 18) | ((np.int64(d[p + 1]) & 0x3F) << 12) | ((np.int64(d[p + 2]) & 0x3F) << 6) \
            | (np.int64(d[p + 3]) & 0x3F), 4
    if c >= 0xE0:
        return ((c & 0x0F) << 12) | ((np.int64(d[p + 1]) & 0x3F) << 6) | (np.int64(d[p + 2]) & 0x3F), 3
    return ((c & 0x1F) << 6) | (np.int64(d[p + 1]) & 0x3F), 2


@nb.njit(cache=True)
def _scan_docs(data: np.ndarray, offs: np.ndarray, map_offs: np.ndarray, map_ends: np.ndarray) -> tuple:
    """Per document: kind (0 ASCII, 1 expandable by the table, 2 left to Python) and the
    byte length of its table expansion."""
    n = offs.shape[0] - 1
    kind = np.zeros(n, dtype=np.uint8)
    exp_len = np.zeros(n, dtype=np.int64)
    for r in range(n):
        p = offs[r]
        end = offs[r + 1]
        total = 0
        while p < end:
            if data[p] < 0x80:
                total += 1
                p += 1
                continue
            kind[r] = 1
            cp, k = _decode_utf8(data, p)
            if cp >= map_ends.shape[0] or map_offs[cp] < 0:
                kind[r] = 2
                break
            total += map_ends[cp] - map_offs[cp]
            p += k
        if kind[r] == 1:
            exp_len[r] = total
    return kind, exp_len


@nb.njit(cache=True)
def _expand_docs(data: np.ndarray, offs: np.ndarray, kind: np.ndarray, map_blob: np.ndarray,
                 map_ends: np.ndarray, map_offs: np.ndarray, out: np.ndarray, out_offs: np.ndarray) -> None:
    """NFKC + lowercase of the kind-1 documents, character by character from the table."""
    o = 0
    j = 0
    for r in range(offs.shape[0] - 1):
        if kind[r] != 1:
            continue
        out_offs[j] = o
        p = offs[r]
        end = offs[r + 1]
        while p < end:
            c = data[p]
            if c < 0x80:
                out[o] = c
                o += 1
                p += 1
                continue
            cp, k = _decode_utf8(data, p)
            for q in range(map_offs[cp], map_ends[cp]):
                out[o] = map_blob[q]
                o += 1
            p += k
        j += 1
    out_offs[j] = o


@nb.njit(cache=True)
def _normalize_docs(data: np.ndarray, offs: np.ndarray, kind: np.ndarray, exp: np.ndarray, exp_offs: np.ndarray,
                    pre: np.ndarray, pre_offs: np.ndarray, cls: np.ndarray, light: bool, names: np.ndarray,
                    name_offs: np.ndarray, repl: np.ndarray, repl_offs: np.ndarray, out: np.ndarray,
                    out_offs: np.ndarray) -> None:
    """Normalized text of every document, written into ``out`` in document order.

    Kind-2 documents were normalized in Python (``pre``, in order) and are copied. Kind-1
    documents were NFKC'd and lowercased by the table (``exp``, in order), kind-0 ones are
    ASCII. Both are finished here. Text mode (textnorm.normalize_text): lowercase ASCII; a
    backslash followed by a maximal run of ASCII letters that is one of LATEX_DROP is
    removed (LATEX_RENAME: replaced); every character that is not a word character
    (``cls`` 2, or [a-z0-9]) separates words; words are joined by single spaces. A maximal
    letter run is exactly textnorm's ``\\name(?![a-z])``, since the text is lowercased
    first. Light mode (:func:`light_normalize`): only whitespace (``cls`` 1) separates,
    every other character is kept.
    """
    o = 0
    k1 = 0
    k2 = 0
    for r in range(offs.shape[0] - 1):
        out_offs[r] = o
        if kind[r] == 2:
            for j in range(pre_offs[k2], pre_offs[k2 + 1]):
                out[o] = pre[j]
                o += 1
            k2 += 1
            continue
        if kind[r] == 1:
            src = exp
            p = exp_offs[k1]
            end = exp_offs[k1 + 1]
            k1 += 1
        else:
            src = data
            p = offs[r]
            end = offs[r + 1]
        doc_start = o
        pending = False  # a separator was seen since the last word character
        while p < end:
            c = src[p]
            if light and c < 0x80:
                if cls[c] == 1:
                    pending = True
                else:
                    if pending and o > doc_start:
                        out[o] = 32
                        o += 1
                    pending = False
                    out[o] = c + 32 if 65 <= c <= 90 else c
                    o += 1
                p += 1
                continue
            if c >= 0x80:
                cp, n = _decode_utf8(src, p)
                if cls[cp] != 2:
                    pending = True
                    p += n
                    continue
                if pending and o > doc_start:
                    out[o] = 32
                    o += 1
                pending = False
                for j in range(n):
                    out[o] = src[p + j]
                    o += 1
                p += n
                continue
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
                while q < end and ((65 <= src[q] <= 90) or (97 <= src[q] <= 122)):
                    q += 1
                n = q - p - 1
                found = -1
                if n > 0:
                    for i in range(name_offs.shape[0] - 1):
                        if name_offs[i + 1] - name_offs[i] != n:
                            continue
                        same = True
                        for j in range(n):
                            b = src[p + 1 + j]
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


@nb.njit(inline="always")
def _next_token(norm: np.ndarray, p: int, end: int, ranges: np.ndarray) -> tuple:
    """``(start, stop)`` of the first token at or after ``p`` in normalized text (``(end, end)``
    when there is none): a run of non-space characters, or one CJK character alone."""
    while p < end and norm[p] == 32:
        p += 1
    if p >= end:
        return end, end
    n = _utf8_len(norm[p])
    if n >= 3 and _is_cjk_at(norm, p, n, ranges):
        return p, p + n
    q = p
    while q < end:
        c = norm[q]
        if c == 32:
            break
        n = _utf8_len(c)
        if n >= 3 and _is_cjk_at(norm, q, n, ranges):
            break
        q += n
    return p, q


@nb.njit(cache=True)
def _split_tokens(norm: np.ndarray, offs: np.ndarray, ranges: np.ndarray,
                  starts: np.ndarray, ends: np.ndarray, doc_tok: np.ndarray, count_only: bool) -> int:
    """Token spans of normalized texts (see ``_next_token``).

    With ``count_only`` it only counts (to size ``starts``/``ends``); returns the count.
    """
    t = 0
    for d in range(offs.shape[0] - 1):
        if not count_only:
            doc_tok[d] = t
        p = offs[d]
        end = offs[d + 1]
        while True:
            a, b = _next_token(norm, p, end, ranges)
            if a == b:
                break
            if not count_only:
                starts[t] = a
                ends[t] = b
            t += 1
            p = b
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
def _minhash_fused(norm: np.ndarray, offs: np.ndarray, ranges: np.ndarray, ngram: int,
                   a: np.ndarray, b: np.ndarray, seed: np.uint64) -> tuple:
    """Normalized text → tokens → token hashes → shingle hashes → signatures, per document.

    Equal to ``_minhash_from_shingles(*_shingle_hashes(_token_hashes(_split_tokens(...))))``
    but only one document's tokens and shingles are ever held. The inner loop runs over
    permutations with the running minima in a small local row, which LLVM vectorizes.
    Returns ``(signatures, token counts)``.
    """
    ndocs = offs.shape[0] - 1
    nperm = a.shape[0]
    sig = np.empty((ndocs, nperm), dtype=np.uint64)
    ntok = np.zeros(ndocs, dtype=np.int64)
    maxlen = 1
    for d in range(ndocs):
        maxlen = max(maxlen, offs[d + 1] - offs[d])
    th = np.empty(maxlen, dtype=np.uint64)  # a token takes at least one byte
    sh = np.empty(maxlen, dtype=np.uint64)
    row = np.empty(nperm, dtype=np.uint64)
    for d in range(ndocs):
        row[:] = _U64_MAX
        nt = 0
        p = offs[d]
        end = offs[d + 1]
        while True:
            t0, t1 = _next_token(norm, p, end, ranges)
            if t0 == t1:
                break
            th[nt] = _xxh64(norm, t0, t1, seed)
            nt += 1
            p = t1
        ntok[d] = nt
        if nt > 0:
            k = min(ngram, nt)
            nsh = max(1, nt - ngram + 1)
            for i in range(nsh):
                sh[i] = _xxh64_lanes(th, i, k, seed)
            for i in range(nsh):
                h = sh[i]
                for q in range(nperm):
                    x = a[q] * h + b[q]
                    x = (x & _MP) + (x >> np.uint64(61))
                    x = x - _MP if x >= _MP else x
                    row[q] = min(row[q], x)
        sig[d, :] = row
    return sig, ntok


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
    if pa.types.is_large_string(arr.type) or pa.types.is_null(arr.type):
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


_TABLES: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None
_HANGUL_JAMO = ((0x1100, 0x11FF), (0xA960, 0xA97F), (0xD7B0, 0xD7FF))


def _context_free(ch: str) -> bool:
    """Whether NFKC of ``ch`` inside any text equals NFKC of ``ch`` alone.

    NFKC composes a starter with a following combining mark (or a Hangul vowel/final
    jamo) and reorders marks; if the decomposition of ``ch`` starts with a starter that can
    never be the second half of a composition, nothing before ``ch`` can change it, and a
    following character of the same sort cannot reach into it either.
    """
    import unicodedata

    first = unicodedata.normalize("NFKD", ch)[:1] or ch
    cp = ord(first)
    if unicodedata.combining(first) or unicodedata.category(first).startswith("M"):
        return False
    return not any(lo <= cp <= hi for lo, hi in _HANGUL_JAMO)


def _char_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-BMP-character tables of the normalization kernel, derived from textnorm itself.

    ``map_blob[map_offs[cp]:map_ends[cp]]`` is the UTF-8 of ``NFKC(ch).lower()`` for a
    context-free character (``map_offs[cp]`` is -1 for the others: documents holding one go
    through Python; so does Σ, which lowercases by context). ``cls[cp]`` classifies a
    character of the normalized, lowercased text: 2 a word character, 1 a separator,
    exactly textnorm's ``[\\W_]`` rule; ``space[cp]`` is 1 for whitespace (``str.isspace``)
    and 2 otherwise, the separators of light normalization.
    """
    global _TABLES
    if _TABLES is None:
        import unicodedata

        cls = np.ones(0x10000, dtype=np.uint8)
        space = np.full(0x10000, 2, dtype=np.uint8)
        map_offs = np.full(0x10001, -1, dtype=np.int64)
        map_ends = np.full(0x10000, -1, dtype=np.int64)
        blob = bytearray()
        nonword = textnorm._NONWORD_RE  # the very rule normalize_text applies
        for cp in range(0x10000):
            if 0xD800 <= cp <= 0xDFFF:
                continue
            ch = chr(cp)
            cls[cp] = 1 if nonword.fullmatch(ch) else 2
            space[cp] = 1 if ch.isspace() else 2
            if cp < 0x80:
                continue
            nf = unicodedata.normalize("NFKC", ch)
            if "\u03a3" in nf or not _context_free(ch):
                continue
            low = nf.lower()
            if any(ord(x) >= 0x10000 for x in low):
                continue
            m = low.encode("utf-8")
            map_offs[cp] = len(blob)
            map_ends[cp] = len(blob) + len(m)
            blob += m
        map_offs[0x10000] = len(blob)
        _TABLES = (cls, space, map_offs, map_ends, np.frombuffer(bytes(blob) or b" ", dtype=np.uint8))
    return _TABLES


def light_normalize(text: str) -> str:
    """Unicode NFKC, lowercase, every run of whitespace one space, trimmed (exact dedup's default)."""
    import unicodedata

    return " ".join(unicodedata.normalize("NFKC", text).lower().split())


def normalize_batch(texts: pa.Array | pa.ChunkedArray, mode: str = "text") -> Normalized:
    """Every text of an Arrow string array normalized as :func:`corpus.textnorm.normalize_text`
    (``mode="text"``) or :func:`light_normalize` (``mode="light"``).

    Numba kernels handle ASCII and context-free characters (NFKC and lowercasing from a
    table built with ``unicodedata``); the rare documents with other characters (combining
    marks, Hangul, astral-plane symbols) go through the Python function itself.
    """
    arr = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    if pa.types.is_null(arr.type):
        arr = pc.cast(arr, pa.string())
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    data, offs = _string_buffers(arr)
    n = len(offs) - 1
    if n == 0:
        return Normalized(np.zeros(1, np.uint8), np.zeros(1, np.int64))
    light = mode == "light"
    python_fn = light_normalize if light else textnorm.normalize_text
    cls, space, map_offs, map_ends, blob = _char_tables()
    kind, exp_len = _scan_docs(data, offs, map_offs, map_ends)
    n1 = int((kind == 1).sum())
    exp = np.empty(int(exp_len.sum()) + 1, dtype=np.uint8)
    exp_offs = np.zeros(n1 + 1, dtype=np.int64)
    if n1:
        _expand_docs(data, offs, kind, blob, map_ends, map_offs, exp, exp_offs)
    exp.setflags(write=False)  # same numba type as the read-only Arrow buffer
    idx = np.flatnonzero(kind == 2)
    if len(idx):
        pieces = [python_fn(t).encode("utf-8") for t in arr.take(pa.array(idx)).to_pylist()]
        pre_offs = np.zeros(len(pieces) + 1, dtype=np.int64)
        pre_offs[1:] = np.cumsum([len(p) for p in pieces])
        pre = np.frombuffer(b"".join(pieces) or b" ", dtype=np.uint8)
    else:
        pre, pre_offs = np.zeros(1, np.uint8), np.zeros(1, np.int64)
    out = np.empty(int(offs[-1] - offs[0]) + len(exp) + len(pre) + 1, dtype=np.uint8)
    out_offs = np.empty(n + 1, dtype=np.int64)
    _normalize_docs(data, offs, kind, exp, exp_offs, pre, pre_offs, space if light else cls, light, *_LATEX,
                    out, out_offs)
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
    norm = normalize_batch(texts)
    sig, ntok = _minhash_fused(norm.data, norm.offs, _CJK, ngram, a, b, np.uint64(seed))
    return sig, ntok > 0


def exact_hashes(texts: pa.Array | pa.ChunkedArray, normalize: str = "light",
                 seed: int = HASH_SEED) -> tuple[np.ndarray, np.ndarray]:
    """128-bit hash ``(h1, h2)`` of every text after ``normalize``:

    * ``light`` (:func:`light_normalize`): Unicode NFKC, lowercase, runs of whitespace
      made one space, trimmed; every symbol stays, so ``3 + 4`` and ``3 × 4`` remain
      different documents;
    * ``text``: :func:`corpus.textnorm.normalize_text` (drops punctuation, symbols and
      layout-only LaTeX: ``\\left(x\\right)`` equals ``(x)``, but so do ``x+1`` and ``x-1``);
    * ``none``: the raw UTF-8 bytes.
    """
    arr = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    if pa.types.is_null(arr.type):
        arr = pc.cast(arr, pa.string())
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    if normalize == "text":
        norm = normalize_batch(arr)
        data, offs = norm.data, norm.offs
    elif normalize == "light":
        norm = normalize_batch(arr, "light")
        data, offs = norm.data, norm.offs
    elif normalize == "none":
        data, offs = _string_buffers(arr)
    else:
        raise ConfigError(f"normalize must be one of light, text, none; got {normalize!r}")
    return _doc_hashes(data, offs, np.uint64(seed))


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


# ============================================================================ keep rule
KEEP_RULES = ("score", "longest", "first")


def choose_kept(groups: np.ndarray, keys: np.ndarray, ids: pa.Array, lengths: np.ndarray,
                scores: pa.Array, rule: str = "score") -> np.ndarray:
    """For each row, the row index of the document its group keeps.

    ``rule`` ``score`` (the default): highest ``math_score`` first (rows without a score
    come last), then the longest text, then the smallest id, then input order (``keys``);
    ``longest``: the same without the score; ``first``: input order only.
    """
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cols: dict[str, Any] = {"g": pa.array(groups), "k": pa.array(keys)}
    sort_keys = [("g", "ascending")]
    if rule == "score":
        cols["s"] = scores
        sort_keys.append(("s", "descending"))
    if rule in ("score", "longest"):
        cols["l"] = pa.array(lengths)
        cols["i"] = ids
        sort_keys += [("l", "descending"), ("i", "ascending")]
    elif rule != "first":
        raise ConfigError(f"keep must be one of {', '.join(KEEP_RULES)}; got {rule!r}")
    sort_keys.append(("k", "ascending"))
    # nulls sort last in either direction (Arrow's default): a document without a score never wins
    order = pc.sort_indices(pa.table(cols), sort_keys=sort_keys).to_numpy()
    g_sorted = groups[order]
    first = np.ones(n, dtype=bool)
    first[1:] = g_sorted[1:] != g_sorted[:-1]
    # the first row of each group in sorted order is the one kept; spread it over the group
    kept_sorted = order[np.maximum.accumulate(np.where(first, np.arange(n), 0))]
    kept = np.empty(n, dtype=np.int64)
    kept[order] = kept_sorted
    return kept


def _scores(batch: pa.RecordBatch, path: str) -> pa.Array:
    """``math_score`` as float64 (NaN and missing become null), or all null without the column."""
    if schema.MATH_SCORE not in batch.schema.names:
        return pa.nulls(batch.num_rows, pa.float64())
    col = batch.column(schema.MATH_SCORE)
    try:
        col = pc.cast(col, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"{path}: column '{schema.MATH_SCORE}' has type {col.type}, expected a number; "
                         "cast it to float or drop it before dedup") from exc
    return pc.if_else(pc.is_nan(col), pa.scalar(None, pa.float64()), col)


def _meta(batch: pa.RecordBatch, path: str) -> dict[str, pa.Array]:
    """What the keep rule needs of each document: id, text length in characters, score."""
    return {"id": batch.column(schema.ID),
            "length": pc.cast(pc.utf8_length(batch.column(schema.TEXT)), pa.int64()),
            "score": _scores(batch, path)}


# ============================================================================ work files
CLUSTER_SCHEMA = pa.schema([("rank", pa.uint32()), ("idx", pa.uint32()), ("removed", pa.bool_()),
                            ("cluster", pa.string()), ("kept_id", pa.string())])


def _atomic_parquet(table: pa.Table, path: str, row_group_rows: int = 65_536) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + ".tmp"
    try:
        pq.write_table(table, tmp, compression="zstd", row_group_size=row_group_rows)
        os.replace(tmp, path)
    except OSError as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise FatalError(f"{path}: cannot write dedup work file ({exc}); check free space and permissions") from exc


def _remove_prefixed(folder: str, prefix: str) -> None:
    """Delete a task's earlier (possibly partial) work files so a rerun starts clean."""
    if not os.path.isdir(folder):
        return
    for name in os.listdir(folder):
        if name.startswith(prefix):
            os.unlink(os.path.join(folder, name))


def _iter_task_batches(run: RunContext, rank: int) -> Iterator[tuple[str, pa.RecordBatch]]:
    """The task's batches exactly as the map phase will see them (same files, order, sizes).

    A file that breaks mid-way with ``skip_bad_files`` ends there, as in the runner, so
    document positions stay aligned with the map phase.
    """
    for path in run.task_files(rank):
        try:
            for batch in iter_batches(path, run.options.batch_rows):
                yield path, batch
        except ShardError:
            if not run.options.skip_bad_files:
                raise


def _cluster_table(rank: np.ndarray, idx: np.ndarray, removed: np.ndarray, cluster: list[str] | pa.Array,
                   kept_id: pa.Array) -> pa.Table:
    t = pa.table({"rank": pa.array(rank, pa.uint32()), "idx": pa.array(idx, pa.uint32()),
                  "removed": pa.array(removed, pa.bool_()), "cluster": pa.array(cluster, pa.string()),
                  "kept_id": kept_id.cast(pa.string())}, schema=CLUSTER_SCHEMA)
    return t.sort_by([("rank", "ascending"), ("idx", "ascending")])


# ============================================================================ stages
def _keep_opt() -> Any:
    return opt("score", help="Which document of a cluster to keep: 'score' = highest math_score (when the column "
                             "exists), then the longest text, then the smallest id; 'longest' = the longest text, "
                             "then the smallest id; 'first' = the first in input order.", choices=KEEP_RULES)


def _keep_work_opt() -> Any:
    return opt(False, help="Keep OUTPUT/_work (hashes, signatures, pairs, clusters) after the run for inspection; "
                           "by default it is deleted once the output is complete.")


class _DedupStage(Stage):
    """Shared glue: the map phase filters batches with the cluster table of its task."""

    reason: ClassVar[str] = "dedup"

    def work_dir(self, run: RunContext) -> str:
        return os.path.join(run.output, WORK_DIR, self.name)

    def cluster_files(self, run: RunContext) -> list[str]:
        raise NotImplementedError

    # ---- map phase
    def setup(self, task: TaskContext) -> None:
        parts = []
        for path in self.cluster_files(task.run):
            if not os.path.exists(path):
                raise FatalError(f"{path}: the dedup cluster file is missing although the global step is marked "
                                 "done (was OUTPUT/_work deleted while the stage was incomplete?); delete "
                                 f"{task.run.output} and run the stage again")
            parts.append(pq.read_table(path, filters=pc.field("rank") == pa.scalar(task.rank, pa.uint32())))
        table = pa.concat_tables(parts).sort_by("idx") if parts else CLUSTER_SCHEMA.empty_table()
        self._idx = table.column("idx").to_numpy().astype(np.int64)
        self._removed = table.column("removed").to_numpy(zero_copy_only=False)
        self._cluster = table.column("cluster").combine_chunks()
        self._kept_id = table.column("kept_id").combine_chunks()
        self._pos = 0

    def process_batch(self, batch: pa.RecordBatch, task: TaskContext) -> BatchResult:
        n = batch.num_rows
        start = self._pos
        self._pos += n
        lo, hi = np.searchsorted(self._idx, [start, start + n])
        if lo == hi:
            return BatchResult(kept=self._with_columns(batch, None, None))
        local = self._idx[lo:hi] - start
        take = np.full(n, -1, dtype=np.int64)
        take[local] = np.arange(lo, hi)
        take_arr = pa.array(take, mask=take < 0)
        cluster = self._cluster.take(take_arr)
        kept_id = self._kept_id.take(take_arr)
        removed = np.zeros(n, dtype=bool)
        removed[local] = self._removed[lo:hi]
        task.counters["clustered_docs"] += int(hi - lo)
        out = self._with_columns(batch, cluster, kept_id)
        keep_mask = pa.array(~removed)
        rem = out.filter(pa.array(removed))
        rem = rem.append_column(schema.REMOVAL_REASON, pa.array([self.reason] * rem.num_rows, pa.string()))
        return BatchResult(kept=out.filter(keep_mask), removed=rem)

    @staticmethod
    def _with_columns(batch: pa.RecordBatch, cluster: pa.Array | None, kept_id: pa.Array | None) -> pa.RecordBatch:
        """Set dedup_cluster / dedup_kept_id, keeping earlier values (e.g. from exact dedup) elsewhere."""
        n = batch.num_rows
        for name, new in ((schema.DEDUP_CLUSTER, cluster), (schema.DEDUP_KEPT_ID, kept_id)):
            if new is None:
                new = pa.nulls(n, pa.string())
            i = batch.schema.get_field_index(name)
            if i >= 0:
                old = batch.column(i)
                old = old if pa.types.is_string(old.type) else pc.cast(old, pa.string())
                batch = batch.set_column(i, name, pc.coalesce(new, old))
            else:
                batch = batch.append_column(name, new)
        return batch

    # ---- driver / finalize
    def finalize(self, run: RunContext, summary: dict[str, Any]) -> None:
        stable = os.path.join(run.output, "_run", "dedup.json")
        info = self.global_summary(run) if os.path.isdir(self.work_dir(run)) else None
        if info is not None:
            atomic_write_json(stable, info)
        elif os.path.exists(stable):  # a rerun after _work was already cleaned up
            info = _read_json(stable)
        summary["dedup"] = info or {}
        if not self.config.keep_work:  # type: ignore[attr-defined]
            shutil.rmtree(os.path.join(run.output, WORK_DIR), ignore_errors=True)

    def global_summary(self, run: RunContext) -> dict[str, Any]:
        raise NotImplementedError


class _ParquetStream:
    """Streams tables into ``path`` through a ``.tmp`` file renamed on close (atomic)."""

    def __init__(self, path: str, sch: pa.Schema) -> None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        self.path, self.tmp, self.schema = path, path + ".tmp", sch
        self.writer = pq.ParquetWriter(self.tmp, sch, compression="zstd")

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table.cast(self.schema))

    def close(self) -> None:
        self.writer.close()
        os.replace(self.tmp, self.path)


META_SCHEMA = pa.schema([("id", pa.string()), ("length", pa.int64()), ("score", pa.float64())])
HASH_SCHEMA = pa.schema([("h1", pa.uint64()), ("h2", pa.uint64()), ("idx", pa.uint32())] + list(META_SCHEMA))


def _read_json(path: str) -> dict[str, Any]:
    import json

    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# ---------------------------------------------------------------------------- exact
@dataclass
class ExactDedupConfig(StageConfig):
    """Options of ``dedup exact`` (section ``dedup-exact`` of a config file)."""

    section: ClassVar[str] = "dedup-exact"

    normalize: str = opt("light", choices=("light", "text", "none"),
                         help="What counts as the same text. 'light': equal after Unicode NFKC, lowercasing and "
                              "collapsing whitespace (every symbol counts, so '3 + 4' and '3 × 4' differ); 'text': "
                              "equal after textnorm.normalize_text, decontam's normalization (drops punctuation, "
                              "operators and layout LaTeX); 'none': byte-identical.")
    partitions: int = opt(0, help="Hash ranges the global step is split into, one task each; more partitions, "
                                  "less memory per task. 0 = one per GiB of input files.")
    keep: str = _keep_opt()
    keep_work: bool = _keep_work_opt()

    def validate(self) -> None:
        if self.partitions < 0 or self.partitions > 4096:
            raise ConfigError(f"{self.section}: partitions must be between 0 (automatic) and 4096, got "
                              f"{self.partitions}")


class ExactDedupStage(_DedupStage):
    """Removes documents whose normalized text is identical to another one, in any shard or task."""

    name = "dedup-exact"
    Config = ExactDedupConfig
    reason = "dedup:exact"
    config: ExactDedupConfig

    def partitions(self, run: RunContext) -> int:
        if self.config.partitions:
            return self.config.partitions
        if run.files is None:  # inputs from a stage that has not run yet: size unknown
            return max(1, min(64, run.tasks // 8))
        import fsspec

        total = 0
        for f in run.all_files():
            fs, path = fsspec.core.url_to_fs(f)
            total += int(fs.size(path) or 0)
        return max(1, min(256, math.ceil(total / (1 << 30))))

    def pre_phases(self, run: RunContext) -> list[Phase]:
        self._partitions = self.partitions(run)
        return [Phase("hash", self._hash_task, run.tasks), Phase("clusters", self._cluster_task, self._partitions)]

    def cluster_files(self, run: RunContext) -> list[str]:
        n = getattr(self, "_partitions", None) or self.partitions(run)
        return [os.path.join(self.work_dir(run), "clusters", f"{p:03d}.parquet") for p in range(n)]

    def _hash_task(self, rank: int, world_size: int, run: RunContext) -> None:
        """Phase 1, one task per input share: hash every document, sorted by hash."""
        parts = [HASH_SCHEMA.empty_table()]
        idx = 0
        for path, batch in _iter_task_batches(run, rank):
            n = batch.num_rows
            h1, h2 = exact_hashes(batch.column(schema.TEXT), self.config.normalize)
            cols: dict[str, Any] = {"h1": h1, "h2": h2, "idx": np.arange(idx, idx + n, dtype=np.uint32)}
            cols.update(_meta(batch, path))
            parts.append(pa.table(cols).cast(HASH_SCHEMA))
            idx += n
        table = pa.concat_tables(parts).sort_by([("h1", "ascending"), ("h2", "ascending"), ("idx", "ascending")])
        _atomic_parquet(table, os.path.join(self.work_dir(run), "hash", f"{rank:05d}.parquet"))

    def _cluster_task(self, part: int, n_parts: int, run: RunContext) -> None:
        """Phase 2, one task per hash range: equal hashes across all tasks form a cluster."""
        wd = self.work_dir(run)
        lo = (part << 64) // n_parts
        hi = ((part + 1) << 64) // n_parts
        filt = pc.field("h1") >= pa.scalar(lo, pa.uint64())
        if hi < (1 << 64):
            filt = filt & (pc.field("h1") < pa.scalar(hi, pa.uint64()))
        tables = []
        for r in range(run.tasks):
            path = os.path.join(wd, "hash", f"{r:05d}.parquet")
            if not os.path.exists(path):
                raise FatalError(f"{path}: the hash file of task {r} is missing although that task is marked done; "
                                 f"delete {run.output} and run the stage again")
            t = pq.read_table(path, filters=filt)
            tables.append(t.append_column("rank", pa.array(np.full(t.num_rows, r, np.uint32))))
        table = pa.concat_tables(tables) if tables else HASH_SCHEMA.empty_table()
        table = table.sort_by([("h1", "ascending"), ("h2", "ascending"), ("rank", "ascending"), ("idx", "ascending")])
        h1 = table.column("h1").to_numpy()
        h2 = table.column("h2").to_numpy()
        n = len(h1)
        start = np.ones(n, dtype=bool)
        start[1:] = (h1[1:] != h1[:-1]) | (h2[1:] != h2[:-1])
        group = np.cumsum(start) - 1
        sizes = np.bincount(group) if n else np.zeros(0, np.int64)
        sel = np.flatnonzero(sizes[group] >= 2) if n else np.zeros(0, np.int64)
        sub = table.take(pa.array(sel))
        ranks = sub.column("rank").to_numpy().astype(np.uint64)
        idxs = sub.column("idx").to_numpy().astype(np.uint64)
        ids = sub.column("id").combine_chunks()
        kept = choose_kept(group[sel], (ranks << np.uint64(32)) | idxs, ids,
                           sub.column("length").to_numpy(), sub.column("score").combine_chunks(), self.config.keep)
        removed = kept != np.arange(len(sel))
        cluster = [f"ex-{a:016x}{b:016x}" for a, b in zip(h1[sel].tolist(), h2[sel].tolist())]
        out = _cluster_table(ranks, idxs, removed, cluster, ids.take(pa.array(kept)))
        _atomic_parquet(out, os.path.join(wd, "clusters", f"{part:03d}.parquet"))
        big = sizes[sizes >= 2]
        atomic_write_json(os.path.join(wd, "clusters", f"{part:03d}.json"), {
            "docs": int(n), "clusters": int(len(big)), "docs_in_clusters": int(len(sel)),
            "removed": int(removed.sum()), "largest_cluster": int(big.max()) if len(big) else 0})

    def global_summary(self, run: RunContext) -> dict[str, Any]:
        total = {"method": "exact", "normalize": self.config.normalize, "keep": self.config.keep,
                 "partitions": len(self.cluster_files(run)), "clusters": 0, "docs_in_clusters": 0, "removed": 0,
                 "largest_cluster": 0}
        for f in self.cluster_files(run):
            s = _read_json(f[: -len(".parquet")] + ".json")
            for k in ("clusters", "docs_in_clusters", "removed"):
                total[k] += s[k]
            total["largest_cluster"] = max(total["largest_cluster"], s["largest_cluster"])
        return total


# ---------------------------------------------------------------------------- minhash
#: Low bits of each hash kept to verify candidate pairs: two different 16-bit values collide
#: with probability 2**-16, which moves an estimated Jaccard by less than 0.0001.
FULL_SIG_DTYPE = np.dtype("<u2")


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


@dataclass
class MinhashDedupConfig(StageConfig):
    """Options of ``dedup minhash`` (section ``dedup-minhash`` of a config file)."""

    section: ClassVar[str] = "dedup-minhash"

    threshold: float = opt(0.8, help="Jaccard similarity of shingle sets above which two documents are "
                                     "near-duplicates; bands x rows are chosen from it (see the table below).")
    ngram: int = opt(5, help="Shingle size in tokens (words; each CJK character is a token).")
    num_perm: int = opt(112, help="Permutations (hash functions) per signature.")
    bands: int = opt(0, help="LSH bands; 0 = chosen from --threshold (minimal weighted false positive + false "
                             "negative area, as datasketch does). Set with --rows.")
    rows: int = opt(0, help="Rows (hashes) per band; 0 = chosen from --threshold. Set with --bands.")
    seed: int = opt(1, help="Seed of the permutations (datatrove's MinhashConfig.seed).")
    verify: bool = opt(True, help="Check every LSH candidate pair on its whole signature and drop it when the "
                                  "estimated Jaccard similarity is below --threshold; keeps documents that only "
                                  "share a template (and chains through them) apart.")
    keep: str = _keep_opt()
    keep_work: bool = _keep_work_opt()
    window_rows: int = opt(1_000_000, help="Signatures merged at once per band in the bucket step (memory bound).")
    buffer_mb: int = opt(64, help="Signature memory of a task before a sorted run is written to disk.")

    def validate(self) -> None:
        where = self.section
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"{where}: threshold must be between 0 and 1 (exclusive), got {self.threshold}")
        if self.ngram < 1:
            raise ConfigError(f"{where}: ngram must be at least 1, got {self.ngram}")
        if not 2 <= self.num_perm <= 4096:
            raise ConfigError(f"{where}: num_perm must be between 2 and 4096, got {self.num_perm}")
        if (self.bands == 0) != (self.rows == 0) or self.bands < 0 or self.rows < 0:
            raise ConfigError(f"{where}: set both bands and rows (got bands={self.bands}, rows={self.rows}), or "
                              "neither to choose them from the threshold")
        if self.bands * self.rows > self.num_perm:
            raise ConfigError(f"{where}: bands x rows = {self.bands * self.rows} exceeds num_perm = "
                              f"{self.num_perm}; lower them or raise num_perm")
        if self.window_rows < 1 or self.buffer_mb < 1:
            raise ConfigError(f"{where}: window_rows and buffer_mb must be at least 1, got {self.window_rows} and "
                              f"{self.buffer_mb}")

    def lsh(self) -> tuple[int, int]:
        """``(bands, rows)``: as given, or the optimum for the threshold."""
        if self.bands and self.rows:
            return self.bands, self.rows
        return optimal_bands_rows(self.threshold, self.num_perm)


class MinhashDedupStage(_DedupStage):
    """Removes near-duplicates: MinHash LSH candidate pairs joined into clusters over all tasks."""

    name = "dedup-minhash"
    Config = MinhashDedupConfig
    reason = "dedup:minhash"
    config: MinhashDedupConfig

    def pre_phases(self, run: RunContext) -> list[Phase]:
        bands, _rows = self.config.lsh()
        return [Phase("signatures", self._signatures_task, run.tasks),
                Phase("buckets", self._buckets_task, bands),
                Phase("clusters", self._clusters_task, 1)]

    def cluster_files(self, run: RunContext) -> list[str]:
        return [os.path.join(self.work_dir(run), "clusters", "000.parquet")]

    def _bucket_dir(self, run: RunContext, band: int) -> str:
        return os.path.join(self.work_dir(run), "sigs", f"bucket_{band:03d}")

    def _signatures_task(self, rank: int, world_size: int, run: RunContext) -> None:
        """Phase 1, one task per input share: signatures of every document, one sorted run per band."""
        cfg = self.config
        bands, rows = cfg.lsh()
        a, b = permutations(cfg.num_perm, cfg.seed)
        for band in range(bands):
            _remove_prefixed(self._bucket_dir(run, band), f"{rank:05d}-")
        meta = _ParquetStream(os.path.join(self.work_dir(run), "meta", f"{rank:05d}.parquet"), META_SCHEMA)
        full_path = self._full_path(run, rank)
        os.makedirs(os.path.dirname(full_path), exist_ok=True)
        full = open(full_path + ".tmp", "wb")  # noqa: SIM115 - closed below, renamed when whole
        sigs: list[np.ndarray] = []
        idxs: list[np.ndarray] = []
        buffered = 0
        n_runs = 0
        pos = 0
        for path, batch in _iter_task_batches(run, rank):
            sig, ok = minhash_signatures(batch.column(schema.TEXT), cfg.ngram, a, b)
            meta.write(pa.table(_meta(batch, path)))
            # the low 16 bits of every hash, row = document position, for verifying candidates
            full.write(sig.astype(FULL_SIG_DTYPE).tobytes())
            sel = np.flatnonzero(ok)
            if len(sel):
                sigs.append(sig[sel, : bands * rows])
                idxs.append((sel + pos).astype(np.uint32))
                buffered += sigs[-1].nbytes
            pos += batch.num_rows
            if buffered >= cfg.buffer_mb << 20:
                self._write_run(run, rank, n_runs, np.concatenate(sigs), np.concatenate(idxs), bands, rows)
                n_runs += 1
                sigs, idxs, buffered = [], [], 0
        if sigs:
            self._write_run(run, rank, n_runs, np.concatenate(sigs), np.concatenate(idxs), bands, rows)
        meta.close()
        full.close()
        os.replace(full_path + ".tmp", full_path)

    def _full_path(self, run: RunContext, rank: int) -> str:
        return os.path.join(self.work_dir(run), "full", f"{rank:05d}.sig16")

    def _write_run(self, run: RunContext, rank: int, n: int, sig: np.ndarray, idx: np.ndarray,
                   bands: int, rows: int) -> None:
        dtype = _sig_dtype(rows)
        for band in range(bands):
            cols = [sig[:, band * rows + j] for j in range(rows)]
            order = _sort_rows(cols, [idx])
            rec = np.empty(len(idx), dtype=dtype)
            for j, c in enumerate(cols):
                rec[f"h{j}"] = c[order]
            rec["idx"] = idx[order]
            atomic_write_bytes(os.path.join(self._bucket_dir(run, band), f"{rank:05d}-{n:03d}.minhash.sig"),
                               rec.tobytes())

    def _buckets_task(self, band: int, world_size: int, run: RunContext) -> None:
        """Phase 2, one task per band: equal band signatures across all tasks become pairs."""
        _bands, rows = self.config.lsh()
        dtype = _sig_dtype(rows)
        folder = self._bucket_dir(run, band)
        names = sorted(f for f in os.listdir(folder) if f.endswith(".minhash.sig")) if os.path.isdir(folder) else []
        runs, ranks = [], []
        for name in names:
            path = os.path.join(folder, name)
            size = os.path.getsize(path)
            if size % dtype.itemsize:
                raise FatalError(f"{path}: truncated signature file ({size} bytes is not a multiple of "
                                 f"{dtype.itemsize}); delete {run.output} and run the stage again")
            if size:
                runs.append(np.memmap(path, dtype=dtype, mode="r"))
                ranks.append(int(name.split("-")[0]))
        pairs = band_pairs(runs, ranks, rows, self.config.window_rows)
        atomic_write_bytes(os.path.join(self.work_dir(run), "dups", f"{band:05d}.dups"),
                           pairs.astype("<u4").tobytes())

    def _clusters_task(self, _rank: int, world_size: int, run: RunContext) -> None:
        """Phase 3, one task: union-find over all pairs, then the keep rule per cluster."""
        import xxhash

        cfg = self.config
        bands, rows = cfg.lsh()
        wd = self.work_dir(run)
        keys_a, keys_b = [], []
        for band in range(bands):
            path = os.path.join(wd, "dups", f"{band:05d}.dups")
            if not os.path.exists(path):
                raise FatalError(f"{path}: the pairs of band {band} are missing although that task is marked done; "
                                 f"delete {run.output} and run the stage again")
            p = np.fromfile(path, dtype="<u4").reshape(-1, 4).astype(np.uint64)
            keys_a.append((p[:, 0] << np.uint64(32)) | p[:, 1])
            keys_b.append((p[:, 2] << np.uint64(32)) | p[:, 3])
        ka = np.concatenate(keys_a) if keys_a else np.zeros(0, np.uint64)
        kb = np.concatenate(keys_b) if keys_b else np.zeros(0, np.uint64)
        del keys_a, keys_b
        # dense node numbers, so that an edge fits one uint64 and a pair found in several
        # bands counts once (memory: a few arrays of the number of pairs, nothing per document)
        nodes = np.unique(np.concatenate([ka, kb]))
        ea = np.searchsorted(nodes, ka).astype(np.uint64)
        eb = np.searchsorted(nodes, kb).astype(np.uint64)
        del ka, kb
        edges = np.unique((np.minimum(ea, eb) << np.uint64(32)) | np.maximum(ea, eb))
        del ea, eb
        ea = (edges >> np.uint64(32)).astype(np.int64)
        eb = (edges & np.uint64(0xFFFFFFFF)).astype(np.int64)
        del edges
        candidates = len(ea)
        if cfg.verify and candidates:
            ok = self._estimated_jaccard(run, nodes, ea, eb) >= cfg.threshold
            ea, eb = ea[ok], eb[ok]
            used = np.unique(np.concatenate([ea, eb]))
            nodes = nodes[used]
            ea, eb = np.searchsorted(used, ea), np.searchsorted(used, eb)
        label = _union_find(ea, eb, len(nodes))
        node_rank = (nodes >> np.uint64(32)).astype(np.int64)
        node_idx = (nodes & np.uint64(0xFFFFFFFF)).astype(np.int64)
        ids, lengths, scores = [], [], []
        for r in np.unique(node_rank).tolist():
            meta = pq.read_table(os.path.join(wd, "meta", f"{r:05d}.parquet"))
            m = meta.take(pa.array(node_idx[node_rank == r]))
            ids.append(m.column("id").combine_chunks())
            lengths.append(m.column("length").to_numpy())
            scores.append(m.column("score").combine_chunks())
        id_arr = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
        kept = choose_kept(label, nodes, id_arr, np.concatenate(lengths) if lengths else np.zeros(0, np.int64),
                           pa.concat_arrays(scores) if scores else pa.array([], pa.float64()), cfg.keep)
        kept_id = id_arr.take(pa.array(kept))
        names = {k: f"mh-{xxhash.xxh64_intdigest(v.encode('utf-8'), HASH_SEED):016x}"
                 for k, v in zip(np.unique(kept).tolist(), id_arr.take(pa.array(np.unique(kept))).to_pylist())}
        cluster = [names[k] for k in kept.tolist()]
        removed = kept != np.arange(len(nodes))
        _atomic_parquet(_cluster_table(node_rank, node_idx, removed, cluster, kept_id),
                        os.path.join(wd, "clusters", "000.parquet"))
        sizes = np.bincount(label) if len(label) else np.zeros(0, np.int64)
        sizes = sizes[sizes > 0]
        atomic_write_json(os.path.join(wd, "clusters", "000.json"), {
            "candidate_pairs": int(candidates), "pairs": int(len(ea)),
            "clusters": int(len(sizes)), "docs_in_clusters": int(len(nodes)),
            "removed": int(removed.sum()), "largest_cluster": int(sizes.max()) if len(sizes) else 0})

    def _estimated_jaccard(self, run: RunContext, nodes: np.ndarray, ea: np.ndarray, eb: np.ndarray,
                           chunk: int = 32_768) -> np.ndarray:
        """Share of equal hashes (of ``num_perm``) between the two documents of each edge.

        Edges come in chunks and each chunk reads only its rows from the memory-mapped
        signature files, so memory does not grow with the number of clustered documents.
        """
        nperm = self.config.num_perm
        maps: dict[int, np.ndarray] = {}

        def rows(node: np.ndarray) -> np.ndarray:
            keys = nodes[node]
            rank = (keys >> np.uint64(32)).astype(np.int64)
            idx = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
            out = np.empty((len(keys), nperm), dtype=FULL_SIG_DTYPE)
            for r in np.unique(rank).tolist():
                if r not in maps:
                    maps[r] = np.memmap(self._full_path(run, r), dtype=FULL_SIG_DTYPE, mode="r").reshape(-1, nperm)
                sel = rank == r
                out[sel] = maps[r][idx[sel]]
            return out

        est = np.empty(len(ea), dtype=np.float64)
        for i in range(0, len(ea), chunk):
            est[i:i + chunk] = (rows(ea[i:i + chunk]) == rows(eb[i:i + chunk])).mean(axis=1)
        return est

    def global_summary(self, run: RunContext) -> dict[str, Any]:
        bands, rows = self.config.lsh()
        s = _read_json(os.path.join(self.work_dir(run), "clusters", "000.json"))
        return {"method": "minhash", "threshold": self.config.threshold, "ngram": self.config.ngram,
                "num_perm": self.config.num_perm, "bands": bands, "rows": rows, "keep": self.config.keep,
                "verify": self.config.verify,
                "false_positive_area": round(false_positive_area(self.config.threshold, bands, rows), 6),
                "false_negative_area": round(false_negative_area(self.config.threshold, bands, rows), 6), **s}
