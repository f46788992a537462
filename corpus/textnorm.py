"""Text normalization shared by decontamination and dedup: one pure, documented function family.

Owns the definition of "the same text up to formatting" that every n-gram comparison in
mathcorpus uses, for benchmark items and documents alike:

:func:`normalize_text`
    1. Unicode NFKC, which also folds full-width digits/letters/punctuation (``１２３`` →
       ``123``) and compatibility forms, then lowercase.
    2. Drop LaTeX markup that does not change meaning: the sizing/spacing commands
       ``\\left`` ``\\right`` ``\\middle`` ``\\big…`` ``\\displaystyle`` ``\\textstyle``
       ``\\quad`` ``\\qquad`` (and a few more spacing macros, see :data:`LATEX_DROP`);
       ``\\dfrac``/``\\tfrac`` become ``\\frac``. ``$``, ``\\(`` ``\\)`` ``\\[`` ``\\]``,
       ``\\,`` ``\\;`` ``\\!`` and ``~`` are punctuation and go in step 3.
    3. Every character that is not a letter or a digit (Python ``\\w`` minus ``_``) becomes
       a space, so punctuation, symbols, ``_``, ``^``, braces and backslashes are dropped
       (``\\frac{1}{2}`` → ``frac 1 2``). **Digits are kept**: mapping numbers to one
       placeholder, as some tools do, makes matrices and fractions collide.
    4. Whitespace is collapsed to single spaces and trimmed.

:func:`tokenize`
    Normalizes, then makes each CJK character (Han ideographs, kana) its own token and
    splits other text into words at spaces. ``"小明有3个"`` → ``["小", "明", "有", "3", "个"]``.

:func:`strip_figure_code`
    Removes Asymptote (``[asy]…[/asy]``, ``\\begin{asy}…\\end{asy}``) and TikZ
    (``\\begin{tikzpicture}…\\end{tikzpicture}``) blocks: figure code is not problem text,
    and long preambles are shared verbatim between unrelated problems.

:func:`token_spans`
    The tokens of :func:`tokenize` with their character offsets in the original text, for
    reports that highlight a match.

All functions are pure and deterministic. ``normalize_text`` is idempotent. The byte-level
kernel in ``decontam/kernel.py`` implements the same rules and is tested against
:func:`tokenize`.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = [
    "CJK_RANGES", "LATEX_DROP", "LATEX_RENAME", "is_cjk", "normalize_text", "tokenize",
    "strip_figure_code", "figure_spans", "token_spans",
]

#: Code point ranges whose characters are each one token (Han ideographs and kana).
#: Chinese and Japanese do not put spaces between words, so a whitespace tokenizer would
#: see a whole sentence as one "word" and never match a short item.
CJK_RANGES: tuple[tuple[int, int], ...] = (
    (0x3005, 0x3007),    # 々 〆 〇
    (0x3021, 0x3029),    # Hangzhou numerals
    (0x3031, 0x3035),    # kana repeat marks
    (0x3038, 0x303C),
    (0x3040, 0x309F),    # Hiragana
    (0x30A0, 0x30FF),    # Katakana
    (0x31F0, 0x31FF),    # Katakana phonetic extensions
    (0x3400, 0x4DBF),    # CJK extension A
    (0x4E00, 0x9FFF),    # CJK unified ideographs
    (0xF900, 0xFAFF),    # CJK compatibility ideographs (most fold to unified under NFKC)
    (0x20000, 0x3134F),  # CJK extensions B-G (and compatibility supplement)
)

#: LaTeX commands (after lowercasing) removed because they only change layout, never meaning.
LATEX_DROP: tuple[str, ...] = (
    "left", "right", "middle", "big", "bigl", "bigr", "bigm", "bigg", "biggl", "biggr", "biggm",
    "displaystyle", "textstyle", "scriptstyle", "quad", "qquad", "enspace", "thinspace",
    "medspace", "thickspace", "negthinspace",
)
#: LaTeX commands renamed to a canonical spelling (style variants of the same notation).
LATEX_RENAME: dict[str, str] = {"dfrac": "frac", "tfrac": "frac"}

_CJK_CLASS = "".join(
    f"{re.escape(chr(lo))}-{re.escape(chr(hi))}" for lo, hi in CJK_RANGES)
# A LaTeX command is a backslash and a run of letters; (?![a-z]) keeps \leftarrow and
# \rightarrow intact (text is lowercased before this runs).
_LATEX_RE = re.compile(
    r"\\(" + "|".join(sorted(set(LATEX_DROP) | set(LATEX_RENAME), key=len, reverse=True)) + r")(?![a-z])")
_NONWORD_RE = re.compile(r"[\W_]+")
_TOKEN_RE = re.compile(f"[{_CJK_CLASS}]|[^\\s{_CJK_CLASS}]+")
_WORD_OR_CJK_RE = re.compile(f"[{_CJK_CLASS}]|[^\\W_{_CJK_CLASS}]+")
_FIGURE_RE = re.compile(
    r"\[asy\].*?\[/asy\]"
    r"|\\begin\{asy\}.*?\\end\{asy\}"
    r"|\\begin\{tikzpicture\}.*?\\end\{tikzpicture\}",
    re.S | re.I | re.A)  # ASCII-only case folding: the byte kernel checks the same tags


def is_cjk(cp: int) -> bool:
    """True when code point ``cp`` is a CJK character that forms a token on its own."""
    for lo, hi in CJK_RANGES:
        if lo <= cp <= hi:
            return True
    return False


def _latex_sub(m: re.Match[str]) -> str:
    name = m.group(1)
    rename = LATEX_RENAME.get(name)
    # a space (not "") so that "a\quad b" cannot glue two words together
    return " " if rename is None else "\\" + rename


def normalize_text(text: str) -> str:
    """Normalize ``text`` for n-gram comparison (see the module docstring for the rules).

    >>> normalize_text(r"Let $\\left( x \\right) = \\dfrac{１}{2}$, ok?")
    'let x frac 1 2 ok'
    """
    t = unicodedata.normalize("NFKC", text).lower()
    if "\\" in t:
        t = _LATEX_RE.sub(_latex_sub, t)
    return _NONWORD_RE.sub(" ", t).strip()


def tokenize(text: str) -> list[str]:
    """Tokens of ``normalize_text(text)``: each CJK character alone, other text as words.

    >>> tokenize("小明有３个苹果, Bob has 2.")
    ['小', '明', '有', '3', '个', '苹', '果', 'bob', 'has', '2']
    """
    return _TOKEN_RE.findall(normalize_text(text))


def figure_spans(text: str) -> list[tuple[int, int]]:
    """Character spans ``[start, end)`` of Asymptote and TikZ blocks in ``text``.

    An opening tag without its closing tag is left alone: truncated text is kept rather
    than silently cut to the end.
    """
    if "[" not in text and "\\begin" not in text:
        return []
    return [m.span() for m in _FIGURE_RE.finditer(text)]


def strip_figure_code(text: str) -> str:
    r"""``text`` with every figure-code block replaced by one space.

    >>> strip_figure_code("Find x. [asy]draw((0,0)--(1,1));[/asy] Answer: 2")
    'Find x.   Answer: 2'
    """
    spans = figure_spans(text)
    if not spans:
        return text
    out: list[str] = []
    pos = 0
    for a, b in spans:
        out.append(text[pos:a])
        out.append(" ")
        pos = b
    out.append(text[pos:])
    return "".join(out)


# ----------------------------------------------------------------------------- spans
@lru_cache(maxsize=65536)
def _starts_cluster(ch: str) -> bool:
    """Whether NFKC can never merge ``ch`` with the character before it.

    Combining marks, Hangul jamo vowels/finals and characters whose compatibility form
    begins with one of those attach to the previous character.
    """
    for c in unicodedata.normalize("NFKD", ch)[:1] or ch:
        if unicodedata.combining(c) or unicodedata.category(c).startswith("M"):
            return False
        cp = ord(c)
        if 0x1160 <= cp <= 0x11FF or 0xD7B0 <= cp <= 0xD7FF:
            return False
    return True


def _mapped_lower_nfkc(text: str) -> tuple[str, list[int], list[int]]:
    """NFKC + lower, cluster by cluster, with each output char's original [start, end)."""
    if text.isascii():
        low = text.lower()
        idx = list(range(len(text)))
        return low, idx, [i + 1 for i in idx]
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        while j < n and not _starts_cluster(text[j]):
            j += 1
        piece = unicodedata.normalize("NFKC", text[i:j]).lower()
        out.append(piece)
        starts.extend([i] * len(piece))
        ends.extend([j] * len(piece))
        i = j
    return "".join(out), starts, ends


def token_spans(text: str) -> tuple[list[str], list[int], list[int]]:
    """``(tokens, starts, ends)``: :func:`tokenize` and each token's char span in ``text``.

    ``tokens`` always equals ``tokenize(text)``. Spans are exact except in rare texts where
    NFKC or lowercasing depend on context across characters (e.g. Greek final sigma); there
    they are interpolated, still within the text and in order.
    """
    tokens = tokenize(text)
    low, st, en = _mapped_lower_nfkc(text)
    if "\\" in low:
        pieces: list[str] = []
        nst: list[int] = []
        nen: list[int] = []
        pos = 0
        for m in _LATEX_RE.finditer(low):
            a, b = m.span()
            pieces.append(low[pos:a])
            nst.extend(st[pos:a])
            nen.extend(en[pos:a])
            rep = _latex_sub(m)
            pieces.append(rep)
            nst.extend([st[a]] * len(rep))
            nen.extend([en[b - 1]] * len(rep))
            pos = b
        pieces.append(low[pos:])
        nst.extend(st[pos:])
        nen.extend(en[pos:])
        low, st, en = "".join(pieces), nst, nen
    found = [(m.group(), m.start(), m.end()) for m in _WORD_OR_CJK_RE.finditer(low)]
    if [f[0] for f in found] == tokens:
        return tokens, [st[a] for _, a, _ in found], [en[b - 1] for _, _, b in found]
    # Context-dependent case: place tokens proportionally along the text.
    n, k = len(text), max(len(tokens), 1)
    starts = [i * n // k for i in range(len(tokens))]
    ends = [min(n, (i + 1) * n // k) for i in range(len(tokens))]
    return tokens, starts, ends
