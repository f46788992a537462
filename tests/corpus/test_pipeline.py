"""``mathcorpus pipeline``: file validation, dry run, resume, status, Slurm scripts, Ray executor."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from corpus.cli import main
from corpus.errors import ConfigError
from corpus.pipeline import load_pipeline
from corpus.shards import read_table
from tests.conftest import write_jsonl

BIN = Path(sys.executable).parent


def make_inputs(tmp_path: Path) -> Path:
    d = tmp_path / "in"
    for f in range(3):
        write_jsonl(d / f"p{f}.jsonl", [{"id": f"{f}-{i}", "text": f"doc {f} {i} " * (1 + i % 5), "source": "web"}
                                       for i in range(40)])
    return d


def write_pipe(tmp_path: Path, body: str) -> Path:
    p = tmp_path / "pipe.yaml"
    p.write_text(body)
    return p


def test_unknown_keys_name_the_nearest(tmp_path: Path) -> None:
    p = write_pipe(tmp_path, "workdir: w\ninputs: [x]\nstagse: []\n")
    with pytest.raises(ConfigError) as e:
        load_pipeline(str(p))
    assert str(e.value) == (f"{p}: unknown top-level key 'stagse'; did you mean 'stages'? "
                            "(valid keys: workdir, executor, inputs, stages, name)")
    p = write_pipe(tmp_path, "workdir: w\ninputs: [x]\nexecutor: {wrokers: 2}\nstages: [{stage: copy}]\n")
    with pytest.raises(ConfigError, match=r"executor: unknown key 'wrokers' for executor; did you mean 'workers'\?"):
        load_pipeline(str(p))
    p = write_pipe(tmp_path, "workdir: w\ninputs: [x]\nstages: [{stage: cpy}]\n")
    with pytest.raises(ConfigError, match=r"unknown stage 'cpy'; did you mean 'copy'\?"):
        load_pipeline(str(p))


def test_dry_run_prints_resolved_plan_and_cli_overrides(tmp_path: Path) -> None:
    inp = make_inputs(tmp_path)
    p = write_pipe(tmp_path, f"workdir: {tmp_path / 'w'}\ninputs: [{inp}]\nexecutor: {{workers: 1}}\n"
                             "stages:\n  - stage: copy\n  - {name: again, stage: copy}\n")
    r = CliRunner().invoke(main, ["pipeline", "run", str(p), "--dry-run", "--workers", "3"])
    assert r.exit_code == 0, r.output
    plan = json.loads(r.stdout)
    assert plan["executor"]["workers"] == 3
    assert [s["label"] for s in plan["steps"]] == ["copy", "again"]
    assert plan["steps"][1]["inputs"] == [str(tmp_path / "w" / "00-copy")]
    assert not (tmp_path / "w").exists()


def tree_digest(folder: Path) -> dict[str, str]:
    """sha256 of every data file (not logs or run metadata) under folder."""
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and "/_logs/" not in f"/{rel}" and "/_run/" not in f"/{rel}" and not rel.startswith("report") \
                and rel != "pipeline.json":
            data = p.read_bytes()
            if p.suffix == ".json":  # summaries name their own folder; compare runs in other folders
                data = data.replace(str(folder).encode(), b"<WORKDIR>")
            out[rel] = hashlib.sha256(data).hexdigest()
    return out


def test_run_resume_and_status(tmp_path: Path) -> None:
    inp = make_inputs(tmp_path)
    w = tmp_path / "w"
    p = write_pipe(tmp_path, f"workdir: {w}\ninputs: [{inp}]\nstages:\n  - stage: copy\n  - {{name: c2, stage: copy}}\n")
    r = CliRunner().invoke(main, ["pipeline", "run", str(p), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert [s["docs_in"] for s in rep["stages"]] == [120, 120]
    assert (w / "report.html").read_text().count("<tr>") >= 3
    first = tree_digest(w)
    # kill stage 2 half-way: drop its summary and one task's output and marker
    os.unlink(w / "01-c2" / "_run" / "summary.json")
    os.unlink(w / "01-c2" / "_logs" / "map" / "completions" / "00001")
    for f in (w / "01-c2").glob("copy-00001-*.parquet"):
        f.unlink()
    r = CliRunner().invoke(main, ["pipeline", "status", str(w), "--json"])
    st = json.loads(r.stdout)
    assert [s["state"] for s in st["steps"]] == ["complete", "partial"]
    assert st["steps"][1]["tasks_done"] == 2 and st["steps"][1]["tasks"] == 3
    r = CliRunner().invoke(main, ["pipeline", "run", str(p), "--json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["stages"][0]["skipped"] is True
    assert tree_digest(w) == first


def test_slurm_renders_sbatch_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """datatrove's Slurm executor renders and submits the scripts; a recording sbatch stands in for Slurm."""
    inp = make_inputs(tmp_path)
    fake = tmp_path / "bin"
    fake.mkdir()
    log = tmp_path / "sbatch.log"
    sb = fake / "sbatch"
    sb.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\nn=$(wc -l < {log})\necho \"Submitted batch job $((1000+n))\"\n")
    sb.chmod(sb.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake}:{os.environ['PATH']}")
    w = tmp_path / "w"
    p = write_pipe(tmp_path, f"workdir: {w}\ninputs: [{inp}]\n"
                             "executor: {executor: slurm, slurm_partition: cpu, tasks: 3, slurm_time: '02:00:00', "
                             "slurm_cpus_per_task: 4, slurm_venv: /opt/venv/bin/activate}\n"
                             "stages:\n  - stage: copy\n  - {name: c2, stage: copy}\n")
    r = CliRunner().invoke(main, ["pipeline", "run", str(p)])
    assert r.exit_code == 0, r.output
    sub = json.loads(r.stdout)
    assert [s["label"] for s in sub["submitted"]] == ["copy", "c2"]
    script = (w / "01-c2" / "_logs" / "map" / "launch_script.slurm").read_text()
    assert "#SBATCH --partition=cpu" in script and "#SBATCH --cpus-per-task=4" in script
    assert "#SBATCH --time=02:00:00" in script and "#SBATCH --array=0-2" in script
    assert "source /opt/venv/bin/activate" in script and "launch_pickled_pipeline" in script
    fin = (w / "01-c2" / "_logs" / "finalize" / "launch_script.slurm").read_text()
    assert "#SBATCH --array=0-0" in fin
    calls = log.read_text().splitlines()
    # copy: map, finalize (+ merge-stats each); c2: map depends on copy's finalize, and so on
    deps = [c for c in calls if "--dependency=afterok:" in c]
    assert len(deps) >= 3
    assert not any((w / "01-c2").glob("*.parquet"))  # nothing ran locally


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ray
def test_ray_cluster_output_equals_local(tmp_path: Path) -> None:
    inp = make_inputs(tmp_path)
    body = "inputs: [{inp}]\nexecutor: {{executor: {ex}, workers: 2, ray_address: '{addr}'}}\n" \
           "stages:\n  - stage: copy\n  - {{name: c2, stage: copy}}\n"
    ray = BIN / "ray"
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = subprocess.run([str(ray), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={port}",
                            "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats"],
                           capture_output=True, text=True, timeout=180, env=env)
    assert start.returncode == 0, start.stderr
    try:
        pl = tmp_path / "local.yaml"
        pl.write_text(f"workdir: {tmp_path / 'local'}\n" + body.format(inp=inp, ex="local", addr=""))
        pr = tmp_path / "ray.yaml"
        pr.write_text(f"workdir: {tmp_path / 'ray'}\n" + body.format(inp=inp, ex="ray", addr=f"127.0.0.1:{port}"))
        for p in (pl, pr):
            proc = subprocess.run([str(BIN / "mathcorpus"), "pipeline", "run", str(p), "--json"],
                                  capture_output=True, text=True, timeout=600, env=env)
            assert proc.returncode == 0, proc.stderr[-3000:]
        a, b = tree_digest(tmp_path / "local"), tree_digest(tmp_path / "ray")
        assert a and a == b
        assert read_table([str(tmp_path / "ray" / "01-c2")]).num_rows == 120
    finally:
        subprocess.run([str(ray), "stop", "--force"], capture_output=True, timeout=120, env=env)
        shutil.rmtree(tmp_path / "ray", ignore_errors=True)


@pytest.mark.parametrize("name", ["pipeline.yaml", "synth_openai.yaml"])
def test_demo_configs_resolve(repo_root: Path, name: str) -> None:
    pipe = load_pipeline(str(repo_root / "demo" / name), workdir="/tmp/x")
    kinds = [s.stage_name or "command" for s in pipe.steps]
    assert "decontam" in kinds and "export" in kinds
    for s in pipe.steps:
        if s.stage_name == "decontam":
            assert s.stage.config.benchmarks == "posttrain"
