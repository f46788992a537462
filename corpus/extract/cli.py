"""``mathcorpus extract``: WARC files, HTML files or HTML columns → documents with math as LaTeX."""

from __future__ import annotations

from typing import Any

import click

from corpus.cli import (
    config_file_option,
    emit,
    inputs_argument,
    json_option,
    output_option,
    run_options_from_kwargs,
    runner_options,
    summary_line,
)
from corpus.config import config_options, resolve
from corpus.extract.stage import ExtractConfig, ExtractStage
from corpus.runner import run_stage


@click.command("extract")
@inputs_argument
@output_option
@config_options(ExtractConfig)
@config_file_option
@runner_options
@json_option
def extract_command(inputs: tuple[str, ...], output: str, config_file: str | None, as_json: bool,
                    **kwargs: Any) -> None:
    """Extract the main text of web pages with every formula kept as LaTeX ($…$, $$…$$).

    \b
    INPUT: WARC files (.warc, .warc.gz, .warc.lz4, .warc.zst; only HTML response records are
    documents, other records are counted), .html files, folders or globs of them (id = path
    relative to the folder without the extension, url from <link rel="canonical">), or
    Parquet/JSONL files with an HTML column (--input-format parquet --html-column NAME).
    OUTPUT: zstd Parquet shards with id, url, domain, text, lang, source, metadata (JSON:
    WARC date, title, HTTP status, content type, encoding, formulas by markup, lang score).
    Removed pages go to OUTPUT/_removed/ with a reason: extract:no_math, extract:empty,
    extract:not_html, extract:lang, extract:http_status, extract:too_large.

    \b
    Example:
      mathcorpus extract crawl/*.warc.gz -o pages/ --langs en,zh --workers 8
      mathcorpus extract site/ -o pages/ --input-format html --keep-nonmath
      mathcorpus extract dump.parquet -o pages/ --input-format parquet --html-column raw_html
    """
    opts = run_options_from_kwargs(kwargs, config_file)
    cfg = resolve(ExtractConfig, config_file, kwargs, section=ExtractConfig.section)
    summary = run_stage(ExtractStage(cfg), list(inputs), output, opts)

    def human(s: dict[str, Any]) -> None:
        click.echo(summary_line(s))
        c = s.get("counters", {})
        maths = ", ".join(f"{k[5:]}: {v:,}" for k, v in sorted(c.items()) if k.startswith("math.")) or "none"
        click.echo(f"extract: formulas by markup: {maths}")
        recs = ", ".join(f"{k[13:]}: {v:,}" for k, v in sorted(c.items()) if k.startswith("warc_records."))
        if recs:
            click.echo(f"extract: WARC records: {recs}")

    emit(summary, as_json, human)
