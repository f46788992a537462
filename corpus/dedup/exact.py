"""The ``dedup-exact`` stage: a 128-bit hash of every document's normalized text per task,
then one task per hash range groups equal hashes across all tasks and applies the keep rule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus import fs as cfs
from corpus import schema
from corpus.config import StageConfig, opt
from corpus.dedup.clusters import _cluster_table, _meta, choose_kept
from corpus.dedup.stage import (HASH_SCHEMA, _atomic_parquet, _DedupStage, _iter_task_batches, _keep_opt,
                                _keep_work_opt, _read_json)
from corpus.dedup.text import exact_hashes
from corpus.errors import ConfigError, FatalError
from corpus.runner import Phase, RunContext
from corpus.shards import atomic_write_json

@dataclass
class ExactDedupConfig(StageConfig):
    """Options of ``dedup exact`` (section ``dedup-exact`` of a config file)."""

    section: ClassVar[str] = "dedup-exact"

    normalize: str = opt("light", choices=("light", "text", "none"),
                         help="What counts as the same text. 'light': equal after Unicode NFKC, lowercasing and "
                              "collapsing whitespace (every symbol counts, so '3 + 4' and '3 × 4' differ); 'text': "
                              "equal after textnorm.normalize_text, decontam's normalization (drops punctuation, "
                              "operators and layout LaTeX); 'none': byte-identical.")
    partitions: int = opt(0, help="Hash ranges the global step is split into, one task each; more partitions, "
                                  "less memory per task. 0 = one per GiB of input files.")
    keep: str = _keep_opt()
    keep_work: bool = _keep_work_opt()

    def validate(self) -> None:
        if self.partitions < 0 or self.partitions > 4096:
            raise ConfigError(f"{self.section}: partitions must be between 0 (automatic) and 4096, got "
                              f"{self.partitions}")


class ExactDedupStage(_DedupStage):
    """Removes documents whose normalized text is identical to another one, in any shard or task."""

    name = "dedup-exact"
    Config = ExactDedupConfig
    reason = "dedup:exact"
    config: ExactDedupConfig

    def partitions(self, run: RunContext) -> int:
        if self.config.partitions:
            return self.config.partitions
        if run.files is None:  # inputs from a stage that has not run yet: size unknown
            return max(1, min(64, run.tasks // 8))
        import fsspec

        total = 0
        for f in run.all_files():
            fs, path = fsspec.core.url_to_fs(f)
            total += int(fs.size(path) or 0)
        return max(1, min(256, math.ceil(total / (1 << 30))))

    def pre_phases(self, run: RunContext) -> list[Phase]:
        self._partitions = self.partitions(run)
        return [Phase("hash", self._hash_task, run.tasks), Phase("clusters", self._cluster_task, self._partitions)]

    def cluster_files(self, run: RunContext) -> list[str]:
        n = getattr(self, "_partitions", None) or self.partitions(run)
        return [cfs.join(self.work_dir(run), "clusters", f"{p:03d}.parquet") for p in range(n)]

    def _hash_task(self, rank: int, world_size: int, run: RunContext) -> None:
        """Phase 1, one task per input share: hash every document, sorted by hash."""
        parts = [HASH_SCHEMA.empty_table()]
        idx = 0
        for path, batch in _iter_task_batches(run, rank):
            n = batch.num_rows
            h1, h2 = exact_hashes(batch.column(schema.TEXT), self.config.normalize)
            cols: dict[str, Any] = {"h1": h1, "h2": h2, "idx": np.arange(idx, idx + n, dtype=np.uint32)}
            cols.update(_meta(batch, path))
            parts.append(pa.table(cols).cast(HASH_SCHEMA))
            idx += n
        table = pa.concat_tables(parts).sort_by([("h1", "ascending"), ("h2", "ascending"), ("idx", "ascending")])
        _atomic_parquet(table, cfs.join(self.work_dir(run), "hash", f"{rank:05d}.parquet"))

    def _cluster_task(self, part: int, n_parts: int, run: RunContext) -> None:
        """Phase 2, one task per hash range: equal hashes across all tasks form a cluster."""
        wd = self.work_dir(run)
        lo = (part << 64) // n_parts
        hi = ((part + 1) << 64) // n_parts
        filt = pc.field("h1") >= pa.scalar(lo, pa.uint64())
        if hi < (1 << 64):
            filt = filt & (pc.field("h1") < pa.scalar(hi, pa.uint64()))
        tables = []
        for r in range(run.tasks):
            path = cfs.join(wd, "hash", f"{r:05d}.parquet")
            if not cfs.exists(path):
                raise FatalError(f"{path}: the hash file of task {r} is missing although that task is marked done; "
                                 f"delete {run.output} and run the stage again")
            t = cfs.read_parquet(path, filters=filt)
            tables.append(t.append_column("rank", pa.array(np.full(t.num_rows, r, np.uint32))))
        table = pa.concat_tables(tables) if tables else HASH_SCHEMA.empty_table()
        table = table.sort_by([("h1", "ascending"), ("h2", "ascending"), ("rank", "ascending"), ("idx", "ascending")])
        h1 = table.column("h1").to_numpy()
        h2 = table.column("h2").to_numpy()
        n = len(h1)
        start = np.ones(n, dtype=bool)
        start[1:] = (h1[1:] != h1[:-1]) | (h2[1:] != h2[:-1])
        group = np.cumsum(start) - 1
        sizes = np.bincount(group) if n else np.zeros(0, np.int64)
        sel = np.flatnonzero(sizes[group] >= 2) if n else np.zeros(0, np.int64)
        sub = table.take(pa.array(sel))
        ranks = sub.column("rank").to_numpy().astype(np.uint64)
        idxs = sub.column("idx").to_numpy().astype(np.uint64)
        ids = sub.column("id").combine_chunks()
        kept = choose_kept(group[sel], (ranks << np.uint64(32)) | idxs, ids,
                           sub.column("length").to_numpy(), sub.column("score").combine_chunks(), self.config.keep)
        removed = kept != np.arange(len(sel))
        cluster = [f"ex-{a:016x}{b:016x}" for a, b in zip(h1[sel].tolist(), h2[sel].tolist())]
        out = _cluster_table(ranks, idxs, removed, cluster, ids.take(pa.array(kept)))
        _atomic_parquet(out, cfs.join(wd, "clusters", f"{part:03d}.parquet"))
        big = sizes[sizes >= 2]
        atomic_write_json(cfs.join(wd, "clusters", f"{part:03d}.json"), {
            "docs": int(n), "clusters": int(len(big)), "docs_in_clusters": int(len(sel)),
            "removed": int(removed.sum()), "largest_cluster": int(big.max()) if len(big) else 0})

    def global_summary(self, run: RunContext) -> dict[str, Any]:
        total = {"method": "exact", "normalize": self.config.normalize, "keep": self.config.keep,
                 "partitions": len(self.cluster_files(run)), "clusters": 0, "docs_in_clusters": 0, "removed": 0,
                 "largest_cluster": 0}
        for f in self.cluster_files(run):
            s = _read_json(f[: -len(".parquet")] + ".json")
            for k in ("clusters", "docs_in_clusters", "removed"):
                total[k] += s[k]
            total["largest_cluster"] = max(total["largest_cluster"], s["largest_cluster"])
        return total
