"""Reading and presenting a decontam ``REPORT_DIR``: summary view, matched pairs, terminal, JSON, diff.

A report folder is what ``mathcorpus decontam run --report REPORT_DIR`` writes:
``summary.json`` (counts per benchmark, source, domain, the LCS-ratio histogram, unchecked
items, exclusions, config), ``matches.parquet`` (one row per document/item match, with its
tier, ratio and char span) and ``removed/`` (the removed documents, whole).

This module owns everything a person reads about a run:

* :func:`load_report` reads and checks the folder;
* :func:`summary_view` is the one dict behind the terminal tables, ``--json`` and the HTML;
* :func:`select_pairs` / :func:`build_pairs` give matched pairs side by side: the benchmark
  item next to the document window, with the shared spans located for highlighting;
* :func:`diff_reports` says which items and documents became contaminated or clean between
  two runs, and why (the best match on the contaminated side);
* ``render_*`` draw those dicts with rich.

Everything here is read-only over the report folder; the HTML page lives in decontam/html.py.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import xxhash
from rapidfuzz.distance import LCSseq

from corpus import fs as cfs
from corpus import schema
from corpus.errors import ConfigError, InputError
from corpus.textnorm import token_spans

SUMMARY_FILE = "summary.json"
MATCHES_FILE = "matches.parquet"
REMOVED_DIR = "removed"
TIERS = ("exact", "fuzzy", "judge")
REQUIRED_MATCH_COLUMNS = ("doc_id", "benchmark", "item_id", "lcs_ratio", "tier", "removed")
# Longest document window shown for one pair; a window longer than this is cut in the middle
# so that the start and the end of the aligned stretch both stay visible.
MAX_WINDOW_CHARS = 1600
# Characters of document text shown on each side of the aligned window, for context.
CONTEXT_CHARS = 60
# Shared token runs shorter than this are not highlighted: single common words ("the",
# "of", "x") would otherwise speckle both sides without saying anything about the match.
MIN_HIGHLIGHT_RUN = 3

# item lookup: (benchmark, [item_id, ...]) -> {item_id: {field: text}}
ItemLookup = Callable[[str, Sequence[str]], dict[str, dict[str, str]]]


# ----------------------------------------------------------------------------- loading
@dataclass
class Report:
    """One loaded report folder: its summary dict and its matches as a polars DataFrame."""

    path: str
    summary: dict[str, Any]
    matches: pl.DataFrame

    @property
    def removed_dir(self) -> str:
        return cfs.join(self.path, REMOVED_DIR)

    @property
    def threshold(self) -> float | None:
        """The run's LCS-ratio removal threshold (exact tier), when its config records it."""
        return self.threshold_for("exact")

    def threshold_for(self, tier: str) -> float | None:
        """The removal threshold of ``tier``: the fuzzy tier has its own (``fuzzy_lcs_threshold``)."""
        cfg = self.summary.get("config") or {}
        val = cfg.get("fuzzy_lcs_threshold") if tier == "fuzzy" else None
        if not isinstance(val, (int, float)) or isinstance(val, bool):
            val = cfg.get("lcs_threshold")
        return float(val) if isinstance(val, (int, float)) and not isinstance(val, bool) else None


def _empty_matches() -> pl.DataFrame:
    return pl.DataFrame(schema={
        "doc_id": pl.Utf8, "benchmark": pl.Utf8, "item_id": pl.Utf8, "field": pl.Utf8,
        "grams_matched": pl.Int32, "lcs_ratio": pl.Float64, "doc_start": pl.Int64, "doc_end": pl.Int64,
        "tier": pl.Utf8, "matched_grams_sample": pl.Utf8, "source": pl.Utf8, "domain": pl.Utf8,
        "removed": pl.Boolean, "doc_field": pl.Utf8, "contaminated": pl.Boolean,
        "judge_verdict": pl.Utf8, "judge_answer": pl.Utf8, "judge_source": pl.Utf8, "judge_template": pl.Utf8,
        "judge_similarity": pl.Float64,
    })


def _read_matches(path: str) -> pl.DataFrame:
    if cfs.isdir(path):
        files = [f for f in cfs.walk_files(path) if f.endswith(".parquet")]
        if not files:
            return _empty_matches()
        tables = [cfs.read_parquet(f) for f in files]
        table = pa.concat_tables(tables, promote_options="permissive")
    else:
        try:
            table = cfs.read_parquet(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: not a readable Parquet file ({exc}); rerun `mathcorpus decontam run` "
                             "to write the report again") from exc
    df = pl.from_arrow(table)
    assert isinstance(df, pl.DataFrame)  # from_arrow of a Table is always a DataFrame
    missing = [c for c in REQUIRED_MATCH_COLUMNS if c not in df.columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)}; columns found: "
                         f"{', '.join(df.columns) or '(none)'}. This file was not written by "
                         "`mathcorpus decontam run`, or by an older version; rerun it")
    if "contaminated" not in df.columns:
        # an older report without the per-pair verdict: a pair counts as confirmed when it
        # removed its document
        df = df.with_columns(pl.col("removed").alias("contaminated"))
    base = _empty_matches()
    for name, dtype in base.schema.items():
        if name not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=dtype).alias(name))
    casts = {name: dtype for name, dtype in base.schema.items() if df.schema[name] != dtype}
    if casts:
        df = df.with_columns([pl.col(n).cast(t) for n, t in casts.items()])
    return df


def load_report(path: str) -> Report:
    """Read ``REPORT_DIR``; InputError naming the missing or broken file and the fix."""
    if not cfs.isdir(path):
        raise InputError(f"{path}: report folder not found; pass the folder given to "
                         "`mathcorpus decontam run --report`")
    spath = cfs.join(path, SUMMARY_FILE)
    if not cfs.exists(spath):
        raise InputError(f"{path}: not a decontam report folder ({SUMMARY_FILE} is missing); pass the "
                         "folder given to `mathcorpus decontam run --report`, after the run has finished")
    try:
        summary = cfs.read_json(spath)
    except json.JSONDecodeError as exc:
        raise InputError(f"{spath}: invalid JSON on line {exc.lineno} ({exc.msg}); rerun "
                         "`mathcorpus decontam run` to write the report again") from exc
    if not isinstance(summary, dict) or not isinstance(summary.get("benchmarks"), dict):
        raise InputError(f"{spath}: expected an object with a 'benchmarks' mapping; this file was not "
                         "written by `mathcorpus decontam run`")
    mpath = cfs.join(path, MATCHES_FILE)
    matches = _read_matches(mpath) if cfs.exists(mpath) else _empty_matches()
    return Report(path=path, summary=summary, matches=matches)


# ----------------------------------------------------------------------------- summary view
def _pct(part: float, whole: float) -> float:
    return round(100.0 * part / whole, 2) if whole else 0.0


def _top(counts: dict[str, int] | None, n: int) -> list[list[Any]]:
    items = [(str(k), int(v)) for k, v in (counts or {}).items() if v]
    items.sort(key=lambda kv: (-kv[1], kv[0]))
    return [[k, v] for k, v in items[:n]]


def histogram_edges(hist: dict[str, Any]) -> list[float]:
    """Bin edges of a ``{"bins", "counts"}`` histogram, whether ``bins`` holds edges or left edges."""
    bins = [float(b) for b in hist.get("bins", [])]
    counts = hist.get("counts", [])
    if len(bins) == len(counts) + 1:
        return bins
    if len(bins) == len(counts) and bins:
        width = bins[1] - bins[0] if len(bins) > 1 else 1.0 - bins[0]
        return bins + [round(bins[-1] + width, 10)]
    return []


def _histogram(report: Report) -> dict[str, Any]:
    """The summary's LCS histogram, with the same bins split per tier from matches.parquet."""
    hist = report.summary.get("lcs_histogram") or {}
    counts = [int(c) for c in hist.get("counts", [])]
    edges = histogram_edges(hist)
    if not edges:
        edges = [round(i / 10, 1) for i in range(11)]
        counts = []
    nb = len(edges) - 1
    by_tier: dict[str, list[int]] = {}
    m = report.matches
    if m.height:
        ratios = m["lcs_ratio"].fill_null(0.0).to_numpy()
        tiers = m["tier"].fill_null("exact").to_list()
        idx = np.searchsorted(np.asarray(edges[1:-1]), ratios, side="right")
        for t, i in zip(tiers, idx.tolist()):
            by_tier.setdefault(t, [0] * nb)[min(max(i, 0), nb - 1)] += 1
    if not counts:
        counts = [sum(col) for col in zip(*by_tier.values())] if by_tier else [0] * nb
    return {"edges": edges, "counts": counts, "by_tier": by_tier, "total": int(sum(counts))}


def _tier_stats(m: pl.DataFrame) -> dict[str, dict[str, int]]:
    """Per tier: candidate pairs, confirmed pairs, and the documents and items they involve."""
    out: dict[str, dict[str, int]] = {}
    for tier in sorted(set(m["tier"].drop_nulls().to_list()) | set(TIERS)):
        sub = m.filter(pl.col("tier") == tier)
        conf = sub.filter(pl.col("contaminated").fill_null(False))
        rem = sub.filter(pl.col("removed").fill_null(False))
        out[tier] = {
            "matches": sub.height,
            "confirmed": conf.height,
            "docs": conf["doc_id"].n_unique() if conf.height else 0,
            "items": conf.select(["benchmark", "item_id"]).unique().height if conf.height else 0,
            "docs_removed": rem["doc_id"].n_unique() if rem.height else 0,
        }
    return out


def summary_view(report: Report, top: int = 10) -> dict[str, Any]:
    """Everything the terminal summary, ``--json`` and the HTML page show, as one plain dict."""
    s = report.summary
    m = report.matches
    per_tier_items: dict[tuple[str, str], int] = {}
    conf = m.filter(pl.col("contaminated").fill_null(False))
    if conf.height:
        g = conf.group_by(["benchmark", "tier"]).agg(pl.col("item_id").n_unique().alias("n"))
        per_tier_items = {(r["benchmark"], r["tier"]): int(r["n"]) for r in g.iter_rows(named=True)}
    benchmarks = []
    for name in sorted(s["benchmarks"]):
        b = s["benchmarks"][name] or {}
        items = int(b.get("items", 0))
        found = int(b.get("items_found", 0))
        benchmarks.append({
            "name": name,
            "items": items,
            "items_found": found,
            "pct_touched": float(b["pct_touched"]) if "pct_touched" in b else _pct(found, items),
            "docs_removed": int(b.get("docs_removed", 0)),
            "unchecked_short_items": int(b.get("unchecked_short_items", 0)),
            "items_found_exact": per_tier_items.get((name, "exact"), 0),
            "items_found_fuzzy": per_tier_items.get((name, "fuzzy"), 0),
            "items_found_judge": per_tier_items.get((name, "judge"), 0),
        })
    unchecked = {
        b: {"count": int((s["benchmarks"][b] or {}).get("unchecked_short_items", 0)),
            "item_ids": [str(i) for i in (s["benchmarks"][b] or {}).get("unchecked_item_ids", [])]}
        for b in sorted(s["benchmarks"])
        if (s["benchmarks"][b] or {}).get("unchecked_short_items")
    }
    docs_in = int(s.get("docs_in", 0))
    docs_removed = int(s.get("docs_removed", 0))
    return {
        "report_dir": report.path,
        "profile": s.get("profile"),
        "docs_in": docs_in,
        "docs_kept": int(s.get("docs_kept", docs_in - docs_removed)),
        "docs_removed": docs_removed,
        "pct_removed": _pct(docs_removed, docs_in),
        "benchmarks": benchmarks,
        "totals": {
            "items": sum(b["items"] for b in benchmarks),
            "items_found": sum(b["items_found"] for b in benchmarks),
            "unchecked_short_items": sum(b["unchecked_short_items"] for b in benchmarks),
        },
        "top_sources": _top(s.get("by_source"), top),
        "top_domains": _top(s.get("by_domain"), top),
        "sources_total": len([v for v in (s.get("by_source") or {}).values() if v]),
        "domains_total": len([v for v in (s.get("by_domain") or {}).values() if v]),
        "lcs_histogram": _histogram(report),
        "threshold": report.threshold,
        "fuzzy_threshold": report.threshold_for("fuzzy") if m.filter(pl.col("tier") == "fuzzy").height else None,
        "tiers": _tier_stats(m),
        # the judge tier's settings, candidate funnel, verdicts (judge_error included) and calls
        "judge": s.get("judge") or None,
        "matches": m.height,
        "unchecked": unchecked,
        "excluded": s.get("excluded") or {},
        "config": s.get("config") or {},
        # the near-duplicate tier's own coverage: items it did not index (too short or formula-only)
        "fuzzy_skipped": {k: int(v) for k, v in sorted(((s.get("fuzzy") or {}).get("skipped_short_items")
                                                        or {}).items()) if v},
    }


# ----------------------------------------------------------------------------- highlighting
_DIGITS_RE = re.compile(r"\d+")


def display_tokens(text: str, mask_numbers: bool = False) -> list[tuple[int, int, str]]:
    """The matcher's tokens of ``text`` (corpus.textnorm) with their char offsets in ``text``.

    With ``mask_numbers`` every digit run becomes ``#``, as the fuzzy tier compares them.
    """
    tokens, starts, ends = token_spans(text)
    if mask_numbers:
        tokens = [_DIGITS_RE.sub("#", t) for t in tokens]
    return list(zip(starts, ends, tokens))


def shared_spans(a: str, b: str, *, mask_numbers: bool = False, min_run: int = MIN_HIGHLIGHT_RUN
                 ) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Char spans of ``a`` and of ``b`` covered by common token runs of at least ``min_run`` tokens.

    The runs are the equal blocks of a token-level LCS alignment, the same measure the
    ratio uses, so what is highlighted is what made the ratio high.
    """
    ta = display_tokens(a, mask_numbers)
    tb = display_tokens(b, mask_numbers)
    if not ta or not tb:
        return [], []
    ops = LCSseq.opcodes([t[2] for t in ta], [t[2] for t in tb])
    sa: list[tuple[int, int]] = []
    sb: list[tuple[int, int]] = []
    for op in ops:
        if op.tag != "equal" or op.src_end - op.src_start < min_run:
            continue
        sa.append((ta[op.src_start][0], ta[op.src_end - 1][1]))
        sb.append((tb[op.dest_start][0], tb[op.dest_end - 1][1]))
    return sa, sb


def segments(text: str, spans: Sequence[tuple[int, int]]) -> list[tuple[str, bool]]:
    """Split ``text`` into (piece, highlighted) runs from sorted, non-overlapping spans."""
    out: list[tuple[str, bool]] = []
    pos = 0
    for s, e in sorted(spans):
        s = max(s, pos)
        if e <= s:
            continue
        if s > pos:
            out.append((text[pos:s], False))
        out.append((text[s:e], True))
        pos = e
    if pos < len(text):
        out.append((text[pos:], False))
    return out


# ----------------------------------------------------------------------------- pairs
@dataclass
class Pair:
    """One matched (document, benchmark item) pair, ready to show side by side."""

    benchmark: str
    item_id: str
    field: str | None
    tier: str
    lcs_ratio: float
    grams_matched: int | None
    doc_id: str
    doc_start: int | None
    doc_end: int | None
    removed: bool
    contaminated: bool
    source: str | None
    domain: str | None
    matched_grams: list[str] = field(default_factory=list)
    doc_field: str | None = None
    item_text: str | None = None
    doc_window: str | None = None
    # char offset of doc_window inside the document (the window shown includes some context)
    window_offset: int = 0
    item_spans: list[tuple[int, int]] = field(default_factory=list)
    doc_spans: list[tuple[int, int]] = field(default_factory=list)
    # judge tier: verdict (contaminated, clean, judge_error) and the raw answer
    judge_verdict: str | None = None
    judge_answer: str | None = None

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["item_spans"] = [list(s) for s in self.item_spans]
        d["doc_spans"] = [list(s) for s in self.doc_spans]
        return d


VERDICTS = ("all", "contaminated", "below")


def select_pairs(report: Report, n: int | None, *, benchmarks: Sequence[str] = (), min_ratio: float | None = None,
                 tier: str | None = None, order: str = "high", seed: int = 0, verdict: str = "all"
                 ) -> pl.DataFrame:
    """Match rows to show: filtered, then the ``n`` highest/lowest ratios or a seeded sample.

    ``verdict`` keeps all candidate pairs, only ``contaminated`` ones (the rule held) or only
    those ``below`` the rule. ``n=None`` keeps every row that passes the filters.
    """
    m = report.matches
    if verdict == "contaminated":
        m = m.filter(pl.col("contaminated").fill_null(False))
    elif verdict == "below":
        m = m.filter(~pl.col("contaminated").fill_null(False))
    elif verdict != "all":
        raise InputError(f"verdict must be one of {', '.join(VERDICTS)}, got {verdict!r}")
    if benchmarks:
        known = set(report.summary["benchmarks"]) | set(m["benchmark"].unique().to_list())
        unknown = [b for b in benchmarks if b not in known]
        if unknown:
            from corpus.config import closest

            raise InputError(f"--benchmark {unknown[0]}: not in this report{closest(unknown[0], known)} "
                             f"(benchmarks in {report.path}: {', '.join(sorted(known)) or 'none'})")
        m = m.filter(pl.col("benchmark").is_in(list(benchmarks)))
    if min_ratio is not None:
        m = m.filter(pl.col("lcs_ratio") >= min_ratio)
    if tier is not None:
        m = m.filter(pl.col("tier") == tier)
    keys = ["lcs_ratio", "benchmark", "item_id", "doc_id", "doc_start"]
    if order == "high":
        m = m.sort(keys, descending=[True, False, False, False, False], nulls_last=True)
    elif order == "low":
        m = m.sort(keys, nulls_last=True)
    elif order == "sample":
        # ordered by a seeded hash of each pair's identity: the same report gives the same
        # sample, and a run that adds or drops a few pairs leaves the rest of the sample as is
        keys = [xxhash.xxh64_intdigest(f"{b}/{i}/{d}/{ds}/{t}".encode(), seed) for b, i, d, ds, t in
                zip(m["benchmark"].to_list(), m["item_id"].to_list(), m["doc_id"].to_list(),
                    m["doc_start"].to_list(), m["tier"].to_list())]
        m = m.with_columns(pl.Series("_key", keys, dtype=pl.UInt64)).sort("_key").drop("_key")
        return m.head(n) if n is not None else m
    else:
        raise InputError(f"order must be high, low or sample, got {order!r}")
    return m.head(n) if n is not None else m


def _parse_grams(raw: str | None) -> list[str]:
    if not raw:
        return []
    try:
        val = json.loads(raw)
    except json.JSONDecodeError:
        return [raw]
    if isinstance(val, list):
        return [" ".join(g) if isinstance(g, list) else str(g) for g in val]
    return [str(val)]


def read_doc_texts(paths: Iterable[str], doc_ids: set[str]) -> dict[str, dict[str, Any]]:
    """Rows (as dicts) of the documents in ``doc_ids`` found under ``paths``.

    Streams the files batch by batch and keeps only the matching rows, so a large removed/
    folder is never loaded whole.
    """
    from corpus.shards import iter_batches, list_input_files

    out: dict[str, dict[str, Any]] = {}
    if not doc_ids:
        return out
    ids = pa.array(sorted(doc_ids), pa.string())
    for p in paths:
        if not cfs.exists(p):
            continue
        if cfs.isdir(p) and not any(f.endswith(".parquet") or ".jsonl" in cfs.basename(f) for f in cfs.walk_files(p)):
            continue
        for f in list_input_files([p]):
            for batch in iter_batches(f):
                mask = pa.compute.is_in(batch.column(schema.ID), value_set=ids)
                if not pa.compute.any(mask).as_py():
                    continue
                for row in batch.filter(mask).to_pylist():
                    out.setdefault(row[schema.ID], row)
            if len(out) == len(doc_ids):
                return out
    return out


def registry_lookup(benchmark: str, item_ids: Sequence[str], benchmark_files: Sequence[str] = ()
                    ) -> dict[str, dict[str, str]]:
    """Item fields from the benchmark registry: a ``NAME=PATH:...`` file of the run, else bundled data."""
    from decontam import benchmarks as registry

    bench = None
    for spec in benchmark_files:
        if str(spec).split("=", 1)[0].strip() == benchmark:
            bench = registry.load_file_benchmark(str(spec))
    if bench is None:
        bench = registry.load_bundled(benchmark)
    want = {str(i) for i in item_ids}
    return {it.item_id: {"question": it.question, "solution": it.solution, "answer": it.answer,
                         "choices": it.choices, "both": it.both_text()}
            for it in bench.items if it.item_id in want}


def _run_benchmark_files(report: Report) -> list[str]:
    cfg = report.summary.get("config") or {}
    for key in ("benchmark_files", "benchmark_file"):
        val = cfg.get(key)
        if isinstance(val, str) and val:
            return [v for v in val.split(",") if v]
        if isinstance(val, list):
            return [str(v) for v in val]
    return []


def _item_text(fields: dict[str, str] | None, field_name: str | None) -> str | None:
    if not fields:
        return None
    if field_name in fields and fields[field_name]:
        return fields[field_name]
    q = fields.get("question") or ""
    a = fields.get("answer") or fields.get("solution") or ""
    if field_name in ("both", "question+answer", "question+solution") and q and a:
        return f"{q}\n\n{a}"
    if field_name in ("answer", "solution") and a:
        return a
    return q or a or None


_MSG_FIELD_RE = re.compile(r"^(.+)\[(\d+)\]$")


def _field_text(doc: dict[str, Any], doc_field: str | None) -> str:
    """The checked text of a document: ``text``, another column, or one chat message (``messages[2]``)."""
    if doc_field and doc_field in doc and isinstance(doc[doc_field], str):
        return doc[doc_field]
    m = _MSG_FIELD_RE.match(doc_field or "")
    if m and isinstance(doc.get(m.group(1)), list):
        msgs = doc[m.group(1)]
        i = int(m.group(2))
        if i < len(msgs):
            msg = msgs[i]
            return str(msg.get("content") or "") if isinstance(msg, dict) else str(msg)
    val = doc.get(schema.TEXT)
    return val if isinstance(val, str) else ""


def _cut_middle(text: str, limit: int) -> str:
    """Cut a window longer than ``limit`` chars in its middle, keeping its start and its end."""
    if len(text) <= limit:
        return text
    half = limit // 2
    return text[:half] + " … " + text[-half:]


def build_pairs(report: Report, rows: pl.DataFrame, *, lookup: ItemLookup | None = None,
                doc_paths: Sequence[str] = (), context: int = CONTEXT_CHARS,
                max_window: int = MAX_WINDOW_CHARS) -> list[Pair]:
    """Turn match rows into :class:`Pair` objects with item text, document window and spans.

    Document texts come from ``removed/``, then from the run's kept output (the ``output``
    recorded in summary.json, when it still exists) and ``doc_paths``, for matches that did
    not remove their document; item texts from ``lookup`` (default: the benchmark registry).
    Missing texts are left as None and shown as unavailable.
    """
    if lookup is None:
        files = _run_benchmark_files(report)

        def lookup(bench: str, ids: Sequence[str]) -> dict[str, dict[str, str]]:
            return registry_lookup(bench, ids, files)
    want = set(rows["doc_id"].to_list())
    paths = [report.removed_dir]
    out_dir = report.summary.get("output")
    if isinstance(out_dir, str) and cfs.isdir(out_dir):
        paths.append(out_dir)
    docs = read_doc_texts([*paths, *doc_paths], want)
    items: dict[tuple[str, str], dict[str, str]] = {}
    for bench in sorted(set(rows["benchmark"].to_list())):
        ids = sorted(set(rows.filter(pl.col("benchmark") == bench)["item_id"].to_list()))
        try:
            found = lookup(bench, ids)
        except (ConfigError, InputError, LookupError):
            # an unknown or moved benchmark file: show the pair without the item text
            found = {}
        for iid, f in found.items():
            items[(bench, str(iid))] = f
    out = []
    for r in rows.iter_rows(named=True):
        tier = r.get("tier") or "exact"
        item = _item_text(items.get((r["benchmark"], str(r["item_id"]))), r.get("field"))
        doc = docs.get(r["doc_id"])
        window = None
        offset = 0
        if doc is not None:
            text = _field_text(doc, r.get("doc_field"))
            s = r.get("doc_start")
            e = r.get("doc_end")
            s = 0 if s is None else max(0, min(int(s), len(text)))
            e = len(text) if e is None else max(s, min(int(e), len(text)))
            ws, we = max(0, s - context), min(len(text), e + context)
            # widen to whole words at the cut points
            while ws > 0 and ws > s - context - 20 and not text[ws - 1].isspace():
                ws -= 1
            while we < len(text) and we < e + context + 20 and not text[we].isspace():
                we += 1
            raw = text[ws:we]
            # blank lines of the context say nothing; keep the offset of what is shown
            lead = len(raw) - len(raw.lstrip())
            window = _cut_middle(raw.strip(), max_window)
            offset = ws + lead
        pair = Pair(
            benchmark=r["benchmark"], item_id=str(r["item_id"]), field=r.get("field"), tier=tier,
            lcs_ratio=float(r["lcs_ratio"]) if r["lcs_ratio"] is not None else math.nan,
            grams_matched=r.get("grams_matched"), doc_id=r["doc_id"], doc_start=r.get("doc_start"),
            doc_end=r.get("doc_end"), removed=bool(r.get("removed")),
            contaminated=bool(r.get("contaminated")), doc_field=r.get("doc_field"), source=r.get("source"),
            domain=r.get("domain"), matched_grams=_parse_grams(r.get("matched_grams_sample")),
            item_text=item, doc_window=window, window_offset=offset,
            judge_verdict=r.get("judge_verdict"), judge_answer=r.get("judge_answer"),
        )
        if item and window:
            pair.item_spans, pair.doc_spans = shared_spans(item, window, mask_numbers=(tier == "fuzzy"))
        out.append(pair)
    return out


# ----------------------------------------------------------------------------- diff
def _contaminated(report: Report, tier: str | None) -> pl.DataFrame:
    """Confirmed pairs (the LCS-ratio rule held), optionally of one tier."""
    m = report.matches.filter(pl.col("contaminated").fill_null(False))
    return m.filter(pl.col("tier") == tier) if tier else m


def _best(m: pl.DataFrame, keys: list[str]) -> dict[tuple, dict[str, Any]]:
    """Highest-ratio match row per key."""
    if not m.height:
        return {}
    top = m.sort("lcs_ratio", descending=True, nulls_last=True).unique(subset=keys, keep="first",
                                                                        maintain_order=True)
    return {tuple(r[k] for k in keys): r for r in top.iter_rows(named=True)}


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _why(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    return {k: row.get(k) for k in ("benchmark", "item_id", "doc_id", "field", "doc_field", "tier", "lcs_ratio",
                                    "grams_matched", "contaminated", "removed")}


def diff_reports(a: Report, b: Report, *, tier: str | None = None) -> dict[str, Any]:
    """Benchmark items and documents newly contaminated or newly clean from run A to run B.

    A (document, item) pair is contaminated in a run when it passed that run's rule (the
    ``contaminated`` column of matches.parquet); a document or an item is contaminated when
    it has such a pair. Each change carries the best pair that explains it: for a newly
    contaminated one the pair in B; for a newly clean one the pair in A and, when B still
    matched it below its rule, B's best pair (``now``).
    """
    ca, cb = _contaminated(a, tier), _contaminated(b, tier)
    docs_a = set(ca["doc_id"].to_list())
    docs_b = set(cb["doc_id"].to_list())
    items_a = {(r[0], r[1]) for r in ca.select(["benchmark", "item_id"]).unique().iter_rows()}
    items_b = {(r[0], r[1]) for r in cb.select(["benchmark", "item_id"]).unique().iter_rows()}
    best_doc_a, best_doc_b = _best(ca, ["doc_id"]), _best(cb, ["doc_id"])
    all_b = b.matches.filter(pl.col("tier") == tier) if tier else b.matches
    any_doc_b = _best(all_b, ["doc_id"])
    best_item_a, best_item_b = _best(ca, ["benchmark", "item_id"]), _best(cb, ["benchmark", "item_id"])
    any_item_b = _best(all_b, ["benchmark", "item_id"])

    def _item_key(k: tuple[str, str]) -> tuple[str, int, str]:
        return (k[0], int(k[1]) if str(k[1]).isdigit() else -1, str(k[1]))

    new_docs = sorted(docs_b - docs_a)
    clean_docs = sorted(docs_a - docs_b)
    new_items = sorted(items_b - items_a, key=_item_key)
    clean_items = sorted(items_a - items_b, key=_item_key)
    cfg_a, cfg_b = _flat(a.summary.get("config") or {}), _flat(b.summary.get("config") or {})
    config_changes = {k: [cfg_a.get(k), cfg_b.get(k)] for k in sorted(set(cfg_a) | set(cfg_b))
                      if cfg_a.get(k) != cfg_b.get(k)}
    names = sorted(set(a.summary["benchmarks"]) | set(b.summary["benchmarks"]))
    per_bench = []
    for n in names:
        ba, bb = a.summary["benchmarks"].get(n) or {}, b.summary["benchmarks"].get(n) or {}
        per_bench.append({
            "name": n,
            "items_found": [ba.get("items_found"), bb.get("items_found")],
            "docs_removed": [ba.get("docs_removed"), bb.get("docs_removed")],
            "newly_contaminated_items": sum(1 for k in new_items if k[0] == n),
            "newly_clean_items": sum(1 for k in clean_items if k[0] == n),
        })
    warnings = []
    if a.summary.get("docs_in") != b.summary.get("docs_in"):
        warnings.append(f"the runs read different numbers of documents ({a.summary.get('docs_in')} vs "
                        f"{b.summary.get('docs_in')}): some differences may come from the inputs, not the rules")
    return {
        "a": a.path, "b": b.path, "tier": tier or "all",
        "docs_in": [a.summary.get("docs_in"), b.summary.get("docs_in")],
        "docs_contaminated": [len(docs_a), len(docs_b)],
        "docs_removed": [a.summary.get("docs_removed"), b.summary.get("docs_removed")],
        "items_contaminated": [len(items_a), len(items_b)],
        "config_changes": config_changes,
        "benchmarks": per_bench,
        "docs": {
            "newly_contaminated": [{"doc_id": d, "why": _why(best_doc_b.get((d,)))} for d in new_docs],
            "newly_clean": [{"doc_id": d, "why": _why(best_doc_a.get((d,))), "now": _why(any_doc_b.get((d,)))}
                            for d in clean_docs],
            "still_contaminated": len(docs_a & docs_b),
        },
        "items": {
            "newly_contaminated": [{"benchmark": k[0], "item_id": k[1], "why": _why(best_item_b.get(k))}
                                   for k in new_items],
            "newly_clean": [{"benchmark": k[0], "item_id": k[1], "why": _why(best_item_a.get(k)),
                             "now": _why(any_item_b.get(k))} for k in clean_items],
            "still_contaminated": len(items_a & items_b),
        },
        "warnings": warnings,
    }


# ----------------------------------------------------------------------------- terminal
HIGHLIGHT = "bold black on yellow"
HIGHLIGHT_FUZZY = "bold black on bright_cyan"


def _fmt_ratio(r: float | None) -> str:
    return "-" if r is None or (isinstance(r, float) and math.isnan(r)) else f"{r:.3f}"


def _bar(n: int, peak: int, width: int = 30) -> str:
    if not peak or not n:
        return ""
    full = n * width / peak
    return "█" * int(full) + ("▌" if full - int(full) >= 0.5 else "") or "▏"


def _short(v: Any, limit: int = 60) -> str:
    s = v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)
    return s if len(s) <= limit else s[: limit - 1] + "…"


def render_summary(view: dict[str, Any], console: Any) -> None:
    """Draw :func:`summary_view` as rich tables: benchmarks, sources, domains, ratios, unchecked."""
    from rich.columns import Columns
    from rich.table import Table

    cfg = view["config"]
    rules = ", ".join(f"{k}={_short(cfg[k], 30)}" for k in ("policy", "ngram", "lcs_threshold", "fuzzy")
                      if k in cfg)
    console.print(f"[bold]Decontamination report[/bold] {view['report_dir']}"
                  + (f"  (profile [bold]{view['profile']}[/bold])" if view.get("profile") else ""))
    console.print(f"{view['docs_in']:,} documents in, {view['docs_kept']:,} kept, "
                  f"[bold red]{view['docs_removed']:,} removed[/bold red] ({view['pct_removed']}%); "
                  f"{view['matches']:,} matched (document, item) pairs"
                  + "".join(f"; {t} tier: {s['confirmed']:,} of {s['matches']:,} pairs confirmed, in {s['docs']:,} "
                            f"docs" for t, s in view["tiers"].items() if s["matches"]))
    if rules:
        console.print(f"rules: {rules}")
    if view.get("judge"):
        console.print(judge_text(view["judge"]))
    t = Table(title="Per benchmark", title_justify="left", header_style="bold")
    for col, just in (("benchmark", "left"), ("items", "right"), ("items found", "right"),
                      ("% touched", "right"), ("docs removed", "right"), ("exact items", "right"),
                      ("fuzzy items", "right"), ("unchecked (short)", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for b in view["benchmarks"]:
        t.add_row(b["name"], f"{b['items']:,}", f"{b['items_found']:,}", f"{b['pct_touched']:.2f}",
                  f"{b['docs_removed']:,}", f"{b['items_found_exact']:,}", f"{b['items_found_fuzzy']:,}",
                  f"{b['unchecked_short_items']:,}", style="bold" if b["items_found"] else None)
    tot = view["totals"]
    t.add_section()
    t.add_row("total", f"{tot['items']:,}", f"{tot['items_found']:,}", f"{_pct(tot['items_found'], tot['items']):.2f}",
              f"{view['docs_removed']:,}", "", "", f"{tot['unchecked_short_items']:,}")
    console.print(t)

    tables = []
    for key, title, total in (("top_sources", "Top sources by removed docs", view["sources_total"]),
                              ("top_domains", "Top domains by removed docs", view["domains_total"])):
        tt = Table(title=title + (f" ({len(view[key])} of {total})" if total > len(view[key]) else ""),
                   title_justify="left", header_style="bold")
        tt.add_column(key.split("_")[1][:-1])
        tt.add_column("removed", justify="right")
        tt.add_column("% of removed", justify="right")
        for name, n in view[key]:
            tt.add_row(name, f"{n:,}", f"{_pct(n, view['docs_removed']):.1f}")
        if not view[key]:
            tt.add_row("(none)", "", "")
        tables.append(tt)
    console.print(Columns(tables, padding=(0, 4)))

    h = view["lcs_histogram"]
    thr = view.get("threshold")
    # a heading line, not a table title: rich would wrap a title wider than the table
    fthr = view.get("fuzzy_threshold")
    console.print("[italic]LCS-ratio distribution of matches[/italic]"
                  + (f" (removal threshold {thr}" if thr is not None else "")
                  + (f"; fuzzy tier {fthr}" if fthr is not None and fthr != thr else "")
                  + (")" if thr is not None else ""))
    ht = Table(header_style="bold")
    ht.add_column("ratio")
    ht.add_column("matches", justify="right")
    tiers = [tn for tn in TIERS if tn in h["by_tier"]] if len(h["by_tier"]) > 1 else []
    for tn in tiers:
        ht.add_column(tn, justify="right")
    ht.add_column("")
    peak = max(h["counts"], default=0)
    edges = h["edges"]
    for i, c in enumerate(h["counts"]):
        lo, hi = edges[i], edges[i + 1]
        above = thr is not None and lo >= thr
        extra = [f"{h['by_tier'][tn][i]:,}" for tn in tiers]
        ht.add_row(f"{lo:.2f}–{hi:.2f}", f"{c:,}", *extra, _bar(c, peak), style="red" if above else "dim")
    console.print(ht)

    if view["unchecked"]:
        ut = Table(title="Benchmark items not checked (too short to match)", title_justify="left",
                   header_style="bold")
        ut.add_column("benchmark")
        ut.add_column("items", justify="right")
        ut.add_column("item ids (0-based lines)")
        for name, u in view["unchecked"].items():
            ids = u["item_ids"]
            shown = ", ".join(ids[:15]) + (f", … ({len(ids) - 15} more)" if len(ids) > 15 else "")
            ut.add_row(name, f"{u['count']:,}", shown)
        console.print(ut)
    else:
        console.print("Every benchmark item was long enough to check.")
    if view["fuzzy_skipped"]:
        fs = view["fuzzy_skipped"]
        console.print(f"Fuzzy tier: {sum(fs.values()):,} item(s) not indexed (too short or formula-only; the exact "
                      "tier still checks them): " + ", ".join(f"{k} {v:,}" for k, v in fs.items()))
    if view["excluded"]:
        et = Table(title="Excluded from matching", title_justify="left", header_style="bold")
        et.add_column("what")
        et.add_column("value")
        for k, v in _flat(view["excluded"]).items():
            et.add_row(k, _short(v, 90))
        console.print(et)


def judge_text(j: dict[str, Any]) -> str:
    """The judge tier in one line: pairs, verdicts with the errors, calls, and what the pre-filters saved."""
    v, c, f = j["verdicts"], j["calls"], j["funnel"]
    seen = f["seen_exact"] + f["seen_fuzzy"] + f["seen_embed"]
    return (f"Judge tier ({j['template']}, {j['model']}): {f['pairs_judged']:,} pairs judged: "
            f"{v['contaminated']:,} contaminated, {v['clean']:,} clean, {v['judge_error']:,} judge_error (never "
            f"counted clean); {c['sent']:,} calls sent, {c['cached']:,} from cache"
            + (f", {c['failed']:,} failed" if c.get("failed") else "")
            + f"; pre-filters decided {100 * f['prefiltered_share']:.1f}% of {seen:,} unconfirmed pairs without a call")


def render_pairs(pairs: Sequence[Pair], console: Any, thresholds: dict[str, float | None] | None = None
                 ) -> None:
    """Print each pair as a two-column table: benchmark item | document window, shared spans lit."""
    from rich.table import Table
    from rich.text import Text

    if not pairs:
        console.print("No matched pairs pass these filters.")
        return
    for i, p in enumerate(pairs, 1):
        style = HIGHLIGHT_FUZZY if p.tier == "fuzzy" else HIGHLIGHT
        verdict = ("[red]removed[/red]" if p.removed else "[green]kept[/green]") + (
            "" if p.contaminated else " (pair below the rule)")
        grams = f", {p.grams_matched} grams" if p.grams_matched is not None else ""
        if p.tier == "judge":
            verdict += f"  verdict {p.judge_verdict}"
        threshold = (thresholds or {}).get(p.tier)
        title = (f"#{i}  ratio [bold]{_fmt_ratio(p.lcs_ratio)}[/bold]"
                 + (f" (threshold {threshold})" if threshold is not None else "")
                 + f"  tier {p.tier}{grams}  {verdict}")
        t = Table(title=title, title_justify="left", show_lines=False, expand=True, header_style="bold")
        t.add_column(f"{p.benchmark} item {p.item_id}" + (f" ({p.field})" if p.field else ""), ratio=1)
        where = "" if p.doc_start is None else f" chars {p.doc_start}–{p.doc_end}"
        origin = " · ".join(x for x in (p.source, p.domain) if x)
        fld = f" {p.doc_field}" if p.doc_field and p.doc_field != schema.TEXT else ""
        t.add_column(f"document {p.doc_id}{fld}{where}" + (f" [{origin}]" if origin else ""), ratio=1)
        left = Text(p.item_text) if p.item_text else Text("(item text unavailable: benchmark not in the "
                                                          "registry)", style="italic dim")
        right = Text(p.doc_window) if p.doc_window is not None else Text(
            "(document text unavailable: not in removed/; pass --docs with the kept output)", style="italic dim")
        for s, e in p.item_spans:
            left.stylize(style, s, e)
        for s, e in p.doc_spans:
            right.stylize(style, s, e)
        t.add_row(left, right)
        console.print(t)
        if p.matched_grams:
            console.print(Text("matched grams: ", style="dim") + Text(" | ".join(p.matched_grams[:3]), style="dim"))
        if p.tier == "judge":
            console.print(Text("judge answer: ", style="dim") + Text(p.judge_answer if p.judge_answer is not None
                                                                     else "(no answer: the call failed)"))
        console.print()


def render_diff(diff: dict[str, Any], console: Any, limit: int = 20) -> None:
    """Draw :func:`diff_reports`: counts per benchmark, then the changed items and documents."""
    from rich.table import Table

    console.print(f"[bold]Decontam diff[/bold]  A = {diff['a']}   B = {diff['b']}   (tier: {diff['tier']})")
    for w in diff["warnings"]:
        console.print(f"[yellow]warning:[/yellow] {w}")
    if diff["config_changes"]:
        ct = Table(title="Config changes", title_justify="left", header_style="bold")
        for c in ("option", "A", "B"):
            ct.add_column(c)
        for k, (va, vb) in diff["config_changes"].items():
            ct.add_row(k, _short(va), _short(vb))
        console.print(ct)
    else:
        console.print("Same config in both runs.")
    da, db = diff["docs_contaminated"]
    ia, ib = diff["items_contaminated"]
    console.print(f"documents contaminated: {da:,} → {db:,}  (+{len(diff['docs']['newly_contaminated']):,} newly "
                  f"contaminated, −{len(diff['docs']['newly_clean']):,} newly clean)")
    console.print(f"benchmark items contaminated: {ia:,} → {ib:,}  (+{len(diff['items']['newly_contaminated']):,}"
                  f", −{len(diff['items']['newly_clean']):,})")
    bt = Table(title="Per benchmark", title_justify="left", header_style="bold")
    for c, j in (("benchmark", "left"), ("items found A → B", "right"), ("docs removed A → B", "right"),
                 ("+ items", "right"), ("− items", "right")):
        bt.add_column(c, justify=j)  # type: ignore[arg-type]
    for b in diff["benchmarks"]:
        fa, fb = b["items_found"]
        ra, rb = b["docs_removed"]
        bt.add_row(b["name"], f"{fa if fa is not None else '-'} → {fb if fb is not None else '-'}",
                   f"{ra if ra is not None else '-'} → {rb if rb is not None else '-'}",
                   str(b["newly_contaminated_items"]), str(b["newly_clean_items"]))
    console.print(bt)

    def why(w: dict[str, Any] | None, with_doc: bool) -> str:
        if not w:
            return ""
        who = f"doc {w['doc_id']}" if with_doc else f"{w['benchmark']} item {w['item_id']}"
        return f"{who}, ratio {_fmt_ratio(w['lcs_ratio'])} ({w['tier']})"

    for kind, key, label in (("items", "newly_contaminated", "Newly contaminated benchmark items"),
                             ("items", "newly_clean", "Newly clean benchmark items"),
                             ("docs", "newly_contaminated", "Newly contaminated documents"),
                             ("docs", "newly_clean", "Newly clean documents")):
        rows = diff[kind][key]
        if not rows:
            continue
        tt = Table(title=f"{label} ({len(rows):,})" + (f", first {limit}" if len(rows) > limit else ""),
                   title_justify="left", header_style="bold")
        tt.add_column("item" if kind == "items" else "document")
        tt.add_column("best match in " + ("B" if key == "newly_contaminated" else "A"))
        if key == "newly_clean":
            tt.add_column("in B")
        for r in rows[:limit]:
            name = f"{r['benchmark']} {r['item_id']}" if kind == "items" else r["doc_id"]
            cells = [name, why(r["why"], kind == "items")]
            if key == "newly_clean":
                now = r.get("now")
                cells.append(f"matched below the rule, ratio {_fmt_ratio(now['lcs_ratio'])}" if now else "no match")
            tt.add_row(*cells)
        console.print(tt)
