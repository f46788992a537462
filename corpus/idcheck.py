"""The duplicate-id check, partitioned by id-hash range so that no process holds every id.

Ids must be unique within a dataset. The runner checks this on every stage run without a
process whose memory grows with the run:

1. **map tasks** hash each id to 64 bits (:func:`id_hash`) and spill the hashes in sorted
   runs of at most ``chunk_ids`` values (:class:`IdSpiller`): ``IDS/{rank:05d}-{run:04d}.u64``,
   raw little-endian uint64, written to a temporary name and renamed. A task's memory for
   ids is one run (32 MB by default), however many documents it reads.
2. **check tasks** (the ``ids`` phase, ``P`` tasks): task ``q`` owns the hash range
   ``[q·2⁶⁴/P, (q+1)·2⁶⁴/P)``. Each run is sorted, so two binary searches on a memory-mapped
   run find the slice of that range; the task reads only those slices, sorts them and counts
   equal neighbours (:func:`check_partition`). Equal ids have equal hashes, so every
   duplicate falls in exactly one range. Memory: about 8 bytes × documents / P.
3. **finalize** only sums the ``P`` small results (:func:`collect`) and, when there are
   duplicates, names a few of them by reading the input once more (:func:`find_examples`,
   the error path only).

The counts and the example ids are exactly those of a single global sort: the ranges are
disjoint and in order, so the first example hashes of the concatenated ranges are the
smallest duplicate hashes overall. Every file is written atomically and a rerun of a task
first deletes what an earlier attempt of the same task left, so a killed run resumes
without double counting.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from typing import IO, Any

import numpy as np
import pyarrow as pa

from corpus import fs as cfs
from corpus import schema
from corpus.errors import FatalError
from corpus.shards import atomic_write_json, iter_batches

#: Largest sorted run a map task keeps in memory before writing it out (8 bytes each).
CHUNK_IDS = 1 << 22
#: Duplicate hashes each check task reports (the error message names the first few ids).
EXAMPLE_HASHES = 20
RUN_SUFFIX = ".u64"
RESULT_DIR = "check"
_SEED = 0x6D617468


def id_hash(ids: pa.Array) -> np.ndarray:
    """64-bit hashes of a batch of ids (polars' vectorized hash with a fixed seed).

    Used only to find ids that occur twice within one run, so stability across polars
    versions does not matter; determinism within a run does, hence the explicit seed.
    """
    import polars as pl

    return pl.Series(ids).hash(seed=_SEED).to_numpy()


def range_bounds(q: int, parts: int) -> tuple[int, int | None]:
    """The hash range ``[lo, hi)`` of check task ``q`` of ``parts``; ``hi`` is None for the last."""
    step = -(-(1 << 64) // parts)  # ceil, so parts ranges cover all of 2**64
    lo = q * step
    hi = (q + 1) * step
    return lo, (hi if hi < (1 << 64) and q < parts - 1 else None)


def _atomic_write_array(path: str, arr: np.ndarray) -> None:
    # local: .tmp + rename; object storage: one upload, visible only when whole (corpus.fs)
    cfs.atomic_write_bytes(path, np.ascontiguousarray(arr, dtype="<u8").tobytes())


def run_path(folder: str, rank: int, run: int) -> str:
    return cfs.join(folder, f"{rank:05d}-{run:04d}{RUN_SUFFIX}")


class IdSpiller:
    """A map task's id hashes, written as sorted runs of at most ``chunk_ids`` values.

    Creating one deletes the runs an earlier (killed) attempt of the same task left behind.
    """

    def __init__(self, folder: str, rank: int, chunk_ids: int = CHUNK_IDS) -> None:
        self.folder = folder
        self.rank = rank
        self.chunk_ids = max(1, chunk_ids)
        self.runs = 0
        self.count = 0
        self._buf: list[np.ndarray] = []
        self._buffered = 0
        cfs.remove_prefixed(folder, f"{rank:05d}-")

    def add(self, hashes: np.ndarray) -> None:
        """Buffer hashes; a full buffer is sorted and written as one run."""
        hashes = np.asarray(hashes, dtype=np.uint64)
        while hashes.size:
            room = self.chunk_ids - self._buffered
            part, hashes = hashes[:room], hashes[room:]
            self._buf.append(part)
            self._buffered += part.size
            self.count += part.size
            if self._buffered >= self.chunk_ids:
                self._flush()

    def _flush(self) -> None:
        if not self._buffered:
            return
        arr = np.concatenate(self._buf) if len(self._buf) > 1 else self._buf[0].copy()
        self._buf.clear()
        self._buffered = 0
        arr.sort()
        _atomic_write_array(run_path(self.folder, self.rank, self.runs), arr)
        self.runs += 1

    def close(self) -> int:
        """Write the last run; returns how many runs this task wrote."""
        self._flush()
        return self.runs


def _search(fh: IO[bytes], n: int, value: int) -> int:
    """First index of a sorted on-storage uint64 run whose value is >= ``value`` (8-byte ranged reads)."""
    lo, hi = 0, n
    while lo < hi:
        mid = (lo + hi) // 2
        fh.seek(mid * 8)
        if int.from_bytes(fh.read(8), "little") < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def _range_slice(path: str, lo: int, hi: int | None) -> np.ndarray:
    """The values of one sorted run that fall in ``[lo, hi)``; only that slice is read.

    Locally through a memory map. On object storage by binary search with small ranged reads
    and one read of the slice, so P check tasks download the runs about once in all, not P times.
    """
    if cfs.is_remote(path):
        n = cfs.size(path) // 8
        with cfs.open_file(path, "rb", block_size=1 << 16) as fh:
            a = _search(fh, n, lo) if lo else 0
            b = _search(fh, n, hi) if hi is not None else n
            fh.seek(a * 8)
            return np.frombuffer(fh.read((b - a) * 8), dtype="<u8").astype(np.uint64)
    if os.path.getsize(path) == 0:
        return np.empty(0, np.uint64)
    mm = np.memmap(path, dtype="<u8", mode="r")
    a = int(np.searchsorted(mm, np.uint64(lo), side="left")) if lo else 0
    b = int(np.searchsorted(mm, np.uint64(hi), side="left")) if hi is not None else mm.size
    out = np.array(mm[a:b], dtype=np.uint64)
    del mm
    return out


def check_partition(folder: str, runs_per_rank: Sequence[int], q: int, parts: int,
                    keep: int = EXAMPLE_HASHES) -> dict[str, Any]:
    """Count repeated hashes in range ``q`` of ``parts`` over every run; writes and returns the result.

    ``extra`` is the number of documents whose id occurred earlier (n - unique), as the
    single-sort check counted it; ``examples`` the ``keep`` smallest repeated hashes.
    """
    lo, hi = range_bounds(q, parts)
    slices = []
    for rank, n in enumerate(runs_per_rank):
        for r in range(n):
            s = _range_slice(run_path(folder, rank, r), lo, hi)
            if s.size:
                slices.append(s)
    total = sum(s.size for s in slices)
    allh = np.empty(total, np.uint64)
    pos = 0
    while slices:  # fill and free one slice at a time: peak is this range once, plus one slice
        s = slices.pop(0)
        allh[pos:pos + s.size] = s
        pos += s.size
    allh.sort()
    same = allh[1:] == allh[:-1] if total > 1 else np.zeros(0, bool)
    extra = int(same.sum())
    examples: list[int] = []
    if extra:
        examples = [int(v) for v in np.unique(allh[1:][same])[:keep]]
    result = {"range": q, "ranges": parts, "ids": int(total), "extra": extra, "examples": examples}
    atomic_write_json(result_path(folder, q, parts), result)
    return result


def result_path(folder: str, q: int, parts: int) -> str:
    # the number of ranges is in the folder name: a rerun with another count never reads these
    return cfs.join(folder, f"{RESULT_DIR}-{parts}", f"{q:05d}.json")


def collect(folder: str, parts: int, keep: int = EXAMPLE_HASHES) -> tuple[int, list[int]]:
    """Sum the check tasks' results: (documents whose id occurred before, smallest repeated hashes)."""
    extra = 0
    examples: list[int] = []
    for q in range(parts):
        p = result_path(folder, q, parts)
        if not cfs.exists(p):
            raise FatalError(f"{folder}: duplicate-id check task {q} finished without its result {p}; "
                             "rerun the same command to redo that task")
        res = cfs.read_json(p)
        extra += int(res["extra"])
        if len(examples) < keep:
            examples.extend(res["examples"][: keep - len(examples)])
    return extra, examples


def find_examples(files: Sequence[str], hashes: Sequence[int], limit: int,
                  read: Callable[[str], Iterable[pa.RecordBatch]] | None = None) -> list[str]:
    """The first ``limit`` ids (in input order) whose hash is in ``hashes``.

    ``read`` streams one input file as batches (a stage's own reader, e.g. extract's WARC
    reader); by default only the id column of each shard is read.
    """
    examples: list[str] = []
    if not hashes:
        return examples
    want = np.asarray(sorted(hashes), dtype=np.uint64)
    for path in files:
        batches = read(path) if read is not None else iter_batches(path, columns=[schema.ID], required=(schema.ID,))
        for batch in batches:
            ids = batch.column(schema.ID)
            hit = np.isin(id_hash(ids), want)
            for v in ids.filter(pa.array(hit)).to_pylist():
                if v not in examples:
                    examples.append(v)
            if len(examples) >= limit:
                return examples[:limit]
    return examples
