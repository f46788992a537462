"""MathJax v3/v4 rendered output back to MathML, for pages that carry no MathML or TeX.

Owns :func:`mjx_to_mathml` (CHTML output: ``<mjx-*>`` elements mirror MathML names, glyphs are
named by their ``mjx-cXXXX`` class because the character itself is CSS content) and
:func:`svg_to_mathml` (SVG output: ``<g data-mml-node="…">`` groups, glyphs in ``data-c``).
Layout wrappers (``mjx-frac``/``mjx-num``/``mjx-den``, ``mjx-script``, ``mjx-over``…) are
walked through and their roles decide argument order (CHTML writes a superscript before the
subscript; SVG is ordered by each group's vertical offset). The result goes to
:func:`corpus.extract.mathml.mathml_to_latex`.
"""

from __future__ import annotations

import re

from lxml import etree


def _local(tag: object) -> str:
    return tag.rsplit("}", 1)[-1].lower() if isinstance(tag, str) else ""

__all__ = ["mjx_to_mathml", "svg_to_mathml"]


# ---- MathJax v3/v4 CHTML (<mjx-*>) → MathML --------------------------------------------

_MJX_TOKENS = frozenset(["mjx-mi", "mjx-mn", "mjx-mo", "mjx-mtext", "mjx-ms"])
_MJX_ROLE = {"mjx-num": "num", "mjx-den": "den", "mjx-base": "base", "mjx-under": "under",
             "mjx-over": "over", "mjx-script": "script", "mjx-sub": "sub", "mjx-sup": "sup",
             "mjx-root": "root"}
_MJX_SEMANTIC = frozenset("mjx-" + t for t in (
    "mi mn mo mtext ms mspace mrow mfrac msqrt mroot mstyle merror mpadded mphantom mfenced "
    "menclose msub msup msubsup munder mover munderover mmultiscripts mtable mtr mlabeledtr mtd "
    "texatom maction semantics").split())
_MJX_CODE = re.compile(r"\bmjx-c([0-9A-F]+)\b")


def _mjx_char(el: etree._Element) -> str:
    """Text of one mjx-c: the class names the code point (the glyph itself is CSS content)."""
    if el.text:
        return el.text
    m = _MJX_CODE.search(el.get("class") or "")
    return chr(int(m.group(1), 16)) if m else ""


def _mjx_token_text(el: etree._Element) -> str:
    for st in el.iter("mjx-stretchy-v", "mjx-stretchy-h"):
        m = _MJX_CODE.search(st.get("class") or "")
        if m:
            return chr(int(m.group(1), 16))
    return "".join(_mjx_char(c) for c in el.iter("mjx-c"))


def _mjx_semantic(el: etree._Element, role: str | None = None) -> list[tuple[str | None, etree._Element]]:
    """(role, element) of the semantic mjx-m* nodes under `el`, through layout wrappers."""
    out: list[tuple[str | None, etree._Element]] = []
    for c in el:
        if not isinstance(c.tag, str):
            continue
        tag = c.tag.lower()
        r = _MJX_ROLE.get(tag, role)
        if tag in _MJX_SEMANTIC and not (tag == "mjx-munder" and el.tag == "mjx-box"):
            # (CHTML lays out munderover as mjx-over + mjx-box > mjx-munder: a wrapper there)
            out.append((r, c))
        elif tag in ("mjx-assistive-mml", "mjx-spacer", "mjx-line", "mjx-surd",
                     "mjx-nstrut", "mjx-dstrut", "mjx-tstrut", "mjx-mark"):
            continue
        else:
            out.extend(_mjx_semantic(c, r))
    return out


def _mjx_build(el: etree._Element) -> etree._Element:
    tag = el.tag.lower()[4:]  # "mjx-mfrac" → "mfrac"
    if tag == "math":
        tag = "math"
    elif tag == "texatom":
        tag = "mrow"
    out = etree.Element(tag)
    for a in ("mathvariant", "linethickness"):
        if el.get(a):
            out.set(a, el.get(a))
    if "mjx-" + tag in _MJX_TOKENS:
        out.text = _mjx_token_text(el)
        # MathJax marks a variant on the mjx-c class ("TEX-B" bold, "TEX-A" double-struck…)
        classes = " ".join(c.get("class") or "" for c in el.iter("mjx-c"))
        if "TEX-B" in classes and "TEX-BI" not in classes:
            out.set("mathvariant", "bold")
        elif "TEX-A" in classes:
            out.set("mathvariant", "double-struck")
        elif "TEX-C" in classes or "TEX-S1" == classes:
            pass
        elif "TEX-FR" in classes:
            out.set("mathvariant", "fraktur")
        return out
    kids = _mjx_semantic(el)
    if tag == "msubsup":
        base = [k for r, k in kids if r in (None, "base")][:1]
        script = [k for r, k in kids if r in ("script", "sub", "sup")]
        subs = [k for r, k in kids if r == "sub"]
        sups = [k for r, k in kids if r == "sup"]
        if subs and sups:
            order = base + subs[:1] + sups[:1]
        else:  # CHTML puts the superscript first inside mjx-script, then the subscript
            order = base + (script[1:2] + script[:1] if len(script) >= 2 else script)
        kids = [(None, k) for k in order]
    elif tag in ("munderover", "munder", "mover"):
        base = [k for r, k in kids if r == "base"] or [k for r, k in kids if r is None][:1]
        under = [k for r, k in kids if r == "under"]
        over = [k for r, k in kids if r == "over"]
        kids = [(None, k) for k in base + under + over]
    elif tag == "mfrac":
        num = [k for r, k in kids if r == "num"]
        den = [k for r, k in kids if r == "den"]
        if num and den:
            kids = [(None, num[0]), (None, den[0])]
    elif tag == "mroot":
        root = [k for r, k in kids if r == "root"]
        rest = [k for r, k in kids if r != "root"]
        kids = [(None, k) for k in rest[:1] + root[:1]]
    for _, k in kids:
        out.append(_mjx_build(k))
    return out


def mjx_to_mathml(container: etree._Element) -> etree._Element | None:
    """Rebuild MathML from a MathJax CHTML container's <mjx-math> tree (None if empty)."""
    for m in container.iter("mjx-math"):
        if not len(m):
            return None
        return _mjx_build(m)
    return None


# ---- MathJax v3/v4 SVG output (<g data-mml-node>) → MathML --------------------------------

# Pieces of stretched delimiters (⎛⎜⎝ …) → the delimiter they draw.
_PIECES = {**{chr(c): "(" for c in range(0x239B, 0x239E)}, **{chr(c): ")" for c in range(0x239E, 0x23A1)},
           **{chr(c): "[" for c in range(0x23A1, 0x23A4)}, **{chr(c): "]" for c in range(0x23A4, 0x23A7)},
           **{chr(c): "{" for c in range(0x23A7, 0x23AB)}, **{chr(c): "}" for c in range(0x23AB, 0x23AF)},
           "\u23d0": "|", "\u2223": "|", "\u2225": "‖"}
_TRANSLATE = re.compile(r"translate\(\s*(-?[\d.]+)(?:[ ,]+(-?[\d.]+))?")


def _svg_y(g: etree._Element) -> float:
    m = _TRANSLATE.search(g.get("transform") or "")
    return float(m.group(2)) if m and m.group(2) else 0.0


def _svg_text(g: etree._Element) -> str:
    chars = [chr(int(p.get("data-c"), 16)) for p in g.iter() if p.get("data-c")]
    if chars and all(c in _PIECES for c in chars):
        return _PIECES[chars[0]]
    return "".join(_PIECES.get(c, c) if len(chars) > 1 and c in _PIECES else c for c in chars)


def _svg_kids(g: etree._Element) -> list[etree._Element]:
    out: list[etree._Element] = []
    for c in g:
        if not isinstance(c.tag, str):
            continue
        if c.get("data-mml-node"):
            out.append(c)
        elif _local(c.tag) in ("g", "svg", "a"):
            out.extend(_svg_kids(c))
    return out


def _svg_build(g: etree._Element) -> etree._Element:
    tag = (g.get("data-mml-node") or "mrow")
    tag = "mrow" if tag == "TeXAtom" else tag
    out = etree.Element(tag)
    if tag in ("mi", "mn", "mo", "mtext", "ms"):
        out.text = _svg_text(g)
        return out
    kids = _svg_kids(g)
    if tag in ("msubsup", "munderover") and len(kids) == 3:
        base, a, b = kids
        lo, hi = (a, b) if _svg_y(a) < _svg_y(b) else (b, a)
        kids = [base, lo, hi]
    elif tag == "mfrac" and len(kids) == 2:
        kids = sorted(kids, key=_svg_y, reverse=True)
    for k in kids:
        out.append(_svg_build(k))
    return out


def svg_to_mathml(container: etree._Element) -> etree._Element | None:
    """Rebuild MathML from MathJax SVG output (``data-mml-node`` groups, ``data-c`` glyphs)."""
    for g in container.iter():
        if g.get("data-mml-node") == "math":
            return _svg_build(g)
    return None
