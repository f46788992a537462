"""A pipeline on a real two-node Ray cluster on this machine: the output equals a local run's.

The head and a second node (``ray start --address``) each get one CPU, their own temp dir and
their own process session (so only they are stopped afterwards, never another Ray on the
machine). With two tasks in flight at a time, each one-CPU node must take one: every task
records the Ray node it ran on in its stats, and both nodes must appear.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from corpus.shards import read_table
from tests.conftest import write_jsonl
from tests.corpus.test_slurm import tree_digest

BIN = Path(sys.executable).parent
ENV = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ray_start(args: list[str], temp_dir: str) -> int:
    """`ray start ARGS` in a new session; returns that session's process group (its daemons stay in it)."""
    proc = subprocess.Popen([str(BIN / "ray"), "start", *args, f"--temp-dir={temp_dir}", "--disable-usage-stats",
                             f"--dashboard-agent-listen-port={_free_port()}", f"--metrics-export-port={_free_port()}"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                            start_new_session=True)
    out, _ = proc.communicate(timeout=180)
    assert proc.returncode == 0, out[-3000:]
    return proc.pid


def _stop(pgids: list[int]) -> None:
    for sig, grace in ((signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        for g in pgids:
            try:
                os.killpg(g, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            alive = []
            for g in pgids:
                try:
                    os.killpg(g, 0)
                    alive.append(g)
                except ProcessLookupError:
                    pass
            if not alive:
                return
            time.sleep(0.2)


def _raylet_node_id(pgid: int) -> str:
    """The node id of the raylet in process group ``pgid`` (from its command line)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.getpgid(int(pid)) != pgid:
                continue
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue
        if argv and argv[0].endswith(b"/raylet"):
            for a in argv:
                if a.startswith(b"--node_id="):
                    return a.split(b"=", 1)[1].decode()
    raise AssertionError(f"no raylet in process group {pgid}")


@pytest.fixture(scope="module")
def two_nodes() -> Iterator[dict[str, str]]:
    """Head (1 CPU) and a second node (1 CPU, resource `second_node`); yields address and node ids."""
    port = _free_port()
    tmp = tempfile.mkdtemp(prefix="mcray", dir="/tmp")  # short: Ray's socket paths must fit 107 chars
    pgids: list[int] = []
    try:
        pgids.append(_ray_start(["--head", "--node-ip-address=127.0.0.1", f"--port={port}", "--num-cpus=1",
                                 "--include-dashboard=false", f"--ray-client-server-port={_free_port()}"],
                                f"{tmp}/head"))
        pgids.append(_ray_start([f"--address=127.0.0.1:{port}", "--node-ip-address=127.0.0.1", "--num-cpus=1",
                                 '--resources={"second_node": 1}'], f"{tmp}/second"))
        head, second = (_raylet_node_id(g) for g in pgids)
        assert head != second
        yield {"address": f"127.0.0.1:{port}", "head": head, "second": second}
    finally:
        _stop(pgids)
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.mark.ray
def test_two_node_ray_cluster_output_equals_local(tmp_path: Path, two_nodes: dict[str, str]) -> None:
    inp = tmp_path / "in"
    for f in range(4):
        write_jsonl(inp / f"p{f}.jsonl", [{"id": f"{f}-{i}", "text": f"doc {f} {i} " * (1 + i % 5), "source": "web"}
                                          for i in range(40)])
    body = "inputs: [{inp}]\nexecutor: {{executor: {ex}, workers: 2, ray_address: '{addr}'}}\n" \
           "stages:\n  - stage: copy\n  - {{name: c2, stage: copy}}\n"
    runs = {"local": "", "ray": two_nodes["address"]}
    for name, addr in runs.items():
        p = tmp_path / f"{name}.yaml"
        p.write_text(f"workdir: {tmp_path / name}\n" + body.format(inp=inp, ex=name, addr=addr))
        proc = subprocess.run([str(BIN / "mathcorpus"), "pipeline", "run", str(p), "--json"],
                              capture_output=True, text=True, timeout=300, env=ENV)
        assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = tree_digest(tmp_path / "local"), tree_digest(tmp_path / "ray")
    assert a and a == b
    assert read_table([str(tmp_path / "ray" / "01-c2")]).num_rows == 160
    ran_on = [json.loads(p.read_text())["ran_on"] for p in sorted((tmp_path / "ray").glob("*/_logs/mathcorpus_stats/*.json"))
              if p.name[:5].isdigit() and not p.name.endswith(".ids.json")]
    assert len(ran_on) == 8  # 4 map tasks per stage
    assert {r["ray_node"] for r in ran_on} == {two_nodes["head"], two_nodes["second"]}
    local_stats = next((tmp_path / "local").glob("*/_logs/mathcorpus_stats/00000.json"))
    assert "ray_node" not in json.loads(local_stats.read_text())["ran_on"]
