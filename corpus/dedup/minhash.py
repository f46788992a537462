"""The ``dedup-minhash`` stage: signatures per task (one sorted run per LSH band, datatrove's
formats), one task per band finds candidate pairs, and one task verifies them, joins them with
union-find and applies the keep rule.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa

from corpus import fs as cfs
from corpus import schema
from corpus.config import StageConfig, opt
from corpus.dedup.clusters import _cluster_table, _meta, choose_kept
from corpus.dedup.kernels import HASH_SEED, _union_find
from corpus.dedup.lsh import (_sig_dtype, _sort_rows, band_pairs, false_negative_area, false_positive_area,
                              optimal_bands_rows)
from corpus.dedup.stage import (META_SCHEMA, _atomic_parquet, _DedupStage, _iter_task_batches, _keep_opt,
                                _keep_work_opt, _ParquetStream, _read_json, _remove_prefixed)
from corpus.dedup.text import minhash_signatures, permutations
from corpus.errors import ConfigError, FatalError
from corpus.runner import Phase, RunContext
from corpus.shards import atomic_write_bytes, atomic_write_json

# ---------------------------------------------------------------------------- minhash
#: Low bits of each hash kept to verify candidate pairs: two different 16-bit values collide
#: with probability 2**-16, which moves an estimated Jaccard by less than 0.0001.
FULL_SIG_DTYPE = np.dtype("<u2")


@dataclass
class MinhashDedupConfig(StageConfig):
    """Options of ``dedup minhash`` (section ``dedup-minhash`` of a config file)."""

    section: ClassVar[str] = "dedup-minhash"

    threshold: float = opt(0.8, help="Jaccard similarity of shingle sets above which two documents are "
                                     "near-duplicates; bands x rows are chosen from it (see the table below).")
    ngram: int = opt(5, help="Shingle size in tokens (words; each CJK character is a token).")
    num_perm: int = opt(112, help="Permutations (hash functions) per signature.")
    bands: int = opt(0, help="LSH bands; 0 = chosen from --threshold (minimal weighted false positive + false "
                             "negative area, as datasketch does). Set with --rows.")
    rows: int = opt(0, help="Rows (hashes) per band; 0 = chosen from --threshold. Set with --bands.")
    seed: int = opt(1, help="Seed of the permutations (datatrove's MinhashConfig.seed).")
    verify: bool = opt(True, help="Check every LSH candidate pair on its whole signature and drop it when the "
                                  "estimated Jaccard similarity is below --threshold; keeps documents that only "
                                  "share a template (and chains through them) apart.")
    keep: str = _keep_opt()
    keep_work: bool = _keep_work_opt()
    window_rows: int = opt(1_000_000, help="Signatures merged at once per band in the bucket step (memory bound).")
    buffer_mb: int = opt(64, help="Signature memory of a task before a sorted run is written to disk.")

    def validate(self) -> None:
        where = self.section
        if not 0.0 < self.threshold < 1.0:
            raise ConfigError(f"{where}: threshold must be between 0 and 1 (exclusive), got {self.threshold}")
        if self.ngram < 1:
            raise ConfigError(f"{where}: ngram must be at least 1, got {self.ngram}")
        if not 2 <= self.num_perm <= 4096:
            raise ConfigError(f"{where}: num_perm must be between 2 and 4096, got {self.num_perm}")
        if (self.bands == 0) != (self.rows == 0) or self.bands < 0 or self.rows < 0:
            raise ConfigError(f"{where}: set both bands and rows (got bands={self.bands}, rows={self.rows}), or "
                              "neither to choose them from the threshold")
        if self.bands * self.rows > self.num_perm:
            raise ConfigError(f"{where}: bands x rows = {self.bands * self.rows} exceeds num_perm = "
                              f"{self.num_perm}; lower them or raise num_perm")
        if self.window_rows < 1 or self.buffer_mb < 1:
            raise ConfigError(f"{where}: window_rows and buffer_mb must be at least 1, got {self.window_rows} and "
                              f"{self.buffer_mb}")

    def lsh(self) -> tuple[int, int]:
        """``(bands, rows)``: as given, or the optimum for the threshold."""
        if self.bands and self.rows:
            return self.bands, self.rows
        return optimal_bands_rows(self.threshold, self.num_perm)


class MinhashDedupStage(_DedupStage):
    """Removes near-duplicates: MinHash LSH candidate pairs joined into clusters over all tasks."""

    name = "dedup-minhash"
    Config = MinhashDedupConfig
    reason = "dedup:minhash"
    config: MinhashDedupConfig

    def pre_phases(self, run: RunContext) -> list[Phase]:
        bands, _rows = self.config.lsh()
        return [Phase("signatures", self._signatures_task, run.tasks),
                Phase("buckets", self._buckets_task, bands),
                Phase("clusters", self._clusters_task, 1)]

    def cluster_files(self, run: RunContext) -> list[str]:
        return [cfs.join(self.work_dir(run), "clusters", "000.parquet")]

    def _bucket_dir(self, run: RunContext, band: int) -> str:
        return cfs.join(self.work_dir(run), "sigs", f"bucket_{band:03d}")

    def _signatures_task(self, rank: int, world_size: int, run: RunContext) -> None:
        """Phase 1, one task per input share: signatures of every document, one sorted run per band."""
        cfg = self.config
        bands, rows = cfg.lsh()
        a, b = permutations(cfg.num_perm, cfg.seed)
        for band in range(bands):
            _remove_prefixed(self._bucket_dir(run, band), f"{rank:05d}-")
        meta = _ParquetStream(cfs.join(self.work_dir(run), "meta", f"{rank:05d}.parquet"), META_SCHEMA)
        full = cfs.AtomicWriter(self._full_path(run, rank))  # committed below when whole
        sigs: list[np.ndarray] = []
        idxs: list[np.ndarray] = []
        buffered = 0
        n_runs = 0
        pos = 0
        for path, batch in _iter_task_batches(run, rank):
            sig, ok = minhash_signatures(batch.column(schema.TEXT), cfg.ngram, a, b)
            meta.write(pa.table(_meta(batch, path)))
            # the low 16 bits of every hash, row = document position, for verifying candidates
            full.write(sig.astype(FULL_SIG_DTYPE).tobytes())
            sel = np.flatnonzero(ok)
            if len(sel):
                sigs.append(sig[sel, : bands * rows])
                idxs.append((sel + pos).astype(np.uint32))
                buffered += sigs[-1].nbytes
            pos += batch.num_rows
            if buffered >= cfg.buffer_mb << 20:
                self._write_run(run, rank, n_runs, np.concatenate(sigs), np.concatenate(idxs), bands, rows)
                n_runs += 1
                sigs, idxs, buffered = [], [], 0
        if sigs:
            self._write_run(run, rank, n_runs, np.concatenate(sigs), np.concatenate(idxs), bands, rows)
        meta.close()
        full.commit()

    def _full_path(self, run: RunContext, rank: int) -> str:
        return cfs.join(self.work_dir(run), "full", f"{rank:05d}.sig16")

    def _write_run(self, run: RunContext, rank: int, n: int, sig: np.ndarray, idx: np.ndarray,
                   bands: int, rows: int) -> None:
        dtype = _sig_dtype(rows)
        for band in range(bands):
            cols = [sig[:, band * rows + j] for j in range(rows)]
            order = _sort_rows(cols, [idx])
            rec = np.empty(len(idx), dtype=dtype)
            for j, c in enumerate(cols):
                rec[f"h{j}"] = c[order]
            rec["idx"] = idx[order]
            atomic_write_bytes(cfs.join(self._bucket_dir(run, band), f"{rank:05d}-{n:03d}.minhash.sig"),
                               rec.tobytes())

    def _buckets_task(self, band: int, world_size: int, run: RunContext) -> None:
        """Phase 2, one task per band: equal band signatures across all tasks become pairs."""
        _bands, rows = self.config.lsh()
        dtype = _sig_dtype(rows)
        folder = self._bucket_dir(run, band)
        names = [f for f in cfs.listdir(folder) if f.endswith(".minhash.sig")]
        runs, ranks = [], []
        with contextlib.ExitStack() as stack:
            for name in names:
                path = cfs.join(folder, name)
                size = cfs.size(path)
                if size % dtype.itemsize:
                    raise FatalError(f"{path}: truncated signature file ({size} bytes is not a multiple of "
                                     f"{dtype.itemsize}); delete {run.output} and run the stage again")
                if size:
                    # memory-mapped, so a band's memory stays bounded (a URL is first copied to local disk)
                    runs.append(np.memmap(stack.enter_context(cfs.local_copy(path)), dtype=dtype, mode="r"))
                    ranks.append(int(name.split("-")[0]))
            pairs = band_pairs(runs, ranks, rows, self.config.window_rows)
            del runs
        atomic_write_bytes(cfs.join(self.work_dir(run), "dups", f"{band:05d}.dups"),
                           pairs.astype("<u4").tobytes())

    def _clusters_task(self, _rank: int, world_size: int, run: RunContext) -> None:
        """Phase 3, one task: union-find over all pairs, then the keep rule per cluster."""
        import xxhash

        cfg = self.config
        bands, rows = cfg.lsh()
        wd = self.work_dir(run)
        keys_a, keys_b = [], []
        for band in range(bands):
            path = cfs.join(wd, "dups", f"{band:05d}.dups")
            if not cfs.exists(path):
                raise FatalError(f"{path}: the pairs of band {band} are missing although that task is marked done; "
                                 f"delete {run.output} and run the stage again")
            p = np.frombuffer(cfs.read_bytes(path), dtype="<u4").reshape(-1, 4).astype(np.uint64)
            keys_a.append((p[:, 0] << np.uint64(32)) | p[:, 1])
            keys_b.append((p[:, 2] << np.uint64(32)) | p[:, 3])
        ka = np.concatenate(keys_a) if keys_a else np.zeros(0, np.uint64)
        kb = np.concatenate(keys_b) if keys_b else np.zeros(0, np.uint64)
        del keys_a, keys_b
        # dense node numbers, so that an edge fits one uint64 and a pair found in several
        # bands counts once (memory: a few arrays of the number of pairs, nothing per document)
        nodes = np.unique(np.concatenate([ka, kb]))
        ea = np.searchsorted(nodes, ka).astype(np.uint64)
        eb = np.searchsorted(nodes, kb).astype(np.uint64)
        del ka, kb
        edges = np.unique((np.minimum(ea, eb) << np.uint64(32)) | np.maximum(ea, eb))
        del ea, eb
        ea = (edges >> np.uint64(32)).astype(np.int64)
        eb = (edges & np.uint64(0xFFFFFFFF)).astype(np.int64)
        del edges
        candidates = len(ea)
        if cfg.verify and candidates:
            ok = self._estimated_jaccard(run, nodes, ea, eb) >= cfg.threshold
            ea, eb = ea[ok], eb[ok]
            used = np.unique(np.concatenate([ea, eb]))
            nodes = nodes[used]
            ea, eb = np.searchsorted(used, ea), np.searchsorted(used, eb)
        label = _union_find(ea, eb, len(nodes))
        node_rank = (nodes >> np.uint64(32)).astype(np.int64)
        node_idx = (nodes & np.uint64(0xFFFFFFFF)).astype(np.int64)
        ids, lengths, scores = [], [], []
        for r in np.unique(node_rank).tolist():
            meta = cfs.read_parquet(cfs.join(wd, "meta", f"{r:05d}.parquet"))
            m = meta.take(pa.array(node_idx[node_rank == r]))
            ids.append(m.column("id").combine_chunks())
            lengths.append(m.column("length").to_numpy())
            scores.append(m.column("score").combine_chunks())
        id_arr = pa.concat_arrays(ids) if ids else pa.array([], pa.string())
        kept = choose_kept(label, nodes, id_arr, np.concatenate(lengths) if lengths else np.zeros(0, np.int64),
                           pa.concat_arrays(scores) if scores else pa.array([], pa.float64()), cfg.keep)
        kept_id = id_arr.take(pa.array(kept))
        names = {k: f"mh-{xxhash.xxh64_intdigest(v.encode('utf-8'), HASH_SEED):016x}"
                 for k, v in zip(np.unique(kept).tolist(), id_arr.take(pa.array(np.unique(kept))).to_pylist())}
        cluster = [names[k] for k in kept.tolist()]
        removed = kept != np.arange(len(nodes))
        _atomic_parquet(_cluster_table(node_rank, node_idx, removed, cluster, kept_id),
                        cfs.join(wd, "clusters", "000.parquet"))
        sizes = np.bincount(label) if len(label) else np.zeros(0, np.int64)
        sizes = sizes[sizes > 0]
        atomic_write_json(cfs.join(wd, "clusters", "000.json"), {
            "candidate_pairs": int(candidates), "pairs": int(len(ea)),
            "clusters": int(len(sizes)), "docs_in_clusters": int(len(nodes)),
            "removed": int(removed.sum()), "largest_cluster": int(sizes.max()) if len(sizes) else 0})

    def _estimated_jaccard(self, run: RunContext, nodes: np.ndarray, ea: np.ndarray, eb: np.ndarray,
                           chunk: int = 32_768) -> np.ndarray:
        """Share of equal hashes (of ``num_perm``) between the two documents of each edge.

        Edges come in chunks and each chunk reads only its rows from the memory-mapped
        signature files, so memory does not grow with the number of clustered documents.
        """
        nperm = self.config.num_perm
        maps: dict[int, np.ndarray] = {}
        stack = contextlib.ExitStack()  # local copies of signature files on object storage

        def rows(node: np.ndarray) -> np.ndarray:
            keys = nodes[node]
            rank = (keys >> np.uint64(32)).astype(np.int64)
            idx = (keys & np.uint64(0xFFFFFFFF)).astype(np.int64)
            out = np.empty((len(keys), nperm), dtype=FULL_SIG_DTYPE)
            for r in np.unique(rank).tolist():
                if r not in maps:
                    local = stack.enter_context(cfs.local_copy(self._full_path(run, r)))
                    maps[r] = np.memmap(local, dtype=FULL_SIG_DTYPE, mode="r").reshape(-1, nperm)
                sel = rank == r
                out[sel] = maps[r][idx[sel]]
            return out

        est = np.empty(len(ea), dtype=np.float64)
        with stack:
            for i in range(0, len(ea), chunk):
                est[i:i + chunk] = (rows(ea[i:i + chunk]) == rows(eb[i:i + chunk])).mean(axis=1)
            maps.clear()
        return est

    def global_summary(self, run: RunContext) -> dict[str, Any]:
        bands, rows = self.config.lsh()
        s = _read_json(cfs.join(self.work_dir(run), "clusters", "000.json"))
        return {"method": "minhash", "threshold": self.config.threshold, "ngram": self.config.ngram,
                "num_perm": self.config.num_perm, "bands": bands, "rows": rows, "keep": self.config.keep,
                "verify": self.config.verify,
                "false_positive_area": round(false_positive_area(self.config.threshold, bands, rows), 6),
                "false_negative_area": round(false_negative_area(self.config.threshold, bands, rows), 6), **s}
