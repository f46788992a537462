"""A sandbox for the Python a teacher writes during tool-integrated reasoning (TIR).

Owns running untrusted model code. Each program runs in a fresh ``python -I`` process with

* isolation (the default, ``isolation="bwrap"``): bubblewrap namespaces and a seccomp
  filter, see :mod:`synth.isolation`: the program sees only a read-only Python, a private
  size-limited work folder and ``/tmp``, its own processes, no network, no inherited
  environment, and cannot create processes. Where bwrap does not work the sandbox refuses
  to start (:class:`SandboxUnavailable`) unless ``isolation="unsafe-host"`` is chosen;
* a wall-clock timeout (the whole process group is killed) and a CPU-time limit;
* an address-space limit (``RLIMIT_AS``), a file-size limit and a cap on files created;
* an audit hook as a second layer, in both modes: it refuses sockets, starting processes,
  signalling other processes, ctypes (so libc cannot be called directly) and too many files.
  ``unsafe-host`` keeps only this layer plus an empty network namespace (``unshare -rn``)
  when the kernel allows it: the program can then read and write the host's files.

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
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

from corpus.errors import ConfigError
from synth.isolation import (CONTROL_DIR, INSTALL_HINT, ISOLATION_MODES, SANDBOX_ROOT, bwrap_command,
                             isolation_problem, python_layout, seccomp_filter)

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

# Libraries models reach for are imported before the hook goes in: some use ctypes while
# they load, and the hook refuses ctypes afterwards (it could otherwise call libc directly).
for _name in cfg["preimport"]:
    try:
        __import__(_name)
    except Exception:
        pass

import os as _os
_BLOCKED = {"socket.__new__", "socket.connect", "socket.bind", "socket.getaddrinfo", "socket.sendto",
            "subprocess.Popen", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
            "os.forkpty", "pty.spawn", "webbrowser.open", "urllib.Request", "os.killpg",
            "ctypes.dlopen", "ctypes.dlsym", "ctypes.dlsym/handle", "ctypes.call_function", "ctypes.cdata"}
_MAX_FILES = cfg["max_files"]
_created = [0]
_own_pid = _os.getpid()
_O_CREAT = _os.O_CREAT

def _guard(event, args):
    if event in _BLOCKED:
        raise PermissionError(f"sandbox: {event} is not allowed")
    if event == "os.kill" and args[0] != _own_pid:
        raise PermissionError("sandbox: os.kill is not allowed")
    if (event == "open" and len(args) > 2 and isinstance(args[2], int) and args[2] & _O_CREAT) or \
            event in ("os.mkdir", "os.symlink", "os.link"):
        _created[0] += 1
        if _created[0] > _MAX_FILES:
            raise PermissionError(f"sandbox: more than {_MAX_FILES} files created")

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


class SandboxUnavailable(ConfigError):
    """Isolation was asked for (the default) but cannot be set up on this machine."""


def unsafe_host_warning() -> str:
    return ("warning: sandbox 'unsafe-host': the model's code runs on this machine unisolated: it can read, "
            "change and delete your files and see your other processes. Use it only for code you trust.")


def check_sandbox(isolation: str, python: str | None = None) -> None:
    """Refuse before any work starts when the chosen isolation cannot run here; warn for unsafe-host."""
    if isolation == "bwrap":
        problem = isolation_problem(python or sys.executable)
        if problem is not None:
            raise SandboxUnavailable(f"sandbox: cannot isolate the model's code: {problem}; {INSTALL_HINT}, "
                                     "or pass --sandbox unsafe-host to run it unisolated on this machine")
    elif isolation == "unsafe-host":
        _warn_unsafe_once()
    else:
        raise ConfigError(f"sandbox: isolation must be one of {', '.join(ISOLATION_MODES)}, got {isolation!r}")


class Sandbox:
    """Runs Python programs isolated, with time, memory, file and network limits. Thread-safe.

    ``isolation="bwrap"`` (default) refuses to start with :class:`SandboxUnavailable` where
    bubblewrap cannot build the sandbox; ``isolation="unsafe-host"`` runs on the host with
    only the audit hook and the network namespace, and warns once on stderr.
    """

    def __init__(self, timeout_s: float = 10.0, memory_mb: int = 2048, max_output_chars: int = 2000,
                 network: str = "auto", file_mb: int = 64, python: str | None = None,
                 preimport: Sequence[str] = DEFAULT_PREIMPORT, audit_hook: bool = True,
                 isolation: str = "bwrap", max_files: int = 1000, tmpfs_mb: int = 256) -> None:
        if isolation not in ISOLATION_MODES:
            raise ConfigError(f"sandbox: isolation must be one of {', '.join(ISOLATION_MODES)}, got {isolation!r}")
        if network not in NETWORK_MODES:
            raise ConfigError(f"sandbox: network must be one of {', '.join(NETWORK_MODES)}, got {network!r}")
        if timeout_s <= 0:
            raise ConfigError(f"sandbox: timeout must be positive, got {timeout_s}")
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.max_output_chars = max_output_chars
        self.file_mb = file_mb
        self.max_files = max_files
        self.tmpfs_mb = tmpfs_mb
        self.python = python or sys.executable
        self.isolation = isolation
        self.preimport = list(preimport)
        # audit_hook=False exists only so tests can show each other layer holds on its own
        self.audit_hook = audit_hook
        self.network = network
        if isolation == "bwrap":
            check_sandbox(isolation, self.python)
            self.uses_netns = True
            self._layout = python_layout(self.python)
            self._bwrap = shutil.which("bwrap") or "bwrap"
            self._bpf = seccomp_filter()
        else:
            if network == "unshare" and not unshare_available():
                raise ConfigError("sandbox: network='unshare' but `unshare -rn` does not work on this machine "
                                  "(no user namespaces); use network='auto' to fall back to the audit hook")
            self.uses_netns = network == "unshare" or (network == "auto" and unshare_available())
            _warn_unsafe_once()

    def _config(self, blocks: list[str]) -> dict[str, object]:
        return {"blocks": blocks, "memory_bytes": self.memory_mb << 20,
                "cpu_seconds": max(1, int(self.timeout_s) + 1), "file_bytes": self.file_mb << 20,
                "preimport": self.preimport, "audit_hook": self.audit_hook, "max_files": self.max_files}

    def _env(self, home: str) -> dict[str, str]:
        return {"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": "/tmp" if self.isolation == "bwrap" else home,
                "LANG": "C.UTF-8", "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1", "MPLBACKEND": "Agg"}

    def run(self, code: str | Sequence[str]) -> SandboxResult:
        """Run one program (or the blocks of one trajectory, the last one's output returned)."""
        blocks = [code] if isinstance(code, str) else list(code)
        if not blocks:
            blocks = [""]
        cfg = json.dumps(self._config(blocks)).encode("utf-8")
        if self.isolation == "bwrap":
            return self._run_bwrap(cfg)
        return self._run_host(cfg)

    def _run_bwrap(self, cfg: bytes) -> SandboxResult:
        # The driver, its config and the filter reach bwrap as unlinked temporary files (fds), so
        # nothing of the run is left on the host's disk and nothing needs a path the sandbox sees.
        files = [tempfile.TemporaryFile() for _ in range(3)]
        try:
            for fh, data in zip(files, (_DRIVER.encode("utf-8"), cfg, self._bpf)):
                fh.write(data)
                fh.flush()
                fh.seek(0)
            drv, cfg_fd, bpf = (f.fileno() for f in files)
            control = ["--ro-bind-data", str(drv), f"{CONTROL_DIR}/driver.py",
                       "--ro-bind-data", str(cfg_fd), f"{CONTROL_DIR}/cfg.json"]
            argv = [self._layout.executable, "-I", f"{CONTROL_DIR}/driver.py", f"{CONTROL_DIR}/cfg.json"]
            cmd = bwrap_command(self._bwrap, self._layout, control, argv, env=self._env(SANDBOX_ROOT),
                                tmpfs_bytes=self.tmpfs_mb << 20, seccomp_fd=bpf)
            # bwrap starts with an empty environment too: nothing of the parent's reaches the sandbox
            return self._communicate(cmd, cwd="/", env={"PATH": "/usr/bin:/bin"}, pass_fds=(drv, cfg_fd, bpf))
        finally:
            for fh in files:
                fh.close()

    def _run_host(self, cfg: bytes) -> SandboxResult:
        work = tempfile.mkdtemp(prefix="mathcorpus-sandbox-")
        try:
            cfg_path = os.path.join(work, ".cfg.json")
            driver_path = os.path.join(work, ".driver.py")
            with open(cfg_path, "wb") as fh:
                fh.write(cfg)
            with open(driver_path, "w", encoding="utf-8") as fh:
                fh.write(_DRIVER)
            cmd = [self.python, "-I", driver_path, cfg_path]
            if self.uses_netns:
                cmd = [shutil.which("unshare") or "unshare", "-rn"] + cmd
            return self._communicate(cmd, cwd=work, env=self._env(work), pass_fds=())
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _communicate(self, cmd: list[str], *, cwd: str, env: dict[str, str],
                     pass_fds: tuple[int, ...]) -> SandboxResult:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, start_new_session=True, pass_fds=pass_fds)
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

    def run_many(self, programs: Sequence[str | Sequence[str]], workers: int = 4) -> list[SandboxResult]:
        """Run programs in parallel (each is its own process), results in input order."""
        if not programs:
            return []
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(self.run, programs))


_warned = threading.Lock()
_warned_once: list[bool] = []


def _warn_unsafe_once() -> None:
    with _warned:
        if not _warned_once:
            _warned_once.append(True)
            print(unsafe_host_warning(), file=sys.stderr)


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()


def _decode(data: bytes, limit: int) -> str:
    return data[:limit].decode("utf-8", errors="replace")
