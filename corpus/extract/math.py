"""DOM math → LaTeX: every formula on a page becomes one ``<mc-math>`` element.

Owns :func:`replace_math` and :data:`MATH_TAG`. It runs on an lxml.html tree before scripts
are removed and before main-content pruning, and rewrites each formula, whatever its markup,
into ``<mc-math data-display="0|1">LATEX</mc-math>`` (text only, original tail kept), removing
the rendered duplicates (KaTeX HTML spans, MathJax v2 previews and frames, Wikipedia fallback
images) so each formula is written once. One XPath pass collects the candidates; markups are
then handled in this order (outer wrappers first):

- ``wikipedia``: ``span.mwe-math-element`` (TeX annotation or alttext; ``{\\displaystyle …}``
  unwrapped; the fallback image goes with it);
- ``mathjax3``: ``mjx-container`` (v3/v4) from ``data-latex`` (v4), assistive MathML, or the CHTML
  ``mjx-*`` tree itself or its SVG glyph groups (corpus/extract/mathjax_dom.py); a container with
  nothing recoverable (a lazy placeholder) is removed and counted ``unrecoverable``;
- ``data_tex``: elements carrying the source in ``data-math``/``data-latex``/``data-tex``, or
  Temml's ``hurmet-tex`` ``data-entry`` (Gemini/ChatGPT KaTeX wrappers, Temml);
- ``katex``: ``.katex-display``/``.katex`` with the ``application/x-tex`` annotation (CSDN's
  ``katex--inline`` wrappers included); rendered ``katex-html`` without source is dropped;
- ``mathjax2`` / ``asciimath``: ``<script type="math/tex…">`` (any parameters; ``mode=display``),
  ``math/asciimath``, ``math/mml``, with ``.MathJax_Preview`` and rendered frames removed; a saved
  page whose scripts are gone gives each frame's ``data-mathml`` (or assistive MathML) instead;
- ``mathml``: remaining ``<math>`` (annotation, else ``alttext``, else converted);
- ``latex_img``: images whose URL (latex.php, codecogs, mimetex/mathtex, chart API ``chl=``,
  GitHub/upmath/Zhihu renderers, a path segment holding TeX) or ``alt``/``data-formula`` (class
  ``latex``/``tex``/``math``/equation-ish alt) carries TeX.

Raw TeX in text nodes is left to :func:`corpus.extract.tex.finalize_text`.
"""

from __future__ import annotations

import re
from collections import Counter
from urllib.parse import parse_qs, unquote, urlsplit

from lxml import etree
from lxml import html as lhtml

from corpus.extract.asciimath import asciimath_to_latex
from corpus.extract.mathjax_dom import mjx_to_mathml, svg_to_mathml
from corpus.extract.mathml import mathml_to_latex, tex_annotation
from corpus.extract.tex import TexDelimiters

__all__ = ["MATH_TAG", "replace_math", "has_math_signal", "unwrap_displaystyle"]

MATH_TAG = "mc-math"


# One XPath pass (a single tree traversal, in C) collects every candidate; Python then only
# looks at those few nodes. Class tests use contains() and are confirmed per token below.
_CLASS_HINT = ("contains(., 'katex') or contains(., 'mwe-math-element') or contains(., 'MathJax')"
               " or contains(., 'MJX')")
_CANDIDATES = etree.XPath(
    "//math | //mjx-container | //img | //script[@type] | //@data-math/.. | //@data-latex/.."
    " | //@data-tex/.. | //@data-entry/.. | //@class[" + _CLASS_HINT + "]/.."
)
_SIGNAL = _CANDIDATES
_MJ2_CLASSES = frozenset(["MathJax_Preview", "MathJax", "MathJax_Display", "MathJax_SVG", "MathJax_SVG_Display",
                          "MathJax_CHTML", "MJXc-display", "MathJax_MathML", "MJX_Assistive_MathML",
                          "MathJax_PHTML", "MathJax_MathContainer", "MathJax_SVG_Preview"])
_MJ2_FRAMES = frozenset(["MathJax", "MathJax_CHTML", "MathJax_SVG", "MathJax_PHTML", "MathJax_MathML"])
_MATHML_TAGS = frozenset("""math semantics annotation annotation-xml mi mn mo mtext ms mspace mrow mfrac msqrt
mroot mstyle merror mpadded mphantom mfenced menclose msub msup msubsup munder mover munderover
mmultiscripts mtable mtr mlabeledtr mtd maction none mprescripts""".split())
_MATH_IN = etree.XPath(".//*[local-name()='math']")
_WIKI_DISPLAY = etree.XPath(".//*[contains(@class, 'mwe-math-mathml-display')"
                            " or contains(@class, 'mwe-math-fallback-image-display')]")
_KATEX_HTML = etree.XPath(".//*[contains(@class, 'katex-html')]")

_DISPLAYSTYLE = re.compile(r"^\{\\displaystyle\s*(.*)\}$", re.S)
_TEX_URL = re.compile(
    r"latex\.php|codecogs\.com|/mimetex|/mathtex|cgi-bin/mimetex|chart\.apis\.google\.com/chart"
    r"|chart\.googleapis\.com/chart|/latex\?|\.latex\?|latex\.(?:artofproblemsolving|wikimedia)"
    r"|/math/render|tex\.cgi|forkosh|quicklatex|wp\.com/latex|render\.githubusercontent\.com/render/math"
    r"|i\.upmath\.me|tex2img|math\.now\.sh|/equation\?tex=|latex2png|/mathtex\.cgi", re.I)
_TEXISH = re.compile(r"\\[A-Za-z]+|[_^]\{|[_^][A-Za-z0-9]|\\[{}\[\](),;!]")
_IMG_CLASS = re.compile(r"\b(latex|tex|math|equation|formula|ql-img-inline-formula|mwe-math)\b", re.I)


def unwrap_displaystyle(tex: str) -> str:
    """``{\\displaystyle x^2}`` → ``x^2`` (Wikipedia's annotation wrapper)."""
    tex = tex.strip()
    m = _DISPLAYSTYLE.match(tex)
    if m and _balanced(m.group(1)):
        return m.group(1).strip()
    return tex


def _balanced(s: str) -> bool:
    depth = 0
    prev = ""
    for ch in s:
        if prev != "\\":
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
                if depth < 0:
                    return False
        prev = ch if prev != "\\" else ""
    return depth == 0


def has_math_signal(root: lhtml.HtmlElement) -> bool:
    """True when the tree holds an element that may be a formula (one XPath query; images
    count, so this is a cheap pre-check, not a verdict)."""
    return bool(_SIGNAL(root))


def _replace(el: etree._Element, latex: str, display: bool) -> etree._Element:
    """Put <mc-math> in el's place, keeping el's tail."""
    new = etree.Element(MATH_TAG)
    new.set("data-display", "1" if display else "0")
    new.text = latex.strip()
    new.tail = el.tail
    parent = el.getparent()
    if parent is None:
        return new
    parent.replace(el, new)
    return new


def _remove(el: etree._Element) -> None:
    """Remove el but keep its tail text attached to the previous node."""
    parent = el.getparent()
    if parent is None:
        return
    tail = el.tail
    if tail:
        prev = el.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(el)


def _attached(el: etree._Element, root: etree._Element) -> bool:
    """Still in the document: not removed with an ancestor, not inside a replaced formula."""
    top = el
    for anc in el.iterancestors():
        if anc.tag == MATH_TAG:
            return False
        top = anc
    return top is root


def _is_block_alone(el: etree._Element) -> bool:
    """The element is the only content of its parent block (no sibling text)."""
    parent = el.getparent()
    if parent is None:
        return False
    if (parent.text or "").strip() or (el.tail or "").strip(" \t\n.,;:"):
        return False
    for sib in parent:
        if sib is el or not isinstance(sib.tag, str):
            continue
        if (sib.tail or "").strip() or "".join(sib.itertext()).strip() or sib.tag in ("img",):
            return False
    return parent.tag in ("p", "div", "center", "dd", "td", "figure", "li", "section", "article",
                          "body", "main")


def _math_display(math: etree._Element) -> bool:
    return (math.get("display") or "").lower() == "block" or math.get("mode") == "display"


def _math_latex(math: etree._Element) -> str:
    tex = tex_annotation(math)
    if tex:
        return tex
    alt = (math.get("alttext") or "").strip()
    if alt:
        return alt
    return mathml_to_latex(math)


def replace_math(root: lhtml.HtmlElement, delims: TexDelimiters) -> Counter[str]:
    """Rewrite every DOM formula as one ``<mc-math data-display="0|1">LATEX</mc-math>``.

    Returns counts by markup (``wikipedia``, ``data_tex``, ``katex``, ``mathjax3``,
    ``mathjax2``, ``asciimath``, ``mathml``, ``latex_img``); ``unrecoverable`` counts
    rendered formulas that carry no source text (e.g. MathJax SVG without assistive MathML),
    which are removed. `delims` is accepted for symmetry with the text pass (DOM markup does
    not depend on it).
    """
    counts: Counter[str] = Counter()
    candidates = _CANDIDATES(root)
    if not candidates:
        return counts
    root = root.getroottree().getroot()  # a fragment parse still hangs under <html><body>
    wiki, mjx, data_tex, katex, mj2_rendered, scripts, mathml, imgs = [], [], [], [], [], [], [], []
    for el in candidates:
        tag = el.tag
        if tag == "mjx-container":
            mjx.append(el)
            continue
        if not isinstance(tag, str) or tag.startswith("mjx-"):
            continue
        classes = (el.get("class") or "").split()
        if "mwe-math-element" in classes:
            wiki.append(el)
        elif tag in _MATHML_TAGS:
            if tag == "math":
                mathml.append(el)
        elif tag == "script":
            if (el.get("type") or "").lower().startswith("math/"):
                scripts.append(el)
        elif tag == "img":
            imgs.append(el)
        elif el.get("data-math") or el.get("data-latex") or el.get("data-tex") \
                or (el.get("data-entry") and "hurmet-tex" in classes):
            data_tex.append(el)
        elif "katex" in classes or "katex-display" in classes:
            katex.append(el)
        elif _MJ2_CLASSES.intersection(classes):
            mj2_rendered.append(el)

    for el in wiki:
        if not _attached(el, root):
            continue
        maths = _MATH_IN(el)
        latex = _math_latex(maths[0]) if maths else ""
        if not latex:
            alts = [i.get("alt") for i in el.iter("img") if i.get("alt")]
            latex = alts[0] if alts else ""
        display = bool(_WIKI_DISPLAY(el)) or bool(maths and _math_display(maths[0])) \
            or (_is_block_alone(el) and el.getparent().tag == "dd")  # ":" indented equation
        latex = unwrap_displaystyle(latex)
        if latex:
            _replace(el, latex, display)
            counts["wikipedia"] += 1

    for el in mjx:
        if not _attached(el, root):
            continue
        display = (el.get("display") or "").lower() in ("true", "block")
        latex = el.get("data-latex") or ""
        if not latex:  # MathJax v4 keeps the source on <mjx-math data-latex>
            for mm in el.iter("mjx-math"):
                latex = mm.get("data-latex") or ""
                break
        if not latex:
            maths = _MATH_IN(el)
            if maths:
                m0 = maths[0]
                latex = m0.get("data-latex") or _math_latex(m0)
                display = display or _math_display(m0)
        if not latex:
            mm = mjx_to_mathml(el)
            if mm is None:
                mm = svg_to_mathml(el)
            if mm is not None:
                latex = mathml_to_latex(mm)
        if latex:
            _replace(el, latex, display)
            counts["mathjax3"] += 1
        else:
            _remove(el)
            counts["unrecoverable"] += 1

    for el in data_tex:
        if not _attached(el, root):
            continue
        latex = el.get("data-math") or el.get("data-latex") or el.get("data-tex") or el.get("data-entry") or ""
        if not latex.strip():
            continue
        cls = el.get("class") or ""
        display = bool(re.search(r"block|display", cls)) or el.get("data-display") in ("true", "block", "1")
        maths = _MATH_IN(el)
        if maths and _math_display(maths[0]):
            display = True
        _replace(el, unwrap_displaystyle(latex), display)
        counts["data_tex"] += 1

    for el in katex:
        if not _attached(el, root):
            continue
        display = "katex-display" in (el.get("class") or "").split()
        if not display:
            par = el.getparent()
            if par is not None and "katex-display" in (par.get("class") or "").split():
                continue  # handled with its wrapper
        tex = None
        for math in _MATH_IN(el):
            tex = tex_annotation(math) or (math.get("alttext") or "").strip() or mathml_to_latex(math)
            if tex:
                break
        if tex:
            _replace(el, tex, display)
            counts["katex"] += 1
        elif _KATEX_HTML(el):
            _remove(el)
            counts["unrecoverable"] += 1

    if scripts:
        for el in mj2_rendered:
            if _attached(el, root):
                _remove(el)
        for el in scripts:
            typ = (el.get("type") or "").lower()
            body = (el.text or "").strip()
            display = "mode=display" in typ.replace(" ", "")
            if typ.startswith("math/tex") or typ.startswith("math/latex"):
                key, latex = "mathjax2", body
            elif typ.startswith("math/asciimath"):
                key, latex = "asciimath", asciimath_to_latex(body) if body else ""
            elif typ.startswith("math/mml"):
                key, latex = "mathjax2", mathml_to_latex(body) if body else ""
                display = display or 'display="block"' in body
            else:
                continue
            if latex:
                _replace(el, latex, display)
                counts[key] += 1
            else:
                _remove(el)

    else:
        # A saved MathJax v2 page without its scripts: the rendered frame keeps the formula's
        # MathML in data-mathml (or an assistive <math>); the glyph text must not be written.
        for el in mj2_rendered:
            if not _attached(el, root) or not _MJ2_FRAMES.intersection((el.get("class") or "").split()):
                continue
            mml = el.get("data-mathml") or ""
            latex = mathml_to_latex(mml) if mml else ""
            if not latex:
                maths = _MATH_IN(el)
                latex = _math_latex(maths[0]) if maths else ""
            if latex:
                par = el.getparent()
                display = 'display="block"' in mml or (par is not None and "MathJax_Display" in (par.get("class") or ""))
                _replace(el, latex, display)
                counts["mathjax2"] += 1

    for math in mathml:
        if not _attached(math, root):
            continue
        latex = math.get("data-latex") or _math_latex(math)
        if latex:
            _replace(math, unwrap_displaystyle(latex), _math_display(math))
            counts["mathml"] += 1
        else:
            _remove(math)

    for img in imgs:
        if not _attached(img, root):
            continue
        latex = _img_latex(img)
        if latex:
            cls = img.get("class") or ""
            display = "display" in cls or "aligncenter" in cls or _is_block_alone(img) \
                or "\\displaystyle" in latex[:20]
            _replace(img, latex, display)
            counts["latex_img"] += 1
    return counts


_TEX_QUERY_KEYS = ("latex", "chl", "tex", "formula", "eq", "math", "from", "exp")
_STRONG_TEX = re.compile(r"\\(frac|sum|int|sqrt|begin|operatorname|alpha|beta|gamma|mathbb|mathrm|mathbf|left|"
                         r"cdot|le|ge|leq|geq|pi|theta|infty|lim|partial|binom|times|ne|neq)(?![A-Za-z])")


def _img_latex(img: etree._Element) -> str:
    """The TeX an image stands for: from a TeX-rendering service URL, else a TeX ``alt``."""
    src = img.get("src") or img.get("data-src") or ""
    alt = (img.get("alt") or img.get("data-formula") or "").strip()
    cls = img.get("class") or ""
    if img.get("data-formula"):  # Zhihu: <img class="ztext-math" data-formula="...">
        return img.get("data-formula", "").strip()
    if src and _TEX_URL.search(src):
        parts = urlsplit(src.replace("&amp;", "&"))
        q = parse_qs(parts.query, keep_blank_values=True)
        for key in _TEX_QUERY_KEYS:
            if q.get(key) and q[key][0].strip():
                return q[key][0].strip()
        first = parts.query.split("&")[0]
        if first and "=" not in first:  # codecogs / mimetex: the whole query is the formula
            return unquote(first).strip()
        seg = unquote(parts.path.rsplit("/", 1)[-1])
        if _TEXISH.search(seg) and "." not in seg[-5:]:  # path-based services (upmath /svg/<tex>)
            return seg.strip()
        if alt:  # a TeX service without the formula in its URL (AoPS hashes): the alt holds it
            return _strip_dollars(alt)
    if src and "%5C" in src.upper():
        seg = unquote(urlsplit(src).path.rsplit("/", 1)[-1])
        if _TEXISH.search(seg):
            return seg.strip()
    if alt and _IMG_CLASS.search(cls) and (_TEXISH.search(alt) or re.search(r"\b(latex|tex)\b", cls, re.I)):
        return _strip_dollars(alt)
    if alt and _TEXISH.search(alt) and _STRONG_TEX.search(alt):
        return _strip_dollars(alt)
    return ""


def _strip_dollars(tex: str) -> str:
    tex = tex.strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if tex.startswith(a) and tex.endswith(b) and len(tex) > len(a) + len(b):
            return tex[len(a):-len(b)].strip()
    return tex

