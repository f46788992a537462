"""The stage runner: resume after a killed task, bad files, removal accounting, determinism."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pytest

from corpus import schema
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError, FatalError, InputError
from corpus.passthrough import CopyConfig, CopyStage
from corpus.runner import BatchResult, RunOptions, Stage, TaskContext, run_stage
from corpus.shards import read_table
from tests.conftest import write_jsonl


@dataclass
class DropShortConfig(StageConfig):
    section: ClassVar[str] = "drop-short"
    min_chars: int = opt(10, help="Drop documents shorter than this.")


class DropShortStage(Stage):
    """A real filter used to check removal accounting."""

    name = "dropshort"
    Config = DropShortConfig

    def process_batch(self, batch: pa.RecordBatch, task: TaskContext) -> BatchResult:
        short = pc.less(pc.utf8_length(batch.column("text")), self.config.min_chars)
        removed = batch.filter(short)
        removed = removed.append_column(schema.REMOVAL_REASON, pa.array(["too_short"] * removed.num_rows, pa.string()))
        return BatchResult(kept=batch.filter(pc.invert(short)), removed=removed)


class LosesDocsStage(Stage):
    name = "buggy"
    Config = CopyConfig

    def process_batch(self, batch: pa.RecordBatch, task: TaskContext) -> BatchResult:
        return BatchResult(kept=batch.slice(1))


def make_input(tmp_path: Path, n_files: int = 4, per_file: int = 50) -> Path:
    d = tmp_path / "in"
    for f in range(n_files):
        write_jsonl(d / f"part-{f}.jsonl", [{"id": f"{f}-{i}", "text": "x" * (i % 20), "source": "web"}
                                           for i in range(per_file)])
    return d


def ids(path: Path) -> list[str]:
    return sorted(read_table([str(path)]).column("id").to_pylist())


def test_counts_removals_and_writes_removed(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    out = tmp_path / "out"
    s = run_stage(DropShortStage(DropShortConfig()), [str(inp)], str(out))
    assert s["docs_in"] == 200 and s["kept"] + s["removed"] == 200
    assert s["removed_by_reason"] == {"too_short": 4 * 30}
    removed = read_table([str(out / "_removed")])
    assert set(removed.column(schema.REMOVAL_REASON).to_pylist()) == {"too_short"}
    assert set(removed.column(schema.REMOVAL_STAGE).to_pylist()) == {"dropshort"}
    assert sorted(ids(out) + removed.column("id").to_pylist()) == sorted(f"{f}-{i}" for f in range(4) for i in range(50))
    assert (out / "_run" / "config.json").exists() and (out / "_run" / "summary.json").exists()


def test_resume_after_killed_task(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    out = tmp_path / "out"
    run_stage(CopyStage(CopyConfig()), [str(inp)], str(out), RunOptions(tasks=4))
    full = ids(out)
    # simulate task 2 killed: its output and its completion marker are gone, run not finished
    for f in out.glob("copy-00002-*.parquet"):
        f.unlink()
    os.unlink(out / "_logs" / "map" / "completions" / "00002")
    os.unlink(out / "_run" / "summary.json")
    # a half-written file from the killed task must not be picked up either
    (out / "copy-00002-00000.parquet.tmp").write_bytes(b"garbage")
    s = run_stage(CopyStage(CopyConfig()), [str(inp)], str(out), RunOptions(tasks=4))
    assert s["docs_in"] == 200
    assert ids(out) == full == sorted(f"{f}-{i}" for f in range(4) for i in range(50))


def test_resume_removes_partial_outputs_of_unfinished_task(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    out = tmp_path / "out"
    run_stage(CopyStage(CopyConfig()), [str(inp)], str(out), RunOptions(tasks=4))
    # task 1 "died" after renaming its shard but before its completion marker
    os.unlink(out / "_logs" / "map" / "completions" / "00001")
    os.unlink(out / "_run" / "summary.json")
    run_stage(CopyStage(CopyConfig()), [str(inp)], str(out), RunOptions(tasks=4))
    got = read_table([str(out)]).column("id").to_pylist()
    assert len(got) == len(set(got)) == 200


def test_rerun_of_complete_stage_is_skipped(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 1)
    out = tmp_path / "out"
    run_stage(CopyStage(CopyConfig()), [str(inp)], str(out))
    assert run_stage(CopyStage(CopyConfig()), [str(inp)], str(out))["skipped"] is True


def test_output_of_a_different_run_is_refused(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 1)
    out = tmp_path / "out"
    run_stage(DropShortStage(DropShortConfig()), [str(inp)], str(out))
    with pytest.raises(ConfigError) as e:
        run_stage(DropShortStage(DropShortConfig(min_chars=3)), [str(inp)], str(out))
    assert str(e.value) == (f"{out}: holds a run with different settings or inputs; pass --overwrite to replace "
                            "it, or choose another output folder")
    s = run_stage(DropShortStage(DropShortConfig(min_chars=3)), [str(inp)], str(out), RunOptions(overwrite=True))
    assert s["removed"] == 9


def test_bad_file_stops_before_writing(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 2)
    (inp / "zz-bad.jsonl").write_text('{"id": "1", "text": "a"}\nnot json\n')
    out = tmp_path / "out"
    with pytest.raises(InputError) as e:
        run_stage(CopyStage(CopyConfig()), [str(inp)], str(out))
    assert str(e.value) == (f"{inp / 'zz-bad.jsonl'}: invalid JSON on line 2: Expecting value (column 1); fix or "
                            "remove that line, or pass --skip-bad-files. Nothing was written.")
    assert not out.exists()


def test_skip_bad_files_counts_them(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 2)
    (inp / "empty.jsonl").write_bytes(b"")
    out = tmp_path / "out"
    s = run_stage(CopyStage(CopyConfig()), [str(inp)], str(out), RunOptions(skip_bad_files=True))
    assert s["docs_in"] == 100
    assert [b["path"] for b in s["bad_files"]] == [str(inp / "empty.jsonl")]
    assert "the file is empty (0 bytes)" in s["bad_files"][0]["error"]


def test_lost_documents_fail_the_run(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 1)
    with pytest.raises(FatalError, match=r"50 docs in but 49 kept \+ 0 removed; documents were lost"):
        run_stage(LosesDocsStage(CopyConfig()), [str(inp)], str(tmp_path / "out"))


def test_same_output_with_1_and_2_workers(tmp_path: Path) -> None:
    inp = make_input(tmp_path)
    run_stage(DropShortStage(DropShortConfig()), [str(inp)], str(tmp_path / "w1"), RunOptions(workers=1, tasks=4))
    run_stage(DropShortStage(DropShortConfig()), [str(inp)], str(tmp_path / "w2"), RunOptions(workers=2, tasks=4))
    a = sorted(p.name for p in (tmp_path / "w1").glob("*.parquet"))
    b = sorted(p.name for p in (tmp_path / "w2").glob("*.parquet"))
    assert a == b
    for name in a:
        assert read_table([str(tmp_path / "w1" / name)]).equals(read_table([str(tmp_path / "w2" / name)]))


def test_domain_is_derived_from_url(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "in" / "a.jsonl", [
        {"id": "1", "text": "a", "url": "https://www.Math.StackExchange.com/q/1"},
        {"id": "2", "text": "b", "url": None}])
    run_stage(CopyStage(CopyConfig()), [str(p)], str(tmp_path / "out"))
    assert read_table([str(tmp_path / "out")]).column("domain").to_pylist() == ["math.stackexchange.com", None]


def test_unknown_columns_are_carried(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "1", "text": "abc", "weird": {"k": [1, 2]}}])
    run_stage(CopyStage(CopyConfig()), [str(p)], str(tmp_path / "out"))
    assert read_table([str(tmp_path / "out")]).column("weird").to_pylist() == [{"k": [1, 2]}]


def test_input_inside_output_is_refused(tmp_path: Path) -> None:
    inp = make_input(tmp_path, 1)
    with pytest.raises(ConfigError, match="lies inside the output folder"):
        run_stage(CopyStage(CopyConfig()), [str(inp)], str(tmp_path))
    shutil.rmtree(inp)


def test_duplicate_ids_across_shards_fail_clearly(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_jsonl(inp / "a.jsonl", [{"id": "x1", "text": "a"}, {"id": "x2", "text": "b"}])
    write_jsonl(inp / "b.jsonl", [{"id": "x2", "text": "c"}, {"id": "x3", "text": "d"}])
    with pytest.raises(InputError) as e:
        run_stage(CopyStage(CopyConfig()), [str(inp)], str(tmp_path / "out"))
    assert str(e.value) == (f"{inp}: 1 document id(s) occur more than once across the input (e.g. 'x2'); ids must "
                            "be unique within a dataset. Make them unique (e.g. prefix each shard's name) or pass "
                            "--allow-duplicate-ids")
    s = run_stage(CopyStage(CopyConfig()), [str(inp)], str(tmp_path / "out2"), RunOptions(allow_duplicate_ids=True))
    assert s["duplicate_ids"] == 1 and s["kept"] == 4
