"""Dedup's numba kernels over Arrow byte buffers: xxh64, text normalization, token splitting,
shingle and MinHash hashing, and union-find.

Everything here is compiled with numba and works on flat ``uint8``/``int64`` arrays (the
buffers of an Arrow string array), so a whole batch is processed in one call. The Python
entry points that prepare those buffers are in :mod:`corpus.dedup.text`. Tests check the
kernels against ``xxhash``, :mod:`corpus.textnorm`, datatrove and datasketch.
"""

from __future__ import annotations

import numba as nb
import numpy as np

from corpus import textnorm

# ============================================================================ constants
#: The Mersenne prime 2**61 - 1 of datatrove's (and datasketch's legacy) permutation family.
MERSENNE_PRIME = (1 << 61) - 1
#: Seed of the token and shingle hashes (xxh64) and of the exact-text hashes.
HASH_SEED = 0x6D617468  # "math"

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
