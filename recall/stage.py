"""The ``recall-score`` stage: add ``math_score`` and ``recall_model``, then keep or tag documents.

Thin glue over :class:`recall.model.RecallModel`. Models load lazily in :meth:`ScoreStage.setup`
(the stage pickles as paths and numbers). Each batch is preprocessed as whole Arrow arrays
and predicted in one fastText call per model.

Per-source models: with ``source_models`` (``web=web.bin,book=book.bin,code=code.bin``) each
document is scored by the model of its ``source`` column, falling back to ``model``; each
source can have its own threshold in ``source_thresholds``.

Modes:

* ``threshold`` (default 0.5): keep documents with ``math_score >= threshold``;
* ``keep_top R``: keep the fraction R of documents with the highest scores over the whole
  input. Two phases run first: every task scores its files once and saves the scores,
  then one task finds the global cut; the map phase reuses the saved scores;
* ``tag_only``: keep every document, only add the columns.

Removed documents carry ``removal_reason = "recall:below_threshold"``.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus import fs as cfs
from corpus import schema
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError, FatalError, InputError, ShardError
from corpus.runner import BatchResult, Phase, RunContext, Stage, TaskContext
from corpus.shards import atomic_write_bytes, atomic_write_json, iter_batches
from recall.model import RecallModel

REMOVAL_REASON = "recall:below_threshold"
DEFAULT_THRESHOLD = 0.5
HIST_BINS = 20
_SCORES_DIR = "recall_scores"
_CUT_FILE = "recall_keep_top.json"


@dataclass
class ScoreConfig(StageConfig):
    """Options of the recall-score stage (section ``recall_score``)."""

    section: ClassVar[str] = "recall_score"

    model: str | None = opt(None, help="fastText model from `recall train`; scores every document whose "
                                       "source has no entry in source_models.")
    source_models: dict[str, str] = opt(help="Per-source models chosen by the `source` column, e.g. "
                                             "web=web.bin,book=book.bin,code=code.bin.", factory=dict)
    threshold: float | None = opt(None, help="Keep documents with math_score >= this "
                                             f"(default {DEFAULT_THRESHOLD}).")
    source_thresholds: dict[str, float] = opt(help="Per-source thresholds, e.g. web=0.6,code=0.4.",
                                              factory=dict)
    keep_top: float | None = opt(None, help="Instead of a threshold, keep this fraction (0..1] of all "
                                            "documents with the highest math_score.")
    tag_only: bool = opt(False, help="Keep every document; only add math_score and recall_model.")
    default_source: str = opt("web", help="Source assumed for documents without a `source` value.")
    cycle: int | None = opt(None, help="Also write this number into recall_cycle (set by `recall cycle`).")
    select_columns: list[str] = opt(help="Write only these input columns plus the recall columns "
                                         "(default: all columns).", factory=list, cli=False)

    def validate(self) -> None:
        if not self.model and not self.source_models:
            raise ConfigError("recall score needs a model: pass --model MODEL.bin (or source_models "
                              "web=...,book=...)")
        if self.threshold is not None and not 0 <= self.threshold <= 1:
            raise ConfigError(f"recall score option 'threshold' must be in [0, 1], got {self.threshold}")
        for src, t in self.source_thresholds.items():
            if not isinstance(t, (int, float)) or not 0 <= t <= 1:
                raise ConfigError(f"recall score option 'source_thresholds': {src}={t!r} must be a number "
                                  "in [0, 1]")
        if self.keep_top is not None:
            if not 0 < self.keep_top <= 1:
                raise ConfigError(f"recall score option 'keep_top' must be in (0, 1], got {self.keep_top}")
            if self.threshold is not None or self.source_thresholds:
                raise ConfigError("recall score: use either --threshold or --keep-top, not both")
            if self.tag_only:
                raise ConfigError("recall score: --keep-top keeps a share of documents; drop it or --tag-only")

    def threshold_for(self, source: str) -> float:
        t = self.source_thresholds.get(source, self.threshold)
        return DEFAULT_THRESHOLD if t is None else float(t)


class ScoreStage(Stage):
    """Score documents with the recall model(s); keep, remove (below threshold) or only tag."""

    name = "recall-score"
    Config = ScoreConfig

    def __init__(self, config: ScoreConfig) -> None:
        super().__init__(config)
        self.config: ScoreConfig = config
        self._models: dict[str, RecallModel] | None = None
        self._cut: float | None = None
        self._scores_file: str = ""
        self._scores: np.ndarray | None = None
        self._cursor = 0

    # -- models ---------------------------------------------------------------------------
    def models(self) -> dict[str, RecallModel]:
        """Model per source ("" = the default model); checks the files, loads nothing heavy."""
        if self._models is None:
            c = self.config
            models: dict[str, RecallModel] = {}
            by_path: dict[str, RecallModel] = {}
            for key, path in ([("", c.model)] if c.model else []) + sorted(c.source_models.items()):
                if path not in by_path:
                    by_path[path] = RecallModel(path)
                models[key] = by_path[path]
            self._models = models
        return self._models

    def model_for(self, source: str) -> RecallModel:
        models = self.models()
        m = models.get(source) or models.get("")
        if m is None:
            raise InputError(f"documents with source '{source}' have no recall model; add {source}=MODEL.bin to "
                             f"source_models or pass --model (models given for: {', '.join(sorted(models))})")
        return m

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["models"] = {k or "default": m.tag for k, m in self.models().items()}
        return d

    # -- driver side ----------------------------------------------------------------------
    def prepare(self, run: RunContext) -> None:
        for m in self.models().values():
            _ = m.tag  # hash each model once here, not in every task

    def pre_phases(self, run: RunContext) -> list[Phase]:
        if self.config.keep_top is None:
            return []
        return [Phase("keep-top-score", self._phase_score, run.tasks), Phase("keep-top-cut", self._phase_cut, 1)]

    def finalize(self, run: RunContext, summary: dict[str, Any]) -> None:
        counters = summary.get("counters", {})
        hist = [int(counters.get(f"math_score_bin_{i:02d}", 0)) for i in range(HIST_BINS)]
        summary["recall"] = {
            "models": {k or "default": m.tag for k, m in self.models().items()},
            "thresholds": {"default": self.config.threshold_for("")} | dict(self.config.source_thresholds),
            "keep_top": self.config.keep_top, "tag_only": self.config.tag_only,
            "histogram": {"bins": HIST_BINS, "counts": hist},
        }
        if self.config.keep_top is not None:
            summary["recall"]["keep_top_threshold"] = _read_cut(run)

    # -- keep-top phases -----------------------------------------------------------------
    def _phase_score(self, rank: int, world_size: int, run: RunContext) -> None:
        files = run.all_files()
        folder = cfs.join(run.output, "_run", _SCORES_DIR)
        cfs.makedirs(folder)
        for path in run.task_files(rank):
            target = cfs.join(folder, f"{files.index(path):05d}.npy")
            if cfs.exists(target):
                continue  # done before a kill: the file is written atomically
            parts: list[np.ndarray] = []
            try:
                for batch in iter_batches(path, run.options.batch_rows):
                    parts.append(self._score_batch(batch)[0])
            except ShardError:
                if not run.options.skip_bad_files:
                    raise
            scores = np.concatenate(parts) if parts else np.zeros(0, np.float64)
            buf = io.BytesIO()
            np.save(buf, scores)
            atomic_write_bytes(target, buf.getvalue())

    def _phase_cut(self, rank: int, world_size: int, run: RunContext) -> None:
        folder = cfs.join(run.output, "_run", _SCORES_DIR)
        arrays = [np.load(io.BytesIO(cfs.read_bytes(cfs.join(folder, f"{i:05d}.npy"))))
                  for i in range(len(run.all_files()))]
        scores = np.concatenate(arrays) if arrays else np.zeros(0)
        n = len(scores)
        keep = min(n, max(1, math.ceil(self.config.keep_top * n))) if n else 0
        cut = float(np.partition(scores, n - keep)[n - keep]) if keep else 1.0
        atomic_write_json(cfs.join(run.output, "_run", _CUT_FILE),
                          {"keep_top": self.config.keep_top, "documents": n, "threshold": cut,
                           "kept_at_least": keep})

    # -- task side ------------------------------------------------------------------------
    def setup(self, task: TaskContext) -> None:
        for m in self.models().values():
            _ = m.fasttext
            _ = m.tag
        if self.config.keep_top is not None:
            self._cut = _read_cut(task.run)

    def _sources(self, batch: pa.RecordBatch) -> pa.Array | None:
        if not self.config.source_models or schema.SOURCE not in batch.schema.names:
            return None
        src = batch.column(schema.SOURCE)
        if not pa.types.is_string(src.type):
            src = pc.cast(src, pa.string())
        return pc.fill_null(src, self.config.default_source)

    def _score_batch(self, batch: pa.RecordBatch) -> tuple[np.ndarray, pa.Array, np.ndarray]:
        """(scores, recall_model tags, thresholds) for one batch."""
        n = batch.num_rows
        texts = batch.column(schema.TEXT)
        src = self._sources(batch)
        if src is None:
            key = self.config.default_source if self.config.source_models else ""
            m = self.model_for(key)
            scores = m.score(texts)
            return scores, pa.repeat(pa.scalar(m.tag, pa.string()), n), \
                np.full(n, self.config.threshold_for(key))
        scores = np.empty(n, dtype=np.float64)
        thresholds = np.empty(n, dtype=np.float64)
        tags = np.empty(n, dtype=object)
        for value in pc.unique(src).to_pylist():
            idx = np.flatnonzero(pc.equal(src, value).to_numpy(zero_copy_only=False))
            m = self.model_for(value)
            scores[idx] = m.score(texts.take(pa.array(idx)))
            tags[idx] = m.tag
            thresholds[idx] = self.config.threshold_for(value)
        return scores, pa.array(tags, pa.string()), thresholds

    def _stored_scores(self, task: TaskContext, n: int) -> np.ndarray:
        """The keep-top phase's scores for the next ``n`` rows of the current file."""
        if task.current_file != self._scores_file:
            idx = task.run.all_files().index(task.current_file)
            self._scores = np.load(io.BytesIO(cfs.read_bytes(cfs.join(task.run.output, "_run", _SCORES_DIR,
                                                                      f"{idx:05d}.npy"))))
            self._scores_file = task.current_file
            self._cursor = 0
        if self._scores is None or self._cursor + n > len(self._scores):
            raise FatalError(f"{task.current_file}: the keep-top scores saved for this file do not match its "
                             "rows; delete OUTPUT/_run/recall_scores and rerun")
        out = self._scores[self._cursor: self._cursor + n]
        self._cursor += n
        return out

    def process_batch(self, batch: pa.RecordBatch, task: TaskContext) -> BatchResult:
        n = batch.num_rows
        if self.config.keep_top is not None:
            scores = self._stored_scores(task, n)
            src = self._sources(batch)
            if src is None:
                tags: pa.Array = pa.repeat(pa.scalar(self.model_for(
                    self.config.default_source if self.config.source_models else "").tag, pa.string()), n)
            else:
                tags = pa.array([self.model_for(s).tag for s in src.to_pylist()], pa.string())
            thresholds = np.full(n, self._cut if self._cut is not None else 1.0)
        else:
            scores, tags, thresholds = self._score_batch(batch)
        hist = np.bincount(np.minimum((scores * HIST_BINS).astype(np.int64), HIST_BINS - 1), minlength=HIST_BINS)
        for i, c in enumerate(hist.tolist()):
            if c:
                task.counters[f"math_score_bin_{i:02d}"] += c
        out = batch
        if self.config.select_columns:
            out = out.select([c for c in self.config.select_columns if c in out.schema.names])
        drop = [c for c in (schema.MATH_SCORE, schema.RECALL_MODEL, schema.RECALL_CYCLE) if c in out.schema.names]
        if drop:
            out = out.drop_columns(drop)
        out = out.append_column(schema.MATH_SCORE, pa.array(scores, pa.float64()))
        out = out.append_column(schema.RECALL_MODEL, tags)
        if self.config.cycle is not None:
            out = out.append_column(schema.RECALL_CYCLE, pa.repeat(pa.scalar(self.config.cycle, pa.int32()), n))
        if self.config.tag_only:
            return BatchResult(kept=out)
        keep = scores >= thresholds
        task.counters["recalled"] += int(keep.sum())
        if keep.all():
            return BatchResult(kept=out)
        mask = pa.array(keep)
        removed = out.filter(pc.invert(mask))
        removed = removed.append_column(schema.REMOVAL_REASON,
                                        pa.repeat(pa.scalar(REMOVAL_REASON, pa.string()), removed.num_rows))
        return BatchResult(kept=out.filter(mask), removed=removed)


def _read_cut(run: RunContext) -> float:
    return float(cfs.read_json(cfs.join(run.output, "_run", _CUT_FILE))["threshold"])
