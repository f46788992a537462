"""Escape attempts against the isolated TIR sandbox, one test per attempt, as a hostile model would.

Each test makes its own victim (a file, a folder, a process, an environment variable),
asserts the exact refusal the sandbox gives, and checks afterwards that the victim is
untouched. The ``layer`` tests turn the audit hook off to show that the isolation under it
(mount, PID and network namespaces, seccomp) holds on its own. CI installs bubblewrap, so
these run there; on a machine without it the whole module is skipped with the reason.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from corpus.errors import ConfigError
from synth.isolation import isolation_problem
from synth.sandbox import Sandbox, SandboxUnavailable, check_sandbox

PROBLEM = isolation_problem(sys.executable)
if PROBLEM is not None and os.environ.get("CI"):
    # CI installs bubblewrap (.ci/run): there, a sandbox that cannot isolate is a failure, not a skip
    raise RuntimeError(f"the TIR sandbox cannot isolate in CI: {PROBLEM}")
pytestmark = pytest.mark.skipif(PROBLEM is not None, reason=f"isolation unavailable here: {PROBLEM}")


@pytest.fixture(scope="module")
def sb() -> Sandbox:
    return Sandbox(timeout_s=10, memory_mb=512, file_mb=8, max_files=200, tmpfs_mb=32)


@pytest.fixture(scope="module")
def bare() -> Sandbox:
    """The same sandbox without the audit hook: only namespaces, seccomp and limits."""
    return Sandbox(timeout_s=10, memory_mb=512, file_mb=8, max_files=200, tmpfs_mb=32, audit_hook=False)


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    p = tmp_path / "victim" / "data.txt"
    p.parent.mkdir()
    p.write_text("precious corpus shard")
    return p


@pytest.fixture
def victim_process() -> Iterator[subprocess.Popen]:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    yield proc
    proc.kill()
    proc.wait()


def _untouched(p: Path) -> None:
    assert p.read_text() == "precious corpus shard"
    assert sorted(x.name for x in p.parent.iterdir()) == ["data.txt"]


# ----------------------------------------------------------------------------- files
def test_read_system_file(sb: Sandbox) -> None:
    r = sb.run("print(open('/etc/shadow').read())")
    assert r.feedback() == "FileNotFoundError: [Errno 2] No such file or directory: '/etc/shadow'"


def test_read_file_outside(sb: Sandbox, victim: Path) -> None:
    r = sb.run(f"print(open({str(victim)!r}).read())")
    assert r.feedback() == f"FileNotFoundError: [Errno 2] No such file or directory: {str(victim)!r}"
    _untouched(victim)


def test_read_home(sb: Sandbox) -> None:
    secret = Path.home() / f".mathcorpus-escape-{uuid.uuid4().hex}"
    secret.write_text("token=abc")
    try:
        r = sb.run(f"print(open({str(secret)!r}).read())")
        assert r.feedback() == f"FileNotFoundError: [Errno 2] No such file or directory: {str(secret)!r}"
        r = sb.run("import os\nprint(os.environ['HOME'], os.listdir(os.path.expanduser('~')))")
        assert r.stdout == "/sandbox []\n"
    finally:
        secret.unlink()


def test_write_outside(sb: Sandbox, victim: Path) -> None:
    target = victim.parent / "pwned.txt"
    r = sb.run(f"open({str(target)!r}, 'w').write('x')")
    assert r.feedback() == f"FileNotFoundError: [Errno 2] No such file or directory: {str(target)!r}"
    _untouched(victim)


def test_write_into_the_visible_python_tree(sb: Sandbox) -> None:
    import sysconfig

    target = os.path.join(sysconfig.get_paths()["purelib"], f"pwned-{uuid.uuid4().hex}.pth")
    r = sb.run(f"open({target!r}, 'w').write('import os')")
    assert r.feedback() == f"OSError: [Errno 30] Read-only file system: {target!r}"
    assert not os.path.exists(target)


def test_delete_outside(sb: Sandbox, victim: Path) -> None:
    r = sb.run(f"import os\nos.remove({str(victim)!r})")
    assert r.feedback() == f"FileNotFoundError: [Errno 2] No such file or directory: {str(victim)!r}"
    r = sb.run(f"import shutil\nshutil.rmtree({str(victim.parent)!r})")
    assert r.feedback() == f"FileNotFoundError: [Errno 2] No such file or directory: {str(victim.parent)!r}"
    _untouched(victim)


def test_rename_outside(sb: Sandbox, victim: Path) -> None:
    r = sb.run(f"import os\nos.rename({str(victim)!r}, '/sandbox/stolen.txt')")
    assert r.feedback() == (f"FileNotFoundError: [Errno 2] No such file or directory: {str(victim)!r} -> "
                            "'/sandbox/stolen.txt'")
    _untouched(victim)


def test_layer_mount_namespace_alone(bare: Sandbox, victim: Path) -> None:
    r = bare.run(f"import os\nos.remove({str(victim)!r})")
    assert r.feedback() == f"FileNotFoundError: [Errno 2] No such file or directory: {str(victim)!r}"
    r = bare.run("import os\nprint(sorted(os.listdir('/')))")
    # what the program sees of the machine: the Python it runs and nothing else (no /etc, /home, /usr/bin)
    seen = set(eval(r.stdout))
    assert {"etc", "home", "bin", "var", "srv", "mnt"}.isdisjoint(seen)
    assert {"usr", "proc", "dev", "tmp", "sandbox"} <= seen
    _untouched(victim)


# ----------------------------------------------------------------------------- processes
def test_list_other_processes(sb: Sandbox, victim_process: subprocess.Popen) -> None:
    r = sb.run("import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))")
    # bwrap's init (1) and the interpreter (2): nothing of the host, the victim included
    assert eval(r.stdout) == [1, 2]


def test_signal_other_process(sb: Sandbox, victim_process: subprocess.Popen) -> None:
    r = sb.run(f"import os, signal\nos.kill({victim_process.pid}, signal.SIGKILL)")
    assert r.feedback() == "PermissionError: sandbox: os.kill is not allowed"
    r = sb.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)")
    assert r.feedback() == "PermissionError: sandbox: os.kill is not allowed"
    time.sleep(0.2)
    assert victim_process.poll() is None


def test_layer_pid_namespace_alone(bare: Sandbox, victim_process: subprocess.Popen) -> None:
    r = bare.run(f"import os, signal\nos.kill({victim_process.pid}, signal.SIGKILL)")
    assert r.feedback() == "ProcessLookupError: [Errno 3] No such process"
    time.sleep(0.2)
    assert victim_process.poll() is None


# ----------------------------------------------------------------------------- network
def _ctypes_connect(port: int) -> str:
    return ("import ctypes, struct, socket\n"
            "libc = ctypes.CDLL('libc.so.6', use_errno=True)\n"
            "fd = libc.socket(2, 1, 0)\n"
            f"addr = struct.pack('<HH4s8x', 2, socket.htons({port}), bytes([127, 0, 0, 1]))\n"
            "rc = libc.connect(fd, addr, len(addr))\n"
            "print('connect', rc, ctypes.get_errno())\n")


def test_socket_through_python(sb: Sandbox, listener: tuple[int, list[object]]) -> None:
    port, accepted = listener
    r = sb.run(f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=2)\nprint('in')")
    assert r.feedback() == "PermissionError: sandbox: socket.getaddrinfo is not allowed"
    r = sb.run(f"import socket\ns = socket.socket()\ns.connect(('127.0.0.1', {port}))")
    assert r.feedback() == "PermissionError: sandbox: socket.__new__ is not allowed"
    time.sleep(0.3)
    assert accepted == []


def test_socket_through_ctypes(sb: Sandbox, listener: tuple[int, list[object]]) -> None:
    port, accepted = listener
    r = sb.run(_ctypes_connect(port))
    assert r.feedback() == "PermissionError: sandbox: ctypes.dlopen is not allowed"
    r = sb.run("import ctypes\nprint(ctypes.pythonapi.getpid())")
    assert r.feedback() == "PermissionError: sandbox: ctypes.dlsym is not allowed"
    time.sleep(0.3)
    assert accepted == []


def test_layer_network_namespace_alone(bare: Sandbox, listener: tuple[int, list[object]]) -> None:
    port, accepted = listener
    r = bare.run(_ctypes_connect(port))
    # libc's connect runs, but the sandbox's own loopback has nothing listening: ECONNREFUSED
    assert r.stdout == "connect -1 111\n"
    time.sleep(0.3)
    assert accepted == []


# ----------------------------------------------------------------------------- exec and fork
def test_fork(sb: Sandbox) -> None:
    assert sb.run("import os\nos.fork()").feedback() == "PermissionError: sandbox: os.fork is not allowed"


def test_exec(sb: Sandbox) -> None:
    r = sb.run("import os\nos.execv('/bin/sh', ['sh', '-c', 'id'])")
    assert r.feedback() == "PermissionError: sandbox: os.exec is not allowed"


def test_spawn_a_shell(sb: Sandbox) -> None:
    assert sb.run("import os\nos.system('id')").feedback() == "PermissionError: sandbox: os.system is not allowed"
    r = sb.run("import subprocess\nsubprocess.run(['/bin/sh', '-c', 'id'])")
    assert r.feedback() == "PermissionError: sandbox: subprocess.Popen is not allowed"
    r = sb.run("import pty\npty.spawn('/bin/sh')")
    assert r.feedback() == "PermissionError: sandbox: pty.spawn is not allowed"


def test_layer_seccomp_alone_refuses_fork(bare: Sandbox) -> None:
    assert bare.run("import os\nos.fork()").feedback() == "PermissionError: [Errno 1] Operation not permitted"
    r = bare.run("import subprocess\nsubprocess.run(['/bin/sh', '-c', 'id'])")
    assert r.feedback() == "PermissionError: [Errno 1] Operation not permitted"
    # threads are not processes: they still work under the filter
    r = bare.run("import threading\nout = []\nt = threading.Thread(target=lambda: out.append(6 * 7))\n"
                 "t.start(); t.join()\nprint(out)")
    assert r.stdout == "[42]\n"


def test_layer_no_shell_in_the_sandbox(bare: Sandbox) -> None:
    r = bare.run("import os\nprint([os.path.exists(p) for p in ('/bin/sh', '/usr/bin/sh', '/bin/bash')])")
    assert r.stdout == "[False, False, False]\n"


# ----------------------------------------------------------------------------- exhaustion
def test_exhaust_memory(sb: Sandbox) -> None:
    assert sb.run("x = bytearray(4 * 1024**3)").feedback() == "MemoryError"


def test_exhaust_disk_with_one_file(sb: Sandbox) -> None:
    r = sb.run("f = open('big', 'wb')\nfor _ in range(64):\n    f.write(b'x' * (1 << 20))\n    f.flush()")
    assert r.feedback() == "OSError: [Errno 27] File too large"


def test_exhaust_disk_with_many_files(sb: Sandbox) -> None:
    r = sb.run("for i in range(100000):\n    open(f'f{i}', 'w').close()")
    assert r.feedback() == "PermissionError: sandbox: more than 200 files created"


def test_exhaust_disk_space(sb: Sandbox) -> None:
    # 8 files of 7 MB each stay under the per-file limit but overflow the 32 MB work folder
    r = sb.run("for i in range(8):\n    with open(f'f{i}', 'wb') as f:\n        f.write(b'x' * (7 << 20))")
    assert r.feedback() == "OSError: [Errno 28] No space left on device"


def test_exhaust_cpu(sb: Sandbox) -> None:
    t0 = time.monotonic()
    r = Sandbox(timeout_s=2).run("while True:\n    pass")
    assert r.timed_out and r.feedback() == "TimeoutError: the code ran past its time limit"
    assert time.monotonic() - t0 < 10


def test_fork_bomb(sb: Sandbox) -> None:
    r = sb.run("import os\nwhile True:\n    os.fork()")
    assert r.feedback() == "PermissionError: sandbox: os.fork is not allowed"


def test_layer_fork_bomb_against_seccomp_alone(bare: Sandbox) -> None:
    r = bare.run("import os\nn = 0\nwhile True:\n    os.fork()\n    n += 1")
    assert r.feedback() == "PermissionError: [Errno 1] Operation not permitted"


def _sandboxed_pids() -> set[str]:
    """Host pids of sandboxed interpreters (their command line names the driver inside the sandbox)."""
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if b"/run/mathcorpus/driver.py" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.add(pid)
            except OSError:
                pass
    return found


def test_no_process_outlives_the_sandbox() -> None:
    before = _sandboxed_pids()
    # a non-daemon thread keeps the program alive past its code, and it tries to daemonize
    code = ("import os, threading, time\n"
            "threading.Thread(target=lambda: time.sleep(60), daemon=False).start()\n"
            "try:\n    os.fork()\nexcept OSError as e:\n    print('fork', e.errno)\n")
    result: list[object] = []
    t = threading.Thread(target=lambda: result.append(Sandbox(timeout_s=4, audit_hook=False).run(code)))
    t.start()
    time.sleep(2)
    during = _sandboxed_pids() - before
    t.join()
    assert during, "the scan must see the sandboxed interpreter while it runs"
    r = result[0]
    assert r.stdout == "fork 1\n" and r.timed_out  # killed at the timeout, with everything it started
    time.sleep(0.5)
    assert _sandboxed_pids() - before == set()


# ----------------------------------------------------------------------------- environment
def test_environment_is_not_inherited(sb: Sandbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MATHCORPUS_TEST_SECRET", "s3cr3t")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    r = sb.run("import os\nprint(sorted(os.environ))\nprint(open('/proc/1/environ', 'rb').read())")
    names, init_env = r.stdout.splitlines()
    assert "s3cr3t" not in r.stdout
    assert eval(names) == sorted(["PATH", "HOME", "TMPDIR", "LANG", "PYTHONHASHSEED", "OMP_NUM_THREADS",
                                  "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "PYTHONDONTWRITEBYTECODE",
                                  "MPLBACKEND", "PWD"])
    assert init_env == "b'PATH=/usr/bin:/bin\\x00'"


# ----------------------------------------------------------------------------- refusing
def test_refuses_when_isolation_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    import synth.sandbox as sandbox_mod

    monkeypatch.setattr(sandbox_mod, "isolation_problem", lambda python: "bubblewrap (bwrap) is not installed")
    with pytest.raises(SandboxUnavailable) as exc:
        Sandbox()
    assert str(exc.value) == (
        "sandbox: cannot isolate the model's code: bubblewrap (bwrap) is not installed; install bubblewrap "
        "(Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap) and libseccomp "
        "(apt-get install libseccomp2), or pass --sandbox unsafe-host to run it unisolated on this machine")
    assert isinstance(exc.value, ConfigError)


def test_real_probe_reports_a_missing_bwrap(monkeypatch: pytest.MonkeyPatch) -> None:
    from synth import isolation

    isolation.isolation_problem.cache_clear()
    monkeypatch.setenv("PATH", "/nonexistent")
    try:
        assert isolation.isolation_problem(sys.executable) == "bubblewrap (bwrap) is not installed"
    finally:
        isolation.isolation_problem.cache_clear()


def test_unsafe_host_warns(capsys: pytest.CaptureFixture[str]) -> None:
    import synth.sandbox as sandbox_mod

    sandbox_mod._warned_once.clear()
    check_sandbox("unsafe-host")
    err = capsys.readouterr().err
    assert err.startswith("warning: sandbox 'unsafe-host': the model's code runs on this machine unisolated")


def test_signals_to_itself_still_work(sb: Sandbox) -> None:
    # programs may use signals on themselves (alarm-based timeouts in model code)
    r = sb.run("import os, signal\nsignal.signal(signal.SIGUSR1, lambda *a: print('got it'))\n"
               "os.kill(os.getpid(), signal.SIGUSR1)")
    assert r.stdout == "got it\n"
    assert signal.SIGUSR1  # the host's handlers are not involved


# ----------------------------------------------------------------------------- the CLI
def test_cli_tir_refuses_without_isolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    import synth.sandbox as sandbox_mod
    from corpus.cli import main
    from tests.conftest import write_jsonl

    monkeypatch.setattr(sandbox_mod, "isolation_problem", lambda python: "bubblewrap (bwrap) is not installed")
    src = write_jsonl(tmp_path / "p.jsonl", [{"id": "p1", "text": "What is 2+3?", "answer": "5"}])
    args = ["synth", "run", str(src), "-o", str(tmp_path / "o"), "--task", "solve", "--engine", "openai",
            "--base-url", "http://127.0.0.1:9/v1", "--model", "t", "--tir", "--no-decontam"]
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2
    assert r.output.strip() == (
        "Error: sandbox: cannot isolate the model's code: bubblewrap (bwrap) is not installed; install bubblewrap "
        "(Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap) and libseccomp "
        "(apt-get install libseccomp2), or pass --sandbox unsafe-host to run it unisolated on this machine")
    assert not (tmp_path / "o").exists() or not any(p.suffix == ".parquet" for p in (tmp_path / "o").rglob("*"))
