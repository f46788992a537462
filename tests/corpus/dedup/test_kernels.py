"""Dedup's numba kernels against their references: xxhash, textnorm, datatrove and datasketch."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import xxhash
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.dedup import kernels, text
from corpus.textnorm import normalize_text, tokenize

# math-page-like text: ASCII, LaTeX, full-width forms, CJK, accents, combining marks, Hangul
_alphabet = st.sampled_from(
    list("abcxyzABCXYZ0123456789 \n\t.,;:!?()[]{}$\\^_~+-=*/<>|'\"")
    + list("０１２３４５６７８９ＡＢＣａｂｃ，。！？：；（）　")
    + list("小明有个苹果一共几求的值是数学")
    + list("éÉüßπΣσαΩ½²ﬁ—’…×÷∫√ȺİKǅℝℕ₁\xa0가각ᄀ\u1161\u11a8\u0301\u0307") + ["𝓝", "𝔽"]
    + ["\\left", "\\right", "\\dfrac", "\\tfrac", "\\frac", "\\quad", "\\qquad", "\\displaystyle", "\\bigl",
       "\\big", "\\Left", "\\DFRAC", "\\leftarrow", "\\rightarrow", "\\,", "\\;", "\\!", "\\(", "\\)", "\\[", "\\]",
       "\\lefté", "\\leftℝ", "＼left", "\\ｌeft"])
mathy = st.lists(_alphabet, max_size=60).map("".join)
any_text = st.one_of(mathy, st.text(max_size=60), st.text(alphabet=st.characters(max_codepoint=0x3100), max_size=30))


@given(st.binary(max_size=300), st.integers(0, 2**64 - 1))
@settings(max_examples=300, deadline=None)
def test_xxh64_kernel_equals_xxhash(data: bytes, seed: int) -> None:
    arr = np.frombuffer(data, dtype=np.uint8) if data else np.zeros(0, np.uint8)
    assert kernels._xxh64(arr, 0, len(data), np.uint64(seed)) == xxhash.xxh64_intdigest(data, seed)


@given(st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=12), st.integers(0, 2**64 - 1))
@settings(max_examples=200, deadline=None)
def test_shingle_hash_is_xxh64_of_the_token_hashes(lanes: list[int], seed: int) -> None:
    arr = np.array(lanes, dtype=np.uint64)
    expected = xxhash.xxh64_intdigest(arr.astype("<u8").tobytes(), seed)
    assert kernels._xxh64_lanes(arr, 0, len(arr), np.uint64(seed)) == expected


@given(st.lists(any_text, max_size=12))
@settings(max_examples=500, deadline=None)
def test_batch_normalization_equals_textnorm(texts: list[str]) -> None:
    arr = pa.array(texts, pa.string())
    assert text.normalize_batch(arr).to_pylist() == [normalize_text(t) for t in texts]
    assert text.tokenize_batch(arr).to_pylist() == [tokenize(t) for t in texts]
    assert text.normalize_batch(arr, "light").to_pylist() == [text.light_normalize(t) for t in texts]


def test_every_bmp_character_in_context_normalizes_like_textnorm() -> None:
    # each character between ASCII letters, after a LaTeX command, before a combining mark,
    # and next to CJK: the table-driven kernel must agree with normalize_text everywhere
    chars = [chr(c) for c in range(0x80, 0x10000) if not 0xD800 <= c <= 0xDFFF]
    texts = []
    for i in range(0, len(chars), 8):
        block = "".join(chars[i:i + 8])
        texts.append("A" + block + " x\\left" + chars[(i * 13) % len(chars)] + "Z\\dfrac" + block[:2] + "1")
        texts.append("Σ" + block[::-1] + "\u0301" + "小" + block + "Σ ")
    arr = pa.array(texts)
    assert text.normalize_batch(arr).to_pylist() == [normalize_text(t) for t in texts]
    assert text.tokenize_batch(arr).to_pylist() == [tokenize(t) for t in texts]
    spaced = pa.array([t.replace("Z", "\u2028 \x1c\t") for t in texts])
    assert text.normalize_batch(spaced, "light").to_pylist() == [text.light_normalize(t) for t in spaced.to_pylist()]


def test_batch_tokenize_on_real_sample_docs(shared_data) -> None:
    from corpus.shards import iter_batches

    for name in ("zh_math_positive.jsonl.gz", "en_web_pages.jsonl.gz", "math_positive.jsonl.gz"):
        batch = next(iter_batches(str(shared_data / "corpus_samples" / name), batch_rows=300))
        texts = batch.column("text")
        assert text.tokenize_batch(texts).to_pylist() == [tokenize(t) for t in texts.to_pylist()]


def test_sliced_and_chunked_arrays_are_read_at_their_offset() -> None:
    arr = pa.array(["one two", "Three FOUR", "five"])
    assert text.tokenize_batch(arr.slice(1, 2)).to_pylist() == [["three", "four"], ["five"]]
    chunked = pa.chunked_array([arr.slice(0, 1), arr.slice(2, 1)])
    assert text.normalize_batch(chunked).to_pylist() == ["one two", "five"]


def test_shingles_short_and_empty_documents() -> None:
    tok = text.tokenize_batch(pa.array(["a b c d e f g", "a b", "", "  ,, "]))
    th = text.token_hashes(tok)
    sh, off = text.shingle_hashes(tok, 5)
    assert off.tolist() == [0, 3, 4, 4, 4]  # 7 tokens -> 3 five-grams; 2 tokens -> 1 shingle; none -> none
    seed = kernels.HASH_SEED
    assert th[0] == xxhash.xxh64_intdigest(b"a", seed)
    assert sh[1] == xxhash.xxh64_intdigest(th[1:6].astype("<u8").tobytes(), seed)
    assert sh[3] == xxhash.xxh64_intdigest(th[7:9].astype("<u8").tobytes(), seed)


def test_signatures_equal_datatrove_get_signature() -> None:
    from datatrove.pipeline.dedup.minhash import MinhashConfig, MinhashDedupSignature

    cfg = MinhashConfig(n_grams=5, num_buckets=9, hashes_per_bucket=12, seed=7)
    step = MinhashDedupSignature(output_folder="/tmp/unused-dedup-test", config=cfg)
    a, b = text.permutations(108, 7)
    assert (a == step.parameters[0][0]).all() and (b == step.parameters[1][0]).all()
    texts = ["The quick brown fox jumps over the lazy dog near 12 trees.", "小明有3个苹果，又买了5个，一共有几个？",
             "short", "Let $x^2 = 4$. Then $x = \\pm 2$ and so on for all x in the set."]
    tok = text.tokenize_batch(pa.array(texts))
    sh, off = text.shingle_hashes(tok, 5)
    sig, ok = text.minhash_signatures(pa.array(texts), 5, a, b)
    assert ok.all()
    assert (sig == kernels._minhash_from_shingles(sh, off, a, b)).all()  # fused kernel == step by step
    for d in range(len(texts)):
        ref = step.get_signature(sh[off[d]:off[d + 1]].reshape(-1, 1))
        assert sig[d].tolist() == [h for band in ref for h in band]


def _true_jaccard(x: str, y: str, n: int) -> float:
    def grams(t: str) -> set[tuple[str, ...]]:
        toks = tokenize(t)
        return {tuple(toks[i:i + n]) for i in range(max(1, len(toks) - n + 1))}

    gx, gy = grams(x), grams(y)
    return len(gx & gy) / len(gx | gy)


def test_signature_agreement_estimates_jaccard_like_datasketch(shared_data) -> None:
    from datasketch import MinHash

    from corpus.shards import iter_batches

    docs = next(iter_batches(str(shared_data / "corpus_samples" / "en_web_pages.jsonl.gz"), batch_rows=40))
    texts = [t[:3000] for t in docs.column("text").to_pylist()]
    rng = np.random.default_rng(3)
    pairs = []
    for t in texts:  # each doc against a copy with ~20% of its words replaced
        words = t.split()
        for i in rng.choice(len(words), size=max(1, len(words) // 5), replace=False):
            words[i] = f"w{i}"
        pairs.append((t, " ".join(words)))
    num_perm = 256
    a, b = text.permutations(num_perm, 1)
    ours, theirs, truth = [], [], []
    for x, y in pairs:
        sig, _ = text.minhash_signatures(pa.array([x, y]), 5, a, b)
        ours.append(float((sig[0] == sig[1]).mean()))
        mx, my = MinHash(num_perm=num_perm), MinHash(num_perm=num_perm)
        for m, t in ((mx, x), (my, y)):
            toks = tokenize(t)
            m.update_batch([" ".join(toks[i:i + 5]).encode() for i in range(max(1, len(toks) - 4))])
        theirs.append(mx.jaccard(my))
        truth.append(_true_jaccard(x, y, 5))
    ours_err = np.abs(np.array(ours) - truth).mean()
    theirs_err = np.abs(np.array(theirs) - truth).mean()
    # both are unbiased estimators with standard error ~ sqrt(J(1-J)/256) <= 0.03
    assert ours_err < 0.03 and theirs_err < 0.03
    assert ours_err < 2 * theirs_err + 0.01


def test_exact_hash_modes() -> None:
    texts = pa.array(["What is 3 + 4?", "what  is 3 + 4?\n", "What is 3 × 4?", "What is 3 - 4?", "ｗｈａｔ is 3 + 4?"])
    light = list(zip(*text.exact_hashes(texts, "light")))
    assert light[0] == light[1] == light[4]  # case, whitespace, full-width forms
    assert len({light[0], light[2], light[3]}) == 3  # operators distinguish problems
    textnorm_mode = list(zip(*text.exact_hashes(texts, "text")))
    assert textnorm_mode[0] == textnorm_mode[2] == textnorm_mode[3]  # normalize_text drops operators: why 'light' is the default
    none = list(zip(*text.exact_hashes(texts, "none")))
    assert len(set(none)) == 5
    h1, h2 = text.exact_hashes(pa.array(["abc"]), "none")
    assert h1[0] == xxhash.xxh64_intdigest(b"abc", kernels.HASH_SEED)
    assert h2[0] == xxhash.xxh64_intdigest(b"abc", kernels.HASH_SEED + 1)


def test_unknown_normalize_mode_is_a_config_error() -> None:
    from corpus.errors import ConfigError

    with pytest.raises(ConfigError, match="normalize must be one of light, text, none; got 'nfkc'"):
        text.exact_hashes(pa.array(["a"]), "nfkc")
