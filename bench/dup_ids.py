"""Bench: the duplicate-id check on a simulated stream of 10⁹ ids, partitioned by hash range.

Runs the real code of corpus/idcheck.py the way the runner does, each task in its own
process so its peak memory is measured alone:

* ``--map-tasks`` map tasks each stream their share of the ids (64-bit id hashes made by
  splitmix64 of a counter, a bijection, so the only repeats are the ``--dups`` planted ones)
  into an :class:`IdSpiller` (sorted runs of ``--chunk`` ids on disk);
* ``--partitions`` check tasks each sort and scan one hash range (``check_partition``);
* the finalize step sums the results (``collect``) and must find exactly ``--dups`` repeats.

Peer: the check as it was before (one finalize process loads every task's sorted hashes,
concatenates and sorts them), measured in the same run on the same runs when the input is
at most ``--peer-max`` ids; above that its memory (about 24 bytes per id) is only projected.
The id *hashing* of real documents (polars hash of the id column, in the map task) is not
part of this bench: the stream starts at the hashes.

    python bench/dup_ids.py --ids 1e9 --map-tasks 16 --partitions 64 --workers 2
    python bench/dup_ids.py --ids 1e8 --map-tasks 8 --partitions 16 --workers 2   # with the peer
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import python, run_measured  # noqa: E402

BLOCK = 1 << 20


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A bijection on uint64: distinct counters give distinct, uniformly spread 'id hashes'."""
    with np.errstate(over="ignore"):
        z = x + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def planted(n: int, dups: int) -> np.ndarray:
    """Counters whose id is emitted a second time (by the last map task)."""
    return np.linspace(0, n - 1, dups, dtype=np.uint64) if dups else np.empty(0, np.uint64)


def task_map(folder: str, rank: int, tasks: int, n: int, dups: int, chunk: int) -> None:
    from corpus.idcheck import IdSpiller

    lo, hi = rank * n // tasks, (rank + 1) * n // tasks
    sp = IdSpiller(folder, rank, chunk_ids=chunk)
    for start in range(lo, hi, BLOCK):  # a stream: one block of ids in memory at a time
        sp.add(splitmix64(np.arange(start, min(hi, start + BLOCK), dtype=np.uint64)))
    if rank == tasks - 1:
        sp.add(splitmix64(planted(n, dups)))
    runs = sp.close()
    Path(folder, f"{rank:05d}.runs").write_text(str(runs))


def task_check(folder: str, q: int, parts: int, tasks: int) -> None:
    from corpus.idcheck import check_partition

    runs = [int(Path(folder, f"{r:05d}.runs").read_text()) for r in range(tasks)]
    check_partition(folder, runs, q, parts)


def task_peer(folder: str, tasks: int) -> None:
    """The check before partitioning: every hash of the run in one process, one global sort."""
    from corpus.idcheck import run_path

    arrays = []
    for r in range(tasks):
        for i in range(int(Path(folder, f"{r:05d}.runs").read_text())):
            arrays.append(np.fromfile(run_path(folder, r, i), dtype="<u8"))
    allh = np.sort(np.concatenate(arrays))
    dup_mask = allh[1:] == allh[:-1]
    print(json.dumps({"extra": int(dup_mask.sum()), "ids": int(allh.size)}))


def run_tasks(cmds: list[list[str]], workers: int) -> list[tuple[float, float]]:
    """Run each command as its own measured process, ``workers`` at a time; (wall s, peak MB) each."""
    def one(cmd: list[str]) -> tuple[float, float]:
        wall, peak, proc = run_measured(cmd)
        if proc.returncode != 0:
            raise SystemExit(f"task failed: {' '.join(cmd)}\n{proc.stderr}")
        return wall, peak

    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, cmds))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ids", type=float, default=1e9, help="Ids in the simulated stream.")
    ap.add_argument("--map-tasks", type=int, default=16)
    ap.add_argument("--partitions", type=int, default=64, help="Check tasks (hash ranges).")
    ap.add_argument("--chunk", type=int, default=0, help="Ids per sorted run (default corpus.idcheck.CHUNK_IDS).")
    ap.add_argument("--dups", type=int, default=1000, help="Planted repeated ids.")
    ap.add_argument("--workers", type=int, default=2, help="Tasks run at the same time.")
    ap.add_argument("--peer-max", type=float, default=2e8, help="Run the single-sort peer up to this many ids.")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "mathcorpus-bench" / "dup_ids"))
    ap.add_argument("--_task", nargs="*", help=argparse.SUPPRESS)
    args = ap.parse_args()
    n = int(args.ids)
    from corpus.idcheck import CHUNK_IDS, collect

    chunk = args.chunk or CHUNK_IDS
    folder = str(Path(args.workdir) / f"n{n}")
    if args._task:
        kind, *rest = args._task
        if kind == "map":
            task_map(folder, int(rest[0]), args.map_tasks, n, args.dups, chunk)
        elif kind == "check":
            task_check(folder, int(rest[0]), args.partitions, args.map_tasks)
        else:
            task_peer(folder, args.map_tasks)
        return 0
    shutil.rmtree(folder, ignore_errors=True)
    Path(folder).mkdir(parents=True)
    me = [python(), str(Path(__file__).resolve()), "--ids", str(n), "--map-tasks", str(args.map_tasks),
          "--partitions", str(args.partitions), "--chunk", str(chunk), "--dups", str(args.dups),
          "--workdir", args.workdir]
    t0 = time.monotonic()
    maps = run_tasks([me + ["--_task", "map", str(r)] for r in range(args.map_tasks)], args.workers)
    t1 = time.monotonic()
    checks = run_tasks([me + ["--_task", "check", str(q)] for q in range(args.partitions)], args.workers)
    t2 = time.monotonic()
    extra, _examples = collect(folder, args.partitions)
    t3 = time.monotonic()
    disk = sum(p.stat().st_size for p in Path(folder).glob("*.u64"))
    print(f"simulated ids: {n:,} ({args.dups:,} planted repeats), {args.map_tasks} map tasks, "
          f"{args.partitions} check tasks (hash ranges), sorted runs of {chunk:,} ids, {args.workers} at a time")
    print(f"map (stream + spill sorted runs): {t1 - t0:.0f} s, peak RSS per task max {max(p for _, p in maps):.0f} MB")
    print(f"check (sort one hash range each): {t2 - t1:.0f} s, peak RSS per task max "
          f"{max(p for _, p in checks):.0f} MB (mean {np.mean([p for _, p in checks]):.0f} MB)")
    print(f"finalize (sum {args.partitions} results): {t3 - t2:.2f} s; repeats found {extra:,} "
          f"(expected {args.dups:,}): {'OK' if extra == args.dups else 'WRONG'}")
    print(f"total {t3 - t0:.0f} s; spilled hashes on disk {disk / 1e9:.2f} GB")
    ok = extra == args.dups
    if n <= args.peer_max:
        (pw, pp), = run_tasks([me + ["--_task", "peer"]], 1)
        print(f"peer (old check: one process, one global sort): {pw:.0f} s, peak RSS {pp:.0f} MB")
        print(f"memory ratio peer / largest task: {pp / max(max(p for _, p in maps), max(p for _, p in checks)):.1f}x")
    else:
        print(f"peer (old check: one process, one global sort) not run: it would hold ~24 bytes per id, "
              f"~{24 * n / 2**30:.0f} GiB, in one process")
    shutil.rmtree(folder, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
