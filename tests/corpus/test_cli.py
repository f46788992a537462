"""The CLI root: help, version, stats through CliRunner and once through a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from corpus import __version__
from corpus.cli import main
from tests.conftest import write_jsonl


def test_version_and_help() -> None:
    r = CliRunner().invoke(main, ["--version"])
    assert r.exit_code == 0 and r.output.strip() == f"mathcorpus, version {__version__}"
    r = CliRunner().invoke(main, ["--help"])
    assert r.exit_code == 0
    for cmd in ("stats", "decontam", "recall", "synth", "dedup", "export", "pipeline"):
        assert cmd in r.output


def test_stats_json_on_bundled_sample(sample_dir: Path) -> None:
    r = CliRunner().invoke(main, ["stats", str(sample_dir), "--json"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert s["docs"] == sum(row["docs"] for row in s["by_source"]) == sum(row["docs"] for row in s["by_lang"])
    assert {row["lang"] for row in s["by_lang"]} == {"en", "zh"}
    assert {row["source"] for row in s["by_source"]} == {"web", "book", "code", "qa"}
    assert s["top_domains"][0]["docs"] >= s["top_domains"][-1]["docs"]


def test_stats_counts_exact(tmp_path: Path, tiny_docs: list[dict]) -> None:
    write_jsonl(tmp_path / "a.jsonl", tiny_docs)
    r = CliRunner().invoke(main, ["stats", str(tmp_path), "--json"])
    s = json.loads(r.stdout)
    assert s["docs"] == 4
    assert s["bytes"] == sum(len(d["text"].encode()) for d in tiny_docs)
    assert {row["source"]: row["docs"] for row in s["by_source"]} == {"web": 2, "qa": 1, "code": 1}
    assert s["top_domains"] == [{"domain": "bbc.co.uk", "docs": 1}, {"domain": "math.stackexchange.com", "docs": 1}]


def test_user_error_is_one_line_with_exit_1(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["stats", str(tmp_path / "nope-*.parquet")])
    assert r.exit_code == 1
    assert r.stderr == (f"Error: {tmp_path / 'nope-*.parquet'}: no input files found (looked for .parquet, .jsonl, "
                        ".jsonl.gz, .jsonl.zst, .json.gz, .ndjson); check the path or glob\n")
    assert "Traceback" not in r.output


def test_debug_shows_traceback(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["--debug", "stats", str(tmp_path / "none.jsonl")])
    assert r.exit_code == 1 and r.exception is not None


def test_usage_error_exit_2() -> None:
    r = CliRunner().invoke(main, ["stats"])
    assert r.exit_code == 2


def test_subprocess_stats(sample_dir: Path) -> None:
    exe = Path(sys.executable).parent / "mathcorpus"
    p = subprocess.run([str(exe), "stats", str(sample_dir), "--json"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["docs"] > 2000
    p = subprocess.run([str(exe), "stats", "/nonexistent/x.jsonl"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 1
    assert p.stderr.startswith("Error: /nonexistent/x.jsonl: no input files found")
