"""`synth run --engine openai` against a real OpenAI-compatible server: `transformers serve`.

The server (tests/teacher_server.py) serves the tiny random Qwen2 model, built from the
bundled Qwen2.5 tokenizer with a ChatML chat template, on 127.0.0.1 and CPU; nobody here
wrote it. Requests are counted from its own access log. `transformers serve` ignores `n`,
so the engine's top-up path (ask again for the missing samples) runs for real.
"""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from corpus.cli import main
from corpus.shards import read_table
from tests.conftest import write_jsonl
from tests.teacher_server import ServedModel

PROBLEMS = [
    {"id": "p1", "text": "What is 2 + 3?", "answer": "5"},
    {"id": "p2", "text": "Compute 6 * 7.", "answer": "42"},
    {"id": "p3", "text": "What is 10 - 4?"},
]


def _records(out: Path) -> list[dict[str, object]]:
    rows = read_table(str(out)).to_pylist() if list(out.glob("*.parquet")) else []
    side = out / "_side" / "synth_rejected"
    return rows + (read_table(str(side)).to_pylist() if side.is_dir() else [])


def test_synth_solve_through_transformers_serve(tmp_path: Path, transformers_server: ServedModel) -> None:
    srv = transformers_server
    src = write_jsonl(tmp_path / "seeds.jsonl", PROBLEMS)
    cache = tmp_path / "cache"
    args = ["synth", "run", str(src), "--task", "solve", "--engine", "openai", "--base-url", srv.base_url,
            "--model", srv.model, "--n", "2", "--max-tokens", "6", "--seed", "3", "--max-retries", "0",
            "--concurrency", "2", "--cache-dir", str(cache), "--no-decontam", "--json"]
    before = srv.chat_requests()
    r = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out")], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)["synth"]
    # every request answered: 3 seeds x 2 samples, one choice per request (the server ignores n)
    assert s["counters"]["samples_generated"] == 6
    assert srv.wait_logged(before + 6) - before == 6
    log = srv.log.read_text(encoding="utf-8", errors="replace")
    assert log.count('"POST /v1/chat/completions HTTP/1.1"') == srv.chat_requests()  # no failed request
    rows = _records(tmp_path / "out")
    assert len(rows) == 6 and s["counters"]["samples_accepted"] + s["counters"]["samples_rejected"] == 6
    for row in rows:  # provenance on every record, accepted or rejected
        assert row["source"] == "synth" and row["synth_teacher"] == srv.model
        assert row["synth_template"] == "solve@v1" and row["synth_seed_id"] in {"p1", "p2", "p3"}
        assert row["synth_sample"] in (0, 1) and row["synth_verdict"]
        params = json.loads(row["synth_params"])
        assert params["engine"] == "openai" and params["n"] == 2 and params["max_tokens"] == 6
        assert params["base_seed"] == 3 and isinstance(params["request_seed"], int)
    # a rerun sends no new request: the same command is complete, and a new output folder
    # over the same resume cache regenerates nothing
    n = srv.chat_requests()
    again = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out")], catch_exceptions=False)
    assert again.exit_code == 0 and json.loads(again.stdout)["synth"].get("skipped") is True
    other = CliRunner().invoke(main, [*args, "-o", str(tmp_path / "out2")], catch_exceptions=False)
    assert other.exit_code == 0, other.output
    s2 = json.loads(other.stdout)["synth"]
    assert s2["counters"]["seeds_resumed"] == 3 and s2["counters"].get("samples_generated", 0) == 0
    assert srv.chat_requests() == n
    key = lambda r: (r["synth_seed_id"], r["synth_sample"])  # noqa: E731
    assert sorted((key(r), r["text"]) for r in _records(tmp_path / "out2")) == \
        sorted((key(r), r["text"]) for r in rows)
