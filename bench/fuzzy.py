"""Benchmark of the near-duplicate tier (decontam/fuzzy.py): 100k post-training records vs a profile.

Records are real problem texts cycled to the requested count: MATH train problems, GSM8K
train questions and the English and Chinese word problems of ../shared/data (texts repeat,
which keeps their length and language mix realistic). The script times

* building the index (MinHash LSH over every item question of the profile);
* querying all records in batches, as the stage does: tokenize + mask numbers; shingles and
  MinHash signatures of every window; LSH band lookups; LCS confirmation of each candidate;
* the peer on the same windows: datasketch used one window at a time
  (``MinHash.update_batch`` + ``MinHashLSH.query`` per window) on a sample, against our
  vectorized signatures + band lookup on that sample; both must give the same candidates;
* with ``--e2e``, the whole command on 2 workers: ``mathcorpus decontam run`` over the same
  records (as ``question`` fields of 2 Parquet shards) with and without ``--fuzzy``.

Usage (the library figures are one process, so per core):
    .venv/bin/python bench/fuzzy.py --records 100000 --profile posttrain --e2e
"""

from __future__ import annotations

import argparse
import gzip
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from decontam import fuzzy as fz  # noqa: E402
from decontam.benchmarks import load_benchmarks  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def load_records(n: int) -> list[str]:
    texts: list[str] = []
    with open(DATA / "train_sets" / "math_train.jsonl", encoding="utf-8") as fh:
        texts += [json.loads(line)["problem"] for line in fh]
    with open(DATA / "train_sets" / "gsm8k_train.jsonl", encoding="utf-8") as fh:
        texts += [json.loads(line)["question"] for line in fh]
    for name in ("en_math_word_problems.jsonl.gz", "zh_math_positive.jsonl.gz"):
        with gzip.open(DATA / "corpus_samples" / name, "rt", encoding="utf-8") as fh:
            texts += [json.loads(line)["text"] for line in fh]
    return [texts[i % len(texts)] for i in range(n)]


def peer_vs_ours(index: fz.FuzzyIndex, texts: list[str], k: int) -> dict[str, float]:
    """datasketch one window at a time vs our batch path, on the first ``k`` windows of ``texts``."""
    from datasketch import MinHash

    tb = fz.fuzzy_token_batch(texts, seed=index.params.seed)
    doc_of, seg_abs, seg_len = index._segments(tb.offsets)
    seg_off = np.zeros(len(seg_len) + 1, np.int64)
    np.cumsum(seg_len, out=seg_off[1:])
    gather = np.repeat(seg_abs - seg_off[:-1], seg_len) + np.arange(int(seg_off[-1]))
    sh, sh_off = fz.shingle_hashes(tb.hashes[gather], seg_off, index.params.shingle)
    k = min(k, len(sh_off) - 1)
    t0 = time.perf_counter()
    peer = set()
    for s in range(k):
        if sh_off[s + 1] == sh_off[s]:
            continue
        m = MinHash(num_perm=index.params.num_perm, seed=index.params.seed, scheme="affine32",
                    hashfunc=lambda x: x)
        m.update_batch(sh[sh_off[s]:sh_off[s + 1]].tolist())
        peer.update((s, key) for key in index.lsh.query(m))
    t_peer = time.perf_counter() - t0
    t0 = time.perf_counter()
    sigs = fz.minhash_signatures_fast(sh[: sh_off[k]], sh_off[: k + 1], index._perm)
    ok = np.flatnonzero(np.diff(sh_off[: k + 1]) > 0)
    rows, keys = index._bands.query(sigs[ok])
    t_ours = time.perf_counter() - t0
    ours = set(zip(ok[rows].tolist(), keys.tolist()))
    if ours != peer:
        raise SystemExit(f"peer and ours disagree: {len(peer)} vs {len(ours)} candidate pairs")
    return {"windows": k, "candidates": len(ours), "peer_s": round(t_peer, 3), "ours_s": round(t_ours, 4),
            "speedup": round(t_peer / max(t_ours, 1e-9), 1)}


def end_to_end(records: list[str], profile: str) -> dict[str, float]:
    """Seconds of ``mathcorpus decontam run`` on 2 workers, exact tier alone and with --fuzzy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tmp = Path(tempfile.mkdtemp(prefix="bench-fuzzy-"))
    try:
        half = len(records) // 2
        for k, part in enumerate((records[:half], records[half:])):
            pq.write_table(pa.table({"id": [f"r{k}-{i}" for i in range(len(part))], "text": part,
                                     "question": part}), tmp / f"in-{k}.parquet")
        out = {}
        for label, extra in (("exact_only_s", []), ("exact_and_fuzzy_s", ["--fuzzy"])):
            cmd = [str(REPO / ".venv" / "bin" / "mathcorpus"), "decontam", "run", str(tmp / "in-0.parquet"),
                   str(tmp / "in-1.parquet"), "-o", str(tmp / label), "--benchmarks", profile,
                   "--text-fields", "question", "--workers", "2", "--report", str(tmp / f"{label}-report"), *extra]
            t0 = time.perf_counter()
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
            out[label] = round(time.perf_counter() - t0, 1)
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--profile", default="posttrain")
    ap.add_argument("--batch", type=int, default=8192)
    ap.add_argument("--peer-windows", type=int, default=5000, help="windows the datasketch peer handles")
    ap.add_argument("--e2e", action="store_true", help="also time the decontam command on 2 workers")
    args = ap.parse_args()

    records = load_records(args.records)
    mb = sum(len(t.encode()) for t in records) / 1e6
    t0 = time.perf_counter()
    index = fz.FuzzyIndex.build(fz.items_from_benchmarks(load_benchmarks(args.profile)))
    t_build = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(0, len(records), args.batch):
        index.query(records[i:i + args.batch])
    t_query = time.perf_counter() - t0
    st = index.stats
    out = {
        "records": len(records), "megabytes": round(mb, 1), "profile": args.profile,
        "items_indexed": len(index), "index_build_s": round(t_build, 2),
        "query_s": round(t_query, 2), "records_per_s": round(len(records) / t_query),
        "phases_s": {k[: -len("_seconds")]: round(v, 2) for k, v in st.items() if k.endswith("_seconds")},
        "windows": int(st["windows"]), "candidate_pairs": int(st["candidate_pairs"]),
        "confirmed_pairs": int(st["confirmed_pairs"]),
        "peer_datasketch_per_window": peer_vs_ours(index, records[: args.batch], args.peer_windows),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    if args.e2e:
        out["decontam_run_2_workers"] = end_to_end(records, args.profile)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
