"""Benchmark: what isolating TIR programs costs, next to the sandbox without isolation.

Owns one measurement: the same programs run through ``Sandbox(isolation="bwrap")`` (the
default: bubblewrap namespaces + seccomp) and ``Sandbox(isolation="unsafe-host")`` (the
pre-isolation sandbox: a host subprocess under ``unshare -rn`` and the audit hook), one
after the other in the same run, sequentially and with parallel workers. It prints
programs per second for each and the per-program overhead in milliseconds. A model call
for one TIR round takes seconds, so tens of milliseconds per program are what to compare
against.

Example::

    .venv/bin/python bench/sandbox.py --programs 60 --workers 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PROGRAMS = {
    "arith": "print(sum(i * i for i in range(10000)))",
    "sympy": "import sympy\nx = sympy.Symbol('x')\nprint(sympy.solve(x**2 - 5*x + 6, x))",
}


def measure(isolation: str, code: str, n: int, workers: int) -> float:
    """Programs per second for ``n`` runs of ``code`` (after one warm-up run)."""
    from synth.sandbox import Sandbox

    sb = Sandbox(timeout_s=30, isolation=isolation)
    assert sb.run(code).ok
    t0 = time.perf_counter()
    results = sb.run_many([code] * n, workers=workers) if workers > 1 else [sb.run(code) for _ in range(n)]
    dt = time.perf_counter() - t0
    bad = [r for r in results if not r.ok]
    if bad:
        raise SystemExit(f"{isolation}: {len(bad)} program(s) failed: {bad[0].feedback()}")
    return n / dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--programs", type=int, default=60, help="programs per measurement")
    ap.add_argument("--workers", type=int, default=2, help="parallel sandboxes in the parallel measurement")
    args = ap.parse_args()
    rows = []
    for name, code in PROGRAMS.items():
        for workers in (1, args.workers):
            iso = measure("bwrap", code, args.programs, workers)
            host = measure("unsafe-host", code, args.programs, workers)
            rows.append({"program": name, "workers": workers, "bwrap_per_s": round(iso, 2),
                         "unsafe_host_per_s": round(host, 2),
                         "overhead_ms": round(1000 * (1 / iso - 1 / host) * workers, 1),
                         "ratio": round(iso / host, 3)})
    print("| program | workers | isolated (bwrap) programs/s | unisolated programs/s | ratio | overhead per program |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['program']} | {r['workers']} | {r['bwrap_per_s']} | {r['unsafe_host_per_s']} | {r['ratio']} | "
              f"{r['overhead_ms']:+.1f} ms |")
    print(json.dumps(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
