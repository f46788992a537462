"""A sandbox for the Python a teacher writes during tool-integrated reasoning (TIR).

Owns running untrusted model code: each program runs in a fresh ``python -I`` subprocess
in a temporary working directory that is deleted afterwards, with

* a wall-clock timeout (the whole process group is killed) and a CPU-time limit;
* an address-space limit (``RLIMIT_AS``) and a file-size limit;
* no network: the child runs in a new, empty network namespace (``unshare -rn``) when the
  kernel allows it, and always under an audit hook that refuses socket creation,
  connects and starting processes, so a machine without user namespaces is covered too.

The blocks of one trajectory run together so later blocks see earlier variables, as in
a notebook; only the last block's output is returned, the way Qwen2.5-Math's TIR
harness feeds back ``output`` after each code block.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

from corpus.errors import ConfigError

NETWORK_MODES = ("auto", "unshare", "audit")
DEFAULT_PREIMPORT = ("math", "fractions", "itertools", "numpy", "sympy")

# Runs inside the child before any model code. It takes the limits and the blocks from a
# JSON file, so nothing from the model is ever interpolated into source code here.
_DRIVER = r'''
import ast, io, json, resource, sys, traceback, contextlib

cfg = json.load(open(sys.argv[1], encoding="utf-8"))
mem = cfg["memory_bytes"]
if mem > 0:
    resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
cpu = cfg["cpu_seconds"]
resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
fsz = cfg["file_bytes"]
resource.setrlimit(resource.RLIMIT_FSIZE, (fsz, fsz))
resource.setrlimit(resource.RLIMIT_CORE, (0, 0))

# Libraries models reach for are imported before the hook goes in: their C extensions
# load through dlopen, which the hook refuses afterwards when there is no network namespace
# (ctypes could otherwise call libc's connect directly).
for _name in cfg["preimport"]:
    try:
        __import__(_name)
    except Exception:
        pass

_BLOCKED = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
            "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
            "os.forkpty", "pty.spawn", "webbrowser.open", "urllib.Request"}
if cfg["block_dlopen"]:
    _BLOCKED.add("ctypes.dlopen")

def _guard(event, args):
    if event in _BLOCKED:
        raise PermissionError(f"sandbox: {event} is not allowed")

if cfg["audit_hook"]:
    sys.addaudithook(_guard)

def run(src, ns):
    tree = ast.parse(src, "<code>", "exec")
    last_expr = None
    if tree.body and isinstance(tree.body[-1], ast.Expr):
        last_expr = ast.Expression(tree.body.pop().value)
    exec(compile(tree, "<code>", "exec"), ns)
    if last_expr is not None:
        value = eval(compile(last_expr, "<code>", "eval"), ns)
        if value is not None:
            print(repr(value))

blocks = cfg["blocks"]
ns = {"__name__": "__main__"}
for src in blocks[:-1]:
    # earlier blocks already showed their output; rerun them quietly for their state
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            run(src, ns)
        except BaseException:
            pass
try:
    run(blocks[-1], ns)
except SystemExit:
    pass
except BaseException as exc:
    tb = traceback.format_exception_only(type(exc), exc)
    sys.stderr.write(tb[-1] if tb else repr(exc))
    sys.stdout.flush()
    sys.exit(1)
'''


@dataclass
class SandboxResult:
    """What a program printed and how it ended."""

    stdout: str
    stderr: str
    returncode: int
    timed_out: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def feedback(self, max_chars: int = 2000) -> str:
        """Text fed back to the model: output, or the error's last line, length-capped."""
        if self.timed_out:
            text = "TimeoutError: the code ran past its time limit"
        elif self.ok:
            text = self.stdout
        else:
            err = self.stderr.strip().splitlines()
            last = err[-1] if err else f"exit status {self.returncode}"
            text = f"{self.stdout.rstrip(chr(10))}\n{last}" if self.stdout.strip() else last
        text = text.strip("\n")
        if len(text) > max_chars:
            half = max_chars // 2
            text = text[:half] + "\n...\n" + text[-half:]
        return text


@lru_cache(maxsize=1)
def unshare_available() -> bool:
    """Whether ``unshare -rn`` can create a network namespace here (user namespaces on)."""
    exe = shutil.which("unshare")
    if not exe:
        return False
    try:
        r = subprocess.run([exe, "-rn", "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return r.returncode == 0


class Sandbox:
    """Runs Python programs with time, memory and network limits. Thread-safe."""

    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 2048, max_output_chars: int = 2000,
                 network: str = "auto", file_mb: int = 64, python: str | None = None,
                 preimport: Sequence[str] = DEFAULT_PREIMPORT, audit_hook: bool = True) -> None:
        if network not in NETWORK_MODES:
            raise ConfigError(f"sandbox: network must be one of {', '.join(NETWORK_MODES)}, got {network!r}")
        if timeout_s <= 0:
            raise ConfigError(f"sandbox: timeout must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_output_chars = max_output_chars
        self.file_mb = file_mb
        self.python = python or sys.executable
        if network == "unshare" and not unshare_available():
            raise ConfigError("sandbox: network='unshare' but `unshare -rn` does not work on this machine "
                              "(no user namespaces); use network='auto' to fall back to the audit hook")
        self.network = network
        self.preimport = list(preimport)
        # audit_hook=False exists only so a test can show the namespace alone cuts the network
        self.audit_hook = audit_hook
        self.uses_netns = network == "unshare" or (network == "auto" and unshare_available())

    def command(self, cfg_path: str, driver_path: str) -> list[str]:
        cmd = [self.python, "-I", driver_path, cfg_path]
        if self.uses_netns:
            cmd = [shutil.which("unshare") or "unshare", "-rn"] + cmd
        return cmd

    def run(self, code: str | Sequence[str]) -> SandboxResult:
        """Run one program (or the blocks of one trajectory, the last one's output returned)."""
        blocks = [code] if isinstance(code, str) else list(code)
        if not blocks:
            blocks = [""]
        work = tempfile.mkdtemp(prefix="mathcorpus-sandbox-")
        try:
            cfg_path = os.path.join(work, ".cfg.json")
            driver_path = os.path.join(work, ".driver.py")
            with open(cfg_path, "w", encoding="utf-8") as fh:
                json.dump({"blocks": blocks, "memory_bytes": self.memory_mb << 20,
                           "cpu_seconds": max(1, int(self.timeout_s) + 1), "file_bytes": self.file_mb << 20,
                           "preimport": self.preimport, "audit_hook": self.audit_hook,
                           "block_dlopen": not self.uses_netns}, fh)
            with open(driver_path, "w", encoding="utf-8") as fh:
                fh.write(_DRIVER)
            env = {"PATH": "/usr/bin:/bin", "HOME": work, "TMPDIR": work, "LANG": "C.UTF-8",
                   "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                   "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg"}
            t0 = time.monotonic()
            proc = subprocess.Popen(self.command(cfg_path, driver_path), cwd=work, env=env,
                                    stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    start_new_session=True)
            timed_out = False
            try:
                out, err = proc.communicate(timeout=self.timeout_s)
            except subprocess.TimeoutExpired:
                timed_out = True
                _kill_group(proc)
                out, err = proc.communicate()
            rc = proc.returncode
            # the CPU limit ends a busy loop with SIGXCPU before the wall clock does
            if rc in (-signal.SIGXCPU, -signal.SIGKILL) and not timed_out:
                timed_out = rc == -signal.SIGXCPU
            return SandboxResult(stdout=_decode(out, self.max_output_chars * 4),
                                 stderr=_decode(err, self.max_output_chars * 4), returncode=rc,
                                 timed_out=timed_out, seconds=time.monotonic() - t0)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def run_many(self, programs: Sequence[str | Sequence[str]], workers: int = 4) -> list[SandboxResult]:
        """Run programs in parallel (each is its own process), results in input order."""
        if not programs:
            return []
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(self.run, programs))


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _decode(data: bytes, limit: int) -> str:
    return data[:limit].decode("utf-8", errors="replace")
