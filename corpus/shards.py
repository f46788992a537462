"""Sharded document I/O: streaming readers and atomic, deterministic Parquet writers.

Reading accepts a file, a folder or a glob of ``.parquet``, ``.jsonl``, ``.jsonl.gz`` and
``.jsonl.zst`` on any fsspec filesystem, and yields Arrow record batches so memory stays
bounded whatever the shard size. Inside a folder, names starting with ``_`` or ``.`` (side
outputs such as ``_removed/``, ``_logs/``) and ``*.tmp`` files (unfinished writes) are ignored.

Writing produces ``{stage}-{rank:05d}-{n:05d}.parquet`` files, zstd-compressed, rolled over at
a row or byte target, each written to a ``.tmp`` name first and renamed when complete, so a
file with the final name is always whole.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import IO

import fsspec
import pyarrow as pa
import pyarrow.json as pajson
import pyarrow.parquet as pq

from corpus import fs as cfs
from corpus import schema
from corpus.errors import FatalError, InputError, ShardError

SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")
TMP_SUFFIX = ".tmp"
DEFAULT_BATCH_ROWS = 8192
# JSONL is parsed in blocks of about this many bytes: big enough for pyarrow's parser
# to be fast, small enough that a 10 GB shard never sits in memory.
JSONL_BLOCK_BYTES = 16 << 20


def _is_hidden(rel: str) -> bool:
    return any(part.startswith(("_", ".")) for part in rel.replace("\\", "/").split("/") if part)


def _supported(path: str) -> bool:
    return path.endswith(SUFFIXES) and not path.endswith(TMP_SUFFIX)


def list_input_files(inputs: Sequence[str] | str) -> list[str]:
    """Expand files, folders and globs into a sorted, de-duplicated list of shard paths.

    Raises InputError when an input matches nothing, naming that input.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs:
        raise InputError("no input given; pass one or more files, folders or globs")
    out: list[str] = []
    for inp in inputs:
        try:
            fs, _, paths = fsspec.get_fs_token_paths(inp)
        except ImportError as exc:
            raise cfs.missing_backend_error(inp, exc) from None
        found: list[str] = []
        if cfs.protocol(inp) in ("http", "https") and _supported(inp.split("?", 1)[0]):
            # a file URL: listing it as a folder would download and parse it as a web page
            paths, listable = [inp], False
        else:
            fs.invalidate_cache()  # object-store listings are cached per process; outputs may be new
            listable = True
        for p in paths:
            if listable and fs.isdir(p):
                for f in sorted(fs.find(p)):
                    rel = f[len(p.rstrip("/")) + 1:]
                    if _supported(f) and not _is_hidden(rel):
                        found.append(cfs.full_path(fs, f, inp))
            elif fs.exists(p):
                if not _supported(p.split("?", 1)[0]):
                    raise InputError(
                        f"{inp}: unsupported file type; use one of {', '.join(SUFFIXES)}")
                found.append(cfs.full_path(fs, p, inp))
        if not found:
            raise InputError(
                f"{inp}: no input files found (looked for {', '.join(SUFFIXES)}); "
                "check the path or glob")
        out.extend(found)
    seen: set[str] = set()
    uniq = []
    for f in out:
        if f not in seen:
            seen.add(f)
            uniq.append(f)
    return uniq


def _open(path: str, mode: str = "rb") -> IO[bytes]:
    try:
        return fsspec.open(path, mode).open()
    except ImportError as exc:
        raise cfs.missing_backend_error(path, exc) from None


def _decompress(path: str, raw: IO[bytes]) -> IO[bytes]:
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=raw)
    if path.endswith(".zst"):
        import zstandard

        return zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
    return raw


def _json_kind(value: object) -> str:
    """JSON type name of a parsed value, as a user would say it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


def _a(kind: str) -> str:
    return kind if kind == "null" else ("an " if kind[0] in "aeiou" else "a ") + kind


def _reparse_mixed_ids(block: bytes) -> pa.Table | None:
    """Parse a block whose ``id`` is an integer on some lines and a string on others.

    pyarrow infers one type per column and refuses such a block (merged dumps often have
    it); integer ids are cast to strings, as everywhere else, by rewriting only the lines
    that carry one. None when the block has no integer id or fails for another reason.
    """
    lines = block.split(b"\n")
    changed = False
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            return None
        if isinstance(obj, dict) and _json_kind(obj.get(schema.ID)) == "integer":
            obj[schema.ID] = str(obj[schema.ID])
            lines[i] = json.dumps(obj, ensure_ascii=False).encode("utf-8")
            changed = True
    if not changed:
        return None
    fixed = b"\n".join(lines)
    try:
        return pajson.read_json(io.BytesIO(fixed),
                                read_options=pajson.ReadOptions(block_size=max(len(fixed) + 1, 1 << 20)))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return None


def _locate_json_error(path: str, block: bytes, first_line: int, arrow_error: str = "") -> InputError:
    """Find the first bad line in a block pyarrow refused, for a message a person can act on."""
    kinds: dict[str, tuple[str, int]] = {}  # per top-level field: its first JSON type and that line
    for i, line in enumerate(block.split(b"\n")):
        lineno = first_line + i
        if not line.strip():
            continue
        try:
            s = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            return ShardError(
                f"{path}: invalid UTF-8 on line {lineno} (byte {exc.start}); re-encode the file "
                "as UTF-8 (e.g. iconv -f latin1 -t utf-8) or pass --skip-bad-files", path)
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as exc:
            return ShardError(
                f"{path}: invalid JSON on line {lineno}: {exc.msg} (column {exc.colno}); fix or "
                "remove that line, or pass --skip-bad-files", path)
        if not isinstance(obj, dict):
            return ShardError(
                f"{path}: line {lineno} is a JSON {type(obj).__name__}, expected an object with "
                "'id' and 'text' fields", path)
        t = obj.get("text")
        if "text" in obj and not isinstance(t, str):
            what = "null" if t is None else type(t).__name__
            return ShardError(
                f"{path}: field 'text' is {what} on line {lineno}, expected a string; "
                "drop or fix that record", path)
        for key, value in obj.items():
            kind = _json_kind(value)
            if kind == "null":  # null goes with any type
                continue
            if kind == "integer" and key != schema.ID:  # pyarrow promotes integers to numbers
                kind = "number"
            first = kinds.setdefault(key, (kind, lineno))
            if kind != first[0] and not (key == schema.ID and {kind, first[0]} == {"integer", "string"}):
                fix = ("ids must be strings or integers: convert them to strings" if key == schema.ID
                       else "give it one type on every line")
                return ShardError(f"{path}: field '{key}' is {_a(first[0])} on line {first[1]} but {_a(kind)} "
                                  f"on line {lineno}; {fix}", path)
    changed = re.search(r"Column\((/[^)]*)\) changed from (\w+) to (\w+)", arrow_error)
    if changed:  # another field whose type differs between lines: name it
        field_name = changed.group(1).strip("/").replace("/", ".")
        return ShardError(
            f"{path}: field '{field_name}' is {_a(changed.group(2))} on some lines and {_a(changed.group(3))} on others "
            f"(near line {first_line}); give it one type in every line", path)
    detail = f" ({arrow_error})" if arrow_error else ""
    return ShardError(f"{path}: the file could not be parsed as JSON lines{detail}; check its encoding "
                      "and that each line is one JSON object", path)


def _iter_jsonl(path: str, batch_rows: int, required: Sequence[str]) -> Iterator[pa.RecordBatch]:
    with _open(path) as raw:
        stream = _decompress(path, raw)
        carry = b""
        line_no = 1
        eof = False
        try:
            while not eof:
                chunk = stream.read(JSONL_BLOCK_BYTES)
                if not chunk:
                    eof = True
                    block, carry = carry, b""
                else:
                    data = carry + chunk
                    cut = data.rfind(b"\n")
                    if cut < 0:
                        carry = data
                        continue
                    block, carry = data[: cut + 1], data[cut + 1:]
                if not block.strip():
                    line_no += block.count(b"\n")
                    continue
                try:
                    codecs.decode(block, "utf-8")
                    table = pajson.read_json(
                        io.BytesIO(block),
                        read_options=pajson.ReadOptions(block_size=max(len(block) + 1, 1 << 20)),
                    )
                except (pa.ArrowInvalid, UnicodeDecodeError, pa.ArrowNotImplementedError) as exc:
                    table = None if isinstance(exc, UnicodeDecodeError) else _reparse_mixed_ids(block)
                    if table is None:
                        raise _locate_json_error(path, block, line_no, str(exc).strip()
                                                 if not isinstance(exc, UnicodeDecodeError) else "") from None
                for b in table.to_batches(max_chunksize=batch_rows):
                    yield schema.conform_batch(b, path, required)
                line_no += block.count(b"\n")
        except (EOFError, OSError, gzip.BadGzipFile) as exc:
            if isinstance(exc, InputError):
                raise
            raise ShardError(
                f"{path}: the compressed stream is corrupt or truncated ({exc}); re-create the "
                "file or pass --skip-bad-files", path) from exc
        except Exception as exc:  # zstandard raises its own ZstdError class
            if type(exc).__name__ == "ZstdError":
                raise ShardError(f"{path}: corrupt zstd stream ({exc}); re-create the file or pass "
                                 "--skip-bad-files", path) from exc
            raise


def _iter_parquet(path: str, batch_rows: int, columns: Sequence[str] | None,
                  required: Sequence[str]) -> Iterator[pa.RecordBatch]:
    try:
        f = _open(path)
        pf = pq.ParquetFile(f)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ShardError(
            f"{path}: not a readable Parquet file ({exc}); the file is corrupt or truncated. "
            "Re-create it or pass --skip-bad-files", path) from exc
    with f:
        schema.check_required(pf.schema_arrow, path, required)
        try:
            for b in pf.iter_batches(batch_size=batch_rows, columns=list(columns) if columns else None):
                yield schema.conform_batch(b, path, required)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ShardError(
                f"{path}: Parquet data is corrupt ({exc}); re-create the file or pass "
                "--skip-bad-files", path) from exc


def iter_batches(path: str, batch_rows: int = DEFAULT_BATCH_ROWS, columns: Sequence[str] | None = None,
                 required: Sequence[str] = schema.REQUIRED) -> Iterator[pa.RecordBatch]:
    """Stream one shard as validated record batches (``id`` string, ``text`` non-null string).

    ``required`` names the columns that must exist (default id and text); stages that read
    other fields, such as decontam over SFT records, pass their own.
    """
    if path.endswith(".parquet"):
        yield from _iter_parquet(path, batch_rows, columns, required)
    else:
        for b in _iter_jsonl(path, batch_rows, required):
            yield b.select(list(columns)) if columns else b


def read_table(inputs: Sequence[str] | str, columns: Sequence[str] | None = None) -> pa.Table:
    """Read everything into one table: for tests and small data only."""
    batches = [b for p in list_input_files(inputs) for b in iter_batches(p, columns=columns)]
    if not batches:
        return pa.table({schema.ID: pa.array([], pa.string()), schema.TEXT: pa.array([], pa.string())})
    return pa.Table.from_batches(batches) if len({b.schema for b in batches}) == 1 else \
        pa.concat_tables([pa.Table.from_batches([b]) for b in batches], promote_options="permissive")


def shard_name(stage: str, rank: int, n: int) -> str:
    return f"{stage}-{rank:05d}-{n:05d}.parquet"


@dataclass
class ShardWriter:
    """Writes batches into rolled-over, atomically renamed Parquet shards for one task.

    A new file starts when the row or byte target is reached, or when the batch schema
    changes (JSONL blocks can infer different nested types); names stay deterministic.
    """

    out_dir: str
    stage: str
    rank: int = 0
    max_rows: int = 1_000_000
    max_bytes: int = 512 << 20
    row_group_rows: int = 65_536
    compression: str = "zstd"
    files: list[str] = field(default_factory=list)
    rows_written: int = 0
    _writer: pq.ParquetWriter | None = None
    _tmp: str = ""
    _final: str = ""
    _rows: int = 0
    _bytes: int = 0
    _n: int = 0
    _sink: cfs.AtomicWriter | None = None

    def __post_init__(self) -> None:
        try:
            cfs.makedirs(self.out_dir)
        except OSError as exc:
            raise FatalError(f"{self.out_dir}: cannot create output folder ({exc})") from exc

    def _open_new(self, sch: pa.Schema) -> None:
        # local: written as NAME.tmp and renamed; object storage: uploaded to NAME, visible only when
        # complete (corpus.fs.AtomicWriter)
        self._final = cfs.join(self.out_dir, shard_name(self.stage, self.rank, self._n))
        self._n += 1
        try:
            self._sink = cfs.AtomicWriter(self._final)
            self._tmp = self._sink.tmp
            self._writer = pq.ParquetWriter(self._sink.file, sch, compression=self.compression)
        except OSError as exc:
            raise FatalError(f"{self._tmp}: cannot write output ({exc}); check free space and permissions") from exc
        self._rows = 0
        self._bytes = 0

    def write(self, data: pa.RecordBatch | pa.Table) -> None:
        if data.num_rows == 0:
            return
        table = pa.Table.from_batches([data]) if isinstance(data, pa.RecordBatch) else data
        if self._writer is not None and not table.schema.equals(self._writer.schema):
            try:
                table = table.cast(self._writer.schema)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError, TypeError):
                self._close_current()
        start = 0
        while start < table.num_rows:
            if self._writer is None:
                self._open_new(table.schema)
            room = self.max_rows - self._rows
            piece = table.slice(start, room)
            try:
                for off in range(0, piece.num_rows, self.row_group_rows):
                    self._writer.write_table(piece.slice(off, self.row_group_rows), row_group_size=self.row_group_rows)
            except OSError as exc:
                self.abort()
                raise FatalError(f"{self._tmp}: write failed ({exc}); check free space and permissions. "
                                 "The unfinished file was removed.") from exc
            self._rows += piece.num_rows
            self._bytes += piece.nbytes
            self.rows_written += piece.num_rows
            start += piece.num_rows
            if self._rows >= self.max_rows or self._bytes >= self.max_bytes:
                self._close_current()

    def _close_current(self) -> None:
        if self._writer is None:
            return
        try:
            self._writer.close()
            self._sink.commit()  # type: ignore[union-attr]
        except OSError as exc:
            self.abort()
            raise FatalError(f"{self._final}: could not finish shard ({exc}); check free space and "
                             "permissions. The unfinished file was removed.") from exc
        self.files.append(self._final)
        self._writer = None

    def close(self) -> list[str]:
        self._close_current()
        return self.files

    def abort(self) -> None:
        """Drop the file being written (never leaves a half-written shard behind)."""
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError:
                pass
            self._writer = None
        if self._sink is not None:
            self._sink.abort()

    def __enter__(self) -> "ShardWriter":
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def file_sha256(path: str) -> str:
    """Hex sha256 of a file, read in 1 MB blocks (models, tokenizers, cycle state, inputs)."""
    h = hashlib.sha256()
    with cfs.open_file(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_bytes(path: str, data: bytes) -> None:
    """Write a small side file (JSON, manifest) atomically, on a local disk or object storage."""
    cfs.atomic_write_bytes(path, data)


def atomic_write_json(path: str, obj: object) -> None:
    cfs.atomic_write_json(path, obj)
