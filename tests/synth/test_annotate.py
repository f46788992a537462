"""The annotate task: strict grade parsing, the bundled template, and a scripted teacher through the engine."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from corpus import schema
from corpus.cli import main as cli
from corpus.runner import RunOptions, run_stage
from corpus.shards import read_table
from corpus.teacher import Completion
from synth.annotate import judge_annotate, parse_score
from synth.stage import ANNOTATE_SCHEMA, SynthConfig, SynthStage
from synth.tasks import load_template
from tests.conftest import write_jsonl
from tests.teacher_server import FakeOpenAI


@pytest.mark.parametrize("text, verdict, score", [
    ("Clear worked example.\nFinal score: 4", "ok", 4),
    ("Reasons...\n\n**Final score:** 3", "ok", 3),
    ("final score: 0.", "ok", 0),
    ("- Final Score: 5\n", "ok", 5),
    ("Final score: 2\nFinal score: 2", "ok", 2),
    ("Reasons.\nFinal score: 2\nOn reflection:\nFinal score: 3", "score_ambiguous", None),
    ("The page deserves 3 points.", "score_missing", None),
    ("Score: 3", "score_missing", None),
    ("My final score: is 3 out of 5", "score_missing", None),
    ("Final score: 6", "score_invalid", None),
    ("Final score: 3.5", "score_invalid", None),
    ("Final score: three", "score_invalid", None),
    ("Final score: 3/5", "score_invalid", None),
    ("Final score:", "score_invalid", None),
])
def test_parse_score_is_strict(text: str, verdict: str, score: int | None) -> None:
    got = parse_score(text)
    assert (got.verdict, got.score) == (verdict, score)


@given(just=st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200)
       .filter(lambda s: "score" not in s.lower()), score=st.integers(0, 5))
def test_any_justification_then_score_line_parses(just: str, score: int) -> None:
    got = parse_score(f"{just}\nFinal score: {score}")
    assert got.verdict == "ok" and got.score == score and got.justification == just.strip()


def test_judge_annotate_verdicts_and_meta() -> None:
    comps = [Completion("ok.\nFinal score: 3", "stop"), Completion("Final score: 9", "stop"),
             Completion("I would say", "length"), Completion("Final score: 1", "length")]
    got = judge_annotate("the page", comps)
    assert [s.verdict for s in got] == ["ok", "score_invalid", "truncated", "truncated"]
    assert all(s.text == "the page" for s in got)
    assert got[0].meta["score"] == 3 and got[0].meta["justification"] == "ok."
    assert got[1].meta["score"] is None and "not an integer from 0 to 5" in got[1].meta["parse_error"]
    assert got[3].meta["score"] is None and got[3].meta["raw"] == "Final score: 1"
    assert judge_annotate("p", comps[3:], keep_truncated=True)[0].verdict == "ok"


def test_bundled_template_is_the_default() -> None:
    t = load_template(None, "annotate")
    assert t.ref == "finemath@v1" and load_template("finemath@v1", "annotate").sha == t.sha
    msgs = t.render(text="Let $x = 2$.", lang="en")
    assert "Let $x = 2$." in msgs[-1]["content"] and msgs[-1]["content"].rstrip().endswith(
        "Final score: <0, 1, 2, 3, 4 or 5>")


# ----------------------------------------------------------------------------- through the engine
DOCS = [
    {"id": "p1", "text": "A proof of the theorem about primes.", "source": "web", "lang": "en"},
    {"id": "p2", "text": "Sports results from the weekend.", "source": "web", "lang": "en"},
    {"id": "p3", "text": "Solve the equation and find the integral, with a proof of the lemma.", "source": "book"},
    {"id": "p4", "text": "BROKEN-MISSING recipe for bread", "source": "web"},
    {"id": "p5", "text": "BROKEN-RANGE theorem", "source": "web"},
    {"id": "p6", "text": "BROKEN-TWICE proof", "source": "web"},
]
MATH_WORDS = ("theorem", "proof", "prime", "equation", "integral", "lemma", "solve")


def page_of(body: dict[str, Any]) -> str:
    """The document a finemath@v1 prompt carries (between the triple quotes)."""
    return body["messages"][-1]["content"].split('"""')[1].strip()


def scripted_grader(body: dict[str, Any], i: int) -> str:
    page = page_of(body)
    n = min(5, sum(w in re.findall(r"[a-z]+", page.lower()) for w in MATH_WORDS))
    if "BROKEN-MISSING" in page:
        return "This page is about bread. I give it zero points."
    if "BROKEN-RANGE" in page:
        return "Very good.\nFinal score: 7"
    if "BROKEN-TWICE" in page:
        return "Final score: 1\nActually\nFinal score: 2"
    return f"The page mentions {n} math words.\nFinal score: {n}"


def test_annotate_stage_writes_graded_labels(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = scripted_grader
    src = write_jsonl(tmp_path / "in" / "pages.jsonl", DOCS)
    cfg = SynthConfig.from_mapping({"task": "annotate", "model": "grader-x", "engine": "openai",
                                    "base_url": fake_openai.base_url, "max_retries": 0, "temperature": 0.0})
    out = tmp_path / "labels"
    s = run_stage(SynthStage(cfg), [str(src)], str(out), RunOptions())
    assert len(fake_openai.requests) == 6 and all(r["n"] == 1 for r in fake_openai.requests)
    assert s["docs_in"] == 6 and s["kept"] == 3 and s["removed"] == 3
    c = s["counters"]
    assert (c["verdict:ok"], c["verdict:score_missing"], c["verdict:score_invalid"], c["verdict:score_ambiguous"]) \
        == (3, 1, 1, 1)
    assert (c["score:0"], c["score:2"], c["score:5"]) == (1, 1, 1)
    kept = read_table(str(out))
    assert kept.schema.names == ANNOTATE_SCHEMA.names
    rows = {r["synth_seed_id"]: r for r in kept.to_pylist()}
    assert {k: v["synth_score"] for k, v in rows.items()} == {"p1": 2, "p2": 0, "p3": 5}
    r = rows["p3"]
    assert r["text"] == DOCS[2]["text"] and r["source"] == "book" and r["id"] == "p3/annotate/0"
    assert r["synth_teacher"] == "grader-x" and r["synth_template"] == "finemath@v1"
    assert r["synth_verdict"] == "ok" and json.loads(r["synth_params"])["temperature"] == 0.0
    meta = json.loads(r["metadata"])
    assert meta["task"] == "annotate" and meta["justification"] == "The page mentions 5 math words."
    rejected = read_table(str(out / "_side" / "synth_rejected")).to_pylist()
    assert sorted((x["synth_seed_id"], x["synth_verdict"], x["synth_score"]) for x in rejected) == [
        ("p4", "score_missing", None), ("p5", "score_invalid", None), ("p6", "score_ambiguous", None)]
    assert json.loads(rejected[0]["metadata"])["raw"]
    removed = read_table(str(out / "_removed")).to_pylist()
    assert sorted(x["id"] for x in removed) == ["p4", "p5", "p6"]
    assert {x["removal_reason"] for x in removed} == {"synth:no_accepted_sample"}


def test_annotate_cli_reports_grades_and_errors(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = scripted_grader
    src = write_jsonl(tmp_path / "pages.jsonl", DOCS)
    res = CliRunner().invoke(cli, ["synth", "run", str(src), "-o", str(tmp_path / "out"), "--task", "annotate",
                                   "--template", "finemath@v1", "--engine", "openai", "--base-url",
                                   fake_openai.base_url, "--model", "grader-x", "--no-decontam",
                                   "--max-retries", "0"])
    assert res.exit_code == 0, res.output
    assert "grades: 0: 1, 1: 0, 2: 1, 3: 0, 4: 0, 5: 1; unreadable answers: 3 (score_missing 1, score_invalid 1, " \
           "score_ambiguous 1, truncated 0)" in res.output


def test_annotate_through_transformers_serve_counts_garbage_as_errors(tmp_path: Path,
                                                                      transformers_server: Any) -> None:
    """A real server (``transformers serve`` of a tiny random model) answers with noise: every
    answer must be counted as an unreadable grade, none read as a score."""
    srv = transformers_server
    src = write_jsonl(tmp_path / "pages.jsonl", DOCS[:3])
    before = srv.chat_requests()
    cfg = SynthConfig.from_mapping({"task": "annotate", "model": srv.model, "engine": "openai",
                                    "base_url": srv.base_url, "max_tokens": 8, "temperature": 0.0,
                                    "max_retries": 0, "concurrency": 1})
    s = run_stage(SynthStage(cfg), [str(src)], str(tmp_path / "out"), RunOptions())
    assert srv.wait_logged(before + 3) == before + 3
    c = s["counters"]
    assert s["docs_in"] == 3 and s["kept"] == 0 and s["removed"] == 3 and c["samples_generated"] == 3
    assert sum(c.get(f"verdict:{v}", 0) for v in ("score_missing", "score_invalid", "score_ambiguous",
                                                   "truncated")) == 3
    assert not any(k.startswith("score:") for k in c)
    rejected = read_table(str(tmp_path / "out" / "_side" / "synth_rejected")).to_pylist()
    assert len(rejected) == 3 and all(r[schema.SYNTH_SCORE] is None for r in rejected)
