"""The numba kernel agrees with its pure-Python reference and with corpus.textnorm.tokenize."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.textnorm import token_spans, tokenize
from decontam import kernel as K

_pieces = st.sampled_from(
    list("abcxyzABCXYZ0123456789 \n\t.,;:!?()[]{}$\\^_~+-=*/<>|'\"")
    + list("０１２３４５６７８９ＡＢＣａｂｃ，。！？：；（）　＼")
    + list("小明有个苹果一共几求的值是数学がカﾞ")
    + list("éÉüßπΣσαΩ½²ﬁ—’…×÷∫√İ\u0301\u0308가각\u1161😀𝑥")
    + ["\\left", "\\right", "\\dfrac", "\\tfrac", "\\frac", "\\quad", "\\qquad", "\\displaystyle",
       "\\leftarrow", "\\Right", "\\ｌｅｆｔ", "\\dfrac12", "\\,", "\\;", "\\!", "\\(", "\\)", "\\[", "\\]", "\\\\left"]
)
mathy = st.lists(_pieces, max_size=80).map("".join)
texts = st.lists(st.one_of(mathy, st.text(max_size=40)), min_size=1, max_size=6)


def _kernel_tokens(rows: list[str]) -> list[list[int]]:
    res = K.scan(pa.array(rows, pa.string()), 13, emit_tokens=True)
    return [[int(h) for h in res.tok_hash[res.tok_row == r]] for r in range(len(rows))]


@given(texts)
@settings(max_examples=300, deadline=None)
def test_kernel_tokens_equal_textnorm_tokenize(rows: list[str]) -> None:
    got = _kernel_tokens(rows)
    want = [K.reference_token_hashes(t) for t in rows]
    assert got == want
    res = K.scan(pa.array(rows, pa.string()), 13)
    assert list(res.ntok) == [len(tokenize(t)) for t in rows]


@given(texts, st.integers(1, 13))
@settings(max_examples=200, deadline=None)
def test_kernel_gram_keys_equal_reference(rows: list[str], n: int) -> None:
    res = K.scan(pa.array(rows, pa.string()), n, emit_grams=True)
    for r, t in enumerate(rows):
        want = K.reference_gram_keys(K.reference_token_hashes(t), n)
        sel = res.gram_row == r
        assert [int(k) for k in res.gram_key[sel]] == want
        assert list(res.gram_pos[sel]) == list(range(len(want)))


@given(texts, st.integers(2, 13), st.integers(2, 8), st.randoms(use_true_random=False))
@settings(max_examples=200, deadline=None)
def test_kernel_hits_equal_reference_scan(rows: list[str], n: int, pn: int, rnd) -> None:
    all_g = [k for t in rows for k in K.reference_gram_keys(K.reference_token_hashes(t), n)]
    all_p = [k for t in rows for k in K.reference_gram_keys(K.reference_token_hashes(t), pn)]
    # index half of the grams present plus unrelated keys, so both hits and misses occur
    keys = set(rnd.sample(all_g, len(all_g) // 2)) | {rnd.getrandbits(64) for _ in range(50)}
    pkeys = set(rnd.sample(all_p, len(all_p) // 3))
    gs = K.KeySet.build(np.array(sorted(keys), dtype=np.uint64))
    ps = K.KeySet.build(np.array(sorted(pkeys), dtype=np.uint64))
    res = K.scan(pa.array(rows, pa.string()), n, gs, pn, ps)
    got = []
    for row, pos, kind, idx in zip(res.hit_row, res.hit_pos, res.hit_kind, res.hit_idx):
        key = int((gs.keys if kind == 0 else ps.keys)[idx])
        got.append((int(row), int(pos), int(kind), key))
    assert got == K.reference_scan(rows, n, keys, pn, pkeys)


def test_kernel_on_real_math_and_chinese_text(shared_data) -> None:
    import gzip
    import json

    rows: list[str] = []
    for name in ("math_positive.jsonl.gz", "zh_math_positive.jsonl.gz", "en_web_pages.jsonl.gz"):
        with gzip.open(shared_data / "corpus_samples" / name, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= 60:
                    break
                rows.append(json.loads(line)["text"])
    assert _kernel_tokens(rows) == [K.reference_token_hashes(t) for t in rows]


def test_token_char_offsets_match_token_spans() -> None:
    rows = ["Let $\\dfrac{１}{2}$ be 小明's share.", "x \\left( y \\right) z", "café, naïve; 数学"]
    res = K.scan(pa.array(rows), 13, emit_tokens=True)
    assert len(res.fallback) == 0
    for r, t in enumerate(rows):
        _toks, starts, ends = token_spans(t)
        sel = res.tok_row == r
        assert list(res.tok_start[sel]) == starts
        assert list(res.tok_end[sel]) == ends


def test_rows_needing_python_normalization_are_few_and_named() -> None:
    rows = ["plain ascii", "café ﬁne ½", "e\u0301 composed", "ΟΔΟΣ", "数学"]
    assert K.fallback_rows(rows) == [1, 2, 3]
    res = K.scan(pa.array(rows), 13, emit_tokens=True)
    assert list(res.fallback) == [1, 2, 3]
    # pyarrow's NFKC repairs the ligature/fraction and the combining accent; only the
    # context-dependent lowercasing of a final capital sigma is left to Python
    assert res.python_rows == 1
    assert [int(x) for x in res.tok_hash[res.tok_row == 3]] == K.reference_token_hashes("ΟΔΟΣ")


def test_sliced_and_null_arrays() -> None:
    arr = pa.array(["zero", None, "one two three", "four five"])
    res = K.scan(arr.slice(1, 3), 1, emit_tokens=True)
    assert list(res.ntok) == [0, 3, 2]
    assert list(res.tok_row) == [1, 1, 1, 2, 2]


def test_bitmap_prefilter_has_no_false_negatives() -> None:
    rng = np.random.default_rng(0)
    keys = np.unique(rng.integers(0, 2**63, 5000, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1))
    bm, shift = K.make_bitmap(keys)
    slots = keys >> np.uint64(shift)
    assert all((bm[s >> np.uint64(6)] >> (s & np.uint64(63))) & np.uint64(1) for s in slots)


@given(st.lists(st.sampled_from(["a", "bc", "中", "文", " ", "x中", "1", ",", "\\left", "ﬁ"]), min_size=300, max_size=3000))
@settings(max_examples=30, deadline=None)
def test_long_rows_with_dense_hits_agree_with_reference(parts: list[str]) -> None:
    # many tokens and many hits per row: exercises the probe buffers and hit-array growth
    text = "".join(parts)
    rows = [text, text[::-1], ""]
    hs = [K.reference_token_hashes(t) for t in rows]
    keys = {k for h in hs for k in K.reference_gram_keys(h, 5)}
    pkeys = {k for h in hs for k in K.reference_gram_keys(h, 3)}
    gs = K.KeySet.build(np.array(sorted(keys), dtype=np.uint64))
    ps = K.KeySet.build(np.array(sorted(pkeys), dtype=np.uint64))
    res = K.scan(pa.array(rows), 5, gs, 3, ps, emit_tokens=True)
    got = [(int(r), int(p), int(k), int((gs.keys if k == 0 else ps.keys)[i]))
           for r, p, k, i in zip(res.hit_row, res.hit_pos, res.hit_kind, res.hit_idx)]
    assert got == K.reference_scan(rows, 5, keys, 3, pkeys)
    assert [[int(x) for x in res.tok_hash[res.tok_row == r]] for r in range(3)] == hs


_fig_pieces = st.sampled_from(["[asy]", "[/asy]", "[ASY]", "[Asy]", "\\begin{tikzpicture}", "\\end{tikzpicture}",
                               "\\begin{asy}", "\\end{asy}", "\\begin{TikZpicture}", "draw(1,2);", " x ", "中",
                               "é", "ﬁ", "Σ", "\\left(", "[", "asy]"])


@given(st.lists(st.one_of(_fig_pieces, _pieces), max_size=60).map("".join))
@settings(max_examples=300, deadline=None)
def test_figure_code_is_stripped_like_textnorm(text: str) -> None:
    from corpus.textnorm import figure_spans, strip_figure_code

    res = K.scan(pa.array([text, text]), 13, emit_tokens=True, strip_figures=True)
    want = K.reference_token_hashes(strip_figure_code(text))
    assert [int(h) for h in res.tok_hash[res.tok_row == 1]] == want
    spans = figure_spans(text)
    assert res.figures.get(0, []) == spans and res.figures.get(1, []) == spans


def test_rows_mixing_nfkc_fixable_and_newer_unicode_characters() -> None:
    # a combining mark or compatibility form (fixable with pyarrow's NFKC) followed by a code
    # point that Python's Unicode tables do not know yet but pyarrow's do: such rows must go
    # to Python, or pyarrow would normalize the newer character differently
    rows = ["\u0301\U0001e05c", "\ufb14\U0001ccda", "\ufcdd\u209d", "x\u0301 y \ua7f1 z", "\u2dfd\U0001ccd8"]
    res = K.scan(pa.array(rows), 13, emit_tokens=True)
    for r, t in enumerate(rows):
        assert [int(h) for h in res.tok_hash[res.tok_row == r]] == K.reference_token_hashes(t), t
    assert res.python_rows == len(rows)


@given(st.lists(st.one_of(_pieces, st.characters(min_codepoint=0x80, max_codepoint=0x3134F,
                                                  blacklist_categories=("Cs",))), max_size=40).map("".join))
@settings(max_examples=400, deadline=None)
def test_kernel_agrees_on_any_unicode(text: str) -> None:
    res = K.scan(pa.array([text]), 13, emit_tokens=True)
    assert [int(h) for h in res.tok_hash] == K.reference_token_hashes(text)
