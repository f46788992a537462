"""Whole Arrow batches of texts to normalized bytes, tokens, exact hashes and MinHash signatures.

The Python side of :mod:`corpus.dedup.kernels`: builds the per-character normalization
tables from ``unicodedata`` and :mod:`corpus.textnorm`, hands the Arrow buffers to the
kernels and sends the rare documents the tables cannot handle through
:func:`corpus.textnorm.normalize_text` itself.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus import textnorm
from corpus.dedup.kernels import (_LATEX, HASH_SEED, MERSENNE_PRIME, _doc_hashes, _expand_docs, _minhash_fused,
                                  _normalize_docs, _scan_docs, _shingle_hashes, _split_tokens, _token_hashes)
from corpus.errors import ConfigError

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
