"""Recall preprocessing: the one pure function that turns documents into fastText input lines.

Training and scoring call the same :func:`preprocess`, with the options saved next to the
model, so a model never sees text prepared differently from what it was trained on.

The rules (one left-to-right pass over each document):

1. **Lowercase** every character with a one-to-one lowercase (:data:`LOWER`, from Python's
   ``str.lower``; mappings that change length or turn a non-ASCII character into ASCII are
   left out).
2. **Strip noise** that says nothing about the topic and differs between sources; each match
   becomes a token boundary (:data:`NOISE_PATTERN` is the exact definition):
   URLs (``http://``, ``https://``, ``ftp://``, ``www.``), e-mail addresses, HTML tags with a
   known tag name and no attributes or ``name=value`` ones (so ``a <b and c> d`` in a formula
   is kept), HTML entities, and WikiText's ``@-@`` escapes.
3. **Tokens**, separated by single spaces: letters and digits form words; a LaTeX command
   (``\\frac``) stays one token with its backslash, because command names are the strongest
   math signal in raw pages; every other mark or symbol (``$ ^ _ { } = ∑ ≤ ，``) is a token
   of its own; full-width ASCII (``（３）``) folds to ASCII; all whitespace, newlines included,
   and every control character becomes one space, so each document is one fastText line.
4. **Chinese**, one of :data:`SEGMENTERS`:

   * ``char``: every CJK character (:data:`corpus.textnorm.CJK_RANGES`) is a token; the
     model's word n-grams (wordNgrams=3) then see character bi- and trigrams;
   * ``jieba``: Han runs are cut into words by jieba first (one Python call per document
     with CJK, so far slower; BENCHMARKS.md has both);
   * ``none``: CJK runs stay glued together (English-only models).

Everything above runs as one compiled numba loop over an Arrow batch's UTF-8 buffer (no
Python object per document, no GIL). :func:`preprocess_reference` implements the same
rules with Python's ``re`` on one string; the tests check the two agree.
"""

from __future__ import annotations

import re
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

#: HTML tag names stripped as markup. A tag must also have no attributes or attributes with
#: an '=': so "a <b and c> d" in a formula is kept, "<b>" and "<a href=...>" are not.
HTML_TAGS = (
    "a", "abbr", "article", "aside", "b", "big", "blockquote", "body", "br", "button", "caption", "center",
    "code", "dd", "del", "div", "dl", "dt", "em", "figcaption", "figure", "font", "footer", "form", "h1",
    "h2", "h3", "h4", "h5", "h6", "head", "header", "hr", "html", "i", "iframe", "img", "input", "ins",
    "kbd", "label", "li", "link", "main", "meta", "nav", "noscript", "ol", "option", "p", "pre", "q", "s",
    "samp", "script", "section", "select", "small", "span", "strike", "strong", "style", "sub", "sup", "svg",
    "table", "tbody", "td", "tfoot", "th", "thead", "title", "tr", "tt", "u", "ul", "var",
)
#: The noise rule as a regular expression over lowercased text (ASCII classes). The kernel
#: implements exactly this; :func:`preprocess_reference` uses it directly.
NOISE_PATTERN = (
    r"(?:https?|ftp)://[^ \t\n\r\f\v<>\"]+"
    r"|www\.[^ \t\n\r\f\v<>\"]+"
    r"|[a-z0-9_.+-]+@[a-z0-9_-]+\.[a-z0-9_.-]+"
    r"|</?(?:" + "|".join(sorted(HTML_TAGS, key=lambda t: (-len(t), t))) + r")"
    r"(?:[ \t\n\r\f\v]*/?>|[ \t\n\r\f\v][^<>=]{0,300}=[^<>]{0,300}>)"
    r"|&(?:[a-z]{2,8}|#[0-9]{1,7}|#x[0-9a-f]{1,6});"
    r"|@[-.,]@"
)
_NOISE_RE = re.compile(NOISE_PATTERN)


def _lower_table() -> np.ndarray:
    """Lowercase code point for every BMP code point (identity where none applies)."""
    low = np.arange(0x10000, dtype=np.int32)
    for cp in range(0x80, 0x10000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        lc = chr(cp).lower()
        if len(lc) == 1 and ord(lc) >= 0x80 and ord(lc) != cp:
            low[cp] = ord(lc)
    low[0x41:0x5B] += 0x20
    return low


#: Lowercase of each BMP code point, as used by the kernel and the reference.
LOWER = _lower_table()
_LOWER_MAP = {cp: int(LOWER[cp]) for cp in np.flatnonzero(LOWER != np.arange(0x10000)).tolist()}
_CJK = np.array(CJK_RANGES, dtype=np.int64)


def _ascii_tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per ASCII byte: class (0 word, 1 space, 2 mark, 3 backslash), e-mail-run membership,
    fast-path kind (as the class, but 3 wherever noise may start) and lowercase."""
    cls = np.full(128, 2, dtype=np.uint8)
    run = np.zeros(128, dtype=np.uint8)
    fast = np.zeros(128, dtype=np.uint8)
    low = np.arange(128, dtype=np.uint8)
    low[0x41:0x5B] += 0x20
    for b in range(128):
        ch = chr(b)
        if ch.isalnum():
            cls[b] = 0
        elif b <= 0x20 or b == 0x7F:  # whitespace and control characters
            cls[b] = 1
        if ch.isalnum() or ch in "_.+-":
            run[b] = 1
        # 0 letter/digit, 1 whitespace, 2 mark; 3 where noise may start or a backslash
        fast[b] = 3 if ch.lower() in "hfw<&@\\" else (0 if ch.isalnum() else (1 if cls[b] == 1 else 2))
    cls[0x5C] = 3
    return cls, run, fast, low


_ASCII_CLS, _EMAIL_RUN, _FAST, _ALOW = _ascii_tables()


def _tag_codes() -> np.ndarray:
    return np.array(sorted(_pack(t) for t in HTML_TAGS), dtype=np.int64)


def _pack(name: str) -> int:
    """A tag name (≤ 10 chars of a-z, 0-9) as one integer, for a sorted-array lookup."""
    v = 0
    for ch in name:
        v = v * 37 + (ord(ch) - 0x60 if ch.isalpha() else ord(ch) - 0x30 + 27)
    return v


_TAGS = _tag_codes()


# ----------------------------------------------------------------------------- kernel
@numba.njit(cache=True, inline="always")
def _in_ranges(cp: int, ranges: np.ndarray) -> bool:
    for k in range(ranges.shape[0]):
        if ranges[k, 0] <= cp <= ranges[k, 1]:
            return True
    return False


@numba.njit(cache=True, inline="always")
def _char_class(cp: int) -> int:
    """For non-ASCII code points: 0 word character, 1 whitespace (or C1 control), 2 a token of its own."""
    if cp <= 0xA0 or cp == 0x1680 or (0x2000 <= cp <= 0x200B) or cp == 0x2028 or cp == 0x2029 \
            or cp == 0x202F or cp == 0x205F or cp == 0x3000 or cp == 0xFEFF:
        return 1
    if (0xA1 <= cp <= 0xBF) or cp == 0xD7 or cp == 0xF7:
        return 2  # ¡ ± ² · ¼ × ÷ ...
    if (0x2010 <= cp <= 0x2027) or (0x2030 <= cp <= 0x205E) or (0x2070 <= cp <= 0x209F):
        return 2  # dashes, quotes, primes, super/subscripts
    if (0x2100 <= cp <= 0x2BFF) or (0x2980 <= cp <= 0x2AFF):
        return 2  # letterlike, arrows, math operators, technical, misc math symbols
    if (0x3001 <= cp <= 0x3004) or (0x3008 <= cp <= 0x3020) or cp == 0x3030:
        return 2  # CJK punctuation: 、 。 「 」 【 】
    if (0xFE30 <= cp <= 0xFE6F) or (0xFF00 <= cp <= 0xFFEF):
        return 2  # CJK compatibility, half- and full-width forms (the full-width ASCII is folded first)
    if 0x1F000 <= cp <= 0x1FAFF:
        return 2  # emoji and pictographs
    return 0


@numba.njit(cache=True, inline="always")
def _lower_ascii(b: int) -> int:
    return b + 0x20 if 0x41 <= b <= 0x5A else b


@numba.njit(cache=True, inline="always")
def _is_space(b: int) -> bool:
    return b == 0x20 or (0x09 <= b <= 0x0D)


@numba.njit(cache=True, inline="always")
def _starts_with(data: np.ndarray, i: int, end: int, word: np.ndarray) -> bool:
    """Whether data[i:] starts with ``word`` (lowercase ASCII), ignoring ASCII case."""
    if i + word.shape[0] > end:
        return False
    for k in range(word.shape[0]):
        if _lower_ascii(data[i + k]) != word[k]:
            return False
    return True


@numba.njit(cache=True)
def _url_end(data: np.ndarray, i: int, end: int, http: np.ndarray, https: np.ndarray, ftp: np.ndarray,
             www: np.ndarray) -> int:
    """End of a URL starting at i, or -1."""
    j = -1
    if _starts_with(data, i, end, https):
        j = i + 8
    elif _starts_with(data, i, end, http):
        j = i + 7
    elif _starts_with(data, i, end, ftp):
        j = i + 6
    elif _starts_with(data, i, end, www):
        j = i + 4
    if j < 0:
        return -1
    k = j
    while k < end:
        c = data[k]
        if _is_space(c) or c == 0x3C or c == 0x3E or c == 0x22:
            break
        k += 1
    return k if k > j else -1


@numba.njit(cache=True, inline="always")
def _word_char(c: int) -> bool:
    return (0x30 <= c <= 0x39) or (0x41 <= c <= 0x5A) or (0x61 <= c <= 0x7A) or c == 0x5F


@numba.njit(cache=True)
def _email_end(data: np.ndarray, i: int, end: int, run: np.ndarray) -> int:
    """End of an e-mail address whose local part starts at i, or -1."""
    j = i
    while j < end and data[j] < 0x80 and run[data[j]] == 1:
        j += 1
    if j == i or j >= end or data[j] != 0x40:
        return -1
    k = j + 1
    s = k
    while k < end and (_word_char(data[k]) or data[k] == 0x2D):
        k += 1
    if k == s or k >= end or data[k] != 0x2E:
        return -1
    k += 1
    s = k
    while k < end and (_word_char(data[k]) or data[k] == 0x2D or data[k] == 0x2E):
        k += 1
    return k if k > s else -1


@numba.njit(cache=True, inline="always")
def _is_cont(c: int) -> bool:
    return c & 0xC0 == 0x80  # a UTF-8 continuation byte: not the start of a character


@numba.njit(cache=True)
def _tag_end(data: np.ndarray, i: int, end: int, tags: np.ndarray) -> int:
    """End of an HTML tag starting at '<' at i, or -1 (see HTML_TAGS and NOISE_PATTERN)."""
    j = i + 1
    if j < end and data[j] == 0x2F:
        j += 1
    s = j
    code = 0
    while j < end and j - s <= 10:
        c = _lower_ascii(data[j])
        if 0x61 <= c <= 0x7A:
            code = code * 37 + (c - 0x60)
        elif 0x30 <= c <= 0x39:
            code = code * 37 + (c - 0x30 + 27)
        else:
            break
        j += 1
    if j == s or j - s > 10 or j >= end:
        return -1
    k = np.searchsorted(tags, code)
    if k >= tags.shape[0] or tags[k] != code:
        return -1
    # no attributes: spaces, an optional '/', then '>'
    k = j
    while k < end and _is_space(data[k]):
        k += 1
    if k < end and data[k] == 0x2F:
        k += 1
    if k < end and data[k] == 0x3E:
        return k + 1
    # attributes: a space, then text with an '=' ("a <b and c> d" has none: not a tag)
    if not _is_space(data[j]):
        return -1
    k = j + 1
    chars = 0
    while k < end and data[k] != 0x3D:
        if data[k] == 0x3C or data[k] == 0x3E:
            return -1
        if not _is_cont(data[k]):
            chars += 1
            if chars > 300:
                return -1
        k += 1
    if k >= end:
        return -1
    k += 1
    chars = 0
    while k < end and data[k] != 0x3E:
        if data[k] == 0x3C:
            return -1
        if not _is_cont(data[k]):
            chars += 1
            if chars > 300:
                return -1
        k += 1
    return k + 1 if k < end else -1


@numba.njit(cache=True)
def _entity_end(data: np.ndarray, i: int, end: int) -> int:
    """End of an HTML entity starting at '&' at i, or -1."""
    j = i + 1
    if j < end and data[j] == 0x23:
        j += 1
        if j < end and (data[j] == 0x78 or data[j] == 0x58):
            s = j + 1
            k = s
            while k < end and k - s < 6 and ((0x30 <= data[k] <= 0x39) or (0x61 <= _lower_ascii(data[k]) <= 0x66)):
                k += 1
            if k > s and k < end and data[k] == 0x3B:
                return k + 1
        s = j
        k = s
        while k < end and k - s < 7 and 0x30 <= data[k] <= 0x39:
            k += 1
        return k + 1 if k > s and k < end and data[k] == 0x3B else -1
    s = j
    k = s
    while k < end and k - s < 8 and 0x61 <= _lower_ascii(data[k]) <= 0x7A:
        k += 1
    return k + 1 if k - s >= 2 and k < end and data[k] == 0x3B else -1


@numba.njit(cache=True, nogil=True)
def _kernel(data: np.ndarray, offsets: np.ndarray, out: np.ndarray, out_offsets: np.ndarray, split_cjk: bool,
            cjk: np.ndarray, acls: np.ndarray, run: np.ndarray, fast: np.ndarray, alow: np.ndarray,
            lower: np.ndarray, tags: np.ndarray, http: np.ndarray, https: np.ndarray, ftp: np.ndarray,
            www: np.ndarray) -> int:
    """Apply the rules to each string of (data, offsets); returns the bytes written to ``out``.

    ``out`` must hold 3 bytes per input byte (a 1-byte mark becomes " x "). Noise is looked
    for at every byte before anything else, exactly like a left-to-right regex scan.
    """
    o = 0
    out_offsets[0] = 0
    for r in range(offsets.shape[0] - 1):
        start_o = o
        space = True  # nothing emitted yet, so no leading space
        i = offsets[r]
        end = offsets[r + 1]
        has_at = False  # e-mail checks cost a look-ahead per word: only where an @ exists
        for j in range(i, end):
            if data[j] == 0x40:
                has_at = True
                break
        prev_run = False  # was the previous byte part of an e-mail-like run (a-z 0-9 _ . + -)?
        cmd = 0  # 1 just after a backslash, 2 inside a LaTeX command name
        while i < end:
            b = data[i]
            if b < 0x80 and cmd == 0:
                k = fast[b]
                if k != 3 and (prev_run or not has_at or run[b] == 0):
                    # hot path: bytes that cannot start noise (most of them)
                    if k == 0:  # a letter or digit, then the rest of its word
                        out[o] = alow[b]
                        o += 1
                        i += 1
                        while i < end and data[i] < 0x80 and fast[data[i]] == 0:
                            out[o] = alow[data[i]]
                            o += 1
                            i += 1
                        space = False
                        prev_run = True
                    elif k == 1:  # whitespace
                        if not space:
                            out[o] = 0x20
                            o += 1
                            space = True
                        prev_run = False
                        i += 1
                    else:  # a mark: a token of its own
                        if not space:
                            out[o] = 0x20
                            o += 1
                        out[o] = b
                        out[o + 1] = 0x20
                        o += 2
                        space = True
                        prev_run = run[b] == 1
                        i += 1
                    continue
            if b < 0x80:
                skip = -1
                lb = _lower_ascii(b)
                if i + 3 < end and ((lb == 0x68 and (data[i + 1] | 0x20) == 0x74) or
                                    (lb == 0x66 and (data[i + 1] | 0x20) == 0x74) or
                                    (lb == 0x77 and (data[i + 1] | 0x20) == 0x77)):
                    skip = _url_end(data, i, end, http, https, ftp, www)
                if skip < 0 and has_at and not prev_run and run[b] == 1:
                    skip = _email_end(data, i, end, run)
                if skip < 0:
                    if b == 0x3C:
                        skip = _tag_end(data, i, end, tags)
                    elif b == 0x26:
                        skip = _entity_end(data, i, end)
                    elif b == 0x40 and i + 2 < end and data[i + 2] == 0x40 and \
                            (data[i + 1] == 0x2D or data[i + 1] == 0x2E or data[i + 1] == 0x2C):
                        skip = i + 3
                if skip >= 0:
                    if not space:
                        out[o] = 0x20
                        o += 1
                        space = True
                    i = skip
                    prev_run = False
                    cmd = 0
                    continue
                prev_run = run[b] == 1
                if cmd != 0:
                    is_letter = 0x61 <= lb <= 0x7A
                    if is_letter:
                        out[o] = lb  # a command name goes on
                        o += 1
                        cmd = 2
                        i += 1
                        continue
                    if cmd == 1 and 0x20 < b < 0x7F:
                        out[o] = b  # \\ \{ \, : backslash and one mark
                        out[o + 1] = 0x20
                        o += 2
                        space = True
                        cmd = 0
                        i += 1
                        continue
                    out[o] = 0x20  # the command ends here; this byte is read as usual
                    o += 1
                    space = True
                    cmd = 0
                c = acls[b]
                if c == 0:
                    out[o] = lb
                    o += 1
                    space = False
                elif c == 1:
                    if not space:
                        out[o] = 0x20
                        o += 1
                        space = True
                elif c == 2:
                    if not space:
                        out[o] = 0x20
                        o += 1
                    out[o] = b
                    out[o + 1] = 0x20
                    o += 2
                    space = True
                else:  # backslash: starts a token; the next bytes decide its end
                    if not space:
                        out[o] = 0x20
                        o += 1
                    out[o] = 0x5C
                    o += 1
                    space = False
                    cmd = 1
                i += 1
                continue
            prev_run = False
            if cmd != 0:
                out[o] = 0x20
                o += 1
                space = True
                cmd = 0
            # decode one multi-byte UTF-8 code point (Arrow strings are valid UTF-8)
            if b >= 0xF0 and i + 3 < end:
                cp = ((b & 0x07) << 18) | ((data[i + 1] & 0x3F) << 12) | ((data[i + 2] & 0x3F) << 6) \
                    | (data[i + 3] & 0x3F)
                nb = 4
            elif 0xE0 <= b < 0xF0 and i + 2 < end:
                cp = ((b & 0x0F) << 12) | ((data[i + 1] & 0x3F) << 6) | (data[i + 2] & 0x3F)
                nb = 3
            elif 0xC0 <= b < 0xE0 and i + 1 < end:
                cp = ((b & 0x1F) << 6) | (data[i + 1] & 0x3F)
                nb = 2
            else:  # not valid UTF-8: keep the byte inside the word
                out[o] = b
                o += 1
                space = False
                i += 1
                continue
            i += nb
            if cp < 0x10000:
                cp = lower[cp]
            if 0xFF01 <= cp <= 0xFF5E:
                # full-width ASCII folds to ASCII (Chinese text writes （３） for (3))
                a = _lower_ascii(cp - 0xFEE0)
                if acls[a] == 0:
                    out[o] = a
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
                continue
            cls = _char_class(cp)
            if cls == 0 and split_cjk and _in_ranges(cp, cjk):
                cls = 2
            if cls == 1:
                if not space:
                    out[o] = 0x20
                    o += 1
                    space = True
                continue
            if cls == 2 and not space:
                out[o] = 0x20
                o += 1
            # encode cp (lowercasing may change its length)
            if cp < 0x800:
                out[o] = 0xC0 | (cp >> 6)
                out[o + 1] = 0x80 | (cp & 0x3F)
                o += 2
            elif cp < 0x10000:
                out[o] = 0xE0 | (cp >> 12)
                out[o + 1] = 0x80 | ((cp >> 6) & 0x3F)
                out[o + 2] = 0x80 | (cp & 0x3F)
                o += 3
            else:
                out[o] = 0xF0 | (cp >> 18)
                out[o + 1] = 0x80 | ((cp >> 12) & 0x3F)
                out[o + 2] = 0x80 | ((cp >> 6) & 0x3F)
                out[o + 3] = 0x80 | (cp & 0x3F)
                o += 4
            if cls == 2:
                out[o] = 0x20
                o += 1
                space = True
            else:
                space = False
        if o > start_o and out[o - 1] == 0x20:
            o -= 1
        out_offsets[r + 1] = o
    return o


_WORDS = tuple(np.frombuffer(w, dtype=np.uint8).copy() for w in (b"http://", b"https://", b"ftp://", b"www."))


# ----------------------------------------------------------------------------- public API
def _as_string_array(texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> pa.Array:
    if isinstance(texts, pa.ChunkedArray):
        texts = texts.combine_chunks() if texts.num_chunks != 1 else texts.chunk(0)
    elif not isinstance(texts, pa.Array):
        texts = pa.array(list(texts), pa.string())
    if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
        raise TypeError(f"preprocess expects strings, got {texts.type}")
    return texts


def _run_kernel(arr: pa.Array, split_cjk: bool) -> pa.Array:
    """Run the kernel over one (large_)string array, reading its data buffer in place."""
    n = len(arr)
    if arr.null_count:
        arr = pc.fill_null(arr, "")
    off_type = np.int64 if pa.types.is_large_string(arr.type) else np.int32
    bufs = arr.buffers()
    offsets = np.frombuffer(bufs[1], dtype=off_type)[arr.offset: arr.offset + n + 1].astype(np.int64)
    data = np.frombuffer(bufs[2], dtype=np.uint8) if bufs[2] is not None else np.zeros(0, np.uint8)
    out = np.empty(3 * int(offsets[-1] - offsets[0]) + 8, dtype=np.uint8)
    out_offsets = np.empty(n + 1, dtype=np.int64)
    size = _kernel(data, offsets, out, out_offsets, split_cjk, _CJK, _ASCII_CLS, _EMAIL_RUN, _FAST, _ALOW, LOWER, _TAGS,
                   *_WORDS)
    if size < 2**31 - 1:
        return pa.StringArray.from_buffers(n, pa.py_buffer(out_offsets.astype(np.int32)), pa.py_buffer(out[:size]))
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(out_offsets), pa.py_buffer(out[:size]))


_HAN_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f]+")


def _jieba_cut(text: str) -> str:
    """Han runs cut into words by jieba (spaces around each word); everything else untouched."""
    import jieba  # imported lazily: loading its dictionary takes about a second

    jieba.setLogLevel(60)
    return _HAN_RUN.sub(lambda m: " " + " ".join(jieba.lcut(m.group(0), HMM=True)) + " ", text)


def _jieba_segment(arr: pa.Array) -> pa.Array:
    """Documents containing Han characters go through :func:`_jieba_cut`; others untouched.

    Only Han runs go to jieba: given whole text it would also split ``\\frac`` and ``café``.
    """
    has_cjk = pc.match_substring_regex(arr, r"\p{Han}").to_numpy(zero_copy_only=False)
    idx = np.flatnonzero(has_cjk)
    if idx.size == 0:
        return arr
    texts = arr.to_pylist()
    for i in idx.tolist():
        texts[i] = _jieba_cut(texts[i])
    return pa.array(texts, pa.string())


def check_segmenter(segmenter: str) -> str:
    if segmenter not in SEGMENTERS:
        raise ConfigError(f"unknown Chinese segmenter {segmenter!r}; use one of {', '.join(SEGMENTERS)}")
    return segmenter


def preprocess(texts: pa.Array | pa.ChunkedArray | Sequence[str], segmenter: str = "char") -> pa.Array:
    """fastText input lines for ``texts`` (see the module docstring for the rules).

    Pure and deterministic: a string array of the same length, without newlines.

    >>> preprocess(["See https://x.org: Let $\\\\frac{A}{2}=１$!"]).to_pylist()
    ['see : let $ \\\\frac { a } { 2 } = 1 $ !']
    """
    check_segmenter(segmenter)
    arr = _as_string_array(texts)
    if segmenter == "jieba":
        arr = _jieba_segment(arr)
    return _run_kernel(arr, segmenter == "char")


def preprocess_one(text: str, segmenter: str = "char") -> str:
    """:func:`preprocess` for a single string (tests, debugging)."""
    return preprocess([text], segmenter).to_pylist()[0]


# ----------------------------------------------------------------------------- reference
_CJK_SET_RE = re.compile("[" + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in CJK_RANGES) + "]")


def _py_class(ch: str, split_cjk: bool) -> int:
    cp = ord(ch)
    if cp < 0x80:
        if ch.isalnum():
            return 0
        return 1 if cp <= 0x20 or cp == 0x7F else 2
    cls = int(_char_class.py_func(cp))
    if cls == 0 and split_cjk and _CJK_SET_RE.match(ch):
        return 2
    return cls


def preprocess_reference(text: str, segmenter: str = "char") -> str:
    """The rules written plainly with Python's ``re`` (slow; the tests compare it with the kernel)."""
    check_segmenter(segmenter)
    if segmenter == "jieba" and _HAN_RUN.search(text):
        text = _jieba_cut(text)
    # noise is matched on text lowercased for ASCII only: the kernel compares bytes
    # case-insensitively and never sees non-ASCII characters as part of noise
    ascii_low = "".join(c.lower() if c < "\x80" else c for c in text)
    pieces: list[str] = []
    pos = 0
    for m in _NOISE_RE.finditer(ascii_low):
        pieces.append(text[pos:m.start()])
        pieces.append(" ")
        pos = m.end()
    pieces.append(text[pos:])
    t = "".join(pieces).translate(_LOWER_MAP)
    split_cjk = segmenter == "char"
    tokens: list[str] = []
    word: list[str] = []
    i = 0
    while i < len(t):
        ch = t[i]
        cp = ord(ch)
        if 0xFF01 <= cp <= 0xFF5E:
            ch = chr(cp - 0xFEE0).lower()
            cp = ord(ch)
        if ch == "\\":
            if word:
                tokens.append("".join(word))
                word = []
            j = i + 1
            if j < len(t) and t[j].isascii() and t[j].isalpha():
                while j < len(t) and t[j].isascii() and t[j].isalpha():
                    j += 1
                tokens.append("\\" + t[i + 1:j].lower())
            elif j < len(t) and 0x20 < ord(t[j]) < 0x7F:
                j += 1
                tokens.append("\\" + t[i + 1:j])
            else:
                tokens.append("\\")
            i = j
            continue
        cls = _py_class(ch, split_cjk)
        if cls == 0:
            word.append(ch)
        else:
            if word:
                tokens.append("".join(word))
                word = []
            if cls == 2:
                tokens.append(ch)
        i += 1
    if word:
        tokens.append("".join(word))
    return " ".join(tokens)


def token_counts(lines: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """Number of tokens in each preprocessed line (lines have single spaces, no padding)."""
    arr = _as_string_array(lines)
    spaces = pc.count_substring(arr, " ").to_numpy(zero_copy_only=False).astype(np.int64)
    empty = pc.equal(pc.binary_length(arr), 0).to_numpy(zero_copy_only=False)
    return np.where(empty, 0, spaces + 1)


def crop_lines(lines: Sequence[str], keep_tokens: np.ndarray, starts: np.ndarray) -> list[str]:
    """Each line cut to ``keep_tokens[i]`` tokens starting at token ``starts[i]`` (training only)."""
    out: list[str] = []
    for line, k, s in zip(lines, keep_tokens.tolist(), starts.tolist()):
        toks = line.split(" ")
        out.append(line if k >= len(toks) else " ".join(toks[s: s + k]))
    return out
