"""A stage that keeps every document: the runner's smallest real user (copy/convert shards)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import pyarrow as pa

from corpus.config import StageConfig
from corpus.runner import BatchResult, Stage, TaskContext


@dataclass
class CopyConfig(StageConfig):
    """The copy stage has no options of its own."""

    section: ClassVar[str] = "copy"


class CopyStage(Stage):
    """Rewrites input shards as validated, zstd Parquet shards (JSONL in, Parquet out)."""

    name = "copy"
    Config = CopyConfig

    def process_batch(self, batch: pa.RecordBatch, task: TaskContext) -> BatchResult:
        return BatchResult(kept=batch)
