"""``mathcorpus pipeline``: run an ordered list of stages from one YAML/TOML file, resumably.

A pipeline file has an ``executor`` section (the same keys as every command's executor flags),
the ``inputs`` of the first stage, a ``workdir``, and an ordered ``stages`` list. Each stage is
either a registered shard stage (``stage: decontam`` + ``options``, validated by that stage's
config dataclass) or a command step (``run: [recall, train, ...]`` + ``creates: PATH``) for work
that is not a shard-to-shard map, such as training the recall model. Stage *k* reads stage
*k-1*'s output unless it names its own ``inputs`` (paths, or ``@label`` for an earlier stage).

Every stage writes to ``WORKDIR/NN-label/``; a stage whose ``_run/summary.json`` exists is
skipped on rerun, and a killed stage resumes task by task (see corpus/runner.py). The resolved
plan and package version go to ``WORKDIR/pipeline.json``; the run report to
``WORKDIR/report.json`` and ``WORKDIR/report.html``.
"""

from __future__ import annotations

import html
import json
import os
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from corpus import __version__
from corpus.cli import emit, json_option, runner_options, summary_line
from corpus.config import StageConfig, closest, load_config_file
from corpus.errors import ConfigError, FatalError
from corpus.registry import get_stage_class
from corpus.runner import RunOptions, Stage, is_complete, plan_stage, run_stage, stage_summary_path
from corpus.shards import atomic_write_json

TOP_KEYS = ("workdir", "executor", "inputs", "stages", "name")
STAGE_KEYS = ("name", "stage", "options", "inputs", "run", "creates", "executor")


@dataclass
class StepSpec:
    """One resolved step of a pipeline."""

    index: int
    label: str
    output: str
    stage: Stage | None = None
    stage_name: str = ""
    inputs: list[str] = field(default_factory=list)
    argv: list[str] = field(default_factory=list)
    creates: str | None = None
    options: RunOptions | None = None

    @property
    def kind(self) -> str:
        return "stage" if self.stage is not None else "command"

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"index": self.index, "label": self.label, "kind": self.kind, "output": self.output}
        if self.stage is not None:
            d.update(stage=self.stage_name, inputs=self.inputs, config=self.stage.config.to_dict())
        else:
            d.update(run=self.argv, creates=self.creates)
        return d


@dataclass
class Pipeline:
    path: str
    workdir: str
    options: RunOptions
    steps: list[StepSpec]

    def describe(self) -> dict[str, Any]:
        return {"pipeline": self.path, "mathcorpus_version": __version__, "workdir": self.workdir,
                "executor": self.options.to_dict(), "steps": [s.describe() for s in self.steps]}


def _apply_sets(data: dict[str, Any], sets: tuple[str, ...]) -> None:
    """``--set label.key=value`` overrides a stage option; ``--set executor.key=value`` too."""
    labels = {}
    for i, st in enumerate(data.get("stages") or []):
        if isinstance(st, dict):
            labels[str(st.get("name") or st.get("stage") or f"step{i}")] = st
    for item in sets:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise ConfigError(f"--set {item!r}: expected LABEL.KEY=VALUE, e.g. --set decontam.lcs_threshold=0.7")
        lhs, value = item.split("=", 1)
        label, key = lhs.split(".", 1)
        parsed: Any = value
        try:
            parsed = json.loads(value)
        except json.JSONDecodeError:
            pass
        if label == "executor":
            data.setdefault("executor", {})[key] = parsed
            continue
        if label not in labels:
            raise ConfigError(f"--set {item!r}: no stage labelled '{label}'{closest(label, labels)} "
                              f"(labels: {', '.join(labels)})")
        labels[label].setdefault("options", {})[key] = parsed


def load_pipeline(path: str, *, workdir: str | None = None, executor_overrides: dict[str, Any] | None = None,
                  sets: tuple[str, ...] = ()) -> Pipeline:
    """Parse and validate a pipeline file into resolved steps (nothing runs, nothing is written)."""
    data = load_config_file(path)
    _apply_sets(data, sets)
    for k in data:
        if k not in TOP_KEYS:
            raise ConfigError(f"{path}: unknown top-level key '{k}'{closest(k, TOP_KEYS)} "
                              f"(valid keys: {', '.join(TOP_KEYS)})")
    wd = workdir or data.get("workdir")
    if not wd:
        raise ConfigError(f"{path}: set 'workdir' in the file or pass --workdir")
    base = dict(data.get("executor") or {})
    for k, v in (executor_overrides or {}).items():
        if v is not None:
            base[k] = v
    options = RunOptions.from_mapping(base, source=f"{path}: executor")
    stages = data.get("stages")
    if not isinstance(stages, list) or not stages:
        raise ConfigError(f"{path}: 'stages' must be a non-empty list")
    first_inputs = data.get("inputs")
    if isinstance(first_inputs, str):
        first_inputs = [first_inputs]
    steps: list[StepSpec] = []
    by_label: dict[str, StepSpec] = {}
    prev_out: list[str] | None = list(first_inputs) if first_inputs else None
    for i, raw in enumerate(stages):
        where = f"{path}: stages[{i}]"
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: expected a mapping with 'stage' or 'run'")
        for k in raw:
            if k not in STAGE_KEYS:
                raise ConfigError(f"{where}: unknown key '{k}'{closest(k, STAGE_KEYS)} "
                                  f"(valid keys: {', '.join(STAGE_KEYS)})")
        if ("stage" in raw) == ("run" in raw):
            raise ConfigError(f"{where}: give exactly one of 'stage' (a shard stage) or 'run' (a command)")
        label = str(raw.get("name") or raw.get("stage") or f"step{i}")
        if label in by_label:
            raise ConfigError(f"{where}: duplicate stage label '{label}'; give each stage a unique 'name'")
        out = os.path.join(wd, f"{i:02d}-{label}")
        subst = {"workdir": wd, "output": out}
        if "run" in raw:
            argv = raw["run"]
            if isinstance(argv, str):
                argv = shlex.split(argv)
            if not isinstance(argv, list) or not argv:
                raise ConfigError(f"{where}: 'run' must be a command line (list of words or a string)")
            argv = [str(a).format(**subst) for a in argv]
            creates = raw.get("creates")
            step = StepSpec(i, label, out, argv=argv, creates=str(creates).format(**subst) if creates else None)
        else:
            cls = get_stage_class(str(raw["stage"]))
            opts_raw = raw.get("options") or {}
            if not isinstance(opts_raw, dict):
                raise ConfigError(f"{where}: 'options' must be a mapping")
            opts_raw = {k: (v.format(**subst) if isinstance(v, str) else v) for k, v in opts_raw.items()}
            config: StageConfig = cls.Config.from_mapping(opts_raw, source=f"{where} ({label})")
            ins = raw.get("inputs")
            if ins is None:
                if prev_out is None:
                    raise ConfigError(f"{where}: the first shard stage needs 'inputs' (top level or in the stage)")
                inputs = list(prev_out)
            else:
                inputs = []
                for item in ([ins] if isinstance(ins, str) else ins):
                    item = str(item)
                    if item.startswith("@"):
                        ref = item[1:]
                        if ref not in by_label or by_label[ref].kind != "stage":
                            raise ConfigError(f"{where}: inputs '{item}' names no earlier shard stage"
                                              f"{closest(ref, by_label)}")
                        inputs.append(by_label[ref].output)
                    else:
                        inputs.append(item.format(**subst))
            st_opts = options
            if raw.get("executor"):
                merged = {**options.to_dict(), **raw["executor"]}
                st_opts = RunOptions.from_mapping(merged, source=f"{where}: executor")
            step = StepSpec(i, label, out, stage=cls(config), stage_name=str(raw["stage"]), inputs=inputs,
                            options=st_opts)
            prev_out = [out]
        steps.append(step)
        by_label[label] = step
    return Pipeline(path=path, workdir=wd, options=options, steps=steps)


def _run_command_step(step: StepSpec) -> dict[str, Any]:
    if step.creates and os.path.exists(step.creates):
        return {"label": step.label, "skipped": True, "creates": step.creates}
    from corpus.cli import main

    t0 = time.monotonic()
    try:
        main.main(args=step.argv, standalone_mode=False, prog_name="mathcorpus")
    except click.exceptions.ClickException as exc:
        raise ConfigError(f"step '{step.label}' ({' '.join(step.argv)}): {exc.format_message()}") from exc
    except click.exceptions.Exit as exc:
        if exc.exit_code:
            raise FatalError(f"step '{step.label}' ({' '.join(step.argv)}) exited with {exc.exit_code}") from exc
    if step.creates and not os.path.exists(step.creates):
        raise FatalError(f"step '{step.label}' finished but did not create {step.creates}")
    return {"label": step.label, "seconds": round(time.monotonic() - t0, 3), "creates": step.creates}


def run_pipeline(pipe: Pipeline, echo: bool = True) -> dict[str, Any]:
    """Run every step in order (local or Ray), skipping finished ones; returns the run report."""
    os.makedirs(pipe.workdir, exist_ok=True)
    atomic_write_json(os.path.join(pipe.workdir, "pipeline.json"), pipe.describe())
    if pipe.options.executor == "slurm":
        return submit_pipeline(pipe)
    results: list[dict[str, Any]] = []
    n = len(pipe.steps)
    for step in pipe.steps:
        if echo:
            click.echo(f"[{step.index + 1}/{n}] {step.label} ...", err=True)
        if step.kind == "command":
            res = _run_command_step(step)
            results.append({"kind": "command", **res})
            continue
        summary = run_stage(step.stage, step.inputs, step.output, step.options)  # type: ignore[arg-type]
        if echo:
            click.echo("    " + summary_line(summary), err=True)
        results.append({"kind": "stage", "label": step.label, "stage": step.stage_name, **summary})
    report = build_report(pipe, results)
    atomic_write_json(os.path.join(pipe.workdir, "report.json"), report)
    Path(pipe.workdir, "report.html").write_text(render_report_html(report), encoding="utf-8")
    return report


def submit_pipeline(pipe: Pipeline) -> dict[str, Any]:
    """Submit every shard stage as a chain of dependent datatrove Slurm jobs (one sbatch array per phase)."""
    previous = None
    submitted = []
    for step in pipe.steps:
        if step.kind == "command":
            if step.creates and os.path.exists(step.creates):
                continue
            raise ConfigError(f"step '{step.label}' is a command step; run it once locally before submitting "
                              f"to Slurm (it must create {step.creates})")
        deferred = previous is not None
        plan = plan_stage(step.stage, step.inputs, step.output, step.options, depends=previous,  # type: ignore[arg-type]
                          deferred_inputs=deferred)
        if plan.skipped_summary is not None:
            continue
        previous = plan.last
        submitted.append({"label": step.label, "output": step.output, "tasks": plan.run.tasks,
                          "logging_dir": plan.run.logging_dir})
    if previous is not None:
        previous.run()  # datatrove launches every dependency first, with afterok links
    return {"submitted": submitted, "workdir": pipe.workdir}


def _read_json(path: str) -> dict[str, Any] | None:
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    return None


def build_report(pipe: Pipeline, results: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-stage docs/bytes in and out, removals by reason, contamination summary, export manifest."""
    stages = []
    contamination = None
    manifest = None
    for r in results:
        if r["kind"] != "stage":
            stages.append({"label": r["label"], "kind": "command", "creates": r.get("creates"),
                           "skipped": r.get("skipped", False)})
            continue
        row = {k: r.get(k) for k in ("label", "stage", "docs_in", "bytes_in", "kept", "removed",
                                     "removed_by_reason", "bad_files", "output", "seconds", "skipped")}
        row["kind"] = "stage"
        # A stage that writes a report a person reads (decontam) names its summary file in
        # its run summary under its own key; the pipeline only follows the path.
        for key, val in r.items():
            if isinstance(val, dict) and str(val.get("summary", "")).endswith("summary.json"):
                found = _read_json(val["summary"])
                if found is not None:
                    row["report"] = val.get("report")
                    row["report_summary"] = found
                    contamination = found
        m = _read_json(os.path.join(str(r.get("output")), "manifest.json"))
        if m:
            manifest = m
            row["tokens_out"] = m.get("tokens_after_mix", m.get("tokens"))
        stages.append(row)
    return {"pipeline": pipe.path, "workdir": pipe.workdir, "mathcorpus_version": __version__,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "stages": stages,
            "contamination": contamination, "export_manifest": manifest}


def render_report_terminal(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(file=sys.stdout, width=120)
    t = Table(title=f"pipeline {report['pipeline']}")
    for c in ("stage", "docs in", "MB in", "kept", "removed", "removed by reason", "tokens out", "s"):
        t.add_column(c, justify="left" if c in ("stage", "removed by reason") else "right")
    for s in report["stages"]:
        if s["kind"] == "command":
            t.add_row(s["label"], "", "", "", "", "(command step)", "", "")
            continue
        reasons = ", ".join(f"{k}={v}" for k, v in (s.get("removed_by_reason") or {}).items())
        t.add_row(s["label"], f"{s['docs_in']:,}", f"{(s['bytes_in'] or 0) / 1e6:,.2f}", f"{s['kept']:,}",
                  f"{s['removed']:,}", reasons, f"{s['tokens_out']:,}" if s.get("tokens_out") else "",
                  f"{s.get('seconds') or 0:.1f}")
    con.print(t)
    c = report.get("contamination")
    if c and c.get("benchmarks"):
        ct = Table(title="contamination")
        for col in ("benchmark", "items", "items found", "% touched", "docs removed"):
            ct.add_column(col, justify="left" if col == "benchmark" else "right")
        for name, b in c["benchmarks"].items():
            ct.add_row(name, str(b.get("items", "")), str(b.get("items_found", "")),
                       f"{b.get('pct_touched', 0):.2f}", str(b.get("docs_removed", "")))
        con.print(ct)
    m = report.get("export_manifest")
    if m:
        con.print(f"export: {json.dumps({k: m.get(k) for k in ('format', 'tokens', 'documents', 'seq_len', 'dtype') if k in m})}")
    for s in report["stages"]:
        if s.get("report"):
            con.print(f"{s['label']} report: {s['report']}  (mathcorpus decontam report {s['report']} --html x.html)")
        if s.get("tokens_out"):
            con.print(f"shards: {s['output']}")
    con.print(f"run report: {os.path.join(report['workdir'], 'report.html')}")


def render_report_html(report: dict[str, Any]) -> str:
    """A small self-contained HTML run report (no scripts, no external assets)."""
    e = html.escape
    rows = []
    for s in report["stages"]:
        if s["kind"] == "command":
            rows.append(f"<tr><td>{e(s['label'])}</td><td colspan=6>command step"
                        f"{' (skipped, already done)' if s.get('skipped') else ''}</td></tr>")
            continue
        reasons = "<br>".join(f"{e(k)}: {v:,}" for k, v in (s.get("removed_by_reason") or {}).items())
        rows.append(f"<tr><td>{e(s['label'])}</td><td>{s['docs_in']:,}</td><td>{(s['bytes_in'] or 0) / 1e6:,.2f}</td>"
                    f"<td>{s['kept']:,}</td><td>{s['removed']:,}</td><td>{reasons}</td>"
                    f"<td>{s.get('tokens_out') or ''}</td></tr>")
    contam = ""
    c = report.get("contamination")
    if c and c.get("benchmarks"):
        crow = "".join(f"<tr><td>{e(n)}</td><td>{b.get('items', '')}</td><td>{b.get('items_found', '')}</td>"
                       f"<td>{b.get('pct_touched', 0):.2f}</td><td>{b.get('docs_removed', '')}</td></tr>"
                       for n, b in c["benchmarks"].items())
        contam = ("<h2>Contamination</h2><table><tr><th>benchmark</th><th>items</th><th>items found</th>"
                  f"<th>% touched</th><th>docs removed</th></tr>{crow}</table>")
    manifest = ""
    if report.get("export_manifest"):
        manifest = f"<h2>Export manifest</h2><pre>{e(json.dumps(report['export_manifest'], indent=2))}</pre>"
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>mathcorpus run report</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child,th:first-child{{text-align:left}}
pre{{background:#f6f6f6;padding:1em;overflow:auto;max-height:30em}}</style></head><body>
<h1>mathcorpus run report</h1><p>pipeline <code>{e(report['pipeline'])}</code>, workdir <code>{e(report['workdir'])}</code>,
mathcorpus {e(report['mathcorpus_version'])}, finished {e(report['finished'])}</p>
<h2>Stages</h2><table><tr><th>stage</th><th>docs in</th><th>MB in</th><th>kept</th><th>removed</th>
<th>removed by reason</th><th>tokens out</th></tr>{''.join(rows)}</table>{contam}{manifest}</body></html>
"""


def pipeline_status(workdir: str) -> dict[str, Any]:
    """Each step's state (complete, partial with tasks done, pending) and its counts."""
    desc = _read_json(os.path.join(workdir, "pipeline.json"))
    if desc is None:
        raise ConfigError(f"{workdir}: no pipeline.json here; is this a pipeline workdir?")
    out = []
    for st in desc["steps"]:
        row: dict[str, Any] = {"label": st["label"], "kind": st["kind"], "output": st["output"]}
        if st["kind"] == "command":
            row["state"] = "complete" if st.get("creates") and os.path.exists(st["creates"]) else "pending"
        elif is_complete(st["output"]):
            s = _read_json(stage_summary_path(st["output"])) or {}
            row.update(state="complete", docs_in=s.get("docs_in"), kept=s.get("kept"), removed=s.get("removed"))
        elif os.path.exists(os.path.join(st["output"], "_run", "config.json")):
            cfg = _read_json(os.path.join(st["output"], "_run", "config.json")) or {}
            tasks = cfg.get("fingerprint", {}).get("tasks")
            comp = Path(st["output"], "_logs", "map", "completions")
            done = len(list(comp.iterdir())) if comp.is_dir() else 0
            row.update(state="partial", tasks_done=done, tasks=tasks)
        else:
            row["state"] = "pending"
        out.append(row)
    return {"workdir": workdir, "steps": out}


# ----------------------------------------------------------------------------- CLI
@click.group("pipeline")
def pipeline_group() -> None:
    """Run whole recipes from a YAML/TOML file: recall → dedup → decontam → (synth) → export."""


@pipeline_group.command("run")
@click.argument("pipeline_file", type=click.Path(dir_okay=False))
@click.option("--workdir", help="Where stage outputs go (overrides the file's 'workdir').")
@click.option("--set", "sets", multiple=True, metavar="LABEL.KEY=VALUE",
              help="Override one stage option (or executor.KEY=VALUE); repeatable.")
@click.option("--dry-run", is_flag=True, help="Print the resolved plan and exit without running anything.")
@runner_options
@json_option
def run_command(pipeline_file: str, workdir: str | None, sets: tuple[str, ...], dry_run: bool, as_json: bool,
                **kwargs: Any) -> None:
    """Run a pipeline file; finished stages are skipped, a killed run resumes.

    \b
    Example:
      mathcorpus pipeline run demo/pipeline.yaml --workdir demo_out
      mathcorpus pipeline run my.yaml --executor ray --set decontam.lcs_threshold=0.7 --dry-run
    """
    overrides = {k: v for k, v in kwargs.items() if k in RunOptions.field_names() and v is not None}
    pipe = load_pipeline(pipeline_file, workdir=workdir, executor_overrides=overrides, sets=sets)
    if dry_run:
        emit(pipe.describe(), True)
        return
    report = run_pipeline(pipe)
    if "submitted" in report:
        emit(report, True)
        return
    emit(report, as_json, render_report_terminal)


@pipeline_group.command("status")
@click.argument("workdir", type=click.Path(file_okay=False))
@json_option
def status_command(workdir: str, as_json: bool) -> None:
    """Show each stage's state (complete / partial / pending) and counts.

    \b
    Example:
      mathcorpus pipeline status demo_out
    """
    st = pipeline_status(workdir)

    def human(s: dict[str, Any]) -> None:
        for row in s["steps"]:
            extra = ""
            if row["state"] == "complete" and row["kind"] == "stage":
                extra = f"  {row['docs_in']:,} in, {row['kept']:,} kept, {row['removed']:,} removed"
            elif row["state"] == "partial":
                extra = f"  {row['tasks_done']}/{row['tasks']} tasks done"
            click.echo(f"{row['label']:<20} {row['state']:<9}{extra}")

    emit(st, as_json, human)


