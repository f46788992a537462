"""Token shard formats: writers and readers for every format ``mathcorpus export`` writes.

* **megatron**: Megatron-LM indexed dataset, ``PREFIX.bin`` + ``PREFIX.idx`` (MMIDIDX). The
  ``.idx`` layout, all little-endian: magic ``b"MMIDIDX\\x00\\x00"``; version ``<Q`` = 1; dtype
  code ``<B`` from Megatron's table (1 uint8, 2 int8, 3 int16, 4 int32, 5 int64, 6 float64,
  7 float32, 8 uint16); sequence count ``<Q``; document count ``<Q`` (= documents + 1); then
  int32 sequence lengths, int64 sequence byte pointers into ``.bin``, int64 document indices
  (``[0, 1, ..., n]``: one sequence per document). The table has no uint32, so vocabularies
  over 65,536 ids use int32.
* **nanotron** (datatrove): ``NAME.ds`` raw little-endian uint16/uint32 tokens,
  ``NAME.ds.index`` uint64 cumulative document ends (in tokens), ``NAME.ds.metadata``
  (``tokenizer|token_size``, token count, human count), as datatrove's DocumentTokenizer
  writes them and ``DatatroveFolderDataset`` (used by nanotron) reads them.
* **numpy**: nanoGPT-style flat ``NAME.bin`` read with ``np.memmap``; the dtype and layout are
  in the sidecar ``NAME.json``; document pieces as int64 ``[start, end)`` rows in
  ``NAME.docs.npy``. With ``packed`` the file is ``rows x seq_len`` tokens; anything not
  covered by a piece is padding.
* **parquet**: one row per ``seq_len`` sample: ``input_ids`` list<int32> and ``doc_lengths``
  list<int32>, the lengths of the document pieces in the row (padding follows them).
* **SFT exports** (``export --sft``, packed formats only) add a per-token loss mask: a
  ``loss_mask`` list<uint8> column (Parquet) or ``NAME.mask.bin`` uint8 beside ``NAME.bin``
  (numpy); 1 marks assistant tokens. ``corpus.export.loader`` reads every format for training.

Shards are never empty (an empty ``.bin`` cannot be memory-mapped) and every file is written
under a ``.tmp`` name and renamed when complete.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpus import fs as cfs
from corpus.errors import ConfigError, FatalError, InputError

FORMATS = ("megatron", "nanotron", "numpy", "parquet")
DTYPES = ("auto", "uint16", "uint32", "int32")
# Which token dtypes each format can carry. Megatron's table has no uint32; datatrove's
# token_size 2/4 means uint16/uint32; the Parquet column is list<int32> by spec.
FORMAT_DTYPES = {
    "megatron": ("uint16", "int32"),
    "nanotron": ("uint16", "uint32"),
    "numpy": ("uint16", "uint32", "int32"),
    "parquet": ("int32",),
}

MMIDIDX_MAGIC = b"MMIDIDX\x00\x00"
MMIDIDX_VERSION = 1
MEGATRON_DTYPE_CODES: dict[int, type[np.number]] = {
    1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 6: np.float64, 7: np.float32, 8: np.uint16,
}
TMP = ".tmp"


# ----------------------------------------------------------------------------- dtypes
def dtype_capacity(dtype: str) -> int:
    """Number of distinct non-negative token ids ``dtype`` holds."""
    return int(np.iinfo(np.dtype(dtype)).max) + 1


def choose_dtype(fmt: str, vocab_size: int, requested: str = "auto", tokenizer: str = "the tokenizer") -> str:
    """The token dtype for ``fmt``: uint16 when the vocab fits, else uint32 (int32 for Megatron).

    An explicit ``requested`` dtype is checked against the format and the vocab size.
    """
    if fmt not in FORMAT_DTYPES:
        raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    allowed = FORMAT_DTYPES[fmt]
    if requested == "auto":
        if fmt == "parquet":
            chosen = "int32"
        elif vocab_size <= dtype_capacity("uint16"):
            chosen = "uint16"
        else:
            chosen = "int32" if fmt == "megatron" else "uint32"
    else:
        if requested not in allowed:
            raise ConfigError(f"--dtype {requested} is not available for --format {fmt} (it takes "
                              f"{' or '.join(allowed)}); leave --dtype auto")
        chosen = requested
    if vocab_size > dtype_capacity(chosen):
        wider = [d for d in allowed if dtype_capacity(d) >= vocab_size]
        fix = f"use --dtype {wider[0]} or leave --dtype auto" if wider else "choose another format"
        raise ConfigError(f"vocab/dtype mismatch: --dtype {chosen} holds ids up to {dtype_capacity(chosen) - 1} but "
                          f"{tokenizer} has {vocab_size:,} ids (up to {vocab_size - 1}); {fix}")
    return chosen


def check_vocab_dtype(dtype: np.dtype | str, vocab_size: int, where: str) -> None:
    """Reader-side check: a shard whose dtype cannot hold the recorded vocab is unusable."""
    dt = np.dtype(dtype)
    if vocab_size > int(np.iinfo(dt).max) + 1:
        raise InputError(f"{where}: vocab/dtype mismatch: the shard stores {dt.name} tokens (ids up to "
                         f"{np.iinfo(dt).max}) but the tokenizer has {vocab_size:,} ids; the shard was written "
                         "with the wrong dtype. Re-export it with --dtype auto")


# ----------------------------------------------------------------------------- atomic files
class _Files:
    """Files of one shard, written under ``.tmp`` names and renamed together on commit (on object
    storage: uploaded to their final names, each visible only when complete; corpus.fs.AtomicWriter)."""

    def __init__(self) -> None:
        self._open: dict[str, cfs.AtomicWriter] = {}

    def open(self, path: str) -> BinaryIO:
        try:
            w = cfs.AtomicWriter(path)
        except OSError as exc:
            raise FatalError(f"{path}: cannot write ({exc}); check free space and permissions") from exc
        self._open[path] = w
        return w.file

    def write_small(self, path: str, data: bytes) -> None:
        self.open(path).write(data)

    def commit(self) -> list[str]:
        paths = list(self._open)
        try:
            for w in self._open.values():
                w.commit()
        except OSError as exc:
            self.abort()
            raise FatalError(f"{paths[0]}: could not finish the shard ({exc}); check free space") from exc
        self._open.clear()
        return paths

    def abort(self) -> None:
        for w in self._open.values():
            w.abort()
        self._open.clear()


def _write_array(fh: BinaryIO, arr: np.ndarray) -> None:
    try:
        fh.write(np.ascontiguousarray(arr).data)
    except OSError as exc:
        raise FatalError(f"{getattr(fh, 'name', 'shard')}: write failed ({exc}); check free space") from exc


def _le(dtype: str) -> np.dtype:
    return np.dtype(dtype).newbyteorder("<")


# ----------------------------------------------------------------------------- writers
class ShardWriterBase:
    """One output shard. Document formats take whole documents; packed formats take rows."""

    def __init__(self, base: str, dtype: str) -> None:
        self.base = base
        self.dtype = dtype
        self.files = _Files()
        self.tokens = 0
        self.pieces = 0

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        raise NotImplementedError

    def add_rows(self, rows: np.ndarray, piece_starts: np.ndarray, piece_lengths: np.ndarray,
                 mask: np.ndarray | None = None) -> None:
        """``rows``: (n, seq_len) tokens incl. padding; pieces: flat ``[start, start+len)`` in ``rows``;
        ``mask``: (n, seq_len) 0/1 loss mask of SFT exports."""
        raise NotImplementedError

    def close(self) -> dict[str, Any]:
        raise NotImplementedError

    def abort(self) -> None:
        self.files.abort()


class MegatronWriter(ShardWriterBase):
    """``PREFIX.bin`` + ``PREFIX.idx``: one Megatron sequence per document."""

    def __init__(self, base: str, dtype: str) -> None:
        super().__init__(base, dtype)
        self.bin = self.files.open(base + ".bin")
        self.lengths: list[np.ndarray] = []

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        _write_array(self.bin, tokens.astype(_le(self.dtype), copy=False))
        self.lengths.append(np.asarray(lengths, dtype=np.int64))
        self.tokens += int(tokens.size)
        self.pieces += int(lengths.size)

    def close(self) -> dict[str, Any]:
        lengths = np.concatenate(self.lengths) if self.lengths else np.zeros(0, np.int64)
        if lengths.size and int(lengths.max()) > np.iinfo(np.int32).max:
            raise FatalError(f"{self.base}: a document has more than 2^31 tokens, beyond Megatron's int32 lengths")
        code = {np.dtype(v).name: k for k, v in MEGATRON_DTYPE_CODES.items()}[np.dtype(self.dtype).name]
        itemsize = np.dtype(self.dtype).itemsize
        pointers = np.zeros(lengths.size, dtype=np.int64)
        if lengths.size > 1:
            np.cumsum(lengths[:-1] * itemsize, out=pointers[1:])
        doc_index = np.arange(lengths.size + 1, dtype=np.int64)
        idx = self.files.open(self.base + ".idx")
        idx.write(MMIDIDX_MAGIC)
        idx.write(struct.pack("<Q", MMIDIDX_VERSION))
        idx.write(struct.pack("<B", code))
        idx.write(struct.pack("<Q", lengths.size))
        idx.write(struct.pack("<Q", doc_index.size))
        _write_array(idx, lengths.astype("<i4"))
        _write_array(idx, pointers.astype("<i8"))
        _write_array(idx, doc_index.astype("<i8"))
        files = self.files.commit()
        return {"files": [os.path.basename(f) for f in files], "tokens": self.tokens, "documents": self.pieces,
                "sequences": self.pieces}


class DatatroveWriter(ShardWriterBase):
    """``NAME.ds`` + ``NAME.ds.index`` (+ ``.ds.metadata``), byte-compatible with datatrove."""

    def __init__(self, base: str, dtype: str, tokenizer_name: str) -> None:
        super().__init__(base, dtype)
        if dtype not in ("uint16", "uint32"):
            raise ConfigError(f"the nanotron/datatrove format stores uint16 or uint32 tokens, not {dtype}")
        self.ds = self.files.open(base)
        self.ends: list[np.ndarray] = []
        self.tokenizer_name = tokenizer_name

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        _write_array(self.ds, tokens.astype(_le(self.dtype), copy=False))
        self.ends.append(np.cumsum(lengths, dtype=np.uint64) + np.uint64(self.tokens))
        self.tokens += int(tokens.size)
        self.pieces += int(lengths.size)

    def close(self) -> dict[str, Any]:
        ends = np.concatenate(self.ends) if self.ends else np.zeros(0, np.uint64)
        _write_array(self.files.open(self.base + ".index"), ends.astype("<u8"))
        token_size = np.dtype(self.dtype).itemsize
        self.files.write_small(self.base + ".metadata",
                               datatrove_metadata(self.tokenizer_name, token_size, self.tokens))
        files = self.files.commit()
        return {"files": [os.path.basename(f) for f in files], "tokens": self.tokens, "documents": self.pieces,
                "sequences": self.pieces}


def datatrove_metadata(tokenizer_name: str, token_size: int, tokens: int) -> bytes:
    """The three-line ``.ds.metadata`` text datatrove writes (name|token_size, count, human count)."""
    try:
        import humanize

        human = humanize.metric(tokens, unit="T")
    except ImportError:  # humanize comes with datatrove; keep the file valid without it
        human = f"{tokens} T"
    return "\n".join([f"{tokenizer_name}|{token_size}", str(tokens), human]).encode("utf-8")


class NumpyWriter(ShardWriterBase):
    """nanoGPT-style flat ``NAME.bin`` + ``NAME.json`` sidecar + ``NAME.docs.npy`` pieces."""

    def __init__(self, base: str, dtype: str, meta: dict[str, Any]) -> None:
        super().__init__(base, dtype)
        self.bin = self.files.open(base + ".bin")
        self.meta = meta
        self.starts: list[np.ndarray] = []
        self.lens: list[np.ndarray] = []
        self.rows = 0
        self.written = 0  # flat tokens incl. padding
        # SFT exports: NAME.mask.bin, one uint8 per token (1 = assistant token, trained)
        self.mask = self.files.open(base + ".mask.bin") if meta.get("sft") else None

    def add_documents(self, tokens: np.ndarray, lengths: np.ndarray) -> None:
        starts = np.zeros(lengths.size, dtype=np.int64)
        if lengths.size > 1:
            np.cumsum(lengths[:-1], out=starts[1:])
        self._add(tokens, starts, np.asarray(lengths, dtype=np.int64))

    def add_rows(self, rows: np.ndarray, piece_starts: np.ndarray, piece_lengths: np.ndarray,
                 mask: np.ndarray | None = None) -> None:
        self.rows += int(rows.shape[0])
        if self.mask is not None:
            if mask is None or mask.shape != rows.shape:
                raise FatalError(f"{self.base}: an SFT shard needs a loss mask of shape {rows.shape}")
            _write_array(self.mask, mask.astype(np.uint8, copy=False))
        self._add(rows.reshape(-1), piece_starts, piece_lengths)

    def _add(self, flat: np.ndarray, starts: np.ndarray, lens: np.ndarray) -> None:
        _write_array(self.bin, flat.astype(_le(self.dtype), copy=False))
        self.starts.append(starts.astype(np.int64) + self.written)
        self.lens.append(lens.astype(np.int64))
        self.written += int(flat.size)
        self.tokens += int(lens.sum())
        self.pieces += int(lens.size)

    def close(self) -> dict[str, Any]:
        starts = np.concatenate(self.starts) if self.starts else np.zeros(0, np.int64)
        lens = np.concatenate(self.lens) if self.lens else np.zeros(0, np.int64)
        pieces = np.stack([starts, starts + lens], axis=1).astype("<i8")
        np.save(self.files.open(self.base + ".docs.npy"), pieces, allow_pickle=False)
        bin_name = os.path.basename(self.base + ".bin")
        sidecar = dict(self.meta)
        sidecar.update({"file": bin_name, "dtype": self.dtype, "byteorder": "little", "tokens": self.tokens,
                        "flat_tokens": self.written, "pieces": self.pieces,
                        "rows": self.rows if sidecar.get("packed") else None,
                        "documents_file": os.path.basename(self.base + ".docs.npy")})
        self.files.write_small(self.base + ".json", (json.dumps(sidecar, indent=2, sort_keys=True) + "\n").encode())
        files = self.files.commit()
        seqs = self.rows if self.meta.get("packed") else self.pieces
        return {"files": [os.path.basename(f) for f in files], "tokens": self.tokens, "documents": self.pieces,
                "sequences": seqs, "flat_tokens": self.written}


class ParquetTokenWriter(ShardWriterBase):
    """``NAME.parquet``: ``input_ids`` list<int32> (seq_len each) and ``doc_lengths`` list<int32>."""

    ROW_GROUP_ROWS = 1024

    def __init__(self, base: str, dtype: str, seq_len: int, loss_mask: bool = False) -> None:
        super().__init__(base, "int32")
        self.seq_len = seq_len
        self.path = base + ".parquet"
        self.sink = self.files.open(self.path)
        fields = [pa.field("input_ids", pa.list_(pa.int32())), pa.field("doc_lengths", pa.list_(pa.int32()))]
        if loss_mask:  # SFT: 1 on assistant tokens (trained), 0 elsewhere
            fields.append(pa.field("loss_mask", pa.list_(pa.uint8())))
        self.loss_mask = loss_mask
        self.schema = pa.schema(fields)
        self.writer = pq.ParquetWriter(self.sink, self.schema, compression="zstd")
        self.rows = 0
        self.written = 0

    def add_rows(self, rows: np.ndarray, piece_starts: np.ndarray, piece_lengths: np.ndarray,
                 mask: np.ndarray | None = None) -> None:
        n, width = rows.shape
        values = pa.array(rows.reshape(-1).astype(np.int32, copy=False), pa.int32())
        ids = pa.ListArray.from_arrays(pa.array(np.arange(0, n * width + 1, width, dtype=np.int32)), values)
        # pieces are sorted and never cross a row, so each row's pieces are a contiguous run
        row_of_piece = piece_starts // width
        offs = np.searchsorted(row_of_piece, np.arange(n + 1), side="left").astype(np.int32)
        docs = pa.ListArray.from_arrays(pa.array(offs), pa.array(piece_lengths.astype(np.int32), pa.int32()))
        cols = [ids, docs]
        if self.loss_mask:
            if mask is None or mask.shape != rows.shape:
                raise FatalError(f"{self.path}: an SFT shard needs a loss mask of shape {rows.shape}")
            cols.append(pa.ListArray.from_arrays(ids.offsets, pa.array(mask.reshape(-1).astype(np.uint8), pa.uint8())))
        table = pa.Table.from_arrays(cols, schema=self.schema)
        try:
            self.writer.write_table(table, row_group_size=self.ROW_GROUP_ROWS)
        except OSError as exc:
            raise FatalError(f"{self.path}: write failed ({exc}); check free space") from exc
        self.rows += n
        self.written += n * width
        self.tokens += int(piece_lengths.sum())
        self.pieces += int(piece_lengths.size)

    def close(self) -> dict[str, Any]:
        self.writer.close()
        files = self.files.commit()
        return {"files": [os.path.basename(f) for f in files], "tokens": self.tokens, "documents": self.pieces,
                "sequences": self.rows, "flat_tokens": self.written}

    def abort(self) -> None:
        try:
            self.writer.close()
        except (OSError, pa.ArrowException):
            pass
        super().abort()


def shard_base(output: str, index: int) -> str:
    return cfs.join(output, f"tokens-{index:05d}")


def shard_files(fmt: str, base: str) -> list[str]:
    """The file names a shard of ``fmt`` consists of (the first is the token stream)."""
    return {
        "megatron": [base + ".bin", base + ".idx"],
        "nanotron": [base + ".ds", base + ".ds.index", base + ".ds.metadata"],
        "numpy": [base + ".bin", base + ".json", base + ".docs.npy"],
        "parquet": [base + ".parquet"],
    }[fmt]


def make_writer(fmt: str, output: str, index: int, dtype: str, *, tokenizer_name: str, seq_len: int,
                numpy_meta: dict[str, Any] | None = None, loss_mask: bool = False) -> ShardWriterBase:
    base = shard_base(output, index)
    if fmt == "megatron":
        return MegatronWriter(base, dtype)
    if fmt == "nanotron":
        return DatatroveWriter(base + ".ds", dtype, tokenizer_name)
    if fmt == "numpy":
        return NumpyWriter(base, dtype, dict(numpy_meta or {}))
    if fmt == "parquet":
        return ParquetTokenWriter(base, dtype, seq_len, loss_mask=loss_mask)
    raise ConfigError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


# ----------------------------------------------------------------------------- readers
@dataclass
class MegatronIndex:
    """The parsed ``.idx`` of a Megatron indexed dataset."""

    dtype: np.dtype
    sequence_lengths: np.ndarray
    sequence_pointers: np.ndarray
    document_indices: np.ndarray
    sequence_modes: np.ndarray | None = None


def read_megatron_index(path: str, multimodal: bool = False) -> MegatronIndex:
    """Parse an MMIDIDX ``.idx`` file; InputError naming the file when it is not one."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the Megatron index ({exc})") from exc
    head = 9 + 8 + 1 + 8 + 8
    if len(data) < head or data[:9] != MMIDIDX_MAGIC:
        raise InputError(f"{path}: not a Megatron MMIDIDX index (bad magic); expected a .idx written by "
                         "Megatron's IndexedDatasetBuilder or mathcorpus export --format megatron")
    (version,) = struct.unpack_from("<Q", data, 9)
    if version != MMIDIDX_VERSION:
        raise InputError(f"{path}: MMIDIDX version {version}, only version 1 exists")
    (code,) = struct.unpack_from("<B", data, 17)
    if code not in MEGATRON_DTYPE_CODES:
        raise InputError(f"{path}: unknown dtype code {code} (Megatron's table has codes 1-8)")
    n_seq, n_doc = struct.unpack_from("<QQ", data, 18)
    need = head + n_seq * 4 + n_seq * 8 + n_doc * 8 + (n_seq if multimodal else 0)
    if len(data) != need:
        raise InputError(f"{path}: index is {len(data)} bytes but its header announces {need} "
                         f"({n_seq} sequences, {n_doc} document indices); the file is truncated or corrupt")
    off = head
    lengths = np.frombuffer(data, dtype="<i4", count=n_seq, offset=off)
    off += lengths.nbytes
    pointers = np.frombuffer(data, dtype="<i8", count=n_seq, offset=off)
    off += pointers.nbytes
    docs = np.frombuffer(data, dtype="<i8", count=n_doc, offset=off)
    off += docs.nbytes
    modes = np.frombuffer(data, dtype="<i1", count=n_seq, offset=off) if multimodal else None
    return MegatronIndex(np.dtype(MEGATRON_DTYPE_CODES[code]), lengths, pointers, docs, modes)


def _memmap(path: str, dtype: np.dtype | str) -> np.ndarray:
    size = os.path.getsize(path)
    dt = np.dtype(dtype)
    if size % dt.itemsize:
        raise InputError(f"{path}: {size} bytes is not a whole number of {dt.name} tokens; the file is truncated "
                         "or was written with another dtype")
    if size == 0:
        return np.zeros(0, dtype=dt)
    return np.memmap(path, dtype=dt, mode="r")


class MegatronReader:
    """Read ``PREFIX.bin``/``PREFIX.idx``: ``reader[i]`` is sequence i, :meth:`documents` groups them."""

    def __init__(self, prefix: str, vocab_size: int | None = None) -> None:
        self.prefix = prefix
        self.index = read_megatron_index(prefix + ".idx")
        if vocab_size is not None:
            check_vocab_dtype(self.index.dtype, vocab_size, prefix + ".idx")
        self.tokens = _memmap(prefix + ".bin", self.index.dtype.newbyteorder("<"))
        idx = self.index
        item = idx.dtype.itemsize
        expect = int(idx.sequence_pointers[-1] + idx.sequence_lengths[-1] * item) if len(idx.sequence_lengths) else 0
        if self.tokens.size * item != expect:
            raise InputError(f"{prefix}.bin: {self.tokens.size * item} bytes but the index points to {expect}; "
                             ".bin and .idx do not belong together")

    def __len__(self) -> int:
        return int(self.index.sequence_lengths.size)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.index.sequence_pointers[i]) // self.index.dtype.itemsize
        return np.asarray(self.tokens[start:start + int(self.index.sequence_lengths[i])])

    def documents(self) -> Iterator[np.ndarray]:
        di = self.index.document_indices
        for a, b in zip(di[:-1], di[1:]):
            yield np.concatenate([self[j] for j in range(int(a), int(b))]) if b - a != 1 else self[int(a)]


class DatatroveReader:
    """Read a datatrove/nanotron ``.ds`` file with its ``.ds.index`` (and ``.ds.metadata``)."""

    def __init__(self, path: str, token_size: int | None = None, vocab_size: int | None = None) -> None:
        self.path = path
        meta = path + ".metadata"
        if token_size is None and os.path.exists(meta):
            with open(meta, encoding="utf-8") as fh:
                first = fh.readline().strip()
            if "|" in first:
                token_size = int(first.rsplit("|", 1)[1])
        if token_size not in (2, 4):
            raise InputError(f"{path}: unknown token size {token_size}; pass token_size=2 (uint16) or 4 (uint32)")
        self.dtype = np.dtype("<u2" if token_size == 2 else "<u4")
        if vocab_size is not None:
            check_vocab_dtype(self.dtype, vocab_size, path)
        self.tokens = _memmap(path, self.dtype)
        self.doc_ends = np.fromfile(path + ".index", dtype="<u8") if os.path.exists(path + ".index") else None
        if self.doc_ends is not None and self.doc_ends.size and int(self.doc_ends[-1]) != self.tokens.size:
            raise InputError(f"{path}.index: last document end {int(self.doc_ends[-1])} but the .ds holds "
                             f"{self.tokens.size} tokens")

    def __len__(self) -> int:
        return 0 if self.doc_ends is None else int(self.doc_ends.size)

    def documents(self) -> Iterator[np.ndarray]:
        if self.doc_ends is None:
            raise InputError(f"{self.path}: no .ds.index beside it, so document boundaries are unknown")
        start = 0
        for end in self.doc_ends:
            yield np.asarray(self.tokens[start:int(end)])
            start = int(end)


class NumpyReader:
    """Read a numpy ``NAME.bin`` using its sidecar ``NAME.json`` and ``NAME.docs.npy``."""

    def __init__(self, path: str, vocab_size: int | None = None) -> None:
        base = path[:-4] if path.endswith(".bin") else path
        self.path = base + ".bin"
        side = base + ".json"
        if not os.path.exists(side):
            raise InputError(f"{self.path}: the sidecar {side} with the dtype is missing; a raw .bin cannot be read "
                             "without knowing its dtype")
        with open(side, encoding="utf-8") as fh:
            self.meta = json.load(fh)
        self.dtype = np.dtype(self.meta["dtype"]).newbyteorder("<")
        vocab = vocab_size if vocab_size is not None else self.meta.get("vocab_size")
        if vocab is not None:
            check_vocab_dtype(self.dtype, int(vocab), self.path)
        self.tokens = _memmap(self.path, self.dtype)
        self.pieces = np.load(base + ".docs.npy", allow_pickle=False)
        self.seq_len = int(self.meta["seq_len"])
        self.packed = bool(self.meta.get("packed"))

    def rows(self) -> np.ndarray:
        if not self.packed:
            raise InputError(f"{self.path}: not packed; read it as a flat stream (.tokens)")
        return np.asarray(self.tokens).reshape(-1, self.seq_len)

    def documents(self) -> Iterator[np.ndarray]:
        """Document pieces in file order (a piece is a whole document unless split across shards)."""
        for a, b in self.pieces:
            yield np.asarray(self.tokens[int(a):int(b)])


class ParquetTokenReader:
    """Read a token Parquet shard row by row: (input_ids, doc_lengths)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
        names = self.file.schema_arrow.names
        if "input_ids" not in names:
            raise InputError(f"{path}: no 'input_ids' column (columns: {', '.join(names)})")

    def rows(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for batch in self.file.iter_batches(batch_size=1024):
            ids = batch.column("input_ids")
            dl = batch.column("doc_lengths")
            width = len(ids[0]) if len(ids) else 0
            flat = ids.values.to_numpy(zero_copy_only=False).reshape(-1, width) if width else None
            for i in range(len(ids)):
                yield flat[i], np.asarray(dl[i].values.to_numpy(zero_copy_only=False))

    def flat(self) -> np.ndarray:
        """All rows, concatenated (padding included)."""
        col = self.file.read(columns=["input_ids"]).column("input_ids").combine_chunks()
        return col.values.to_numpy(zero_copy_only=False)

    def documents(self) -> Iterator[np.ndarray]:
        """Document pieces row by row (a piece split at a row end continues in the next row)."""
        for row, lens in self.rows():
            start = 0
            for n in lens:
                yield row[start:start + int(n)]
                start += int(n)


# ----------------------------------------------------------------------------- whole export
class ExportReader:
    """An export folder read back through its manifest: shards, documents, the recorded order."""

    def __init__(self, output: str) -> None:
        self.output = output
        path = os.path.join(output, "manifest.json")
        if not os.path.exists(path):
            raise InputError(f"{output}: no manifest.json; this is not a finished mathcorpus export")
        with open(path, encoding="utf-8") as fh:
            self.manifest = json.load(fh)
        self.format = self.manifest["format"]
        self.dtype = np.dtype(self.manifest["dtype"])
        self.vocab_size = int(self.manifest["tokenizer"]["vocab_size"])
        check_vocab_dtype(self.dtype, self.vocab_size, path)
        self._flat: dict[int, np.ndarray] = {}

    @property
    def shards(self) -> list[dict[str, Any]]:
        return list(self.manifest["shards"])

    def flat(self, shard: int) -> np.ndarray:
        """The token stream of shard ``shard`` (padding included for packed formats)."""
        if shard not in self._flat:
            files = [os.path.join(self.output, f) for f in self.manifest["shards"][shard]["files"]]
            if self.format == "megatron":
                arr = MegatronReader(files[0][:-4], self.vocab_size).tokens
            elif self.format == "nanotron":
                arr = DatatroveReader(files[0], vocab_size=self.vocab_size).tokens
            elif self.format == "numpy":
                arr = NumpyReader(files[0], self.vocab_size).tokens
            else:
                arr = ParquetTokenReader(files[0]).flat()
                self._flat.clear()  # Parquet is decoded into memory: keep one shard at a time
            self._flat[shard] = arr
        return self._flat[shard]

    def document_table(self) -> pa.Table:
        return pq.read_table(os.path.join(self.output, self.manifest["documents_file"]))

    def documents(self) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
        """Every output document in output order with its row of documents.parquet."""
        pf = pq.ParquetFile(os.path.join(self.output, self.manifest["documents_file"]))
        for batch in pf.iter_batches(batch_size=4096):
            for row in batch.to_pylist():
                shard, off, n = int(row["shard"]), int(row["offset"]), int(row["tokens"])
                parts = []
                while n > 0:
                    flat = self.flat(shard)
                    take = min(n, flat.size - off)
                    parts.append(np.asarray(flat[off:off + take]))
                    n -= take
                    shard, off = shard + 1, 0
                yield row, (np.concatenate(parts) if len(parts) > 1 else parts[0])
