"""``mathcorpus stats``: corpus statistics computed with polars over streamed Arrow batches.

Counts docs, bytes and estimated tokens by source and by lang, text-length percentiles and
top domains. Memory stays bounded: each batch is reduced to a few small aggregates (counts
per group, a fixed-size length sample for percentiles) before the next one is read.
"""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

import click
import numpy as np
import polars as pl
import pyarrow as pa

from corpus import schema
from corpus.cli import emit, inputs_argument, json_option
from corpus.errors import InputError, ShardError
from corpus.progress import Progress
from corpus.shards import iter_batches, list_input_files

# A byte-level BPE such as Qwen2.5's averages about 4 bytes per token on English/LaTeX text and
# about 1.4 CJK characters (3 UTF-8 bytes each) per token on Chinese; counting CJK bytes apart
# keeps the estimate honest on mixed corpora without running a tokenizer.
BYTES_PER_TOKEN_LATIN = 4.0
BYTES_PER_TOKEN_CJK = 3 * 1.4
# Percentiles come from a uniform reservoir of this many lengths: exact for small corpora,
# within a fraction of a percent for huge ones, and constant memory.
RESERVOIR = 200_000
PERCENTILES = (1, 10, 25, 50, 75, 90, 99)


def _group(batch_df: pl.DataFrame, col: str) -> pl.DataFrame:
    key = pl.col(col).cast(pl.Utf8).fill_null("(none)") if col in batch_df.columns else pl.lit("(none)")
    return batch_df.group_by(key.alias("key")).agg(
        pl.len().alias("docs"), pl.col("bytes").sum().alias("bytes"), pl.col("tokens").sum().alias("tokens"))


def compute_stats(inputs: list[str], skip_bad_files: bool = False, top_domains: int = 20,
                  seed: int = 0, progress: bool | None = None) -> dict[str, Any]:
    """Stream every input shard and return the stats dict (see module docstring)."""
    files = list_input_files(inputs)
    rng = np.random.default_rng(seed)
    totals = {"docs": 0, "bytes": 0, "tokens": 0}
    by: dict[str, Counter] = {"source": Counter(), "lang": Counter()}
    by_bytes: dict[str, Counter] = {"source": Counter(), "lang": Counter()}
    by_tokens: dict[str, Counter] = {"source": Counter(), "lang": Counter()}
    domains: Counter = Counter()
    reservoir = np.empty(0, dtype=np.int64)
    seen = 0
    bad: list[dict[str, str]] = []
    prog = Progress("stats", enabled=progress)
    for path in files:
        try:
            for batch in iter_batches(path, batch_rows=65536):
                batch = schema.add_domain(batch)
                keep = [c for c in (schema.TEXT, "source", "lang", "domain") if c in batch.schema.names]
                df = pl.from_arrow(pa.Table.from_batches([batch.select(keep)]))
                for c in ("source", "lang", "domain"):
                    if c in df.columns and df.schema[c] != pl.Utf8:
                        df = df.with_columns(pl.col(c).cast(pl.Utf8))
                # CJK code points are 3 bytes in UTF-8; count them apart for the token estimate.
                df = df.with_columns(
                    pl.col(schema.TEXT).str.len_bytes().cast(pl.Int64).alias("bytes"),
                    pl.col(schema.TEXT).str.count_matches(r"[\x{4e00}-\x{9fff}\x{3400}-\x{4dbf}]")
                    .cast(pl.Int64).alias("cjk"),
                ).drop(schema.TEXT)
                df = df.with_columns(((pl.col("bytes") - 3 * pl.col("cjk")) / BYTES_PER_TOKEN_LATIN
                                      + 3 * pl.col("cjk") / BYTES_PER_TOKEN_CJK).alias("tokens"))
                nbytes = df.get_column("bytes").to_numpy()
                tokens = df.get_column("tokens").to_numpy()
                for c in ("source", "lang"):
                    g = _group(df, c)
                    for key, d, b, t in g.iter_rows():
                        by[c][key] += d
                        by_bytes[c][key] += b
                        by_tokens[c][key] += t
                if "domain" in df.columns:
                    g = df.drop_nulls("domain").group_by("domain").agg(pl.len().alias("n"))
                    domains.update(dict(g.iter_rows()))
                n = len(nbytes)
                totals["docs"] += n
                totals["bytes"] += int(nbytes.sum())
                totals["tokens"] += float(tokens.sum())
                # reservoir sample of lengths (Algorithm R, vectorized per batch)
                lens = nbytes
                if len(reservoir) < RESERVOIR:
                    take = min(RESERVOIR - len(reservoir), n)
                    reservoir = np.concatenate([reservoir, lens[:take]])
                    lens = lens[take:]
                    seen += take
                if len(lens):
                    idx = seen + np.arange(1, len(lens) + 1)
                    j = (rng.random(len(lens)) * idx).astype(np.int64)
                    hit = j < RESERVOIR
                    reservoir[j[hit]] = lens[hit]
                    seen += len(lens)
                prog.update(n, int(nbytes.sum()))
        except ShardError as exc:
            if not skip_bad_files:
                raise
            bad.append({"path": path, "error": str(exc)})
    prog.close()
    if totals["docs"] == 0 and not bad:
        raise InputError(f"{', '.join(inputs)}: the input holds no documents")
    pct = {f"p{p}": int(np.percentile(reservoir, p)) for p in PERCENTILES} if len(reservoir) else {}

    def table(c: str) -> list[dict[str, Any]]:
        return [{c: k, "docs": by[c][k], "bytes": by_bytes[c][k], "est_tokens": int(round(by_tokens[c][k]))}
                for k in sorted(by[c], key=lambda k: (-by[c][k], k))]

    return {
        "files": len(files), "docs": totals["docs"], "bytes": totals["bytes"],
        "est_tokens": int(round(totals["tokens"])), "by_source": table("source"), "by_lang": table("lang"),
        "text_bytes_percentiles": pct,
        "top_domains": [{"domain": d, "docs": n} for d, n in sorted(domains.items(), key=lambda x: (-x[1], x[0]))[:top_domains]],
        "bad_files": bad,
    }


def render(stats: dict[str, Any]) -> None:
    """A terminal rendering of :func:`compute_stats` with rich tables (to stdout)."""
    from rich.console import Console
    from rich.table import Table

    con = Console(file=sys.stdout, width=110)
    con.print(f"[bold]{stats['docs']:,}[/] docs, {stats['bytes'] / 1e6:,.1f} MB, "
              f"~{stats['est_tokens']:,} tokens (estimated) in {stats['files']} file(s)")
    for key in ("source", "lang"):
        t = Table(title=f"by {key}")
        for col in (key, "docs", "MB", "est. tokens"):
            t.add_column(col, justify="left" if col == key else "right")
        for row in stats[f"by_{key}"]:
            t.add_row(str(row[key]), f"{row['docs']:,}", f"{row['bytes'] / 1e6:,.2f}", f"{row['est_tokens']:,}")
        con.print(t)
    if stats["text_bytes_percentiles"]:
        t = Table(title="text length (bytes)")
        for k in stats["text_bytes_percentiles"]:
            t.add_column(k, justify="right")
        t.add_row(*[f"{v:,}" for v in stats["text_bytes_percentiles"].values()])
        con.print(t)
    if stats["top_domains"]:
        t = Table(title="top domains")
        t.add_column("domain")
        t.add_column("docs", justify="right")
        for row in stats["top_domains"]:
            t.add_row(row["domain"], f"{row['docs']:,}")
        con.print(t)
    if stats["bad_files"]:
        con.print(f"[yellow]{len(stats['bad_files'])} bad file(s) skipped[/]")


@click.command("stats")
@inputs_argument
@click.option("--skip-bad-files", is_flag=True, help="Skip unreadable files and list them instead of stopping.")
@click.option("--top-domains", default=20, show_default=True, help="How many domains to list.")
@json_option
def stats_command(inputs: tuple[str, ...], skip_bad_files: bool, top_domains: int, as_json: bool) -> None:
    """Docs, bytes and estimated tokens by source and lang, length percentiles, top domains.

    \b
    Example:
      mathcorpus stats demo/sample/
      mathcorpus stats 's3://bucket/shards/*.parquet' --json
    """
    stats = compute_stats(list(inputs), skip_bad_files=skip_bad_files, top_domains=top_domains)
    emit(stats, as_json, render)
