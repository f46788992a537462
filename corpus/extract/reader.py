"""Extraction inputs → Arrow batches of raw pages: WARC files, HTML files, Parquet/JSONL with HTML.

One *input unit* (one row of what the extract stage receives) is one HTML response record of
a WARC file, one ``.html`` file, or one row of a Parquet/JSONL file. Batches carry the raw
bytes (``html``, binary) and what the container knows about them (url, WARC date, HTTP
status, content type and charset); decoding and parsing happen in the stage.

WARC files are read with FastWARC (gzip, LZ4, zstd and plain streams are detected from the
bytes). WARC records that are not documents (warcinfo, request, metadata, and responses
whose content type is not HTML) are counted in ``counters`` and never become rows. A
record whose block is shorter than its Content-Length (a file cut off mid-record) ends the
file: the complete records before it are yielded first, then a ShardError names the file,
so ``--skip-bad-files`` keeps them and counts the file, and without it the run stops with
that one line.

HTML folders are split into units of ``HTML_FILES_PER_UNIT`` files (``FOLDER#K``), so a
folder of a million pages spreads over tasks and a killed run resumes per unit; a page's id
is its path relative to the folder, without the extension.
"""

from __future__ import annotations

import glob
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from corpus import fs as cfs
from corpus import schema
from corpus.errors import InputError, MathcorpusError, ShardError

WARC_SUFFIXES = (".warc", ".warc.gz", ".warc.lz4", ".warc.zst", ".arc.gz")
HTML_SUFFIXES = (".html", ".htm", ".xhtml")
TABLE_SUFFIXES = (".parquet", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".json.gz", ".ndjson")
FORMATS = ("auto", "warc", "html", "parquet")
HTML_FILES_PER_UNIT = 512
JSONL_BLOCK_BYTES = 16 << 20
UNIT_SEP = "#"
HTML_TYPES = ("text/html", "application/xhtml+xml", "application/xml", "text/xml", "application/html")

# The columns of a raw-page batch (what the reader yields and the stage reads).
HTML = "html"
RAW_SCHEMA = pa.schema([
    pa.field(schema.ID, pa.string()), pa.field(schema.URL, pa.string()), pa.field(HTML, pa.binary()),
    pa.field("warc_date", pa.string()), pa.field("http_status", pa.int32()),
    pa.field("content_type", pa.string()), pa.field("http_charset", pa.string()),
    pa.field("html_bytes", pa.int64()), pa.field("read_error", pa.string()),
])


def _fmt_of(path: str) -> str | None:
    p = path.lower()
    if p.endswith(WARC_SUFFIXES):
        return "warc"
    if p.endswith(HTML_SUFFIXES):
        return "html"
    if p.endswith(TABLE_SUFFIXES):
        return "parquet"
    return None


def _all_suffixes(fmt: str) -> tuple[str, ...]:
    return {"warc": WARC_SUFFIXES, "html": HTML_SUFFIXES, "parquet": TABLE_SUFFIXES}.get(
        fmt, WARC_SUFFIXES + HTML_SUFFIXES + TABLE_SUFFIXES)


def _hidden(rel: str) -> bool:
    return any(part.startswith(("_", ".")) for part in rel.replace("\\", "/").split("/") if part)


def _wanted(path: str, fmt: str) -> bool:
    kind = _fmt_of(path)
    return kind is not None and (fmt == "auto" or kind == fmt) and not path.endswith(".tmp")


def html_files(folder: str) -> list[str]:
    """Sorted HTML files under ``folder`` (hidden and ``_``-prefixed names skipped)."""
    out = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
        for f in files:
            if f.lower().endswith(HTML_SUFFIXES) and not f.startswith(("_", ".")):
                out.append(os.path.join(root, f))
    return sorted(out)


def _static_prefix(pattern: str) -> str:
    """The folder part of a glob before its first wildcard (ids of matched pages are relative to it)."""
    parts = pattern.split(os.sep)
    keep = []
    for part in parts[:-1]:
        if glob.has_magic(part):
            break
        keep.append(part)
    return os.sep.join(keep) or "."


def list_units(inputs: Sequence[str], fmt: str = "auto", roots: dict[str, str] | None = None) -> list[str]:
    """Expand inputs into sorted units: WARC/table files, HTML files, and ``FOLDER#K`` HTML chunks.

    ``roots`` (when given) receives, for each single HTML file unit, the folder its id is
    relative to: the glob's folder part for glob matches, the file's own folder otherwise.
    Raises InputError naming the input when it matches nothing extract can read.
    """
    if isinstance(inputs, str):
        inputs = [inputs]
    if not inputs:
        raise InputError("no input given; pass one or more WARC files, HTML files or folders, or globs")
    out: list[str] = []
    wanted = ", ".join(_all_suffixes(fmt))
    for inp in inputs:
        found: list[str] = []
        if cfs.is_remote(inp):  # object storage or the web: WARC and table files (HTML folders: local only)
            found = _remote_units(inp, fmt)
            if not found:
                raise InputError(f"{inp}: no input files found (looked for {wanted}); check the URL")
            out.extend(found)
            continue
        magic = glob.has_magic(inp)
        paths = sorted(glob.glob(inp, recursive=True)) if magic else [inp]
        for p in paths:
            if os.path.isdir(p):
                others = []
                for root, dirs, files in os.walk(p):
                    dirs[:] = sorted(d for d in dirs if not d.startswith(("_", ".")))
                    for f in sorted(files):
                        full = os.path.join(root, f)
                        if _wanted(full, fmt) and _fmt_of(full) != "html" and not _hidden(os.path.relpath(full, p)):
                            others.append(full)
                found.extend(sorted(others))
                if fmt in ("auto", "html"):
                    n = len(html_files(p))
                    root = p.rstrip("/")
                    found.extend(f"{root}{UNIT_SEP}{k}" for k in range((n + HTML_FILES_PER_UNIT - 1)
                                                                        // HTML_FILES_PER_UNIT))
            elif os.path.exists(p):
                if not _wanted(p, fmt):
                    raise InputError(f"{inp}: not a file extract reads with --input-format {fmt}; "
                                     f"use one of {wanted}, a folder of .html files, or set --input-format")
                found.append(p)
                if roots is not None and _fmt_of(p) == "html":
                    roots[p] = _static_prefix(inp) if magic else os.path.dirname(p)
        if not found:
            raise InputError(f"{inp}: no input files found (looked for {wanted}); check the path or glob")
        out.extend(found)
    seen: set[str] = set()
    return [u for u in out if not (u in seen or seen.add(u))]  # type: ignore[func-returns-value]


def _remote_units(inp: str, fmt: str) -> list[str]:
    """The WARC/table files at a URL: the file itself, or those under an object-storage prefix."""
    if cfs.protocol(inp) not in ("http", "https") and cfs.isdir(inp):
        base = inp.rstrip("/")
        return [f for f in cfs.walk_files(inp)
                if _wanted(f, fmt) and _fmt_of(f) != "html" and not _hidden(f[len(base) + 1:])]
    if cfs.exists(inp):
        if not _wanted(inp.split("?", 1)[0], fmt):
            raise InputError(f"{inp}: not a file extract reads with --input-format {fmt}; use one of "
                             f"{', '.join(_all_suffixes(fmt))} (HTML folders must be local)")
        return [inp]
    return []


def split_unit(unit: str) -> tuple[str, int | None]:
    """``FOLDER#K`` → (FOLDER, K); a plain file → (path, None)."""
    head, sep, tail = unit.rpartition(UNIT_SEP)
    if sep and tail.isdigit() and os.path.isdir(head):
        return head, int(tail)
    return unit, None


# ----------------------------------------------------------------------------- rows
class _Rows:
    """Accumulates raw-page rows and hands out full RecordBatches."""

    def __init__(self, batch_rows: int) -> None:
        self.batch_rows = batch_rows
        self.cols: dict[str, list[Any]] = {f.name: [] for f in RAW_SCHEMA}

    def add(self, id_: str, url: str | None, html: bytes, *, warc_date: str | None = None,
            http_status: int | None = None, content_type: str | None = None, http_charset: str | None = None,
            html_bytes: int | None = None, read_error: str | None = None) -> None:
        c = self.cols
        c[schema.ID].append(id_)
        c[schema.URL].append(url)
        c[HTML].append(html)
        c["warc_date"].append(warc_date)
        c["http_status"].append(http_status)
        c["content_type"].append(content_type)
        c["http_charset"].append(http_charset)
        c["html_bytes"].append(len(html) if html_bytes is None else html_bytes)
        c["read_error"].append(read_error)

    def __len__(self) -> int:
        return len(self.cols[schema.ID])

    def full(self) -> bool:
        return len(self) >= self.batch_rows

    def take(self) -> pa.RecordBatch:
        batch = pa.record_batch([pa.array(self.cols[f.name], f.type) for f in RAW_SCHEMA], schema=RAW_SCHEMA)
        for v in self.cols.values():
            v.clear()
        return batch


def _limit(data: bytes, max_bytes: int) -> tuple[bytes, str | None]:
    """Pages over the size cap are not carried further (a 50 MB page is one removed row)."""
    if max_bytes and len(data) > max_bytes:
        return b"", "too_large"
    return data, None


# ----------------------------------------------------------------------------- WARC
def _open_warc(path: str) -> Any:
    from fastwarc.warc import ArchiveIterator

    # quirks_mode: real crawls (ClueWeb, old Heritrix) have LF-only HTTP headers and other
    # deviations; strict parsing would drop their records' HTTP metadata.
    if cfs.is_remote(path):  # fastwarc reads (and detects the compression of) a file object as well
        return ArchiveIterator(cfs.open_file(path, "rb"), parse_http=False, quirks_mode=True)
    return ArchiveIterator(path, parse_http=False, quirks_mode=True)


def _mime(ct: str | None) -> str:
    return (ct or "").split(";", 1)[0].strip().lower()


def _looks_html(data: bytes) -> bool:
    head = data[:1024].lstrip().lower()
    return head.startswith((b"<!doctype html", b"<html", b"<head", b"<body", b"<?xml", b"<!--", b"<meta",
                            b"<title", b"<div", b"<p", b"<script", b"<link"))


def _declared_length(rec: Any) -> int | None:
    """The record's WARC Content-Length header (what a complete block holds)."""
    try:
        return int(rec.headers.get("Content-Length"))
    except (TypeError, ValueError):
        return None


def iter_warc(path: str, batch_rows: int, counters: Counter, max_bytes: int = 0) -> Iterator[pa.RecordBatch]:
    """Raw-page batches of one WARC file's HTML responses; other records only counted.

    Counters: ``warc_records.<type>`` for every record, ``warc_records.response_not_html``
    for responses that are not HTML. A cut-off record raises ShardError after the complete
    records before it have been yielded.
    """
    from fastwarc.warc import WarcRecordType

    rows = _Rows(batch_rows)
    n = 0
    headless: tuple[int, str] | None = None  # a record without Content-Length: cut in its headers?
    try:
        for rec in _open_warc(path):
            n += 1
            if headless is not None:  # something followed it: it was only malformed
                counters["warc_records.malformed"] += 1
                headless = None
            rtype = str(rec.record_type).rsplit(".", 1)[-1]
            declared = _declared_length(rec)
            if declared is None:
                headless = (n, f" ({rec.record_id})" if rec.record_id else "")
                continue
            counters[f"warc_records.{rtype}"] += 1
            if rec.record_type != WarcRecordType.response:
                continue
            block = rec.reader.read()
            if declared is not None and len(block) < declared:
                if len(rows):
                    yield rows.take()
                rid = rec.record_id or "?"
                raise ShardError(f"{path}: the file is cut off in WARC record {n} ({rid}: {len(block):,} of "
                                 f"{declared:,} bytes); {n - 1} complete record(s) before it were read. "
                                 "Re-download the file, or pass --skip-bad-files to keep what was read", path)
            url = rec.headers.get("WARC-Target-URI")
            rid = rec.record_id or f"{os.path.basename(path)}:{n}"
            date = rec.headers.get("WARC-Date")
            wct = _mime(rec.headers.get("Content-Type"))
            if wct and not wct.startswith("application/http"):
                counters["warc_records.response_not_http"] += 1
                continue
            rec.set_bytes_content(block)
            try:
                rec.parse_http(quirks_mode=True)
            except (ValueError, OSError):  # fastwarc reports malformed HTTP headers this way
                counters["warc_records.response_bad_http"] += 1
                continue
            status = rec.http_headers.status_code if rec.http_headers is not None else None
            hdrs = rec.http_headers
            ctype = (hdrs.get("Content-Type") if hdrs is not None else None) or rec.http_content_type
            payload = rec.reader.read()
            mime = _mime(ctype)
            if mime and mime not in HTML_TYPES:
                counters["warc_records.response_not_html"] += 1
                continue
            if not mime and not _looks_html(payload):
                counters["warc_records.response_not_html"] += 1
                continue
            size = len(payload)
            payload, err = _limit(payload, max_bytes)
            rows.add(rid, url, payload, warc_date=date, http_status=status, content_type=ctype,
                     http_charset=rec.http_charset, html_bytes=size, read_error=err)
            if rows.full():
                yield rows.take()
    except (OSError, ValueError) as exc:
        if len(rows):
            yield rows.take()
        raise ShardError(f"{path}: the WARC stream is corrupt after record {n} ({exc}); re-create the "
                         "file or pass --skip-bad-files to keep the records before it", path) from exc
    if len(rows):
        yield rows.take()
    if headless is not None:
        raise ShardError(f"{path}: the file is cut off in the headers of WARC record {headless[0]}"
                         f"{headless[1]}; {headless[0] - 1} complete record(s) before it were read. "
                         "Re-download the file, or pass --skip-bad-files to keep what was read", path)


def check_warc(path: str) -> None:
    """Preflight: the file opens and its first record parses (ShardError otherwise)."""
    if not cfs.is_remote(path) and os.path.getsize(path) == 0:
        raise ShardError(f"{path}: the file is empty (0 bytes); remove it or pass --skip-bad-files", path)
    try:
        first = next(iter(_open_warc(path)), None)
    except (OSError, ValueError) as exc:
        raise ShardError(f"{path}: not a readable WARC file ({exc}); check the file or pass --skip-bad-files",
                         path) from exc
    if first is None:
        raise ShardError(f"{path}: no WARC record found (not a WARC file, or its compression is not gzip, "
                         "LZ4 or zstd); check the file or pass --skip-bad-files", path)


# ----------------------------------------------------------------------------- HTML files
def iter_html_unit(unit: str, batch_rows: int, max_bytes: int = 0,
                   root: str | None = None) -> Iterator[pa.RecordBatch]:
    """Raw-page batches of one HTML file or one ``FOLDER#K`` chunk of a folder."""
    path, k = split_unit(unit)
    if k is None:
        files, base = [path], root or os.path.dirname(path)
    else:
        files, base = html_files(path)[k * HTML_FILES_PER_UNIT:(k + 1) * HTML_FILES_PER_UNIT], path
    rows = _Rows(batch_rows)
    for f in files:
        rel = os.path.relpath(f, base)
        id_ = os.path.splitext(rel)[0].replace(os.sep, "/")
        try:
            size = os.path.getsize(f)
            if max_bytes and size > max_bytes:
                rows.add(id_, None, b"", html_bytes=size, read_error="too_large")
            else:
                with open(f, "rb") as fh:
                    rows.add(id_, None, fh.read())
        except OSError as exc:
            raise ShardError(f"{f}: cannot read the file ({exc.strerror}); check permissions or pass "
                             "--skip-bad-files", f) from exc
        if rows.full():
            yield rows.take()
    if len(rows):
        yield rows.take()


# ----------------------------------------------------------------------------- tables
def _table_batches(path: str, batch_rows: int) -> Iterator[pa.RecordBatch]:
    if path.endswith(".parquet"):
        try:
            pf = pq.ParquetFile(cfs.open_file(path, "rb") if cfs.is_remote(path) else path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ShardError(f"{path}: not a readable Parquet file ({exc}); re-create it or pass "
                             "--skip-bad-files", path) from exc
        try:
            yield from pf.iter_batches(batch_size=batch_rows)
        except (pa.ArrowInvalid, OSError) as exc:
            raise ShardError(f"{path}: Parquet data is corrupt ({exc}); re-create the file or pass "
                             "--skip-bad-files", path) from exc
        return
    import pyarrow.json as pajson

    from corpus.shards import _decompress, _open

    # streamed in 16 MB blocks (a block must hold the longest line: a page of HTML), so a
    # multi-GB JSONL dump never sits in memory at once
    with _open(path) as raw:
        try:
            reader = pajson.open_json(_decompress(path, raw),
                                      read_options=pajson.ReadOptions(block_size=JSONL_BLOCK_BYTES))
            for batch in reader:
                yield from pa.Table.from_batches([batch]).to_batches(max_chunksize=batch_rows)
        except (pa.ArrowInvalid, OSError, EOFError) as exc:
            raise ShardError(f"{path}: invalid JSON lines ({exc}); fix the file or pass --skip-bad-files",
                             path) from exc


def check_table(path: str, html_column: str) -> None:
    """Preflight: the file reads and has the HTML column (InputError naming the columns found)."""
    for batch in _table_batches(path, 16):
        if html_column not in batch.schema.names:
            found = ", ".join(batch.schema.names) or "(none)"
            raise ShardError(f"{path}: no HTML column '{html_column}'; columns found: {found}. Pass "
                             "--html-column NAME", path)
        return


def iter_table(path: str, batch_rows: int, html_column: str = "html", url_column: str = "url",
               max_bytes: int = 0) -> Iterator[pa.RecordBatch]:
    """Raw-page batches of a Parquet/JSONL file with an HTML column (and optional id, url)."""
    row = 0
    stem = os.path.basename(path).split(".", 1)[0]
    for batch in _table_batches(path, batch_rows):
        names = batch.schema.names
        if html_column not in names:
            raise ShardError(f"{path}: no HTML column '{html_column}'; columns found: {', '.join(names)}. Pass "
                             "--html-column NAME", path)
        col = batch.column(html_column)
        vals = col.to_pylist()
        ids = batch.column(schema.ID).cast(pa.string()).to_pylist() if schema.ID in names else \
            [f"{stem}:{row + i}" for i in range(batch.num_rows)]
        urls = batch.column(url_column).cast(pa.string()).to_pylist() if url_column in names else \
            [None] * batch.num_rows
        rows = _Rows(batch_rows)
        for i, v in enumerate(vals):
            rid = ids[i] if ids[i] is not None else f"{stem}:{row + i}"
            data = v.encode("utf-8") if isinstance(v, str) else (v or b"")
            size = len(data)
            data, err = _limit(data, max_bytes)
            # a str column was already decoded: say so, so the stage does not guess again
            rows.add(rid, urls[i], data, http_charset="utf-8" if isinstance(v, str) else None, html_bytes=size,
                     read_error=err)
        row += batch.num_rows
        if len(rows):
            yield rows.take()


# ----------------------------------------------------------------------------- dispatch
def iter_unit(unit: str, batch_rows: int, counters: Counter, *, html_column: str = "html", url_column: str = "url",
              max_bytes: int = 0, root: str | None = None) -> Iterator[pa.RecordBatch]:
    """Raw-page batches of any unit from :func:`list_units`."""
    path, k = split_unit(unit)
    kind = "html" if k is not None else _fmt_of(path)
    if kind == "warc":
        return iter_warc(path, batch_rows, counters, max_bytes)
    if kind == "html":
        return iter_html_unit(unit, batch_rows, max_bytes, root)
    return iter_table(path, batch_rows, html_column, url_column, max_bytes)


def check_unit(unit: str, html_column: str = "html") -> None:
    path, k = split_unit(unit)
    if k is not None:
        return
    kind = _fmt_of(path)
    if kind == "warc":
        check_warc(path)
    elif kind == "parquet":
        check_table(path, html_column)
    elif not os.path.isfile(path):
        raise ShardError(f"{path}: the file does not exist any more", path)


def preflight_units(units: Sequence[str], html_column: str = "html") -> list[tuple[str, MathcorpusError]]:
    problems: list[tuple[str, MathcorpusError]] = []
    for u in units:
        try:
            check_unit(u, html_column)
        except InputError as exc:
            problems.append((u, exc))
    return problems
