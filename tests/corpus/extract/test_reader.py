"""Extraction inputs: real WARC files (gzip, plain, LZ4, zstd, cut off), HTML folders and globs, tables."""

from __future__ import annotations

import gzip
import os
import re
from collections import Counter
from pathlib import Path

import lz4.frame
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from corpus.errors import InputError, ShardError
from corpus.extract import reader
from corpus.extract.reader import iter_unit, iter_warc, list_units, preflight_units, split_unit
from tests.conftest import write_jsonl


def _rows(batches: list[pa.RecordBatch]) -> list[dict]:
    return [r for b in batches for r in b.to_pylist()]


@pytest.fixture(scope="module")
def warc(shared_data: Path) -> Path:
    return shared_data / "web" / "warc"


def test_real_warc_yields_html_responses_and_counts_other_records(warc: Path) -> None:
    c: Counter = Counter()
    rows = _rows(list(iter_warc(str(warc / "warcfile.warc.gz"), 5, c)))
    assert len(rows) == 16
    assert c == Counter({"warc_records.request": 17, "warc_records.response": 16, "warc_records.metadata": 16,
                         "warc_records.warcinfo": 1})
    first = rows[0]
    assert first["id"] == "<urn:uuid:c4c112a5-3503-4483-abf8-51a0dd86dd53>"
    assert first["url"] == "http://003338.cn/l41/481397.html"
    assert first["warc_date"] == "2020-08-08T17:27:41Z"
    assert first["http_status"] == 200 and first["content_type"].startswith("text/html")
    assert first["html"].startswith(b"<html>") and first["html_bytes"] == len(first["html"])
    assert len({r["id"] for r in rows}) == 16


def test_clueweb_quirks_parse_http_headers(warc: Path) -> None:
    c: Counter = Counter()
    rows = _rows(list(iter_warc(str(warc / "clueweb-quirk.warc.gz"), 100, c)))
    assert len(rows) == 29 and c["warc_records.response"] == 29
    # LF-only HTTP headers (quirks mode): status, content type and charset are still read
    assert rows[0]["http_status"] == 200 and rows[0]["content_type"] == "text/html; charset=EUC-JP"
    assert rows[0]["http_charset"].lower() == "euc-jp"


@pytest.mark.parametrize("kind", ["plain", "lz4", "zstd"])
def test_other_compressions_read_the_same_records(warc: Path, tmp_path: Path, kind: str) -> None:
    raw = gzip.decompress((warc / "warcfile.warc.gz").read_bytes())
    path = tmp_path / {"plain": "w.warc", "lz4": "w.warc.lz4", "zstd": "w.warc.zst"}[kind]
    path.write_bytes({"plain": raw, "lz4": lz4.frame.compress(raw) if kind == "lz4" else b"",
                      "zstd": zstandard.ZstdCompressor().compress(raw) if kind == "zstd" else b""}[kind])
    want = _rows(list(iter_warc(str(warc / "warcfile.warc.gz"), 100, Counter())))
    got = _rows(list(iter_warc(str(path), 100, Counter())))
    assert [r["id"] for r in got] == [r["id"] for r in want]
    assert [r["html"] for r in got] == [r["html"] for r in want]


def test_clipped_warc_names_the_file_and_the_cut(warc: Path) -> None:
    path = str(warc / "clipped.warc.gz")
    with pytest.raises(ShardError) as e:
        list(iter_warc(path, 100, Counter()))
    assert str(e.value) == (
        f"{path}: the file is cut off in WARC record 1 (<urn:uuid:f3dfa8fa-f031-4a38-90cc-1dcee3d07bb5>: "
        "75,207 of 88,275 bytes); 0 complete record(s) before it were read. Re-download the file, or pass "
        "--skip-bad-files to keep what was read")


def test_cut_after_complete_records_keeps_every_one_of_them(warc: Path, tmp_path: Path) -> None:
    raw = gzip.decompress((warc / "warcfile.warc.gz").read_bytes())
    # cut in the middle of the 10th HTML response's payload
    starts = [m.start() for m in re.finditer(b"WARC-Type: response", raw)]
    cut = starts[9] + 3000
    path = tmp_path / "cut.warc"
    path.write_bytes(raw[:cut])
    got: list[dict] = []
    with pytest.raises(ShardError, match=r"cut\.warc: the file is cut off in WARC record 30 "):
        for b in iter_warc(str(path), 4, Counter()):
            got.extend(b.to_pylist())
    want = _rows(list(iter_warc(str(warc / "warcfile.warc.gz"), 100, Counter())))[:9]
    assert [r["id"] for r in got] == [r["id"] for r in want]


def test_cut_inside_record_headers_is_reported_too(warc: Path, tmp_path: Path) -> None:
    raw = gzip.decompress((warc / "warcfile.warc.gz").read_bytes())
    starts = [m.start() for m in re.finditer(b"WARC-Type: response", raw)]
    path = tmp_path / "cuthdr.warc"
    path.write_bytes(raw[: starts[9] + 40])  # in the middle of the 10th response's WARC headers
    got: list[dict] = []
    with pytest.raises(ShardError) as e:
        for b in iter_warc(str(path), 4, Counter()):
            got.extend(b.to_pylist())
    assert str(e.value) == (f"{path}: the file is cut off in the headers of WARC record 30; 29 complete record(s) "
                            "before it were read. Re-download the file, or pass --skip-bad-files to keep what was read")
    assert len(got) == 9


def test_preflight_rejects_non_warc_and_empty_files(tmp_path: Path) -> None:
    bad = tmp_path / "x.warc.gz"
    bad.write_bytes(gzip.compress(b"this is not a WARC file\n" * 10))
    empty = tmp_path / "e.warc"
    empty.write_bytes(b"")
    probs = dict(preflight_units([str(bad), str(empty)]))
    assert str(probs[str(empty)]) == f"{empty}: the file is empty (0 bytes); remove it or pass --skip-bad-files"
    assert str(probs[str(bad)]) == (f"{bad}: no WARC record found (not a WARC file, or its compression is not "
                                    "gzip, LZ4 or zstd); check the file or pass --skip-bad-files")


def _site(tmp_path: Path, n: int = 5) -> Path:
    root = tmp_path / "site"
    for i in range(n):
        p = root / ("deep" if i % 2 else "") / f"p{i}.html"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(f"<html><body><p>page {i}</p></body></html>")
    (root / "_private").mkdir()
    (root / "_private" / "x.html").write_text("<p>hidden</p>")
    (root / "notes.txt").write_text("not html")
    return root


def test_html_folder_is_split_into_units_with_relative_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _site(tmp_path)
    monkeypatch.setattr(reader, "HTML_FILES_PER_UNIT", 2)
    units = list_units([str(root)])
    assert units == [f"{root}#0", f"{root}#1", f"{root}#2"]
    assert split_unit(units[1]) == (str(root), 1)
    ids = [r["id"] for u in units for r in _rows(list(iter_unit(u, 10, Counter())))]
    assert ids == ["deep/p1", "deep/p3", "p0", "p2", "p4"]


def test_glob_ids_are_relative_to_the_glob_folder(tmp_path: Path) -> None:
    root = _site(tmp_path)
    roots: dict[str, str] = {}
    units = list_units([f"{root}/**/*.html"], roots=roots)
    ids = sorted(r["id"] for u in units for r in _rows(list(iter_unit(u, 10, Counter(), root=roots[u]))))
    # a glob is taken literally: what it matches is read, _-prefixed folders included
    assert ids == ["_private/x", "deep/p1", "deep/p3", "p0", "p2", "p4"]
    single = list_units([str(root / "deep" / "p1.html")], roots=roots)
    assert [r["id"] for r in _rows(list(iter_unit(single[0], 10, Counter(), root=roots[single[0]])))] == ["p1"]


def test_listing_errors_name_the_input(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError) as e:
        list_units([str(tmp_path / "nope")])
    assert str(e.value).startswith(f"{tmp_path / 'nope'}: no input files found (looked for .warc, .warc.gz, ")
    with pytest.raises(InputError) as e:
        list_units([str(tmp_path / "notes.txt")])
    assert str(e.value) == (f"{tmp_path / 'notes.txt'}: not a file extract reads with --input-format auto; use one "
                            "of .warc, .warc.gz, .warc.lz4, .warc.zst, .arc.gz, .html, .htm, .xhtml, .parquet, "
                            ".jsonl, .jsonl.gz, .jsonl.zst, .json.gz, .ndjson, a folder of .html files, or set "
                            "--input-format")


def test_parquet_and_jsonl_html_columns(tmp_path: Path) -> None:
    pq.write_table(pa.table({"raw": ["<p>a</p>", "<p>b</p>"], "link": ["https://a.org/1", None]}),
                   tmp_path / "t.parquet")
    rows = _rows(list(iter_unit(str(tmp_path / "t.parquet"), 10, Counter(), html_column="raw", url_column="link")))
    assert [(r["id"], r["url"], r["html"], r["http_charset"]) for r in rows] == [
        ("t:0", "https://a.org/1", b"<p>a</p>", "utf-8"), ("t:1", None, b"<p>b</p>", "utf-8")]
    write_jsonl(tmp_path / "j.jsonl.gz", [{"id": 7, "html": "<p>x</p>"}], compress="gz")
    rows = _rows(list(iter_unit(str(tmp_path / "j.jsonl.gz"), 10, Counter())))
    assert [(r["id"], r["html"]) for r in rows] == [("7", b"<p>x</p>")]
    probs = preflight_units([str(tmp_path / "t.parquet")], html_column="html")
    assert str(probs[0][1]) == (f"{tmp_path / 't.parquet'}: no HTML column 'html'; columns found: raw, link. "
                                "Pass --html-column NAME")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"html": "<p>x</p>"}\n{not json\n')
    probs = preflight_units([str(bad)])
    assert str(probs[0][1]) == (f"{bad}: invalid JSON lines (JSON parse error: Missing a name for object member. "
                                "in row 1); fix the file or pass --skip-bad-files")


def test_oversized_pages_are_not_carried(tmp_path: Path) -> None:
    root = tmp_path / "big"
    root.mkdir()
    (root / "huge.html").write_bytes(b"<html><body>" + b"<p>x</p>" * (3 << 17) + b"</body></html>")
    (root / "ok.html").write_bytes(b"<p>fine</p>")
    rows = _rows(list(iter_unit(f"{root}#0", 10, Counter(), max_bytes=1 << 20)))
    assert [(r["id"], r["html"], r["read_error"]) for r in rows] == [
        ("huge", b"", "too_large"), ("ok", b"<p>fine</p>", None)]
    assert rows[0]["html_bytes"] == os.path.getsize(root / "huge.html")
