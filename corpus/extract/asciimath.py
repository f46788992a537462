"""AsciiMath → LaTeX for MathJax v2 ``<script type="math/asciimath">`` (and ``` `…` ``` input).

Owns :func:`asciimath_to_latex`, a recursive-descent parser over AsciiMath's grammar
(asciimath.org):

    E ::= I E | I / I E          (a "/" between intermediates is a fraction)
    I ::= S _ S ^ S | S _ S | S ^ S | S
    S ::= symbol | ( E ) | unary S | binary S S | "text"

Brackets around a fraction part, script or function argument are dropped, as AsciiMath does
(``(a+b)/2`` → ``\\frac{a+b}{2}``); ``[[a,b],[c,d]]`` becomes a matrix environment.
"""

from __future__ import annotations

import re

__all__ = ["asciimath_to_latex"]

_CONST = {
    # greek
    **{g: "\\" + g for g in (
        "alpha beta gamma delta epsilon varepsilon zeta eta theta vartheta iota kappa lambda mu "
        "nu xi pi rho sigma tau upsilon phi varphi chi psi omega Gamma Delta Theta Lambda Xi Pi "
        "Sigma Phi Psi Omega").split()},
    # operators / relations / misc
    "+": "+", "-": "-", "*": r"\cdot", "**": r"\ast", "***": r"\star", "//": "/",
    "\\\\": r"\backslash", "xx": r"\times", "-:": r"\div", "|><": r"\ltimes", "><|": r"\rtimes",
    "|><|": r"\bowtie", "@": r"\circ", "o+": r"\oplus", "ox": r"\otimes", "o.": r"\odot",
    "sum": r"\sum", "prod": r"\prod", "^^": r"\wedge", "^^^": r"\bigwedge", "vv": r"\vee",
    "vvv": r"\bigvee", "nn": r"\cap", "nnn": r"\bigcap", "uu": r"\cup", "uuu": r"\bigcup",
    "=": "=", "!=": r"\ne", "<": "<", ">": ">", "<=": r"\le", ">=": r"\ge", "lt": "<",
    "gt": ">", "le": r"\le", "ge": r"\ge", "-<": r"\prec", ">-": r"\succ", "in": r"\in",
    "!in": r"\notin", "sub": r"\subset", "sup": r"\supset", "sube": r"\subseteq",
    "supe": r"\supseteq", "-=": r"\equiv", "~=": r"\cong", "~~": r"\approx", "prop": r"\propto",
    "and": r"\text{ and }", "or": r"\text{ or }", "not": r"\neg", "=>": r"\implies",
    "if": r"\text{ if }", "<=>": r"\iff", "AA": r"\forall", "EE": r"\exists", "_|_": r"\bot",
    "TT": r"\top", "|--": r"\vdash", "|==": r"\models", "int": r"\int", "oint": r"\oint",
    "del": r"\partial", "grad": r"\nabla", "+-": r"\pm", "-+": r"\mp", "O/": r"\emptyset",
    "oo": r"\infty", "aleph": r"\aleph", "/_": r"\angle", ":.": r"\therefore",
    "|...|": r"|\ldots|", "|cdots|": r"|\cdots|", "...": r"\ldots", "cdots": r"\cdots",
    "vdots": r"\vdots", "ddots": r"\ddots", "|\\ |": r"|\ |", "|quad|": r"|\quad|",
    "quad": r"\quad", "qquad": r"\qquad", "diamond": r"\diamond", "square": r"\square",
    "|__": r"\lfloor", "__|": r"\rfloor", "|~": r"\lceil", "~|": r"\rceil", "CC": r"\mathbb{C}",
    "NN": r"\mathbb{N}", "QQ": r"\mathbb{Q}", "RR": r"\mathbb{R}", "ZZ": r"\mathbb{Z}",
    "uarr": r"\uparrow", "darr": r"\downarrow", "rarr": r"\rightarrow", "->": r"\to",
    ">->": r"\rightarrowtail", "->>": r"\twoheadrightarrow", "|->": r"\mapsto",
    "larr": r"\leftarrow", "harr": r"\leftrightarrow", "rArr": r"\Rightarrow",
    "lArr": r"\Leftarrow", "hArr": r"\Leftrightarrow", ",": ",", "'": "'", "!": "!",
    ":": ":", ";": ";", "|": "|", "||": r"\|", "'s": "'s", "dx": "dx", "dy": "dy", "dt": "dt",
    "lim": r"\lim", "Lim": r"\operatorname{Lim}", "sin": r"\sin", "cos": r"\cos", "tan": r"\tan",
    "sec": r"\sec", "csc": r"\csc", "cot": r"\cot", "arcsin": r"\arcsin", "arccos": r"\arccos",
    "arctan": r"\arctan", "sinh": r"\sinh", "cosh": r"\cosh", "tanh": r"\tanh", "log": r"\log",
    "ln": r"\ln", "exp": r"\exp", "det": r"\det", "dim": r"\dim", "mod": r"\bmod",
    "gcd": r"\gcd", "lcm": r"\operatorname{lcm}", "min": r"\min", "max": r"\max",
    "f": "f", "g": "g", "deg": r"\deg",
}
_FUNCS = frozenset("sin cos tan sec csc cot arcsin arccos arctan sinh cosh tanh log ln exp det dim "
                   "gcd lcm min max f g".split())
_UNARY = {
    "sqrt": r"\sqrt", "hat": r"\hat", "bar": r"\overline", "vec": r"\vec", "tilde": r"\tilde",
    "dot": r"\dot", "ddot": r"\ddot", "ul": r"\underline", "ubrace": r"\underbrace",
    "obrace": r"\overbrace", "bb": r"\mathbf", "bbb": r"\mathbb", "cc": r"\mathcal",
    "tt": r"\mathtt", "fr": r"\mathfrak", "sf": r"\mathsf", "rm": r"\mathrm",
    "text": r"\text", "mbox": r"\text", "abs": "abs", "floor": "floor", "ceil": "ceil",
    "norm": "norm", "cancel": r"\cancel", "overline": r"\overline", "underline": r"\underline",
}
_BINARY = {"frac": r"\frac", "root": "root", "stackrel": r"\stackrel", "overset": r"\overset",
           "underset": r"\underset", "color": r"\color"}
_LEFT = {"(": "(", "[": "[", "{": r"\{", "(:": r"\langle", "<<": r"\langle", "{:": "",
         "|:": r"\lvert"}
_RIGHT = {")": ")", "]": "]", "}": r"\}", ":)": r"\rangle", ">>": r"\rangle", ":}": "",
          ":|": r"\rvert"}

_ALL = sorted(set(_CONST) | set(_UNARY) | set(_BINARY) | set(_LEFT) | set(_RIGHT) | {"/", "_", "^"},
              key=len, reverse=True)
_TOKEN = re.compile(
    r'"[^"]*"|\d+(?:\.\d+)?|' + "|".join(re.escape(t) for t in _ALL) + r"|[A-Za-z]|\S"
)


def _tokenize(s: str) -> list[str]:
    return _TOKEN.findall(s)


class _Parser:
    def __init__(self, tokens: list[str]) -> None:
        self.t = tokens
        self.i = 0

    def peek(self) -> str | None:
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self) -> str:
        tok = self.t[self.i]
        self.i += 1
        return tok

    def expr(self, closers: bool = False) -> str:
        out: list[str] = []
        while self.peek() is not None:
            if self.peek() in _RIGHT:
                break
            node, bare = self.intermediate()
            if self.peek() == "/":
                self.take()
                den, dbare = self.intermediate()
                out.append(r"\frac{" + bare + "}{" + dbare + "}")
                continue
            out.append(node)
        return _join(out)

    def intermediate(self) -> tuple[str, str]:
        node, bare = self.simple()
        if self.peek() == "_":
            self.take()
            sub, sbare = self.simple()
            if self.peek() == "^":
                self.take()
                sup, pbare = self.simple()
                node = node + "_{" + sbare + "}^{" + pbare + "}"
            else:
                node = node + "_{" + sbare + "}"
            bare = node
        elif self.peek() == "^":
            self.take()
            sup, pbare = self.simple()
            if self.peek() == "_":
                self.take()
                sub, sbare = self.simple()
                node = node + "_{" + sbare + "}^{" + pbare + "}"
            else:
                node = node + "^{" + pbare + "}"
            bare = node
        return node, bare

    def simple(self) -> tuple[str, str]:
        """(as written, with outer brackets dropped for use as an argument)."""
        tok = self.peek()
        if tok is None:
            return "", ""
        self.take()
        if tok.startswith('"'):
            s = r"\text{" + tok[1:-1] + "}"
            return s, s
        if tok in _LEFT:
            inner = self.expr()
            close = self.take() if self.peek() in _RIGHT else ""
            if tok == "[" and inner.startswith(r"\begin{matrix}"):
                return inner.replace("{matrix}", "{bmatrix}"), inner.replace("{matrix}", "{bmatrix}")
            mat = _matrix(inner, tok, close)
            if mat:
                return mat, mat
            lt, rt = _LEFT[tok], _RIGHT.get(close, "")
            if lt == "" and rt == "":
                return inner, inner
            return r"\left" + (lt or ".") + inner + r"\right" + (rt or "."), inner
        if tok in _UNARY:
            arg, bare = self.simple()
            cmd = _UNARY[tok]
            if tok in ("text", "mbox"):
                return r"\text{" + _untext(bare) + "}", r"\text{" + _untext(bare) + "}"
            if cmd == "abs":
                s = r"\left|" + bare + r"\right|"
            elif cmd == "floor":
                s = r"\lfloor " + bare + r"\rfloor"
            elif cmd == "ceil":
                s = r"\lceil " + bare + r"\rceil"
            elif cmd == "norm":
                s = r"\left\|" + bare + r"\right\|"
            else:
                s = cmd + "{" + bare + "}"
            return s, s
        if tok in _BINARY:
            a, abare = self.simple()
            b, bbare = self.simple()
            if tok == "root":
                s = r"\sqrt[" + abare + "]{" + bbare + "}"
            else:
                s = _BINARY[tok] + "{" + abare + "}{" + bbare + "}"
            return s, s
        if tok in _FUNCS and self.peek() in _LEFT:
            # sin(x)/x: a function with its bracketed argument is one simple expression
            arg, _ = self.simple()
            s = _CONST[tok] + arg
            return s, s
        if tok in _CONST:
            return _CONST[tok], _CONST[tok]
        if tok in _RIGHT:
            return _RIGHT[tok], _RIGHT[tok]
        return tok, tok


def _untext(s: str) -> str:
    m = re.fullmatch(r"\\text\{(.*)\}", s)
    return m.group(1) if m else s


def _matrix(inner: str, open_: str, close: str) -> str:
    """``[(a,b),(c,d)]`` already parsed as ``\\left(a,b\\right),\\left(c,d\\right)``."""
    rows = re.findall(r"\\left[\(\[](.*?)\\right[\)\]]", inner)
    if len(rows) < 2:
        return ""
    rebuilt = ",".join(r"\left(" + r + r"\right)" for r in rows)
    rebuilt_b = ",".join(r"\left[" + r + r"\right]" for r in rows)
    if inner not in (rebuilt, rebuilt_b):
        return ""
    cells = [r.split(",") for r in rows]
    if len({len(c) for c in cells}) != 1:
        return ""
    env = {"[": "bmatrix", "(": "pmatrix", "{": "Bmatrix", "|:": "vmatrix"}.get(open_, "matrix")
    if open_ == "{:" or (open_ == "{" and close == ":}"):
        env = "cases" if open_ == "{" else "matrix"
    body = r" \\ ".join(" & ".join(c) for c in cells)
    return r"\begin{" + env + "}" + body + r"\end{" + env + "}"


def _join(parts: list[str]) -> str:
    res = ""
    for p in parts:
        if not p:
            continue
        if res and re.search(r"\\[A-Za-z]+$", res) and p[0].isalnum():
            res += " "
        res += p
    return res


def asciimath_to_latex(src: str) -> str:
    """Convert an AsciiMath expression to LaTeX (best effort; never raises)."""
    src = src.strip().strip("`").strip()
    if not src:
        return ""
    try:
        parser = _Parser(_tokenize(src))
        out = [parser.expr()]
        while parser.peek() is not None:  # a stray closing bracket at top level
            out.append(_RIGHT.get(parser.take(), ""))
            out.append(parser.expr())
        return _join(out).strip()
    except (IndexError, RecursionError):
        return src
