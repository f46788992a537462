"""``mathcorpus pipeline``: file validation, dry run, resume, status (Slurm: test_slurm.py, Ray: test_ray.py)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from corpus.cli import main
from corpus.errors import ConfigError
from corpus.pipeline import load_pipeline
from tests.conftest import write_jsonl


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
    page = (w / "report.html").read_text()
    assert '<tr data-label="copy" data-kind="stage">' in page and '<tr data-label="c2" data-kind="stage">' in page
    assert page.count('class="kept"') == 2  # the funnel has a bar per stage (tests/corpus/test_run_report.py)
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


# Slurm (a real single-node cluster) is tested in test_slurm.py, Ray (two nodes) in test_ray.py.


@pytest.mark.parametrize("name", ["pipeline.yaml", "synth_openai.yaml"])
def test_demo_configs_resolve(repo_root: Path, name: str) -> None:
    pipe = load_pipeline(str(repo_root / "demo" / name), workdir="/tmp/x")
    kinds = [s.stage_name or "command" for s in pipe.steps]
    assert "decontam" in kinds and "export" in kinds
    for s in pipe.steps:
        if s.stage_name == "decontam":
            assert s.stage.config.benchmarks == "posttrain"
