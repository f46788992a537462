"""Slurm submission, job records and job state for the stage runner.

The runner builds one datatrove executor per phase of a stage (prepare, pre-phases, map,
post-phases, finalize); on Slurm each becomes one sbatch job array that depends
(``afterok``) on the one before. This module owns what datatrove leaves to the caller:

- checking the options before anything is submitted (``sbatch`` present, partition known,
  memory and time well-formed; ``sbatch --test-only`` on the first script);
- submitting with sbatch's own error as one line, memory per CPU in whole MB, the driver's
  Python on ``PATH`` in the jobs, and no extra datatrove ``merge_stats`` job per phase;
- recording the job ids of every submission in ``OUTPUT/_run/slurm.json``;
- reading the state of a stage back (``pipeline status``, ``--wait``) from squeue (sacct
  when accounting is on) and datatrove's completion markers, with the log of a failed task;
- refusing to submit a stage twice while its jobs are still queued or running, and
  cancelling jobs that can never start because a job they depend on failed.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from copy import deepcopy
from typing import Any

from datatrove.executor import SlurmPipelineExecutor

from corpus import fs as cfs
from corpus.errors import ConfigError, FatalError, MathcorpusError
from corpus.shards import atomic_write_json

JOBS_FILE = "slurm.json"
RUN_DIR = "_run"
ACTIVE = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "REQUEUED", "RESIZING", "SUSPENDED", "STAGE_OUT")
ENDED_BAD = ("FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED", "BOOT_FAIL", "DEADLINE")
NEVER = "DependencyNeverSatisfied"
_TIME_RE = re.compile(r"^(\d+|\d+:\d{1,2}|\d+:\d{1,2}:\d{1,2}|\d+-\d+|\d+-\d+:\d{1,2}|\d+-\d+:\d{1,2}:\d{1,2}"
                      r"|UNLIMITED|INFINITE)$")


class JobsSubmitted(MathcorpusError):
    """Not an error: jobs were submitted and the command returns without waiting (exit 0).

    Raised by ``run_stage`` so that a stage command stops after submitting instead of reading
    a summary that does not exist yet; the CLI prints ``message`` on stderr and ``info`` as JSON.
    """

    exit_code = 0

    def __init__(self, message: str, info: dict[str, Any]) -> None:
        super().__init__(message)
        self.info = info


def mem_mb(gb: float) -> int:
    """Memory per CPU in whole MB (sbatch takes no fractions: 2.0G is refused, 2048M is not)."""
    return max(1, int(round(gb * 1024)))


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ConfigError(f"executor=slurm: '{name}' was not found on PATH; run on a Slurm login node "
                          "(or one with the Slurm client commands installed)")
    return path


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errs = [ln for ln in lines if "error" in ln.lower()] or lines
    msg = errs[-1] if errs else "no message"
    return re.sub(r"^(sbatch|squeue|sinfo): error: ", "", msg)


def partitions() -> list[str]:
    """Partition names the cluster knows (the default one without its '*')."""
    p = subprocess.run([_tool("sinfo"), "-h", "-o", "%P"], capture_output=True, text=True, timeout=60)
    if p.returncode:
        raise FatalError(f"executor=slurm: sinfo failed: {_one_line(p.stderr)}; is the Slurm controller up?")
    return sorted({ln.strip().rstrip("*") for ln in p.stdout.splitlines() if ln.strip()})


def validate(opts: Any) -> None:
    """Check executor=slurm options before anything is submitted; one-line ConfigError otherwise."""
    _tool("sbatch")
    _tool("squeue")
    if opts.slurm_mem_per_cpu_gb <= 0:
        raise ConfigError(f"--slurm-mem-per-cpu-gb must be above 0, got {opts.slurm_mem_per_cpu_gb}")
    if opts.slurm_cpus_per_task < 1:
        raise ConfigError(f"--slurm-cpus-per-task must be at least 1, got {opts.slurm_cpus_per_task}")
    if not _TIME_RE.match(str(opts.slurm_time)):
        raise ConfigError(f"--slurm-time {opts.slurm_time!r} is not a Slurm time; use e.g. 90 (minutes), "
                          "02:00:00 or 1-12:00:00")
    known = partitions()
    if not opts.slurm_partition:
        raise ConfigError(f"executor=slurm needs --slurm-partition (this cluster has: {', '.join(known)})")
    if opts.slurm_partition not in known:
        raise ConfigError(f"--slurm-partition {opts.slurm_partition!r} does not exist on this cluster "
                          f"(partitions: {', '.join(known)})")
    # what sbatch alone knows (memory or CPUs beyond any node, account and QOS rules): ask it with
    # --test-only before anything is written or submitted
    extra = [f"--{k}={v}" if v not in (None, "") else f"--{k}" for k, v in opts.slurm_sbatch_args.items()]
    lines = [f"--partition={opts.slurm_partition}", f"--time={opts.slurm_time}",
             f"--cpus-per-task={opts.slurm_cpus_per_task}", f"--mem-per-cpu={mem_mb(opts.slurm_mem_per_cpu_gb)}M",
             *extra]
    sbatch("#!/bin/bash\n" + "".join(f"#SBATCH {ln}\n" for ln in lines) + "true\n", [], test_only=True)


def sbatch(script: str, args: list[str], *, test_only: bool = False) -> str:
    """Submit ``script`` and return the job id; sbatch's refusal becomes a one-line FatalError."""
    with tempfile.NamedTemporaryFile("w", suffix=".slurm", prefix="mathcorpus-") as fh:
        fh.write(script)
        fh.flush()
        argv = [_tool("sbatch"), "--parsable", *(["--test-only"] if test_only else []), *args, fh.name]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    if p.returncode:
        m = re.search(r"^#SBATCH --job-name=(.*)$", script, re.M)
        what = f"job {m.group(1)}" if m else f"the job options ({' '.join(re.findall(r'^#SBATCH (.*)$', script, re.M))})"
        raise FatalError(f"sbatch refused {what}: {_one_line(p.stderr or p.stdout)}")
    if test_only:
        return ""
    return p.stdout.strip().split(";")[0]


class SlurmExecutor(SlurmPipelineExecutor):
    """datatrove's Slurm executor with our submission: one-line sbatch errors, job ids kept per
    phase, no merge_stats job (the runner writes its own stats), and a dependency on a phase
    that had nothing left to do passed on to the phase before it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.job_ids: list[str] = []

    def launch_merge_stats(self) -> None:
        """Our tasks write their own stats; datatrove's extra merge job per phase is not needed."""

    def launch_job(self) -> None:
        dep = self.depends
        if dep is not None:
            if not dep.job_id:
                dep.launch_job()
            # a phase with nothing left to run (job_id -1) passes on what it depended on
            self.depends_job_id = dep.job_id if dep.job_id != -1 else dep.depends_job_id
            self.depends = None  # do not pickle the dependency chain into this job
        ranks = self.get_incomplete_ranks()
        if not ranks:
            self.job_id = -1
            return
        executor = deepcopy(self)
        with self.logging_dir.open("executor.pik", "wb") as fh:
            import dill
            from dill import CONTENTS_FMODE

            dill.dump(executor, fh, fmode=CONTENTS_FMODE)
        self.save_executor_as_json()
        with self.logging_dir.open("ranks_to_run.json", "w") as fh:
            json.dump(ranks, fh)
        size = len(ranks) if self.max_array_size == -1 else min(len(ranks), self.max_array_size)
        pik = self.logging_dir.resolve_paths("executor.pik")
        script = self.get_launch_file_contents(self.get_sbatch_args(size),
                                               f"srun -l -n 1 launch_pickled_pipeline {shlex.quote(pik)}")
        with self.logging_dir.open("launch_script.slurm", "w") as fh:
            fh.write(script)
        self.job_ids = []
        for offset in range(math.ceil(len(ranks) / size)):
            args = [f"--export=ALL,RUN_OFFSET={offset}"]
            if self.dependency:
                args.append(f"--dependency={self.dependency}")
            self.job_id = sbatch(script, args)
            self.job_ids.append(self.job_id)


def env_command(opts: Any) -> str | None:
    """Shell line that puts this Python's environment on the jobs' PATH (None: --slurm-venv does it).

    ``launch_pickled_pipeline`` must be found in the job; on a cluster the venv must sit on a
    filesystem the compute nodes share.
    """
    if opts.slurm_venv:
        return None
    return f"export PATH={shlex.quote(os.path.dirname(sys.executable))}:$PATH"


def submit(plans: list[Any]) -> list[dict[str, Any]]:
    """Submit the executor chains of ``plans`` (already linked by ``depends``); record and return the job ids."""
    live = [p for p in plans if p.executors]
    for p in live:
        if p.last.job_id is None:  # launching a later stage has launched the ones it depends on
            p.last.launch_job()
    records = [record_submission(p) for p in live]
    return [{k: v for k, v in r.items() if k != "earlier"} for r in records]  # the history stays in slurm.json


# ----------------------------------------------------------------------------- records
def jobs_path(output: str) -> str:
    return cfs.join(output, RUN_DIR, JOBS_FILE)


def read_jobs(output: str) -> dict[str, Any] | None:
    try:
        return cfs.read_json(jobs_path(output))  # a local path or a URL (workdir on object storage)
    except FileNotFoundError:
        return None


def record_submission(plan: Any) -> dict[str, Any]:
    """Write the job ids of a just-submitted stage plan to OUTPUT/_run/slurm.json; return the record."""
    phases = []
    for name, ex in zip(plan.phase_names, plan.executors, strict=True):
        ids = [str(j) for j in getattr(ex, "job_ids", [])]
        phases.append({"phase": name, "job_ids": ids, "tasks": ex.tasks,
                       "logging_dir": ex.logging_dir.resolve_paths(""), "slurm_logs": ex.slurm_logs_folder})
    old = read_jobs(plan.run.output) or {}
    earlier = old.get("earlier", []) + ([{k: old[k] for k in ("submitted", "phases")}] if old.get("phases") else [])
    rec = {"stage": plan.stage.name, "output": plan.run.output, "tasks": plan.run.tasks,
           "submitted": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "phases": phases, "earlier": earlier}
    atomic_write_json(jobs_path(plan.run.output), rec)
    return rec


def all_job_ids(rec: dict[str, Any], include_earlier: bool = True) -> list[str]:
    ids = [j for ph in rec.get("phases", []) for j in ph["job_ids"]]
    if include_earlier:
        ids += [j for sub in rec.get("earlier", []) for ph in sub["phases"] for j in ph["job_ids"]]
    return ids


# ----------------------------------------------------------------------------- state
def query_jobs(job_ids: list[str]) -> dict[str, list[dict[str, str]]]:
    """Array job id -> its elements [{id: '12_3', state, reason}], from squeue (and sacct if enabled).

    Jobs that ended leave squeue after the cluster's MinJobAge; sacct knows them when
    accounting storage is on. A job neither knows is absent from the result.
    """
    out: dict[str, list[dict[str, str]]] = {}
    if not job_ids:
        return out
    sq = shutil.which("squeue")
    if sq:
        p = subprocess.run([sq, "-h", "--states=all", "-j", ",".join(job_ids), "-o", "%F|%i|%T|%r"],
                           capture_output=True, text=True, timeout=60)
        for line in p.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 4:
                out.setdefault(parts[0], []).append({"id": parts[1], "state": parts[2], "reason": parts[3]})
    missing = [j for j in job_ids if j not in out]
    sa = shutil.which("sacct")
    if missing and sa:
        p = subprocess.run([sa, "-n", "-X", "-P", "-j", ",".join(missing), "-o", "JobID,State"],
                           capture_output=True, text=True, timeout=60)
        if p.returncode == 0:
            for line in p.stdout.splitlines():
                jid, _, state = line.strip().partition("|")
                base = jid.split("_")[0]
                if base in missing and state:
                    out.setdefault(base, []).append({"id": jid, "state": state.split()[0], "reason": ""})
    return out


def _completions(logging_dir: str) -> set[int]:
    return {int(n) for n in cfs.listdir(cfs.join(logging_dir, "completions")) if n.isdigit()}


def _ranks_to_run(logging_dir: str) -> list[int]:
    try:
        return cfs.read_json(cfs.join(logging_dir, "ranks_to_run.json"))
    except (FileNotFoundError, ValueError):
        return []


def _failed_logs(ph: dict[str, Any], element: str) -> dict[str, str]:
    """The Slurm log and the task log of one array element (e.g. '12_3')."""
    base, _, idx = element.partition("_")
    logs = {"slurm_log": os.path.join(ph["slurm_logs"], f"{base}_{idx or 0}.out")}
    ranks = _ranks_to_run(ph["logging_dir"])
    if idx.isdigit() and int(idx) < len(ranks):
        logs["task_log"] = os.path.join(ph["logging_dir"], "logs", f"task_{ranks[int(idx)]:05d}.log")
    return logs


def stage_state(output: str, jobs: dict[str, list[dict[str, str]]] | None = None) -> dict[str, Any] | None:
    """State of a submitted stage: complete, running, pending, blocked or failed (None: never submitted).

    ``jobs`` is a :func:`query_jobs` result (queried here when not given). The phase shown is
    the first one not complete; a failed element names its Slurm log and its task log.
    """
    rec = read_jobs(output)
    if rec is None:
        return None
    if cfs.exists(cfs.join(output, RUN_DIR, "summary.json")):
        return {"state": "complete", "job_ids": all_job_ids(rec, False)}
    if jobs is None:
        jobs = query_jobs(all_job_ids(rec, False))
    for ph in rec["phases"]:
        done = len(_completions(ph["logging_dir"]))
        if done >= ph["tasks"]:
            continue
        row: dict[str, Any] = {"phase": ph["phase"], "tasks_done": done, "tasks": ph["tasks"],
                               "job_ids": ph["job_ids"]}
        elems = [e for j in ph["job_ids"] for e in jobs.get(j, [])]
        bad = [e for e in elems if e["state"] in ENDED_BAD]
        if bad:
            e = bad[0]
            return {**row, "state": "failed", "job": e["id"], "slurm_state": e["state"], **_failed_logs(ph, e["id"])}
        running = [e for e in elems if e["state"] in ("RUNNING", "COMPLETING", "CONFIGURING")]
        if running:
            return {**row, "state": "running", "running": len(running)}
        pending = [e for e in elems if e["state"] in ACTIVE]
        if pending:
            reason = pending[0]["reason"]
            if reason == NEVER:
                return {**row, "state": "blocked", "reason": "a job it depends on failed or was cancelled"}
            return {**row, "state": "pending", "reason": reason}
        if not ph["job_ids"]:
            return {**row, "state": "failed", "reason": "no job was submitted for this phase"}
        if not elems:
            return {**row, "state": "failed", "reason": f"jobs {','.join(ph['job_ids'])} are gone from the queue "
                                                        f"without finishing; see {ph['slurm_logs']}"}
        # every element ended COMPLETED but a task has no completion marker
        return {**row, "state": "failed", "reason": f"jobs ended without finishing every task; see {ph['slurm_logs']}"}
    # every phase has its markers but summary.json is not there yet: finalize is writing it
    return {"state": "running", "phase": rec["phases"][-1]["phase"] if rec["phases"] else "",
            "job_ids": all_job_ids(rec, False)}


def describe_state(st: dict[str, Any]) -> str:
    """One line for `pipeline status` and --wait progress."""
    s = st["state"]
    if s == "complete":
        return "complete"
    where = f"{st.get('phase', '')} {st.get('tasks_done', 0)}/{st.get('tasks', '?')} tasks done" if st.get("phase") \
        else ""
    jobs = f" (job {','.join(st['job_ids'])})" if st.get("job_ids") and "phase" in st else ""
    if s == "failed":
        if "job" in st:
            log = st.get("task_log") or st.get("slurm_log")
            return (f"failed: {where}; job {st['job']} {st['slurm_state']}; log {log}"
                    + (f" (Slurm log {st['slurm_log']})" if st.get("task_log") else ""))
        return f"failed: {where}; {st.get('reason', '')}"
    if s == "pending":
        reason = {"None": "queued", "": "queued", "Dependency": "waiting for the job before it"}.get(
            str(st.get("reason")), f"reason {st.get('reason')}")
        return f"pending: {where}{jobs}, {reason}"
    if s == "blocked":
        return f"blocked: {where}{jobs}, {st.get('reason')}"
    return f"running: {where}{jobs}".rstrip(": ")


def live_jobs(outputs: list[str]) -> tuple[list[str], list[str]]:
    """(job ids still running or validly queued, queued ids that can never start) among ``outputs``' jobs.

    The jobs of one submission form one ``afterok`` chain: once one of them failed or was
    cancelled, every job still pending after it waits forever (DependencyNeverSatisfied, or
    Dependency on such a job), so all pending ones count as doomed.
    """
    ids: list[str] = []
    latest: list[str] = []
    for out in outputs:
        rec = read_jobs(out)
        if rec:
            ids += all_job_ids(rec)
            latest += all_job_ids(rec, False)
    jobs = query_jobs(ids)
    elems = {jid: e for jid, e in jobs.items()}
    broken = any(e["state"] in ENDED_BAD or e["reason"] == NEVER for j in latest for e in elems.get(j, []))
    running, pending = [], []
    for jid, es in elems.items():
        if any(e["state"] in ACTIVE and e["state"] != "PENDING" for e in es):
            running.append(jid)
        elif any(e["state"] == "PENDING" for e in es):
            pending.append(jid)
    if broken:
        return sorted(running, key=int), sorted(pending, key=int)
    return sorted(running + pending, key=int), []


def check_resubmit(outputs: list[str], watch: str) -> None:
    """Refuse to submit while jobs of an earlier submission may still run; cancel those that never can."""
    if not shutil.which("squeue"):
        return
    active, doomed = live_jobs(outputs)
    if active:
        raise ConfigError(f"Slurm jobs {', '.join(active)} of an earlier submission are still queued or running; "
                          f"watch them with `mathcorpus pipeline status {watch}`, or cancel them with "
                          f"`scancel {' '.join(active)}` and rerun")
    if doomed:
        subprocess.run([_tool("scancel"), *doomed], capture_output=True, text=True, timeout=60)


def submission_message(records: list[dict[str, Any]], watch: str) -> str:
    if not records:
        return f"nothing to submit: every stage in {watch} is complete (mathcorpus pipeline status {watch})"
    lines = []
    for rec in records:
        jobs = ", ".join(f"{ph['phase']} {','.join(ph['job_ids'])}" + (f" [{ph['tasks']} tasks]" if ph["tasks"] > 1
                                                                         else "")
                         for ph in rec["phases"] if ph["job_ids"])
        lines.append(f"submitted {rec['stage']} -> {rec['output']}: jobs {jobs or '(nothing left to run)'}")
        if rec["phases"]:
            base = os.path.dirname(rec["phases"][0]["logging_dir"].rstrip("/"))
            lines.append(f"  logs: {base}/PHASE/slurm_logs/JOB_TASK.out (Slurm), {base}/PHASE/logs/ (tasks)")
    lines.append(f"watch: mathcorpus pipeline status {watch}")
    lines.append("a failed or cancelled job: rerun the same command; it resubmits only what did not finish")
    return "\n".join(lines)


def wait(outputs: list[str], echo: Any, poll: float | None = None) -> None:
    """Block until every stage in ``outputs`` is complete; print progress; raise on a failed job."""
    poll = poll if poll is not None else float(os.environ.get("MATHCORPUS_SLURM_POLL", "2"))
    last = ""
    while True:
        ids = []
        for out in outputs:
            rec = read_jobs(out)
            if rec:
                ids += all_job_ids(rec, False)
        jobs = query_jobs(ids)
        states = [(out, stage_state(out, jobs)) for out in outputs]
        line = " | ".join(f"{os.path.basename(out.rstrip('/'))}: {describe_state(st) if st else 'skipped'}"
                          for out, st in states)
        if line != last:
            echo(f"[slurm] {line}")
            last = line
        for out, st in states:
            if st and st["state"] == "failed":
                raise FatalError(f"{out}: {describe_state(st)}; fix the cause and rerun the same command to "
                                 "resubmit what did not finish")
        if all(st is None or st["state"] == "complete" for _, st in states):
            return
        time.sleep(poll)
