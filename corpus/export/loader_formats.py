"""Sample sources for the token loader: one export folder seen as a list of training samples.

Every export format is opened through its ``manifest.json`` and turned into ``n`` samples of
``seq_len`` tokens, each read on demand from memory-mapped files (Parquet, which is
compressed, one row group at a time):

* **Document formats** (megatron, nanotron, numpy flat): the shards are one flat token
  stream; sample ``j`` is tokens ``[j*L, j*L + L + 1)`` (the extra token gives the last
  label), as Megatron's ``GPTDataset`` cuts it. Any ``seq_len`` works. Document ends come
  from each format's own index (``.idx`` lengths, ``.ds.index``, ``.docs.npy``).
* **Packed formats** (parquet, numpy ``--packed``, and every SFT export): sample ``j`` is
  row ``j``; ``seq_len`` must be the row width recorded in the manifest. Document pieces
  come from ``doc_lengths`` / ``.docs.npy``; tokens outside pieces are padding. SFT exports
  add a per-token loss mask (``loss_mask`` column / ``NAME.mask.bin``).

An item is a dict of 1-D int64 arrays of length ``seq_len``: ``input_ids``; ``labels`` (the
next token, ``-100`` where no loss is taken: at the last token of every document, on
padding, and for SFT on every target that is not an assistant token); ``position_ids``
(0 at every document start, at the start of the sample and of padding); and for SFT exports
``loss_mask`` (1 where ``labels`` is trained).

This module imports only numpy, pyarrow and the standard library (and corpus.errors), so
a training job can use the loader without the rest of mathcorpus' dependencies.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np

from corpus.errors import ConfigError, InputError

IGNORE = -100
DOCUMENT_FORMATS = ("megatron", "nanotron", "numpy")
MMIDIDX_HEAD = 9 + 8 + 1 + 8 + 8
MEGATRON_CODES = {1: np.uint8, 2: np.int8, 3: np.int16, 4: np.int32, 5: np.int64, 8: np.uint16}


def read_manifest(path: str) -> tuple[dict[str, Any], str]:
    """(manifest, fingerprint) of the export folder ``path``; InputError when it is not one."""
    mpath = os.path.join(path, "manifest.json")
    try:
        with open(mpath, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise InputError(f"{path}: no readable manifest.json ({exc.strerror}); pass the folder written by "
                         "mathcorpus export") from exc
    try:
        manifest = json.loads(raw)
        manifest["format"], manifest["shards"]  # noqa: B018 - the keys every export has
    except (ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{mpath}: not a mathcorpus export manifest ({exc}); re-run mathcorpus export") from exc
    return manifest, hashlib.sha256(raw).hexdigest()[:16]


def _memmap(path: str, dtype: Any, offset: int = 0, count: int | None = None) -> np.ndarray:
    dt = np.dtype(dtype)
    try:
        size = os.path.getsize(path) - offset
    except OSError as exc:
        raise InputError(f"{path}: missing ({exc.strerror}); the export is incomplete, re-run mathcorpus export") \
            from exc
    n = size // dt.itemsize if count is None else count
    if n <= 0:
        return np.zeros(0, dtype=dt)
    return np.memmap(path, dtype=dt, mode="r", offset=offset, shape=(n,))


def _segments(length: int, starts: np.ndarray) -> np.ndarray:
    """position_ids of ``length`` tokens whose segments begin at ``starts`` (and at 0)."""
    mark = np.zeros(length, dtype=np.int64)
    mark[starts] = starts
    np.maximum.accumulate(mark, out=mark)
    return np.arange(length, dtype=np.int64) - mark


class SampleSource:
    """An export folder as ``n`` samples; subclasses implement :meth:`item` and :meth:`groups`."""

    kind = "base"

    def __init__(self, path: str, manifest: dict[str, Any], fingerprint: str, seq_len: int) -> None:
        self._init_args = (path, manifest, fingerprint, seq_len)
        self.path = path
        self.manifest = manifest
        self.fingerprint = fingerprint
        self.seq_len = seq_len
        self.sft = bool(manifest.get("sft"))
        self.n = 0
        self.real_tokens = 0  # tokens of documents (not padding) over all samples

    def item(self, j: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled (DataLoader workers started by spawn/forkserver) as the recipe to reopen the
        # files, never as the memory-mapped arrays' contents
        return (type(self), self._init_args)

    def groups(self) -> np.ndarray | None:
        """Start of each block of samples that is cheap to read together, or None (random access is cheap)."""
        return None

    @property
    def tokens_per_sample(self) -> float:
        return self.real_tokens / self.n if self.n else 0.0

    def _files(self, shard: dict[str, Any]) -> list[str]:
        return [os.path.join(self.path, f) for f in shard["files"]]


class FlatSource(SampleSource):
    """Document formats: the shards concatenated into one stream, cut into ``seq_len + 1`` windows."""

    kind = "flat"

    def __init__(self, path: str, manifest: dict[str, Any], fingerprint: str, seq_len: int) -> None:
        super().__init__(path, manifest, fingerprint, seq_len)
        fmt = manifest["format"]
        arrays: list[np.ndarray] = []
        ends: list[np.ndarray] = []
        offset = 0
        for shard in manifest["shards"]:
            files = self._files(shard)
            if fmt == "megatron":
                tokens, doc_ends = _open_megatron(files[0][:-4])
            elif fmt == "nanotron":
                tokens, doc_ends = _open_datatrove(files[0], manifest["dtype"])
            else:
                tokens, doc_ends = _open_numpy_flat(files[0], manifest["dtype"])
            if doc_ends.size and int(doc_ends[-1]) != tokens.size:
                raise InputError(f"{files[0]}: its index ends at token {int(doc_ends[-1])} but the file holds "
                                 f"{tokens.size}; the shard is damaged, re-run mathcorpus export")
            arrays.append(tokens)
            ends.append(np.asarray(doc_ends, dtype=np.int64) + offset)
            offset += int(tokens.size)
        self.arrays = arrays
        self.starts = np.cumsum([0] + [a.size for a in arrays]).astype(np.int64)
        # cumulative document ends over the whole stream: 8 bytes per document in memory
        self.ends = np.concatenate(ends) if ends else np.zeros(0, np.int64)
        self.total = offset
        self.n = max(0, (self.total - 1) // seq_len)
        self.real_tokens = self.n * seq_len

    def window(self, a: int, b: int) -> np.ndarray:
        s = int(np.searchsorted(self.starts, a, side="right")) - 1
        if b <= self.starts[s + 1]:
            return self.arrays[s][a - self.starts[s]:b - self.starts[s]].astype(np.int64)
        parts = []
        while a < b:
            e = min(b, int(self.starts[s + 1]))
            parts.append(self.arrays[s][a - self.starts[s]:e - self.starts[s]])
            a, s = e, s + 1
        return np.concatenate(parts).astype(np.int64)

    def item(self, j: int) -> dict[str, np.ndarray]:
        L = self.seq_len
        a = j * L
        w = self.window(a, a + L + 1)
        k0 = int(np.searchsorted(self.ends, a, side="right"))
        k1 = int(np.searchsorted(self.ends, a + L, side="right"))
        cut = self.ends[k0:k1] - a  # document ends inside (0, L]: the token before is a document's last
        labels = w[1:].copy()
        labels[cut - 1] = IGNORE
        return {"input_ids": w[:L], "labels": labels, "position_ids": _segments(L, cut[cut < L])}


def _open_megatron(prefix: str) -> tuple[np.ndarray, np.ndarray]:
    idx = prefix + ".idx"
    head = _memmap(idx, np.uint8, count=MMIDIDX_HEAD)
    if head.size < MMIDIDX_HEAD or bytes(head[:9]) != b"MMIDIDX\x00\x00":
        raise InputError(f"{idx}: not a Megatron MMIDIDX index (bad magic)")
    code = int(head[17])
    n_seq = int(np.frombuffer(bytes(head[18:26]), "<u8")[0])
    if code not in MEGATRON_CODES:
        raise InputError(f"{idx}: token dtype code {code} is not an integer type the loader reads")
    lengths = _memmap(idx, "<i4", offset=MMIDIDX_HEAD, count=n_seq)
    tokens = _memmap(prefix + ".bin", np.dtype(MEGATRON_CODES[code]).newbyteorder("<"))
    return tokens, np.cumsum(lengths, dtype=np.int64)


def _open_datatrove(path: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    tokens = _memmap(path, np.dtype(dtype).newbyteorder("<"))
    return tokens, _memmap(path + ".index", "<u8")


def _open_numpy_flat(path: str, dtype: str) -> tuple[np.ndarray, np.ndarray]:
    base = path[:-4]
    tokens = _memmap(path, np.dtype(dtype).newbyteorder("<"))
    pieces = np.load(base + ".docs.npy", mmap_mode="r")
    return tokens, (pieces[:, 1] if pieces.size else np.zeros(0, np.int64))


def packed_item(row: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                mask: np.ndarray | None) -> dict[str, np.ndarray]:
    """Item of one packed row: pieces ``[starts[k], starts[k] + lengths[k])``, the rest padding."""
    L = row.size
    ids = row.astype(np.int64)
    keep = lengths > 0
    starts, lengths = starts[keep].astype(np.int64), lengths[keep].astype(np.int64)
    ends = starts + lengths
    # a label is taken where token i and token i+1 lie in the same piece
    inside = np.zeros(L + 1, dtype=np.int64)
    inside[starts] += 1
    inside[ends] -= 1
    cover = np.cumsum(inside[:L]) > 0
    trained = cover.copy()
    trained[ends - 1] = False
    labels = np.full(L, IGNORE, dtype=np.int64)
    labels[:-1] = ids[1:]
    out: dict[str, np.ndarray] = {"input_ids": ids}
    if mask is not None:
        trained[:-1] &= mask[1:].astype(bool)
    labels[~trained] = IGNORE
    seg = np.concatenate([starts, ends[ends < L]])
    out["labels"] = labels
    out["position_ids"] = _segments(L, seg)
    if mask is not None:
        out["loss_mask"] = trained.astype(np.int64)
    return out


class NumpyPackedSource(SampleSource):
    """numpy ``--packed``: ``rows x seq_len`` memory-mapped tokens, pieces in ``.docs.npy``."""

    kind = "numpy-packed"

    def __init__(self, path: str, manifest: dict[str, Any], fingerprint: str, seq_len: int) -> None:
        super().__init__(path, manifest, fingerprint, seq_len)
        self.rows: list[np.ndarray] = []
        self.pieces: list[np.ndarray] = []
        self.masks: list[np.ndarray | None] = []
        for shard in manifest["shards"]:
            files = self._files(shard)
            base = files[0][:-4]
            tokens = _memmap(files[0], np.dtype(manifest["dtype"]).newbyteorder("<"))
            if tokens.size % seq_len:
                raise InputError(f"{files[0]}: {tokens.size} tokens is not a whole number of {seq_len}-token rows")
            self.rows.append(tokens.reshape(-1, seq_len))
            self.pieces.append(np.load(base + ".docs.npy", mmap_mode="r"))
            self.masks.append(_memmap(base + ".mask.bin", np.uint8).reshape(-1, seq_len) if self.sft else None)
        self.row_starts = np.cumsum([0] + [r.shape[0] for r in self.rows]).astype(np.int64)
        self.n = int(self.row_starts[-1])
        self.real_tokens = int(manifest.get("tokens", self.n * seq_len))

    def item(self, j: int) -> dict[str, np.ndarray]:
        s = int(np.searchsorted(self.row_starts, j, side="right")) - 1
        r = j - int(self.row_starts[s])
        L = self.seq_len
        p = self.pieces[s]
        a = int(np.searchsorted(p[:, 0], r * L, side="left"))
        b = int(np.searchsorted(p[:, 0], (r + 1) * L, side="left"))
        pc = np.asarray(p[a:b], dtype=np.int64) - r * L
        m = self.masks[s]
        return packed_item(np.asarray(self.rows[s][r]), pc[:, 0], pc[:, 1] - pc[:, 0],
                           None if m is None else np.asarray(m[r]))


class ParquetSource(SampleSource):
    """Parquet rows (``input_ids``, ``doc_lengths``, SFT ``loss_mask``), decoded one row group at a time."""

    kind = "parquet"

    def __init__(self, path: str, manifest: dict[str, Any], fingerprint: str, seq_len: int) -> None:
        super().__init__(path, manifest, fingerprint, seq_len)
        import pyarrow.parquet as pq

        self.files: list[Any] = []
        group_rows: list[int] = []
        self.group_of: list[tuple[int, int]] = []
        for shard in manifest["shards"]:
            path0 = self._files(shard)[0]
            try:
                pf = pq.ParquetFile(path0, memory_map=True)
            except OSError as exc:
                raise InputError(f"{path0}: not a readable Parquet file ({exc})") from exc
            names = pf.schema_arrow.names
            need = ["input_ids", "doc_lengths"] + (["loss_mask"] if self.sft else [])
            missing = [c for c in need if c not in names]
            if missing:
                raise InputError(f"{path0}: no column {missing[0]!r} (columns: {', '.join(names)})")
            for g in range(pf.num_row_groups):
                self.group_of.append((len(self.files), g))
                group_rows.append(pf.metadata.row_group(g).num_rows)
            self.files.append(pf)
        self.group_starts = np.cumsum([0] + group_rows).astype(np.int64)
        self.n = int(self.group_starts[-1])
        self.real_tokens = int(manifest.get("tokens", self.n * seq_len))
        self._cached = -1
        self._cols: dict[str, Any] = {}

    def groups(self) -> np.ndarray:
        return self.group_starts

    def _load(self, g: int) -> None:
        f, k = self.group_of[g]
        cols = ["input_ids", "doc_lengths"] + (["loss_mask"] if self.sft else [])
        table = self.files[f].read_row_group(k, columns=cols)
        out: dict[str, Any] = {}
        for c in cols:
            arr = table.column(c).combine_chunks()
            out[c] = (arr.offsets.to_numpy(), arr.values.to_numpy(zero_copy_only=False))
        self._cols, self._cached = out, g

    def item(self, j: int) -> dict[str, np.ndarray]:
        g = int(np.searchsorted(self.group_starts, j, side="right")) - 1
        if g != self._cached:
            self._load(g)
        r = j - int(self.group_starts[g])
        off, vals = self._cols["input_ids"]
        row = vals[off[r]:off[r + 1]]
        if row.size != self.seq_len:
            raise InputError(f"{self.path}: row {j} has {row.size} tokens, not seq_len {self.seq_len}")
        doff, dl = self._cols["doc_lengths"]
        lengths = np.asarray(dl[doff[r]:doff[r + 1]], dtype=np.int64)
        starts = np.cumsum(lengths) - lengths
        mask = None
        if self.sft:
            moff, mv = self._cols["loss_mask"]
            mask = np.asarray(mv[moff[r]:moff[r + 1]])
        return packed_item(row, starts, lengths, mask)


def open_source(path: str, seq_len: int | None = None) -> SampleSource:
    """The export folder ``path`` as samples of ``seq_len`` tokens (default: the manifest's)."""
    manifest, fp = read_manifest(path)
    fmt = manifest["format"]
    packed = bool(manifest.get("packed")) or fmt == "parquet"
    mlen = int(manifest.get("seq_len") or 0)
    L = int(seq_len) if seq_len is not None else mlen
    if L < 1:
        raise ConfigError(f"{path}: seq_len must be at least 1, got {L}")
    if packed and L != mlen:
        raise ConfigError(f"{path}: this {fmt} export is packed into rows of {mlen} tokens; pass seq_len={mlen} "
                          "(or leave it unset), or re-export with --seq-len " + str(L))
    if fmt in DOCUMENT_FORMATS and not packed:
        return FlatSource(path, manifest, fp, L)
    if fmt == "numpy":
        return NumpyPackedSource(path, manifest, fp, L)
    if fmt == "parquet":
        return ParquetSource(path, manifest, fp, L)
    raise InputError(f"{path}: unknown export format {fmt!r} in manifest.json (expected megatron, nanotron, "
                     "numpy or parquet)")
