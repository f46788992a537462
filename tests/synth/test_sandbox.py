"""The TIR sandbox: output capture, state across blocks, time/memory limits, no network, temp dirs."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from corpus.errors import ConfigError
from synth.sandbox import Sandbox, SandboxResult, unshare_available


def _connect_code(port: int) -> str:
    return (f"import socket\ns = socket.socket()\ns.settimeout(2)\ns.connect(('127.0.0.1', {port}))\n"
            "print('connected')")


def test_listener_is_reachable_outside_the_sandbox(listener: tuple[int, list[object]]) -> None:
    # the control: the same code run as a plain subprocess does connect
    port, accepted = listener
    r = subprocess.run([sys.executable, "-c", _connect_code(port)], capture_output=True, text=True, timeout=30)
    assert r.stdout.strip() == "connected"
    time.sleep(0.3)
    assert len(accepted) == 1


@pytest.mark.parametrize("isolation,network", [("bwrap", "auto"), ("unsafe-host", "auto"), ("unsafe-host", "audit")])
def test_sandbox_refuses_network(listener: tuple[int, list[object]], isolation: str, network: str) -> None:
    port, accepted = listener
    r = Sandbox(timeout_s=10, network=network, isolation=isolation).run(_connect_code(port))
    assert not r.ok and "connected" not in r.stdout
    assert r.feedback() == "PermissionError: sandbox: socket.__new__ is not allowed"
    time.sleep(0.3)
    assert accepted == []


@pytest.mark.skipif(not unshare_available(), reason="no user namespaces on this machine")
def test_network_namespace_alone_cuts_loopback(listener: tuple[int, list[object]]) -> None:
    port, accepted = listener
    r = Sandbox(timeout_s=10, network="unshare", audit_hook=False, isolation="unsafe-host").run(_connect_code(port))
    assert not r.ok and r.feedback() == "OSError: [Errno 101] Network is unreachable"
    time.sleep(0.3)
    assert accepted == []


def test_runaway_code_times_out() -> None:
    t0 = time.monotonic()
    r = Sandbox(timeout_s=2).run("while True:\n    pass")
    assert r.timed_out and not r.ok
    assert time.monotonic() - t0 < 8
    assert r.feedback() == "TimeoutError: the code ran past its time limit"


def test_sleeping_code_times_out_on_the_wall_clock() -> None:
    r = Sandbox(timeout_s=1.5).run("import time\ntime.sleep(30)")
    assert r.timed_out and r.seconds < 6


def test_memory_limit() -> None:
    r = Sandbox(timeout_s=10, memory_mb=512).run("x = bytearray(4 * 1024**3)\nprint('allocated')")
    assert r.feedback() == "MemoryError"


def test_processes_cannot_be_started() -> None:
    r = Sandbox(timeout_s=10).run("import os\nos.system('echo hi')")
    assert r.feedback() == "PermissionError: sandbox: os.system is not allowed"
    r = Sandbox(timeout_s=10).run("import subprocess\nsubprocess.run(['true'])")
    assert r.feedback() == "PermissionError: sandbox: subprocess.Popen is not allowed"


def test_state_carries_across_blocks_and_last_expression_prints() -> None:
    sb = Sandbox(timeout_s=20)
    r = sb.run(["import sympy\nx = sympy.Symbol('x')\nprint('first block')",
                "sols = sympy.solve(x**2 - 4, x)\nsols"])
    assert r.ok and r.stdout == "[-2, 2]\n"
    err = sb.run(["a = 1", "print(a)\nprint(b)"])
    assert err.feedback() == "1\nNameError: name 'b' is not defined"


def test_runs_in_a_temporary_directory_that_is_removed() -> None:
    r = Sandbox(timeout_s=10, isolation="unsafe-host").run("import os\nopen('f.txt', 'w').write('x')\nprint(os.getcwd())")
    cwd = r.stdout.strip()
    assert r.ok and os.path.basename(cwd).startswith("mathcorpus-sandbox-") and not os.path.exists(cwd)


def test_isolated_work_folder_is_private_and_fresh_each_run() -> None:
    sb = Sandbox(timeout_s=10)
    r = sb.run("import os\nopen('f.txt', 'w').write('x')\nprint(os.getcwd(), os.listdir('.'))")
    assert r.ok and r.stdout == "/sandbox ['f.txt']\n"
    assert sb.run("import os\nprint(os.listdir('.'))").stdout == "[]\n"


def test_run_many_keeps_order_and_feedback_is_capped() -> None:
    sb = Sandbox(timeout_s=20, max_output_chars=50)
    out = sb.run_many([f"print({i} * 2)" for i in range(4)], workers=2)
    assert [o.stdout.strip() for o in out] == ["0", "2", "4", "6"]
    big = SandboxResult(stdout="a" * 100 + "b" * 100, stderr="", returncode=0, timed_out=False, seconds=0.1)
    assert big.feedback(20) == "a" * 10 + "\n...\n" + "b" * 10


def test_bad_options() -> None:
    with pytest.raises(ConfigError, match="sandbox: network must be one of auto, unshare, audit, got 'off'"):
        Sandbox(network="off")
    with pytest.raises(ConfigError, match="sandbox: timeout must be positive, got 0"):
        Sandbox(timeout_s=0)
    with pytest.raises(ConfigError, match="sandbox: isolation must be one of bwrap, unsafe-host, got 'docker'"):
        Sandbox(isolation="docker")
