"""Glue shared by the dedup stages: the work folder, work-file writing, the task's batch stream
(identical to the map phase's), and the map phase that filters each batch with the cluster table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpus import fs as cfs
from corpus import schema
from corpus.config import opt
from corpus.dedup.clusters import CLUSTER_SCHEMA, KEEP_RULES
from corpus.errors import FatalError, ShardError
from corpus.runner import BatchResult, RunContext, Stage, TaskContext
from corpus.shards import atomic_write_json, iter_batches

WORK_DIR = "_work"


def _atomic_parquet(table: pa.Table, path: str, row_group_rows: int = 65_536) -> None:
    # local: .tmp + rename; object storage: one upload, visible only when whole (corpus.fs)
    try:
        with cfs.AtomicWriter(path) as w:
            pq.write_table(table, w.file, compression="zstd", row_group_size=row_group_rows)
    except OSError as exc:
        raise FatalError(f"{path}: cannot write dedup work file ({exc}); check free space and permissions") from exc


def _remove_prefixed(folder: str, prefix: str) -> None:
    """Delete a task's earlier (possibly partial) work files so a rerun starts clean."""
    cfs.remove_prefixed(folder, prefix)


def _iter_task_batches(run: RunContext, rank: int) -> Iterator[tuple[str, pa.RecordBatch]]:
    """The task's batches exactly as the map phase will see them (same files, order, sizes).

    A file that breaks mid-way with ``skip_bad_files`` ends there, as in the runner, so
    document positions stay aligned with the map phase.
    """
    for path in run.task_files(rank):
        try:
            for batch in iter_batches(path, run.options.batch_rows):
                yield path, batch
        except ShardError:
            if not run.options.skip_bad_files:
                raise


# ============================================================================ stages
def _keep_opt() -> Any:
    return opt("score", help="Which document of a cluster to keep: 'score' = highest math_score (when the column "
                             "exists), then the longest text, then the smallest id; 'longest' = the longest text, "
                             "then the smallest id; 'first' = the first in input order.", choices=KEEP_RULES)


def _keep_work_opt() -> Any:
    return opt(False, help="Keep OUTPUT/_work (hashes, signatures, pairs, clusters) after the run for inspection; "
                           "by default it is deleted once the output is complete.")


class _DedupStage(Stage):
    """Shared glue: the map phase filters batches with the cluster table of its task."""

    reason: ClassVar[str] = "dedup"

    def work_dir(self, run: RunContext) -> str:
        return cfs.join(run.output, WORK_DIR, self.name)

    def cluster_files(self, run: RunContext) -> list[str]:
        raise NotImplementedError

    # ---- map phase
    def setup(self, task: TaskContext) -> None:
        parts = []
        for path in self.cluster_files(task.run):
            if not cfs.exists(path):
                raise FatalError(f"{path}: the dedup cluster file is missing although the global step is marked "
                                 "done (was OUTPUT/_work deleted while the stage was incomplete?); delete "
                                 f"{task.run.output} and run the stage again")
            parts.append(cfs.read_parquet(path, filters=pc.field("rank") == pa.scalar(task.rank, pa.uint32())))
        table = pa.concat_tables(parts).sort_by("idx") if parts else CLUSTER_SCHEMA.empty_table()
        self._idx = table.column("idx").to_numpy().astype(np.int64)
        self._removed = table.column("removed").to_numpy(zero_copy_only=False)
        self._cluster = table.column("cluster").combine_chunks()
        self._kept_id = table.column("kept_id").combine_chunks()
        self._pos = 0

    def process_batch(self, batch: pa.RecordBatch, task: TaskContext) -> BatchResult:
        n = batch.num_rows
        start = self._pos
        self._pos += n
        lo, hi = np.searchsorted(self._idx, [start, start + n])
        if lo == hi:
            return BatchResult(kept=self._with_columns(batch, None, None))
        local = self._idx[lo:hi] - start
        take = np.full(n, -1, dtype=np.int64)
        take[local] = np.arange(lo, hi)
        take_arr = pa.array(take, mask=take < 0)
        cluster = self._cluster.take(take_arr)
        kept_id = self._kept_id.take(take_arr)
        removed = np.zeros(n, dtype=bool)
        removed[local] = self._removed[lo:hi]
        task.counters["clustered_docs"] += int(hi - lo)
        out = self._with_columns(batch, cluster, kept_id)
        keep_mask = pa.array(~removed)
        rem = out.filter(pa.array(removed))
        rem = rem.append_column(schema.REMOVAL_REASON, pa.array([self.reason] * rem.num_rows, pa.string()))
        return BatchResult(kept=out.filter(keep_mask), removed=rem)

    @staticmethod
    def _with_columns(batch: pa.RecordBatch, cluster: pa.Array | None, kept_id: pa.Array | None) -> pa.RecordBatch:
        """Set dedup_cluster / dedup_kept_id, keeping earlier values (e.g. from exact dedup) elsewhere."""
        n = batch.num_rows
        for name, new in ((schema.DEDUP_CLUSTER, cluster), (schema.DEDUP_KEPT_ID, kept_id)):
            if new is None:
                new = pa.nulls(n, pa.string())
            i = batch.schema.get_field_index(name)
            if i >= 0:
                old = batch.column(i)
                old = old if pa.types.is_string(old.type) else pc.cast(old, pa.string())
                batch = batch.set_column(i, name, pc.coalesce(new, old))
            else:
                batch = batch.append_column(name, new)
        return batch

    # ---- driver / finalize
    def finalize(self, run: RunContext, summary: dict[str, Any]) -> None:
        stable = cfs.join(run.output, "_run", "dedup.json")
        info = self.global_summary(run) if cfs.isdir(self.work_dir(run)) else None
        if info is not None:
            atomic_write_json(stable, info)
        elif cfs.exists(stable):  # a rerun after _work was already cleaned up
            info = _read_json(stable)
        summary["dedup"] = info or {}
        if not self.config.keep_work:  # type: ignore[attr-defined]
            cfs.rmtree(cfs.join(run.output, WORK_DIR))

    def global_summary(self, run: RunContext) -> dict[str, Any]:
        raise NotImplementedError


class _ParquetStream:
    """Streams tables into ``path``, which appears whole on close (corpus.fs.AtomicWriter)."""

    def __init__(self, path: str, sch: pa.Schema) -> None:
        self.path, self.schema = path, sch
        self.sink = cfs.AtomicWriter(path)
        self.writer = pq.ParquetWriter(self.sink.file, sch, compression="zstd")

    def write(self, table: pa.Table) -> None:
        self.writer.write_table(table.cast(self.schema))

    def close(self) -> None:
        self.writer.close()
        self.sink.commit()


META_SCHEMA = pa.schema([("id", pa.string()), ("length", pa.int64()), ("score", pa.float64())])
HASH_SCHEMA = pa.schema([("h1", pa.uint64()), ("h2", pa.uint64()), ("idx", pa.uint32())] + list(META_SCHEMA))


def _read_json(path: str) -> dict[str, Any]:
    return cfs.read_json(path)
