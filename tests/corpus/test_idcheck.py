"""The duplicate-id check partitioned by id-hash range (corpus/idcheck.py) and its place in the runner."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus import idcheck
from corpus.errors import FatalError, InputError
from corpus.passthrough import CopyConfig, CopyStage
from corpus.runner import RunOptions, run_stage
from tests.conftest import write_jsonl
from tests.corpus.storage_servers import S3Server, s3_server  # noqa: F401 - session fixture


def single_sort(hashes: np.ndarray, keep: int = 20) -> tuple[int, list[int]]:
    """What the check computed before it was partitioned: one global sort."""
    allh = np.sort(hashes)
    same = allh[1:] == allh[:-1]
    return int(same.sum()), [int(v) for v in np.unique(allh[1:][same])[:keep]]


def partitioned(folder: Path | str, per_rank: list[np.ndarray], parts: int, chunk: int, keep: int = 20
                ) -> tuple[int, list[int]]:
    runs = []
    for rank, arr in enumerate(per_rank):
        sp = idcheck.IdSpiller(str(folder), rank, chunk_ids=chunk)
        for piece in np.array_split(arr, 3):
            sp.add(piece)
        runs.append(sp.close())
    for q in range(parts):
        idcheck.check_partition(str(folder), runs, q, parts, keep=keep)
    return idcheck.collect(str(folder), parts, keep=keep)


# values spread over the whole 64-bit range, with repeats, the extremes and range edges
_edges = [0, 1, (1 << 63) - 1, 1 << 63, (1 << 64) - 1, -(-(1 << 64) // 3), 2 * -(-(1 << 64) // 3)]
hash_values = st.one_of(st.integers(0, (1 << 64) - 1), st.sampled_from(_edges), st.integers(0, 40))


@settings(max_examples=60, deadline=None)
@given(values=st.lists(hash_values, max_size=300), ranks=st.integers(1, 4), parts=st.integers(1, 7),
       chunk=st.integers(1, 50))
def test_partitioned_equals_single_sort(tmp_path_factory: pytest.TempPathFactory, values: list[int], ranks: int,
                                        parts: int, chunk: int) -> None:
    arr = np.array(values, dtype=np.uint64)
    folder = tmp_path_factory.mktemp("ids")
    got = partitioned(folder, np.array_split(arr, ranks), parts, chunk)
    assert got == single_sort(arr)


@given(parts=st.integers(1, 1000))
def test_ranges_cover_everything_once_and_in_order(parts: int) -> None:
    prev_hi = 0
    for q in range(parts):
        lo, hi = idcheck.range_bounds(q, parts)
        assert lo == prev_hi
        if q == parts - 1:
            assert hi is None
        else:
            assert hi is not None and lo < hi < (1 << 64)
            prev_hi = hi


def test_spiller_bounds_memory_and_rerun_drops_old_runs(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 1 << 63, size=1000, dtype=np.uint64)
    sp = idcheck.IdSpiller(str(tmp_path), 2, chunk_ids=300)
    sp.add(arr)
    assert sp.close() == 4 and sp.count == 1000
    files = sorted(os.listdir(tmp_path))
    assert files == ["00002-0000.u64", "00002-0001.u64", "00002-0002.u64", "00002-0003.u64"]
    for i, f in enumerate(files):  # each run is sorted, raw little-endian uint64
        run = np.fromfile(tmp_path / f, dtype="<u8")
        assert np.array_equal(run, np.sort(arr[i * 300:(i + 1) * 300]))
    # a rerun of task 2 (after a kill) starts clean; other tasks' runs are untouched
    (tmp_path / "00003-0000.u64").write_bytes(b"")
    sp = idcheck.IdSpiller(str(tmp_path), 2, chunk_ids=5000)
    assert sorted(os.listdir(tmp_path)) == ["00003-0000.u64"]
    sp.add(arr[:10])
    assert sp.close() == 1


def test_runs_on_object_storage_read_only_their_range(s3_server: S3Server) -> None:  # noqa: F811
    """Runs on S3 (moto's server on 127.0.0.1): ranged reads give the same counts as a local sort."""
    rng = np.random.default_rng(1)
    arr = rng.integers(0, 1 << 64, size=5000, dtype=np.uint64)
    arr = np.concatenate([arr, arr[:37], arr[100:103]])
    folder = s3_server.bucket("idcheck") + "/ids"
    got = partitioned(folder, np.array_split(arr, 3), 4, 700)  # type: ignore[arg-type]
    assert got == single_sort(arr) and got[0] == 40
    assert idcheck._range_slice(idcheck.run_path(folder, 0, 0), *idcheck.range_bounds(1, 4)).size < 700


def test_collect_names_a_missing_range(tmp_path: Path) -> None:
    idcheck.check_partition(str(tmp_path), [0], 0, 2)
    with pytest.raises(FatalError) as e:
        idcheck.collect(str(tmp_path), 2)
    assert str(e.value) == (f"{tmp_path}: duplicate-id check task 1 finished without its result "
                            f"{tmp_path / 'check-2' / '00001.json'}; rerun the same command to redo that task")


def dup_input(tmp_path: Path) -> Path:
    inp = tmp_path / "in"
    for f in range(4):
        rows = [{"id": f"d{f}-{i}", "text": f"t {f} {i}"} for i in range(50)]
        if f >= 2:  # ids of files 0 and 1 reappear: 3 + 3 repeats
            rows += [{"id": f"d{f - 2}-{i}", "text": "again"} for i in range(3)]
        write_jsonl(inp / f"{f}.jsonl", rows)
    return inp


def test_runner_check_is_partitioned_and_counts_as_before(tmp_path: Path) -> None:
    inp = dup_input(tmp_path)
    with pytest.raises(InputError) as e:
        run_stage(CopyStage(CopyConfig()), [str(inp)], str(tmp_path / "out"), RunOptions(id_partitions=5))
    assert str(e.value) == (f"{inp}: 6 document id(s) occur more than once across the input (e.g. 'd0-0', 'd0-1', "
                            "'d0-2', 'd1-0', 'd1-1'); ids must be unique within a dataset. Make them unique "
                            "(e.g. prefix each shard's name) or pass --allow-duplicate-ids")
    out = tmp_path / "out2"
    s = run_stage(CopyStage(CopyConfig()), [str(inp)], str(out), RunOptions(id_partitions=5, allow_duplicate_ids=True))
    assert s["duplicate_ids"] == 6 and s["docs_in"] == 206
    ids = out / "_logs" / "mathcorpus_stats" / "ids"
    results = [json.loads((ids / "check-5" / f"{q:05d}.json").read_text()) for q in range(5)]
    assert sum(r["ids"] for r in results) == 206 and sum(r["extra"] for r in results) == 6
    assert max(r["ids"] for r in results) < 206  # no range saw every id
    assert sorted(os.listdir(ids / "check-5")) == [f"{q:05d}.json" for q in range(5)]
    assert len(list(ids.glob("*.u64"))) == 4  # one sorted run per map task


def test_killed_check_task_resumes(tmp_path: Path) -> None:
    inp = dup_input(tmp_path)
    out = tmp_path / "out"
    opts = RunOptions(id_partitions=3, allow_duplicate_ids=True)
    first = run_stage(CopyStage(CopyConfig()), [str(inp)], str(out), opts)
    logs = out / "_logs"
    # kill during the check: range 1 never wrote its result, finalize never ran
    os.unlink(out / "_run" / "summary.json")
    os.unlink(logs / "mathcorpus_stats" / "ids" / "check-3" / "00001.json")
    os.unlink(logs / "ids-3" / "completions" / "00001")
    again = run_stage(CopyStage(CopyConfig()), [str(inp)], str(out), opts)
    assert again["duplicate_ids"] == first["duplicate_ids"] == 6
    assert (logs / "mathcorpus_stats" / "ids" / "check-3" / "00001.json").exists()
    # another range count after a kill uses its own results, never the old ones
    os.unlink(out / "_run" / "summary.json")
    third = run_stage(CopyStage(CopyConfig()), [str(inp)], str(out), RunOptions(id_partitions=2,
                                                                                  allow_duplicate_ids=True))
    assert third["duplicate_ids"] == 6
    assert (logs / "ids-2" / "completions" / "00001").exists()
