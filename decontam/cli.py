"""``mathcorpus decontam``: run decontamination, build indexes, list benchmarks.

Owns the command line of the decontam package (registered as the ``decontam`` entry point
of ``mathcorpus.commands``). Results go to stdout (``--json`` for machines), progress and
logs to stderr.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from typing import Any

import click

from corpus.cli import (config_file_option, emit, inputs_argument, json_option, output_option,
                        run_options_from_kwargs, runner_options, summary_line)
from corpus import fs as cfs
from corpus.config import config_options, resolve
from corpus.errors import ConfigError, GateTripped
from decontam.benchmarks import PROFILES, load_benchmarks
from decontam.stage import DecontamConfig, DecontamStage, profile_name, report_dir_for


def _benchmark_file_option(fn: Any) -> Any:
    return click.option("--benchmark-file", "benchmark_file", multiple=True, metavar="NAME=PATH:Q,A",
                        help="Add a local .jsonl/.parquet benchmark: NAME=PATH:question_field,answer_field "
                             "(repeatable).")(fn)


class DecontamGroup(click.Group):
    """The ``decontam`` group. ``report`` and ``diff`` (decontam/report_cli.py) are imported on
    first use, not at start-up: they pull in polars and rich, which ``run`` does not need.
    A missing or broken report_cli fails loudly the moment either command is listed or run."""

    _deferred = {"report": "report_command", "diff": "diff_command"}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._deferred))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self._deferred and name not in self.commands:
            from decontam import report_cli

            self.add_command(getattr(report_cli, self._deferred[name]), name)
        return super().get_command(ctx, name)


@click.group("decontam", cls=DecontamGroup)
def decontam_group() -> None:
    """Remove benchmark items from corpora (13-gram + LCS ratio, the Qwen2.5-Math rule).

    \b
    Example:
      mathcorpus decontam benchmarks
      mathcorpus decontam index --benchmarks posttrain -o idx/
      mathcorpus decontam run shards/ -o clean/ --benchmarks posttrain --report report/
    """


@decontam_group.command("run")
@inputs_argument
@output_option
@config_options(DecontamConfig, exclude=("benchmark_file",))
@_benchmark_file_option
@click.option("--dry-run", "dry_run", is_flag=True,
              help="With --judge: run the cheap tiers into a scratch folder and print how many judge calls the "
                   "run would send (answers already cached are not counted); send none, write nothing.")
@runner_options
@config_file_option
@json_option
def run_command(inputs: tuple[str, ...], output: str, config_file: str | None, as_json: bool, dry_run: bool,
                **kwargs: Any) -> None:
    """Check INPUT shards against benchmarks; write clean shards to OUTPUT and a report.

    Kept documents go to OUTPUT, removed ones (with removal_reason decontam:<benchmark>) to
    REPORT_DIR/removed/, every candidate match to REPORT_DIR/matches.parquet and the totals
    to REPORT_DIR/summary.json. The run fails if kept + removed != input.

    \b
    Example:
      mathcorpus decontam run web/ -o clean/ --benchmarks pretrain --report report/
      mathcorpus decontam run sft.jsonl -o sft_clean/ --benchmarks posttrain \\
          --text-fields question,answer --report sft_report/ --fail-on-hit
      mathcorpus decontam run sft.jsonl -o sft_clean/ --benchmarks posttrain --fuzzy \\
          --judge --judge-engine openai --judge-base-url http://localhost:8000/v1 \\
          --judge-model Qwen2.5-72B-Instruct --judge-max-calls 5000 --dry-run
    """
    from corpus.runner import run_stage

    opts = run_options_from_kwargs(kwargs, config_file)
    cfg = resolve(DecontamConfig, config_file, kwargs, section="decontam")
    report = report_dir_for(cfg, output)
    cfg = dataclasses.replace(cfg, report=report)
    if dry_run:
        _dry_run(cfg, list(inputs), opts, report, as_json)
        return
    if opts.removed_dir is None:
        opts = dataclasses.replace(opts, removed_dir=os.path.join(report, "removed"))
    summary = run_stage(DecontamStage(cfg), list(inputs), output, opts)

    def human(s: dict[str, Any]) -> None:
        click.echo(summary_line(s))
        d = s.get("decontam", {})
        hit = ", ".join(d.get("benchmarks_hit", [])) or "none"
        click.echo(f"decontam: {s['removed']:,} document(s) removed (benchmarks hit: {hit}); "
                   f"report in {d.get('report', report)}")
        if d.get("judge"):
            click.echo(judge_line(d["judge"]))

    emit(summary, as_json, human)
    if cfg.fail_on_hit and summary.get("removed", 0) > 0:
        raise GateTripped(f"decontam: {summary['removed']} contaminated document(s) found "
                          f"(see {os.path.join(report, 'summary.json')}); failing because of --fail-on-hit")


def judge_line(j: dict[str, Any]) -> str:
    """One line on the judge tier for the terminal: pairs, verdicts (errors included), calls."""
    v, c, f = j["verdicts"], j["calls"], j["funnel"]
    return (f"judge tier ({j['template']}, {j['model']}): {f['pairs_judged']:,} pair(s) judged of "
            f"{f['candidates']:,} candidate(s): {v['contaminated']:,} contaminated, {v['clean']:,} clean, "
            f"{v['judge_error']:,} judge_error; {c['sent']:,} call(s) sent, {c['cached']:,} answer(s) from cache")


def _dry_run(cfg: DecontamConfig, inputs: list[str], opts: Any, report: str, as_json: bool) -> None:
    """Run the cheap tiers into a scratch folder with the judge counting instead of calling."""
    from corpus.runner import run_stage

    if not cfg.judge:
        raise ConfigError("decontam: --dry-run counts the calls of the judge tier; add --judge (and its engine "
                          "options) or drop --dry-run")
    scratch = tempfile.mkdtemp(prefix="decontam-dry-run-")
    try:
        dcfg = dataclasses.replace(cfg, judge_dry_run=True, report=os.path.join(scratch, "report"),
                                   judge_cache=cfg.judge_cache or os.path.join(report, "judge_cache"))
        dopts = dataclasses.replace(opts, removed_dir=os.path.join(scratch, "report", "removed"),
                                    logging_dir=None, overwrite=False)
        summary = run_stage(DecontamStage(dcfg), inputs, os.path.join(scratch, "out"), dopts)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    j = summary["decontam"]["judge"]
    ways = 2 if cfg.judge_both_ways else 1
    result = {"dry_run": True, "calls": j["calls"]["needed"], "pairs": j["funnel"]["pairs_judged"],
              "cached": j["calls"]["cached"], "ways": ways, "max_calls": cfg.judge_max_calls,
              "docs_in": summary["docs_in"], "funnel": j["funnel"],
              "over_budget": cfg.judge_max_calls is not None and j["calls"]["needed"] > cfg.judge_max_calls}

    def human(r: dict[str, Any]) -> None:
        click.echo(f"decontam --dry-run: {r['calls']:,} judge call(s) would be sent for {r['pairs']:,} pair(s) "
                   f"({r['ways']} way(s) each; {r['cached']:,} answer(s) already cached) over {r['docs_in']:,} "
                   "document(s); nothing was sent or written")
        if r["over_budget"]:
            click.echo(f"decontam --dry-run: that is more than --judge-max-calls {r['max_calls']:,}: the run would "
                       f"stop after {r['max_calls']:,} call(s); rerun it to continue from the cache")

    emit(result, as_json, human)


@decontam_group.command("index")
@click.option("--benchmarks", default=None, help="pretrain, posttrain, all, or names separated by commas "
                                                  "[default: pretrain].")
@_benchmark_file_option
@click.option("-o", "--output", required=True, help="Folder to write the index into.")
@click.option("--ngram", type=int, default=13, show_default=True, help="n-gram length in normalized tokens.")
@click.option("--min-phrase-tokens", type=int, default=8, show_default=True,
              help="Items shorter than ngram but at least this long are indexed as whole phrases.")
@click.option("--max-gram-items", type=int, default=10, show_default=True,
              help="Drop grams that occur in more than this many items.")
@click.option("--strip-figure-code/--no-strip-figure-code", default=True, show_default=True,
              help="Keep Asymptote and TikZ figure code out of the grams.")
@json_option
def index_command(benchmarks: str | None, benchmark_file: tuple[str, ...], output: str, ngram: int,
                  min_phrase_tokens: int, max_gram_items: int, strip_figure_code: bool, as_json: bool) -> None:
    """Build the n-gram index of the selected benchmarks once and save it to a folder.

    Workers of `decontam run --index DIR` memory-map it, so a machine holds it once.

    \b
    Example:
      mathcorpus decontam index --benchmarks posttrain -o idx/
      mathcorpus decontam run shards/ -o clean/ --index idx/ --report report/
    """
    from decontam.index import build_index

    cfg = DecontamConfig.from_mapping({
        "benchmarks": benchmarks, "benchmark_file": list(benchmark_file), "ngram": ngram,
        "min_phrase_tokens": min_phrase_tokens, "max_gram_items": max_gram_items,
        "strip_figure_code": strip_figure_code}, source="command line")
    idx = build_index(load_benchmarks(cfg.benchmarks or "pretrain", cfg.benchmark_file), cfg.index_options(),
                              profile=profile_name(cfg))
    with cfs.local_dir_for_writing(output, last=("meta.json",)) as local:  # a URL: uploaded, meta.json last
        idx.save(local)
    result = {
        "index": output, "benchmarks": idx.benchmark_names(), "items": idx.meta["items"],
        "grams": idx.meta["grams"], "phrases": idx.meta["phrases"], "megabytes": round(idx.nbytes() / 1e6, 1),
        "excluded": idx.meta["excluded"],
        "unchecked": {k: len(v["short"]) + len(v["suppressed"]) for k, v in idx.meta["unchecked"].items()},
    }

    def human(r: dict[str, Any]) -> None:
        ex = r["excluded"]
        click.echo(f"index {r['index']}: {r['items']:,} items from {len(r['benchmarks'])} benchmark(s), "
                   f"{r['grams']:,} grams, {r['phrases']:,} short-item phrases, {r['megabytes']} MB")
        fig = ex["figure_code"]
        fq = ex["frequent_grams"]
        click.echo(f"excluded: figure code in {sum(fig['items_with_figure_code'].values()):,} item(s) "
                   f"({fig['tokens_removed']:,} tokens); {fq['grams_suppressed']:,} gram(s) shared by more "
                   f"than {fq['max_gram_items']} items")
        if r["unchecked"]:
            click.echo("unchecked (too short): " + ", ".join(f"{k} {v}" for k, v in r["unchecked"].items()))

    emit(result, as_json, human)


@decontam_group.command("benchmarks")
@_benchmark_file_option
@json_option
def benchmarks_command(benchmark_file: tuple[str, ...], as_json: bool) -> None:
    """List the available benchmarks: names, item counts, fields, languages and profiles.

    \b
    Example:
      mathcorpus decontam benchmarks
      mathcorpus decontam benchmarks --benchmark-file mine=data/test.jsonl:problem,solution --json
    """
    bs = load_benchmarks("all", list(benchmark_file))
    rows = []
    for b in bs:
        d = b.describe()
        d["profiles"] = [p for p, names in PROFILES.items() if b.name in names]
        rows.append(d)

    def human(rs: list[dict[str, Any]]) -> None:
        click.echo(f"{'name':<20} {'items':>6}  {'lang':<4} {'profiles':<19} fields")
        for r in rs:
            fields = "question=" + "+".join(r["question_fields"])
            for k in ("solution", "answer", "choices"):
                if r[f"{k}_fields"]:
                    fields += f" {k}=" + "+".join(r[f"{k}_fields"])
            click.echo(f"{r['name']:<20} {r['items']:>6}  {r['lang']:<4} {','.join(r['profiles']) or '-':<19} {fields}")
        click.echo(f"profiles: pretrain = {', '.join(PROFILES['pretrain'])}; "
                   f"posttrain = {', '.join(PROFILES['posttrain'])}")

    emit(rows, as_json, human)

