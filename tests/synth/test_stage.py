"""The synth stage on the runner: provenance, verdict routing, counting, resume, pickling."""

from __future__ import annotations

import json
import os
import pickle
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from corpus import schema
from corpus.errors import ConfigError, FatalError
from corpus.runner import RunOptions, run_stage
from corpus.shards import read_table
from synth.stage import ACCEPTED_COL, CACHE_DIR, RECORD_SCHEMA, SynthConfig, SynthStage, reference_answer
from tests.conftest import write_jsonl
from tests.teacher_server import FakeOpenAI, Plan

PROBLEMS = [
    {"id": "g1", "text": "Tom has 3 apples and buys 4 more. How many?", "answer": "7"},
    {"id": "g2", "text": "A box holds 6 eggs. How many in 3 boxes?", "answer": "He has 3 boxes.\n#### 18"},
    {"id": "g3", "text": "What is 10 - 4?", "answer": None},
    {"id": "g4", "text": "What is half of 9?", "answer": "4.5"},
]


def _solver(body: dict[str, Any], i: int) -> str:
    """Scripted teacher: right answers for samples 0-1, a wrong one for 2, none for 3."""
    q = body["messages"][-1]["content"]
    right = {"Tom": "7", "box": "18", "10 - 4": "6", "half": "\\frac{9}{2}"}
    ans = next(v for k, v in right.items() if k in q)
    seed = body.get("seed")
    if i < 2:
        return f"Sample {i} (seed {seed}): working... so the answer is $\\boxed{{{ans}}}$."
    if i == 2:
        return f"Sample {i} (seed {seed}): I think it is \\boxed{{999}}."
    return f"Sample {i} (seed {seed}): I am not sure."


def _cfg(fake: FakeOpenAI, **kw: Any) -> SynthConfig:
    base = {"task": "solve", "model": "teacher-x", "engine": "openai", "base_url": fake.base_url, "n": 4,
            "max_retries": 0, "flush_every": 2}
    base.update(kw)
    return SynthConfig.from_mapping(base)


def test_reference_answer_column_forms() -> None:
    assert reference_answer("7") == "7" and reference_answer(42) == "42" and reference_answer(" ") is None
    assert reference_answer("Six eggs per box.\n#### 18") == "18"
    assert reference_answer("so $\\boxed{\\frac{9}{2}}$") == "\\frac{9}{2}"


def test_solve_records_provenance_and_routing(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = _solver
    src = write_jsonl(tmp_path / "in" / "p.jsonl", PROBLEMS)
    out = tmp_path / "out"
    s = run_stage(SynthStage(_cfg(fake_openai)), [str(src)], str(out), RunOptions())
    assert s["docs_in"] == 4 and s["kept_inputs"] == 4 and s["removed"] == 0
    c = s["counters"]
    assert c["samples_generated"] == 16 and c["samples_accepted"] == s["kept"]
    # g1, g2, g4 have references: samples 0-1 correct; g3 has none: the majority (2 of 3 answers) wins
    assert c["verdict:correct"] == 6 and c["verdict:incorrect"] == 3 and c["verdict:majority"] == 2
    assert c["verdict:minority"] == 1 and c["verdict:no_answer"] == 4 and s["kept"] == 8
    kept = read_table(str(out))
    assert kept.schema.names == RECORD_SCHEMA.names
    rows = kept.to_pylist()
    assert [r["id"] for r in rows] == ["g1/solve/0", "g1/solve/1", "g2/solve/0", "g2/solve/1", "g3/solve/0",
                                       "g3/solve/1", "g4/solve/0", "g4/solve/1"]
    r = rows[2]
    assert r["source"] == "synth" and r["synth_teacher"] == "teacher-x" and r["synth_template"] == "solve@v1"
    assert r["synth_seed_id"] == "g2" and r["synth_sample"] == 0 and r["synth_verdict"] == "correct"
    params = json.loads(r["synth_params"])
    assert params["n"] == 4 and params["engine"] == "openai" and params["temperature"] == 0.7
    assert params["base_seed"] == 0 and params["select"] == "auto" and len(params["template_sha"]) == 16
    assert f"(seed {params['request_seed']})" in r["text"]
    meta = json.loads(r["metadata"])
    assert meta["reference"] == "18" and meta["answer"] == "18" and meta["task"] == "solve"
    assert r["text"].startswith("Problem:\nA box holds 6 eggs.")
    rejected = read_table(str(out / "_side" / "synth_rejected"))
    assert rejected.num_rows == 8 and set(rejected.column("synth_verdict").to_pylist()) == {
        "incorrect", "no_answer", "minority"}
    sent = fake_openai.requests[0]
    assert sent["n"] == 4 and sent["model"] == "teacher-x"
    assert sent["messages"][0]["content"].startswith("Please reason step by step")


def test_seeds_without_accepted_samples_are_removed_with_a_reason(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = lambda body, i: "I cannot solve this."
    src = write_jsonl(tmp_path / "p.jsonl", PROBLEMS[:2])
    s = run_stage(SynthStage(_cfg(fake_openai, n=2)), [str(src)], str(tmp_path / "out"), RunOptions())
    assert s["kept"] == 0 and s["removed"] == 2
    assert s["removed_by_reason"] == {"synth:no_accepted_sample": 2}
    removed = read_table(str(tmp_path / "out" / "_removed"))
    assert removed.column("id").to_pylist() == ["g1", "g2"] and "answer" in removed.schema.names


def test_sources_option_selects_seeds(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = _solver
    rows = [dict(p, source=src) for p, src in zip(PROBLEMS, ["qa", "web", None, "qa"])]
    src = write_jsonl(tmp_path / "p.jsonl", rows)
    s = run_stage(SynthStage(_cfg(fake_openai, sources=["qa"])), [str(src)], str(tmp_path / "out"), RunOptions())
    assert s["removed_by_reason"] == {"synth:source_not_selected": 2} and s["kept_inputs"] == 2
    assert s["counters"]["seeds_source_not_selected"] == 2 and len(fake_openai.requests) == 2
    assert sorted(read_table(str(tmp_path / "out" / "_removed")).column("id").to_pylist()) == ["g2", "g3"]
    assert {r["synth_seed_id"] for r in read_table(str(tmp_path / "out")).to_pylist()} == {"g1", "g4"}


def test_resume_skips_seeds_already_generated(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = _solver
    rows = [dict(p, id=f"{p['id']}-{k}") for k in range(2) for p in PROBLEMS]  # 8 seeds, 4 chunks of 2
    src = write_jsonl(tmp_path / "p.jsonl", rows)
    # the server dies after the first two chunks (4 requests)
    fake_openai.plans = [Plan()] * 4 + [Plan(status=400, body={"error": "server went away"})]
    out = tmp_path / "out"
    with pytest.raises(FatalError, match="HTTP 400"):
        run_stage(SynthStage(_cfg(fake_openai)), [str(src)], str(out), RunOptions())
    parts = sorted(os.listdir(out / CACHE_DIR))
    assert parts == ["part-00000-00000.parquet", "part-00000-00001.parquet"]
    cached = {x for p in parts for x in pq.read_table(out / CACHE_DIR / p).column("synth_seed_id").to_pylist()}
    assert cached == {"g1-0", "g2-0", "g3-0", "g4-0"}
    fake_openai.plans = []
    before = len(fake_openai.requests)
    s = run_stage(SynthStage(_cfg(fake_openai)), [str(src)], str(out), RunOptions())
    resent = [b["messages"][-1]["content"] for b in fake_openai.requests[before:]]
    assert len(resent) == 4 and s["counters"]["seeds_resumed"] == 4
    assert s["docs_in"] == 8 and s["kept"] == 16
    # the resumed output equals an uninterrupted run's
    fresh = tmp_path / "fresh"
    run_stage(SynthStage(_cfg(fake_openai)), [str(src)], str(fresh), RunOptions())
    assert read_table(str(out)).to_pylist() == read_table(str(fresh)).to_pylist()
    assert read_table(str(out / "_side" / "synth_rejected")).num_rows == 16


def test_cache_dir_reuses_generations_but_not_verdicts(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = _solver
    src = write_jsonl(tmp_path / "p.jsonl", PROBLEMS)
    cache = str(tmp_path / "cache")
    first = run_stage(SynthStage(_cfg(fake_openai, cache_dir=cache)), [str(src)], str(tmp_path / "a"), RunOptions())
    assert first["counters"]["verdict:correct"] == 6 and len(fake_openai.requests) == 4
    # other judging options, same generation settings: no request, new verdicts
    s = run_stage(SynthStage(_cfg(fake_openai, cache_dir=cache, select="majority")), [str(src)],
                  str(tmp_path / "b"), RunOptions())
    assert len(fake_openai.requests) == 4 and s["counters"]["seeds_resumed"] == 4
    assert s["counters"]["verdict:majority"] == 8 and "verdict:correct" not in s["counters"]
    # other sampling settings: the cached samples do not apply
    s = run_stage(SynthStage(_cfg(fake_openai, cache_dir=cache, temperature=0.3)), [str(src)],
                  str(tmp_path / "c"), RunOptions())
    assert len(fake_openai.requests) == 8 and s["counters"]["seeds_resumed"] == 0
    assert fake_openai.requests[-1]["temperature"] == 0.3


def test_rerun_of_a_complete_run_generates_nothing(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = _solver
    src = write_jsonl(tmp_path / "p.jsonl", PROBLEMS)
    run_stage(SynthStage(_cfg(fake_openai)), [str(src)], str(tmp_path / "out"), RunOptions())
    n = len(fake_openai.requests)
    s = run_stage(SynthStage(_cfg(fake_openai)), [str(src)], str(tmp_path / "out"), RunOptions())
    assert s.get("skipped") is True and len(fake_openai.requests) == n


def test_qa_and_rewrite_through_the_stage(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    docs = [{"id": "w1", "text": "Primes are numbers with exactly two divisors.", "lang": "en"}]
    src = write_jsonl(tmp_path / "d.jsonl", docs)
    fake_openai.reply = lambda body, i: ("### Problem 1\nIs 7 prime?\n### Solution 1\nIts divisors are 1 and 7, "
                                         "so yes: \\boxed{\\text{yes}}.\n### Problem 2\nIs 9 prime?\n### Solution 2\n"
                                         "No, 3 divides it.")
    s = run_stage(SynthStage(SynthConfig.from_mapping({"task": "qa", "model": "t", "engine": "openai",
                                                       "base_url": fake_openai.base_url, "qa_pairs": 2})),
                  [str(src)], str(tmp_path / "qa"), RunOptions())
    assert s["kept"] == 1 and s["counters"]["verdict:no_answer"] == 1
    rec = read_table(str(tmp_path / "qa")).to_pylist()[0]
    assert rec["id"] == "w1/qa/0.0" and rec["lang"] == "en" and rec["synth_template"] == "qa@v1"
    assert json.loads(rec["metadata"])["problem"] == "Is 7 prime?"
    assert "write 2 new mathematics problems" in fake_openai.requests[0]["messages"][1]["content"]
    fake_openai.reply = lambda body, i: "## Prime numbers\nA prime number has exactly two positive divisors."
    s = run_stage(SynthStage(SynthConfig.from_mapping({"task": "rewrite", "model": "t", "engine": "openai",
                                                       "base_url": fake_openai.base_url})),
                  [str(src)], str(tmp_path / "rw"), RunOptions())
    rec = read_table(str(tmp_path / "rw")).to_pylist()[0]
    assert rec["id"] == "w1/rewrite/0" and rec["synth_verdict"] == "ok" and rec["text"].startswith("## Prime")
    assert json.loads(rec["synth_params"])["n"] == 1


def test_stage_pickles_without_heavy_state(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    stage = SynthStage(_cfg(fake_openai))
    stage.engine = object()  # type: ignore[assignment]  # as after setup()
    clone = pickle.loads(pickle.dumps(stage))
    assert clone.config == stage.config and clone.engine is None and clone.cache is None


@pytest.mark.parametrize("mapping,message", [
    ({"task": "rewrite", "model": "m", "tir": True}, "synth: --tir applies to task solve only, not rewrite"),
    ({"task": "solve", "model": "m", "engine": "openai"},
     "synth: engine openai needs base_url (--base-url http://host:port/v1)"),
    ({"task": "solve", "model": "m", "select": "rm"}, "synth: select=rm needs a reward model; pass --rm-url"),
    ({"task": "solve", "model": "m", "n": 0}, "synth: n must be at least 1, got 0"),
    ({"task": "solve"}, "config: missing required key(s) model for synth"),
    ({"task": "solv", "model": "m"}, "config: key 'task' must be one of rewrite, qa, solve, annotate, got 'solv'; did you "
                                     "mean 'solve'?"),
    ({"task": "solve", "model": "m", "temprature": 1}, "config: unknown key 'temprature' for synth; did you mean "
                                                       "'temperature'?"),
])
def test_config_errors(mapping: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        SynthConfig.from_mapping(mapping)


def test_cache_schema_has_the_provenance_columns() -> None:
    for col in (schema.SYNTH_TEACHER, schema.SYNTH_TEMPLATE, schema.SYNTH_PARAMS, schema.SYNTH_SEED_ID,
                schema.SYNTH_SAMPLE, schema.SYNTH_VERDICT, schema.SOURCE):
        assert col in RECORD_SCHEMA.names
    assert ACCEPTED_COL not in RECORD_SCHEMA.names
