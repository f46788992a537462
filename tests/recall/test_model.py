"""recall.model: metrics, balancing, and models trained on the real samples (English, Chinese, hold-outs)."""

from __future__ import annotations

import itertools
import json
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recall.model import (LabelledData, RecallModel, TrainConfig, balance_classes, balance_lengths, eval_mask,
                          evaluate, prf, roc_auc, sidecar_path, threshold_for_precision, train)
from tests.recall.conftest import FAST


# ----------------------------------------------------------------------------- metrics
@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 6)), min_size=2, max_size=40))
def test_roc_auc_is_the_pairwise_win_rate(pairs: list[tuple[int, int]]) -> None:
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] / 6 for p in pairs])
    pos, neg = s[y == 1], s[y == 0]
    got = roc_auc(y, s)
    if len(pos) == 0 or len(neg) == 0:
        assert got is None
        return
    wins = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in itertools.product(pos, neg))
    assert got == pytest.approx(wins / (len(pos) * len(neg)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 1), st.integers(0, 9)), min_size=1, max_size=40),
       st.sampled_from([0.5, 0.8, 0.95, 1.0]))
def test_threshold_for_precision_is_the_lowest_that_reaches_it(pairs: list[tuple[int, int]], target: float) -> None:
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] / 9 for p in pairs])
    got = threshold_for_precision(y, s, target)
    ok = [t for t in sorted(set(s.tolist())) if (prf(y, s, t)["precision"] or 0) >= target]
    if not ok or y.sum() == 0:
        assert got is None
        return
    assert got["threshold"] == min(ok)
    assert got["precision"] >= target
    assert got["recall"] == pytest.approx(prf(y, s, min(ok))["recall"])


def test_prf_and_evaluate_by_group() -> None:
    y = np.array([1, 1, 0, 0, 1])
    s = np.array([0.9, 0.4, 0.6, 0.1, 0.7])
    r = prf(y, s, 0.5)
    assert (r["tp"], r["fp"], r["fn"], r["tn"]) == (2, 1, 1, 1)
    assert r["precision"] == pytest.approx(2 / 3) and r["recall"] == pytest.approx(2 / 3)
    ev = evaluate(y, s, 0.9, ["a", "a", "b", "b", "a"])
    assert ev["by_group"]["a"] == {"n": 3, "math": 3, "recall": pytest.approx(2 / 3), "accuracy": pytest.approx(2 / 3)}
    assert ev["by_group"]["b"]["false_positive_rate"] == 0.5


# ----------------------------------------------------------------------------- balancing
def test_balance_lengths_removes_the_length_signal() -> None:
    rng = np.random.default_rng(0)
    pos = rng.lognormal(7, 1, 3000).astype(np.int64) + 1  # long LaTeX sections
    neg = rng.lognormal(4, 0.5, 3000).astype(np.int64) + 1  # short news
    lengths = np.concatenate([pos, neg])
    y = np.concatenate([np.ones(3000, np.int8), np.zeros(3000, np.int8)])
    keep, start = balance_lengths(lengths, y, np.random.default_rng(1))
    assert (keep <= lengths).all() and (start >= 0).all() and (start + keep <= lengths).all()
    before = abs(np.median(pos) - np.median(neg)) / np.median(neg)
    after = abs(np.median(keep[y == 1]) - np.median(keep[y == 0])) / np.median(keep[y == 0])
    assert before > 10 and after < 0.1
    # a length threshold can no longer separate the classes
    assert roc_auc(y, lengths.astype(float)) > 0.99
    assert abs(roc_auc(y, keep.astype(float)) - 0.5) < 0.03


def test_balance_classes_and_eval_split_are_deterministic() -> None:
    y = np.array([1] * 10 + [0] * 30)
    idx = balance_classes(y, np.random.default_rng(3))
    assert (y[idx] == 1).sum() == (y[idx] == 0).sum() == 10
    assert idx.tolist() == balance_classes(y, np.random.default_rng(3)).tolist()
    ids = [f"doc-{i}" for i in range(2000)]
    m = eval_mask(ids, 0.2, 0)
    assert 0.17 < m.mean() < 0.23
    assert eval_mask(ids[::-1], 0.2, 0)[::-1].tolist() == m.tolist()  # by id, not position


# ----------------------------------------------------------------------------- trained models
def _train(tmp: Path, recs: list[dict[str, Any]], name: str, **cfg: Any) -> dict[str, Any]:
    conf = TrainConfig(**{**FAST, "eval_fraction": 0.2, **cfg})
    return train(LabelledData.from_records(recs), str(tmp / f"{name}.bin"), conf)


@pytest.fixture(scope="module")
def en_report(tmp_path_factory: pytest.TempPathFactory, en_records: list[dict]) -> dict[str, Any]:
    return _train(tmp_path_factory.mktemp("en"), en_records, "en", lang="en")


@pytest.fixture(scope="module")
def zh_report(tmp_path_factory: pytest.TempPathFactory, zh_records: list[dict]) -> dict[str, Any]:
    return _train(tmp_path_factory.mktemp("zh"), zh_records, "zh", lang="zh")


def test_english_held_out_f1(en_report: dict[str, Any]) -> None:
    ev = en_report["eval"]
    assert ev["n"] > 2000 and ev["math"] > 800 and ev["non_math"] > 800
    assert ev["f1"] >= 0.98 and ev["roc_auc"] >= 0.99
    # cropped like the training data, so length carries no signal: still separable
    assert en_report["eval_length_matched"]["f1"] >= 0.95


def test_chinese_held_out_f1(zh_report: dict[str, Any]) -> None:
    ev = zh_report["eval"]
    assert ev["n"] > 1000 and ev["math"] > 500 and ev["non_math"] > 500
    assert ev["f1"] >= 0.98 and ev["roc_auc"] >= 0.99
    assert zh_report["eval_length_matched"]["f1"] >= 0.95


def test_report_is_saved_next_to_the_model(tmp_path: Path, small_labelled: Path) -> None:
    from recall.model import train_files

    out = tmp_path / "m.bin"
    rep = train_files([str(small_labelled)], str(out), TrainConfig(lang="en", epoch=10, lr=0.3, **FAST))
    saved = json.loads(sidecar_path(out).read_text())
    assert saved == json.loads(json.dumps(rep))
    assert saved["config"]["dim"] == 64 and saved["fasttext_args"]["wordNgrams"] == 3
    assert saved["data"]["files"][0]["sha256"] and saved["data"]["files"][0]["records"] == 600
    assert saved["data"]["balance"]["used"]["math"] == saved["data"]["balance"]["used"]["non_math"]
    assert set(saved["eval"]) >= {"precision", "recall", "f1", "roc_auc", "at_target_precision"}
    # same data, seed and thread=1: the same model, byte for byte
    out2 = tmp_path / "again.bin"
    rep2 = train_files([str(small_labelled)], str(out2), TrainConfig(lang="en", epoch=10, lr=0.3, **FAST))
    assert rep2["sha256"] == rep["sha256"]
    assert rep2["data"]["training_set_sha256"] == rep["data"]["training_set_sha256"]


def test_recall_model_is_lazy_and_pickles_as_a_path(small_model: Path) -> None:
    m = RecallModel(small_model)
    assert m._ft is None
    scores = m.score(["Let $x^2 = 4$. Then $x = \\pm 2$ by \\sqrt.", "The match ended 2-1 after extra time."])
    assert scores.dtype == np.float64 and 0 <= scores.min() and scores.max() <= 1
    assert scores[0] > scores[1]
    clone = pickle.loads(pickle.dumps(m))
    assert clone._ft is None and clone.score(["x"]).shape == (1,)
    assert m.tag == f"small.bin@{json.loads(sidecar_path(small_model).read_text())['sha256'][:12]}"


# ----------------------------------------------------------------------------- source hold-out
HOLDOUT = [  # (language, left-out source, minimum share of its documents classified right)
    ("en", "aqua", 0.8),  # multiple-choice word problems with rationales: the hardest unseen genre
    ("en", "stacks_project", 0.9),  # research-level LaTeX book
    ("en", "wikitext2", 0.9),  # encyclopedia articles (negatives)
    ("zh", "ape210k", 0.9),  # primary-school word problems
    ("zh", "thucnews", 0.9),  # news (negatives)
]


@pytest.mark.parametrize("lang,left_out,minimum", HOLDOUT)
def test_source_hold_out(tmp_path: Path, en_records: list[dict], zh_records: list[dict], lang: str,
                         left_out: str, minimum: float) -> None:
    recs = en_records if lang == "en" else zh_records
    train_recs = [r for r in recs if r["source"] != left_out]
    test_recs = [r for r in recs if r["source"] == left_out]
    assert len(test_recs) > 50
    label = test_recs[0]["label"]
    _train(tmp_path, train_recs, "holdout", lang=lang, eval_fraction=0.0, max_per_class=3000)
    scores = RecallModel(tmp_path / "holdout.bin").score([r["text"] for r in test_recs])
    right = (scores >= 0.5) if label == "math" else (scores < 0.5)
    assert right.mean() >= minimum, f"{left_out}: {right.mean():.3f} of {len(test_recs)} right"
