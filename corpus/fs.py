"""One small filesystem layer over local paths and fsspec URLs (``s3://``, ``gs://``, ``http(s)://`` ...).

Every stage, the runner and the pipeline go through these helpers for their outputs and side
files, so the same code works on a local disk and on object storage. Rules:

* a path without a protocol stays a plain local path (``os`` calls, nothing built from URLs);
* a URL is handled by its own fsspec filesystem, never turned into a local path;
* **atomic writes**: on a local disk a file is written under a ``.tmp`` name, fsynced and
  renamed (``os.replace``); on object storage it is written straight to its final key, because
  an object only becomes visible when its upload completes (S3 ``PutObject`` /
  ``CompleteMultipartUpload``), so a reader sees the whole object or nothing; a failed write is
  discarded (the multipart upload aborted), never committed half-way;
* credentials and endpoints come from the environment, the standard way for each backend
  (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_ENDPOINT_URL`` for S3-compatible
  stores, or fsspec's ``FSSPEC_S3_ENDPOINT_URL``-style variables and config file), so Slurm jobs
  and local worker processes inherit them;
* a backend whose package is missing (``s3fs``, ``aiohttp``) is a one-line error naming the extra.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO, Any

import fsspec
from fsspec.spec import AbstractFileSystem

from corpus.errors import FatalError

TMP_SUFFIX = ".tmp"

# protocol -> (pip extra of mathcorpus or None, the package that brings the fsspec backend)
_EXTRAS: dict[str, tuple[str | None, str]] = {
    "s3": ("s3", "s3fs"), "s3a": ("s3", "s3fs"), "http": ("http", "aiohttp"), "https": ("http", "aiohttp"),
    "gs": (None, "gcsfs"), "gcs": (None, "gcsfs"), "az": (None, "adlfs"), "abfs": (None, "adlfs")}


def protocol(path: str) -> str:
    """The URL scheme of ``path`` (``s3``, ``http`` ...), or ``file`` for a plain path."""
    if "://" not in path:
        return "file"
    return path.split("://", 1)[0].lower() or "file"


def is_remote(path: str) -> bool:
    """Whether ``path`` is a URL of a filesystem other than the local one."""
    return protocol(path) not in ("file", "local")


def missing_backend_error(path: str, exc: ImportError) -> FatalError:
    """The one-line error for a URL whose fsspec backend is not installed."""
    proto = protocol(path)
    extra, pkg = _EXTRAS.get(proto, (None, ""))
    if extra:
        return FatalError(f"{path}: reading or writing {proto}:// URLs needs the '{pkg}' package; install it with "
                          f"pip install 'mathcorpus[{extra}]' (or pip install {pkg})")
    if pkg:
        return FatalError(f"{path}: reading or writing {proto}:// URLs needs the '{pkg}' package; install it with "
                          f"pip install {pkg}")
    return FatalError(f"{path}: no filesystem for {proto}:// URLs is installed ({exc}); install the fsspec "
                      f"backend for {proto}")


def url_to_fs(path: str) -> tuple[AbstractFileSystem, str]:
    """``(filesystem, path inside it)``; a missing backend package is a FatalError naming the extra."""
    try:
        return fsspec.core.url_to_fs(path)
    except ImportError as exc:
        raise missing_backend_error(path, exc) from None
    except ValueError as exc:
        if "Protocol not known" in str(exc):
            raise FatalError(f"{path}: unknown URL scheme '{protocol(path)}://'; use a local path or an fsspec URL "
                             "such as s3://bucket/prefix or https://host/file.jsonl.gz") from None
        raise


def full_path(fs: AbstractFileSystem, path: str, like: str) -> str:
    """A path from ``fs`` (e.g. a ``find`` result) as the URL or local path the user would write."""
    if not is_remote(like):
        return path
    return fs.unstrip_protocol(path) if "://" not in path else path


def join(base: str, *parts: str) -> str:
    """Join path parts: ``os.path.join`` for local paths, ``/`` for URLs (whatever the OS)."""
    if not is_remote(base):
        return os.path.join(base, *parts)
    return posixpath.join(base, *parts)


def numbered_parts(folder: str, rank: int) -> tuple[list[str], int]:
    """Paths of the ``part-{rank:05d}-{n:05d}.parquet`` files in ``folder`` (every rank's, sorted),
    and the next free ``n`` for ``rank``: how resume caches find what earlier runs wrote."""
    prefix = f"part-{rank:05d}-"
    paths: list[str] = []
    nxt = 0
    for name in listdir(folder):  # sorted; empty when missing (a folder or an S3 prefix)
        if not (name.startswith("part-") and name.endswith(".parquet")):
            continue
        paths.append(join(folder, name))
        if name.startswith(prefix):
            nxt = max(nxt, int(name[len(prefix):-len(".parquet")]) + 1)
    return paths, nxt


def dirname(path: str) -> str:
    if not is_remote(path):
        return os.path.dirname(path)
    head, _, rest = path.partition("://")
    parent = posixpath.dirname(rest.rstrip("/"))
    return f"{head}://{parent}"


def basename(path: str) -> str:
    return os.path.basename(path) if not is_remote(path) else posixpath.basename(path.rstrip("/"))


def absolute(path: str) -> str:
    """Absolute local path, or the URL unchanged (for comparing an input with an output)."""
    return path.rstrip("/") if is_remote(path) else os.path.abspath(path)


def inside(path: str, folder: str) -> bool:
    """Whether ``path`` lies inside ``folder`` (both local, or both URLs)."""
    p, f = absolute(path), absolute(folder)
    sep = "/" if is_remote(folder) else os.sep
    return p.startswith(f + sep)


# ----------------------------------------------------------------------------- queries
def exists(path: str) -> bool:
    if not is_remote(path):
        return os.path.exists(path)
    fs, p = url_to_fs(path)
    fs.invalidate_cache(p)  # listings are cached per process; another task may have written since
    return bool(fs.exists(p))


def isdir(path: str) -> bool:
    if not is_remote(path):
        return os.path.isdir(path)
    fs, p = url_to_fs(path)
    fs.invalidate_cache(p)
    return bool(fs.isdir(p))


def size(path: str) -> int:
    if not is_remote(path):
        return os.path.getsize(path)
    fs, p = url_to_fs(path)
    fs.invalidate_cache(p)
    return int(fs.size(p) or 0)


def listdir(path: str) -> list[str]:
    """Names (not paths) in a folder, sorted; empty when it does not exist.

    On object storage a "folder" is a key prefix: it exists as soon as one object is under it.
    """
    if not is_remote(path):
        return sorted(os.listdir(path)) if os.path.isdir(path) else []
    fs, p = url_to_fs(path)
    try:
        entries = fs.ls(p, detail=False, refresh=True)
    except FileNotFoundError:
        return []
    return sorted(posixpath.basename(e.rstrip("/")) for e in entries if e.rstrip("/") != p.rstrip("/"))


def walk_files(path: str) -> list[str]:
    """Every file under a folder, recursively, as full paths or URLs, sorted."""
    if not is_remote(path):
        out = []
        for root, _dirs, files in os.walk(path):
            out += [os.path.join(root, f) for f in files]
        return sorted(out)
    fs, p = url_to_fs(path)
    try:
        fs.invalidate_cache(p)
        return sorted(full_path(fs, f, path) for f in fs.find(p))
    except FileNotFoundError:
        return []


def is_empty_dir(path: str, ignore_hidden: bool = True) -> bool:
    """True when ``path`` is missing or holds nothing (``.``-names ignored)."""
    names = listdir(path)
    return not [n for n in names if not (ignore_hidden and n.startswith("."))]


# ----------------------------------------------------------------------------- changes
def makedirs(path: str) -> None:
    """Create a folder (a no-op on object storage, where prefixes need no creation)."""
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)
        return
    fs, p = url_to_fs(path)
    with contextlib.suppress(FileExistsError):
        fs.makedirs(p, exist_ok=True)


def remove(path: str) -> None:
    """Delete a file if it exists."""
    if not is_remote(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    fs, p = url_to_fs(path)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(p)
    fs.invalidate_cache(p)


def rmtree(path: str) -> None:
    """Delete a folder and everything in it, if it exists."""
    if not is_remote(path):
        shutil.rmtree(path, ignore_errors=True)
        return
    fs, p = url_to_fs(path)
    with contextlib.suppress(FileNotFoundError):
        if fs.exists(p):
            fs.rm(p, recursive=True)
    fs.invalidate_cache(p)


def remove_prefixed(folder: str, prefix: str, recursive: bool = False) -> None:
    """Delete the files of ``folder`` (and its subfolders with ``recursive``) whose name starts with ``prefix``."""
    if recursive:
        files = walk_files(folder)
    elif not is_remote(folder):
        files = [join(folder, n) for n in listdir(folder) if os.path.isfile(join(folder, n))]
    else:  # one listing with types, not a request per object
        fs, p = url_to_fs(folder)
        try:
            entries = fs.ls(p, detail=True, refresh=True)
        except FileNotFoundError:
            entries = []
        files = [full_path(fs, e["name"], folder) for e in entries if e.get("type") == "file"]
    for f in files:
        if basename(f).startswith(prefix):
            remove(f)


# ----------------------------------------------------------------------------- reading
def open_file(path: str, mode: str = "rb", **kwargs: Any) -> IO[Any]:
    """Open a local file or a URL (read, or a plain non-atomic write)."""
    if not is_remote(path):
        return open(path, mode, **kwargs)  # noqa: SIM115 - the caller closes it
    fs, p = url_to_fs(path)
    return fs.open(p, mode, **kwargs)


def read_bytes(path: str) -> bytes:
    with open_file(path, "rb") as fh:
        return fh.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def read_json(path: str) -> Any:
    return json.loads(read_bytes(path))


def read_parquet(path: str, **kwargs: Any) -> Any:
    """``pyarrow.parquet.read_table`` of a local file or a URL (through the URL's fsspec filesystem,
    so credentials and endpoints are the same as everywhere else)."""
    import pyarrow.parquet as pq

    if not is_remote(path):
        return pq.read_table(path, **kwargs)
    fs, p = url_to_fs(path)
    return pq.read_table(p, filesystem=fs, **kwargs)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local path holding the file (the path itself, or a temporary download of a URL).

    For readers that need a real file: numpy memory maps, fastText models.
    """
    if not is_remote(path):
        yield path
        return
    fs, p = url_to_fs(path)
    with tempfile.TemporaryDirectory(prefix="mathcorpus-") as d:
        local = os.path.join(d, posixpath.basename(p.rstrip("/")) or "file")
        fs.get_file(p, local)
        yield local


# ----------------------------------------------------------------------------- atomic writing
class AtomicWriter:
    """A binary file that appears at ``path`` whole, or not at all.

    Local: written as ``path.tmp``, fsynced, renamed over ``path`` by :meth:`commit`.
    Object storage: written to ``path`` itself; the upload completes on :meth:`commit` and is
    discarded by :meth:`abort` (an unfinished object is never visible).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.remote = is_remote(path)
        self.done = False
        if self.remote:
            self._fs, self._p = url_to_fs(path)
            self.tmp = path
            self.file: IO[bytes] = self._fs.open(self._p, "wb")
        else:
            d = os.path.dirname(path)
            if d:
                os.makedirs(d, exist_ok=True)
            self.tmp = path + TMP_SUFFIX
            self.file = open(self.tmp, "wb")  # noqa: SIM115 - closed in commit/abort

    def write(self, data: bytes) -> int:
        return self.file.write(data)

    def commit(self) -> None:
        if self.done:
            return
        self.done = True
        if self.remote:
            self.file.close()
            self._fs.invalidate_cache(self._p)
            return
        if not self.file.closed:  # a writer may have closed it already
            self.file.flush()
            os.fsync(self.file.fileno())
            self.file.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self.done:
            return
        self.done = True
        if self.remote:
            discard = getattr(self.file, "discard", None)
            if discard is not None:
                with contextlib.suppress(Exception):  # noqa: BLE001 - best effort on an already failing write
                    discard()
                self.file.closed = True  # type: ignore[misc] - an fsspec buffered file: never commit it
            else:  # a backend without discard: remove whatever close() committed
                with contextlib.suppress(Exception):  # noqa: BLE001
                    self.file.close()
                remove(self.path)
            return
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def __enter__(self) -> AtomicWriter:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write a small file (JSON, manifest, work file) atomically, locally or on object storage."""
    try:
        with AtomicWriter(path) as w:
            w.write(data)
    except OSError as exc:
        raise FatalError(f"{path}: cannot write ({exc}); check free space and permissions") from exc


def atomic_write_json(path: str, obj: object) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


@contextlib.contextmanager
def atomic_local_path(path: str) -> Iterator[str]:
    """A local path to write a file at; it then appears atomically at ``path`` (a URL or a local path).

    For writers that need a real file name (fastText models, numpy): local targets are written
    to ``path.tmp`` and renamed, URLs are uploaded in one piece after the writer finishes.
    """
    if not is_remote(path):
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        tmp = path + TMP_SUFFIX
        try:
            yield tmp
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return
    fs, p = url_to_fs(path)
    with tempfile.TemporaryDirectory(prefix="mathcorpus-") as d:
        local = os.path.join(d, posixpath.basename(p.rstrip("/")) or "file")
        yield local
        fs.put_file(local, p)
        fs.invalidate_cache(p)


_DIR_CACHE: dict[str, str] = {}


def local_dir(path: str) -> str:
    """A local folder holding the folder ``path``: itself, or a per-process download of a URL.

    For small read-only artifacts that readers memory-map (the decontam index): each worker
    process downloads it once and keeps it until the process exits.
    """
    if not is_remote(path):
        return path
    key = path.rstrip("/")
    if key not in _DIR_CACHE or not os.path.isdir(_DIR_CACHE[key]):
        fs, p = url_to_fs(path)
        fs.invalidate_cache(p)
        d = tempfile.mkdtemp(prefix="mathcorpus-dir-")
        p = p.rstrip("/")
        for f in fs.find(p):
            rel = f[len(p) + 1:]
            target = os.path.join(d, *rel.split("/"))
            os.makedirs(os.path.dirname(target), exist_ok=True)
            fs.get_file(f, target)
        _DIR_CACHE[key] = d
    return _DIR_CACHE[key]


@contextlib.contextmanager
def local_dir_for_writing(path: str, last: tuple[str, ...] = ()) -> Iterator[str]:
    """A local folder to write a folder's files in; for a URL they are uploaded when the block ends.

    Each file is one object upload (whole or absent); the names in ``last`` are uploaded after
    all others, so a reader that looks for them first (a ``meta.json``) never finds a partial folder.
    """
    if not is_remote(path):
        os.makedirs(path, exist_ok=True)
        yield path
        return
    fs, p = url_to_fs(path)
    p = p.rstrip("/")
    with tempfile.TemporaryDirectory(prefix="mathcorpus-") as d:
        yield d
        files = []
        for root, _dirs, names in os.walk(d):
            files += [os.path.join(root, n) for n in names]
        files.sort(key=lambda f: (os.path.basename(f) in last, f))
        for f in files:
            rel = os.path.relpath(f, d).replace(os.sep, "/")
            fs.put_file(f, f"{p}/{rel}")
        fs.invalidate_cache(p)
        _DIR_CACHE.pop(path.rstrip("/"), None)


_FILE_CACHE: dict[str, str] = {}


def local_file(path: str) -> str:
    """A local path holding the file ``path``: itself, or a per-process download of a URL (models
    that a library loads from a file name, such as fastText)."""
    if not is_remote(path):
        return path
    if path not in _FILE_CACHE or not os.path.isfile(_FILE_CACHE[path]):
        fs, p = url_to_fs(path)
        d = tempfile.mkdtemp(prefix="mathcorpus-file-")
        local = os.path.join(d, posixpath.basename(p.rstrip("/")) or "file")
        fs.get_file(p, local)
        _FILE_CACHE[path] = local
    return _FILE_CACHE[path]
