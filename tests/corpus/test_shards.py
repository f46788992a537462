"""Shard I/O: round trips in every format, atomic writes, and every bad-input message."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.errors import InputError, ShardError
from corpus.shards import ShardWriter, iter_batches, list_input_files, read_table
from tests.conftest import write_jsonl


@pytest.mark.parametrize("fmt", ["jsonl", "jsonl.gz", "jsonl.zst", "parquet"])
def test_round_trip_every_format(tmp_path: Path, tiny_docs: list[dict], fmt: str) -> None:
    path = tmp_path / f"in.{fmt}"
    if fmt == "parquet":
        pq.write_table(pa.Table.from_pylist(tiny_docs), path)
    else:
        write_jsonl(path, tiny_docs, {"jsonl": None, "jsonl.gz": "gz", "jsonl.zst": "zst"}[fmt])
    table = read_table([str(path)])
    assert table.column("id").to_pylist() == [d["id"] for d in tiny_docs]
    assert table.column("text").to_pylist() == [d["text"] for d in tiny_docs]
    assert table.column("url").to_pylist() == [d["url"] for d in tiny_docs]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60), min_size=1, max_size=20))
def test_odd_unicode_survives_jsonl_and_parquet(tmp_path_factory: pytest.TempPathFactory, texts: list[str]) -> None:
    d = tmp_path_factory.mktemp("uni")
    rows = [{"id": str(i), "text": t} for i, t in enumerate(texts)]
    write_jsonl(d / "a.jsonl", rows)
    back = read_table([str(d / "a.jsonl")])
    assert back.column("text").to_pylist() == texts
    with ShardWriter(str(d / "out"), "t") as w:
        w.write(back)
    again = read_table([str(d / "out")])
    assert again.column("text").to_pylist() == texts


def test_writer_rolls_over_with_deterministic_names(tmp_path: Path) -> None:
    t = pa.table({"id": [str(i) for i in range(25)], "text": ["x"] * 25})
    w = ShardWriter(str(tmp_path), "stage", rank=3, max_rows=10, row_group_rows=4)
    w.write(t)
    files = [Path(f).name for f in w.close()]
    assert files == ["stage-00003-00000.parquet", "stage-00003-00001.parquet", "stage-00003-00002.parquet"]
    assert pq.ParquetFile(tmp_path / files[0]).metadata.num_row_groups == 3
    assert pq.ParquetFile(tmp_path / files[0]).metadata.row_group(0).column(0).compression == "ZSTD"


def test_readers_ignore_tmp_and_side_folders(tmp_path: Path, tiny_docs: list[dict]) -> None:
    write_jsonl(tmp_path / "a.jsonl", tiny_docs)
    write_jsonl(tmp_path / "b.jsonl.tmp", tiny_docs)
    write_jsonl(tmp_path / "_removed" / "c.jsonl", tiny_docs)
    write_jsonl(tmp_path / ".hidden" / "d.jsonl", tiny_docs)
    assert [Path(p).name for p in list_input_files([str(tmp_path)])] == ["a.jsonl"]


def test_aborted_writer_leaves_no_shard(tmp_path: Path) -> None:
    w = ShardWriter(str(tmp_path), "s")
    w.write(pa.table({"id": ["1"], "text": ["a"]}))
    w.abort()
    assert list(tmp_path.iterdir()) == []


# -- bad input: each message names the file and the fix ------------------------------------
def test_missing_text_column_lists_columns(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "body": "x"}])
    with pytest.raises(InputError) as e:
        list(iter_batches(str(p)))
    assert str(e.value) == (f"{p}: missing required column(s) 'text'; columns found: id, body. Rename your "
                            "columns to 'id' and 'text' (e.g. with polars' rename) or add them.")


def test_missing_id_column_parquet(tmp_path: Path) -> None:
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"text": ["a"], "src": ["web"]}), p)
    with pytest.raises(InputError, match=r"missing required column\(s\) 'id'; columns found: text, src"):
        list(iter_batches(str(p)))


def test_truncated_parquet(tmp_path: Path) -> None:
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["1"] * 1000, "text": ["hello"] * 1000}), p)
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(ShardError) as e:
        list(iter_batches(str(p)))
    assert str(e.value).startswith(f"{p}: not a readable Parquet file (")
    assert str(e.value).endswith("the file is corrupt or truncated. Re-create it or pass --skip-bad-files")


def test_invalid_json_names_line(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": "1", "text": "ok"}\n{"id": "2", "text": "ok"}\n{"id": "3", "text": oops}\n')
    with pytest.raises(ShardError) as e:
        list(iter_batches(str(p)))
    assert str(e.value) == (f"{p}: invalid JSON on line 3: Expecting value (column 21); fix or remove that "
                            "line, or pass --skip-bad-files")


def test_invalid_utf8_names_line(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_bytes(b'{"id": "1", "text": "ok"}\n{"id": "2", "text": "caf\xe9"}\n')
    with pytest.raises(ShardError) as e:
        list(iter_batches(str(p)))
    assert str(e.value) == (f"{p}: invalid UTF-8 on line 2 (byte 24); re-encode the file as UTF-8 "
                            "(e.g. iconv -f latin1 -t utf-8) or pass --skip-bad-files")


def test_null_text(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "a.jsonl", [{"id": "1", "text": "a"}, {"id": "2", "text": None}])
    with pytest.raises(InputError) as e:
        list(iter_batches(str(p)))
    assert str(e.value) == (f"{p}: field 'text' is null in row 1 of a batch; every document needs a string "
                            "text. Drop or fill empty documents before this stage.")


def test_non_string_text(tmp_path: Path) -> None:
    p = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": ["1"], "text": [3]}), p)
    with pytest.raises(InputError) as e:
        list(iter_batches(str(p)))
    assert str(e.value) == (f"{p}: field 'text' has type int64, expected string. Convert it to a string "
                            "column before this stage.")


def test_mixed_type_text_in_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text('{"id": "1", "text": "a"}\n{"id": "2", "text": 5}\n')
    with pytest.raises(InputError, match=r"field 'text' is int on line 2, expected a string"):
        list(iter_batches(str(p)))


def test_empty_glob(tmp_path: Path) -> None:
    pattern = str(tmp_path / "*.parquet")
    with pytest.raises(InputError) as e:
        list_input_files([pattern])
    assert str(e.value) == (f"{pattern}: no input files found (looked for .parquet, .jsonl, .jsonl.gz, "
                            ".jsonl.zst, .json.gz, .ndjson); check the path or glob")


def test_truncated_gzip(tmp_path: Path, tiny_docs: list[dict]) -> None:
    p = write_jsonl(tmp_path / "a.jsonl.gz", tiny_docs * 50, "gz")
    p.write_bytes(p.read_bytes()[:-30])
    with pytest.raises(ShardError, match=r"the compressed stream is corrupt or truncated"):
        list(iter_batches(str(p)))


def test_integer_ids_become_strings(tmp_path: Path) -> None:
    p = write_jsonl(tmp_path / "a.jsonl", [{"id": 7, "text": "a"}])
    (b,) = list(iter_batches(str(p)))
    assert b.column("id").to_pylist() == ["7"]


def test_mixed_integer_and_string_ids_become_strings(tmp_path: Path) -> None:
    # merged dumps: pyarrow alone refuses a column that changes type between lines
    p = tmp_path / "a.jsonl"
    p.write_text('{"id":1,"text":"a","url":"https://x.org/1"}\n{"id":"2","text":"é"}\n{"id":30,"text":"c"}\n'
                 '{"id":"b","text":"d"}\n', encoding="utf-8")
    t = read_table([str(p)])
    assert t.column("id").to_pylist() == ["1", "2", "30", "b"]
    assert t.column("text").to_pylist() == ["a", "é", "c", "d"]
    assert t.column("url").to_pylist() == ["https://x.org/1", None, None, None]


def test_mixed_ids_across_blocks_and_gzip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import corpus.shards as shards

    monkeypatch.setattr(shards, "JSONL_BLOCK_BYTES", 200)
    rows = [{"id": i if i % 3 else f"s{i}", "text": f"doc {i}"} for i in range(200)]
    p = write_jsonl(tmp_path / "a.jsonl.gz", rows, "gz")
    assert read_table([str(p)]).column("id").to_pylist() == [str(r["id"]) for r in rows]


def test_ids_of_uncastable_mixed_types_name_field_and_types(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text('{"id":"a","text":"x"}\n{"id":2.5,"text":"y"}\n')
    with pytest.raises(ShardError) as e:
        list(iter_batches(str(p)))
    assert str(e.value) == (f"{p}: field 'id' is a string on line 1 but a number on line 2; ids must be strings or "
                            "integers: convert them to strings")


def test_other_field_with_two_types_is_named(tmp_path: Path) -> None:
    p = tmp_path / "a.jsonl"
    p.write_text('{"id":"a","text":"x","source":"web"}\n{"id":"b","text":"y"}\n{"id":"c","text":"z","source":3}\n')
    with pytest.raises(ShardError) as e:
        list(iter_batches(str(p)))
    assert str(e.value) == (f"{p}: field 'source' is a string on line 1 but a number on line 3; give it one type on "
                            "every line")


def test_large_jsonl_streams_in_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import corpus.shards as shards

    monkeypatch.setattr(shards, "JSONL_BLOCK_BYTES", 1000)
    rows = [{"id": str(i), "text": "word " * (i % 37)} for i in range(500)]
    p = write_jsonl(tmp_path / "a.jsonl.gz", rows, "gz")
    batches = list(iter_batches(str(p)))
    assert len(batches) > 10
    assert [x for b in batches for x in b.column("id").to_pylist()] == [r["id"] for r in rows]


def test_gzip_written_by_gzip_module_is_read(tmp_path: Path) -> None:
    p = tmp_path / "x.jsonl.gz"
    with gzip.open(p, "wt", encoding="utf-8") as fh:
        fh.write(json.dumps({"id": "a", "text": "é"}) + "\n")
    assert read_table([str(p)]).column("text").to_pylist() == ["é"]
