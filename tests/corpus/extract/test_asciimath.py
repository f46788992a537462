"""AsciiMath → LaTeX (corpus/extract/asciimath.py)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.extract.asciimath import asciimath_to_latex


@pytest.mark.parametrize(("src", "tex"), [
    ("x^2 + y^2", "x^{2}+y^{2}"),
    ("a/b", r"\frac{a}{b}"),
    ("(a+b)/(c-d)", r"\frac{a+b}{c-d}"),
    ("sqrt(x+1)", r"\sqrt{x+1}"),
    ("root(3)(8)", r"\sqrt[3]{8}"),
    ("sum_(i=1)^n i^2", r"\sum_{i=1}^{n}i^{2}"),
    ("int_0^1 f(x) dx", r"\int_{0}^{1}f\left(x\right)dx"),
    ("lim_(x->oo) 1/x = 0", r"\lim_{x\to\infty}\frac{1}{x}=0"),
    ("sin(x)/x", r"\frac{\sin\left(x\right)}{x}"),
    ("alpha <= beta != gamma", r"\alpha\le\beta\ne\gamma"),
    ("[[1,2],[3,4]]", r"\begin{bmatrix}1 & 2 \\ 3 & 4\end{bmatrix}"),
    ("((a,b),(c,d))", r"\begin{pmatrix}a & b \\ c & d\end{pmatrix}"),
    ('"speed" = d/t', r"\text{speed}=\frac{d}{t}"),
    ("bb v + hat x", r"\mathbf{v}+\hat{x}"),
    ("abs(x) >= 0", r"\left|x\right|\ge 0"),
    ("`x xx y`", r"x\times y"),
    ("a)", "a)"),
])
def test_examples(src: str, tex: str) -> None:
    assert asciimath_to_latex(src) == tex


def test_empty() -> None:
    assert asciimath_to_latex("  ") == ""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab12+-*/^_()[]{},|<>=! ") + ["sqrt", "frac", "sum", "oo", "text", "(:", ":)"]),
                max_size=30).map("".join))
def test_never_raises_and_brackets_balance(src: str) -> None:
    out = asciimath_to_latex(src)
    assert isinstance(out, str)
    assert len(re.findall(r"\\left(?![a-z])", out)) == len(re.findall(r"\\right(?![a-z])", out))
