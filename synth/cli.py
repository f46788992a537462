"""``mathcorpus synth``: run teacher synthesis from the command line, behind the decontamination gate.

Owns the ``synth`` command group and the composition of the gate: ``synth run`` writes
the teacher's output to a staging folder, then runs the registered ``decontam`` stage
(looked up through corpus' stage registry, so synth/ never imports decontam/) with the
posttrain profile over it. Accepted records land in OUTPUT; records that match a
benchmark go to ``OUTPUT/_rejected/`` with the decontam report in ``OUTPUT/_decontam/``.
Only ``--no-decontam`` skips the gate.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import click

from corpus.cli import (config_file_option, emit, inputs_argument, json_option, output_option, run_options_from_kwargs,
                        runner_options, summary_line)
from corpus.config import config_options, load_config_file, resolve
from corpus.errors import ConfigError
from corpus.registry import get_stage_class
from corpus.runner import RunOptions, run_stage
from synth.stage import SynthConfig, SynthStage
from synth.tasks import BUNDLED_DIR, list_templates, load_template, parse_template

REJECTED_DIR = "_rejected"
REPORT_DIR = "_decontam"
GATE_PROFILE = "posttrain"


def default_staging(output: str) -> str:
    """Where ungated synth output goes: beside OUTPUT (the runner refuses inputs inside it)."""
    return os.path.normpath(output).rstrip(os.sep) + ".staging"


def _section(config_file: str | None, name: str) -> dict[str, Any] | None:
    """The ``name`` section of a config file, or None when the file has no such section."""
    if not config_file:
        return None
    data = load_config_file(config_file)
    sec = data.get(name)
    return sec if isinstance(sec, dict) else None


def synth_config_from(config_file: str | None, overrides: dict[str, Any]) -> SynthConfig:
    """The synth config: the file's ``synth`` section (or the whole file if flat), then flags."""
    return resolve(SynthConfig, config_file, overrides, section="synth")


def gate_config(stage_cls: Any, config_file: str | None, output: str, benchmarks: str) -> Any:
    """Decontam config for the gate: posttrain profile, report under OUTPUT/_decontam/.

    A ``decontam`` section in the config file may tune it (e.g. thresholds); the profile
    given on the command line wins.
    """
    cfg_cls = stage_cls.Config
    names = set(cfg_cls.field_names())
    data = dict(_section(config_file, "decontam") or {})
    data["benchmarks"] = benchmarks
    for key in ("report", "report_dir"):
        if key in names:
            data.setdefault(key, os.path.join(output, REPORT_DIR))
            break
    return cfg_cls.from_mapping(data, source=str(config_file) if config_file else "synth gate")


def run_synth(inputs: list[str], output: str, cfg: SynthConfig, opts: RunOptions, *, gate: bool = True,
              staging: str | None = None, benchmarks: str = GATE_PROFILE,
              config_file: str | None = None) -> dict[str, Any]:
    """Run the synth stage, then (unless ``gate`` is False) the decontamination gate.

    Returns ``{"synth": summary, "gate": summary or None, "output": ..., "rejected": ...}``.
    """
    stage = SynthStage(cfg)
    if not gate:
        s = run_stage(stage, inputs, output, opts)
        return {"synth": s, "gate": None, "output": output, "staging": None, "rejected_dir": None}
    staging = staging or default_staging(output)
    if os.path.abspath(staging) == os.path.abspath(output):
        raise ConfigError(f"--staging {staging} must differ from the output folder")
    s1 = run_stage(stage, inputs, staging, opts)
    try:
        decontam_cls = get_stage_class("decontam")
    except ImportError as exc:
        raise ConfigError(f"the decontamination gate needs the 'decontam' stage, which could not be loaded "
                          f"({exc}); reinstall mathcorpus, or pass --no-decontam to write unchecked output") from exc
    dcfg = gate_config(decontam_cls, config_file, output, benchmarks)
    rejected_dir = os.path.join(output, REJECTED_DIR)
    opts2 = dataclasses.replace(opts, removed_dir=rejected_dir, logging_dir=None)
    if s1.get("kept", 0) == 0:
        # nothing was accepted: there is nothing to check, and the runner needs input files
        os.makedirs(output, exist_ok=True)
        gate_summary: dict[str, Any] = {"stage": decontam_cls.name, "docs_in": 0, "kept": 0, "removed": 0,
                                        "removed_by_reason": {}, "bad_files": [], "output": output,
                                        "skipped_reason": "the synth stage accepted no records"}
    else:
        gate_summary = run_stage(decontam_cls(dcfg), [staging], output, opts2)
    return {"synth": s1, "gate": gate_summary, "output": output, "staging": staging, "rejected_dir": rejected_dir}


@click.group("synth")
def synth_group() -> None:
    """Teacher synthesis: rewrites, QA pairs and rejection-sampled solutions.

    \b
    Example:
      mathcorpus synth run seeds/ -o synth_out/ --task solve --engine vllm \\
          --model Qwen/Qwen2.5-Math-7B-Instruct --n 8
    """


@synth_group.command("run")
@inputs_argument
@output_option
@config_options(SynthConfig)
@click.option("--no-decontam", "no_decontam", is_flag=True,
              help="Skip the decontamination gate (accepted records are written to OUTPUT unchecked).")
@click.option("--staging", default=None,
              help="Folder for the teacher's output before the gate (default: OUTPUT.staging beside OUTPUT); "
                   "it also holds the resume cache.")
@click.option("--gate-benchmarks", default=GATE_PROFILE, show_default=True,
              help="Benchmarks the gate checks against: a profile (posttrain, pretrain, all) or names.")
@runner_options
@config_file_option
@json_option
def run_command(inputs: tuple[str, ...], output: str, no_decontam: bool, staging: str | None, gate_benchmarks: str,
                config_file: str | None, as_json: bool, **kwargs: Any) -> None:
    """Generate records with a teacher model, check them against benchmarks, write source=synth shards.

    Tasks: rewrite (web document -> textbook-style section), qa (problem + solution
    pairs from a document), solve (N sampled solutions per problem, kept when they agree
    with the reference answer or the majority; --tir runs the model's Python in a
    sandbox). Every record carries its teacher, template, sampling parameters, seed
    document, sample index and verdict. Rerunning the same command resumes.

    \b
    Example:
      mathcorpus synth run problems.jsonl -o sft/ --task solve --engine vllm \\
          --model Qwen/Qwen2.5-Math-72B-Instruct --n 8 --tensor-parallel-size 4
      mathcorpus synth run web/ -o rewrites/ --task rewrite --engine openai \\
          --base-url http://localhost:8000/v1 --model qwen2-math-72b
    """
    opts = run_options_from_kwargs(kwargs, config_file)
    overrides = {k: v for k, v in kwargs.items() if k in SynthConfig.field_names()}
    cfg = synth_config_from(config_file, overrides)
    result = run_synth(list(inputs), output, cfg, opts, gate=not no_decontam, staging=staging,
                       benchmarks=gate_benchmarks, config_file=config_file)
    emit(result, as_json, _human)


def _human(result: dict[str, Any]) -> None:
    s = result["synth"]
    c = s.get("counters", {})
    click.echo(summary_line(s))
    side = os.path.join(s["output"], "_side", "synth_rejected")
    click.echo(f"samples: {c.get('samples_generated', 0):,} generated, {c.get('samples_accepted', 0):,} accepted, "
               f"{c.get('samples_rejected', 0):,} rejected (in {side}); "
               f"{c.get('seeds_resumed', 0):,} seed(s) resumed from cache")
    if any(k.startswith(("score:", "verdict:score_")) for k in c):  # an annotate run
        from synth.annotate import ERROR_VERDICTS, SCORE_MAX, SCORE_MIN

        dist = ", ".join(f"{v}: {c.get(f'score:{v}', 0):,}" for v in range(SCORE_MIN, SCORE_MAX + 1))
        errs = {v: c.get(f"verdict:{v}", 0) for v in ERROR_VERDICTS}
        click.echo(f"grades: {dist}; unreadable answers: {sum(errs.values()):,} "
                   f"({', '.join(f'{k} {v:,}' for k, v in errs.items())})")
    g = result.get("gate")
    if g is None:
        click.echo("decontamination gate: OFF (--no-decontam); output is unchecked")
    elif g.get("skipped_reason"):
        click.echo(f"decontamination gate: nothing to check ({g['skipped_reason']})")
    else:
        click.echo(f"decontamination gate: {g['docs_in']:,} records checked, {g['kept']:,} accepted into "
                   f"{result['output']}, {g['removed']:,} rejected into {result['rejected_dir']}")


@synth_group.command("templates")
@click.option("--templates-dir", default=None, help="Also list templates from this folder (searched first by runs).")
@json_option
def templates_command(templates_dir: str | None, as_json: bool) -> None:
    """List the prompt templates a run can use (id@version, task, file).

    Copy a bundled file, edit it, bump its version and pass --template PATH (or put it in
    --templates-dir) to use your own wording; records then carry the new id@version.

    \b
    Example:
      mathcorpus synth templates
    """
    rows = []
    for ref in list_templates(templates_dir):
        tmpl = load_template(ref, _task_of(ref, templates_dir), templates_dir=templates_dir)
        rows.append({"template": tmpl.ref, "task": tmpl.task, "tir": tmpl.tir, "description": tmpl.description,
                     "file": tmpl.source, "sha": tmpl.sha})

    def human(rs: list[dict[str, Any]]) -> None:
        for r in rs:
            click.echo(f"{r['template']:<16} {r['task']:<8} {r['description']}  ({r['file']})")

    emit(rows, as_json, human)


def _task_of(ref: str, templates_dir: str | None) -> str:
    """The task a template file declares (read without knowing it in advance)."""
    from pathlib import Path

    name, _, version = ref.partition("@")
    for d in ([Path(templates_dir)] if templates_dir else []) + [BUNDLED_DIR]:
        p = d / f"{name}.{version}.yaml"
        if p.is_file():
            return parse_template(p.read_text(encoding="utf-8"), str(p)).task
    raise ConfigError(f"synth: template {ref} not found")
