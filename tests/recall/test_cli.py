"""`mathcorpus recall ...` through click's CliRunner: train, eval, score, cycle and their errors."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from corpus.cli import main
from corpus.shards import read_table
from tests.conftest import write_jsonl
from tests.recall.conftest import planted_pool

FAST_FLAGS = ["--dim", "64", "--bucket", "100000", "--epoch", "10", "--lr", "0.3"]


def invoke(*args: str) -> object:
    return CliRunner().invoke(main, list(args))


@pytest.mark.parametrize("cmd", ["train", "eval", "score", "cycle"])
def test_help_has_an_example(cmd: str) -> None:
    r = invoke("recall", cmd, "--help")
    assert r.exit_code == 0 and "Example:" in r.output and "mathcorpus recall " + cmd in r.output


def test_train_prints_and_saves_the_evaluation(tmp_path: Path, small_labelled: Path) -> None:
    out = tmp_path / "m.bin"
    r = invoke("recall", "train", "--data", str(small_labelled), "-o", str(out), "--lang", "en", "--source", "web",
               *FAST_FLAGS)
    assert r.exit_code == 0, r.output
    assert "held-out evaluation: n=" in r.stdout and "threshold for precision >= 0.95" in r.stdout
    saved = json.loads((tmp_path / "m.json").read_text())
    assert saved["source"] == "web" and saved["config"]["epoch"] == 10
    r = invoke("recall", "train", "--data", str(small_labelled), "-o", str(tmp_path / "m2.bin"), *FAST_FLAGS,
               "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["sha256"] == saved["sha256"]


def test_eval_reports_per_group(small_model: Path, small_labelled: Path) -> None:
    r = invoke("recall", "eval", "--model", str(small_model), "--data", str(small_labelled), "--json")
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["n"] == 600 and rep["f1"] > 0.9
    assert {"stackmathqa", "ag_news"} <= set(rep["by_group"])


def test_bad_training_data_is_rejected_with_a_clear_message(tmp_path: Path) -> None:
    def err(path: Path) -> str:
        r = invoke("recall", "train", "--data", str(path), "-o", str(tmp_path / "m.bin"))
        assert r.exit_code == 1 and not (tmp_path / "m.bin").exists()
        return r.stderr.strip().splitlines()[-1]  # after the "training on ..." progress line

    math_only = write_jsonl(tmp_path / "math.jsonl", [{"id": str(i), "text": "x^2", "label": "math"} for i in range(5)])
    assert err(math_only) == (f"Error: {math_only}: the data holds only 'math' records (5); training needs both "
                              "classes: add non_math records")
    no_label = write_jsonl(tmp_path / "nolabel.jsonl", [{"id": "1", "text": "x"}])
    assert err(no_label) == (f"Error: {no_label}: no 'label' column (columns found: id, text); each record needs "
                             "label = math or non_math")
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert err(empty) == (f"Error: {empty}: the file is empty; training needs labelled records with 'text' and "
                          "'label' (math or non_math)")
    empty_gz = tmp_path / "empty.jsonl.gz"
    with gzip.open(empty_gz, "wb"):
        pass
    assert err(empty_gz) == (f"Error: {empty_gz}: the file holds no records; training needs labelled records "
                             "with 'text' and 'label' (math or non_math)")
    typo = write_jsonl(tmp_path / "typo.jsonl", [{"id": "1", "text": "x", "label": "maths"}])
    assert err(typo) == f"Error: {typo}: unknown label value(s) 'maths'; use math or non_math"


def test_score_tag_only_and_threshold(tmp_path: Path, small_model: Path, small_labelled: Path) -> None:
    r = invoke("recall", "score", str(small_labelled), "-o", str(tmp_path / "tagged"), "--model", str(small_model),
               "--tag-only", "--json")
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["docs_in"] == s["kept"] == 600
    r = invoke("recall", "score", str(small_labelled), "-o", str(tmp_path / "kept"), "--model", str(small_model),
               "--threshold", "0.5")
    assert r.exit_code == 0, r.output
    assert "recall-score: 600 docs in" in r.stdout and "math_score histogram" in r.stdout
    kept = read_table(str(tmp_path / "kept"))
    assert min(kept.column("math_score").to_pylist()) >= 0.5


def test_score_option_errors(tmp_path: Path, small_model: Path, small_labelled: Path) -> None:
    r = invoke("recall", "score", str(small_labelled), "-o", str(tmp_path / "o"), "--model", str(small_model),
               "--threshold", "0.5", "--keep-top", "0.1")
    assert r.exit_code == 2
    assert r.stderr.strip() == "Error: recall score: use either --threshold or --keep-top, not both"
    r = invoke("recall", "score", str(small_labelled), "-o", str(tmp_path / "o"))
    assert r.exit_code == 2 and "recall score needs a model: pass --model MODEL.bin" in r.stderr


def test_cycle_then_score_with_its_config(tmp_path: Path, shared_data: Path) -> None:
    seed, pool, domain = planted_pool(tmp_path, news=400)
    w = tmp_path / "W"
    r = invoke("recall", "cycle", "--seed", str(seed), "--pool", str(pool), "--workdir", str(w), "--cycles", "1",
               "--min-domain-pages", "10", "--train", "dim=64,bucket=100000,epoch=10,lr=0.2")
    assert r.exit_code == 0, r.output
    assert "cycle 1: recalled" in r.stdout and "status: done (max_cycles)" in r.stdout
    r = invoke("recall", "score", str(pool), "-o", str(tmp_path / "math"), "--config", str(w / "score.yaml"))
    assert r.exit_code == 0, r.output
    kept = read_table(str(tmp_path / "math"))
    assert kept.num_rows > 0
    assert sum(domain in u for u in kept.column("url").to_pylist()) / kept.num_rows > 0.8
