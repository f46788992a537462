"""recall.features: the preprocessing rules, and the numba kernel against the plain-Python reference."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from recall.features import crop_lines, preprocess, preprocess_one, preprocess_reference, token_counts

# pieces that exercise every rule, mixed with arbitrary text by hypothesis
PIECES = ["http://", "https://x.org/a?b=1", "HTTP://A.B", "ftp://f", "www.", "www.e.com", "a.b+c@d-e.fg", "@",
          "<br>", "</DIV>", "<b class='x'>", "<a\thref=y>", "<br />", "<b =", "<span\n>", "<p/>", "<h1 >", "<bx>",
          "a <b and c> d", "&amp;",
          "&#123;", "&#x1F;", "&AMP", "@-@", "@,@", "\\frac", "\\\\", "\\{", "\\", "\\alpha2", "$x^2_1$",
          "（３）", "ＡＢ", "小明有3个苹果", "，。", "Ωmega", "Straße", "ǅ", "İ", "\u212a", "\u3000", "\xa0", "😀",
          "∑≤∫", "\n\t\r", "\x00", " "]
text_st = st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=6)), max_size=12).map("".join)


@settings(max_examples=400, deadline=None)
@given(st.lists(text_st, min_size=1, max_size=5), st.sampled_from(["char", "none"]))
def test_kernel_matches_reference(texts: list[str], segmenter: str) -> None:
    got = preprocess(texts, segmenter).to_pylist()
    assert got == [preprocess_reference(t, segmenter) for t in texts]


@settings(max_examples=100, deadline=None)
@given(text_st)
def test_output_is_one_normalised_line(text: str) -> None:
    line = preprocess_one(text)
    assert "\n" not in line and "\r" not in line and "\t" not in line
    assert line == line.strip() and "  " not in line
    assert preprocess_one(line) == line  # idempotent: output never re-triggers a rule


def test_latex_command_names_stay_tokens() -> None:
    assert preprocess_one(r"Let $\frac{A}{2} = \Alpha_1$, \\ \{x\}") == \
        r"let $ \frac { a } { 2 } = \alpha _ 1 $ , \\ \{ x \}"


def test_noise_is_stripped() -> None:
    text = ("See https://Example.org/x?y=1 or www.foo.com, mail me at a.b+c@d-e.fg! <DIV class='x'>Hi</div> "
            "&amp; &#39; WikiText 1 @,@ 000 and a <b and c> d")
    # a URL runs to the next space, so the comma after www.foo.com goes with it
    assert preprocess_one(text) == "see or mail me at ! hi wikitext 1 000 and a < b and c > d"


def test_chinese_segmenters() -> None:
    text = "小明有３个苹果，又买了5个。"
    assert preprocess_one(text, "char") == "小 明 有 3 个 苹 果 , 又 买 了 5 个 。"
    assert preprocess_one(text, "none") == "小明有3个苹果 , 又买了5个 。"
    assert preprocess_one(text, "jieba") == "小明 有 3 个 苹果 , 又 买 了 5 个 。"
    assert preprocess_one(text, "jieba") == preprocess_reference(text, "jieba")


def test_lowercase_beyond_ascii() -> None:
    assert preprocess_one("ΑΒΓ Ωmega ÀÉ ДЖ") == "αβγ ωmega àé дж"


def test_arrow_inputs_of_every_shape() -> None:
    big = pa.array(["A b", None, "", "C"], pa.large_string())
    assert preprocess(big).to_pylist() == ["a b", "", "", "c"]
    chunked = pa.chunked_array([["X y"], ["Z"]])
    assert preprocess(chunked).to_pylist() == ["x y", "z"]
    sliced = pa.array(["skip", "Keep Me", "skip"]).slice(1, 1)
    assert preprocess(sliced).to_pylist() == ["keep me"]
    assert preprocess([]).to_pylist() == []


def test_token_counts_and_crop() -> None:
    lines = pa.array(["a b c d", "", "x"])
    assert token_counts(lines).tolist() == [4, 0, 1]
    assert crop_lines(["a b c d", "x y"], np.array([2, 5]), np.array([1, 0])) == ["b c", "x y"]
