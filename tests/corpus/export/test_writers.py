"""Writers and readers of every token format, checked against the published layouts."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from corpus.errors import ConfigError, InputError
from corpus.export.writers import (
    DatatroveReader,
    DatatroveWriter,
    MegatronReader,
    MegatronWriter,
    NumpyReader,
    NumpyWriter,
    ParquetTokenReader,
    ParquetTokenWriter,
    choose_dtype,
    read_megatron_index,
)

DOCS = [[5, 6, 7, 0], [8, 0], [9, 10, 11, 12, 13, 0]]


def _flat(docs: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    return np.array([t for d in docs for t in d], dtype=np.uint32), np.array([len(d) for d in docs], dtype=np.int64)


@pytest.mark.parametrize("dtype,code", [("int32", 4), ("uint16", 8)])
def test_megatron_idx_matches_the_published_layout_parsed_by_hand(tmp_path: Path, dtype: str, code: int) -> None:
    w = MegatronWriter(str(tmp_path / "tok"), dtype)
    tokens, lens = _flat(DOCS)
    w.add_documents(tokens[:4], lens[:1])
    w.add_documents(tokens[4:], lens[1:])
    info = w.close()
    assert info["files"] == ["tok.bin", "tok.idx"] and info["documents"] == 3
    raw = (tmp_path / "tok.idx").read_bytes()
    # header: magic, version <Q, dtype code <B, sequence count <Q, document count <Q
    assert raw[:9] == b"MMIDIDX\x00\x00"
    assert struct.unpack("<Q", raw[9:17]) == (1,)
    assert struct.unpack("<B", raw[17:18]) == (code,)
    n_seq, n_doc = struct.unpack("<QQ", raw[18:34])
    assert (n_seq, n_doc) == (3, 4)
    off = 34
    lengths = struct.unpack(f"<{n_seq}i", raw[off:off + 4 * n_seq])
    off += 4 * n_seq
    pointers = struct.unpack(f"<{n_seq}q", raw[off:off + 8 * n_seq])
    off += 8 * n_seq
    doc_idx = struct.unpack(f"<{n_doc}q", raw[off:off + 8 * n_doc])
    off += 8 * n_doc
    assert off == len(raw)  # nothing else (no multimodal sequence modes)
    size = np.dtype(dtype).itemsize
    assert lengths == (4, 2, 6)
    assert pointers == (0, 4 * size, 6 * size)
    assert doc_idx == (0, 1, 2, 3)
    bin_ = (tmp_path / "tok.bin").read_bytes()
    assert len(bin_) == 12 * size
    assert list(struct.unpack(f"<12{'i' if dtype == 'int32' else 'H'}", bin_)) == tokens.tolist()
    r = MegatronReader(str(tmp_path / "tok"))
    assert [d.tolist() for d in r.documents()] == DOCS and r[2].tolist() == DOCS[2]


def test_megatron_reader_rejects_truncated_or_foreign_files(tmp_path: Path) -> None:
    w = MegatronWriter(str(tmp_path / "tok"), "int32")
    w.add_documents(*_flat(DOCS))
    w.close()
    raw = (tmp_path / "tok.idx").read_bytes()
    (tmp_path / "cut.idx").write_bytes(raw[:-8])
    with pytest.raises(InputError) as exc:
        read_megatron_index(str(tmp_path / "cut.idx"))
    assert str(exc.value) == (f"{tmp_path / 'cut.idx'}: index is {len(raw) - 8} bytes but its header announces "
                              f"{len(raw)} (3 sequences, 4 document indices); the file is truncated or corrupt")
    (tmp_path / "x.idx").write_bytes(b"TNTIDX\x00\x00" + raw[8:])
    with pytest.raises(InputError, match="not a Megatron MMIDIDX index"):
        read_megatron_index(str(tmp_path / "x.idx"))
    (tmp_path / "tok.bin").write_bytes((tmp_path / "tok.bin").read_bytes()[:-4])
    with pytest.raises(InputError, match=r"tok.bin: 44 bytes but the index points to 48"):
        MegatronReader(str(tmp_path / "tok"))


def test_nanotron_files_are_byte_identical_to_datatrove_tokenized_file(tmp_path: Path) -> None:
    from datatrove.pipeline.tokens.tokenizer import TokenizedFile

    ref = TokenizedFile(str(tmp_path / "dt"), "x.ds", save_final_metadata=True, token_size=4,
                        tokenizer_name_or_path="qwen2.5")
    for d in DOCS:
        ref.write(d, None)
    ref.close()
    w = DatatroveWriter(str(tmp_path / "x.ds"), "uint32", "qwen2.5")
    tokens, lens = _flat(DOCS)
    w.add_documents(tokens[:6], lens[:2])
    w.add_documents(tokens[6:], lens[2:])
    assert w.close()["files"] == ["x.ds", "x.ds.index", "x.ds.metadata"]
    for suffix in ("", ".index", ".metadata"):
        assert (tmp_path / f"x.ds{suffix}").read_bytes() == (tmp_path / "dt" / f"x.ds{suffix}").read_bytes()
    r = DatatroveReader(str(tmp_path / "x.ds"))
    assert r.dtype == np.dtype("<u4") and [d.tolist() for d in r.documents()] == DOCS


def test_datatrove_folder_dataset_reads_our_shards(tmp_path: Path) -> None:
    from datatrove.utils.dataset import DatatroveFolderDataset

    rng = np.random.default_rng(0)
    docs = [list(rng.integers(1, 60000, rng.integers(2, 40))) + [0] for _ in range(50)]
    tokens, lens = _flat(docs)
    w = DatatroveWriter(str(tmp_path / "a.ds"), "uint16", "tiny")
    w.add_documents(tokens, lens)
    w.close()
    ds = DatatroveFolderDataset(str(tmp_path), seq_len=15, filename_pattern="*.ds", token_size=2,
                                return_positions=True)
    assert len(ds) == tokens.size // 16
    ends = np.cumsum(lens)
    for i in range(len(ds)):
        item = ds[i]
        w0 = i * 16
        assert item["input_ids"].tolist() == tokens[w0:w0 + 16].tolist()
        # positions restart at the window start and after every document end in .ds.index
        restarts = [0] + [int(e) - w0 for e in ends if w0 < e <= w0 + 15]
        expect = [k - max(r for r in restarts if r <= k) for k in range(16)]
        assert item["positions"].tolist() == expect


def test_numpy_flat_and_packed_with_sidecar(tmp_path: Path) -> None:
    tokens, lens = _flat(DOCS)
    w = NumpyWriter(str(tmp_path / "flat"), "uint16", {"seq_len": 4, "packed": False, "vocab_size": 100})
    w.add_documents(tokens, lens)
    w.close()
    side = json.loads((tmp_path / "flat.json").read_text())
    assert side["dtype"] == "uint16" and side["byteorder"] == "little" and side["tokens"] == 12
    mm = np.memmap(tmp_path / "flat.bin", dtype=side["dtype"], mode="r")  # nanoGPT reads it like this
    assert mm.tolist() == tokens.tolist()
    assert np.load(tmp_path / "flat.docs.npy").tolist() == [[0, 4], [4, 6], [6, 12]]
    rows = np.array([[5, 6, 7, 0], [8, 0, 99, 99]], dtype=np.uint32)
    p = NumpyWriter(str(tmp_path / "packed"), "uint32", {"seq_len": 4, "packed": True, "vocab_size": 100})
    p.add_rows(rows, np.array([0, 4]), np.array([4, 2]))
    assert p.close()["sequences"] == 2
    r = NumpyReader(str(tmp_path / "packed.bin"))
    assert r.rows().tolist() == rows.tolist()
    assert [d.tolist() for d in r.documents()] == [[5, 6, 7, 0], [8, 0]]


def test_numpy_reader_reports_vocab_dtype_mismatch(tmp_path: Path) -> None:
    w = NumpyWriter(str(tmp_path / "t"), "uint16", {"seq_len": 4, "packed": False, "vocab_size": 151665})
    w.add_documents(*_flat(DOCS))
    w.close()
    with pytest.raises(InputError) as exc:
        NumpyReader(str(tmp_path / "t.bin"))
    assert str(exc.value) == (f"{tmp_path / 't.bin'}: vocab/dtype mismatch: the shard stores uint16 tokens (ids up to "
                              "65535) but the tokenizer has 151,665 ids; the shard was written with the wrong dtype. "
                              "Re-export it with --dtype auto")
    (tmp_path / "t.json").unlink()
    with pytest.raises(InputError, match="the sidecar .* with the dtype is missing"):
        NumpyReader(str(tmp_path / "t.bin"))


def test_parquet_rows_have_int32_input_ids_and_doc_lengths(tmp_path: Path) -> None:
    w = ParquetTokenWriter(str(tmp_path / "p"), "int32", 4)
    rows = np.array([[5, 6, 7, 0], [8, 0, 9, 10], [11, 12, 13, 0]], dtype=np.uint32)
    w.add_rows(rows, np.array([0, 4, 6, 8]), np.array([4, 2, 2, 4]))
    assert w.close()["sequences"] == 3
    t = pq.read_table(tmp_path / "p.parquet")
    assert str(t.schema.field("input_ids").type) == "list<element: int32>"
    assert t.column("input_ids").to_pylist() == rows.tolist()
    assert t.column("doc_lengths").to_pylist() == [[4], [2, 2], [4]]
    got = [d.tolist() for d in ParquetTokenReader(str(tmp_path / "p.parquet")).documents()]
    assert got == [[5, 6, 7, 0], [8, 0], [9, 10], [11, 12, 13, 0]]


def test_choose_dtype_by_vocab_and_format() -> None:
    assert choose_dtype("megatron", 151665) == "int32"
    assert choose_dtype("nanotron", 151665) == "uint32"
    assert choose_dtype("numpy", 151665) == "uint32"
    assert choose_dtype("parquet", 700) == "int32"
    assert choose_dtype("megatron", 65536) == "uint16"
    assert choose_dtype("nanotron", 50257) == "uint16"
    with pytest.raises(ConfigError) as exc:
        choose_dtype("numpy", 151665, "uint16", tokenizer="tokenizer qwen2.5")
    assert str(exc.value) == ("vocab/dtype mismatch: --dtype uint16 holds ids up to 65535 but tokenizer qwen2.5 has "
                              "151,665 ids (up to 151664); use --dtype uint32 or leave --dtype auto")
    with pytest.raises(ConfigError) as exc:
        choose_dtype("megatron", 151665, "uint32")
    assert str(exc.value) == ("--dtype uint32 is not available for --format megatron (it takes uint16 or int32); "
                              "leave --dtype auto")
