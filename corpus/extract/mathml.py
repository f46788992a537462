"""MathML → LaTeX: a small, dependency-free converter for presentation MathML.

Owns :func:`mathml_to_latex` (an lxml element or a MathML string in, LaTeX out). MathJax's
rendered output without MathML is first rebuilt as MathML by corpus/extract/mathjax_dom.py.

Why our own: the converters that exist were measured on the same MathML set
(``bench/mathml_compare.py``, BENCHMARKS.md "MathML → LaTeX"); ``mathml-to-latex`` (PyPI)
breaks matrices and fences, and the mmltex XSLT needs an XSLT run per formula. This one covers
what web pages carry: tokens with ``mathvariant``, fractions (``linethickness="0"`` → binomial
form), roots, scripts, under/over with limits (sums, integrals, ``\\lim``), accents and braces,
tables (matrix environments chosen from the surrounding fences, ``cases``, ``aligned``;
MathJax's ``mlabeledtr`` tag dropped), ``mfenced``, ``menclose``, ``mstyle``, spacing.
Tag names are compared without namespace, so both ``<math xmlns=...>`` and HTML-parsed
``<math>`` work.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Iterable

from lxml import etree

__all__ = ["mathml_to_latex", "tex_annotation", "SYMBOLS"]

# Unicode → LaTeX for the symbols pages use. Letters and digits map to themselves.
SYMBOLS: dict[str, str] = {
    # Greek
    "α": r"\alpha", "β": r"\beta", "γ": r"\gamma", "δ": r"\delta", "ε": r"\epsilon",
    "ϵ": r"\epsilon", "ζ": r"\zeta", "η": r"\eta", "θ": r"\theta", "ϑ": r"\vartheta",
    "ι": r"\iota", "κ": r"\kappa", "λ": r"\lambda", "μ": r"\mu", "ν": r"\nu", "ξ": r"\xi",
    "ο": "o", "π": r"\pi", "ϖ": r"\varpi", "ρ": r"\rho", "ϱ": r"\varrho", "σ": r"\sigma",
    "ς": r"\varsigma", "τ": r"\tau", "υ": r"\upsilon", "φ": r"\phi", "ϕ": r"\phi",
    "χ": r"\chi", "ψ": r"\psi", "ω": r"\omega", "Γ": r"\Gamma", "Δ": r"\Delta",
    "Θ": r"\Theta", "Λ": r"\Lambda", "Ξ": r"\Xi", "Π": r"\Pi", "Σ": r"\Sigma",
    "Υ": r"\Upsilon", "Φ": r"\Phi", "Ψ": r"\Psi", "Ω": r"\Omega", "ϝ": r"\digamma",
    # binary operators
    "±": r"\pm", "∓": r"\mp", "×": r"\times", "÷": r"\div", "⋅": r"\cdot", "·": r"\cdot",
    "∗": "*", "∘": r"\circ", "∙": r"\bullet", "⊕": r"\oplus", "⊗": r"\otimes",
    "⊖": r"\ominus", "⊙": r"\odot", "∩": r"\cap", "∪": r"\cup", "∧": r"\wedge",
    "∨": r"\vee", "∖": r"\setminus", "⋆": r"\star", "†": r"\dagger", "‡": r"\ddagger",
    "⊎": r"\uplus", "⊓": r"\sqcap", "⊔": r"\sqcup", "≀": r"\wr", "−": "-", "∕": "/",
    "⋄": r"\diamond", "△": r"\triangle", "▽": r"\nabla",
    # relations
    "≤": r"\leq", "≥": r"\geq", "≦": r"\leqq", "≧": r"\geqq", "≠": r"\neq", "≈": r"\approx",
    "≡": r"\equiv", "∼": r"\sim", "≃": r"\simeq", "≅": r"\cong", "∝": r"\propto",
    "≪": r"\ll", "≫": r"\gg", "∈": r"\in", "∉": r"\notin", "∋": r"\ni", "⊂": r"\subset",
    "⊃": r"\supset", "⊆": r"\subseteq", "⊇": r"\supseteq", "⊊": r"\subsetneq",
    "⊄": r"\not\subset", "⊥": r"\perp", "∥": r"\parallel", "∣": r"\mid", "⊢": r"\vdash",
    "⊨": r"\models", "≺": r"\prec", "≻": r"\succ", "≼": r"\preceq", "≽": r"\succeq",
    "≍": r"\asymp", "≐": r"\doteq", "⩽": r"\leqslant", "⩾": r"\geqslant", "≜": r"\triangleq",
    "≔": ":=", "∤": r"\nmid", "≮": r"\not<", "≯": r"\not>", "≰": r"\nleq", "≱": r"\ngeq",
    # arrows
    "→": r"\to", "←": r"\leftarrow", "↔": r"\leftrightarrow", "⇒": r"\Rightarrow",
    "⇐": r"\Leftarrow", "⇔": r"\Leftrightarrow", "↦": r"\mapsto", "⟶": r"\longrightarrow",
    "⟵": r"\longleftarrow", "⟹": r"\Longrightarrow", "⟸": r"\Longleftarrow",
    "⟺": r"\iff", "⟷": r"\longleftrightarrow", "⟼": r"\longmapsto", "↑": r"\uparrow",
    "↓": r"\downarrow", "⇑": r"\Uparrow", "⇓": r"\Downarrow", "↗": r"\nearrow",
    "↘": r"\searrow", "↪": r"\hookrightarrow", "↩": r"\hookleftarrow", "⇀": r"\rightharpoonup",
    "⇌": r"\rightleftharpoons", "↠": r"\twoheadrightarrow",
    # big operators and misc
    "∑": r"\sum", "∏": r"\prod", "∐": r"\coprod", "∫": r"\int", "∬": r"\iint",
    "∭": r"\iiint", "∮": r"\oint", "⋃": r"\bigcup", "⋂": r"\bigcap", "⨁": r"\bigoplus",
    "⨂": r"\bigotimes", "⋁": r"\bigvee", "⋀": r"\bigwedge", "⨆": r"\bigsqcup",
    "∞": r"\infty", "∂": r"\partial", "∇": r"\nabla", "∀": r"\forall", "∃": r"\exists",
    "∄": r"\nexists", "∅": r"\emptyset", "¬": r"\neg", "ℓ": r"\ell", "ℏ": r"\hbar",
    "ℜ": r"\Re", "ℑ": r"\Im", "℘": r"\wp", "ℵ": r"\aleph", "′": "'", "″": "''",
    "‴": "'''", "…": r"\ldots", "⋯": r"\cdots", "⋮": r"\vdots", "⋱": r"\ddots",
    "°": r"^{\circ}", "∠": r"\angle", "□": r"\square", "■": r"\blacksquare", "◻": r"\square",
    "✓": r"\checkmark", "∴": r"\therefore", "∵": r"\because", "⊤": r"\top",
    "ℕ": r"\mathbb{N}", "ℤ": r"\mathbb{Z}", "ℚ": r"\mathbb{Q}", "ℝ": r"\mathbb{R}",
    "ℂ": r"\mathbb{C}", "ℙ": r"\mathbb{P}", "ℍ": r"\mathbb{H}", "√": r"\surd",
    # delimiters
    "⟨": r"\langle", "⟩": r"\rangle", "〈": r"\langle", "〉": r"\rangle", "⌊": r"\lfloor",
    "⌋": r"\rfloor", "⌈": r"\lceil", "⌉": r"\rceil", "‖": r"\|", "{": r"\{", "}": r"\}",
    "∥ ": r"\|",
    # spaces / invisibles
    "\u2061": "", "\u2062": "", "\u2063": ",", "\u2064": "+", "\u200b": "", "\u00a0": " ",
    "\u2009": r"\,", "\u2005": r"\:", "\u2004": r"\;", "\u2003": r"\quad",
    # text-ish symbols that are special in TeX
    "%": r"\%", "#": r"\#", "&": r"\&", "$": r"\$", "_": r"\_", "~": r"\sim", "ˆ": r"\hat{}",
}

# Accents: the character in <mover accent> → LaTeX command.
OVER_ACCENTS = {
    "^": r"\hat", "ˆ": r"\hat", "\u0302": r"\hat", "~": r"\tilde", "˜": r"\tilde",
    "\u0303": r"\tilde", "¯": r"\bar", "‾": r"\overline", "\u0304": r"\bar", "_": r"\overline",
    "→": r"\vec", "⃗": r"\vec", "˙": r"\dot", "\u0307": r"\dot", ".": r"\dot", "⋅": r"\dot",
    "¨": r"\ddot", "\u0308": r"\ddot", "..": r"\ddot", "ˇ": r"\check", "˘": r"\breve",
    "´": r"\acute", "`": r"\grave", "⏞": r"\overbrace", "⌢": r"\overset{\frown}",
    "←": r"\overleftarrow", "↔": r"\overleftrightarrow", "̲": r"\underline",
}
UNDER_ACCENTS = {"⏟": r"\underbrace", "_": r"\underline", "‾": r"\underline", "¯": r"\underline"}

# Multi-letter identifiers that are standard operator names.
FUNCTIONS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh coth log ln lg exp lim "
    "liminf limsup max min sup inf det dim ker deg gcd hom arg Pr mod".split()
)
LIMIT_OPS = frozenset(
    [r"\sum", r"\prod", r"\coprod", r"\bigcup", r"\bigcap", r"\bigoplus", r"\bigotimes",
     r"\bigvee", r"\bigwedge", r"\bigsqcup", r"\lim", r"\max", r"\min", r"\sup", r"\inf",
     r"\liminf", r"\limsup", r"\det", r"\gcd", r"\Pr", r"\int", r"\iint", r"\iiint", r"\oint"]
)
VARIANTS = {
    "bold": r"\mathbf", "italic": r"\mathit", "bold-italic": r"\boldsymbol",
    "double-struck": r"\mathbb", "script": r"\mathcal", "bold-script": r"\mathcal",
    "fraktur": r"\mathfrak", "bold-fraktur": r"\mathfrak", "sans-serif": r"\mathsf",
    "bold-sans-serif": r"\mathsf", "monospace": r"\mathtt", "normal": r"\mathrm",
}
FENCE_ENVS = {("(", ")"): "pmatrix", ("[", "]"): "bmatrix", ("{", "}"): "Bmatrix",
              ("|", "|"): "vmatrix", ("‖", "‖"): "Vmatrix", ("∥", "∥"): "Vmatrix"}
FENCE_TEX = {"(": "(", ")": ")", "[": "[", "]": "]", "{": r"\{", "}": r"\}", "|": "|",
             "‖": r"\|", "∥": r"\|", "⟨": r"\langle", "⟩": r"\rangle", "〈": r"\langle",
             "〉": r"\rangle", "⌊": r"\lfloor", "⌋": r"\rfloor", "⌈": r"\lceil",
             "⌉": r"\rceil", "": ".", "/": "/"}
_ALNUM_NAME = re.compile(
    r"^MATHEMATICAL (BOLD ITALIC|BOLD SCRIPT|BOLD FRAKTUR|BOLD|ITALIC|SCRIPT|FRAKTUR|"
    r"DOUBLE-STRUCK|SANS-SERIF BOLD ITALIC|SANS-SERIF BOLD|SANS-SERIF ITALIC|SANS-SERIF|"
    r"MONOSPACE) (CAPITAL|SMALL|DIGIT) (\w+)$"
)
_NAME_VARIANT = {"BOLD": "bold", "BOLD ITALIC": "bold-italic", "ITALIC": "italic",
                 "SCRIPT": "script", "BOLD SCRIPT": "script", "FRAKTUR": "fraktur",
                 "BOLD FRAKTUR": "fraktur", "DOUBLE-STRUCK": "double-struck",
                 "SANS-SERIF": "sans-serif", "SANS-SERIF BOLD": "sans-serif",
                 "SANS-SERIF ITALIC": "sans-serif", "SANS-SERIF BOLD ITALIC": "sans-serif",
                 "MONOSPACE": "monospace"}
_DIGITS = {"ZERO": "0", "ONE": "1", "TWO": "2", "THREE": "3", "FOUR": "4", "FIVE": "5",
           "SIX": "6", "SEVEN": "7", "EIGHT": "8", "NINE": "9"}
_TEX_ENC = re.compile(r"(x-)?(la)?tex", re.I)
_TEXT_ESCAPES = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "%": r"\%", "#": r"\#", "&": r"\&",
                 "$": r"\$", "_": r"\_", "^": r"\^{}", "~": r"\~{}"}
_TEXT_SPECIAL = re.compile(r"[\\{}%#&$_^~]")


@functools.lru_cache(maxsize=1024)
def _local_str(tag: str) -> str:
    return tag.rsplit("}", 1)[-1].split(":")[-1].lower()


def _local(tag: object) -> str:
    return _local_str(tag) if isinstance(tag, str) else ""


def _plain_char(ch: str) -> tuple[str, str | None]:
    """Map a Unicode math alphanumeric (𝑥, 𝐕, 𝔽) to (ascii letter, mathvariant)."""
    if ord(ch) < 0x1D400 or ord(ch) > 0x1D7FF:
        if ch == "ℎ":
            return "h", None
        return ch, None
    m = _ALNUM_NAME.match(unicodedata.name(ch, ""))
    if not m:
        return ch, None
    style, kind, letter = m.groups()
    if kind == "DIGIT":
        base = _DIGITS.get(letter, letter)
    elif len(letter) == 1:
        base = letter if kind == "CAPITAL" else letter.lower()
    else:  # Greek: MATHEMATICAL ITALIC SMALL ALPHA
        try:
            base = unicodedata.lookup(f"GREEK {'CAPITAL' if kind == 'CAPITAL' else 'SMALL'} LETTER {letter}")
        except KeyError:
            return ch, None
    variant = _NAME_VARIANT.get(style)
    if style == "ITALIC":
        variant = None
    return base, variant


def _sym(text: str) -> str:
    """Token text → LaTeX, symbol by symbol, with a space after control words."""
    out: list[str] = []
    for ch in text:
        base, variant = _plain_char(ch)
        tex = SYMBOLS.get(base, base)
        if variant and variant in VARIANTS:
            tex = VARIANTS[variant] + "{" + tex + "}"
        out.append(tex)
    return _join(out)


_CONTROL_WORD_END = re.compile(r"\\[A-Za-z]+$")


def _join(parts: Iterable[str]) -> str:
    """Concatenate LaTeX pieces, inserting a space only where a control word would merge."""
    out: list[str] = []
    tail = ""  # the result's last characters: enough to see a control word, without rescanning it all
    for p in parts:
        if not p:
            continue
        if tail and p[0].isalpha() and tail[-1].isalpha() and _CONTROL_WORD_END.search(tail):
            out.append(" ")
            tail = " "
        out.append(p)
        tail = (tail + p)[-64:]
    return "".join(out)


def _group(tex: str) -> str:
    """Wrap as a script/argument group unless a single character or command."""
    if len(tex) == 1 or re.fullmatch(r"\\[A-Za-z]+|\\.", tex):
        return tex
    if tex.startswith("{") and tex.endswith("}") and _balanced_outer(tex):
        return tex
    return "{" + tex + "}"


def _balanced_outer(tex: str) -> bool:
    depth = 0
    for i, ch in enumerate(tex):
        if ch == "{" and (i == 0 or tex[i - 1] != "\\"):
            depth += 1
        elif ch == "}" and (i == 0 or tex[i - 1] != "\\"):
            depth -= 1
            if depth == 0 and i != len(tex) - 1:
                return False
    return depth == 0


def _text(el: etree._Element) -> str:
    return "".join(el.itertext())


def _children(el: etree._Element) -> list[etree._Element]:
    return [c for c in el if isinstance(c.tag, str)]


def tex_annotation(math: etree._Element) -> str | None:
    """The TeX source a <math> element carries in an <annotation encoding="...tex">."""
    for ann in _ANNOTATIONS(math):
        if _TEX_ENC.search(ann.get("encoding") or ""):
            txt = _text(ann).strip()
            if txt:
                return txt
    return None


_ANNOTATIONS = etree.XPath(".//*[local-name()='annotation'][@encoding]")


def _zero_line(frac: etree._Element) -> bool:
    return (frac.get("linethickness") or "").strip() in ("0", "0px", "0pt", "0em", "0.0", "0ex")


def _fence_text(el: etree._Element) -> str | None:
    """Text of an <mo>, also when wrapped in single-child <mrow>s (MathJax's OPEN/CLOSE atoms)."""
    while _local(el.tag) == "mrow":
        kids = _children(el)
        if len(kids) != 1:
            return None
        el = kids[0]
    return _text(el).strip() if _local(el.tag) == "mo" else None


class _Converter:
    def convert(self, el: etree._Element) -> str:
        tag = _local(el.tag)
        fn = getattr(self, "_" + tag.replace("-", "_"), None)
        if fn is None:
            return self._mrow(el)
        return fn(el)

    def _seq(self, els: list[etree._Element]) -> str:
        parts: list[str] = []
        i = 0
        while i < len(els):
            el = els[i]
            # ( mfrac linethickness=0 ) is a binomial coefficient
            if i + 2 < len(els) and _fence_text(el) == "(" and _fence_text(els[i + 2]) == ")" \
                    and _local(els[i + 1].tag) == "mfrac" and _zero_line(els[i + 1]) \
                    and len(_children(els[i + 1])) == 2:
                num, den = _children(els[i + 1])
                parts.append(r"\binom{" + self.convert(num) + "}{" + self.convert(den) + "}")
                i += 3
                continue
            # A bare mtable between fence operators: choose the matrix environment.
            if _local(el.tag) == "mo" and i + 2 < len(els) and _local(els[i + 1].tag) == "mtable" \
                    and _local(els[i + 2].tag) == "mo":
                env = FENCE_ENVS.get((_text(el).strip(), _text(els[i + 2]).strip()))
                if env:
                    parts.append(self._table(els[i + 1], env))
                    i += 3
                    continue
            if _local(el.tag) == "mo" and _text(el).strip() == "{" and i + 1 < len(els) \
                    and _local(els[i + 1].tag) == "mtable" and (i + 2 == len(els)):
                parts.append(self._table(els[i + 1], "cases"))
                i += 2
                continue
            parts.append(self.convert(el))
            i += 1
        return _join(p if not p.startswith(" ") else p for p in parts).strip()

    # containers
    def _mrow(self, el: etree._Element) -> str:
        kids = _children(el)
        if len(kids) == 3 and _local(kids[0].tag) == "mo" and _local(kids[2].tag) == "mo" \
                and kids[0].get("fence") == "true" and _local(kids[1].tag) != "mtable":
            o, c = _text(kids[0]).strip(), _text(kids[2]).strip()
            if o in FENCE_TEX and c in FENCE_TEX:
                return (r"\left" + FENCE_TEX[o] + " " + self.convert(kids[1]) + r" \right"
                        + FENCE_TEX[c])
        return self._seq(kids)

    _math = _mrow
    _mpadded = _mrow
    _merror = _mrow
    _mtd = _mrow

    def _semantics(self, el: etree._Element) -> str:
        kids = [k for k in _children(el) if _local(k.tag) not in ("annotation", "annotation-xml")]
        return self._seq(kids)

    def _annotation(self, el: etree._Element) -> str:
        return ""

    _annotation_xml = _annotation
    _none = _annotation
    _mprescripts = _annotation

    def _mphantom(self, el: etree._Element) -> str:
        return ""

    def _mstyle(self, el: etree._Element) -> str:
        inner = self._mrow(el)
        variant = el.get("mathvariant")
        if variant in VARIANTS and variant != "normal":
            return VARIANTS[variant] + "{" + inner + "}"
        return inner

    def _mfenced(self, el: etree._Element) -> str:
        o, c = el.get("open", "("), el.get("close", ")")
        seps = (el.get("separators", ",") or "").replace(" ", "") or ""
        kids = _children(el)
        if len(kids) == 1 and _local(kids[0].tag) == "mtable" and (o, c) in FENCE_ENVS:
            return self._table(kids[0], FENCE_ENVS[(o, c)])
        parts: list[str] = []
        for i, k in enumerate(kids):
            if i:
                parts.append(seps[min(i - 1, len(seps) - 1)] if seps else "")
            parts.append(self.convert(k))
        return r"\left" + FENCE_TEX.get(o, o) + " " + " ".join(p for p in parts if p) + r" \right" + FENCE_TEX.get(c, c)

    def _menclose(self, el: etree._Element) -> str:
        inner = self._mrow(el)
        notation = el.get("notation", "longdiv")
        if "top" in notation:
            return r"\overline{" + inner + "}"
        if "bottom" in notation:
            return r"\underline{" + inner + "}"
        if "box" in notation or "roundedbox" in notation:
            return r"\boxed{" + inner + "}"
        if "strike" in notation:
            return r"\cancel{" + inner + "}"
        return inner

    # tokens
    def _mi(self, el: etree._Element) -> str:
        t = _text(el).strip()
        variant = el.get("mathvariant")
        if not t:
            return ""
        if len(t) > 1 and t in FUNCTIONS:
            return "\\" + t
        tex = _sym(t)
        if variant in VARIANTS and not (variant == "normal" and (len(t) == 1 and not t.isascii())):
            if variant == "normal" and len(t) == 1 and not t.isalpha():
                return tex
            return VARIANTS[variant] + "{" + tex + "}"
        if len(t) > 1 and t.isalpha() and t.isascii():
            return r"\mathrm{" + t + "}"
        return tex

    def _mn(self, el: etree._Element) -> str:
        return _sym(_text(el).strip())

    def _mo(self, el: etree._Element) -> str:
        t = _text(el).strip()
        if len(t) > 1 and t in FUNCTIONS:
            return "\\" + t
        if t == "∣" and (el.get("stretchy") is not None or el.get("fence") is not None):
            return "|"  # KaTeX's \lvert/\rvert; a bare ∣ is the relation \mid
        if t in ("{", "}"):
            return "\\" + t
        return _sym(t)

    def _mtext(self, el: etree._Element) -> str:
        t = _text(el)
        if not t.strip():
            return r"\ " if t else ""
        t = t.replace("\u00a0", " ")
        esc = _TEXT_SPECIAL.sub(lambda m: _TEXT_ESCAPES[m.group(0)], t)
        return r"\text{" + esc + "}"

    def _ms(self, el: etree._Element) -> str:
        return r'\text{"' + _text(el) + '"}'

    def _mspace(self, el: etree._Element) -> str:
        if el.get("linebreak") == "newline":
            return r"\\"
        w = el.get("width", "")
        m = re.match(r"([\d.]+)em", w)
        if m:
            v = float(m.group(1))
            if v >= 1.8:
                return r"\qquad "
            if v >= 0.9:
                return r"\quad "
            if v >= 0.25:
                return r"\; "
            if v > 0.1:
                return r"\, "
        return " "

    # layout
    def _mfrac(self, el: etree._Element) -> str:
        kids = _children(el)
        if len(kids) != 2:
            return self._seq(kids)
        num, den = self.convert(kids[0]), self.convert(kids[1])
        if _zero_line(el):
            return r"\genfrac{}{}{0pt}{}{" + num + "}{" + den + "}"
        if el.get("bevelled") == "true":
            return _group(num) + "/" + _group(den)
        return r"\frac{" + num + "}{" + den + "}"

    def _msqrt(self, el: etree._Element) -> str:
        return r"\sqrt{" + self._mrow(el) + "}"

    def _mroot(self, el: etree._Element) -> str:
        kids = _children(el)
        if len(kids) != 2:
            return r"\sqrt{" + self._seq(kids) + "}"
        return r"\sqrt[" + self.convert(kids[1]) + "]{" + self.convert(kids[0]) + "}"

    def _base(self, el: etree._Element) -> str:
        b = self.convert(el)
        if not b:
            return "{}"
        if _local(el.tag) in ("msub", "msup", "msubsup"):
            return "{" + b + "}"
        if len(b) > 1 and not re.fullmatch(r"\\[A-Za-z]+|\\mathrm\{\w+\}|\\math[a-z]+\{[^{}]*\}|\\[a-z]+\{[^{}]*\}", b) \
                and not (b.startswith(r"\left") and b.endswith(")")) and _local(el.tag) == "mrow":
            return "{" + b + "}"
        return b

    def _msub(self, el: etree._Element) -> str:
        kids = _children(el)
        if len(kids) != 2:
            return self._seq(kids)
        return self._base(kids[0]) + "_" + _group(self.convert(kids[1]))

    def _msup(self, el: etree._Element) -> str:
        kids = _children(el)
        if len(kids) != 2:
            return self._seq(kids)
        sup = self.convert(kids[1])
        if sup in ("'", "''", "'''"):
            return self._base(kids[0]) + sup
        return self._base(kids[0]) + "^" + _group(sup)

    def _msubsup(self, el: etree._Element) -> str:
        kids = _children(el)
        if len(kids) != 3:
            return self._seq(kids)
        return (self._base(kids[0]) + "_" + _group(self.convert(kids[1])) + "^"
                + _group(self.convert(kids[2])))

    def _mmultiscripts(self, el: etree._Element) -> str:
        kids = _children(el)
        if not kids:
            return ""
        base = self._base(kids[0])
        post, pre, cur = [], [], None
        cur = post
        for k in kids[1:]:
            if _local(k.tag) == "mprescripts":
                cur = pre
                continue
            cur.append(self.convert(k) if _local(k.tag) != "none" else "")
        def scripts(lst: list[str]) -> str:
            s = ""
            for i in range(0, len(lst) - 1, 2):
                if lst[i]:
                    s += "_" + _group(lst[i])
                if lst[i + 1]:
                    s += "^" + _group(lst[i + 1])
            return s
        prefix = "{}" + scripts(pre) if pre else ""
        return prefix + base + scripts(post)

    def _under_over(self, el: etree._Element, under: etree._Element | None,
                    over: etree._Element | None) -> str:
        base_el = _children(el)[0]
        base = self.convert(base_el)
        u = self.convert(under) if under is not None else None
        o = self.convert(over) if over is not None else None
        if o is not None and under is None:
            acc = OVER_ACCENTS.get(_text(over).strip()) if _local(over.tag) == "mo" else None
            if acc:
                if acc == r"\overbrace" or acc.startswith(r"\over"):
                    return acc + "{" + base + "}"
                return acc + "{" + base + "}"
        if u is not None and over is None:
            acc = UNDER_ACCENTS.get(_text(under).strip()) if _local(under.tag) == "mo" else None
            if acc:
                return acc + "{" + base + "}"
        if base in LIMIT_OPS or _local(base_el.tag) == "mo" or base.startswith(r"\underbrace") \
                or base.startswith(r"\overbrace"):
            s = base
            if u is not None:
                s += "_" + _group(u)
            if o is not None:
                s += "^" + _group(o)
            return s
        s = base
        if u is not None:
            s = r"\underset{" + u + "}{" + s + "}"
        if o is not None:
            s = r"\overset{" + o + "}{" + s + "}"
        return s

    def _munder(self, el: etree._Element) -> str:
        kids = _children(el)
        if len(kids) != 2:
            return self._seq(kids)
        return self._under_over(el, kids[1], None)

    def _mover(self, el: etree._Element) -> str:
        kids = _children(el)
        if len(kids) != 2:
            return self._seq(kids)
        return self._under_over(el, None, kids[1])

    def _munderover(self, el: etree._Element) -> str:
        kids = _children(el)
        if len(kids) != 3:
            return self._seq(kids)
        return self._under_over(el, kids[1], kids[2])

    def _mtable(self, el: etree._Element) -> str:
        rows = [r for r in _children(el) if _local(r.tag) in ("mtr", "mlabeledtr")]
        # MathJax wraps one tagged equation in a one-row table with an mlabeledtr: just the equation.
        if len(rows) == 1 and _local(rows[0].tag) == "mlabeledtr":
            cells = _children(rows[0])[1:]
            return self._seq([c for c in cells])
        if len(rows) == 1 and len(_children(rows[0])) == 1:
            return self.convert(_children(rows[0])[0])
        aligned = el.get("columnalign") or el.get("displaystyle") == "true"
        return self._table(el, "aligned" if aligned else "matrix")

    def _table(self, el: etree._Element, env: str) -> str:
        lines: list[str] = []
        for r in _children(el):
            if _local(r.tag) not in ("mtr", "mlabeledtr"):
                continue
            cells = _children(r)
            if _local(r.tag) == "mlabeledtr":
                cells = cells[1:]
            lines.append(" & ".join(self.convert(c) for c in cells))
        return r"\begin{" + env + "}" + r" \\ ".join(lines) + r"\end{" + env + "}"


_CONVERTER = _Converter()


def mathml_to_latex(math: etree._Element | str) -> str:
    """Convert presentation MathML (an element or markup string) to LaTeX.

    A TeX annotation, when present, wins: it is the author's own source.
    """
    if isinstance(math, str):
        parser = etree.XMLParser(recover=True, resolve_entities=False, no_network=True)
        try:
            root = etree.fromstring(math.encode("utf-8"), parser)
        except etree.XMLSyntaxError:
            return ""
        if root is None:
            return ""
        math = root
    ann = tex_annotation(math)
    if ann:
        return ann
    tex = _CONVERTER.convert(math)
    return re.sub(r"\s+", " ", tex).strip()
