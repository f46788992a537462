"""Bench: `mathcorpus extract` speed vs trafilatura and resiliparse on the same pages, same run.

Page sets (all real or renderer-built pages on disk; nothing downloaded):

* ``test_pages``: the extraction test pages (the 13 defuddle fixtures, the renderer-built pages of
  tests/data/web/built and the saved Wikipedia article), packed into one WARC for this run;
* ``demo_crawl``: the demo crawl's 163 HTML pages (demo/warc/demo.warc.gz: small Q&A pages with
  about 25 formulas each in three markups, a Wikipedia article, non-math articles);
* ``crawl``: the real Common Crawl / ClueWeb responses of ../shared/data/web/warc (45 pages,
  no math), the closest thing here to an average web page.

Measured per set, single core, CPU seconds (``time.process_time``) of this process:

* **ours**: WARC reading (FastWARC), the stage's per-page work (prefilter, decoding, math →
  LaTeX, boilerplate removal, serialization, language id) and zstd Parquet writing of kept and
  removed rows, exactly as a task runs it. With ``--keep-nonmath`` every page is fully
  extracted (the fair comparison); the default mode also shows what the prefilter saves;
* **trafilatura** ``extract(html_bytes, include_tables=True)`` and **resiliparse**
  ``extract_plain_text(HTMLTree.parse_from_bytes(...), main_content=True)`` on the same
  payloads, already read from the WARC (their WARC reading is not counted: conservative).

Then the prefilter alone in MB of raw HTML per CPU second, ``mathcorpus extract`` end to end
(subprocess, ``--workers 1`` so every task runs in the measured process) in MB of WARC per CPU
second, and the core-hours one Common Crawl snapshot (3e9 pages) would take.

    python bench/extract_speed.py [--repeat 5] [--copies 20] [--set-copies 4]
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"
SNAPSHOT_PAGES = 3_000_000_000


def _pack_warc(pages: list[tuple[str, bytes]], path: Path) -> None:
    """Write HTML pages as WARC response records (the fixtures are files, not records)."""
    from warcio.statusandheaders import StatusAndHeaders
    from warcio.warcwriter import WARCWriter

    with open(path, "wb") as fh:
        w = WARCWriter(fh, gzip=True)
        for url, body in pages:
            http = StatusAndHeaders("200 OK", [("Content-Type", "text/html"), ("Content-Length", str(len(body)))],
                                    protocol="HTTP/1.1")
            w.write_record(w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http))


def _payloads(warcs: list[Path]) -> list[bytes]:
    from corpus.extract.reader import iter_warc

    return [r["html"] for w in warcs for b in iter_warc(str(w), 1000, Counter()) for r in b.to_pylist()]


def _cpu(fn, repeat: int) -> float:  # type: ignore[no-untyped-def]
    best = float("inf")
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best


def ours(warcs: list[Path], keep_nonmath: bool, out: Path) -> dict[str, int]:
    """One task's work over the WARCs: read, extract, write kept and removed shards."""
    from corpus.extract.reader import iter_warc
    from corpus.extract.stage import ExtractConfig, ExtractStage
    from corpus.shards import ShardWriter

    stage = ExtractStage(ExtractConfig(keep_nonmath=keep_nonmath))
    task = SimpleNamespace(counters=Counter())
    shutil.rmtree(out, ignore_errors=True)
    kept = ShardWriter(str(out), "extract")
    removed = ShardWriter(str(out / "_removed"), "extract")
    n = k = 0
    for w in warcs:
        for batch in iter_warc(str(w), 256, task.counters):
            res = stage.process_batch(batch, task)  # type: ignore[arg-type]
            kept.write(res.kept)
            if res.removed is not None:
                removed.write(res.removed)
            n += batch.num_rows
            k += res.kept.num_rows
    kept.close()
    removed.close()
    return {"pages": n, "kept": k}


def trafilatura_all(pages: list[bytes]) -> None:
    import trafilatura

    for p in pages:
        trafilatura.extract(p, include_tables=True)


def resiliparse_all(pages: list[bytes]) -> None:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.encoding import detect_encoding
    from resiliparse.parse.html import HTMLTree

    for p in pages:
        extract_plain_text(HTMLTree.parse_from_bytes(p, detect_encoding(p)), main_content=True)


def prefilter_mb_s(pages: list[bytes], target_mb: float = 300.0) -> tuple[float, float]:
    from corpus.extract.prefilter import math_signal

    total = sum(map(len, pages))
    reps = max(1, int(target_mb * 1e6 / total))
    t0 = time.process_time()
    for _ in range(reps):
        for p in pages:
            math_signal(p)
    dt = time.process_time() - t0
    return reps * total / 1e6 / dt, sum(math_signal(p) is not None for p in pages) / len(pages)


def end_to_end(warcs: list[Path], copies: int, tmp: Path, keep_nonmath: bool) -> dict[str, float]:
    """`mathcorpus extract` in a subprocess (--workers 1): MB of WARC per CPU second."""
    files = []
    if copies == 0:  # start-up only: one tiny WARC with one small page
        tiny = tmp / "tiny.warc.gz"
        _pack_warc([("https://tiny.invalid/", b"<html><body><p>$x^2$</p></body></html>")], tiny)
        files.append(str(tiny))
    for c in range(copies):
        for w in warcs:
            dst = tmp / f"e2e-{c}-{w.name}"
            shutil.copyfile(w, dst)
            files.append(str(dst))
    mb = sum(Path(f).stat().st_size for f in files) / 1e6
    out = tmp / f"e2e-out-{int(keep_nonmath)}"
    shutil.rmtree(out, ignore_errors=True)
    # --workers 1: datatrove runs the tasks inside the measured process, so RUSAGE_CHILDREN
    # holds all of their CPU time (start-up included: imports, model load, five executor phases)
    cmd = [str(Path(sys.executable).parent / "mathcorpus"), "extract", *files, "-o", str(out), "--workers", "1",
           "--tasks", "2", "--allow-duplicate-ids", "--json"] + (["--keep-nonmath"] if keep_nonmath else [])
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    s = json.loads(proc.stdout)
    if copies == 0:  # the fixed cost alone
        return {"cpu_s": round(cpu, 2)}
    return {"warc_mb": round(mb, 2), "pages": s["docs_in"], "kept": s["kept"], "cpu_s": round(cpu, 2),
            "wall_s": round(wall, 2), "mb_per_cpu_s": round(mb / cpu, 3), "pages_per_cpu_s": round(s["docs_in"] / cpu, 1)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="Timed repetitions per measurement (best is kept).")
    ap.add_argument("--copies", type=int, default=20, help="Copies of the WARCs in the end-to-end run.")
    ap.add_argument("--set-copies", type=int, default=4, help="Times each page set is read in one timed pass.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="extract-bench-"))
    try:
        fixtures = sorted((SHARED / "web" / "defuddle_math" / "fixtures").glob("*.html"))
        fixtures += sorted((REPO / "tests" / "data" / "web" / "built").glob("*.html"))
        fixtures.append(SHARED / "web" / "wikipedia" / "en.wikipedia.org.tsne.html")
        extra = tmp / "fixtures.warc.gz"
        _pack_warc([(f"https://fixtures.invalid/{p.stem}", p.read_bytes()) for p in fixtures], extra)
        sets = {"test_pages": [extra], "demo_crawl": [REPO / "demo" / "warc" / "demo.warc.gz"],
                "crawl": [SHARED / "web" / "warc" / "warcfile.warc.gz", SHARED / "web" / "warc" / "clueweb-quirk.warc.gz"]}
        results: dict[str, dict] = {}
        for name, warcs in sets.items():
            # each set is read --set-copies times in one pass, as a task reads thousands of records:
            # fixed per-call costs (opening the Parquet writers) are amortized as in a real task
            warcs = warcs * args.set_copies
            pages = _payloads(warcs)
            r: dict[str, float] = {"pages": len(pages) // args.set_copies,
                                   "html_mb": round(sum(map(len, pages)) / 1e6 / args.set_copies, 2)}
            info = ours(warcs, True, tmp / "o")
            assert info["pages"] == len(pages)
            # interleaved repetitions, best of each: load from other sessions hits all four alike
            t_all = t_def = t_tra = t_res = float("inf")
            for _ in range(args.repeat):
                t_all = min(t_all, _cpu(lambda: ours(warcs, True, tmp / "o"), 1))
                t_def = min(t_def, _cpu(lambda: ours(warcs, False, tmp / "o"), 1))
                t_tra = min(t_tra, _cpu(lambda: trafilatura_all(pages), 1))
                t_res = min(t_res, _cpu(lambda: resiliparse_all(pages), 1))
            n = len(pages)  # pages per timed pass (set x --set-copies)
            r.update({"ours_keep_nonmath_pps": round(n / t_all, 1), "ours_default_pps": round(n / t_def, 1),
                      "trafilatura_pps": round(n / t_tra, 1), "resiliparse_pps": round(n / t_res, 1),
                      "ratio_vs_trafilatura": round(t_tra / t_all, 2), "ratio_vs_resiliparse": round(t_res / t_all, 2)})
            mbs, share = prefilter_mb_s(pages)
            r.update({"prefilter_mb_per_cpu_s": round(mbs, 1), "prefilter_signal_share": round(share, 3)})
            results[name] = r
            print(f"[{name}] {json.dumps(r)}", file=sys.stderr)
        e2e = {"crawl_default": end_to_end(sets["crawl"], args.copies, tmp, False),
               "crawl_keep_nonmath": end_to_end(sets["crawl"], args.copies, tmp, True),
               "demo_crawl_default": end_to_end(sets["demo_crawl"], args.copies, tmp, False)}
        startup = end_to_end([], 0, tmp, False)["cpu_s"]
        for v in e2e.values():  # the same runs without the fixed start-up (what a long task sees)
            v["startup_cpu_s"] = startup
            v["net_mb_per_cpu_s"] = round(v["warc_mb"] / max(v["cpu_s"] - startup, 1e-3), 2)
        # One CC snapshot: 3e9 pages. Pages with a math signal get the full extraction, the others
        # stop after the prefilter; both per-page costs include WARC reading and Parquet writing
        # and come from the real crawl set (in-process, no start-up cost). CC pages are on average
        # larger than this set's (31 KB of HTML): byte-proportional steps (decompression, prefilter)
        # grow with them, so read the figures as a lower bound of the right order.
        crawl = results["crawl"]
        t_full = 1 / crawl["ours_keep_nonmath_pps"]
        t_skip = 1 / crawl["ours_default_pps"]
        t_traf = 1 / crawl["trafilatura_pps"]
        snapshot = {"trafilatura_every_page": round(SNAPSHOT_PAGES * t_traf / 3600),
                    "ours_keep_nonmath": round(SNAPSHOT_PAGES * t_full / 3600)}
        for f in (0.02, 0.05, 0.10):
            snapshot[f"ours_default_signal_share_{f:g}"] = round(SNAPSHOT_PAGES * (f * t_full + (1 - f) * t_skip) / 3600)
        out = {"sets": results, "end_to_end": e2e, "snapshot_core_hours": snapshot}
        print(json.dumps(out, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
