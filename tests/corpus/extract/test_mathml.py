"""MathML → LaTeX (corpus/extract/mathml.py), including MathJax CHTML/SVG output rebuilt as MathML."""

from __future__ import annotations

import json
from pathlib import Path

import latex2mathml.converter
import lxml.html
import pytest

from corpus.extract.mathjax_dom import mjx_to_mathml, svg_to_mathml
from corpus.extract.mathml import mathml_to_latex, tex_annotation

WEB = Path(__file__).resolve().parents[2] / "data" / "web"
M = '<math xmlns="http://www.w3.org/1998/Math/MathML">{}</math>'


@pytest.mark.parametrize(("mml", "tex"), [
    ("<mfrac><mi>a</mi><mi>b</mi></mfrac>", r"\frac{a}{b}"),
    ("<msqrt><mi>x</mi><mo>+</mo><mn>1</mn></msqrt>", r"\sqrt{x+1}"),
    ("<mroot><mn>8</mn><mn>3</mn></mroot>", r"\sqrt[3]{8}"),
    ("<msubsup><mi>x</mi><mi>i</mi><mn>2</mn></msubsup>", r"x_i^2"),
    ("<msup><mi>e</mi><mrow><mo>-</mo><mi>x</mi></mrow></msup>", r"e^{-x}"),
    ("<munderover><mo>∑</mo><mrow><mi>i</mi><mo>=</mo><mn>1</mn></mrow><mi>n</mi></munderover>",
     r"\sum_{i=1}^n"),
    ("<msubsup><mo>∫</mo><mn>0</mn><mn>1</mn></msubsup><mi>f</mi>", r"\int_0^1f"),
    ("<munder><mo>lim</mo><mrow><mi>x</mi><mo>→</mo><mn>0</mn></mrow></munder>", r"\lim_{x\to0}"),
    ("<mover><mi>x</mi><mo>^</mo></mover>", r"\hat{x}"),
    ("<mover><mi>v</mi><mo>→</mo></mover>", r"\vec{v}"),
    ("<munder><mrow><mi>a</mi><mi>b</mi></mrow><mo>⏟</mo></munder>", r"\underbrace{ab}"),
    ("<mrow><mo>(</mo><mtable><mtr><mtd><mi>a</mi></mtd><mtd><mi>b</mi></mtd></mtr>"
     "<mtr><mtd><mi>c</mi></mtd><mtd><mi>d</mi></mtd></mtr></mtable><mo>)</mo></mrow>",
     r"\begin{pmatrix}a & b \\ c & d\end{pmatrix}"),
    ("<mfenced open='[' close=']'><mtable><mtr><mtd><mn>1</mn></mtd></mtr><mtr><mtd><mn>2</mn></mtd></mtr>"
     "</mtable></mfenced>", r"\begin{bmatrix}1 \\ 2\end{bmatrix}"),
    ("<mrow><mo>|</mo><mtable><mtr><mtd><mi>a</mi></mtd><mtd><mi>b</mi></mtd></mtr></mtable><mo>|</mo></mrow>",
     r"\begin{vmatrix}a & b\end{vmatrix}"),
    ("<mi>f</mi><mo>=</mo><mrow><mo>{</mo><mtable><mtr><mtd><mn>1</mn></mtd><mtd><mtext>if </mtext><mi>x</mi>"
     "</mtd></mtr><mtr><mtd><mn>0</mn></mtd><mtd><mtext>else</mtext></mtd></mtr></mtable></mrow>",
     r"f=\begin{cases}1 & \text{if }x \\ 0 & \text{else}\end{cases}"),
    ("<mfenced><mi>x</mi><mi>y</mi></mfenced>", r"\left( x , y \right)"),
    ("<mrow><mo>(</mo><mfrac linethickness='0'><mi>n</mi><mi>k</mi></mfrac><mo>)</mo></mrow>", r"\binom{n}{k}"),
    ("<menclose notation='box'><mi>x</mi></menclose>", r"\boxed{x}"),
    ("<mi mathvariant='bold'>v</mi><mo>∈</mo><mi mathvariant='double-struck'>R</mi>", r"\mathbf{v}\in\mathbb{R}"),
    ("<mi>𝐱</mi><mo>≤</mo><mi>α</mi>", r"\mathbf{x}\leq\alpha"),
    ("<mi>sin</mi><mi>x</mi>", r"\sin x"),
    ("<mtext>a_b {c}</mtext>", r"\text{a\_b \{c\}}"),
    ("<mi>a</mi><mspace width='1em'/><mi>b</mi>", r"a\quad b"),
    ("<mtable><mlabeledtr><mtd><mtext>(1)</mtext></mtd><mtd><mi>a</mi><mo>=</mo><mi>b</mi></mtd></mlabeledtr>"
     "</mtable>", "a=b"),
])
def test_conversions(mml: str, tex: str) -> None:
    assert mathml_to_latex(M.format(mml)) == tex


def test_annotation_and_alttext_win() -> None:
    mml = M.format('<semantics><mi>x</mi><annotation encoding="application/x-tex">x^{2}</annotation></semantics>')
    assert mathml_to_latex(mml) == "x^{2}"
    root = lxml.html.fromstring('<p><math><semantics><mi>x</mi><annotation encoding="TeX">\\alpha</annotation>'
                                "</semantics></math></p>")
    assert tex_annotation(root.find(".//math")) == r"\alpha"


def test_broken_markup_does_not_raise() -> None:
    assert mathml_to_latex("<math><mfrac><mi>a</mi></math>") in ("a", "")
    assert mathml_to_latex("") == ""


def test_mathjax_chtml_without_assistive_mml() -> None:
    html = (WEB / "defuddle_math/fixtures/math--mathjax-chtml-no-assistive.html").read_text(encoding="utf-8")
    root = lxml.html.fromstring(html)
    got = [mathml_to_latex(mjx_to_mathml(c)) for c in root.iter("mjx-container") if mjx_to_mathml(c) is not None]
    assert got[0] == r"z=\frac{1}{n}\sum_{i=1}^nx_i"
    assert got[1] == r"\sigma_{\mathrm{group}}=\frac{\sigma}{\sqrt{n}}"
    assert r"N(s,\sigma_i^2)" in got


@pytest.mark.parametrize("page", ["mj3_svg_noassist-1", "mj3_chtml_noassist-1"])
def test_renderer_output_rebuilt(page: str) -> None:
    """MathJax's own CHTML/SVG output (no assistive MathML) gives back the source's tokens."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("eq", WEB.parents[2] / "bench" / "extract_quality.py")
    eq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eq)
    truth = json.loads((WEB / "built" / f"{page}.json").read_text(encoding="utf-8"))
    root = lxml.html.fromstring((WEB / "built" / f"{page}.html").read_bytes())
    got = []
    for c in root.iter("mjx-container"):
        mm = mjx_to_mathml(c)
        if mm is None:
            mm = svg_to_mathml(c)
        got.append(mathml_to_latex(mm))
    assert len(got) == len(truth["formulas"])
    ok = sum(eq.similar(t["latex"], g) >= eq.MATCH for t, g in zip(truth["formulas"], got))
    assert ok >= 0.9 * len(got)


def test_round_trip_through_latex2mathml() -> None:
    """LaTeX → latex2mathml → ours gives the same rendered tokens for the built pages' formulas."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("eq", WEB.parents[2] / "bench" / "extract_quality.py")
    eq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eq)
    formulas = []
    for jf in sorted((WEB / "built").glob("mathml-*.json")) + sorted((WEB / "built").glob("katex-*.json")):
        formulas += [f["latex"] for f in json.loads(jf.read_text(encoding="utf-8"))["formulas"]]
    assert len(formulas) > 40
    ok = 0
    for tex in formulas:
        ok += eq.similar(tex, mathml_to_latex(latex2mathml.converter.convert(tex))) >= eq.MATCH
    assert ok / len(formulas) >= 0.95


def test_real_pages_mathml_without_annotation() -> None:
    """Wikipedia's and KaTeX's MathML with the TeX annotation removed converts back to the same
    rendered tokens as the annotation (the annotation is the answer key)."""
    import importlib.util
    import re

    spec = importlib.util.spec_from_file_location("eq", WEB.parents[2] / "bench" / "extract_quality.py")
    eq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eq)
    pages = [WEB / "wikipedia/en.wikipedia.org.tsne.html", WEB / "defuddle_math/fixtures/math--katex.html",
             WEB / "defuddle_math/fixtures/math--katex-centraliser.html"]
    n = ok = 0
    for page in pages:
        root = lxml.html.fromstring(page.read_text(encoding="utf-8"))
        for m in root.xpath("//math[.//annotation[@encoding='application/x-tex']]"):
            ann = m.xpath(".//annotation[@encoding='application/x-tex']")[0]
            tex = re.sub(r"^\{\\displaystyle\s*(.*)\}$", r"\1", " ".join(ann.text_content().split()))
            ann.getparent().remove(ann)
            m.attrib.pop("alttext", None)
            n += 1
            ok += eq.similar(tex, mathml_to_latex(m)) >= eq.MATCH
    assert n >= 60
    assert ok / n >= 0.97


def test_katex_lvert_is_a_bar_and_mid_is_mid() -> None:
    assert mathml_to_latex(M.format('<mo stretchy="false">∣</mo><mi>x</mi><mo stretchy="false">∣</mo>')) == "|x|"
    assert mathml_to_latex(M.format("<mi>a</mi><mo>∣</mo><mi>b</mi>")) == r"a\mid b"
