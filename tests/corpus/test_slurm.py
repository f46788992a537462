"""Stage commands and pipelines on a real single-node Slurm cluster (tests/slurm/cluster.py).

The cluster is Debian's slurmctld + slurmd + munge, started as root by the fixture; .ci/run
installs the packages. Every test here submits through the real sbatch and the jobs really run.
Where the packages are missing or we are not root the tests are skipped with the reason printed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corpus import slurm
from corpus.pipeline import pipeline_status
from tests.corpus.test_pipeline import tree_digest as _tree_digest
from tests.slurm.cluster import PARTITION, Cluster, missing_reason

BIN = Path(sys.executable).parent
MC = str(BIN / "mathcorpus")
REPO = Path(__file__).resolve().parents[2]


def test_memory_is_rendered_in_whole_megabytes() -> None:
    assert slurm.mem_mb(2.0) == 2048
    assert slurm.mem_mb(1.5) == 1536
    assert slurm.mem_mb(0.3) == 307
    assert slurm.mem_mb(0.0001) == 1


def test_deferred_stages_prepare_by_one_rule_on_any_executor(tmp_path: Path) -> None:
    """A stage whose input an earlier submitted stage has yet to write: preparation that does not
    read the input runs in the driver at planning (decontam's index); one that does (export's
    engine choice) becomes the stage's first job. Same plan on every executor: run here locally."""
    from corpus.export.stage import ExportConfig, ExportStage
    from corpus.passthrough import CopyStage
    from corpus.runner import RunOptions, plan_stage, run_stage
    from decontam.stage import DecontamConfig, DecontamStage

    later = tmp_path / "copied"  # does not exist while the next stages are planned
    opts = RunOptions(tasks=2)
    dec = DecontamStage(DecontamConfig(benchmarks="pretrain"))
    dplan = plan_stage(dec, [str(later)], str(tmp_path / "dec"), opts, deferred_inputs=True)
    assert dplan.phase_names[0] == "map" and dec.index_path and os.path.isdir(dec.index_path)
    exp = ExportStage(ExportConfig(format="megatron", seq_len=256, seed=0))
    eplan = plan_stage(exp, [str(later)], str(tmp_path / "exp"), opts, deferred_inputs=True)
    assert eplan.phase_names[0] == "prepare" and exp.engine_choice is None
    run_stage(CopyStage(CopyStage.Config()), ["demo/planted/"], str(later), RunOptions())
    for ex in dplan.executors + eplan.executors:
        ex.run()
    assert json.loads((tmp_path / "exp" / "_run" / "config.json").read_text())["fingerprint"]["deferred"] is True
    # the same export planned with its input present prepares in the driver; same shards
    direct = run_stage(ExportStage(ExportConfig(format="megatron", seq_len=256, seed=0)), [str(later)],
                       str(tmp_path / "exp2"), opts)
    assert direct["docs_in"] == json.loads((tmp_path / "exp" / "_run" / "summary.json").read_text())["docs_in"]
    for f in ("tokens-00000.bin", "tokens-00000.idx"):
        assert (tmp_path / "exp" / f).read_bytes() == (tmp_path / "exp2" / f).read_bytes()
    assert json.loads((tmp_path / "dec" / "_run" / "summary.json").read_text())["removed"] > 0
    # a rerun keeps the layout it was submitted with (the tasks and phases that finished are reused)
    again = plan_stage(ExportStage(ExportConfig(format="megatron", seq_len=256, seed=0)), [str(later)],
                       str(tmp_path / "exp"), opts)
    assert again.skipped_summary is not None


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    reason = missing_reason()
    if reason:
        print(f"\nSKIP real-Slurm tests: {reason}", file=sys.stderr)
        pytest.skip(reason)
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    c.start()
    old = {k: os.environ.get(k) for k in (*c.env, "MATHCORPUS_SLURM_POLL")}
    os.environ.update(c.env)
    os.environ["MATHCORPUS_SLURM_POLL"] = "0.5"
    try:
        yield c
    finally:
        c.stop()
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def mc(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([MC, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


def status(folder: Path) -> list[dict]:
    """`pipeline status` in-process (polled often; the CLI's own output is checked once per test)."""
    return pipeline_status(str(folder))["steps"]


def tree_digest(folder: Path) -> dict[str, str]:
    """Data files' sha256, the HTML report's too (with the run's own folder name taken out)."""
    out = _tree_digest(folder)
    for p in folder.rglob("*.html"):
        rel = p.relative_to(folder).as_posix()
        if rel in out:
            out[rel] = hashlib.sha256(p.read_bytes().replace(str(folder).encode(), b"<WORKDIR>")).hexdigest()
    return out


def wait_until(pred, what: str, timeout: float = 120) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def test_bad_options_fail_before_anything_is_submitted(cluster: Cluster, tmp_path: Path) -> None:
    out = tmp_path / "o"
    r = mc("decontam", "run", "demo/planted/", "-o", str(out), "--executor", "slurm", "--slurm-partition", "gpu")
    assert r.returncode == 2
    assert r.stderr.strip() == f"Error: --slurm-partition 'gpu' does not exist on this cluster (partitions: {PARTITION})"
    assert not out.exists()
    # more memory than the node has: sbatch itself refuses, and its reason is the one line shown
    r = mc("decontam", "run", "demo/planted/", "-o", str(out), "--executor", "slurm", "--slurm-partition", PARTITION,
           "--slurm-mem-per-cpu-gb", "100000")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert lines == ["Error: sbatch refused the job options (--partition=cpu --time=24:00:00 --cpus-per-task=1 "
                     "--mem-per-cpu=102400000M): allocation failure: Requested node configuration is not available"]
    assert not out.exists()


def test_stage_command_submits_and_is_watched(cluster: Cluster, tmp_path: Path) -> None:
    """`decontam run --executor slurm` exits 0 after submitting (no KeyError on a summary not
    written yet); status follows the jobs; a second submission is refused while they run."""
    out = tmp_path / "clean"
    args = ["decontam", "run", "demo/planted/", "-o", str(out), "--benchmarks", "pretrain", "--executor", "slurm",
            "--slurm-partition", PARTITION, "--tasks", "2", "--slurm-mem-per-cpu-gb", "0.5"]
    r = mc(*args)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    rec = info["submitted"][0]
    assert [p["phase"] for p in rec["phases"]][0] == "map" and all(p["job_ids"] for p in rec["phases"])
    assert f"submitted decontam -> {out}: jobs map " in r.stderr
    assert f"watch: mathcorpus pipeline status {out}" in r.stderr
    assert f"logs: {out}/_logs/PHASE/slurm_logs/JOB_TASK.out" in r.stderr
    script = (out / "_logs" / "map" / "launch_script.slurm").read_text()
    assert "#SBATCH --mem-per-cpu=512M" in script and f"#SBATCH --array=0-{rec['tasks'] - 1}\n" in script
    again = mc(*args)
    assert again.returncode == 2 and "of an earlier submission are still queued or running" in again.stderr
    seen = set()

    def done() -> bool:
        st = status(out)[0]
        seen.add(st["state"])
        return st["state"] == "complete"

    wait_until(done, "the decontam jobs")
    assert seen & {"pending", "running"}
    human = mc("pipeline", "status", str(out))
    assert human.returncode == 0 and human.stdout.startswith("decontam ") and " complete " in human.stdout
    summary = json.loads((out / "_run" / "summary.json").read_text())
    assert summary["docs_in"] == summary["kept"] + summary["removed"] and summary["removed"] > 0
    # the same command after the jobs ended prints the usual summary
    r = mc(*args, "--wait")
    assert r.returncode == 0, r.stderr
    assert "already complete, skipped" in r.stderr + r.stdout
    # --wait: progress while the jobs run, then the summary a local run prints
    out2 = tmp_path / "clean2"
    r = mc(*[out2.as_posix() if a == str(out) else a for a in args], "--wait")
    assert r.returncode == 0, r.stderr
    assert "submitted decontam" in r.stderr and re.search(r"\[slurm\] clean2: (pending|running): map", r.stderr)
    assert "[slurm] clean2: complete" in r.stderr
    assert f"{summary['docs_in']:,} docs in, {summary['kept']:,} kept, {summary['removed']:,} removed" \
        in r.stdout + r.stderr


def test_pipeline_on_slurm_matches_local_and_resumes_after_scancel(cluster: Cluster, tmp_path: Path) -> None:
    """demo/faults.yaml through sbatch: a job cancelled mid-way, status shows it with its log,
    the rerun resubmits only what did not finish and the shards equal a local run's."""
    local, sl = tmp_path / "local", tmp_path / "slurm"
    # the local reference run goes on while the Slurm jobs wait for their turns
    ref = subprocess.Popen([MC, "pipeline", "run", "demo/faults.yaml", "--workdir", str(local), "--tasks", "2",
                            "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
    args = ["pipeline", "run", "demo/faults.yaml", "--workdir", str(sl), "--executor", "slurm",
            "--slurm-partition", PARTITION, "--tasks", "2", "--slurm-mem-per-cpu-gb", "1.5"]
    r = mc(*args)
    assert r.returncode == 0, r.stderr
    sub = json.loads(r.stdout)["submitted"]
    assert [s["stage"] for s in sub] == ["dedup-exact", "decontam", "export"]
    # export's engine choice samples its input, which does not exist yet: it is the stage's first job
    assert sub[2]["phases"][0]["phase"] == "prepare"
    # cancel decontam's map job while it runs
    map_job = next(p for p in sub[1]["phases"] if p["phase"] == "map")["job_ids"][0]
    wait_until(lambda: status(sl)[1]["state"] == "running", "decontam's map job to start", timeout=150)
    subprocess.run(["scancel", map_job], check=True, timeout=30)
    wait_until(lambda: status(sl)[1]["state"] == "failed", "the cancelled job to show as failed")
    st = status(sl)
    assert st[0]["state"] == "complete"
    assert st[1]["slurm"]["slurm_state"] == "CANCELLED" and st[1]["slurm"]["job"].startswith(f"{map_job}_")
    assert st[1]["slurm"]["slurm_log"].startswith(str(sl / "01-decontam" / "_logs" / "map" / "slurm_logs"))
    assert st[2]["state"] == "blocked"
    human = mc("pipeline", "status", str(sl))
    assert "decontam" in human.stdout and "CANCELLED" in human.stdout and "slurm_logs" in human.stdout, \
        human.stdout + human.stderr
    # rerun the same command: dedup is not resubmitted, the jobs stuck behind the cancelled one are
    # cancelled, and --wait follows the new ones to the usual report
    r = mc(*args, "--wait")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "submitted dedup-exact" not in r.stderr and "submitted decontam" in r.stderr
    assert "[slurm] " in r.stderr and "02-export: complete" in r.stderr
    assert "pipeline demo/faults.yaml" in r.stdout  # the report table
    assert not slurm.live_jobs([str(sl / n) for n in ("00-dedup-exact", "01-decontam", "02-export")])[0]
    _, err = ref.communicate(timeout=300)
    assert ref.returncode == 0, err[-3000:]
    a, b = tree_digest(local), tree_digest(sl)
    assert a and a == b
    assert any(k.startswith("02-export/tokens-") for k in b)
    assert [s["state"] for s in status(sl)] == ["complete"] * 3
