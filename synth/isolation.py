"""Isolation for sandboxed programs: the bubblewrap command line and the seccomp filter.

Owns how a TIR program is contained on Linux. Each program runs under ``bwrap``
(Debian/Ubuntu package ``bubblewrap``) with

* its own mount namespace: a read-only view of only what Python needs (``/usr/lib``,
  the interpreter and its standard library, the site-packages folders), a private,
  size-limited tmpfs work folder and ``/tmp``; no home, no ``/etc``, no ``/usr/bin``
  (so no shell), nothing from the corpus or the output folders;
* its own PID namespace (it sees and signals only its own processes), network namespace
  (loopback only, nothing listening), IPC, UTS and user namespaces, no capabilities, and
  no way to create further user namespaces;
* an environment with nothing inherited (bwrap itself starts with an empty one, so not even
  ``/proc/1/environ`` of the sandbox's init holds the parent's variables);
* a seccomp filter, made with libseccomp (``pyseccomp``) and handed to bwrap, that refuses
  creating processes (fork, vfork, clone without CLONE_THREAD, clone3) and ptrace, while
  threads (numpy, OpenBLAS) still work.

Nothing here writes namespace code by hand: bwrap builds the namespaces, libseccomp the BPF.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

ISOLATION_MODES = ("bwrap", "unsafe-host")
SANDBOX_ROOT = "/sandbox"
CONTROL_DIR = "/run/mathcorpus"
_CLONE_THREAD = 0x00010000
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install "
                "bubblewrap) and libseccomp (apt-get install libseccomp2)")


@dataclass(frozen=True)
class PythonLayout:
    """Where an interpreter lives: what must be visible, read-only, for it to start."""

    executable: str            # the path the sandbox runs (may be a venv symlink)
    real_executable: str       # what it resolves to
    base_lib: str              # the base installation's lib folder (stdlib, lib-dynload, libpython)
    venv_cfg: str | None       # pyvenv.cfg when the executable is a venv's
    site_dirs: tuple[str, ...]  # site-packages / dist-packages folders on sys.path


@lru_cache(maxsize=8)
def python_layout(python: str) -> PythonLayout:
    """Ask ``python`` where its pieces are (cached; one subprocess per interpreter)."""
    probe = ("import json, os, sys, sysconfig; print(json.dumps({'prefix': sys.prefix, 'base': sys.base_prefix, "
             "'stdlib': sysconfig.get_paths()['stdlib'], 'path': sys.path}))")
    out = subprocess.run([python, "-I", "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    info = json.loads(out.stdout)
    real = os.path.realpath(python)
    stdlib = os.path.realpath(info["stdlib"])
    base_lib = os.path.dirname(stdlib)  # .../lib holding python3.X and libpython
    venv_cfg = os.path.join(info["prefix"], "pyvenv.cfg")
    sites = tuple(sorted({os.path.realpath(p) for p in info["path"]
                          if p and os.path.isdir(p) and os.path.basename(p) in ("site-packages", "dist-packages")}))
    return PythonLayout(executable=python, real_executable=real, base_lib=base_lib,
                        venv_cfg=venv_cfg if os.path.isfile(venv_cfg) else None, site_dirs=sites)


@lru_cache(maxsize=1)
def seccomp_filter() -> bytes:
    """The BPF program bwrap loads before it starts the interpreter (libseccomp via pyseccomp)."""
    import pyseccomp as sc

    f = sc.SyscallFilter(sc.ALLOW)
    for name in ("fork", "vfork", "ptrace", "process_vm_writev", "process_vm_readv"):
        f.add_rule(sc.ERRNO(errno.EPERM), name)
    # clone without CLONE_THREAD makes a process; with it, a thread (kept: numpy and OpenBLAS use them)
    f.add_rule(sc.ERRNO(errno.EPERM), "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))
    # clone3 passes its flags in memory a filter cannot read: ENOSYS makes glibc fall back to clone
    f.add_rule(sc.ERRNO(errno.ENOSYS), "clone3")
    with tempfile.TemporaryFile() as fh:
        f.export_bpf(fh)
        fh.seek(0)
        return fh.read()


def _ro(path: str) -> list[str]:
    return ["--ro-bind", path, path]


def _root_links() -> list[str]:
    """/lib, /lib64, /bin as on the host: symlinks into /usr on merged-/usr systems, else read-only binds."""
    args: list[str] = []
    for top in ("/lib", "/lib64", "/lib32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += _ro(top)
    return args


def bwrap_command(bwrap: str, layout: PythonLayout, control_fd_args: Sequence[str], argv: Sequence[str], *,
                  env: dict[str, str], tmpfs_bytes: int, seccomp_fd: int) -> list[str]:
    """The full bwrap argv for one program (``argv`` runs inside, in SANDBOX_ROOT)."""
    cmd = [bwrap, "--unshare-all", "--unshare-user", "--disable-userns", "--die-with-parent", "--new-session",
           "--cap-drop", "ALL", "--uid", "65534", "--gid", "65534", "--hostname", "sandbox", "--clearenv"]
    for k, v in env.items():
        cmd += ["--setenv", k, v]
    # The private tmpfs folders first: bwrap mounts in order, and the interpreter may live under
    # /tmp (a checkout or venv there), whose read-only binds must land on top of the tmpfs.
    cmd += ["--size", str(tmpfs_bytes), "--tmpfs", "/tmp",
            "--size", str(tmpfs_bytes), "--tmpfs", SANDBOX_ROOT]
    for d in ("/usr/lib", "/usr/lib64", "/usr/lib32"):
        if os.path.isdir(d):
            cmd += _ro(d)
    cmd += _root_links()
    if not layout.base_lib.startswith("/usr/lib"):
        cmd += _ro(layout.base_lib)
    if not layout.real_executable.startswith("/usr/lib"):
        cmd += _ro(layout.real_executable)
    if layout.executable != layout.real_executable:
        cmd += ["--symlink", layout.real_executable, layout.executable]
    if layout.venv_cfg:
        cmd += _ro(layout.venv_cfg)
    for site in layout.site_dirs:
        if not site.startswith(layout.base_lib + os.sep) and not site.startswith("/usr/lib"):
            cmd += _ro(site)
    cmd += ["--proc", "/proc", "--dev", "/dev",
            *control_fd_args, "--seccomp", str(seccomp_fd), "--chdir", SANDBOX_ROOT, "--", *argv]
    return cmd


@lru_cache(maxsize=8)
def isolation_problem(python: str = sys.executable) -> str | None:
    """Why isolated sandboxes cannot run here, or None when they can (probed once per interpreter).

    The probe starts the real thing: bwrap with every namespace, the seccomp filter and the
    interpreter's read-only view, and checks that Python comes up inside it.
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return "bubblewrap (bwrap) is not installed"
    try:
        bpf = seccomp_filter()
    except (ImportError, RuntimeError, OSError) as exc:
        return f"the seccomp filter cannot be built ({exc})"
    try:
        layout = python_layout(python)
    except (OSError, subprocess.SubprocessError, ValueError) as exc:
        return f"{python} did not start ({exc})"
    with tempfile.TemporaryFile() as filt:
        filt.write(bpf)
        filt.flush()
        filt.seek(0)
        cmd = bwrap_command(bwrap, layout, [], [layout.executable, "-I", "-c", "print('ok')"],
                            env={"LANG": "C.UTF-8"}, tmpfs_bytes=1 << 20, seccomp_fd=filt.fileno())
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=60, pass_fds=(filt.fileno(),),
                               env={"PATH": "/usr/bin:/bin"})
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bwrap did not run ({exc})"
    if r.returncode != 0 or r.stdout.strip() != "ok":
        last = (r.stderr.strip().splitlines() or [f"exit status {r.returncode}"])[-1]
        return f"bwrap cannot create the sandbox here ({last})"
    return None
