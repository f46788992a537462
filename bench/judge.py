"""Benchmark of the judge tier's cost: judge calls per 1,000 records, and what the pre-filters save.

Runs ``mathcorpus decontam run --judge`` over MATH *train* (../shared/data/train_sets, 7,500
records; MATH train holds many near-duplicates of MATH test problems) against the
posttrain profile with the default candidate floors, once with the exact tier alone and
once with ``--fuzzy``, and reports

* the judge calls sent per 1,000 records and, scaled, per 1M records;
* the candidate funnel: unconfirmed pairs the cheap tiers saw, those decided without a
  call (below the floors, records already removed, duplicates) and the share the
  pre-filters removed before any call;
* the comparison with NeMo-Skills-style retrieval, which sends every record's top-k
  nearest benchmark items to the judge (k = 3 one way: 3M calls per 1M records; up to
  k = 5 both ways: 10M).

There is no real teacher here: the judge is a scripted OpenAI-compatible server on
127.0.0.1 that answers "Verdict: no" to everything and counts the requests it receives.
The counts do not depend on the answers (except that no record is removed by the judge,
so no later pair is skipped because of it, which can only raise the count).

Usage:
    .venv/bin/python bench/judge.py [--records 7500] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"


class Counting(BaseHTTPRequestHandler):
    """A scripted judge: every chat completion answers 'Verdict: no'; requests are counted."""

    count = 0
    lock = threading.Lock()

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with Counting.lock:
            Counting.count += 1
        data = json.dumps({"id": "x", "object": "chat.completion", "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "Different problems.\nVerdict: no"},
             "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 1}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def write_records(path: Path, n: int) -> int:
    rows = []
    with open(SHARED / "train_sets" / "math_train.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= n:
                break
            d = json.loads(line)
            rows.append({"id": f"math-train-{i}", "text": d["problem"], "problem": d["problem"],
                         "solution": d["solution"], "source": "math_train"})
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return len(rows)


def run(records: Path, scratch: Path, base_url: str, workers: int, fuzzy: bool) -> dict[str, Any]:
    from click.testing import CliRunner

    from corpus.cli import main

    tag = "fuzzy" if fuzzy else "exact"
    args = ["decontam", "run", str(records), "-o", str(scratch / f"out-{tag}"), "--report",
            str(scratch / f"rep-{tag}"), "--benchmarks", "posttrain", "--text-fields", "problem,solution",
            "--judge", "--judge-engine", "openai", "--judge-base-url", base_url, "--judge-model", "scripted",
            "--judge-concurrency", "32", "--workers", str(workers), "--tasks", str(workers), "--json"]
    if fuzzy:
        args += ["--fuzzy", "--fuzzy-fields", "problem"]
    before = Counting.count
    t0 = time.perf_counter()
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    if res.exit_code != 0:
        raise SystemExit(f"decontam run failed ({res.exit_code}): {res.output}")
    out = json.loads(res.stdout)
    j = out["decontam"]["judge"]
    summary = json.loads((scratch / f"rep-{tag}" / "summary.json").read_text(encoding="utf-8"))
    return {"seconds": time.perf_counter() - t0, "received": Counting.count - before, "judge": j,
            "removed": out["removed"], "docs_in": out["docs_in"], "items": summary["index"]["items"],
            "confirmed": summary["contaminated_pairs"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--records", type=int, default=7500)
    ap.add_argument("--workers", type=int, default=2)
    a = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Counting)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base_url = f"http://127.0.0.1:{server.server_address[1]}/v1"
    scratch = Path(tempfile.mkdtemp(prefix="bench-judge-"))
    try:
        records = scratch / "math_train.jsonl"
        n = write_records(records, a.records)
        print(f"records: {n:,} MATH train problems (problem + solution fields) vs the posttrain profile; "
              f"judge floors at their defaults (exact 0.3, fuzzy 0.6); scripted judge on 127.0.0.1")
        for fuzzy in (False, True):
            r = run(records, scratch, base_url, a.workers, fuzzy)
            j, f = r["judge"], r["judge"]["funnel"]
            seen = f["seen_exact"] + f["seen_fuzzy"] + f["seen_embed"]
            assert r["received"] == j["calls"]["sent"], (r["received"], j["calls"])
            per_k = 1000 * j["calls"]["sent"] / n
            print(f"\n{'exact + fuzzy tiers' if fuzzy else 'exact tier only'} ({r['seconds']:.1f} s wall, "
                  f"{r['removed']:,} records removed by the cheap tiers)")
            every = n * r["items"]
            print(f"  every (record, item) pair: {n:,} x {r['items']:,} items = {every:,}; the cheap tiers confirmed "
                  f"{r['confirmed']:,} without a call and left {seen:,} unconfirmed ({100 * seen / every:.4f}%)")
            print(f"  unconfirmed pairs seen by the cheap tiers: {seen:,} (exact {f['seen_exact']:,}, fuzzy "
                  f"{f['seen_fuzzy']:,})")
            print(f"  decided without a call: below the floors {f['below_floor_exact'] + f['below_floor_fuzzy']:,}, "
                  f"record already removed {f['skipped_removed']:,}, duplicates {f['duplicates']:,}")
            print(f"  pairs judged: {f['pairs_judged']:,}; pre-filters removed {100 * f['prefiltered_share']:.1f}% "
                  f"of the candidates before any call")
            print(f"  judge calls sent: {j['calls']['sent']:,} (server counted {r['received']:,}) = "
                  f"{per_k:.1f} per 1,000 records = {per_k * 1000:,.0f} per 1M records")
            print(f"  NeMo-Skills-style top-k retrieval: 3,000,000 (k=3, one way) to 10,000,000 (k=5, both ways) "
                  f"per 1M records: {3e6 / max(per_k * 1000, 1):,.0f}x to {1e7 / max(per_k * 1000, 1):,.0f}x "
                  "more calls")
    finally:
        server.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
