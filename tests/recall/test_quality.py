"""Quality scoring, fastText kind: a scripted teacher's grades learnt from 600 labels and
applied to held-out real pages; metrics, the ridge solver, label loading, the stage, the CLI."""

from __future__ import annotations

import json
import pickle
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus import schema
from corpus.cli import main as cli
from corpus.errors import ConfigError, InputError
from corpus.shards import read_table
from recall.quality import (QualityModel, QualityTrainConfig, evaluate_quality, fit_sparse_ridge,
                            load_quality_labels, spearman)
from recall.quality_stage import QualityScoreConfig, QualityScoreStage
from tests.conftest import write_jsonl
from tests.recall.conftest import read_sample
from tests.teacher_server import FakeOpenAI

# The scripted teacher's rule: one point per distinct word of this list present, at most 5.
RULE_WORDS = ("theorem", "proof", "lemma", "equation", "integral", "derivative", "prime", "matrix", "polynomial",
              "probability", "therefore", "solve", "answer", "let", "find", "number", "total", "sum", "suppose",
              "show")
_WORD = re.compile(r"[a-z]+")


def rule_grade(text: str) -> int:
    words = set(_WORD.findall(text.lower()))
    return min(5, sum(w in words for w in RULE_WORDS))


def scripted_teacher(body: dict[str, Any], i: int) -> str:
    """Answers a finemath@v1 prompt by the rule, in the template's format."""
    page = body["messages"][-1]["content"].split('"""')[1].strip()
    g = rule_grade(page)
    return f"The page has {g} of the listed features.\nFinal score: {g}"


@pytest.fixture(scope="module")
def pages(shared_data: Path) -> list[dict[str, Any]]:
    """Real pages from ../shared/data/corpus_samples (no benchmark file): math Q&A, lecture notes,
    Lean, word problems, and some ordinary web pages; shuffled with a fixed seed."""
    rng = random.Random(3)
    mp = read_sample("math_positive.jsonl.gz")
    stacks = [r for r in mp if r["source"] == "stacks_project"]
    other = [r for r in mp if r["source"] != "stacks_project"]
    wp = read_sample("en_math_word_problems.jsonl.gz")
    web = read_sample("en_web_pages.jsonl.gz")
    rows = other + rng.sample(stacks, 500) + rng.sample(wp, 500) + rng.sample(web, 250)
    rng.shuffle(rows)
    return [{"id": r["id"], "text": r["text"], "source": r["source"], "label": r["label"]} for r in rows]


def test_learns_a_scripted_teacher_from_600_labels(tmp_path: Path, pages: list[dict[str, Any]],
                                                   fake_openai: FakeOpenAI) -> None:
    """600 pages graded through the real engine path (annotate task, OpenAI-compatible HTTP),
    the default scorer trained on that output folder as it is, then held-out pages scored."""
    fake_openai.reply = scripted_teacher
    labelled, held = pages[:600], pages[600:]
    src = write_jsonl(tmp_path / "to_grade.jsonl", labelled)
    runner = CliRunner()
    res = runner.invoke(cli, ["synth", "run", str(src), "-o", str(tmp_path / "grades"), "--task", "annotate",
                              "--template", "finemath@v1", "--engine", "openai", "--base-url", fake_openai.base_url,
                              "--model", "scripted-teacher", "--temperature", "0", "--no-decontam"])
    assert res.exit_code == 0, res.output
    assert len(fake_openai.requests) == 600
    res = runner.invoke(cli, ["recall", "train", "--kind", "quality", "--labels", str(tmp_path / "grades"),
                              "-o", str(tmp_path / "q.npz"), "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.stdout)
    assert rep["scorer"] == "fasttext" and rep["data"]["score_column"] == "synth_score"
    assert rep["data"]["records"] == 600 and rep["data"]["train_records"] + rep["data"]["eval_records"] == 600
    assert rep["eval"]["n"] == rep["data"]["eval_records"] and rep["eval"]["spearman"] > 0.7
    assert set(rep["eval"]["per_class"]) == {"0", "1", "2", "3", "4", "5"}
    assert json.loads((tmp_path / "q.json").read_text())["sha256"] == rep["sha256"]
    model = QualityModel(str(tmp_path / "q.npz"))
    truth = np.array([rule_grade(r["text"]) for r in held])
    pred = model.score([r["text"] for r in held])
    rho = spearman(truth, pred)
    assert len(held) > 1500 and len(set(truth.tolist())) == 6
    assert rho is not None and rho >= 0.8, rho
    math_only = np.array([r["label"] == "math" for r in held])
    assert math_only.sum() > 1300 and (spearman(truth[math_only], pred[math_only]) or 0) >= 0.8
    ev = evaluate_quality(truth, pred)
    assert ev["f1_at_3"] > 0.75
    # scoring with a threshold through the CLI: kept + removed = in, and the split follows the scores
    src2 = write_jsonl(tmp_path / "held.jsonl", held[:400])
    res = runner.invoke(cli, ["recall", "score", str(src2), "-o", str(tmp_path / "good"), "--model",
                              str(tmp_path / "q.npz"), "--min-quality", "3", "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.stdout)
    kept = read_table(str(tmp_path / "good")).to_pylist()
    removed = read_table(str(tmp_path / "good" / "_removed")).to_pylist()
    assert s["docs_in"] == 400 and len(kept) + len(removed) == 400 and s["kept"] == len(kept)
    assert kept and removed and all(r["quality_score"] >= 3 for r in kept)
    assert all(r["quality_score"] < 3 and r["removal_reason"] == "recall:below_quality" for r in removed)
    assert {r["quality_model"] for r in kept} == {rep["tag"]}
    by_id = dict(zip([r["id"] for r in held[:400]], pred[:400].tolist()))
    assert all(abs(r["quality_score"] - by_id[r["id"]]) < 1e-5 for r in kept + removed)
    assert s["quality"]["kept_share"] == pytest.approx(len(kept) / 400)
    assert sum(s["quality"]["histogram"]["counts"]) == 400


# ----------------------------------------------------------------------------- metrics, solver
def test_evaluate_quality_exact_figures() -> None:
    y = np.array([0, 1, 2, 3, 4, 5, 3, 3])
    p = np.array([0.2, 1.4, 2.6, 3.0, 3.9, 6.0, 2.4, 4.6])
    ev = evaluate_quality(y, p)
    assert ev["n"] == 8 and ev["labels"] == {"0": 1, "1": 1, "2": 1, "3": 3, "4": 1, "5": 1}
    # rounded predictions: 0 1 3 3 4 5 2 5
    assert ev["per_class"]["3"] == {"precision": 0.5, "recall": 1 / 3, "f1": 0.4, "support": 3}
    assert ev["per_class"]["0"]["f1"] == 1.0 and ev["per_class"]["2"]["f1"] == 0.0
    at3 = ev["at_threshold"]["3"]
    assert (at3["kept_share"], at3["teacher_share"]) == (4 / 8, 5 / 8)
    assert at3["precision"] == 1.0 and at3["recall"] == 4 / 5 and ev["f1_at_3"] == pytest.approx(1.6 / 1.8)
    assert ev["mae"] == pytest.approx(np.abs(np.clip(p, 0, 5) - y).mean())


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-100, 100, allow_nan=False), min_size=3, max_size=40, unique=True))
def test_spearman_is_one_for_any_increasing_map(xs: list[float]) -> None:
    x = np.array(xs)
    assert spearman(x, x ** 3 + x) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)


def test_spearman_matches_the_formula_with_ties() -> None:
    a = np.array([1, 2, 2, 3, 5.0])
    b = np.array([2, 1, 4, 4, 3.0])
    ra, rb = np.array([0, 1.5, 1.5, 3, 4]), np.array([1, 0, 3.5, 3.5, 2])
    assert spearman(a, b) == pytest.approx(np.corrcoef(ra, rb)[0, 1])
    assert spearman(a, np.ones(5)) is None


def test_sparse_ridge_equals_the_closed_form() -> None:
    rng = np.random.default_rng(0)
    n, d = 60, 25
    x = (rng.random((n, d)) < 0.3).astype(np.float64)
    y = rng.integers(0, 6, n).astype(np.float64)
    indptr = np.concatenate([[0], np.cumsum(x.sum(1))]).astype(np.int64)
    idx = np.concatenate([np.flatnonzero(row) for row in x]).astype(np.int32)
    w, b, _ = fit_sparse_ridge(indptr, idx, y, d, l2=0.7, max_iter=500, tol=1e-12)
    xc = x - x.mean(0)
    w_ref = np.linalg.solve(xc.T @ xc + 0.7 * np.eye(d), xc.T @ (y - y.mean()))
    assert np.allclose(w, w_ref, atol=1e-8)
    assert np.allclose(x @ w + b, xc @ w_ref + y.mean(), atol=1e-8)


# ----------------------------------------------------------------------------- labels
def test_labels_column_detection_and_errors(tmp_path: Path) -> None:
    f = write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "text": "x", "score": 2}, {"id": "2", "text": "y", "score": 4}])
    assert load_quality_labels([str(f)]).score_column == "score"
    g = write_jsonl(tmp_path / "b.jsonl", [{"id": "1", "text": "x", "grade": 2}, {"id": "2", "text": "y", "grade": 4.5}])
    assert load_quality_labels([str(g)], "grade").y.tolist() == [2.0, 4.5]
    with pytest.raises(InputError) as e:
        load_quality_labels([str(g)])
    assert str(e.value) == (f"{g}: no score column (looked for synth_score, score, int_score, quality_label; columns "
                            "found: id, text, grade); pass --score-column NAME")
    h = write_jsonl(tmp_path / "c.jsonl", [{"id": "1", "text": "x", "score": 2}, {"id": "2", "text": "y", "score": 7}])
    with pytest.raises(InputError) as e:
        load_quality_labels([str(h)])
    assert str(e.value) == f"{h}: field 'score' is 7 in record 1; grades must be from 0 to 5"
    k = write_jsonl(tmp_path / "d.jsonl", [{"id": "1", "text": "x", "score": None}, {"id": "2", "text": "y", "score": 1}])
    with pytest.raises(InputError, match=r"field 'score' is empty in record 0"):
        load_quality_labels([str(k)])
    m = write_jsonl(tmp_path / "e.jsonl", [{"id": "1", "text": "x", "score": 3}, {"id": "2", "text": "y", "score": 3}])
    with pytest.raises(InputError, match="every record has grade 3; a scorer needs at least two different grades"):
        load_quality_labels([str(m)])


def test_config_rules() -> None:
    with pytest.raises(ConfigError, match="quality kind encoder needs --encoder PATH"):
        QualityTrainConfig(scorer="encoder").validate()
    with pytest.raises(ConfigError, match="'min_quality' must be in \\[0, 5\\], got 6"):
        QualityScoreConfig.from_mapping({"model": "q.npz", "min_quality": 6})


# ----------------------------------------------------------------------------- stage, pipeline, CLI
@pytest.fixture(scope="module")
def small_quality(tmp_path_factory: pytest.TempPathFactory, pages: list[dict[str, Any]]) -> tuple[Path, Path]:
    """(labels file, trained model) from 300 pages graded by the rule directly."""
    d = tmp_path_factory.mktemp("quality")
    rows = [{"id": r["id"], "text": r["text"], "score": rule_grade(r["text"])} for r in pages[:300]]
    labels = write_jsonl(d / "labels.jsonl", rows)
    res = CliRunner().invoke(cli, ["recall", "train", "--kind", "quality", "--labels", str(labels),
                                   "-o", str(d / "q.npz")])
    assert res.exit_code == 0, res.output
    assert "held-out: n=" in res.output and "F1 at >= 3" in res.output and "kept at threshold" in res.output
    return labels, d / "q.npz"


def test_stage_pickles_small_and_scores_the_same(tmp_path: Path, small_quality: tuple[Path, Path],
                                                  pages: list[dict[str, Any]]) -> None:
    _, q = small_quality
    stage = QualityScoreStage(QualityScoreConfig(model=str(q), min_quality=2.5))
    texts = [r["text"] for r in pages[300:340]]
    before = stage.model().score(texts)
    blob = pickle.dumps(stage)
    assert len(blob) < 20_000  # paths and settings, not weights
    again = pickle.loads(blob)
    assert np.array_equal(again.model().score(texts), before)


def test_pipeline_file_trains_and_filters(tmp_path: Path, small_quality: tuple[Path, Path],
                                          pages: list[dict[str, Any]]) -> None:
    labels, _ = small_quality
    inp = write_jsonl(tmp_path / "in" / "pages.jsonl", pages[300:420])
    w = tmp_path / "w"
    p = tmp_path / "pipe.yaml"
    p.write_text(f"workdir: {w}\ninputs: [{inp.parent}]\nstages:\n"
                 f"  - name: train-quality\n"
                 f"    run: [recall, train, --kind, quality, --labels, {labels}, -o, \"{{workdir}}/q.npz\"]\n"
                 f"    creates: \"{{workdir}}/q.npz\"\n"
                 f"  - name: quality\n    stage: quality-score\n"
                 f"    options: {{model: \"{{workdir}}/q.npz\", min_quality: 3}}\n")
    res = CliRunner().invoke(cli, ["pipeline", "run", str(p)])
    assert res.exit_code == 0, res.output
    out = next(d for d in w.iterdir() if d.name.endswith("quality"))
    s = json.loads((out / "_run" / "summary.json").read_text())
    assert s["stage"] == "quality-score" and s["docs_in"] == 120
    assert s["kept"] + s["removed"] == 120 and s["removed_by_reason"] == {"recall:below_quality": s["removed"]}
    kept = read_table(str(out)).to_pylist()
    assert len(kept) == s["kept"] and all(r[schema.QUALITY_SCORE] >= 3 for r in kept)


def test_cli_usage_errors(tmp_path: Path, small_quality: tuple[Path, Path]) -> None:
    labels, q = small_quality
    r = CliRunner().invoke(cli, ["recall", "train", "--kind", "quality", "-o", str(tmp_path / "x.npz")])
    assert r.exit_code == 2 and "recall train --kind quality needs --labels LABELS" in r.output
    r = CliRunner().invoke(cli, ["recall", "train", "--labels", str(labels), "-o", str(tmp_path / "x.bin")])
    assert r.exit_code == 2 and "--labels apply to --kind quality; add --kind quality or drop them" in r.output
    r = CliRunner().invoke(cli, ["recall", "train", "--kind", "quality", "--labels", str(labels), "--dim", "8",
                                 "-o", str(tmp_path / "x.npz")])
    assert r.exit_code == 2 and "--dim apply to math models, not --kind quality" in r.output
    r = CliRunner().invoke(cli, ["recall", "score", str(labels), "-o", str(tmp_path / "o"), "--model", str(q),
                                 "--threshold", "0.5"])
    assert r.exit_code == 2 and "--threshold apply to math models" in r.output
    r = CliRunner().invoke(cli, ["recall", "score", str(labels), "-o", str(tmp_path / "o2"), "--model", str(q),
                                 "--tag-only", "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["removed"] == 0 and len(read_table(str(tmp_path / "o2"))) == 300
