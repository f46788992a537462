"""TeX in text: the page's delimiter config, raw TeX in prose, literal dollars, final assembly.

Owns :class:`TexDelimiters`, :func:`page_delimiters` (MathJax v2/v3/v4 and KaTeX auto-render
configs read from the page's scripts), :func:`find_raw_tex` (raw ``$…$``, ``$$…$$``,
``\\(…\\)``, ``\\[…\\]`` and ``equation``/``align``… environments in prose) and
:func:`finalize_text`, which turns the serialized page with formula sentinels into the final
text: inline math ``$…$``, display math ``$$…$$`` on its own line, every literal dollar in
prose written ``\\$`` (as OpenWebMath does) so no reader takes it for a delimiter.

Rules for a single ``$`` (pandoc's, so that "costs $5 and a sandwich $10" stays prose): the
opening ``$`` is followed by a non-space, the closing ``$`` is preceded by a non-space and not
followed by a digit, and the formula stays within one paragraph. The first unescaped ``$``
after an opener decides: if the pair breaks a rule, the opener is a literal dollar. A formula
that starts with a digit and reads as words ("5 and more") is rejected too; on pages that did
not declare ``$`` themselves, so do bodies without any TeX sign that end in an operator or hold
a lowercase word ("$HOME/$USER", "$see here$").
"""

from __future__ import annotations

import functools
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from lxml import etree
from lxml import html as lhtml

__all__ = ["TexDelimiters", "page_delimiters", "finalize_text", "find_raw_tex",
           "escape_dollars", "unescape_dollars", "SENTINEL_OPEN", "SENTINEL_CLOSE", "sentinel",
           "DEFAULT_DELIMITERS", "RENDERER_DELIMITERS"]

SENTINEL_OPEN = "\ue000"
SENTINEL_CLOSE = "\ue001"


def sentinel(k: int) -> str:
    """The placeholder for the k-th DOM formula in serialized text."""
    return f"{SENTINEL_OPEN}{k}{SENTINEL_CLOSE}"


@dataclass(frozen=True)
class TexDelimiters:
    """Which raw-TeX delimiters count as math in a page's text."""

    inline: tuple[tuple[str, str], ...] = (("\\(", "\\)"),)
    display: tuple[tuple[str, str], ...] = (("$$", "$$"), ("\\[", "\\]"))
    environments: bool = True
    declared: bool = False


DEFAULT_DELIMITERS = TexDelimiters()
# A page that loads MathJax/KaTeX without declaring a config, or declares nothing at all:
# the near-universal community config also takes $…$ (with the literal-dollar rules above).
RENDERER_DELIMITERS = TexDelimiters(inline=(("$", "$"), ("\\(", "\\)")))

_JS_STR = r"""(?:'((?:[^'\\]|\\.)*)'|"((?:[^"\\]|\\.)*)")"""
_PAIR = re.compile(r"\[\s*" + _JS_STR + r"\s*,\s*" + _JS_STR + r"\s*\]")
_INLINE_CFG = re.compile(r"inlineMath\s*['\"]?\s*:\s*(?=\[)")
_DISPLAY_CFG = re.compile(r"displayMath\s*['\"]?\s*:\s*(?=\[)")
_KATEX_CFG = re.compile(r"delimiters\s*['\"]?\s*:\s*(?=\[)")
_JS_TOKEN = re.compile(_JS_STR + r"|[\[\]]|[^'\"\[\]]+")


def _js_array(js: str, start: int) -> str:
    """The JS array literal starting at js[start] ('['), brackets inside strings ignored."""
    depth = 0
    for m in _JS_TOKEN.finditer(js, start):
        tok = m.group(0)
        if tok == "[":
            depth += 1
        elif tok == "]":
            depth -= 1
            if depth == 0:
                return js[start:m.end()]
    return js[start:]
_KATEX_OBJ = re.compile(r"\{[^{}]*\}")
_KEYVAL = re.compile(r"(left|right|display)\s*['\"]?\s*:\s*(?:" + _JS_STR + r"|(true|false))")
_ENVS_OFF = re.compile(r"processEnvironments\s*['\"]?\s*:\s*false")
_RENDERER = re.compile(r"mathjax|katex|mathtex|MathJax", re.I)


def _js_unescape(s: str) -> str:
    return re.sub(r"\\(.)", r"\1", s)


def _pairs(js: str) -> tuple[tuple[str, str], ...]:
    out = []
    for m in _PAIR.finditer(js):
        left = m.group(1) if m.group(1) is not None else m.group(2)
        right = m.group(3) if m.group(3) is not None else m.group(4)
        out.append((_js_unescape(left), _js_unescape(right)))
    return tuple(p for p in out if p[0] and p[1])


def page_delimiters(root: lhtml.HtmlElement, raw_html: str | None = None) -> TexDelimiters:
    """Read MathJax v2/v3/v4 and KaTeX auto-render delimiter config from the page's scripts.

    A declared ``inlineMath``/``displayMath`` (MathJax) or ``delimiters: [{left, right,
    display}]`` (KaTeX auto-render) replaces the defaults, as it does in the browser
    (``declared=True``). A page without a declared config gets :data:`RENDERER_DELIMITERS`
    (``$…$`` accepted under the literal-dollar rules, plus ``\\(…\\)``, ``$$…$$``, ``\\[…\\]``
    and environments): most sites that write raw TeX configure ``$`` and CommonCrawl copies of
    pages without a renderer still hold TeX meant as TeX.
    """
    scripts = _INLINE_SCRIPTS(root)
    js = "\n".join(s for s in scripts if "Math" in s or "delimiters" in s or "katex" in s.lower())
    if not js:
        return RENDERER_DELIMITERS
    return _delimiters_from_js(js)


_INLINE_SCRIPTS = etree.XPath("//script[not(@src)][not(starts-with(@type,'math/'))]/text()")


@functools.lru_cache(maxsize=256)
def _delimiters_from_js(js: str) -> TexDelimiters:
    """The delimiter configuration a page's scripts declare (cached: a site's pages share one)."""
    inline: tuple[tuple[str, str], ...] | None = None
    display: tuple[tuple[str, str], ...] | None = None
    m = _INLINE_CFG.search(js)
    if m:
        inline = _pairs(_js_array(js, m.end())[1:-1])
    m = _DISPLAY_CFG.search(js)
    if m:
        display = _pairs(_js_array(js, m.end())[1:-1])
    m = _KATEX_CFG.search(js)
    if m and inline is None and display is None:
        inl, dis = [], []
        for obj in _KATEX_OBJ.finditer(_js_array(js, m.end())):
            kv = {}
            for km in _KEYVAL.finditer(obj.group(0)):
                key = km.group(1)
                val = km.group(2) if km.group(2) is not None else km.group(3)
                kv[key] = _js_unescape(val) if val is not None else km.group(4)
            if kv.get("left") and kv.get("right"):
                (dis if kv.get("display") == "true" else inl).append((kv["left"], kv["right"]))
        inline, display = tuple(inl), tuple(dis)
    if inline is None and display is None:
        return RENDERER_DELIMITERS
    return TexDelimiters(
        inline=inline if inline is not None else DEFAULT_DELIMITERS.inline,
        display=display if display is not None else DEFAULT_DELIMITERS.display,
        environments=not _ENVS_OFF.search(js),
        declared=True,
    )


_ENV_NAMES = ("equation", "align", "gather", "multline", "eqnarray", "alignat", "flalign",
              "displaymath", "math", "split", "cases", "array", "matrix", "pmatrix", "bmatrix")
_ENV = re.compile(r"\\begin\{(" + "|".join(_ENV_NAMES) + r")(\*?)\}(.*?)\\end\{\1\2\}", re.S)
_WORDY = re.compile(r"\b[A-Za-z]{3,}\b")
_CMD = re.compile(r"\\[A-Za-z]+")


_MATHY = re.compile(r"[\\^_={}<>]")
_LOWER_WORD = re.compile(r"\b[a-z]{4,}\b")
_FUNCS = frozenset("sin cos tan log exp max min lim sup inf det gcd mod".split())


def _plausible_inline_dollar(body: str, after: str, strict: bool = False) -> bool:
    """Pandoc's rules for one ``$…$`` pair, plus, on pages that did not declare ``$`` (strict),
    a check that the body reads as math rather than shell/prose ("$HOME/$USER", "$5 and $")."""
    if not body or body[0].isspace() or body[-1].isspace():
        return False
    if after[:1].isdigit():
        return False
    if "\n\n" in body:
        return False
    # "5 and more": starts like an amount and reads as English words, no TeX.
    if body[0].isdigit() and not _CMD.search(body) and len(_WORDY.findall(body)) >= 1 \
            and not re.search(r"[=^_+<>]", body):
        return False
    if strict and not _MATHY.search(body):
        if body[-1] in "/+-*=,.:;":
            return False
        if any(w not in _FUNCS for w in _LOWER_WORD.findall(body)):
            return False
    return True


@functools.lru_cache(maxsize=64)
def _openers(delims: TexDelimiters) -> tuple[tuple[tuple[str, str, bool], ...], re.Pattern[str] | None]:
    """The delimiter pairs, longest opener first (so "$$" wins over "$"), and one regex finding
    any opener: built once per delimiter configuration, not once per page."""
    pairs: list[tuple[str, str, bool]] = [(a, b, True) for a, b in delims.display]
    pairs += [(a, b, False) for a, b in delims.inline]
    pairs.sort(key=lambda p: -len(p[0]))
    openers = sorted({re.escape(a) for a, _, _ in pairs}, key=len, reverse=True)
    alts = []
    if delims.environments:
        alts.append(r"\\begin\{(?:" + "|".join(_ENV_NAMES) + r")\*?\}")
    alts += openers
    return tuple(pairs), (re.compile("|".join(alts)) if alts else None)


def find_raw_tex(text: str, delims: TexDelimiters) -> list[tuple[int, int, str, bool]]:
    """Raw TeX formulas in prose: (start, end, latex, is_display), left to right, no overlap.

    Escaped dollars (``\\$``) are never delimiters.
    """
    pairs, opener_re = _openers(delims)
    if opener_re is None:
        return []
    out: list[tuple[int, int, str, bool]] = []
    i, n = 0, len(text)
    while i < n:
        m = opener_re.search(text, i)
        if not m:
            break
        s = m.start()
        # an escaped opener (\$) is literal; "\\(" is an escaped backslash plus "("
        if s > 0 and text[s - 1] == "\\" and m.group(0)[0] == "$":
            i = s + 1
            continue
        tok = m.group(0)
        if tok.startswith("\\begin"):
            em = _ENV.match(text, s)
            if em:
                out.append((s, em.end(), em.group(0).strip(), True))
                i = em.end()
                continue
            i = m.end()
            continue
        matched = False
        for left, right, disp in pairs:
            if tok != left:
                continue
            j = m.end()
            e = text.find(right, j)
            while e >= 0 and right[0] == "$" and text[e - 1] == "\\":
                e = text.find(right, e + 1)
            if e < 0:
                break
            body = text[m.end():e]
            # The first closer decides: a rejected pair leaves the opener literal.
            if left == "$" and right == "$" and \
                    not _plausible_inline_dollar(body, text[e + 1:e + 2], strict=not delims.declared):
                break
            if "\n\n" in body or not body.strip() or SENTINEL_OPEN in body:
                break
            body = body.strip()
            if left == "$" and body.startswith("latex "):  # WordPress "$latex x^2$" shortcode
                body = body[6:].strip()
            out.append((s, e + len(right), body, disp))
            i = e + len(right)
            matched = True
            break
        if not matched:
            i = s + len(tok)
    return out


_UNESC_DOLLAR = re.compile(r"(?<!\\)\$")


def escape_dollars(prose: str) -> str:
    """Write every literal dollar in prose as ``\\$`` (already escaped ones stay as they are)."""
    if "$" not in prose:
        return prose
    return _UNESC_DOLLAR.sub(r"\\$", prose)


def unescape_dollars(text: str) -> str:
    """Inverse of :func:`escape_dollars` on text it produced."""
    return text.replace("\\$", "$")


_SENT = re.compile(SENTINEL_OPEN + r"(\d+)" + SENTINEL_CLOSE)
# Verbatim regions: fenced code blocks, then inline `code` spans (one paragraph at most).
_FENCE = re.compile(r"^(```|~~~)[^\n]*\n.*?^\1[ \t]*$|(?<!`)`(?!`)[^`\n]+(?:\n(?!\n)[^`\n]*)*`(?!`)",
                    re.S | re.M)


_BLANK_LINES = re.compile(r"\n\s*\n+")
_NEWLINE_SPACE = re.compile(r"\s*\n\s*")


def _clean_formula(latex: str, display: bool) -> str:
    latex = latex.strip()
    if "\n" in latex:  # most formulas are one line: skip both passes (this runs once per formula)
        latex = _BLANK_LINES.sub("\n", latex)
        if not display:
            latex = _NEWLINE_SPACE.sub(" ", latex)
    # A formula must not close its own delimiter early.
    if display:
        latex = latex.replace("$$", "$ $")
    return latex


def _render(latex: str, display: bool) -> str:
    if display:
        return "\n$$" + latex + "$$\n"
    return "$" + latex + "$"


def finalize_text(text: str, formulas: Sequence[tuple[str, bool]],
                  delims: TexDelimiters) -> tuple[str, Counter[str]]:
    """Assemble the final text from serialized page text with formula sentinels.

    `text` holds blocks separated by blank lines; the k-th DOM formula appears as
    ``sentinel(k)``, and ``formulas[k] = (latex, is_display)``. Raw TeX in prose is found with
    `delims` and rewritten to ``$…$``/``$$…$$``; literal dollars become ``\\$``; fenced code
    blocks (```` ``` ````) and inline ```code``` spans are copied verbatim. Display formulas stand on their own line. Returns
    the text and counts (``tex_raw`` for raw TeX found in prose, ``empty`` for dropped empty
    DOM formulas).
    """
    counts: Counter[str] = Counter()
    pieces: list[str] = []
    pos = 0
    # Each pass below is guarded by a substring test: the regexes have no literal prefix, so
    # they would try every position of every page, and most pages need none of them.
    if "`" in text or "~~~" in text:
        for fm in _FENCE.finditer(text):
            pieces.append(_finalize_prose(text[pos:fm.start()], formulas, delims, counts))
            pieces.append(_SENT.sub(lambda m: _plain_formula(m, formulas), fm.group(0)))
            pos = fm.end()
    pieces.append(_finalize_prose(text[pos:], formulas, delims, counts))
    out = "".join(pieces)
    # Tidy: display formulas on their own line without stray spaces; at most one blank line.
    if " \n" in out or "\t\n" in out:
        out = _TRAILING_SPACE.sub("\n", out)
    if "$$" in out:
        out = _SPACE_BEFORE_DISPLAY.sub("\n", out)
        if "$$\n " in out or "$$\n\t" in out:
            out = _SPACE_AFTER_DISPLAY.sub("", out)
    if "\n\n\n" in out:
        out = _BLANK_RUN.sub("\n\n", out)
    return out.strip("\n"), counts


_TRAILING_SPACE = re.compile(r"[ \t]+\n")
_SPACE_BEFORE_DISPLAY = re.compile(r"\n[ \t]+(?=\$\$)")
_SPACE_AFTER_DISPLAY = re.compile(r"(?<=\$\$\n)[ \t]+")
_BLANK_RUN = re.compile(r"\n{3,}")


def _plain_formula(m: re.Match[str], formulas: Sequence[tuple[str, bool]]) -> str:
    k = int(m.group(1))
    return formulas[k][0] if k < len(formulas) else ""


def _finalize_prose(prose: str, formulas: Sequence[tuple[str, bool]], delims: TexDelimiters,
                    counts: Counter[str]) -> str:
    if not prose:
        return prose
    out: list[str] = []
    pos = 0
    for s, e, latex, disp in find_raw_tex(prose, delims):
        out.append(escape_dollars(prose[pos:s]))
        latex = _clean_formula(latex, disp)
        if latex:
            counts["tex_raw"] += 1
            out.append(_render(latex, disp))
        pos = e
    out.append(escape_dollars(prose[pos:]))
    joined = "".join(out)

    def sub(m: re.Match[str]) -> str:
        k = int(m.group(1))
        if k >= len(formulas):
            counts["bad_sentinel"] += 1
            return ""
        latex, disp = formulas[k]
        latex = _clean_formula(latex or "", disp)
        if not latex:
            counts["empty"] += 1
            return ""
        return _render(latex, disp)

    return _SENT.sub(sub, joined)
