"""Stages on object storage and the web, against real servers on 127.0.0.1: an S3 API (moto's
server mode, through s3fs) and Python's http.server.

Each command runs once on local folders and once with its input and output on S3 (or its input
over HTTP); data shards must be byte-identical and summaries equal, and nothing may be created
on the local disk from a URL (the old ``s3:/bucket/...`` folder in the current directory).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from corpus.cli import main
from tests.conftest import REPO
from tests.corpus.storage_servers import S3Server, http_server
from tests.teacher_server import FakeOpenAI, Plan

# the planted contamination and one sample shard: 1.2k real documents, a few benchmark copies
INPUTS = (REPO / "demo" / "planted" / "planted.jsonl", REPO / "demo" / "sample" / "sample-00.jsonl.gz")
# run summaries name their own folders and time themselves; everything else must match
_VOLATILE = {"output", "removed_dir", "seconds", "report", "matches", "summary", "inputs_list", "created", "html",
             "index", "manifest", "path"}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory, s3_server: S3Server) -> dict[str, Any]:
    local = tmp_path_factory.mktemp("storage") / "in"
    local.mkdir()
    for f in INPUTS:
        shutil.copy(f, local / f.name)
    base = s3_server.bucket("storage-tests")
    s3_server.upload(local, f"{base}/in")
    return {"local": local, "s3": f"{base}/in/", "base": base}


def _cli(args: list[str], cwd: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    monkeypatch.chdir(cwd)
    res = CliRunner().invoke(main, [*args, "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def _strip(obj: Any) -> Any:
    """A summary without paths and timings (which differ between a local and an S3 run)."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in _VOLATILE}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    if isinstance(obj, str) and ("s3://" in obj or "/tmp" in obj or "pytest" in obj):
        return "<path>"
    return obj


def _data_files(folder: Path) -> dict[str, bytes]:
    """Every data file under a folder (shards, removed docs, token files) by relative path."""
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.suffix in (".parquet", ".bin", ".idx", ".npy") and "/_logs/" not in f"/{p}"}


def _no_local_url_folders(cwd: Path) -> None:
    assert not [p.name for p in cwd.iterdir() if p.name.startswith(("s3:", "http:"))], \
        "a local folder was built from a URL"


def test_stats_over_s3_equals_local(inputs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = _cli(["stats", str(inputs["local"])], tmp_path, monkeypatch)
    remote = _cli(["stats", inputs["s3"]], tmp_path, monkeypatch)
    assert remote["docs"] == local["docs"] == 1236
    assert _strip(remote) == _strip(local)


# the two stages the issue saw fail on S3 outputs; every stage (minhash, recall, export too) runs on S3
# in test_storage_pipeline.py
@pytest.mark.parametrize("command", [
    ["dedup", "exact"],
    ["decontam", "run", "--benchmarks", "gsm8k,math"],
], ids=["dedup-exact", "decontam"])
def test_stage_with_input_and_output_on_s3_matches_local(command: list[str], inputs: dict[str, Any], tmp_path: Path,
                                                         s3_server: S3Server,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    name = "-".join(c for c in command[:2] if not c.startswith("-"))
    out_url = f"{inputs['base']}/out-{name}"
    local = _cli([*command, str(inputs["local"]), "-o", str(tmp_path / "local")], tmp_path, monkeypatch)
    remote = _cli([*command, inputs["s3"], "-o", out_url], tmp_path, monkeypatch)
    _no_local_url_folders(tmp_path)
    assert _strip(remote) == _strip(local)
    got = s3_server.download(out_url, tmp_path / "from-s3")
    assert json.loads((got / "_run" / "summary.json").read_text())["docs_in"] == 1236
    assert _data_files(got) == _data_files(tmp_path / "local")  # byte-identical shards
    assert _data_files(got), "no data files were compared"
    # the stage's work folder is gone and its completion mark is there, as in a local run
    assert not (got / "_work").exists() and (got / "_run" / "summary.json").is_file()
    if command[0] == "decontam":  # the default report folder went to S3, next to the output
        rep = json.loads((got / "_report" / "summary.json").read_text())
        assert rep["docs_removed"] == local["removed"] > 0
        assert (got / "_report" / "matches.parquet").is_file() and (got / "_report" / "removed").is_dir()
    if command[0] == "export":
        assert json.loads((got / "manifest.json").read_text())["tokens"] == \
            json.loads((tmp_path / "local" / "manifest.json").read_text())["tokens"]
    # a rerun finds the finished stage on S3 and does nothing
    again = _cli([*command, inputs["s3"], "-o", out_url], tmp_path, monkeypatch)
    assert again.get("summary", again).get("skipped") is True


def test_run_killed_on_s3_leaves_only_whole_objects_and_resumes(inputs: dict[str, Any], tmp_path: Path,
                                                                  s3_server: S3Server,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    out = f"{inputs['base']}/out-killed"
    key = out.split("://", 1)[1]
    fs = s3_server.fs()
    code = "import sys; from corpus.cli import main; main(sys.argv[1:])"
    proc = subprocess.Popen([sys.executable, "-c", code, "dedup", "exact", inputs["s3"], "-o", out, "--tasks", "2",
                             "--batch-rows", "64"], cwd=tmp_path, start_new_session=True,
                            env={**os.environ, **s3_server.env, "PYTHONPATH": str(REPO)},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:  # kill -9 the whole process group as soon as the first task of the map phase is done
        while time.monotonic() < deadline and proc.poll() is None:
            fs.invalidate_cache()
            if fs.exists(f"{key}/_logs/map/completions/00000") or fs.exists(f"{key}/_logs/map/completions/00001"):
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-500:]
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    fs.invalidate_cache()
    assert not fs.exists(f"{key}/_run/summary.json")
    left = [k for k in fs.find(key) if k.endswith(".parquet")]
    assert left, "the first task's shards should be on S3 when it is killed"
    for k in left:  # every object that exists is whole: a killed writer leaves nothing half-written
        with fs.open(k, "rb") as fh:
            pq.read_metadata(fh)
    again = _cli(["dedup", "exact", inputs["s3"], "-o", out, "--tasks", "2", "--batch-rows", "64"], tmp_path,
                 monkeypatch)
    local = _cli(["dedup", "exact", str(inputs["local"]), "-o", str(tmp_path / "local"), "--tasks", "2",
                  "--batch-rows", "64"], tmp_path, monkeypatch)
    assert _strip(again) == _strip(local)
    got = s3_server.download(out, tmp_path / "from-s3")
    assert _data_files(got) == _data_files(tmp_path / "local")


def test_decontam_index_and_report_on_s3(inputs: dict[str, Any], tmp_path: Path, s3_server: S3Server,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    base = inputs["base"]
    planted = s3_server.upload(INPUTS[0], f"{base}/planted/{INPUTS[0].name}")
    _cli(["decontam", "index", "--benchmarks", "gsm8k", "-o", f"{base}/idx"], tmp_path, monkeypatch)
    fs = s3_server.fs()
    assert fs.exists(f"{base}/idx/meta.json") and fs.exists(f"{base}/idx/items.parquet")
    with_index = _cli(["decontam", "run", planted, "-o", f"{base}/dc-idx", "--index", f"{base}/idx",
                       "--benchmarks", "gsm8k"], tmp_path, monkeypatch)
    built = _cli(["decontam", "run", str(INPUTS[0]), "-o", str(tmp_path / "dc"), "--benchmarks", "gsm8k"], tmp_path,
                 monkeypatch)
    assert with_index["removed"] == built["removed"] > 0
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, ["decontam", "report", f"{base}/dc-idx/_report", "--html",
                                    f"{base}/dc-idx/page.html"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert b"<html" in fs.cat(f"{base}/dc-idx/page.html")[:400].lower()
    _no_local_url_folders(tmp_path)


def test_synth_resume_cache_on_s3(tmp_path: Path, s3_server: S3Server, fake_openai: FakeOpenAI,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """The teacher's samples are cached under OUTPUT/_synth_cache on S3: a run whose server dies mid-way
    resumes from there, sending only the missing requests, and ends as a local run does."""
    from corpus.errors import FatalError
    from corpus.runner import RunOptions, run_stage
    from corpus.shards import read_table
    from synth.stage import CACHE_DIR, SynthConfig, SynthStage

    def solver(body: dict[str, Any], i: int) -> str:
        q = body["messages"][-1]["content"]
        return f"Sample {i}: the answer is $\\boxed{{{7 if 'apples' in q else 18}}}$."

    monkeypatch.chdir(tmp_path)
    fake_openai.reply = solver
    rows = [{"id": f"p{k}", "text": "Tom has 3 apples and buys 4 more. How many?" if k % 2 else
             "A box holds 6 eggs. How many in 3 boxes?", "answer": "7" if k % 2 else "18"} for k in range(6)]
    src = tmp_path / "p.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = SynthConfig.from_mapping({"task": "solve", "model": "t", "engine": "openai", "base_url": fake_openai.base_url,
                                    "n": 2, "max_retries": 0, "flush_every": 2})
    out = f"{s3_server.bucket('synth-tests')}/out"
    fake_openai.plans = [Plan()] * 2 + [Plan(status=400, body={"error": "server went away"})]
    with pytest.raises(FatalError, match="HTTP 400"):
        run_stage(SynthStage(cfg), [str(src)], out, RunOptions())
    fs = s3_server.fs()
    assert sorted(k.rsplit("/", 1)[1] for k in fs.find(f"{out.split('://')[1]}/{CACHE_DIR}")) == \
        ["part-00000-00000.parquet"]
    fake_openai.plans = []
    before = len(fake_openai.requests)
    s = run_stage(SynthStage(cfg), [str(src)], out, RunOptions())
    assert len(fake_openai.requests) - before == 4 and s["counters"]["seeds_resumed"] == 2
    run_stage(SynthStage(cfg), [str(src)], str(tmp_path / "local"), RunOptions())
    assert read_table(out).to_pylist() == read_table(str(tmp_path / "local")).to_pylist()
    _no_local_url_folders(tmp_path)


def test_http_inputs(inputs: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    local = _cli(["dedup", "exact", str(inputs["local"]), "-o", str(tmp_path / "local")], tmp_path, monkeypatch)
    with http_server(inputs["local"]) as url:
        urls = [f"{url}/{f.name}" for f in INPUTS]
        stats = _cli(["stats", *urls], tmp_path, monkeypatch)
        remote = _cli(["dedup", "exact", *urls, "-o", str(tmp_path / "web")], tmp_path, monkeypatch)
    assert stats["docs"] == 1236
    _no_local_url_folders(tmp_path)
    # the same documents in the same order (local files sort by name like the URLs given)
    assert _strip(remote) == _strip(local)
    assert _data_files(tmp_path / "web") == _data_files(tmp_path / "local")


def test_missing_http_file_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with http_server(tmp_path) as url:
        monkeypatch.chdir(tmp_path)
        res = CliRunner().invoke(main, ["stats", f"{url}/nope.jsonl.gz"])
    assert res.exit_code == 1, res.output  # as for a local path that does not exist
    assert res.output == (f"Error: {url}/nope.jsonl.gz: no input files found (looked for .parquet, .jsonl, "
                          ".jsonl.gz, .jsonl.zst, .json.gz, .ndjson); check the path or glob\n")
