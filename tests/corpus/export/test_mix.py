"""Mixing, the seeded shuffle, packing layout and shard cuts (pure functions)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.export import mix


def _corpus(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    names = ["book", "code", "synth", "web"]
    codes = rng.integers(0, 4, n).astype(np.int32)
    lengths = np.maximum(1, rng.lognormal(5.5, 1.2, n)).astype(np.int64)
    hashes = mix.id_hashes([f"doc-{i}" for i in range(n)])
    return codes, lengths, hashes, names


def test_mix_ratios_within_one_percent_on_10k_documents() -> None:
    codes, lengths, hashes, names = _corpus(10_000)
    weights = [2.0, 1.0, 1.5, 0.3]
    docs, copies = mix.mix_entries(codes, lengths, hashes, weights, names, seed=7)
    for c, w in enumerate(weights):
        before = int(lengths[codes == c].sum())
        after = int(lengths[docs[codes[docs] == c].astype(np.int64)].sum())
        assert abs(after / before - w) <= 0.01 * w, (names[c], after / before, w)
    # whole repeats are exact: every book document twice, every code document once
    book = np.flatnonzero(codes == 0)
    counts = np.bincount(docs.astype(np.int64), minlength=codes.size)
    assert (counts[book] == 2).all() and (counts[codes == 1] == 1).all()
    assert set(np.unique(counts[codes == 2])) <= {1, 2} and set(np.unique(counts[codes == 3])) <= {0, 1}
    # the fractional copy carries the next copy number
    assert set(copies[codes[docs] == 2].tolist()) == {0, 1}


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 5000), min_size=1, max_size=300), st.floats(0.0, 1.0), st.integers(0, 2**32))
def test_fraction_sample_lands_within_half_a_document_of_the_target(lens: list[int], frac: float, seed: int) -> None:
    lengths = np.array(lens, dtype=np.int64)
    hashes = mix.id_hashes([str(i) for i in range(lengths.size)])
    docs = np.arange(lengths.size, dtype=np.uint64)
    picked = mix.select_fraction(docs, lengths, hashes, frac, seed, "web")
    got = int(lengths[picked.astype(np.int64)].sum())
    target = frac * int(lengths.sum())
    assert abs(got - target) <= max(lens) / 2 + 1e-6
    assert np.unique(picked).size == picked.size
    again = mix.select_fraction(docs, lengths, hashes, frac, seed, "web")
    assert np.array_equal(picked, again)


def test_shuffle_depends_on_ids_and_seed_not_on_input_order() -> None:
    ids = [f"d{i}" for i in range(500)]
    h = mix.id_hashes(ids)
    docs = np.arange(500, dtype=np.uint64)
    copies = np.zeros(500, dtype=np.uint32)
    order = [ids[int(docs[i])] for i in mix.shuffle_entries(docs, copies, h, seed=3)]
    perm = np.random.default_rng(1).permutation(500)
    ids2 = [ids[i] for i in perm]
    order2 = [ids2[int(i)] for i in mix.shuffle_entries(docs, copies, mix.id_hashes(ids2), seed=3)]
    assert order == order2
    other = [ids[int(docs[i])] for i in mix.shuffle_entries(docs, copies, h, seed=4)]
    assert other != order and sorted(other) == sorted(order)
    assert order != ids  # it does shuffle


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=200), st.integers(2, 128), st.booleans())
def test_layout_places_documents_without_overlap(lens: list[int], seq_len: int, split: bool) -> None:
    lengths = np.array(lens, dtype=np.int64)
    pos, total = mix.layout(lengths, seq_len, packed=True, split=split)
    p = pos.astype(np.int64)
    assert (p[1:] >= p[:-1] + lengths[:-1]).all()  # in order, no overlap
    assert total % seq_len == 0 and total >= int(p[-1] + lengths[-1]) and total - int(p[-1] + lengths[-1]) < seq_len
    if split:
        assert np.array_equal(p, np.cumsum(lengths) - lengths)
    else:
        fits = lengths <= seq_len
        assert ((p[fits] // seq_len) == ((p[fits] + lengths[fits] - 1) // seq_len)).all()
        assert (p[~fits] % seq_len == 0).all()  # longer than a row: starts a fresh row


@settings(max_examples=80, deadline=None)
@given(st.lists(st.integers(0, 400), min_size=1, max_size=100), st.integers(1, 64))
def test_split_rows_cuts_pieces_at_row_ends(lens: list[int], seq_len: int) -> None:
    lengths = np.array(lens, dtype=np.int64)
    starts = np.cumsum(lengths) - lengths
    s, n = mix.split_rows(starts, lengths, seq_len)
    assert int(n.sum()) == int(lengths.sum())
    assert (n > 0).all() and ((s // seq_len) == ((s + n - 1) // seq_len)).all()


def test_cut_shards_never_makes_empty_shards() -> None:
    lengths = np.array([10, 500, 3, 3, 3, 700, 1], dtype=np.int64)
    pos, total = mix.layout(lengths, 16, packed=False, split=True)
    starts = mix.cut_shards(pos, total, shard_tokens=100, seq_len=16, packed=False)
    ends = np.r_[starts[1:], total]
    assert starts[0] == 0 and (ends > starts).all()
    assert set(starts.tolist()) <= set(pos.tolist())  # cuts fall on document starts
    packed = mix.cut_shards(pos, 1280, shard_tokens=100, seq_len=16, packed=True)
    assert packed.tolist() == list(range(0, 1280, 96))


def test_mix64_is_a_bijection_on_a_sample() -> None:
    x = np.arange(100_000, dtype=np.uint64)
    assert np.unique(mix.mix64(x)).size == x.size
