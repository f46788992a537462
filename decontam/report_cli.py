"""The ``mathcorpus decontam report`` and ``mathcorpus decontam diff`` commands.

Thin click glue over decontam/report.py (terminal and JSON) and decontam/html.py (the
offline page). decontam/cli.py adds both commands to the ``decontam`` group.
Results go to stdout; the path of a written HTML file is announced on stderr.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from typing import Any

import click

from corpus.cli import json_option
from corpus.errors import InputError
from decontam import report as rp


def make_console(file: Any = None) -> Any:
    """A rich console on stdout; at least 120 columns wide when stdout is not a terminal."""
    from rich.console import Console

    out = file or sys.stdout
    width = None if out.isatty() else max(120, shutil.get_terminal_size((120, 40)).columns)
    return Console(file=out, width=width, highlight=False, soft_wrap=False)


def _split(values: tuple[str, ...]) -> list[str]:
    return [v.strip() for raw in values for v in raw.split(",") if v.strip()]


@click.command("report", context_settings={"max_content_width": 100})
@click.argument("report_dir", metavar="REPORT_DIR")
@click.option("--show", "show", type=click.IntRange(min=0), default=0,
              help="Also print N matched pairs side by side: benchmark item | document window, shared spans "
                   "highlighted, with the LCS ratio.")
@click.option("--benchmark", "benchmarks", multiple=True,
              help="Only pairs of these benchmarks (repeat or comma-separate).")
@click.option("--min-ratio", type=click.FloatRange(0.0, 1.0), default=None,
              help="Only pairs whose LCS ratio is at least this.")
@click.option("--tier", type=click.Choice(list(rp.TIERS)), default=None,
              help="Only pairs of this tier: exact (13-gram), fuzzy (near-duplicate) or judge (LLM judge).")
@click.option("--verdict", type=click.Choice(list(rp.VERDICTS)), default="all", show_default=True,
              help="Pairs to show: all candidate pairs, only contaminated ones (the LCS rule held), or only those "
                   "below the rule.")
@click.option("--order", type=click.Choice(["high", "low", "sample"]), default="high", show_default=True,
              help="Which pairs --show picks: highest ratios, lowest ratios, or a seeded random sample.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --order sample.")
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True,
              help="How many sources and domains to list.")
@click.option("--docs", "doc_paths", multiple=True,
              help="More shards to look up documents that were matched but not removed (the run's OUTPUT is "
                   "searched by default while it exists).")
@click.option("--html", "html_out", type=click.Path(dir_okay=False),
              help="Also write one self-contained HTML page (works offline) to this file.")
@click.option("--html-pairs", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Most matched pairs embedded in the HTML page (highest ratios first).")
@json_option
def report_command(report_dir: str, show: int, benchmarks: tuple[str, ...], min_ratio: float | None,
                   tier: str | None, verdict: str, order: str, seed: int, top: int, doc_paths: tuple[str, ...],
                   html_out: str | None, html_pairs: int, as_json: bool) -> None:
    """Summarize a decontam REPORT_DIR: what was removed, from where, and why.

    Prints per benchmark the items, items found, % touched and documents removed; the top
    sources and domains by removed documents; the LCS-ratio distribution; and the benchmark
    items too short to check. --show N adds matched pairs side by side.

    \b
    Example:
      mathcorpus decontam run shards/ -o clean/ --benchmarks pretrain --report rep/
      mathcorpus decontam report rep/
      mathcorpus decontam report rep/ --show 5 --benchmark math --min-ratio 0.8
      mathcorpus decontam report rep/ --html rep.html
      mathcorpus decontam report rep/ --json > rep.json
    """
    report = rp.load_report(report_dir)
    view = rp.summary_view(report, top=top)
    bench = _split(benchmarks)
    pairs: list[rp.Pair] = []
    if show:
        rows = rp.select_pairs(report, show, benchmarks=bench, min_ratio=min_ratio, tier=tier, order=order,
                               seed=seed, verdict=verdict)
        pairs = rp.build_pairs(report, rows, doc_paths=doc_paths)
    elif bench or min_ratio is not None or tier:
        # filters only make sense for the pairs: check them anyway so a typo is not silent
        rp.select_pairs(report, 0, benchmarks=bench, min_ratio=min_ratio, tier=tier)
    if html_out:
        from decontam.html import write_html

        rows = rp.select_pairs(report, html_pairs, benchmarks=bench, min_ratio=min_ratio, tier=tier,
                               order="high", verdict=verdict)
        html_pairs_list = rp.build_pairs(report, rows, doc_paths=doc_paths)
        d = os.path.dirname(os.path.abspath(html_out))
        if "://" not in html_out and not os.path.isdir(d):  # a URL (object storage) needs no folder
            raise InputError(f"--html {html_out}: folder {d} does not exist; create it first")
        write_html(html_out, view, html_pairs_list, total_pairs=report.matches.height)
        click.echo(f"wrote {html_out} ({len(html_pairs_list):,} of {report.matches.height:,} pairs embedded)",
                   err=True)
    if as_json:
        out = dict(view)
        if show:
            out["pairs"] = [p.to_dict() for p in pairs]
        click.echo(json.dumps(out, indent=2, sort_keys=True, default=str))
        return
    console = make_console()
    rp.render_summary(view, console)
    if show:
        console.print()
        rp.render_pairs(pairs, console, {t: report.threshold_for(t) for t in rp.TIERS})


@click.command("diff", context_settings={"max_content_width": 100})
@click.argument("report_a", metavar="REPORT_A")
@click.argument("report_b", metavar="REPORT_B")
@click.option("--tier", type=click.Choice(list(rp.TIERS)), default=None,
              help="Compare only this tier's matches (default: all tiers).")
@click.option("--limit", type=click.IntRange(min=0), default=20, show_default=True,
              help="Most items and documents listed per change (the JSON lists all).")
@json_option
def diff_command(report_a: str, report_b: str, tier: str | None, limit: int, as_json: bool) -> None:
    """Compare two decontam runs: items and documents newly contaminated or newly clean.

    Run A is the before, run B the after (e.g. a pipeline or --lcs-threshold change). Each
    change names the match behind it; config options that differ are listed first.

    \b
    Example:
      mathcorpus decontam run shards/ -o clean1/ --report rep1/ --lcs-threshold 0.6
      mathcorpus decontam run shards/ -o clean2/ --report rep2/ --lcs-threshold 0.8
      mathcorpus decontam diff rep1/ rep2/
      mathcorpus decontam diff rep1/ rep2/ --json
    """
    a = rp.load_report(report_a)
    b = rp.load_report(report_b)
    diff = rp.diff_reports(a, b, tier=tier)
    if as_json:
        click.echo(json.dumps(diff, indent=2, sort_keys=True, default=str))
        return
    rp.render_diff(diff, make_console(), limit=limit)
