"""The ``mathcorpus`` CLI root: global flags, error handling, shared options, built-in commands.

Subcommand groups of recall/, decontam/ and synth/ are found through the
``mathcorpus.commands`` entry points (see corpus/registry.py) and loaded lazily, so
``mathcorpus --help`` stays fast and corpus/ never imports them.

Exit codes: 0 ok, 1 failure, 2 usage or config error, 3 a gate tripped.
"""

from __future__ import annotations

import errno
import json
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from corpus import __version__
from corpus.config import config_options
from corpus.errors import FatalError, MathcorpusError
from corpus.registry import command_entry_points
from corpus.runner import RunOptions, options_from

# Commands that live in corpus/ itself, loaded lazily like the registered ones.
_BUILTIN = {
    "stats": "corpus.stats:stats_command",
    "dedup": "corpus.dedup.cli:dedup_group",
    "export": "corpus.export.cli:export_command",
    "extract": "corpus.extract.cli:extract_command",
    "pipeline": "corpus.pipeline:pipeline_group",
}


def _load(spec: str) -> click.Command:
    mod, _, attr = spec.partition(":")
    return getattr(__import__(mod, fromlist=[attr]), attr)


_USER_OS_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EDQUOT, errno.EPERM}


def _unavailable(name: str, exc: ImportError) -> click.Command:
    message = (f"command '{name}' could not be loaded ({exc}); reinstall mathcorpus with "
               "`pip install -e .` or check the optional extras it needs")

    def fail() -> None:
        raise FatalError(message)

    return click.Command(name, callback=fail, help=message, short_help=f"(unavailable: {exc})",
                         context_settings={"ignore_unknown_options": True, "allow_extra_args": True})


class LazyGroup(click.Group):
    """Root group that resolves built-in and entry-point commands on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        names = set(super().list_commands(ctx)) | set(_BUILTIN) | set(command_entry_points())
        return sorted(names)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        cmd = super().get_command(ctx, name)
        if cmd is not None:
            return cmd
        ep = command_entry_points().get(name)
        if name not in _BUILTIN and ep is None:
            return None
        try:
            return _load(_BUILTIN[name]) if name in _BUILTIN else ep.load()
        except ImportError as exc:
            # One broken plugin must not take the whole CLI (and its --help) down with it.
            return _unavailable(name, exc)

    def invoke(self, ctx: click.Context) -> Any:
        debug = bool(ctx.params.get("debug")) or os.environ.get("MATHCORPUS_DEBUG") == "1"
        try:
            return super().invoke(ctx)
        except MathcorpusError as exc:
            if exc.exit_code == 0:
                # jobs submitted without --wait (corpus.slurm.JobsSubmitted): how to follow them on
                # stderr, the job records as JSON on stdout
                click.echo(str(exc), err=True)
                click.echo(json.dumps(getattr(exc, "info", {}), indent=2, sort_keys=True, default=str))
                ctx.exit(0)
            if debug:
                raise
            click.echo(f"Error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:
            # Disk full, read-only or permission problems surface from deep inside writers
            # and executors; they are the user's to fix, so show them as one line.
            if debug or exc.errno not in _USER_OS_ERRORS:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            click.echo(f"Error: {where}{exc.strerror}; free some space or choose a writable output folder, "
                       "then rerun the same command to resume", err=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            click.echo("Interrupted; rerun the same command to resume.", err=True)
            ctx.exit(130)


def _setup_logging(verbose: int) -> None:
    from loguru import logger

    logger.remove()
    level = "DEBUG" if verbose >= 2 else ("INFO" if verbose == 1 else "WARNING")
    logger.add(sys.stderr, level=level, format="{level}: {message}")
    if verbose:
        os.environ["MATHCORPUS_VERBOSE"] = "1"


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "--version", prog_name="mathcorpus")
@click.option("-v", "--verbose", count=True, help="More log output on stderr (-vv for debug).")
@click.option("--debug", is_flag=True, help="Show full tracebacks instead of one-line errors.")
@click.pass_context
def main(ctx: click.Context, verbose: int, debug: bool) -> None:
    """mathcorpus: build math pre-training corpora and keep them free of benchmarks.

    \b
    Example:
      mathcorpus stats data/sample/
      mathcorpus decontam run shards/ -o clean/ --benchmarks pretrain --report report/
    """
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    if debug:
        os.environ["MATHCORPUS_DEBUG"] = "1"
    _setup_logging(verbose)


# ----------------------------------------------------------------------------- shared options
def json_option(fn: Callable) -> Callable:
    return click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON on stdout.")(fn)


def config_file_option(fn: Callable) -> Callable:
    return click.option("--config", "config_file", type=click.Path(dir_okay=False),
                        help="YAML or TOML file with this command's options; flags override it.")(fn)


def inputs_argument(fn: Callable) -> Callable:
    return click.argument("inputs", nargs=-1, required=True, metavar="INPUT...")(fn)


def output_option(fn: Callable) -> Callable:
    return click.option("-o", "--output", required=True, help="Output folder for the kept shards.")(fn)


def runner_options(fn: Callable) -> Callable:
    """All executor flags (--executor, --workers, --tasks, --skip-bad-files, ...)."""
    return config_options(RunOptions)(fn)


def run_options_from_kwargs(kwargs: dict[str, Any], config_file: str | None = None) -> RunOptions:
    """Pop the executor flags out of a command's kwargs and resolve them."""
    names = RunOptions.field_names()
    vals = {n: kwargs.pop(n) for n in names if n in kwargs}
    return options_from(vals, config_file)


def emit(result: Any, as_json: bool, human: Callable[[Any], None] | None = None) -> None:
    """Results to stdout: JSON for machines, or the human rendering."""
    if as_json or human is None:
        click.echo(json.dumps(result, indent=2, sort_keys=True, default=str))
    else:
        human(result)


def summary_line(summary: dict[str, Any]) -> str:
    reasons = ", ".join(f"{k}: {v:,}" for k, v in summary.get("removed_by_reason", {}).items()) or "none"
    bad = len(summary.get("bad_files", []))
    skipped = " (already complete, skipped)" if summary.get("skipped") else ""
    return (f"{summary['stage']}: {summary['docs_in']:,} docs in, {summary['kept']:,} kept, "
            f"{summary['removed']:,} removed ({reasons}); {bad} bad file(s) skipped; "
            f"output in {summary['output']}{skipped}")
