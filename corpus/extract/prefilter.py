"""The math prefilter: can these raw HTML bytes hold a formula? Decided before any parsing.

Most of the web has no math, so the extractor must say "no" cheaply. The check looks, in
the raw bytes, for the markers every math markup leaves: MathJax/KaTeX scripts, styles and
output elements, ``<math``, Wikipedia's ``mwe-math``, LaTeX image services (latex.php,
codecogs, mimetex/mathtex), TeX commands (``\\frac``, ``\\(`` ...) and ``$…$`` pairs with
TeX-looking content. It errs towards "yes": a false positive costs one parse, a false
negative loses a page. The real selection is the recall classifier's job, later.

Speed: a handful of ``bytes.find`` calls (memchr/two-way search in C) for the literal
markers, then one compiled bytes regex anchored on ``\\`` and one on ``$``, whose literal
first byte lets the regex engine skip ahead. bench/extract_speed.py measures MB/s per core.
"""

from __future__ import annotations

import re

# Markers looked for in the lowercased page. "math" followed by jax, /tex, ml or tex covers
# MathJax scripts and configs, math/tex script types, MathML namespaces (Wikipedia, Temml,
# <m:math>), mathtex.cgi and AsciiMath; the literal finds cover bare <math>, KaTeX and LaTeX
# (both end in "atex": katex.min.js, latex.php, class="latex"), MathJax 3 output elements
# and the image services. Lowercasing once and a few finds read far faster than one
# alternation regex (measured: 265 vs 108 MB/s on the same pages).
_MATH_WORD_RE = re.compile(rb"math(?:jax|/tex|ml|tex)")
MARKERS: tuple[bytes, ...] = (b"<math", b"atex", b"mjx-", b"codecogs", b"mimetex")
# TeX commands that math prose uses and ordinary pages (JS regexes, Windows paths) rarely do.
_TEX_RE = re.compile(
    rb"\\(?:frac|dfrac|tfrac|sqrt|sum|int|oint|prod|lim|infty|alpha|beta|gamma|delta|epsilon|varepsilon|theta|lambda"
    rb"|mu|sigma|omega|Omega|pi|phi|varphi|psi|partial|nabla|cdot|cdots|ldots|times|leq|geq|le|ge|neq|approx|equiv"
    rb"|mathbb|mathbf|mathcal|mathrm|operatorname|left|right|binom|pmod|bmod|in|subset|cup|cap|forall|exists"
    rb"|displaystyle|text|hat|bar|vec|overline|log|ln|sin|cos|tan|exp|det|begin)(?![A-Za-z])|\\\(|\\\[")
# $…$ with something TeX-like inside (^, _, \, =, +) and no tag or newline in between:
# "costs $5 and $10" has no operator between its dollars and is not a signal.
_DOLLAR_RE = re.compile(rb"\$\$[^$<]{1,2000}?\$\$|\$[^$\s<>][^$<>\n]{0,200}?[\\^_=+][^$<>\n]{0,200}?\$")


def math_signal(data: bytes) -> str | None:
    """The first math marker found in ``data`` (e.g. ``"mathjax"``, ``"<math"``), or None.

    Markers are reported lowercased; ``"tex"`` stands for a TeX command (or ``\\(``/``\\[``)
    and ``"dollar"`` for a ``$…$`` pair.
    """
    low = data.lower()
    m = _MATH_WORD_RE.search(low)
    if m:
        return m.group(0).decode("ascii")
    find = low.find
    for marker in MARKERS:
        if find(marker) >= 0:
            return marker.decode("ascii")
    if b"\\" in data and _TEX_RE.search(data):
        return "tex"
    if b"$" in data and _DOLLAR_RE.search(data):
        return "dollar"
    return None


def has_math_signal(data: bytes) -> bool:
    """True when the page may hold math (see :func:`math_signal`)."""
    return math_signal(data) is not None
