"""The demo pipeline with its inputs and its workdir on S3 (moto's server on 127.0.0.1), against
the same pipeline run locally: every data file byte-identical, the same counts at every stage.

The pipeline is a reduced copy of whatever ``demo/pipeline.yaml`` is: the same stages, options and
order, with every repo file it names (inputs, command arguments) replaced by a copy of it, the
JSONL sample cut to every 3rd document (the test's time budget), and one worker so stages run
in-process. The S3 run reads those copies from ``s3://.../demo/...`` and writes the whole workdir
(stage outputs, datatrove logs and completion markers, the recall model of the command step,
report.json/html) to ``s3://.../wd``.
"""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from corpus.cli import main
from tests.conftest import REPO
from tests.corpus.storage_servers import S3Server

DEMO = REPO / "demo" / "pipeline.yaml"
KEEP_EVERY = 3


def _reduce(src: Path, dst: Path) -> None:
    """Copy a repo file or folder the demo names; JSONL(.gz) keeps every KEEP_EVERY-th line."""
    if src.is_dir():
        for f in sorted(src.rglob("*")):
            if f.is_file():
                _reduce(f, dst / f.relative_to(src))
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.name.endswith(".jsonl.gz"):
        lines = gzip.decompress(src.read_bytes()).splitlines(keepends=True)
        with gzip.GzipFile(dst, "wb", mtime=0) as fh:
            fh.write(b"".join(lines[::KEEP_EVERY]))
    elif src.name.endswith(".jsonl"):
        dst.write_bytes(b"".join(src.read_bytes().splitlines(keepends=True)[::KEEP_EVERY]))
    else:
        shutil.copy(src, dst)


def _repo_path(value: Any) -> str | None:
    """The repo-relative path a pipeline value names (``demo/sample/``), or None."""
    if not isinstance(value, str) or "{" in value or value.startswith(("@", "-")) or "/" not in value:
        return None
    return value if (REPO / value).exists() else None


def _rewrite(obj: Any, prefix: str, seen: set[str]) -> Any:
    if isinstance(obj, dict):
        return {k: _rewrite(v, prefix, seen) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_rewrite(v, prefix, seen) for v in obj]
    rel = _repo_path(obj)
    if rel is None:
        return obj
    seen.add(rel)
    return f"{prefix}/{rel}"


def _pipeline_file(folder: Path, prefix: str, seen: set[str]) -> Path:
    data = yaml.safe_load(DEMO.read_text(encoding="utf-8"))
    data = _rewrite(data, prefix, seen)
    data["executor"] = {**(data.get("executor") or {}), "workers": 1}
    path = folder / f"pipeline-{prefix.split('://')[0] if '://' in prefix else 'local'}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _run(pipeline: Path, workdir: str, cwd: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.chdir(cwd)
    res = CliRunner().invoke(main, ["pipeline", "run", str(pipeline), "--workdir", workdir, "--json"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    # the command step (recall train) prints its own result lines to stdout before the JSON report
    out = res.stdout
    start = 0 if out.startswith("{") else out.index("\n{") + 1
    return json.loads(out[start:])


def _data_files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".bin", ".idx", ".npy") and "_logs" not in p.parts
            and p.name != "recall-model.bin"}


def _counts(report: dict[str, Any]) -> list[tuple[Any, ...]]:
    return [(s["label"], s.get("docs_in"), s.get("kept"), s.get("removed"), s.get("removed_by_reason"))
            for s in report["stages"]]


def test_demo_pipeline_with_inputs_and_workdir_on_s3_matches_local(tmp_path: Path, s3_server: S3Server,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    base = s3_server.bucket("demo-pipeline")
    seen: set[str] = set()
    local_yaml = _pipeline_file(tmp_path, str(tmp_path / "demo-in"), seen)
    s3_yaml = _pipeline_file(tmp_path, f"{base}/demo-in", set())
    assert seen, "the demo pipeline names no repo files?"
    for rel in sorted(seen):
        _reduce(REPO / rel, tmp_path / "demo-in" / rel)
    s3_server.upload(tmp_path / "demo-in", f"{base}/demo-in")

    local = _run(local_yaml, str(tmp_path / "wd"), tmp_path, monkeypatch)
    remote = _run(s3_yaml, f"{base}/wd", tmp_path, monkeypatch)
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith("s3:")], "a local folder named after a URL"

    assert _counts(remote) == _counts(local)
    assert [s["label"] for s in remote["stages"]] == [s["label"] for s in local["stages"]]
    got = s3_server.download(f"{base}/wd", tmp_path / "wd-from-s3")
    ours, theirs = _data_files(got), _data_files(tmp_path / "wd")
    assert sorted(ours) == sorted(theirs)
    assert ours == theirs  # byte-identical shards, removed docs, matches and token files
    assert any(k.endswith(".bin") for k in ours) and any(k.endswith(".parquet") for k in ours)
    # the command step's model, the run report and every stage's completion mark are on S3
    assert (got / "recall-model.bin").read_bytes() == (tmp_path / "wd" / "recall-model.bin").read_bytes()
    assert (got / "report.html").is_file() and json.loads((got / "report.json").read_text())["stages"]
    for step in remote["stages"]:
        if step["kind"] == "stage":
            assert (got / Path(step["output"]).name / "_run" / "summary.json").is_file(), step["label"]
    status = CliRunner().invoke(main, ["pipeline", "status", f"{base}/wd", "--json"], catch_exceptions=False)
    assert status.exit_code == 0, status.output
    assert {s["state"] for s in json.loads(status.stdout)["steps"]} == {"complete"}
    # a rerun on S3 finds every stage complete and runs nothing
    again = _run(s3_yaml, f"{base}/wd", tmp_path, monkeypatch)
    assert all(s.get("skipped") for s in again["stages"]), [s["label"] for s in again["stages"]]
