"""Tests of corpus.textnorm: the normalization rules shared by decontam and dedup."""

from __future__ import annotations

import doctest

from hypothesis import given, settings
from hypothesis import strategies as st

from corpus import textnorm
from corpus.textnorm import figure_spans, normalize_text, strip_figure_code, token_spans, tokenize

# Text that looks like math pages: ASCII, LaTeX, full-width forms, CJK, accents.
_alphabet = st.sampled_from(
    list("abcxyzABCXYZ0123456789 \n\t.,;:!?()[]{}$\\^_~+-=*/<>|'\"")
    + list("０１２３４５６７８９ＡＢＣａｂｃ，。！？：；（）　")
    + list("小明有个苹果一共几求的值是数学")
    + list("éÉüßπΣσαΩ½²ﬁ—’…×÷∫√")
    + ["\\left", "\\right", "\\dfrac", "\\tfrac", "\\frac", "\\quad", "\\qquad", "\\displaystyle",
       "\\leftarrow", "\\rightarrow", "\\,", "\\;", "\\!", "\\(", "\\)", "\\[", "\\]", "[asy]", "[/asy]"]
)
mathy = st.lists(_alphabet, max_size=60).map("".join)
any_text = st.one_of(mathy, st.text(max_size=60))


@given(any_text)
@settings(max_examples=400, deadline=None)
def test_normalize_is_idempotent(text: str) -> None:
    once = normalize_text(text)
    assert normalize_text(once) == once


@given(any_text)
@settings(max_examples=300, deadline=None)
def test_normalized_text_has_only_words_and_single_spaces(text: str) -> None:
    out = normalize_text(text)
    assert out == out.strip()
    assert "  " not in out
    for ch in out:
        assert ch == " " or ch.isalnum(), ch
        assert not ch.isupper(), ch
        assert ch not in "$\\{}^_,.;:!?()[]~"


@given(st.lists(st.integers(0, 10**12), min_size=1, max_size=10))
def test_digits_are_kept_exactly(numbers: list[int]) -> None:
    text = " + ".join(f"${n}$" for n in numbers)
    assert tokenize(text) == [str(n) for n in numbers]


@given(st.text(alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40))
def test_full_width_equals_half_width(text: str) -> None:
    full = "".join(chr(ord(c) + 0xFEE0) for c in text)  # FF01-FF5E mirror 21-7E
    assert normalize_text(full) == normalize_text(text)


ascii_math = st.lists(st.sampled_from(list("abcxyzABCXYZ0123456789 \n.,;:!?()[]{}$\\^_~+-=") +
                                     ["\\Left", "\\dfrac", "\\quad", "小", "明"]), max_size=60).map("".join)


@given(ascii_math)
@settings(max_examples=300, deadline=None)
def test_case_and_whitespace_do_not_matter(text: str) -> None:
    assert normalize_text(text.upper()) == normalize_text(text.lower())
    assert tokenize("\n  ".join(text.split(" "))) == tokenize(text)
    assert tokenize(" \t".join(text.split("\n"))) == tokenize(text)


@given(mathy)
@settings(max_examples=300, deadline=None)
def test_tokens_are_words_or_single_cjk(text: str) -> None:
    toks = tokenize(text)
    assert " ".join(toks).replace(" ", "") == normalize_text(text).replace(" ", "")
    for t in toks:
        assert t and " " not in t
        if any(textnorm.is_cjk(ord(c)) for c in t):
            assert len(t) == 1


def test_latex_markup_is_dropped_but_meaning_kept() -> None:
    a = r"Find $\displaystyle \left( \dfrac{3}{4} \right)^2 \quad x$."
    b = r"find \(\frac{3}{4}\)^2 x"
    assert tokenize(a) == tokenize(b) == ["find", "frac", "3", "4", "2", "x"]
    # \leftarrow is a different symbol from \left: it must survive
    assert tokenize(r"a \leftarrow b") == ["a", "leftarrow", "b"]
    assert tokenize(r"\tfrac12 \sqrt{2}") == ["frac12", "sqrt", "2"]
    assert tokenize(r"x\,y\;z\!w~v") == ["x", "y", "z", "w", "v"]


def test_cjk_characters_are_single_tokens_and_fullwidth_folds() -> None:
    assert tokenize("小明有３个苹果，又买了５个。") == list("小明有3个苹果又买了5个")
    assert tokenize("求x＋y的值") == ["求", "x", "y", "的", "值"]
    assert tokenize("ｘ＝１２") == ["x", "12"]


def test_numbers_are_not_collapsed() -> None:
    # the failure mode of number->"0" normalizers: different matrices look identical
    m1 = r"\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}"
    m2 = r"\begin{pmatrix} 5 & 6 \\ 7 & 8 \end{pmatrix}"
    assert tokenize(m1) != tokenize(m2)


def test_strip_figure_code_removes_asy_and_tikz() -> None:
    text = ("Square ABCD. [asy]\nsize(100);\ndraw((0,0)--(1,0));\n[/asy] What is x?\n"
            "\\begin{tikzpicture}\\draw (0,0) -- (1,1);\\end{tikzpicture} Done. "
            "\\begin{asy} label(\"$A$\",(0,0)); \\end{asy}end")
    out = strip_figure_code(text)
    assert "draw" not in out and "size" not in out and "label" not in out
    assert tokenize(out) == ["square", "abcd", "what", "is", "x", "done", "end"]
    assert len(figure_spans(text)) == 3


def test_unterminated_figure_block_is_kept() -> None:
    text = "Look: [asy] draw((0,0)--(1,1)); and the page ends"
    assert strip_figure_code(text) == text
    assert figure_spans(text) == []


def test_strip_figure_code_on_a_real_math_item(shared_data) -> None:
    import json

    with open(shared_data / "benchmarks" / "math.jsonl", encoding="utf-8") as fh:
        items = [json.loads(line) for line in fh]
    with_asy = [it for it in items if "[asy]" in it["problem"]]
    assert len(with_asy) > 100
    for it in with_asy[:50]:
        out = strip_figure_code(it["problem"])
        assert "[asy]" not in out and "[/asy]" not in out
        assert len(tokenize(out)) < len(tokenize(it["problem"]))


@given(any_text)
@settings(max_examples=300, deadline=None)
def test_token_spans_match_tokenize_and_are_ordered(text: str) -> None:
    toks, starts, ends = token_spans(text)
    assert toks == tokenize(text)
    assert len(starts) == len(ends) == len(toks)
    for a, b in zip(starts, ends):
        assert 0 <= a < b <= len(text) or (a == b == len(text) == 0)
    assert starts == sorted(starts)


def test_token_spans_point_at_the_original_characters() -> None:
    text = r"Let $\dfrac{１}{2}$ be 小明's share."
    toks, starts, ends = token_spans(text)
    got = [text[a:b] for a, b in zip(starts, ends)]
    assert toks == ["let", "frac", "1", "2", "be", "小", "明", "s", "share"]
    assert got == ["Let", "\\dfrac", "１", "2", "be", "小", "明", "s", "share"]


def test_docstring_examples() -> None:
    result = doctest.testmod(textnorm)
    assert result.attempted >= 3 and result.failed == 0
