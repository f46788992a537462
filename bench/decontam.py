"""Benchmark of `mathcorpus decontam run` against datatrove's NGramsDecontFilter, in one run.

What it measures (numbers go to BENCHMARKS.md, section "Decontamination engine"):

* ours, end to end: Parquet shards in -> clean Parquet shards, removed/, matches.parquet
  and summary.json out, against the posttrain profile (all twelve Qwen2.5-Math sets), one
  worker. Throughput per core = text bytes / CPU seconds (user + sys) of the whole command,
  so the figure does not depend on how busy the shared machine is; wall-clock MB/s is
  printed too. Peak RSS of the run and the in-memory size of the index are reported.
* the peer: datatrove 0.10 ``NGramsDecontFilter`` (13-grams, query, label and overlap grams)
  on about ``--peer-mb`` of the same documents (every k-th document of copy 0), with its index built from the same
  benchmark texts by its own ``NGramsDecontIndexer.compute_hashes`` (its ``run`` needs
  lighteval and the hub, so the method is called on a stand-in with the same attributes).
  Only the peer's filter loop is timed (no Parquet I/O), which flatters the peer.
* ratio = our per-core MB/s / the peer's per-core MB/s.

The input is every file of ../shared/data/corpus_samples (English and Chinese web pages,
math pages, word problems, news), repeated with fresh ids up to ``--mb`` MB of text, with
300 real posttrain items planted into copy 0 (question alone or question + solution), so
the candidate/confirmation path runs too; the planted recall is printed as a sanity check.

Usage:
    .venv/bin/python bench/decontam.py            # 100 MB ours, 4 MB peer
    .venv/bin/python bench/decontam.py --mb 300 --peer-mb 8
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))

_WRAP = ("import resource, subprocess, sys, json\n"
         "p = subprocess.run(sys.argv[2:])\n"
         "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
         "open(sys.argv[1], 'w').write(json.dumps({'cpu': r.ru_utime + r.ru_stime, 'rss_kb': r.ru_maxrss}))\n"
         "sys.exit(p.returncode)\n")


def measured(cmd: list[str]) -> dict[str, Any]:
    """Run ``cmd``; return wall seconds, CPU seconds (user+sys, children included) and peak RSS MB."""
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as fh:
        out = fh.name
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _WRAP, out, *cmd], capture_output=True, text=True)
    wall = time.monotonic() - t0
    try:
        stats = json.loads(Path(out).read_text() or "{}")
    finally:
        os.unlink(out)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}")
    return {"wall": wall, "cpu": stats.get("cpu", 0.0), "rss_mb": stats.get("rss_kb", 0) / 1024,
            "stdout": proc.stdout}


# ----------------------------------------------------------------------------- input
def load_docs() -> list[dict[str, Any]]:
    docs = []
    for f in sorted((SHARED / "corpus_samples").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            for line in fh:
                d = json.loads(line)
                docs.append({"id": d["id"], "text": d["text"], "source": d.get("source"),
                             "url": (d.get("meta") or {}).get("url")})
    return docs


def plant(docs: list[dict[str, Any]], n: int, seed: int = 7) -> dict[str, tuple[str, str]]:
    """Plant ``n`` real posttrain items into random documents; returns id -> (benchmark, item_id)."""
    from decontam.benchmarks import load_benchmarks

    rnd = random.Random(seed)
    items = [it for b in load_benchmarks("posttrain") for it in b.items if len(it.question) > 80]
    planted: dict[str, tuple[str, str]] = {}
    for d in rnd.sample(docs, n):
        it = rnd.choice(items)
        body = it.question if rnd.random() < 0.5 else it.question + "\n" + it.second[1]
        cut = rnd.randint(0, len(d["text"]))
        d["text"] = d["text"][:cut] + "\n" + body + "\n" + d["text"][cut:]
        planted[d["id"]] = (it.benchmark, it.item_id)
    return planted


def make_input(folder: Path, mb: int) -> tuple[int, dict[str, tuple[str, str]]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    marker = folder / f".done-{mb}.json"
    if marker.exists():
        info = json.loads(marker.read_text())
        return info["bytes"], {k: tuple(v) for k, v in info["planted"].items()}
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    base = load_docs()
    clean = [dict(d) for d in base]
    planted = plant(base, 300)
    target = mb * 1_000_000
    total, copy, shard, rows = 0, 0, 0, []
    while total < target:
        src = base if copy == 0 else clean
        for d in src:
            rows.append(dict(d, id=f"{d['id']}-c{copy}"))
            total += len(d["text"].encode("utf-8"))
            if total >= target:
                break
        copy += 1
        if sum(len(r["text"]) for r in rows) > 32_000_000 or total >= target:
            pq.write_table(pa.Table.from_pylist(rows), folder / f"part-{shard:04d}.parquet", compression="zstd")
            shard, rows = shard + 1, []
    planted_ids = {f"{k}-c0": v for k, v in planted.items()}
    marker.write_text(json.dumps({"bytes": total, "planted": planted_ids}))
    return total, planted_ids


# ----------------------------------------------------------------------------- peer
def _peer_hash(text: str) -> int:
    """datatrove's xxhash64 of an n-gram string, encoded first.

    datatrove 0.10 passes ``str`` to ``xxhash.xxh64_intdigest``; xxhash 4.1 (installed here)
    only takes bytes, so the peer's own hash function raises. Encoding to UTF-8 gives the
    hash datatrove intends, at the same cost.
    """
    import xxhash

    return xxhash.xxh64_intdigest(text.encode("utf-8"))


class _IndexerShim:
    """Stands in for NGramsDecontIndexer (whose constructor requires lighteval) to call its compute_hashes."""

    def __init__(self, config: Any) -> None:
        from datatrove.utils.word_tokenizers import load_word_tokenizer

        self.config = config
        self.tokenizer = load_word_tokenizer("en")
        self.hash_func = _peer_hash


def peer_worker(input_dir: str, peer_mb: float, index_dir: str, out_json: str) -> None:
    """Build the datatrove index from the posttrain items and filter the first peer_mb of input."""
    import numpy as np
    import pyarrow.parquet as pq
    from datatrove.data import Document
    from datatrove.pipeline.decont.n_grams import NGramsDecontConfig, NGramsDecontFilter, NGramsDecontIndexer

    from decontam.benchmarks import load_benchmarks

    cfg = NGramsDecontConfig(n_grams=13, find_query_ngrams=True, find_overlap_ngrams=True)
    shim = _IndexerShim(cfg)
    t0 = time.process_time()
    os.makedirs(index_dir, exist_ok=True)
    for b in load_benchmarks("posttrain"):
        hashes: set[int] = set()
        for it in b.items:
            label = it.second[1] or it.question
            hashes.update(NGramsDecontIndexer.compute_hashes(shim, label, it.question))
        arr = np.array(sorted(hashes), dtype=cfg.hash_config.np_descr)
        with open(os.path.join(index_dir, f"{b.name}.index.hashes"), "wb") as fh:
            arr.tofile(fh)
    index_cpu = time.process_time() - t0
    # every k-th document of the first shard (copy 0, with the planted items), so the peer
    # sees the same mix of web pages, math pages, word problems, news and Chinese text
    rows = pq.read_table(sorted(Path(input_dir).glob("*.parquet"))[0], columns=["id", "text"]).to_pylist()
    total = sum(len(r["text"].encode("utf-8")) for r in rows)
    stride = max(1, round(total / (peer_mb * 1_000_000)))
    docs = [Document(text=r["text"], id=r["id"]) for r in rows[::stride]]
    filt = NGramsDecontFilter(index_folder=index_dir, config=cfg)
    filt.hash_func = _peer_hash
    filt.load_index_hashes()
    nbytes = sum(len(d.text.encode("utf-8")) for d in docs)
    t0, w0 = time.process_time(), time.monotonic()
    flagged = []
    grams = {}
    for d in docs:
        res = filt.filter(d)
        keep = res[0] if isinstance(res, tuple) else res
        if not keep:
            flagged.append(d.id)
            grams[d.id] = [d.metadata.get("contaminated_task"), d.metadata.get("contaminated_ngram")]
    cpu, wall = time.process_time() - t0, time.monotonic() - w0
    Path(out_json).write_text(json.dumps({"docs": len(docs), "bytes": nbytes, "cpu": cpu, "wall": wall,
                                          "flagged": flagged, "index_cpu": index_cpu, "grams": grams,
                                          "doc_ids": [d.id for d in docs]}))


def index_memory_worker(index_dir: str, out_json: str) -> None:
    """RSS added by loading the index in a worker: everything setup() loads, every page touched."""
    import resource

    import numpy as np

    from decontam.confirm import Confirmer
    from decontam.kernel import char_tables, scan

    def rss_mb() -> float:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6

    import pyarrow as pa

    char_tables()
    scan(pa.array(["warm up the kernel"]), 13)
    before = rss_mb()
    from decontam.index import DecontamIndex

    idx = DecontamIndex.load(index_dir)
    conf = Confirmer(idx)
    _ = idx.grams, idx.phrases
    touched = sum(int(np.asarray(a).sum() & 1) for a in idx.arrays.values())  # fault every page in
    after = rss_mb()
    Path(out_json).write_text(json.dumps({"index_rss_mb": round(after - before, 1), "touched": touched,
                                          "arrays_mb": round(idx.nbytes() / 1e6, 1),
                                          "directory_mb": round((idx.grams.dirs.nbytes + idx.phrases.dirs.nbytes) / 1e6, 1),
                                          "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
    del conf


def kernel_speed(input_dir: Path, index_dir: Path) -> dict[str, float]:
    """CPU MB/s of the kernel alone on the second shard (no Python per row), best of 3."""
    import numpy as np
    import pyarrow.parquet as pq

    from decontam import kernel as K
    from decontam.index import DecontamIndex

    idx = DecontamIndex.load(str(index_dir))
    shard = sorted(input_dir.glob("*.parquet"))[min(1, len(list(input_dir.glob("*.parquet"))) - 1)]
    arr = pq.read_table(shard, columns=["text"]).column("text").combine_chunks()
    data, off = K.string_buffers(arr)
    modes = np.zeros(len(arr), np.uint8)
    nb = int(off[-1] - off[0])
    out = {}
    for name, grams, pn, phrases in (("no_lookups", K.KeySet.empty(), 0, None),
                                     ("posttrain_keys", idx.grams, idx.phrase_n, idx.phrases)):
        K.scan_arrays(data, off[:3], modes[:2], idx.ngram, grams, pn, phrases)
        best = 0.0
        for _ in range(3):
            t0 = time.process_time()
            K.scan_arrays(data, off, modes, idx.ngram, grams, pn, phrases)
            best = max(best, nb / 1e6 / max(time.process_time() - t0, 1e-9))
        out[name] = round(best, 1)
    return out


# ----------------------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=100, help="MB of text for our run")
    ap.add_argument("--peer-mb", type=float, default=4, help="MB of the same documents for the peer")
    ap.add_argument("--workdir", default=str(REPO / "bench" / "out" / "decontam"))
    ap.add_argument("--peer-worker", nargs=4, metavar=("INPUT", "MB", "INDEX", "OUT"), help=argparse.SUPPRESS)
    ap.add_argument("--index-memory", nargs=2, metavar=("INDEX", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.index_memory:
        index_memory_worker(*args.index_memory)
        return
    if args.peer_worker:
        peer_worker(args.peer_worker[0], float(args.peer_worker[1]), args.peer_worker[2], args.peer_worker[3])
        return
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cli = str(Path(sys.executable).parent / "mathcorpus")
    inp = work / "input"
    print(f"building input ({args.mb} MB) ...", file=sys.stderr)
    nbytes, planted = make_input(inp, args.mb)
    idx = work / "index-posttrain"
    shutil.rmtree(idx, ignore_errors=True)
    b = measured([cli, "decontam", "index", "--benchmarks", "posttrain", "-o", str(idx), "--json"])
    index_info = json.loads(b["stdout"])
    mem_json = work / "index-memory.json"
    measured([sys.executable, __file__, "--index-memory", str(idx), str(mem_json)])
    index_mem = json.loads(mem_json.read_text())
    out, rep = work / "clean", work / "report"
    for p in (out, rep):
        shutil.rmtree(p, ignore_errors=True)
    print("running mathcorpus decontam run ...", file=sys.stderr)
    ours = measured([cli, "decontam", "run", str(inp), "-o", str(out), "--index", str(idx), "--report", str(rep),
                     "--workers", "1", "--json"])
    summary = json.loads((rep / "summary.json").read_text())
    stats = [json.loads(p.read_text()) for p in sorted((out / "_logs" / "mathcorpus_stats").glob("*.json"))]
    task_seconds = sum(s["seconds"] for s in stats)
    task_cpu = sum(s["extra"].get("cpu_seconds", 0.0) for s in stats)
    check_seconds = sum(s["extra"].get("check_seconds", 0.0) for s in stats)
    import pyarrow.parquet as pq

    removed_ids = set(pq.read_table(rep / "removed", columns=["id"]).column("id").to_pylist()) \
        if summary["docs_removed"] else set()
    found = sum(1 for k in planted if k in removed_ids)
    mt = pq.read_table(rep / "matches.parquet", columns=["doc_id", "grams_matched", "tier"]).to_pylist()
    shared_gram_docs = {m["doc_id"] for m in mt if m["tier"] == "exact" and m["grams_matched"] > 0}

    print(f"running the datatrove peer on {args.peer_mb} MB ...", file=sys.stderr)
    peer_json = work / "peer.json"
    peer_idx = work / "peer-index"
    shutil.rmtree(peer_idx, ignore_errors=True)
    peer_proc = measured([sys.executable, __file__, "--peer-worker", str(inp), str(args.peer_mb), str(peer_idx),
                          str(peer_json)])
    peer = json.loads(peer_json.read_text())

    peer_ids = set(peer["doc_ids"])
    peer_flagged = set(peer["flagged"])
    kernel = kernel_speed(inp, idx)
    ours_core = nbytes / 1e6 / ours["cpu"]
    ours_wall = nbytes / 1e6 / ours["wall"]
    peer_core = peer["bytes"] / 1e6 / peer["cpu"]
    peer_wall = peer["bytes"] / 1e6 / peer["wall"]
    load = os.getloadavg()
    result = {
        "machine": f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} (shared)",
        "input_mb": round(nbytes / 1e6, 1), "docs_in": summary["docs_in"],
        "ours": {"cpu_s": round(ours["cpu"], 2), "wall_s": round(ours["wall"], 2),
                 "mb_per_s_per_core": round(ours_core, 1), "mb_per_s_wall": round(ours_wall, 1),
                 "in_task_mb_per_s_per_core": round(nbytes / 1e6 / task_cpu, 1) if task_cpu else None,
                 "in_task_mb_per_s_wall": round(nbytes / 1e6 / task_seconds, 1) if task_seconds else None,
                 "check_mb_per_s_wall": round(nbytes / 1e6 / check_seconds, 1) if check_seconds else None,
                 "peak_rss_mb": round(ours["rss_mb"], 1), "index_mb": index_info["megabytes"],
                 "index_rss_mb": index_mem["index_rss_mb"],
                 "docs_removed": summary["docs_removed"], "candidate_pairs": summary["candidate_pairs"],
                 "docs_sharing_a_13gram": len(shared_gram_docs),
                 "planted": len(planted), "planted_found": found,
                 "fallback_rows": summary["kernel"]["fallback_rows"],
                 "python_rows": summary["kernel"]["python_rows"]},
        "index_build": {"wall_s": round(b["wall"], 2), "cpu_s": round(b["cpu"], 2), "peak_rss_mb": round(b["rss_mb"], 1),
                        "items": index_info["items"], "grams": index_info["grams"]},
        "peer": {"name": "datatrove 0.10 NGramsDecontFilter (n=13, query+label+overlap grams)",
                 "input_mb": round(peer["bytes"] / 1e6, 2), "docs": peer["docs"], "cpu_s": round(peer["cpu"], 2),
                 "wall_s": round(peer["wall"], 2), "mb_per_s_per_core": round(peer_core, 3),
                 "mb_per_s_wall": round(peer_wall, 3), "flagged": len(peer["flagged"]),
                 "peak_rss_mb": round(peer_proc["rss_mb"], 1), "index_cpu_s": round(peer["index_cpu"], 1),
                 "same_docs_removed_by_ours": len(peer_ids & removed_ids),
                 "same_docs_planted": len(peer_ids & set(planted)),
                 "flagged_and_removed_by_ours": len(peer_flagged & removed_ids),
                 "flagged_planted": len(peer_flagged & set(planted))},
        "ratio_per_core": round(ours_core / peer_core, 1),
        "kernel_only_mb_per_s_per_core": kernel,
        "command": f".venv/bin/python bench/decontam.py --mb {args.mb} --peer-mb {args.peer_mb}",
    }
    result["peer_only_examples"] = [[k] + peer["grams"][k] for k in sorted(peer_flagged - removed_ids)][:8]
    (work / "result.json").write_text(json.dumps(result, indent=2, ensure_ascii=False))
    print(json.dumps(result, indent=2, ensure_ascii=False))
    o, p = result["ours"], result["peer"]
    print(f"""
| | ours (`decontam run`, posttrain) | datatrove NGramsDecontFilter |
|---|---|---|
| text checked | {result['input_mb']} MB, {result['docs_in']:,} docs, Parquet in/out + report | {p['input_mb']} MB (every k-th of the same docs), filter loop only |
| CPU time | {o['cpu_s']} s | {p['cpu_s']} s |
| **MB/s per core** (bytes / CPU s, whole command) | **{o['mb_per_s_per_core']}** | {p['mb_per_s_per_core']} |
| MB/s per core inside the tasks (read, check, write) | {o['in_task_mb_per_s_per_core']} | - |
| MB/s wall (shared machine) | {o['mb_per_s_wall']} | {p['mb_per_s_wall']} |
| peak RSS of the process | {o['peak_rss_mb']} MB | {p['peak_rss_mb']} MB |
| index memory per worker | {o['index_rss_mb']} MB resident ({o['index_mb']} MB of arrays) | - |
| docs removed / flagged | {o['docs_removed']} ({o['planted_found']}/{o['planted']} planted found; {o['docs_sharing_a_13gram']} share a 13-gram) | {p['flagged']} of {p['docs']} |
| on the peer's {p['docs']} docs | removed {p['same_docs_removed_by_ours']} (planted there: {p['same_docs_planted']}) | flagged {p['flagged']}, of which {p['flagged_planted']} planted and {p['flagged_and_removed_by_ours']} also removed by ours |
| **ratio (per core)** | **{result['ratio_per_core']}x** | 1x |
""")


if __name__ == "__main__":
    main()
