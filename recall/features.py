"""Recall preprocessing: the one pure function that turns documents into fastText input lines.

Training and scoring call the same :func:`preprocess`, with the options saved next to the
model, so a model never sees text prepared differently from what it was trained on.

Rules, in order (see :func:`preprocess`):

1. Unicode lowercase (``pyarrow.compute.utf8_lower``).
2. Strip noise that says nothing about the topic and differs between sources: URLs,
   e-mail addresses, HTML tags and entities, and WikiText's ``@-@`` escapes.
3. One byte-level pass (numba) that splits the text into space-separated tokens:
   letters and digits form words; a LaTeX command (``\\frac``) stays one token with its
   backslash, because command names are the strongest math signal in raw pages; every
   other punctuation mark or symbol (``$ ^ _ { } = ∑ ≤ ，``) is a token of its own;
   full-width ASCII (``（３）``) folds to ASCII; all whitespace, newlines included, becomes
   single spaces, so each document is one fastText line.
4. Chinese segmentation, one of :data:`SEGMENTERS`:

   * ``char``: every CJK character (:data:`corpus.textnorm.CJK_RANGES`) is a token; the
     model's word n-grams (wordNgrams=3) then see character bi- and trigrams. Vectorized.
   * ``jieba``: documents containing CJK are cut into words by jieba first (one Python
     call per such document, so it is ~50x slower; see BENCHMARKS.md for both).
   * ``none``: CJK runs stay glued to their neighbours (English-only models).

Everything runs on whole Arrow arrays: a batch of 8192 documents costs a few regex passes
and one compiled loop, not 8192 Python calls.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus.errors import ConfigError
from corpus.textnorm import CJK_RANGES

#: Bump when the rules change: the version is saved with each model, and scoring with a
#: model made under other rules is refused.
PREPROCESS_VERSION = 1

SEGMENTERS = ("char", "jieba", "none")

_HTML_TAGS = (
    "a|abbr|article|aside|b|big|blockquote|body|br|button|caption|center|code|dd|del|div|dl|dt|em|"
    "figcaption|figure|font|footer|form|h[1-6]|head|header|hr|html|i|iframe|img|input|ins|kbd|label|"
    "li|link|main|meta|nav|noscript|ol|option|p|pre|q|s|samp|script|section|select|small|span|"
    "strike|strong|style|sub|sup|svg|table|tbody|td|tfoot|th|thead|title|tr|tt|u|ul|var"
)
# Only known tag names count as markup: "a <b and c> d" in a math text is not a tag.
NOISE_PATTERN = (
    r"(?:https?|ftp)://[^\s<>\"]+"
    r"|www\.[^\s<>\"]+"
    r"|[\w.+-]+@[\w-]+\.[\w.-]+"
    r"|</?(?:" + _HTML_TAGS + r")(?:\s[^<>]{0,300})?/?>"
    r"|&(?:[a-z]{2,8}|#\d{1,7}|#x[0-9a-f]{1,6});"
    r"|@[-.,]@"
)

_CJK = np.array(CJK_RANGES, dtype=np.int64)


# ----------------------------------------------------------------------------- kernel
@numba.njit(cache=True, inline="always")
def _in_ranges(cp: int, ranges: np.ndarray) -> bool:
    for k in range(ranges.shape[0]):
        if ranges[k, 0] <= cp <= ranges[k, 1]:
            return True
    return False


@numba.njit(cache=True, inline="always")
def _char_class(cp: int) -> int:
    """0 word character, 1 whitespace, 2 a token of its own (punctuation, symbol)."""
    if cp < 0x80:
        if (0x30 <= cp <= 0x39) or (0x61 <= cp <= 0x7A) or (0x41 <= cp <= 0x5A):
            return 0
        if cp == 0x20 or (0x09 <= cp <= 0x0D) or cp == 0:
            return 1
        return 2
    if cp == 0xA0 or cp == 0x1680 or (0x2000 <= cp <= 0x200B) or cp == 0x2028 or cp == 0x2029 \
            or cp == 0x202F or cp == 0x205F or cp == 0x3000 or cp == 0xFEFF:
        return 1
    if (0xA1 <= cp <= 0xBF) or cp == 0xD7 or cp == 0xF7:
        return 2  # ¡ ± ² · ¼ × ÷ ...
    if (0x2010 <= cp <= 0x2027) or (0x2030 <= cp <= 0x205E) or (0x2070 <= cp <= 0x209F):
        return 2  # dashes, quotes, primes, super/subscripts
    if (0x2100 <= cp <= 0x2BFF) or (0x27C0 <= cp <= 0x27EF) or (0x2980 <= cp <= 0x2AFF):
        return 2  # letterlike, arrows, math operators, technical, misc math symbols
    if (0x3001 <= cp <= 0x3004) or (0x3008 <= cp <= 0x3020) or (0x3030 <= cp <= 0x3030):
        return 2  # CJK punctuation: 、 。 「 」 【 】
    if (0xFE30 <= cp <= 0xFE6F) or (0xFF00 <= cp <= 0xFFEF):
        return 2  # CJK compatibility / half- and full-width forms (not folded ones)
    if (0x1D400 <= cp <= 0x1D7FF):
        return 0  # mathematical alphanumerics read as letters
    if 0x1F000 <= cp <= 0x1FAFF:
        return 2  # emoji and pictographs
    return 0


def _ascii_tables() -> tuple[np.ndarray, np.ndarray]:
    """Class (0 word, 1 space, 2 mark, 3 backslash) and lowercase of each ASCII byte."""
    cls = np.full(128, 2, dtype=np.uint8)
    low = np.arange(128, dtype=np.uint8)
    for b in range(128):
        if chr(b).isalnum():
            cls[b] = 0
        elif b in (0, 9, 10, 11, 12, 13, 32):
            cls[b] = 1
    cls[0x5C] = 3
    low[0x41:0x5B] += 0x20
    return cls, low


_ASCII_CLS, _ASCII_LOW = _ascii_tables()


@numba.njit(cache=True, nogil=True)
def _tokenize_kernel(data: np.ndarray, offsets: np.ndarray, out: np.ndarray, out_offsets: np.ndarray,
                     split_cjk: bool, cjk: np.ndarray, acls: np.ndarray, alow: np.ndarray) -> int:
    """Rewrite each string of (data, offsets) into space-separated tokens; returns bytes used.

    ``out`` must hold 3 bytes per input byte (a 1-byte mark becomes " x "). Runs without
    the GIL, so the next batch can be prepared while fastText predicts the current one.
    """
    o = 0
    n = offsets.shape[0] - 1
    out_offsets[0] = 0
    for r in range(n):
        start_o = o
        space = True  # nothing emitted yet, so no leading space
        i = offsets[r]
        end = offsets[r + 1]
        while i < end:
            b = data[i]
            if b < 0x80:
                c = acls[b]
                if c == 0:  # the hot path: letters and digits
                    out[o] = alow[b]
                    o += 1
                    space = False
                    i += 1
                elif c == 1:
                    if not space:
                        out[o] = 0x20
                        o += 1
                        space = True
                    i += 1
                elif c == 2:
                    if not space:
                        out[o] = 0x20
                        o += 1
                    out[o] = b
                    out[o + 1] = 0x20
                    o += 2
                    space = True
                    i += 1
                else:  # backslash: a LaTeX command (or an escaped mark) is one token
                    if not space:
                        out[o] = 0x20
                        o += 1
                    out[o] = 0x5C
                    o += 1
                    i += 1
                    if i < end and data[i] < 0x80 and acls[data[i]] == 0 and data[i] > 0x39:
                        while i < end and data[i] < 0x80 and acls[data[i]] == 0 and data[i] > 0x39:
                            out[o] = alow[data[i]]
                            o += 1
                            i += 1
                    elif i < end and data[i] > 0x20 and data[i] < 0x7F:
                        out[o] = data[i]
                        o += 1
                        i += 1
                    out[o] = 0x20
                    o += 1
                    space = True
                continue
            # decode one multi-byte UTF-8 code point
            if b >= 0xF0 and i + 3 < end:
                cp = ((b & 0x07) << 18) | ((data[i + 1] & 0x3F) << 12) | ((data[i + 2] & 0x3F) << 6) \
                    | (data[i + 3] & 0x3F)
                nb = 4
            elif b >= 0xE0 and b < 0xF0 and i + 2 < end:
                cp = ((b & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F)
                nb = 3
            elif b >= 0xC0 and b < 0xE0 and i + 1 < end:
                cp = ((b & 0x1F) << 6) | (data[i + 1] & 0x3F)
                nb = 2
            else:  # stray continuation byte or truncated sequence: keep it inside the word
                out[o] = b
                o += 1
                space = False
                i += 1
                continue
            if 0xFF01 <= cp <= 0xFF5E:
                # full-width ASCII folds to ASCII (Chinese text writes （３） for (3))
                a = cp - 0xFEE0
                c = acls[a]
                if c == 0:
                    out[o] = alow[a]
                    o += 1
                    space = False
                else:
                    if not space:
                        out[o] = 0x20
                        o += 1
                    out[o] = a
                    out[o + 1] = 0x20
                    o += 2
                    space = True
                i += nb
                continue
            cls = _char_class(cp)
            if cls == 0 and split_cjk and _in_ranges(cp, cjk):
                cls = 2
            if cls == 1:
                if not space:
                    out[o] = 0x20
                    o += 1
                    space = True
            elif cls == 0:
                for k in range(nb):
                    out[o + k] = data[i + k]
                o += nb
                space = False
            else:
                if not space:
                    out[o] = 0x20
                    o += 1
                for k in range(nb):
                    out[o + k] = data[i + k]
                o += nb
                out[o] = 0x20
                o += 1
                space = True
            i += nb
        if o > start_o and out[o - 1] == 0x20:
            o -= 1
        out_offsets[r + 1] = o
    return o


# ----------------------------------------------------------------------------- public API
def _as_string_array(texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    elif not isinstance(texts, pa.Array):
        texts = pa.array(list(texts), pa.string())
    if pa.types.is_large_string(texts.type):
        return texts
    if not pa.types.is_string(texts.type):
        raise TypeError(f"preprocess expects strings, got {texts.type}")
    return texts


def _tokenize(arr: pa.Array, split_cjk: bool) -> pa.Array:
    """Run the kernel over one (large_)string array without copying its data buffer."""
    n = len(arr)
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_type)[arr.offset: arr.offset + n + 1] if n else np.zeros(1, off_type)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None and n else np.zeros(0, np.uint8)
    used = int(offsets[-1] - offsets[0]) if n else 0
    out = np.empty(3 * used + 8, dtype=np.uint8)
    out_offsets = np.empty(n + 1, dtype=np.int64)
    size = _tokenize_kernel(data, offsets.astype(np.int64), out, out_offsets, split_cjk, _CJK, _ASCII_CLS,
                             _ASCII_LOW)
    if size < 2**31 - 1:
        return pa.StringArray.from_buffers(n, pa.py_buffer(out_offsets.astype(np.int32)),
                                           pa.py_buffer(out[:size]))
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(out_offsets), pa.py_buffer(out[:size]))


def _jieba_segment(arr: pa.Array) -> pa.Array:
    """Cut the Han runs of documents containing CJK into words with jieba.

    Only runs of Han characters go to jieba: given whole text it would also split
    ``\\frac`` and ``café``, which the byte kernel handles better.
    """
    import re

    import jieba  # imported lazily: loading its dictionary takes about a second

    has_cjk = pc.match_substring_regex(arr, r"\p{Han}").to_numpy(zero_copy_only=False)
    idx = np.flatnonzero(has_cjk)
    if idx.size == 0:
        return arr
    jieba.setLogLevel(60)
    run = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")

    def cut(m: re.Match[str]) -> str:
        return " " + " ".join(jieba.lcut(m.group(0), HMM=True)) + " "

    texts = arr.to_pylist()
    for i in idx:
        texts[i] = run.sub(cut, texts[i])
    return pa.array(texts, pa.string())


def check_segmenter(segmenter: str) -> str:
    if segmenter not in SEGMENTERS:
        raise ConfigError(f"unknown Chinese segmenter {segmenter!r}; use one of {', '.join(SEGMENTERS)}")
    return segmenter


def preprocess(texts: pa.Array | pa.ChunkedArray | Sequence[str], segmenter: str = "char") -> pa.Array:
    """fastText input lines for ``texts`` (see the module docstring for the rules).

    Pure and deterministic; returns a string array of the same length, without newlines.

    >>> preprocess(["See https://x.org: Let $\\\\frac{A}{2}=１$!"]).to_pylist()
    ['see : let $ \\\\frac { a } { 2 } = 1 $ !']
    """
    check_segmenter(segmenter)
    arr = _as_string_array(texts)
    if len(arr) == 0:
        return pa.array([], pa.string())
    arr = pc.utf8_lower(arr)
    arr = pc.replace_substring_regex(arr, NOISE_PATTERN, " ")
    if segmenter == "jieba":
        arr = _jieba_segment(arr)
    return _tokenize(arr, segmenter == "char")


def preprocess_one(text: str, segmenter: str = "char") -> str:
    """:func:`preprocess` for a single string (tests, debugging)."""
    return preprocess([text], segmenter).to_pylist()[0]


def token_counts(lines: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Number of tokens in each preprocessed line (lines have single spaces, no padding)."""
    arr = _as_string_array(lines)
    spaces = pc.count_substring(arr, " ").to_numpy(zero_copy_only=False).astype(np.int64)
    empty = pc.equal(pc.utf8_length(arr), 0).to_numpy(zero_copy_only=False)
    return np.where(empty, 0, spaces + 1)


def crop_lines(lines: Sequence[str], keep_tokens: np.ndarray, starts: np.ndarray) -> list[str]:
    """Each line cut to ``keep_tokens[i]`` tokens starting at token ``starts[i]`` (training only)."""
    out: list[str] = []
    for line, k, s in zip(lines, keep_tokens.tolist(), starts.tolist()):
        toks = line.split(" ")
        if k >= len(toks):
            out.append(line)
        else:
            out.append(" ".join(toks[s: s + k]))
    return out
