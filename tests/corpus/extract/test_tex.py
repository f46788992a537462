"""Delimiter config, raw TeX in prose, literal dollars and final text assembly (corpus/extract/tex.py)."""

from __future__ import annotations

import re

import lxml.html
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.extract.tex import (
    DEFAULT_DELIMITERS,
    RENDERER_DELIMITERS,
    TexDelimiters,
    escape_dollars,
    finalize_text,
    find_raw_tex,
    page_delimiters,
    sentinel,
    unescape_dollars,
)


def _root(head: str) -> lxml.html.HtmlElement:
    return lxml.html.fromstring(f"<html><head>{head}</head><body><p>x</p></body></html>")


# ---- page_delimiters -------------------------------------------------------------------------
def test_mathjax2_config_is_read() -> None:
    d = page_delimiters(_root("""<script type="text/x-mathjax-config">
      MathJax.Hub.Config({tex2jax: {inlineMath: [['$','$'], ['\\\\(','\\\\)']],
                                    displayMath: [['$$','$$']], processEscapes: true}});</script>"""))
    assert d.declared
    assert d.inline == (("$", "$"), ("\\(", "\\)"))
    assert d.display == (("$$", "$$"),)


def test_mathjax3_config_with_brackets_inside_strings() -> None:
    d = page_delimiters(_root("""<script>window.MathJax = {tex: {inlineMath: [['[math]', '[/math]']],
        displayMath: [["[dmath]", "[/dmath]"]], processEnvironments: false}};</script>"""))
    assert d == TexDelimiters(inline=(("[math]", "[/math]"),), display=(("[dmath]", "[/dmath]"),),
                              environments=False, declared=True)


def test_katex_autorender_delimiters() -> None:
    d = page_delimiters(_root("""<script>renderMathInElement(document.body, {delimiters: [
        {left: "$$", right: "$$", display: true}, {left: "\\\\(", right: "\\\\)", display: false},
        {display: true, left: "\\\\[", right: "\\\\]"}]});</script>"""))
    assert d.declared
    assert d.inline == (("\\(", "\\)"),)
    assert d.display == (("$$", "$$"), ("\\[", "\\]"))


def test_no_config_accepts_dollars() -> None:
    assert page_delimiters(_root('<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>')) \
        == RENDERER_DELIMITERS
    assert page_delimiters(_root("")) == RENDERER_DELIMITERS
    assert not RENDERER_DELIMITERS.declared


def test_inline_only_config_keeps_default_display() -> None:
    d = page_delimiters(_root("<script>MathJax = {tex: {inlineMath: [['$', '$']]}};</script>"))
    assert d.inline == (("$", "$"),)
    assert d.display == DEFAULT_DELIMITERS.display


# ---- find_raw_tex -------------------------------------------------------------------------------
def _found(text: str, d: TexDelimiters = RENDERER_DELIMITERS) -> list[tuple[str, bool]]:
    return [(f, disp) for _, _, f, disp in find_raw_tex(text, d)]


def test_raw_delimiters_and_display_flags() -> None:
    text = r"Inline \(E = mc^2\) and $x_i$, display \[F = ma\] and $$\sum_i a_i$$."
    assert _found(text) == [("E = mc^2", False), ("x_i", False), ("F = ma", True), (r"\sum_i a_i", True)]


def test_environments() -> None:
    text = r"Then \begin{align*} a &= b \\ c &= d \end{align*} holds."
    assert _found(text) == [(r"\begin{align*} a &= b \\ c &= d \end{align*}", True)]
    assert _found(text, TexDelimiters(environments=False)) == []


def test_literal_dollars_are_not_math() -> None:
    for text in ["It costs $5 and a sandwich $10.", "Tickets were $5-$10 each.",
                 "Between $3 and $4 per page.", "Prices: $5, $10, and $20.", "I paid $ 5 and $ 6 dollars."]:
        assert _found(text) == [], text


def test_escaped_dollar_is_not_a_delimiter() -> None:
    assert _found(r"costs \$5 and $x$ here") == [("x", False)]


def test_dollar_math_not_accepted_when_page_declares_otherwise() -> None:
    d = TexDelimiters(inline=(("\\(", "\\)"),), display=(("\\[", "\\]"),), declared=True)
    assert _found("a $x$ b", d) == []


# ---- finalize_text ------------------------------------------------------------------------------
def test_sentinels_become_inline_and_display() -> None:
    text = f"Let {sentinel(0)} be given. Then{sentinel(1)}holds."
    out, counts = finalize_text(text, [("x_i", False), (r"\frac{a}{b}", True)], DEFAULT_DELIMITERS)
    assert out == "Let $x_i$ be given. Then\n$$\\frac{a}{b}$$\nholds."
    assert counts == {}


def test_literal_dollars_escaped_and_formulas_untouched() -> None:
    text = f"The book costs $5 and the pen $10. Here {sentinel(0)} and $y_1$."
    out, counts = finalize_text(text, [(r"a\_b \$ c_d", False)], RENDERER_DELIMITERS)
    assert out == r"The book costs \$5 and the pen \$10. Here $a\_b \$ c_d$ and $y_1$."
    assert counts["tex_raw"] == 1


def test_inline_and_display_never_swapped() -> None:
    out, _ = finalize_text(r"A \(a+b\) then \[c+d\] end", [], RENDERER_DELIMITERS)
    assert out == "A $a+b$ then\n$$c+d$$\nend"


def test_code_is_verbatim() -> None:
    text = "Before $x$.\n\n```\nThis $\\alpha$ and $5 stay\n```\n\nInline `\\begin{pmatrix}` code $5."
    out, _ = finalize_text(text, [], RENDERER_DELIMITERS)
    assert "```\nThis $\\alpha$ and $5 stay\n```" in out
    assert "`\\begin{pmatrix}` code \\$5." in out
    assert out.startswith("Before $x$.")


def test_empty_formula_is_dropped_and_counted() -> None:
    out, counts = finalize_text(f"a {sentinel(0)} b", [("  ", False)], DEFAULT_DELIMITERS)
    assert out == "a  b"
    assert counts["empty"] == 1


def test_display_formula_with_blank_lines_stays_one_block() -> None:
    out, _ = finalize_text(sentinel(0), [("a\n\n\nb", True)], DEFAULT_DELIMITERS)
    assert out == "$$a\nb$$"


# ---- properties ---------------------------------------------------------------------------------
_prose = st.text(alphabet=st.sampled_from(list("abc xyz.,;:$5\n")), max_size=60)
_latex = st.text(alphabet=st.sampled_from(list(r"abx_^{}\+-=() 12")), min_size=1, max_size=20).filter(
    lambda s: s.strip() and "$" not in s)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(_prose, _latex, st.booleans()), max_size=6), _prose)
def test_every_sentinel_appears_once(parts: list[tuple[str, str, bool]], tail: str) -> None:
    text = "".join(p + sentinel(k) for k, (p, _, _) in enumerate(parts)) + tail
    formulas = [(lx, disp) for _, lx, disp in parts]
    out, _ = finalize_text(text, formulas, DEFAULT_DELIMITERS)
    assert "\ue000" not in out and "\ue001" not in out
    for lx, disp in formulas:
        clean = lx.strip() if disp else re.sub(r"\s*\n\s*", " ", lx.strip())
        rendered = f"$${clean}$$" if disp else f"${clean}$"
        assert rendered in out


@settings(max_examples=200, deadline=None)
@given(_prose)
def test_no_unescaped_dollar_outside_formulas(prose: str) -> None:
    out, _ = finalize_text(prose, [], DEFAULT_DELIMITERS)  # default: no $ math at all
    assert not re.search(r"(?<!\\)\$", out)
    assert "".join(unescape_dollars(out).split()) == "".join(prose.split())  # nothing lost


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80).filter(lambda s: "\\$" not in s and not s.endswith("\\")))
def test_escape_round_trip(s: str) -> None:
    esc = escape_dollars(s)
    assert unescape_dollars(esc) == s
    assert not re.search(r"(?<!\\)\$", esc)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(list("ab $\\()[]{}5\n") + ["\\begin{equation}", "\\end{equation}"]),
                max_size=40).map("".join))
def test_raw_tex_spans_are_ordered_and_disjoint(text: str) -> None:
    spans = find_raw_tex(text, RENDERER_DELIMITERS)
    last = 0
    for s, e, latex, _ in spans:
        assert last <= s < e <= len(text)
        assert latex and latex == latex.strip()
        last = e


def test_wordpress_latex_shortcode_and_escaped_prose() -> None:
    out, _ = finalize_text(r"Area is $latex \pi r^2$ and it costs \$3.", [], RENDERER_DELIMITERS)
    assert out == r"Area is $\pi r^2$ and it costs \$3."


def test_shell_variables_on_undeclared_pages_stay_literal() -> None:
    text = "Set $HOME/$USER and run $build here$ but $x$ and $ABCD$ and $f(x)$ are math."
    assert _found(text) == [("x", False), ("ABCD", False), ("f(x)", False)]
    declared = TexDelimiters(inline=(("$", "$"),), declared=True)
    assert ("HOME/", False) in _found(text, declared)
