"""The ``quality-score`` stage: add ``quality_score`` and ``quality_model``, keep documents above a grade.

Thin glue over :class:`recall.quality.QualityModel` (trained by ``recall train --kind
quality``). The model loads in :meth:`QualityScoreStage.setup`, so the stage pickles as
paths and numbers. Documents scoring below ``min_quality`` are removed with reason
``recall:below_quality`` (``tag_only`` keeps all and only adds the columns). The summary
gets a histogram of scores (half-point bins over 0..5) and the share kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus import schema
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError
from corpus.runner import BatchResult, RunContext, Stage, TaskContext
from recall.quality import SCORE_MAX, SCORE_MIN, QualityModel

REMOVAL_REASON = "recall:below_quality"
DEFAULT_MIN_QUALITY = 3.0
HIST_BINS = 10  # half-point bins over 0..5


@dataclass
class QualityScoreConfig(StageConfig):
    """Options of the quality-score stage (section ``quality_score``)."""

    section: ClassVar[str] = "quality_score"

    model: str = opt(help="Quality model from `recall train --kind quality` (Q.npz with Q.json beside it).")
    min_quality: float = opt(DEFAULT_MIN_QUALITY, help="Keep documents with quality_score >= this (0-5; "
                                                       "FineMath keeps >= 3 or >= 4).")
    tag_only: bool = opt(False, help="Keep every document; only add quality_score and quality_model.")
    device: str | None = opt(None, help="encoder models: torch device for scoring (default: the one it was "
                                        "trained on).")
    batch_size: int | None = opt(None, help="encoder models: documents per forward pass (default: as trained).")

    def validate(self) -> None:
        if not SCORE_MIN <= self.min_quality <= SCORE_MAX:
            raise ConfigError(f"quality score option 'min_quality' must be in [0, 5], got {self.min_quality}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"quality score option 'batch_size' must be at least 1, got {self.batch_size}")


class QualityScoreStage(Stage):
    """Score documents with a quality model; keep those at or above ``min_quality``."""

    name = "quality-score"
    Config = QualityScoreConfig

    def __init__(self, config: QualityScoreConfig) -> None:
        super().__init__(config)
        self.config: QualityScoreConfig = config
        self._model: QualityModel | None = None

    def model(self) -> QualityModel:
        if self._model is None:
            self._model = QualityModel(self.config.model, device=self.config.device,
                                       batch_size=self.config.batch_size)
        return self._model

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["quality_model"] = self.model().tag
        return d

    def prepare(self, run: RunContext) -> None:
        _ = self.model().tag  # checks and hashes the model in the driver, before any task starts

    def setup(self, task: TaskContext) -> None:
        self.model().load()

    def finalize(self, run: RunContext, summary: dict[str, Any]) -> None:
        counters = summary.get("counters", {})
        hist = [int(counters.get(f"quality_bin_{i:02d}", 0)) for i in range(HIST_BINS)]
        total = sum(hist)
        summary["quality"] = {"model": self.model().tag, "scorer": self.model().kind,
                              "min_quality": self.config.min_quality, "tag_only": self.config.tag_only,
                              "histogram": {"bins": HIST_BINS, "range": [SCORE_MIN, SCORE_MAX], "counts": hist},
                              "kept_share": (int(counters.get("quality_kept", 0)) / total) if total else None}

    def process_batch(self, batch: pa.RecordBatch, task: TaskContext) -> BatchResult:
        m = self.model()
        scores = m.score(batch.column(schema.TEXT))
        bins = np.minimum((scores / (SCORE_MAX - SCORE_MIN) * HIST_BINS).astype(np.int64), HIST_BINS - 1)
        for i, c in enumerate(np.bincount(bins, minlength=HIST_BINS).tolist()):
            if c:
                task.counters[f"quality_bin_{i:02d}"] += c
        out = batch
        drop = [c for c in (schema.QUALITY_SCORE, schema.QUALITY_MODEL) if c in out.schema.names]
        if drop:
            out = out.drop_columns(drop)
        out = out.append_column(schema.QUALITY_SCORE, pa.array(scores, pa.float32()))
        out = out.append_column(schema.QUALITY_MODEL, pa.repeat(pa.scalar(m.tag, pa.string()), batch.num_rows))
        keep = scores >= self.config.min_quality
        task.counters["quality_kept"] += int(keep.sum())
        if self.config.tag_only or keep.all():
            return BatchResult(kept=out)
        mask = pa.array(keep)
        removed = out.filter(pc.invert(mask))
        removed = removed.append_column(schema.REMOVAL_REASON,
                                        pa.repeat(pa.scalar(REMOVAL_REASON, pa.string()), removed.num_rows))
        return BatchResult(kept=out.filter(mask), removed=removed)
