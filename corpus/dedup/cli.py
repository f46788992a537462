"""``mathcorpus dedup``: the exact and MinHash near-duplicate commands (thin glue over corpus.dedup)."""

from __future__ import annotations

from typing import Any

import click

from corpus.cli import (config_file_option, emit, inputs_argument, json_option, output_option, run_options_from_kwargs,
                        runner_options, summary_line)
from corpus.config import config_options, resolve
from corpus.dedup.exact import ExactDedupConfig, ExactDedupStage
from corpus.dedup.lsh import curve_table, thresholds_table
from corpus.dedup.minhash import MinhashDedupConfig, MinhashDedupStage
from corpus.runner import run_stage


class _CurveHelp(click.Command):
    """Computes the LSH curve tables for ``--help`` only when help is shown (they take ~0.5 s)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        num_perm = MinhashDedupConfig.num_perm  # the defaults (dataclass class attributes)
        threshold = MinhashDedupConfig.threshold

        def table(text: str) -> None:
            for line in text.splitlines():
                formatter.write(" " * formatter.current_indent + line + "\n")

        formatter.write_paragraph()
        formatter.write_text("How --threshold sets the LSH bands x rows for --num-perm "
                             f"{num_perm}, with the false positive / false negative areas under / over "
                             "the candidate curve (lower is better):")
        formatter.write_paragraph()
        table(thresholds_table(num_perm))
        formatter.write_paragraph()
        formatter.write_text("The candidate curve at the default threshold:")
        formatter.write_paragraph()
        table(curve_table(threshold, num_perm))
        formatter.write_paragraph()
        formatter.write_text("A pair sharing a band is a candidate. With --verify (the default) it is then kept "
                             "only if its whole signatures agree on at least --threshold of the hashes (the "
                             "estimated Jaccard), which removes the false positives of the curve above at the cost "
                             "of a few pairs just over the threshold; verified pairs are joined into clusters with "
                             "union-find.")


def _human(summary: dict[str, Any]) -> None:
    click.echo(summary_line(summary))
    d = summary.get("dedup") or {}
    if d:
        extra = ""
        if d.get("method") == "minhash":
            extra = (f"; {d['bands']} bands x {d['rows']} rows, {d.get('pairs', 0):,} of "
                     f"{d.get('candidate_pairs', 0):,} candidate pairs kept")
        click.echo(f"{d.get('method')}: {d.get('clusters', 0):,} clusters holding {d.get('docs_in_clusters', 0):,} "
                   f"docs, {d.get('removed', 0):,} removed, largest cluster {d.get('largest_cluster', 0):,}{extra}")


@click.group("dedup")
def dedup_group() -> None:
    """Remove exact and near-duplicate documents across all shards and workers.

    Run exact first (cheap, removes copies), then minhash on its output. `dedup
    minhash --help` shows how the threshold sets the LSH bands and the resulting
    false positive / false negative curve.

    \b
    Example:
      mathcorpus dedup exact shards/ -o exact/
      mathcorpus dedup minhash exact/ -o deduped/ --threshold 0.8
    """


@dedup_group.command("exact")
@inputs_argument
@output_option
@config_options(ExactDedupConfig)
@runner_options
@config_file_option
@json_option
def exact_command(inputs: tuple[str, ...], output: str, config_file: str | None, as_json: bool,
                  **kwargs: Any) -> None:
    """Remove documents whose normalized text equals another one's, in any shard or task.

    Hashes every document (two seeded xxh64, 128 bits, stable across processes), groups equal
    hashes over all tasks in a global step, and keeps one document per group (by
    default: highest math_score, then longest text, then smallest id). Removed
    documents go to OUTPUT/_removed/ with dedup_cluster, dedup_kept_id and
    removal_reason dedup:exact.

    \b
    Example:
      mathcorpus dedup exact shards/ -o exact/ --workers 4
      mathcorpus dedup exact shards/ -o exact/ --normalize text --json
    """
    opts = run_options_from_kwargs(kwargs, config_file)
    cfg = resolve(ExactDedupConfig, config_file, kwargs, section=ExactDedupConfig.section)
    emit(run_stage(ExactDedupStage(cfg), list(inputs), output, opts), as_json, _human)


@dedup_group.command("minhash", cls=_CurveHelp)
@inputs_argument
@output_option
@config_options(MinhashDedupConfig)
@runner_options
@config_file_option
@json_option
def minhash_command(inputs: tuple[str, ...], output: str, config_file: str | None, as_json: bool,
                    **kwargs: Any) -> None:
    """Remove near-duplicates with MinHash LSH, across all shards and tasks.

    Shingles are --ngram token n-grams (textnorm tokens: words, each CJK character
    alone, digits kept). Signatures use datatrove's hash family and file formats;
    pairs sharing an LSH band are joined into clusters, and one document per cluster
    is kept (by default: highest math_score, then longest text, then smallest id).
    Removed documents go to OUTPUT/_removed/ with dedup_cluster, dedup_kept_id and
    removal_reason dedup:minhash.

    \b
    Example:
      mathcorpus dedup minhash shards/ -o deduped/
      mathcorpus dedup minhash shards/ -o deduped/ --threshold 0.7 --ngram 5 --num-perm 128 --workers 4
    """
    opts = run_options_from_kwargs(kwargs, config_file)
    cfg = resolve(MinhashDedupConfig, config_file, kwargs, section=MinhashDedupConfig.section)
    emit(run_stage(MinhashDedupStage(cfg), list(inputs), output, opts), as_json, _human)
