"""`mathcorpus synth run` end to end: the tiny transformers model for every task, the decontamination gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corpus.cli import main
from corpus.shards import read_table
from synth.tasks import ACCEPTED
from tests.conftest import write_jsonl
from tests.teacher_server import FakeOpenAI

DOCS = [
    {"id": "d1", "text": "A prime number has exactly two positive divisors: 1 and itself. 2, 3, 5 and 7 are prime.",
     "lang": "en"},
    {"id": "d2", "text": "勾股定理：直角三角形两条直角边的平方和等于斜边的平方。", "lang": "zh"},
]
PROBLEMS = [
    {"id": "p1", "text": "What is 2 + 3?", "answer": "5"},
    {"id": "p2", "text": "Compute 6 * 7.", "answer": "42"},
    {"id": "p3", "text": "What is 10 - 4?"},
]


def _invoke(args: list[str]) -> Any:
    return CliRunner().invoke(main, args, catch_exceptions=False)


def _all_records(out: Path, staging: Path | None) -> list[dict[str, Any]]:
    base = staging or out
    rows = read_table(str(base)).to_pylist() if any(base.glob("*.parquet")) else []
    side = base / "_side" / "synth_rejected"
    if side.is_dir():
        rows += read_table(str(side)).to_pylist()
    return rows


@pytest.mark.parametrize("task,extra", [
    ("rewrite", ["--keep-truncated", "--min-chars", "1"]),
    ("qa", ["--qa-pairs", "2"]),
    ("solve", ["--n", "3"]),
    ("solve", ["--n", "2", "--tir"]),
])
def test_every_task_end_to_end_with_the_tiny_model(tmp_path: Path, tiny_model_dir: Path, task: str,
                                                   extra: list[str]) -> None:
    """The real transformers generate path, the synth stage and the gate, from the CLI."""
    seeds = PROBLEMS if task == "solve" else DOCS
    src = write_jsonl(tmp_path / "seeds.jsonl", seeds)
    out = tmp_path / "out"
    args = ["synth", "run", str(src), "-o", str(out), "--task", task, "--engine", "transformers",
            "--model", str(tiny_model_dir), "--max-tokens", "8", "--seed", "7", "--torch-threads", "1", "--json",
            *extra]
    r = _invoke(args)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    s, gate = res["synth"], res["gate"]
    staging = Path(res["staging"])
    n = 3 if "3" in extra else (2 if task == "solve" else 1)
    assert s["docs_in"] == len(seeds) and s["output"] == str(staging)
    assert s["counters"]["samples_generated"] == n * len(seeds)
    assert s["counters"]["completion_tokens"] <= 8 * n * len(seeds) * (5 if "--tir" in extra else 1)
    assert s["kept_inputs"] + s["removed"] == len(seeds)
    rows = _all_records(staging, None)
    assert rows and s["counters"]["samples_accepted"] + s["counters"]["samples_rejected"] == len(rows)
    tmpl = "solve-tir@v1" if "--tir" in extra else f"{task}@v1"
    for row in rows:
        assert row["source"] == "synth" and row["synth_teacher"] == str(tiny_model_dir)
        assert row["synth_template"] == tmpl and row["synth_seed_id"] in {x["id"] for x in seeds}
        params = json.loads(row["synth_params"])
        assert params["n"] == n and params["max_tokens"] == 8 and params["engine"] == "transformers"
        assert params["base_seed"] == 7 and isinstance(params["request_seed"], int)
        assert 0 <= row["synth_sample"] < n
        assert json.loads(row["metadata"])["tokens"] <= 8 or "--tir" in extra
    accepted = {row["id"] for row in rows if row["synth_verdict"] in ACCEPTED}
    staged = {row["id"] for row in read_table(str(staging)).to_pylist()} if list(staging.glob("*.parquet")) else set()
    assert staged == accepted and s["kept"] == len(accepted)
    if accepted:  # the gate checked exactly what the stage accepted
        assert gate["docs_in"] == len(accepted) and gate["kept"] + gate["removed"] == len(accepted)
        final = {row["id"] for row in read_table(str(out)).to_pylist()} if list(out.glob("*.parquet")) else set()
        assert final <= accepted and len(final) == gate["kept"]
    else:
        assert gate["skipped_reason"] == "the synth stage accepted no records"
    if task == "rewrite":  # truncated rewrites are kept on request: every seed gives a record
        assert s["kept"] == 2 and {row["lang"] for row in rows} == {"en", "zh"} and gate["kept"] == 2
    # the same command again resumes: nothing is generated twice
    again = _invoke(args)
    assert again.exit_code == 0 and json.loads(again.stdout)["synth"].get("skipped") is True


def test_human_output_and_errors(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    # every sample answers 5: right for p1, wrong for p2, the majority for p3 (no reference)
    fake_openai.reply = lambda body, i: f"Attempt {i}: the answer is $\\boxed{{5}}$."
    src = write_jsonl(tmp_path / "p.jsonl", PROBLEMS)
    r = _invoke(["synth", "run", str(src), "-o", str(tmp_path / "o"), "--task", "solve", "--engine", "openai",
                 "--base-url", fake_openai.base_url, "--model", "t", "--n", "2", "--no-decontam"])
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0].startswith("synth: 3 docs in, 4 kept, 1 removed (synth:no_accepted_sample: 1)")
    assert lines[1].startswith("samples: 6 generated, 4 accepted, 2 rejected")
    assert lines[2] == "decontamination gate: OFF (--no-decontam); output is unchecked"
    r = CliRunner().invoke(main, ["synth", "run", str(src), "-o", str(tmp_path / "e"), "--task", "rewrite",
                                  "--model", "m", "--tir"])
    assert r.exit_code == 2 and r.output.strip() == "Error: synth: --tir applies to task solve only, not rewrite"
    r = CliRunner().invoke(main, ["synth", "run", str(src), "-o", str(tmp_path / "e"), "--task", "solve"])
    assert r.exit_code == 2 and r.output.strip() == "Error: command line: missing required key(s) model for synth"


def test_config_file_sections(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", PROBLEMS[:1])
    cfg = tmp_path / "synth.yaml"
    cfg.write_text(f"synth:\n  task: solve\n  engine: openai\n  base_url: {fake_openai.base_url}\n  model: t\n"
                   f"  n: 2\n  temperature: 0.3\nexecutor:\n  batch_rows: 16\n")
    r = _invoke(["synth", "run", str(src), "-o", str(tmp_path / "o"), "--config", str(cfg), "--n", "3",
                 "--no-decontam", "--json"])
    assert r.exit_code == 0, r.output
    assert fake_openai.requests[0]["n"] == 3 and fake_openai.requests[0]["temperature"] == 0.3
    flat = tmp_path / "flat.yaml"
    flat.write_text(f"task: solve\nengine: openai\nbase_url: {fake_openai.base_url}\nmodel: t\nn: 1\n")
    r = _invoke(["synth", "run", str(src), "-o", str(tmp_path / "o2"), "--config", str(flat), "--no-decontam"])
    assert r.exit_code == 0, r.output
    assert fake_openai.requests[-1]["n"] == 1


def test_help_has_an_example() -> None:
    r = CliRunner().invoke(main, ["synth", "run", "--help"])
    assert r.exit_code == 0 and "Example:" in r.output and "--no-decontam" in r.output and "--tir" in r.output


# ----------------------------------------------------------------------------- the decontamination gate
def _benchmark_record(shared_data: Path, name: str, line: int) -> dict[str, Any]:
    with open(shared_data / "benchmarks" / name, encoding="utf-8") as fh:
        for i, raw in enumerate(fh):
            if i == line:
                return json.loads(raw)
    raise IndexError(line)


@pytest.mark.parametrize("task,bench,line", [("qa", "gsm8k.jsonl", 0), ("rewrite", "math.jsonl", 1)])
def test_gate_removes_a_planted_benchmark_item(tmp_path: Path, fake_openai: FakeOpenAI, shared_data: Path,
                                               task: str, bench: str, line: int) -> None:
    item = _benchmark_record(shared_data, bench, line)
    leaked_q = item.get("question") or item["problem"]
    leaked_a = item.get("answer") or item["solution"]
    clean_q = "A farmer plants 12 rows of 15 cabbages and gives away one third of them. How many are left?"

    def teacher(body: dict[str, Any], i: int) -> str:
        doc = body["messages"][-1]["content"]
        q, a = (leaked_q, leaked_a) if "LEAKY" in doc else (clean_q, "12 * 15 = 180, two thirds is \\boxed{120}.")
        if task == "qa":
            return f"### Problem 1\n{q}\n### Solution 1\n{a} The answer is \\boxed{{1}}."
        return f"## Worked example\n{q}\n\n{a}"

    fake_openai.reply = teacher
    docs = [{"id": "leak", "text": "LEAKY page about farm animals and eggs."},
            {"id": "clean", "text": "A page about multiplication and fractions."}]
    src = write_jsonl(tmp_path / "docs.jsonl", docs)
    out = tmp_path / "out"
    args = ["synth", "run", str(src), "-o", str(out), "--task", task, "--engine", "openai", "--base-url",
            fake_openai.base_url, "--model", "scripted-teacher", "--json"]
    r = _invoke(args)
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["staging"] == str(out) + ".staging" and res["gate"]["docs_in"] == 2
    suffix = "/qa/0.0" if task == "qa" else "/rewrite/0"
    kept = read_table(str(out)).to_pylist()
    assert [row["id"] for row in kept] == ["clean" + suffix]
    assert kept[0]["source"] == "synth" and kept[0]["synth_teacher"] == "scripted-teacher"
    rejected = read_table(str(out / "_rejected")).to_pylist()
    assert [row["id"] for row in rejected] == ["leak" + suffix]
    assert rejected[0]["removal_reason"] == f"decontam:{bench.split('.')[0]}"
    verdict = json.loads(rejected[0]["decontam_verdict"])
    assert verdict["benchmark"] == bench.split(".")[0] and verdict["item_id"] == str(line)
    assert rejected[0]["synth_seed_id"] == "leak" and rejected[0]["synth_template"] == f"{task}@v1"
    report = json.loads((out / "_decontam" / "summary.json").read_text())
    assert report["profile"] == "posttrain" and report["docs_removed"] == 1
    # without the gate the same teacher output goes straight through
    loose = _invoke(["synth", "run", str(src), "-o", str(tmp_path / "loose"), *args[5:], "--no-decontam"])
    assert loose.exit_code == 0, loose.output
    assert sorted(row["id"] for row in read_table(str(tmp_path / "loose")).to_pylist()) == \
        ["clean" + suffix, "leak" + suffix]


def test_gate_staging_folder_rules(tmp_path: Path, fake_openai: FakeOpenAI) -> None:
    src = write_jsonl(tmp_path / "p.jsonl", PROBLEMS[:1])
    base = ["synth", "run", str(src), "--task", "solve", "--engine", "openai", "--base-url", fake_openai.base_url,
            "--model", "t", "--n", "1"]
    r = CliRunner().invoke(main, [*base, "-o", str(tmp_path / "o"), "--staging", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert r.output.strip() == f"Error: --staging {tmp_path / 'o'} must differ from the output folder"
    r = _invoke([*base, "-o", str(tmp_path / "o"), "--staging", str(tmp_path / "stage"), "--json"])
    assert r.exit_code == 0, r.output
    assert (tmp_path / "stage" / "_synth_cache").is_dir() and json.loads(r.stdout)["gate"]["kept"] == 1
    # nothing accepted: the gate has nothing to check and says so
    fake_openai.reply = lambda body, i: "no idea"
    r = _invoke([*base, "-o", str(tmp_path / "none")])
    assert r.exit_code == 0, r.output
    assert "decontamination gate: nothing to check (the synth stage accepted no records)" in r.stdout


def test_templates_command_lists_bundled_and_user_templates(tmp_path: Path) -> None:
    r = _invoke(["synth", "templates", "--json"])
    rows = {x["template"]: x for x in json.loads(r.stdout)}
    assert {"rewrite@v1", "qa@v1", "solve@v1", "solve-tir@v1"} <= set(rows)
    assert rows["solve-tir@v1"]["tir"] is True and rows["qa@v1"]["task"] == "qa"
    (tmp_path / "rewrite.v2.yaml").write_text("id: rewrite\nversion: v2\ntask: rewrite\nuser: 'Clean up: {{ text }}'\n")
    r = _invoke(["synth", "templates", "--templates-dir", str(tmp_path)])
    assert r.exit_code == 0 and any(line.startswith("rewrite@v2       rewrite") for line in r.stdout.splitlines())
