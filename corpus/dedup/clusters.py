"""The global cluster step's pure parts: the keep rule, what it needs of each document, and the
cluster table (one row per clustered document) that the map phase filters with.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus import schema
from corpus.errors import ConfigError, InputError

# ============================================================================ keep rule
KEEP_RULES = ("score", "longest", "first")


def choose_kept(groups: np.ndarray, keys: np.ndarray, ids: pa.Array, lengths: np.ndarray,
                scores: pa.Array, rule: str = "score") -> np.ndarray:
    """For each row, the row index of the document its group keeps.

    ``rule`` ``score`` (the default): highest ``math_score`` first (rows without a score
    come last), then the longest text, then the smallest id, then input order (``keys``);
    ``longest``: the same without the score; ``first``: input order only.
    """
    n = len(groups)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    cols: dict[str, Any] = {"g": pa.array(groups), "k": pa.array(keys)}
    sort_keys = [("g", "ascending")]
    if rule == "score":
        cols["s"] = scores
        sort_keys.append(("s", "descending"))
    if rule in ("score", "longest"):
        cols["l"] = pa.array(lengths)
        cols["i"] = ids
        sort_keys += [("l", "descending"), ("i", "ascending")]
    elif rule != "first":
        raise ConfigError(f"keep must be one of {', '.join(KEEP_RULES)}; got {rule!r}")
    sort_keys.append(("k", "ascending"))
    # nulls sort last in either direction (Arrow's default): a document without a score never wins
    order = pc.sort_indices(pa.table(cols), sort_keys=sort_keys).to_numpy()
    g_sorted = groups[order]
    first = np.ones(n, dtype=bool)
    first[1:] = g_sorted[1:] != g_sorted[:-1]
    # the first row of each group in sorted order is the one kept; spread it over the group
    kept_sorted = order[np.maximum.accumulate(np.where(first, np.arange(n), 0))]
    kept = np.empty(n, dtype=np.int64)
    kept[order] = kept_sorted
    return kept


def _scores(batch: pa.RecordBatch, path: str) -> pa.Array:
    """``math_score`` as float64 (NaN and missing become null), or all null without the column."""
    if schema.MATH_SCORE not in batch.schema.names:
        return pa.nulls(batch.num_rows, pa.float64())
    col = batch.column(schema.MATH_SCORE)
    try:
        col = pc.cast(col, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise InputError(f"{path}: column '{schema.MATH_SCORE}' has type {col.type}, expected a number; "
                         "cast it to float or drop it before dedup") from exc
    return pc.if_else(pc.is_nan(col), pa.scalar(None, pa.float64()), col)


def _meta(batch: pa.RecordBatch, path: str) -> dict[str, pa.Array]:
    """What the keep rule needs of each document: id, text length in characters, score."""
    return {"id": batch.column(schema.ID),
            "length": pc.cast(pc.utf8_length(batch.column(schema.TEXT)), pa.int64()),
            "score": _scores(batch, path)}

# ============================================================================ work files
CLUSTER_SCHEMA = pa.schema([("rank", pa.uint32()), ("idx", pa.uint32()), ("removed", pa.bool_()),
                            ("cluster", pa.string()), ("kept_id", pa.string())])


def _cluster_table(rank: np.ndarray, idx: np.ndarray, removed: np.ndarray, cluster: list[str] | pa.Array,
                   kept_id: pa.Array) -> pa.Table:
    t = pa.table({"rank": pa.array(rank, pa.uint32()), "idx": pa.array(idx, pa.uint32()),
                  "removed": pa.array(removed, pa.bool_()), "cluster": pa.array(cluster, pa.string()),
                  "kept_id": kept_id.cast(pa.string())}, schema=CLUSTER_SCHEMA)
    return t.sort_by([("rank", "ascending"), ("idx", "ascending")])
