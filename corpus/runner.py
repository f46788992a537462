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
import os
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar

import pyarrow as pa
from datatrove.pipeline.base import PipelineStep

from corpus import __version__, idcheck, schema
from corpus import fs as cfs
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError, FatalError, InputError, MathcorpusError, ShardError
from corpus.progress import Progress
from corpus.tasklog import install_quiet_task_logger, quiet_task_logs
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
    allow_duplicate_ids: bool = opt(False, help="Only count ids that occur more than once across the input "
                                                "instead of failing the stage (ids should be unique).")
    id_partitions: int = opt(0, help="Tasks of the duplicate-id check, each checking one range of id hashes "
                                     "(memory per task ~ 8 bytes x documents / this); 0 = one per map task.")
    slurm_partition: str | None = opt(None, help="Slurm partition (executor=slurm).")
    slurm_time: str = opt("24:00:00", help="Slurm time limit per job (executor=slurm).")
    slurm_cpus_per_task: int = opt(1, help="CPUs per Slurm task (executor=slurm).")
    slurm_mem_per_cpu_gb: float = opt(2.0, help="Memory per CPU in GB, fractions allowed (sent to sbatch in whole "
                                                "MB: 1.5 -> 1536M) (executor=slurm).")
    slurm_venv: str | None = opt(None, help="Virtualenv activated in sbatch scripts (executor=slurm).")
    slurm_sbatch_args: dict[str, Any] = opt(help="Extra #SBATCH options, e.g. account=proj,qos=high.",
                                            factory=dict)
    wait: bool = opt(False, help="executor=slurm: after submitting, wait for the jobs, show progress and print the "
                                 "usual summary (default: print the job ids and return).")
    ray_address: str | None = opt(None, help="Ray cluster address (executor=ray); default: auto-detect or "
                                             "start a local Ray.")
    ray_cpus_per_task: int = opt(1, help="CPUs reserved per Ray task (executor=ray).")

    def validate(self) -> None:
        for name in ("workers", "batch_rows", "shard_rows", "shard_mb", "row_group_rows"):
            if getattr(self, name) < 1:
                raise ConfigError(f"executor option '{name}' must be at least 1, got {getattr(self, name)}")
        if self.tasks < 0:
            raise ConfigError(f"executor option 'tasks' must be 0 (one per file) or more, got {self.tasks}")
        if self.id_partitions < 0:
            raise ConfigError(f"executor option 'id_partitions' must be 0 (one per map task) or more, "
                              f"got {self.id_partitions}")


# ----------------------------------------------------------------------------- contexts
@dataclass
class RunContext:
    """What every task of one stage run knows (picklable: paths and options only).

    ``files`` is None when the input is produced by an earlier stage that has not run yet
    (a whole pipeline submitted to Slurm at once); each task then lists ``inputs`` itself,
    which gives the same sorted list everywhere.
    """

    stage_name: str
    files: list[str] | None
    output: str
    options: RunOptions
    tasks: int
    removed_dir: str
    side_dir: str
    logging_dir: str
    bad_files: list[dict[str, str]] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    # set when Stage.prepare runs as the stage's first job (see plan_stage): where it saves the stage
    prepared: str | None = None
    # The stage's input hooks (Stage.list_inputs / read_batches), for stages that read
    # other formats (extract reads WARC and HTML); None = the shard readers.
    lister: Callable[[Sequence[str]], list[str]] | None = None
    reader: Callable[[str, "TaskContext | None"], Any] | None = None

    def all_files(self) -> list[str]:
        if self.files is None:
            self.files = (self.lister or list_input_files)(self.inputs)
        return self.files

    def task_files(self, rank: int) -> list[str]:
        """Contiguous share of the sorted input files for ``rank`` (keeps input order)."""
        files = self.all_files()
        n, k = len(files), self.tasks
        lo = rank * n // k
        hi = (rank + 1) * n // k
        return files[lo:hi]

    @property
    def stats_dir(self) -> str:
        return cfs.join(self.logging_dir, STATS_SUBDIR)


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
            self._side[name] = ShardWriter(cfs.join(self.run.side_dir, name), self.run.stage_name,
                                           self.rank, max_rows=o.shard_rows, max_bytes=o.shard_mb << 20,
                                           row_group_rows=o.row_group_rows)
        return self._side[name]


@dataclass
class BatchResult:
    """What a stage returns for one batch. ``removed`` must carry a ``removal_reason`` column.

    ``inputs_kept`` is for stages that write new rows instead of filtering (synth: one seed
    document gives several generated records): it says how many *input* documents the kept
    rows stand for, so the ``docs in == kept + removed`` check stays about input documents.
    ``None`` means one input document per kept row (every filtering stage).
    """

    kept: pa.RecordBatch | pa.Table
    removed: pa.RecordBatch | pa.Table | None = None
    inputs_kept: int | None = None


@dataclass
class Phase:
    """A global step run before the map phase (e.g. hashing for dedup) or after it (export's merge).

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
    # True when prepare() reads the input files (export samples them to choose an engine). In a
    # submitted chain whose inputs an earlier stage has yet to write, prepare then runs as the
    # stage's first job; otherwise (index builds, model hashing, template checks) it runs in the
    # driver before anything is submitted, so errors come before any job starts.
    prepare_reads_inputs: ClassVar[bool] = False
    # False for stages that consume documents instead of passing them on (export): the rows
    # of ``BatchResult.kept`` are counted ("kept" = consumed) but no kept shards are written.
    writes_documents: ClassVar[bool] = True

    def __init__(self, config: StageConfig) -> None:
        self.config = config

    # driver side
    def prepare(self, run: RunContext) -> None:
        """Runs once before any task (build or check an index, hash a model). Results kept on
        ``self`` or ``run`` reach every task: it runs in the driver, or as the stage's first job
        (``prepare_reads_inputs`` with inputs an earlier submitted stage has yet to write)."""

    def pre_phases(self, run: RunContext) -> list[Phase]:
        """Global steps run, in order, before the map phase."""
        return []

    def post_phases(self, run: RunContext) -> list[Phase]:
        """Global steps run, in order, after the map phase and before finalize (export's merge)."""
        return []

    def finalize(self, run: RunContext, summary: dict[str, Any]) -> None:
        """Runs once in the driver after all tasks; may add keys to ``summary``."""

    def describe(self) -> dict[str, Any]:
        return {"stage": self.name, "config": self.config.to_dict()}

    def required_columns(self) -> tuple[str, ...]:
        """Columns every input file must have (default id and text)."""
        return schema.REQUIRED

    # input hooks: the defaults read Parquet/JSONL shards; extract overrides them for WARC/HTML
    def list_inputs(self, inputs: Sequence[str]) -> list[str]:
        """Expand the command's inputs (files, folders, globs) into the sorted list of input files."""
        return list_input_files(inputs)

    def preflight(self, files: Sequence[str]) -> list[tuple[str, MathcorpusError]]:
        """Cheap checks of every input file before anything is written: (path, error) per bad file."""
        return preflight(files, self.required_columns())

    def read_batches(self, path: str, task: "TaskContext | None" = None) -> Any:
        """Stream one input file as Arrow record batches (ShardError = a bad file, --skip-bad-files)."""
        rows = task.run.options.batch_rows if task is not None else 8192
        return iter_batches(path, rows, required=self.required_columns())

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
    cfs.remove_prefixed(folder, f"{stage}-{rank:05d}-", recursive=True)


# The duplicate-id check lives in corpus/idcheck.py; ``id_hash`` stays importable from here.
id_hash = idcheck.id_hash


def id_folder(run: RunContext) -> str:
    """Where map tasks spill their sorted id hashes and the check tasks write their results."""
    return cfs.join(run.stats_dir, "ids")


def id_partitions(run: RunContext) -> int:
    """How many hash ranges (check tasks) the duplicate-id check uses."""
    return max(1, run.options.id_partitions or run.tasks)


def duplicate_ids(run: RunContext, limit: int = 5) -> tuple[int, list[str]]:
    """How many ids occur more than once across the run's input, and a few of them by name.

    Sums the per-range results of the ``ids`` phase; reads the input again only when there
    are duplicates, to name them.
    """
    n_extra, hashes = idcheck.collect(id_folder(run), id_partitions(run), keep=limit * 4)
    if not n_extra:
        return 0, []
    read = (lambda path: run.reader(path, None)) if run.reader is not None else None  # type: ignore[misc]
    return n_extra, idcheck.find_examples(run.all_files(), hashes, limit, read=read)


def _idcheck_task(run: RunContext, rank: int, world_size: int) -> None:
    """Check task ``rank`` of the ``ids`` phase: repeated hashes in its range, over every map task's runs."""
    runs = []
    for r in range(run.tasks):
        p = cfs.join(run.stats_dir, f"{r:05d}.json")
        if not cfs.exists(p):
            raise FatalError(f"{run.output}: task {r} finished without its stats file {p}; rerun the "
                             "same command to redo that task")
        runs.append(int(cfs.read_json(p).get("id_runs", 0)))
    idcheck.check_partition(id_folder(run), runs, rank, id_partitions(run))


def _text_bytes(batch: pa.RecordBatch, required: Sequence[str]) -> int:
    """UTF-8 bytes of the text a stage reads: ``text``, else its other required string columns."""
    cols = [schema.TEXT] if schema.TEXT in batch.schema.names else [c for c in required if c != schema.ID]
    total = 0
    for c in cols:
        arr = batch.column(c)
        if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type) or pa.types.is_binary(arr.type):
            total += int(pa.compute.sum(pa.compute.binary_length(arr)).as_py() or 0)
    return total


def run_task(stage: Stage, run: RunContext, rank: int, world_size: int) -> dict[str, Any]:
    """Process one task's files; returns (and writes) its stats. Used by the datatrove step."""
    files = run.task_files(rank)
    for folder in (run.output, run.removed_dir, run.side_dir):
        _clear_rank_outputs(folder, run.stage_name, rank)
    task = TaskContext(run=run, rank=rank, world_size=world_size, files=files)
    required = stage.required_columns()
    o = run.options
    kept_w = ShardWriter(run.output, run.stage_name, rank, max_rows=o.shard_rows, max_bytes=o.shard_mb << 20,
                         row_group_rows=o.row_group_rows)
    removed_w = ShardWriter(run.removed_dir, run.stage_name, rank, max_rows=o.shard_rows,
                            max_bytes=o.shard_mb << 20, row_group_rows=o.row_group_rows)
    docs_in = bytes_in = kept = kept_inputs = 0
    removed: Counter = Counter()
    bad: list[dict[str, str]] = []
    # sorted runs of id hashes for the duplicate-id check (drops an earlier attempt's runs)
    id_spill = idcheck.IdSpiller(id_folder(run), rank)
    t0 = time.monotonic()
    progress = Progress(f"{run.stage_name}[{rank}]")
    stage.setup(task)
    try:
        for path in files:
            task.current_file = path
            try:
                for batch in stage.read_batches(path, task):
                    batch = schema.add_domain(batch)
                    nbytes = _text_bytes(batch, required)
                    docs_in += batch.num_rows
                    bytes_in += nbytes
                    res = stage.process_batch(batch, task)
                    kept_t = _as_table(res.kept)
                    if stage.writes_documents:
                        kept_w.write(kept_t)
                    kept += kept_t.num_rows
                    kept_inputs += kept_t.num_rows if res.inputs_kept is None else res.inputs_kept
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
                    id_spill.add(id_hash(batch.column(schema.ID)))
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
    if docs_in != kept_inputs + n_removed:
        raise FatalError(f"stage {run.stage_name} task {rank}: {docs_in} docs in but {kept_inputs} kept + "
                         f"{n_removed} removed; documents were lost. This is a bug: please report it.")
    stats = {
        "rank": rank, "files": files, "docs_in": docs_in, "bytes_in": bytes_in, "kept": kept,
        "kept_inputs": kept_inputs,
        "removed": dict(sorted(removed.items())), "bad_files": bad, "counters": dict(task.counters),
        "extra": task.extra, "seconds": round(time.monotonic() - t0, 3), "id_runs": id_spill.close(),
        "ran_on": _where(),
    }
    atomic_write_json(cfs.join(run.stats_dir, f"{rank:05d}.json"), stats)
    return stats


def _where() -> dict[str, Any]:
    """Where a task ran (host, pid, Slurm job, Ray node): for debugging a cluster run from its stats."""
    import socket

    where: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    if os.environ.get("SLURM_JOB_ID"):
        where["slurm_job"] = f"{os.environ.get('SLURM_ARRAY_JOB_ID', os.environ['SLURM_JOB_ID'])}_" \
                             f"{os.environ.get('SLURM_ARRAY_TASK_ID', '0')}"
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        where["ray_node"] = ray.get_runtime_context().get_node_id()
    return where


class _Step(PipelineStep):
    """A datatrove step that calls ``fn(rank, world_size)``: the map, each phase and finalize.

    ``fn`` is a functools.partial over module-level functions, so the step pickles for
    forkserver workers, Slurm and Ray.
    """

    type = "mathcorpus"

    def __init__(self, name: str, fn: Callable[[int, int], Any]) -> None:
        super().__init__()
        self.name = f"mathcorpus {name}"
        self.fn = fn

    def run(self, data: Any = None, rank: int = 0, world_size: int = 1) -> Any:
        quiet_task_logs()
        self.fn(rank, world_size)
        return None


PREPARED_FILE = "prepared.pkl"


def _prepare_task(stage: Stage, run: RunContext, rank: int, world_size: int) -> None:
    """First job of a stage whose driver-side preparation reads inputs that did not exist when the
    chain was submitted: run ``Stage.prepare`` and save the prepared stage for every later job."""
    import dill

    from corpus.shards import atomic_write_bytes

    stage.prepare(run)
    atomic_write_bytes(run.prepared, dill.dumps((stage, run)))  # type: ignore[arg-type]


def _prepared(stage: Stage, run: RunContext) -> tuple[Stage, RunContext]:
    """The stage and context as the prepare job left them (unchanged when prepare ran in the driver)."""
    if not run.prepared:
        return stage, run
    import dill
    import fsspec

    try:
        with fsspec.open(run.prepared, "rb") as fh:
            return dill.load(fh)
    except FileNotFoundError as exc:
        raise FatalError(f"{run.output}: the stage's prepare job left no {run.prepared}; rerun the same command "
                         "to redo it") from exc


def _map_task(stage: Stage, run: RunContext, rank: int, world_size: int) -> None:
    stage, run = _prepared(stage, run)
    run_task(stage, run, rank, world_size)


def _run_phase(phase: Phase, run: RunContext, rank: int, world_size: int, stage: Stage | None = None) -> None:
    fn = phase.fn
    if stage is not None and run.prepared:
        new_stage, run = _prepared(stage, run)
        if getattr(fn, "__self__", None) is stage:  # a bound method of the stage: call it on the prepared one
            fn = getattr(new_stage, fn.__name__)
    fn(rank, world_size, run)


def _finalize_task(stage: Stage, run: RunContext, rank: int, world_size: int) -> None:
    stage, run = _prepared(stage, run)
    finalize_stage(stage, run)


install_quiet_task_logger()


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
        from corpus import slurm

        if not opts.slurm_partition:
            raise ConfigError("executor=slurm needs slurm_partition (--slurm-partition)")
        # memory in whole MB (sbatch refuses "2.0G"); no QOS unless asked for (many clusters have no
        # "normal" QOS); the user's own #SBATCH options win over ours.
        sbatch_args = {"mem-per-cpu": f"{slurm.mem_mb(opts.slurm_mem_per_cpu_gb)}M", **opts.slurm_sbatch_args}
        return slurm.SlurmExecutor(pipeline=steps, tasks=tasks, workers=opts.workers if opts.workers > 1 else -1,
                                   time=opts.slurm_time, partition=opts.slurm_partition,
                                   cpus_per_task=opts.slurm_cpus_per_task, mem_per_cpu_gb=opts.slurm_mem_per_cpu_gb,
                                   job_name=job_name, logging_dir=logging_dir, depends=depends, qos="",
                                   venv_path=opts.slurm_venv, env_command=slurm.env_command(opts),
                                   sbatch_args=sbatch_args, skip_completed=True)
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
def preflight(files: Sequence[str], required: Sequence[str] = schema.REQUIRED) -> list[tuple[str, MathcorpusError]]:
    """Cheap checks of every input file before anything is written (footer, header, columns)."""
    problems: list[tuple[str, MathcorpusError]] = []
    for path in files:
        try:
            if not cfs.is_remote(path) and os.path.exists(path) and os.path.getsize(path) == 0:
                raise ShardError(f"{path}: the file is empty (0 bytes); remove it or pass --skip-bad-files", path)
            it = iter_batches(path, batch_rows=16, required=required)
            next(it, None)
            it.close()
        except InputError as exc:
            problems.append((path, exc))
    return problems


def _fingerprint(stage: Stage, files: Sequence[str], tasks: int, deferred: bool = False) -> dict[str, Any]:
    fp = {"stage": stage.name, "stage_config": stage.config.to_dict(), "inputs": list(files), "tasks": tasks}
    if deferred:  # inputs are the paths as given, listed by the tasks when they start
        fp["deferred"] = True
    return fp


def stage_summary_path(output: str) -> str:
    return cfs.join(output, RUN_DIR, "summary.json")


def is_complete(output: str) -> bool:
    return cfs.exists(stage_summary_path(output))


@dataclass
class StagePlan:
    """A stage ready to run: its context and the chain of datatrove executors (phases, map, finalize)."""

    stage: Stage
    run: RunContext
    executors: list[Any]
    skipped_summary: dict[str, Any] | None = None
    phase_names: list[str] = field(default_factory=list)

    @property
    def first(self) -> Any:
        return self.executors[0] if self.executors else None

    @property
    def last(self) -> Any:
        return self.executors[-1] if self.executors else None


def finalize_stage(stage: Stage, run: RunContext) -> dict[str, Any]:
    summary = collect_summary(run)
    stage.finalize(run, summary)
    atomic_write_json(stage_summary_path(run.output), summary)
    return summary


def plan_stage(stage: Stage, inputs: Sequence[str], output: str, opts: RunOptions | None = None, *,
               depends: Any = None, deferred_inputs: bool = False) -> StagePlan:
    """Check inputs and output, write OUTPUT/_run/config.json, and build the executor chain.

    With ``deferred_inputs`` (an earlier stage of a submitted pipeline will produce them)
    nothing is listed now: tasks list the inputs when they start, and ``tasks`` must be set.
    """
    opts = opts or RunOptions()
    bad: list[dict[str, str]] = []
    files: list[str] | None
    config_path = cfs.join(output, RUN_DIR, "config.json")
    old: dict[str, Any] | None = None
    if cfs.exists(config_path):
        old = cfs.read_json(config_path).get("fingerprint")
    # A stage first submitted before its inputs existed keeps that layout (task count, prepare
    # job) on every rerun, so the tasks and phases that finished are reused, not redone.
    if old and old.get("deferred") and old == _fingerprint(stage, list(inputs), opts.tasks, deferred=True):
        deferred_inputs = True
    if deferred_inputs:
        if not opts.tasks:
            raise ConfigError(f"stage {stage.name}: its input comes from an earlier stage, so set 'tasks' "
                              f"(e.g. --tasks 64) when submitting the whole pipeline to {opts.executor}")
        files = None
        tasks = opts.tasks
    else:
        files = stage.list_inputs(inputs)
        for f in files:
            if cfs.inside(f, output):
                raise ConfigError(f"{f}: an input file lies inside the output folder {output}; choose another -o")
        problems = stage.preflight(files)
        if problems:
            if not opts.skip_bad_files:
                path, exc = problems[0]
                more = f" ({len(problems) - 1} more bad file(s))" if len(problems) > 1 else ""
                raise type(exc)(f"{str(exc).rstrip('.')}{more}. Nothing was written.")
            bad = [{"path": p, "error": str(e)} for p, e in problems]
            bad_paths = {p for p, _ in problems}
            files = [f for f in files if f not in bad_paths]
        tasks = opts.tasks or max(1, len(files))
        tasks = max(1, min(tasks, max(1, len(files))))
    logging_dir = opts.logging_dir or cfs.join(output, LOGS_DIR)
    run = RunContext(stage_name=stage.name, files=files, output=output, options=opts, tasks=tasks,
                     removed_dir=opts.removed_dir or cfs.join(output, REMOVED_DIR),
                     side_dir=cfs.join(output, SIDE_DIR), logging_dir=logging_dir, bad_files=bad,
                     inputs=list(inputs), lister=stage.list_inputs, reader=stage.read_batches)
    fp = _fingerprint(stage, files if files is not None else list(inputs), tasks, deferred=deferred_inputs)
    if old is not None:
        if old != fp:
            if not opts.overwrite:
                raise ConfigError(f"{output}: holds a run with different settings or inputs; pass --overwrite "
                                  "to replace it, or choose another output folder")
            cfs.rmtree(output)
            if opts.removed_dir:
                cfs.rmtree(opts.removed_dir)
    elif not cfs.is_empty_dir(output):
        if not opts.overwrite:
            raise ConfigError(f"{output}: the output folder exists and is not empty; pass --overwrite or choose "
                              "another output folder")
        cfs.rmtree(output)
    try:
        cfs.makedirs(output)
    except OSError as exc:
        raise FatalError(f"{output}: cannot create the output folder ({exc}); check permissions and free space") from exc
    atomic_write_json(config_path, {
        "mathcorpus_version": __version__, "fingerprint": fp, "executor": opts.to_dict(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    })
    if is_complete(output):
        summary = cfs.read_json(stage_summary_path(output))
        summary["skipped"] = True
        return StagePlan(stage, run, [], skipped_summary=summary)
    # summary.json is the stage's completion mark; without it the finalize phase must run again
    # even if a killed earlier attempt left its datatrove completion marker behind.
    cfs.remove(cfs.join(logging_dir, "finalize", "completions", "00000"))
    # Driver-side preparation, one rule for every executor: in the driver now, unless it reads
    # inputs that an earlier stage of a submitted chain has not written yet; then it is the
    # stage's first job, and every later job loads the stage it prepared.
    phases: list[tuple[str, list[PipelineStep], int]] = []
    if deferred_inputs and stage.prepare_reads_inputs:
        run.prepared = cfs.join(output, RUN_DIR, PREPARED_FILE)
        marker = cfs.join(logging_dir, "prepare", "completions", "00000")
        if not cfs.exists(run.prepared):
            cfs.remove(marker)
        phases.append(("prepare", [_Step("prepare", partial(_prepare_task, stage, run))], 1))
    else:
        stage.prepare(run)
    executors: list[Any] = []
    previous = depends
    phases += [(ph.name, [_Step(ph.name, partial(_run_phase, ph, run, stage=stage))], ph.tasks)
               for ph in stage.pre_phases(run)]
    phases.append(("map", [_Step("map", partial(_map_task, stage, run))], tasks))
    # duplicate-id check, one task per id-hash range (corpus/idcheck.py); the count is in the
    # phase name so a rerun with another --id-partitions never reuses the other's completions
    n_ids = max(1, opts.id_partitions or tasks)
    phases.append((f"ids-{n_ids}", [_Step("ids", partial(_idcheck_task, run))], n_ids))
    phases += [(ph.name, [_Step(ph.name, partial(_run_phase, ph, run, stage=stage))], ph.tasks)
               for ph in stage.post_phases(run)]
    phases.append(("finalize", [_Step("finalize", partial(_finalize_task, stage, run))], 1))
    for name, steps, n in phases:
        # locally the id check runs its ranges one after another in this process: each range
        # is a sort of ~8 bytes x docs / ranges, cheaper than starting a process pool
        ph_opts = replace_options(opts, workers=1) if name.startswith("ids-") and opts.executor == "local" else opts
        ex = make_executor(steps, n, ph_opts, cfs.join(logging_dir, name), f"{stage.name}-{name}",
                           depends=previous)
        executors.append(ex)
        previous = ex
    return StagePlan(stage, run, executors, phase_names=[name for name, _, _ in phases])


def run_stage(stage: Stage, inputs: Sequence[str], output: str, opts: RunOptions | None = None) -> dict[str, Any]:
    """Run ``stage`` over ``inputs`` into ``output``; returns the run summary.

    Raises InputError before writing anything when an input file is bad (unless
    ``skip_bad_files``), FatalError when documents would be lost. With executor=slurm the
    chain is submitted, then either :class:`corpus.slurm.JobsSubmitted` is raised (the job ids,
    logs and the status command; not an error) or, with ``wait``, the jobs are followed to the end.
    """
    opts = opts or RunOptions()
    if opts.executor == "slurm":
        from corpus import slurm

        slurm.validate(opts)
        slurm.check_resubmit([output], output)
    plan = plan_stage(stage, inputs, output, opts)
    if plan.skipped_summary is not None:
        return plan.skipped_summary
    t0 = time.monotonic()
    if opts.executor == "slurm":
        records = slurm.submit([plan])
        if not opts.wait:
            raise slurm.JobsSubmitted(slurm.submission_message(records, output), {"submitted": records})
        print(slurm.submission_message(records, output), file=sys.stderr)
        slurm.wait([output], lambda line: print(line, file=sys.stderr))
    else:
        for ex in plan.executors:
            ex.run()
    summary = cfs.read_json(stage_summary_path(output))
    summary["seconds"] = round(time.monotonic() - t0, 3)
    atomic_write_json(stage_summary_path(output), summary)
    return summary


def collect_summary(run: RunContext) -> dict[str, Any]:
    """Sum per-task stats and check ``docs_in == kept + removed`` over the whole run."""
    docs_in = bytes_in = kept = kept_inputs = 0
    removed: Counter = Counter()
    counters: Counter = Counter()
    bad = list(run.bad_files)
    for rank in range(run.tasks):
        p = cfs.join(run.stats_dir, f"{rank:05d}.json")
        if not cfs.exists(p):
            raise FatalError(f"{run.output}: task {rank} finished without its stats file {p}; rerun the "
                             "same command to redo that task")
        s = cfs.read_json(p)
        docs_in += s["docs_in"]
        bytes_in += s["bytes_in"]
        kept += s["kept"]
        kept_inputs += s.get("kept_inputs", s["kept"])
        removed.update(s["removed"])
        counters.update(s.get("counters", {}))
        bad.extend(s["bad_files"])
    n_removed = sum(removed.values())
    if docs_in != kept_inputs + n_removed:
        raise FatalError(f"{run.output}: {docs_in} docs in but {kept_inputs} kept + {n_removed} removed")
    n_dup, examples = duplicate_ids(run)
    if n_dup and not run.options.allow_duplicate_ids:
        raise InputError(f"{', '.join(run.inputs)}: {n_dup} document id(s) occur more than once across the input "
                         f"(e.g. {', '.join(repr(e) for e in examples)}); ids must be unique within a dataset. "
                         "Make them unique (e.g. prefix each shard's name) or pass --allow-duplicate-ids")
    return {
        "stage": run.stage_name, "mathcorpus_version": __version__, "output": run.output,
        "removed_dir": run.removed_dir, "inputs": len(run.all_files()) + len(run.bad_files), "tasks": run.tasks,
        "docs_in": docs_in, "bytes_in": bytes_in, "kept": kept, "kept_inputs": kept_inputs, "removed": n_removed,
        "removed_by_reason": dict(sorted(removed.items())), "bad_files": bad, "counters": dict(counters),
        "duplicate_ids": n_dup, "check": "docs_in == kept + removed",
    }


def options_from(values: dict[str, Any], config_file: str | None = None) -> RunOptions:
    """RunOptions from CLI values (None = not given) over an optional config file's executor section."""
    from corpus.config import resolve

    names = set(RunOptions.field_names())
    return resolve(RunOptions, config_file, {k: v for k, v in values.items() if k in names}, section="executor")


def replace_options(opts: RunOptions, **changes: Any) -> RunOptions:
    return dataclasses.replace(opts, **changes)
