"""Dedup's pure functions for the global step: LSH parameters, band matching, union-find, keep rule."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.dedup import clusters, kernels, lsh, minhash
from corpus.errors import ConfigError


# ----------------------------------------------------------------------------- LSH parameters
@pytest.mark.parametrize("num_perm", [16, 64, 112, 128, 256])
def test_bands_rows_match_datasketch_optimal_param(num_perm: int) -> None:
    from datasketch.lsh import _optimal_param

    for t in (0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
        assert lsh.optimal_bands_rows(t, num_perm) == _optimal_param(t, num_perm, 0.5, 0.5), t


def test_areas_match_datasketch_integrals() -> None:
    from datasketch.lsh import _false_negative_probability, _false_positive_probability

    for t, b, r in ((0.8, 9, 12), (0.5, 22, 5), (0.9, 5, 22)):
        assert lsh.false_positive_area(t, b, r) == pytest.approx(_false_positive_probability(t, b, r), abs=1e-7)
        assert lsh.false_negative_area(t, b, r) == pytest.approx(_false_negative_probability(t, b, r), abs=1e-7)


def test_collision_curve_is_monotone_with_the_documented_values() -> None:
    s = np.linspace(0, 1, 101)
    p = lsh.collision_probability(s, 9, 12)
    assert (np.diff(p) >= 0).all() and p[0] == 0 and p[-1] == 1
    assert float(lsh.collision_probability(0.8, 9, 12)) == pytest.approx(1 - (1 - 0.8 ** 12) ** 9)
    table = lsh.curve_table(0.8, 112)
    assert "9 bands x 12 rows" in table and "0.90   0.9496" in table


def test_bad_lsh_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="dedup-minhash: threshold must be between 0 and 1"):
        minhash.MinhashDedupConfig.from_mapping({"threshold": 1.5})
    with pytest.raises(ConfigError, match=r"set both bands and rows \(got bands=4, rows=0\)"):
        minhash.MinhashDedupConfig.from_mapping({"bands": 4})
    with pytest.raises(ConfigError, match="bands x rows = 120 exceeds num_perm = 112"):
        minhash.MinhashDedupConfig.from_mapping({"bands": 10, "rows": 12})
    with pytest.raises(ConfigError, match="unknown key 'treshold'.*did you mean 'threshold'"):
        minhash.MinhashDedupConfig.from_mapping({"treshold": 0.7})
    assert minhash.MinhashDedupConfig.from_mapping({"bands": 20, "rows": 5}).lsh() == (20, 5)
    assert minhash.MinhashDedupConfig().lsh() == (9, 12)


# ----------------------------------------------------------------------------- band matching
def _records(rows: np.ndarray, idx: np.ndarray) -> np.ndarray:
    r = rows.shape[1]
    cols = [rows[:, j] for j in range(r)]
    order = lsh._sort_rows(cols, [idx])
    rec = np.empty(len(idx), dtype=lsh._sig_dtype(r))
    for j in range(r):
        rec[f"h{j}"] = cols[j][order]
    rec["idx"] = idx[order]
    return rec


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 2)), max_size=60),
       st.integers(1, 7))
@settings(max_examples=200, deadline=None)
def test_band_pairs_link_exactly_the_equal_signatures(spec: list[tuple[int, int, int]], window: int) -> None:
    # spec: (task, first hash, second hash) per doc; small values force many ties and windows
    by_task: dict[int, list[tuple[int, int, int]]] = {}
    for t, h0, h1 in spec:
        by_task.setdefault(t, []).append((h0, h1, len(by_task.get(t, []))))
    runs, ranks, docs = [], [], {}
    for t, rows in sorted(by_task.items()):
        arr = np.array([[h0, h1] for h0, h1, _ in rows], dtype=np.uint64)
        idx = np.array([i for _, _, i in rows], dtype=np.uint32)
        rec = _records(arr, idx)
        assert (np.diff(rec["h0"].astype(np.int64)) >= 0).all()
        runs.append(rec)
        ranks.append(t)
        for h0, h1, i in rows:
            docs[(t, i)] = (h0, h1)
    pairs = lsh.band_pairs(runs, ranks, 2, window_rows=window)
    # union of pairs must give exactly the groups of equal signatures, with a chain (n-1 pairs) each
    groups: dict[tuple[int, int], set] = {}
    for d, sig in docs.items():
        groups.setdefault(sig, set()).add(d)
    expected = sorted(len(g) - 1 for g in groups.values() if len(g) > 1)
    assert len(pairs) == sum(expected)
    for a_rank, a_idx, b_rank, b_idx in pairs.tolist():
        assert docs[(a_rank, a_idx)] == docs[(b_rank, b_idx)]
        assert (a_rank, a_idx) != (b_rank, b_idx)


def test_sort_rows_equals_full_lexsort() -> None:
    rng = np.random.default_rng(0)
    cols = [rng.integers(0, 3, 500).astype(np.uint64) for _ in range(3)]
    idx = rng.permutation(500).astype(np.uint32)
    order = lsh._sort_rows(cols, [idx])
    ref = np.lexsort([idx] + cols[::-1])
    assert (order == ref).all()


# ----------------------------------------------------------------------------- union-find
@given(st.integers(1, 30), st.lists(st.tuples(st.integers(0, 29), st.integers(0, 29)), max_size=40))
@settings(max_examples=200, deadline=None)
def test_union_find_labels_components_by_their_smallest_node(n: int, edges: list[tuple[int, int]]) -> None:
    edges = [(a % n, b % n) for a, b in edges]
    a = np.array([e[0] for e in edges], dtype=np.int64)
    b = np.array([e[1] for e in edges], dtype=np.int64)
    label = kernels._union_find(a, b, n)
    # reference: repeated relaxation to the smallest reachable node
    ref = list(range(n))
    changed = True
    while changed:
        changed = False
        for x, y in edges:
            m = min(ref[x], ref[y])
            if ref[x] != m or ref[y] != m:
                ref[x] = ref[y] = m
                changed = True
    assert label.tolist() == ref
    # the order of the edges does not matter
    assert kernels._union_find(a[::-1].copy(), b[::-1].copy(), n).tolist() == ref


# ----------------------------------------------------------------------------- keep rule
def _brute_kept(groups, keys, ids, lengths, scores, rule):
    out = []
    for g in groups:
        members = [i for i in range(len(groups)) if groups[i] == g]

        def rank(i):
            s = scores[i]
            if rule == "score":
                return (s is None, -(s or 0.0), -lengths[i], ids[i], keys[i])
            if rule == "longest":
                return (-lengths[i], ids[i], keys[i])
            return (keys[i],)

        out.append(min(members, key=rank))
    return out


@given(st.lists(st.tuples(st.integers(0, 3), st.sampled_from(["a", "b", "c", "d"]), st.integers(0, 3),
                          st.one_of(st.none(), st.sampled_from([0.1, 0.5, 0.9]))), min_size=1, max_size=25),
       st.sampled_from(clusters.KEEP_RULES))
@settings(max_examples=300, deadline=None)
def test_keep_rule_picks_best_by_score_length_id_then_order(rows, rule: str) -> None:
    groups = np.array([r[0] for r in rows], dtype=np.int64)
    ids = [f"{r[1]}{i % 3}" for i, r in enumerate(rows)]
    lengths = np.array([r[2] for r in rows], dtype=np.int64)
    scores = [r[3] for r in rows]
    keys = np.arange(len(rows), dtype=np.uint64)[::-1].copy()  # input order is not row order
    kept = clusters.choose_kept(groups, keys, pa.array(ids), lengths, pa.array(scores, pa.float64()), rule)
    assert kept.tolist() == _brute_kept(groups.tolist(), keys.tolist(), ids, lengths.tolist(), scores, rule)


def test_keep_rule_prefers_any_score_over_none_and_nan_counts_as_none() -> None:
    batch = pa.record_batch({"id": ["a", "b", "c"], "text": ["x" * 50, "x", "x"],
                             "math_score": pa.array([float("nan"), 0.01, None])})
    scores = clusters._scores(batch, "f")
    assert scores.to_pylist() == [None, 0.01, None]
    kept = clusters.choose_kept(np.zeros(3, np.int64), np.arange(3, dtype=np.uint64), batch.column("id"),
                             np.array([50, 1, 1]), scores, "score")
    assert kept.tolist() == [1, 1, 1]
    assert clusters.choose_kept(np.zeros(3, np.int64), np.arange(3, dtype=np.uint64), batch.column("id"),
                             np.array([50, 1, 1]), scores, "longest").tolist() == [0, 0, 0]


def test_string_math_score_is_a_clear_error() -> None:
    from corpus.errors import InputError

    batch = pa.record_batch({"id": ["a"], "text": ["x"], "math_score": ["high"]})
    with pytest.raises(InputError, match="f.jsonl: column 'math_score' has type string, expected a number"):
        clusters._scores(batch, "f.jsonl")


def test_brute_keep_helper_disagrees_when_rule_is_ignored() -> None:
    # guards the reference itself: the rules must pick differently on this input
    groups, keys, ids = [0, 0], [0, 1], ["b", "a"]
    picks = {r: _brute_kept(groups, keys, ids, [1, 2], [0.9, None], r)[0] for r in clusters.KEEP_RULES}
    assert picks == {"score": 0, "longest": 1, "first": 0}
