"""Fixtures for decontam tests: real benchmark items, real corpus documents, a shared index."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus.runner import RunContext, RunOptions, TaskContext
from decontam.benchmarks import load_benchmarks
from decontam.index import DecontamIndex, build_index
from decontam.stage import MATCHES_SIDE, DecontamConfig, DecontamStage

BENCH_DIR = Path(__file__).resolve().parents[2] / "decontam" / "data" / "benchmarks"


def bench_record(name: str, line: int) -> dict[str, Any]:
    """The raw record on 0-based ``line`` of a bundled benchmark file."""
    with open(BENCH_DIR / f"{name}.jsonl", encoding="utf-8") as fh:
        for i, row in enumerate(fh):
            if i == line:
                return json.loads(row)
    raise IndexError(f"{name} has no line {line}")


def corpus_docs(shared_data: Path, name: str, n: int, min_chars: int = 0) -> list[dict[str, Any]]:
    """The first ``n`` documents of a corpus_samples file with at least ``min_chars`` chars."""
    out = []
    with gzip.open(shared_data / "corpus_samples" / name, "rt", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            if len(d["text"]) >= min_chars:
                out.append(d)
                if len(out) >= n:
                    break
    return out


@pytest.fixture(scope="session")
def posttrain_index_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("idx") / "posttrain"
    build_index(load_benchmarks("posttrain")).save(str(path))
    return str(path)


@pytest.fixture(scope="session")
def posttrain_index(posttrain_index_path: str) -> DecontamIndex:
    return DecontamIndex.load(posttrain_index_path)


Checker = Callable[..., tuple[set[str], list[dict[str, Any]], pa.Table]]


@pytest.fixture
def check(tmp_path: Path, posttrain_index_path: str, tmp_path_factory: pytest.TempPathFactory) -> Checker:
    """Run DecontamStage.process_batch on documents; returns (removed ids, match rows, removed table).

    Options other than the index (policy, strip_figure_code, ...) are passed as keywords;
    an option that changes the index builds a fresh one for the call.
    """
    calls = [0]

    def run(docs: list[dict[str, Any]], **options: Any) -> tuple[set[str], list[dict[str, Any]], pa.Table]:
        calls[0] += 1
        cfg = DecontamConfig.from_mapping(dict({"index": posttrain_index_path}, **options))
        if any(k in options for k in ("ngram", "min_phrase_tokens", "max_gram_items", "strip_figure_code",
                                      "benchmarks")):
            p = tmp_path_factory.mktemp("idx_custom")
            build_index(load_benchmarks(cfg.benchmarks or "posttrain"), cfg.index_options()).save(str(p))
            cfg = cfg.replace(index=str(p), benchmarks=None)
        out = tmp_path / f"run{calls[0]}"
        ctx = RunContext(stage_name="decontam", files=[], output=str(out), options=RunOptions(), tasks=1,
                         removed_dir=str(out / "_removed"), side_dir=str(out / "_side"),
                         logging_dir=str(out / "_logs"))
        task = TaskContext(run=ctx, rank=0, world_size=1, files=[])
        stage = DecontamStage(cfg)
        stage.setup(task)
        batch = pa.RecordBatch.from_pylist(docs)
        res = stage.process_batch(batch, task)
        for w in task._side.values():
            w.close()
        side = out / "_side" / MATCHES_SIDE
        rows = pq.read_table(side).to_pylist() if side.is_dir() else []
        removed = res.removed if res.removed is not None else pa.table({})
        kept_n = res.kept.num_rows
        rem_n = removed.num_rows if res.removed is not None else 0
        assert kept_n + rem_n == len(docs)
        ids = set(removed.column("id").to_pylist()) if rem_n else set()
        return ids, rows, removed

    return run
