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

import json
import shlex
import time
from dataclasses import dataclass, field
from typing import Any

import click

from corpus import __version__
from corpus import fs as cfs
from corpus.cli import emit, json_option, runner_options, summary_line
from corpus.config import StageConfig, closest, load_config_file
from corpus.errors import ConfigError, FatalError
from corpus.registry import get_stage_class
from corpus.runner import RunOptions, Stage, is_complete, plan_stage, run_stage, stage_summary_path
# the run report (report.json / report.html) is built and drawn in corpus/run_report.py
from corpus.run_report import build_report, render_report_html, render_report_terminal, write_report  # noqa: F401
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
        out = cfs.join(wd, f"{i:02d}-{label}")
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
    if step.creates and cfs.exists(step.creates):
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
    if step.creates and not cfs.exists(step.creates):
        raise FatalError(f"step '{step.label}' finished but did not create {step.creates}")
    return {"label": step.label, "seconds": round(time.monotonic() - t0, 3), "creates": step.creates}


def run_pipeline(pipe: Pipeline, echo: bool = True) -> dict[str, Any]:
    """Run every step in order (local or Ray), skipping finished ones; returns the run report."""
    cfs.makedirs(pipe.workdir)
    atomic_write_json(cfs.join(pipe.workdir, "pipeline.json"), pipe.describe())
    if pipe.options.executor == "slurm":
        return submit_pipeline(pipe, echo)
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
    write_report(report, pipe.workdir)
    return report


def submit_pipeline(pipe: Pipeline, echo: bool = True) -> dict[str, Any]:
    """Submit every unfinished shard stage as a chain of dependent Slurm job arrays (one per phase).

    Finished stages are skipped and finished tasks of a stage are not resubmitted, so rerunning
    after a failed or cancelled job resumes. Without ``wait`` returns the job records; with it,
    follows the jobs and returns the same report as a local run.
    """
    from corpus import slurm

    stage_steps = [s for s in pipe.steps if s.kind == "stage"]
    checked: set[str] = set()
    for step in stage_steps:  # each distinct set of executor options once
        key = json.dumps(step.options.to_dict(), sort_keys=True, default=str)  # type: ignore[union-attr]
        if key not in checked:
            slurm.validate(step.options)
            checked.add(key)
    slurm.check_resubmit([s.output for s in stage_steps], pipe.workdir)
    previous = None
    plans = []
    for step in pipe.steps:
        if step.kind == "command":
            if step.creates and cfs.exists(step.creates):
                continue
            raise ConfigError(f"step '{step.label}' is a command step; run it once locally before submitting "
                              f"to Slurm (it must create {step.creates})")
        # a stage after one that is submitted now cannot list its inputs yet: its tasks do
        deferred = previous is not None
        plan = plan_stage(step.stage, step.inputs, step.output, step.options, depends=previous,  # type: ignore[arg-type]
                          deferred_inputs=deferred)
        if plan.skipped_summary is not None:
            continue
        previous = plan.last
        plans.append(plan)
    records = slurm.submit(plans)
    if echo:
        click.echo(slurm.submission_message(records, pipe.workdir), err=True)
    if not pipe.options.wait:
        return {"submitted": records, "workdir": pipe.workdir}
    slurm.wait([s.output for s in stage_steps], lambda line: click.echo(line, err=True) if echo else None)
    results: list[dict[str, Any]] = []
    for step in pipe.steps:
        if step.kind == "command":
            results.append({"kind": "command", "label": step.label, "skipped": True, "creates": step.creates})
        else:
            summary = _read_json(stage_summary_path(step.output)) or {}
            results.append({"kind": "stage", "label": step.label, "stage": step.stage_name, **summary})
    report = build_report(pipe, results)
    write_report(report, pipe.workdir)
    return report


def _read_json(path: str) -> dict[str, Any] | None:
    if cfs.exists(path):
        return cfs.read_json(path)
    return None


def pipeline_status(workdir: str) -> dict[str, Any]:
    """Each step's state and counts: complete, partial (tasks done) or pending; for stages
    submitted to Slurm the job state instead: pending, running, blocked or failed (with the log).

    ``workdir`` is a pipeline workdir, or the output folder of one stage command.
    """
    from corpus import slurm

    desc = _read_json(cfs.join(workdir, "pipeline.json"))
    if desc is None:
        cfg = _read_json(cfs.join(workdir, "_run", "config.json"))
        if cfg is None:
            raise ConfigError(f"{workdir}: neither a pipeline workdir (pipeline.json) nor a stage output folder "
                              "(_run/config.json)")
        desc = {"steps": [{"label": cfg.get("fingerprint", {}).get("stage", "stage"), "kind": "stage",
                           "output": workdir}]}
    recs = [slurm.read_jobs(st["output"]) for st in desc["steps"] if st["kind"] == "stage"]
    ids = [j for r in recs if r for j in slurm.all_job_ids(r, False)]
    jobs = slurm.query_jobs(ids) if ids else {}
    out = []
    for st in desc["steps"]:
        row: dict[str, Any] = {"label": st["label"], "kind": st["kind"], "output": st["output"]}
        if st["kind"] == "command":
            row["state"] = "complete" if st.get("creates") and cfs.exists(st["creates"]) else "pending"
        elif is_complete(st["output"]):
            s = _read_json(stage_summary_path(st["output"])) or {}
            row.update(state="complete", docs_in=s.get("docs_in"), kept=s.get("kept"), removed=s.get("removed"))
        elif cfs.exists(cfs.join(st["output"], "_run", "config.json")):
            cfg = _read_json(cfs.join(st["output"], "_run", "config.json")) or {}
            tasks = cfg.get("fingerprint", {}).get("tasks")
            done = len(cfs.listdir(cfs.join(st["output"], "_logs", "map", "completions")))
            row.update(state="partial", tasks_done=done, tasks=tasks)
        else:
            row["state"] = "pending"
        sl = slurm.stage_state(st["output"], jobs) if st["kind"] == "stage" else None
        if sl is not None and sl["state"] == "pending" and any(r.get("state") in ("failed", "blocked") for r in out):
            sl = {**sl, "state": "blocked", "reason": "an earlier stage's job failed or was cancelled"}
        if sl is not None:
            row["slurm"] = sl
            if row["state"] != "complete":
                row["state"] = sl["state"]
                row["detail"] = slurm.describe_state(sl)
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
    """Show each stage's state and counts; for Slurm jobs: pending, running, failed (with its log), complete.

    WORKDIR is a pipeline workdir or the output folder of a single stage command.

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
            elif row.get("detail"):
                extra = "  " + row["detail"].split(": ", 1)[-1]
            click.echo(f"{row['label']:<20} {row['state']:<9}{extra}")

    emit(st, as_json, human)


