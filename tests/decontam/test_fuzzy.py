"""The near-duplicate tier: masked tokens, vectorized MinHash, LSH bands, LCS confirmation, real items."""

from __future__ import annotations

import gzip
import json
import pickle

import numpy as np
import pyarrow as pa
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH
from hypothesis import given, settings
from hypothesis import strategies as st
from rapidfuzz.distance import LCSseq

import decontam.fuzzy as fz
from corpus.errors import ConfigError
from decontam.benchmarks import load_bundled
from tests.conftest import SHARED_DATA


@pytest.fixture(scope="module")
def index() -> fz.FuzzyIndex:
    return fz.FuzzyIndex.build(fz.items_from_benchmarks(
        [load_bundled("gsm8k"), load_bundled("math"), load_bundled("cmath")]))


def question(bench: str, item_id: str) -> str:
    return next(it.question for it in load_bundled(bench).items if it.item_id == item_id)


def web_page(i: int) -> str:
    with gzip.open(SHARED_DATA / "corpus_samples" / "en_web_pages.jsonl.gz", "rt", encoding="utf-8") as fh:
        for n, line in enumerate(fh):
            if n == i:
                return json.loads(line)["text"]
    raise IndexError(i)


# ----------------------------------------------------------------------------- tokens
@pytest.mark.parametrize(("tok", "masked"), [
    ("12", "#"), ("x2", "x#"), ("2x3y", "#x#y"), ("frac", "frac"), ("１２", "#"), ("a", "a"), ("", ""),
])
def test_mask_token(tok: str, masked: str) -> None:
    assert fz.mask_token(tok) == masked


@given(st.text(alphabet="ab1234567890xy中", max_size=20))
def test_mask_token_properties(tok: str) -> None:
    m = fz.mask_token(tok)
    assert not any(c.isdigit() for c in m)
    assert fz.mask_token(m) == m
    assert m.replace("#", "") == "".join(c for c in tok if not c.isdigit())


def test_token_batch_masks_numbers_and_drops_figure_code() -> None:
    tb = fz.fuzzy_token_batch([
        "Janet has 16 eggs, sells 9.",
        "Find $x$. [asy]draw((0,0)--(1,1));[/asy] Then x^2 = 4",
        "",
        None,
        "小明有３个苹果",
    ])
    assert tb.tokens(0) == ["janet", "has", "#", "eggs", "sells", "#"]
    assert tb.tokens(1) == ["find", "x", "then", "x", "#", "#"]
    assert tb.tokens(2) == [] and tb.tokens(3) == []
    assert tb.tokens(4) == ["小", "明", "有", "#", "个", "苹", "果"]
    # equal masked tokens, equal hashes
    assert tb.hashes[tb.offsets[0] + 2] == tb.hashes[tb.offsets[0] + 5] == tb.hashes[tb.offsets[4] + 3]


# ----------------------------------------------------------------------------- shingles and MinHash
def test_shingles_are_ordered_and_stay_inside_segments() -> None:
    h = np.array([11, 22, 33, 22, 11], np.uint64)
    sh, off = fz.shingle_hashes(h, np.array([0, 3, 5], np.int64), 2)
    assert off.tolist() == [0, 2, 3]
    # (11,22), (22,33) | (22,11): reversed order, different hash
    assert len(set(sh.tolist())) == 3
    alone, _ = fz.shingle_hashes(h[3:], np.array([0, 2], np.int64), 2)
    assert sh[2] == alone[0]
    short, off2 = fz.shingle_hashes(np.array([7], np.uint64), np.array([0, 1, 1], np.int64), 3)
    assert off2.tolist() == [0, 1, 1] and len(short) == 1  # a 1-token text still has a shingle


segments_strategy = st.lists(st.lists(st.integers(0, 2**32 - 1), max_size=40), min_size=1, max_size=12)


@settings(max_examples=40, deadline=None)
@given(segments_strategy, st.integers(1, 9999))
def test_signatures_equal_datasketch(segments: list[list[int]], seed: int) -> None:
    perm = fz.permutations(32, seed)
    values = np.array([v for seg in segments for v in seg], np.uint32)
    off = np.zeros(len(segments) + 1, np.int64)
    np.cumsum([len(s) for s in segments], out=off[1:])
    ours = fz.minhash_signatures(values, off, perm)
    fast = fz.minhash_signatures_fast(values, off, perm)
    assert (ours == fast).all()
    for i, seg in enumerate(segments):
        m = MinHash(num_perm=32, seed=seed, scheme="affine32", hashfunc=lambda x: x)
        m.update_batch(seg)
        assert ours[i].tolist() == m.hashvalues.tolist()


def test_signatures_across_chunk_boundaries(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**32, 1000, dtype=np.uint64).astype(np.uint32)
    off = np.array([0, 5, 5, 300, 301, 999, 1000], np.int64)
    perm = fz.permutations(16, 3)
    whole = fz.minhash_signatures(values, off, perm)
    monkeypatch.setattr(fz, "_CHUNK_ROWS", 7)
    assert (fz.minhash_signatures(values, off, perm) == whole).all()
    assert (whole[1] == np.iinfo(np.uint32).max).all()  # an empty segment keeps the empty signature


def test_band_tables_equal_datasketch_query() -> None:
    rng = np.random.default_rng(1)
    items = rng.integers(0, 50, (300, 64), dtype=np.uint64).astype(np.uint32)
    lsh = MinHashLSH(threshold=0.4, num_perm=64)
    for i, sig in enumerate(items):
        lsh.insert(i, LeanMinHash(seed=1, hashvalues=sig, scheme="affine32"))
    # queries: copies of items with a few values changed, and random rows
    queries = items[:100].copy()
    queries[:, :20] = rng.integers(0, 50, (100, 20), dtype=np.uint64).astype(np.uint32)
    queries = np.vstack([queries, rng.integers(0, 50, (50, 64), dtype=np.uint64).astype(np.uint32)])
    bands = fz.BandTables.build(items, lsh.hashranges)
    rows, keys = bands.query(queries)
    ours = set(zip(rows.tolist(), keys.tolist()))
    ref = {(r, k) for r in range(len(queries))
           for k in lsh.query(LeanMinHash(seed=1, hashvalues=queries[r], scheme="affine32"))}
    assert ours == ref
    assert ref == set(fz.lsh_query_many_reference(lsh, queries))
    assert len(ref) >= 100


@given(st.lists(st.integers(0, 5000), max_size=400), st.sampled_from([(8,), (8, 16), (32, 64, 128)]),
       st.sampled_from([0.25, 0.5, 1.0]))
def test_window_segments_cover_every_text(lengths: list[int], scales: tuple[int, ...], stride: float) -> None:
    doc, start, length = fz.window_segments(np.array(lengths, np.int64), scales, stride)
    L = np.array(lengths, np.int64)
    assert set(doc.tolist()) == set(range(len(lengths)))
    assert (start >= 0).all() and (start + length <= L[doc]).all()
    for i, n in enumerate(lengths):
        mine = sorted(zip(start[doc == i].tolist(), length[doc == i].tolist()))
        if n <= int(np.ceil(1.25 * min(scales))):
            assert mine == [(0, n)]
        else:
            # windows of the smallest size cover every token
            w = min(scales)
            covered = np.zeros(n, bool)
            for s, ln in mine:
                if ln == w:
                    covered[s:s + ln] = True
            assert covered.all()


# ----------------------------------------------------------------------------- LCS confirmation
@settings(max_examples=80, deadline=None)
@given(st.lists(st.sampled_from("abcde#"), min_size=1, max_size=30),
       st.lists(st.sampled_from("abcdef#"), max_size=80), st.integers(0, 80))
def test_best_window_ratio_properties(item: list[str], doc: list[str], at: int) -> None:
    r, s, e = fz.best_window_ratio(item, doc)
    assert 0.0 <= r <= 1.0 and 0 <= s <= e <= len(doc)
    assert e - s <= int(np.ceil(len(item) * 1.1))
    # the window never beats the whole document, and the reported window gives the ratio
    assert r <= LCSseq.similarity(item, doc) / len(item) + 1e-12
    if doc:
        assert r == pytest.approx(LCSseq.similarity(item, doc[s:e]) / len(item))
    planted = doc[:at] + item + doc[at:]
    assert fz.best_window_ratio(item, planted)[0] == 1.0


def test_long_text_cannot_reach_the_threshold_with_scattered_words() -> None:
    item = "how many positive divisors does the number # have in total".split()
    # every item word appears in order, but spread through 400 unrelated words
    doc = []
    for w in item:
        doc += ["filler"] * 40 + [w]
    assert LCSseq.similarity(item, doc) == len(item)
    assert fz.best_window_ratio(item, doc)[0] < 0.3


# ----------------------------------------------------------------------------- index on real items
def test_paraphrase_with_other_numbers_is_found(index: fz.FuzzyIndex) -> None:
    q = question("gsm8k", "0")
    para = ("Janet's ducks lay 20 eggs per day. She eats four for breakfast every morning and bakes muffins for "
            "her friends every day with five. She sells the rest at the farmers' market daily for $3 per fresh "
            "duck egg. How much in dollars does she make every day at the farmers' market?")
    assert q != para
    (m,) = index.query([para])
    assert (m.benchmark, m.item_id, m.field) == ("gsm8k", "0", "question")
    assert m.lcs_ratio > 0.9
    assert (m.doc_start, m.doc_end) == (0, len(para) - 1)
    assert m.shared > 30 and "# eggs" in m.shared_sample


def test_chinese_item_with_other_numbers_is_found(index: fz.FuzzyIndex) -> None:
    assert question("cmath", "0") == "芳芳买了一本书有99页，看了90页，她还剩多少页没有看？"
    found = index.query(["芳芳买了一本书有120页，看了45页，她还剩多少页没有看？"])
    assert [(m.benchmark, m.item_id, m.lcs_ratio) for m in found] == [("cmath", "0", 1.0)]


def test_paraphrase_inside_a_long_page_and_a_prompt(index: fz.FuzzyIndex) -> None:
    horse = ("A horse 48 feet from the center of a merry-go-round makes 20 revolutions. To travel the same "
             "distance, how many revolutions would a horse 12 feet from the center have to make?")
    page = web_page(2)
    long = page[:1500] + "\n\n" + horse + "\n\n" + page[1500:]
    prompt = ("Solve the following math problem step by step. Put your final answer in \\boxed{}.\n\n" + horse
              + "\n\nRemember to show all of your work and explain every step clearly.")
    for text in (long, prompt):
        found = [m for m in index.query([text]) if m.item_id == "468"]
        assert len(found) == 1 and found[0].benchmark == "math"
        m = found[0]
        assert m.lcs_ratio > 0.9
        # the span is the paraphrase, with at most a few words around it
        assert text.index(horse) - 40 <= m.doc_start <= text.index(horse)
        assert text.index(horse) + len(horse) - 2 <= m.doc_end <= text.index(horse) + len(horse) + 40


def test_clean_records_are_not_flagged(index: fz.FuzzyIndex) -> None:
    gsm_train_0 = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
                   "How many clips did Natalia sell altogether in April and May?")
    clean = [gsm_train_0, web_page(0), web_page(1), "", "Compute $1+1$."]
    assert index.query(clean) == []


def test_same_template_other_problem_is_below_the_threshold(index: fz.FuzzyIndex) -> None:
    # MATH test 1156 asks for the vertical asymptotes of another rational function; this asks
    # for x-intercepts of a cubic: same opening words, a different problem
    doc = "How many distinct $x$-intercepts does the graph of $y = (x-5)(x^2+5x+6)$ have?"
    assert all(m.item_id != "1156" for m in index.query([doc]))
    loose = fz.FuzzyIndex.build(index.items, fz.FuzzyParams(lcs_threshold=0.6))
    assert any(m.item_id == "1156" for m in loose.query([doc]))


def test_exact_copy_has_ratio_one(index: fz.FuzzyIndex) -> None:
    q = question("math", "0")
    assert [(m.item_id, m.lcs_ratio) for m in index.query([q]) if m.item_id == "0"] == [("0", 1.0)]


def test_short_and_formula_only_items_are_skipped_and_listed(index: fz.FuzzyIndex) -> None:
    short = index.skipped_short["math"]
    p = index.params
    for i in short[:40]:
        q = question("math", i)
        assert len(fz.fuzzy_token_batch([q]).tokens(0)) < p.min_item_tokens or fz.prose_words(q) < p.min_item_words
    indexed = {it.item_id for it in index.items if it.benchmark == "math"}
    assert "4600" in short  # Find $\begin{pmatrix} 1 \\ 4 \\ -6 \end{pmatrix} + ...$: one word outside the formula
    assert "468" in indexed
    assert index.describe()["skipped_short_items"]["math"] == len(short)
    assert len(index) + sum(len(v) for v in index.skipped_short.values()) == 1319 + 5000 + 600


@pytest.mark.parametrize(("text", "words"), [
    ("Find $\\begin{pmatrix} 1 \\\\ 4 \\end{pmatrix} + \\begin{pmatrix} 2 \\\\ 3 \\end{pmatrix}.$", 1),
    ("What is the remainder when $301^4$ is divided by 10,000?", 8),
    ("Solve \\[x^2 = 4\\] for $x$. [asy]draw((0,0)--(1,1));[/asy] Show work.", 4),
    ("芳芳买了一本书有99页", 9),
])
def test_prose_words(text: str, words: int) -> None:
    assert fz.prose_words(text) == words


def test_index_bands_answer_like_its_datasketch_lsh(index: fz.FuzzyIndex) -> None:
    texts = [question("gsm8k", str(i)).replace("1", "7") for i in range(40)] + [web_page(3)]
    tb = fz.fuzzy_token_batch(texts)
    sh, off = fz.shingle_hashes(tb.hashes, tb.offsets, index.params.shingle)
    sigs = fz.minhash_signatures(sh, off, fz.permutations(index.params.num_perm, index.params.seed))
    rows, keys = index._bands.query(sigs)
    ref = set(fz.lsh_query_many_reference(index.lsh, sigs))
    assert set(zip(rows.tolist(), keys.tolist())) == ref
    assert len(ref) >= 40


def test_index_pickles_and_gives_the_same_answers(index: fz.FuzzyIndex) -> None:
    texts = [question("gsm8k", "3").replace("3", "5"), question("math", "17")]
    copy = pickle.loads(pickle.dumps(index))
    assert copy.query(texts) == index.query(texts)
    assert len(pickle.dumps(index)) < 20 << 20


def test_arrow_input_equals_list_input(index: fz.FuzzyIndex) -> None:
    texts = [question("gsm8k", "7"), None, question("math", "9")]
    assert index.query(pa.chunked_array([pa.array(texts[:2]), pa.array(texts[2:])])) == index.query(texts)


@pytest.mark.parametrize(("kw", "message"), [
    ({"num_perm": 8}, "fuzzy num_perm must be at least 16, got 8"),
    ({"lsh_threshold": 1.0}, "fuzzy lsh_threshold must be between 0 and 1, got 1.0"),
    ({"min_item_tokens": 1}, "fuzzy min_item_tokens (1) must be at least the shingle size (2)"),
    ({"window_scales": (4,)}, "fuzzy window_scales must be window sizes of at least 8 tokens, got [4]"),
])
def test_params_validation(kw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as exc:
        fz.FuzzyParams(**kw).validate()
    assert str(exc.value) == message
