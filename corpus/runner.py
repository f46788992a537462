"""The stage runner: runs a :class:`Stage` over sharded input on datatrove executors.

A stage is thin glue: it turns one Arrow batch into kept rows, removed rows (with a
reason) and optional side tables. The runner owns everything around that: splitting input
files across tasks, streaming batches, writing atomic shards, recording every removal,
checking ``docs in == kept + removed`` per task and per run, per-task stats, resuming a
killed run, and choosing the executor (local, Slurm or Ray, all from datatrove).

Layout of an output folder ``OUT``::

    OUT/{stage}-{rank:05d}-{n:05d}.parquet   kept documents
    OUT/_removed/...                          removed documents, with removal_reason
    OUT/_side/{name}/...                      side tables (e.g. decontam matches)
    OUT/_logs/                                datatrove logs, completion markers, task stats
    OUT/_run/config.json                      resolved config + package version (written first)
    OUT/_run/summary.json                     run summary (written last: the stage is complete)

Readers skip ``_``-prefixed folders, so ``OUT`` can be fed straight into the next stage.
Resuming: each task deletes its own partial outputs before it starts, and datatrove's
completion markers skip finished tasks, so a killed run neither loses nor duplicates docs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pyarrow as pa
from datatrove.pipeline.base import PipelineStep

from corpus import __version__, schema
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError, FatalError, InputError, MathcorpusError, ShardError
from corpus.progress import Progress
from corpus.shards import ShardWriter, atomic_write_json, iter_batches, list_input_files

RUN_DIR = "_run"
REMOVED_DIR = "_removed"
SIDE_DIR = "_side"
LOGS_DIR = "_logs"
STATS_SUBDIR = "mathcorpus_stats"


# ----------------------------------------------------------------------------- options
@dataclass
class RunOptions(StageConfig):
    """Executor and I/O options shared by every stage command (the ``executor`` section)."""

    section: ClassVar[str] = "executor"

    executor: str = opt("local", help="Where tasks run: local processes, a Slurm cluster or a Ray cluster.",
                        choices=("local", "slurm", "ray"))
    workers: int = opt(1, help="Tasks run at the same time (local executor). Output does not depend on it.")
    tasks: int = opt(0, help="Number of tasks the input files are split into; 0 = one task per input file.")
    skip_bad_files: bool = opt(False, help="Go on past unreadable input files and count them in the summary "
                                           "instead of stopping before anything is written.")
    batch_rows: int = opt(8192, help="Rows per Arrow batch handed to the stage.")
    shard_rows: int = opt(1_000_000, help="Roll over to a new output shard after this many rows.")
    shard_mb: int = opt(512, help="Roll over to a new output shard after about this many MB (in memory).")
    row_group_rows: int = opt(65_536, help="Parquet row-group size of output shards.")
    logging_dir: str | None = opt(None, help="Where datatrove logs, completion markers and task stats go "
                                             "(default OUTPUT/_logs).")
    removed_dir: str | None = opt(None, help="Where removed documents go (default OUTPUT/_removed).")
    overwrite: bool = opt(False, help="Delete an existing output of a different run instead of refusing.")
    slurm_partition: str | None = opt(None, help="Slurm partition (executor=slurm).")
    slurm_time: str = opt("24:00:00", help="Slurm time limit per job (executor=slurm).")
    slurm_cpus_per_task: int = opt(1, help="CPUs per Slurm task (executor=slurm).")
    slurm_mem_per_cpu_gb: float = opt(2.0, help="Memory per CPU in GB (executor=slurm).")
    slurm_venv: str | None = opt(None, help="Virtualenv activated in sbatch scripts (executor=slurm).")
    slurm_sbatch_args: dict[str, Any] = opt(help="Extra #SBATCH options, e.g. account=proj,qos=high.",
                                            factory=dict)
    ray_address: str | None = opt(None, help="Ray cluster address (executor=ray); default: auto-detect or "
                                             "start a local Ray.")
    ray_cpus_per_task: int = opt(1, help="CPUs reserved per Ray task (executor=ray).")

    def validate(self) -> None:
        for name in ("workers", "batch_rows", "shard_rows", "shard_mb", "row_group_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"executor option '{name}' must be at least 1, got {getattr(self, name)}")
        if self.tasks < 0:
            raise ConfigError(f"executor option 'tasks' must be 0 (one per file) or more, got {self.tasks}")


# ----------------------------------------------------------------------------- contexts
@dataclass
class RunContext:
    """What every task of one stage run knows (picklable: paths and options only)."""

    stage_name: str
    files: list[str]
    output: str
    options: RunOptions
    tasks: int
    removed_dir: str
    side_dir: str
    logging_dir: str
    bad_files: list[dict[str, str]] = field(default_factory=list)

    def task_files(self, rank: int) -> list[str]:
        """Contiguous share of the sorted input files for ``rank`` (keeps input order)."""
        n, k = len(self.files), self.tasks
        lo = rank * n // k
        hi = (rank + 1) * n // k
        return self.files[lo:hi]

    @property
    def stats_dir(self) -> str:
        return os.path.join(self.logging_dir, STATS_SUBDIR)


@dataclass
class TaskContext:
    """One task's view: its rank, its files, side writers and extra counters."""

    run: RunContext
    rank: int
    world_size: int
    files: list[str]
    counters: Counter = field(default_factory=Counter)
    extra: dict[str, Any] = field(default_factory=dict)
    current_file: str = ""
    _side: dict[str, ShardWriter] = field(default_factory=dict)

    def side_writer(self, name: str) -> ShardWriter:
        """A ShardWriter for side table ``name`` under ``_side/name/`` (rank-named, atomic)."""
        if name not in self._side:
            o = self.run.options
            self._side[name] = ShardWriter(os.path.join(self.run.side_dir, name), self.run.stage_name,
                                           self.rank, max_rows=o.shard_rows, max_bytes=o.shard_mb << 20,
                                           row_group_rows=o.row_group_rows)
        return self._side[name]


@dataclass
class BatchResult:
    """What a stage returns for one batch. ``removed`` must carry a ``removal_reason`` column."""

    kept: pa.RecordBatch | pa.Table
    removed: pa.RecordBatch | pa.Table | None = None


@dataclass
class Phase:
    """A step that runs before the main map phase (e.g. global hashing for dedup).

    ``fn(rank, world_size, run)`` must be picklable and idempotent: rerunning a task after a
    kill must give the same result.
    """

    name: str
    fn: Callable[[int, int, RunContext], None]
    tasks: int


# ----------------------------------------------------------------------------- stage
class Stage:
    """Base class of every stage. Subclasses set ``name`` and ``Config`` and implement hooks.

    Heavy objects (models, indexes, tokenizers) must be created in :meth:`setup`, not in
    ``__init__``, so the stage pickles cheaply to Slurm and Ray workers.
    """

    name: ClassVar[str] = "stage"
    Config: ClassVar[type[StageConfig]] = StageConfig

    def __init__(self, config: StageConfig) -> None:
        self.config = config

    # driver side
    def prepare(self, run: RunContext) -> None:
        """Runs once in the driver before any task (e.g. build or check an index)."""

    def pre_phases(self, run: RunContext) -> list[Phase]:
        """Global steps run, in order, before the map phase."""
        return []

    def finalize(self, run: RunContext, summary: dict[str, Any]) -> None:
        """Runs once in the driver after all tasks; may add keys to ``summary``."""

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, "config": self.config.to_dict()}

    # task side
    def setup(self, task: TaskContext) -> None:
        """Load heavy objects lazily, once per task."""

    def process_batch(self, batch: pa.RecordBatch, task: TaskContext) -> BatchResult:
        raise NotImplementedError(f"stage {self.name} does not implement process_batch")

    def finish_task(self, task: TaskContext) -> None:
        """Flush per-task state (side tables are closed by the runner)."""


def _as_table(data: pa.RecordBatch | pa.Table) -> pa.Table:
    return pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data


def _clear_rank_outputs(folder: str, stage: str, rank: int) -> None:
    """Remove a task's earlier (possibly partial) outputs so a rerun does not duplicate them."""
    prefix = f"{stage}-{rank:05d}-"
    if not os.path.isdir(folder):
        return
    for root, _dirs, files in os.walk(folder):
        for f in files:
            if f.startswith(prefix):
                os.unlink(os.path.join(root, f))


def run_task(stage: Stage, run: RunContext, rank: int, world_size: int) -> dict[str, Any]:
    """Process one task's files; returns (and writes) its stats. Used by the datatrove step."""
    files = run.task_files(rank)
    for folder in (run.output, run.removed_dir, run.side_dir):
        _clear_rank_outputs(folder, run.stage_name, rank)
    task = TaskContext(run=run, rank=rank, world_size=world_size, files=files)
    o = run.options
    kept_w = ShardWriter(run.output, run.stage_name, rank, max_rows=o.shard_rows, max_bytes=o.shard_mb << 20,
                         row_group_rows=o.row_group_rows)
    removed_w = ShardWriter(run.removed_dir, run.stage_name, rank, max_rows=o.shard_rows,
                            max_bytes=o.shard_mb << 20, row_group_rows=o.row_group_rows)
    docs_in = bytes_in = kept = 0
    removed: Counter = Counter()
    bad: list[dict[str, str]] = []
    t0 = time.monotonic()
    progress = Progress(f"{run.stage_name}[{rank}]")
    stage.setup(task)
    try:
        for path in files:
            task.current_file = path
            try:
                for batch in iter_batches(path, o.batch_rows):
                    batch = schema.add_domain(batch)
                    nbytes = int(pa.compute.sum(pa.compute.binary_length(batch.column(schema.TEXT))).as_py() or 0)
                    docs_in += batch.num_rows
                    bytes_in += nbytes
                    res = stage.process_batch(batch, task)
                    kept_t = _as_table(res.kept)
                    kept_w.write(kept_t)
                    kept += kept_t.num_rows
                    if res.removed is not None and res.removed.num_rows:
                        rem = _as_table(res.removed)
                        if schema.REMOVAL_REASON not in rem.schema.names:
                            raise FatalError(f"stage {run.stage_name} removed documents without a "
                                             f"'{schema.REMOVAL_REASON}' column; this is a bug in the stage")
                        for reason, n in Counter(rem.column(schema.REMOVAL_REASON).to_pylist()).items():
                            removed[reason] += n
                        if schema.REMOVAL_STAGE not in rem.schema.names:
                            rem = rem.append_column(schema.REMOVAL_STAGE,
                                                    pa.array([run.stage_name] * rem.num_rows, pa.string()))
                        removed_w.write(rem)
                    progress.update(batch.num_rows, nbytes)
            except ShardError as exc:
                if not o.skip_bad_files:
                    raise
                bad.append({"path": path, "error": str(exc)})
        stage.finish_task(task)
        kept_w.close()
        removed_w.close()
        for w in task._side.values():
            w.close()
    except BaseException:
        kept_w.abort()
        removed_w.abort()
        for w in task._side.values():
            w.abort()
        raise
    finally:
        progress.close()
    n_removed = sum(removed.values())
    if docs_in != kept + n_removed:
        raise FatalError(f"stage {run.stage_name} task {rank}: {docs_in} docs in but {kept} kept + "
                         f"{n_removed} removed; documents were lost. This is a bug: please report it.")
    stats = {
        "rank": rank, "files": files, "docs_in": docs_in, "bytes_in": bytes_in, "kept": kept,
        "removed": dict(sorted(removed.items())), "bad_files": bad, "counters": dict(task.counters),
        "extra": task.extra, "seconds": round(time.monotonic() - t0, 3),
    }
    atomic_write_json(os.path.join(run.stats_dir, f"{rank:05d}.json"), stats)
    return stats


class _MapStep(PipelineStep):
    """The datatrove step that runs :func:`run_task` for its rank."""

    name = "mathcorpus map"
    type = "mathcorpus"

    def __init__(self, stage: Stage, run: RunContext) -> None:
        super().__init__()
        self.stage = stage
        self.run_ctx = run

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Any:
        _quiet_task_logs()
        stats = run_task(self.stage, self.run_ctx, rank, world_size)
        self.stat_update("documents", value=stats["docs_in"])
        return None


class _PhaseStep(PipelineStep):
    name = "mathcorpus phase"
    type = "mathcorpus"

    def __init__(self, phase: Phase, run: RunContext) -> None:
        super().__init__()
        self.phase = phase
        self.run_ctx = run

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Any:
        _quiet_task_logs()
        self.phase.fn(rank, world_size, self.run_ctx)
        return None


def _quiet_task_logs() -> None:
    """datatrove logs every task at INFO to stderr; keep stderr for progress and warnings.

    Task logs still go in full to the log file under the logging dir.
    """
    if os.environ.get("MATHCORPUS_VERBOSE") == "1":
        return
    from loguru import logger

    # datatrove adds two handlers per task: stderr at INFO and the task's log file. Keep the
    # file (identified by its task_NNNNN.log name) and put a WARNING-level stderr handler back.
    handlers = getattr(logger._core, "handlers", {})  # type: ignore[attr-defined]
    for hid, h in list(handlers.items()):
        if "task_" not in str(getattr(h, "_name", "")):
            logger.remove(hid)
    logger.add(sys.stderr, level="WARNING", format="{level}: {message}")


def _install_quiet_task_logger() -> None:
    """Wrap datatrove's per-task logger setup so tasks do not flood stderr at INFO.

    datatrove re-adds an INFO stderr handler at the start of every task (before our step
    runs); the wrapper applies :func:`_quiet_task_logs` right after it. Full logs stay in
    the task log files.
    """
    import datatrove.executor.base as base

    if getattr(base.add_task_logger, "_mathcorpus", False):
        return
    original = base.add_task_logger

    def add_task_logger(*args: Any, **kwargs: Any) -> Any:
        logfile = original(*args, **kwargs)
        _quiet_task_logs()
        return logfile

    add_task_logger._mathcorpus = True  # type: ignore[attr-defined]
    base.add_task_logger = add_task_logger


_install_quiet_task_logger()


# ----------------------------------------------------------------------------- executors
def make_executor(steps: list[PipelineStep], tasks: int, opts: RunOptions, logging_dir: str,
                  job_name: str, depends: Any = None) -> Any:
    """Build the datatrove executor named by ``opts.executor``."""
    workers = min(opts.workers, tasks)
    if opts.executor == "local":
        from datatrove.executor import LocalPipelineExecutor

        # fork would copy the parent's numba/fastText state cheaply, but forkserver is what
        # datatrove defaults to and it proves the stage pickles, as Slurm and Ray need.
        return LocalPipelineExecutor(pipeline=steps, tasks=tasks, workers=workers, logging_dir=logging_dir,
                                     depends=depends, skip_completed=True)
    if opts.executor == "slurm":
        from datatrove.executor import SlurmPipelineExecutor

        if not opts.slurm_partition:
            raise ConfigError("executor=slurm needs slurm_partition (--slurm-partition)")
        return SlurmPipelineExecutor(pipeline=steps, tasks=tasks, workers=opts.workers if opts.workers > 1 else -1,
                                     time=opts.slurm_time, partition=opts.slurm_partition,
                                     cpus_per_task=opts.slurm_cpus_per_task, mem_per_cpu_gb=opts.slurm_mem_per_cpu_gb,
                                     job_name=job_name, logging_dir=logging_dir, depends=depends,
                                     venv_path=opts.slurm_venv, sbatch_args=dict(opts.slurm_sbatch_args),
                                     skip_completed=True)
    if opts.executor == "ray":
        import ray
        from datatrove.executor.ray import RayPipelineExecutor

        if not ray.is_initialized():
            ray.init(address=opts.ray_address, log_to_driver=False, include_dashboard=False,
                     ignore_reinit_error=True)
        return RayPipelineExecutor(pipeline=steps, tasks=tasks, workers=workers, logging_dir=logging_dir,
                                   depends=depends, cpus_per_task=opts.ray_cpus_per_task, skip_completed=True)
    raise ConfigError(f"unknown executor {opts.executor!r}; use local, slurm or ray")


# ----------------------------------------------------------------------------- driver
def preflight(files: Sequence[str]) -> list[tuple[str, MathcorpusError]]:
    """Cheap checks of every input file before anything is written (footer, header, columns)."""
    problems: list[tuple[str, MathcorpusError]] = []
    for path in files:
        try:
            if os.path.exists(path) and os.path.getsize(path) == 0:
                raise ShardError(f"{path}: the file is empty (0 bytes); remove it or pass --skip-bad-files", path)
            it = iter_batches(path, batch_rows=16)
            next(it, None)
            it.close()
        except InputError as exc:
            problems.append((path, exc))
    return problems


def _fingerprint(stage: Stage, files: Sequence[str], tasks: int) -> dict[str, Any]:
    return {"stage": stage.name, "stage_config": stage.config.to_dict(), "inputs": list(files), "tasks": tasks}


def stage_summary_path(output: str) -> str:
    return os.path.join(output, RUN_DIR, "summary.json")


def is_complete(output: str) -> bool:
    return os.path.exists(stage_summary_path(output))


def run_stage(stage: Stage, inputs: Sequence[str], output: str, opts: RunOptions | None = None) -> dict[str, Any]:
    """Run ``stage`` over ``inputs`` into ``output``; returns the run summary.

    Raises InputError before writing anything when an input file is bad (unless
    ``skip_bad_files``), FatalError when documents would be lost.
    """
    opts = opts or RunOptions()
    files = list_input_files(inputs)
    out_abs = os.path.abspath(output)
    for f in files:
        if os.path.abspath(f).startswith(out_abs + os.sep):
            raise ConfigError(f"{f}: an input file lies inside the output folder {output}; choose another -o")
    problems = preflight(files)
    bad: list[dict[str, str]] = []
    if problems:
        if not opts.skip_bad_files:
            path, exc = problems[0]
            more = f" ({len(problems) - 1} more bad file(s))" if len(problems) > 1 else ""
            raise type(exc)(f"{exc}{more}. Nothing was written.")
        bad = [{"path": p, "error": str(e)} for p, e in problems]
        bad_paths = {p for p, _ in problems}
        files = [f for f in files if f not in bad_paths]
    tasks = opts.tasks or max(1, len(files))
    tasks = max(1, min(tasks, max(1, len(files))))
    logging_dir = opts.logging_dir or os.path.join(output, LOGS_DIR)
    run = RunContext(stage_name=stage.name, files=files, output=output, options=opts, tasks=tasks,
                     removed_dir=opts.removed_dir or os.path.join(output, REMOVED_DIR),
                     side_dir=os.path.join(output, SIDE_DIR), logging_dir=logging_dir, bad_files=bad)
    config_path = os.path.join(output, RUN_DIR, "config.json")
    fp = _fingerprint(stage, files, tasks)
    if os.path.exists(config_path):
        with open(config_path, encoding="utf-8") as fh:
            old = json.load(fh).get("fingerprint")
        if old != fp:
            if not opts.overwrite:
                raise ConfigError(f"{output}: holds a run with different settings or inputs; pass --overwrite "
                                  "to replace it, or choose another output folder")
            shutil.rmtree(output)
            if opts.removed_dir and os.path.isdir(opts.removed_dir):
                shutil.rmtree(opts.removed_dir)
    elif os.path.isdir(output) and any(not n.startswith(".") for n in os.listdir(output)):
        if not opts.overwrite:
            raise ConfigError(f"{output}: the output folder exists and is not empty; pass --overwrite or choose "
                              "another output folder")
        shutil.rmtree(output)
    os.makedirs(output, exist_ok=True)
    atomic_write_json(config_path, {
        "mathcorpus_version": __version__, "fingerprint": fp, "executor": opts.to_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    if is_complete(output):
        with open(stage_summary_path(output), encoding="utf-8") as fh:
            summary = json.load(fh)
        summary["skipped"] = True
        return summary
    t0 = time.monotonic()
    stage.prepare(run)
    previous = None
    executors = []
    for ph in stage.pre_phases(run):
        ex = make_executor([_PhaseStep(ph, run)], ph.tasks, opts, os.path.join(logging_dir, ph.name),
                           f"{stage.name}-{ph.name}", depends=previous)
        executors.append(ex)
        previous = ex
    main = make_executor([_MapStep(stage, run)], tasks, opts, os.path.join(logging_dir, "map"),
                         f"{stage.name}-map", depends=previous)
    executors.append(main)
    if opts.executor == "slurm":
        main.run()  # datatrove submits the dependency chain; summaries come from `pipeline status`
        return {"stage": stage.name, "submitted": True, "tasks": tasks}
    for ex in executors:
        ex.run()
    summary = collect_summary(run)
    summary["seconds"] = round(time.monotonic() - t0, 3)
    stage.finalize(run, summary)
    atomic_write_json(stage_summary_path(output), summary)
    return summary


def collect_summary(run: RunContext) -> dict[str, Any]:
    """Sum per-task stats and check ``docs_in == kept + removed`` over the whole run."""
    docs_in = bytes_in = kept = 0
    removed: Counter = Counter()
    counters: Counter = Counter()
    bad = list(run.bad_files)
    for rank in range(run.tasks):
        p = os.path.join(run.stats_dir, f"{rank:05d}.json")
        if not os.path.exists(p):
            raise FatalError(f"{run.output}: task {rank} finished without its stats file {p}; rerun the "
                             "same command to redo that task")
        with open(p, encoding="utf-8") as fh:
            s = json.load(fh)
        docs_in += s["docs_in"]
        bytes_in += s["bytes_in"]
        kept += s["kept"]
        removed.update(s["removed"])
        counters.update(s.get("counters", {}))
        bad.extend(s["bad_files"])
    n_removed = sum(removed.values())
    if docs_in != kept + n_removed:
        raise FatalError(f"{run.output}: {docs_in} docs in but {kept} kept + {n_removed} removed")
    return {
        "stage": run.stage_name, "mathcorpus_version": __version__, "output": run.output,
        "removed_dir": run.removed_dir, "inputs": len(run.files) + len(run.bad_files), "tasks": run.tasks,
        "docs_in": docs_in, "bytes_in": bytes_in, "kept": kept, "removed": n_removed,
        "removed_by_reason": dict(sorted(removed.items())), "bad_files": bad, "counters": dict(counters),
        "check": "docs_in == kept + removed",
    }


def options_from(values: dict[str, Any], config_file: str | None = None) -> RunOptions:
    """RunOptions from CLI values (None = not given) over an optional config file's executor section."""
    from corpus.config import resolve

    names = set(RunOptions.field_names())
    return resolve(RunOptions, config_file, {k: v for k, v in values.items() if k in names}, section="executor")


def replace_options(opts: RunOptions, **changes: Any) -> RunOptions:
    return dataclasses.replace(opts, **changes)
