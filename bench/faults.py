"""Reliability bench: kill -9 at random points, bad inputs, disk full, read-only output, determinism.

Prints a markdown table for BENCHMARKS.md. Every row is a real run of ``mathcorpus``:

* kills: the pipeline is started, killed with SIGKILL (whole process group) after a random delay
  drawn over the length of a clean run, then rerun to completion; its data files must equal the
  clean run's byte for byte (no lost, no duplicated documents);
* bad inputs: each case must give exit 1 with a one-line error naming the file (or, with
  ``--skip-bad-files``, a counted skip), never a traceback;
* disk full / read-only output: a clean one-line error and no half-written shard with a final name;
* determinism: three clean runs and a run with another worker count are byte-identical.

    python bench/faults.py [--kills 20] [--pipeline demo/faults.yaml] [--seed 1]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
EXE = str(Path(sys.executable).parent / "mathcorpus")


def digest(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and "/_logs/" not in f"/{rel}" and "/_run/" not in f"/{rel}" \
                and not rel.startswith("report") and rel != "pipeline.json" and "/_work/" not in f"/{rel}":
            data = p.read_bytes()
            if p.suffix == ".json":
                # summaries and manifests name their own folder; runs in other workdirs must
                # compare equal, so the workdir path is replaced before hashing
                data = data.replace(str(folder).encode(), b"<WORKDIR>")
            out[rel] = hashlib.sha256(data).hexdigest()
    return out


def run(args: list[str], **kw: object) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, *args], capture_output=True, text=True, **kw)  # type: ignore[call-overload]


def one_line_error(p: subprocess.CompletedProcess) -> bool:
    errs = [ln for ln in p.stderr.splitlines() if ln.startswith("Error: ")]
    return p.returncode == 1 and len(errs) == 1 and "Traceback" not in p.stderr


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--pipeline", default=str(REPO / "demo" / "faults.yaml"))
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--tmp", default=tempfile.mkdtemp(prefix="mathcorpus-faults-"))
    a = ap.parse_args()
    tmp = Path(a.tmp)
    rows: list[tuple[str, str, str]] = []

    # ---- clean runs and determinism
    t0 = time.monotonic()
    clean = run(["pipeline", "run", a.pipeline, "--workdir", str(tmp / "clean")])
    total = time.monotonic() - t0
    if clean.returncode != 0:
        print(clean.stderr, file=sys.stderr)
        return 1
    want = digest(tmp / "clean")
    same = []
    for i, workers in enumerate((1, 1, 2)):
        r = run(["pipeline", "run", a.pipeline, "--workdir", str(tmp / f"det{i}"), "--workers", str(workers)])
        same.append(r.returncode == 0 and digest(tmp / f"det{i}") == want)
    rows.append(("determinism: 3 more clean runs (workers 1, 1, 2) byte-identical to the first",
                 f"{sum(same)}/3 identical", "PASS" if all(same) else "FAIL"))

    # ---- kills
    rng = random.Random(a.seed)
    ok = 0
    stages_hit: dict[str, int] = {}
    for k in range(a.kills):
        w = tmp / f"kill{k}"
        delay = rng.uniform(0.05, total * 0.95)
        proc = subprocess.Popen([EXE, "pipeline", "run", a.pipeline, "--workdir", str(w)], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        killed = proc.poll() is None
        if killed:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        st = run(["pipeline", "status", str(w), "--json"]) if (w / "pipeline.json").exists() else None
        where = "before start"
        if st is not None and st.returncode == 0:
            steps = json.loads(st.stdout)["steps"]
            running = [s["label"] for s in steps if s["state"] != "complete"]
            where = running[0] if running else "after last stage"
        stages_hit[where] = stages_hit.get(where, 0) + 1
        r = run(["pipeline", "run", a.pipeline, "--workdir", str(w)])
        good = r.returncode == 0 and digest(w) == want
        ok += good
        shutil.rmtree(w, ignore_errors=True)
    hit = ", ".join(f"{k}: {v}" for k, v in sorted(stages_hit.items()))
    rows.append((f"kill -9 at {a.kills} random points, then resume (killed during {hit})",
                 f"{ok}/{a.kills} equal to the clean run", "PASS" if ok == a.kills else "FAIL"))

    # ---- bad inputs (through the first stage of a one-stage copy pipeline and the real pipeline)
    import pyarrow as pa
    import pyarrow.parquet as pq

    def bad_case(name: str, make: "callable[[Path], None]", expect: str, skip_ok: bool = True) -> None:
        d = tmp / f"bad-{name}"
        d.mkdir(parents=True)
        (d / "good.jsonl").write_text("".join(json.dumps({"id": f"g{i}", "text": f"good {i}"}) + "\n" for i in range(20)))
        make(d)
        cfg = tmp / f"bad-{name}.yaml"
        cfg.write_text(f"workdir: {tmp / ('w-' + name)}\ninputs: [{d}]\nstages:\n  - stage: copy\n")
        r = run(["pipeline", "run", str(cfg)])
        err = next((ln for ln in r.stderr.splitlines() if ln.startswith("Error: ")), "")
        fine = one_line_error(r) and expect in err
        detail = err.replace(str(tmp), "…")[:150]
        if skip_ok:
            r2 = run(["pipeline", "run", str(cfg), "--skip-bad-files", "--workdir", str(tmp / ("s-" + name))])
            fine = fine and r2.returncode == 0 and "bad file(s) skipped" in r2.stderr and "; 0 bad" not in r2.stderr
            detail += "; with --skip-bad-files: counted skip"
        rows.append((f"bad input: {name}", detail, "PASS" if fine else "FAIL"))

    def truncated(d: Path) -> None:
        pq.write_table(pa.table({"id": [str(i) for i in range(500)], "text": ["t" * 50] * 500}), d / "x.parquet")
        (d / "x.parquet").write_bytes((d / "x.parquet").read_bytes()[:-40])

    bad_case("truncated Parquet", truncated, "not a readable Parquet file")
    bad_case("zero-byte file", lambda d: (d / "z.jsonl").write_bytes(b""), "the file is empty (0 bytes)")
    bad_case("wrong column types", lambda d: pq.write_table(pa.table({"id": ["w"], "text": [3.0]}), d / "w.parquet"),
             "field 'text' has type double, expected string")
    bad_case("invalid UTF-8 in JSONL", lambda d: (d / "u.jsonl").write_bytes(b'{"id": "u", "text": "\xff"}\n'),
             "invalid UTF-8 on line 1")
    bad_case("duplicate ids across shards",
             lambda d: (d / "dup.jsonl").write_text(json.dumps({"id": "g3", "text": "again"}) + "\n"),
             "occur more than once", skip_ok=False)

    # 50 MB single document through the real pipeline
    big = tmp / "big"
    big.mkdir()
    (big / "b.jsonl").write_text(json.dumps({"id": "huge", "text": "Let x = 1. " * (50 * 1024 * 1024 // 11),
                                             "source": "web"}) + "\n" +
                                 json.dumps({"id": "small", "text": "A tiny page about 2 + 2 = 4.", "source": "web"}) + "\n")
    cfg = tmp / "big.yaml"
    cfg.write_text(f"workdir: {tmp / 'w-big'}\ninputs: [{big}]\nstages:\n  - stage: copy\n  - stage: dedup-exact\n")
    r = run(["pipeline", "run", str(cfg)])
    rows.append(("bad input: a 50 MB single document", "processed; 2 docs in, 2 out" if r.returncode == 0 else
                 r.stderr[-200:], "PASS" if r.returncode == 0 else "FAIL"))
    (tmp / "empty").mkdir()
    cfg = tmp / "empty.yaml"
    cfg.write_text(f"workdir: {tmp / 'w-empty'}\ninputs: [{tmp / 'empty'}]\nstages:\n  - stage: copy\n")
    r = run(["pipeline", "run", str(cfg)])
    rows.append(("bad input: empty folder", next((ln for ln in r.stderr.splitlines() if ln.startswith("Error")), "")
                 .replace(str(tmp), "…"), "PASS" if one_line_error(r) and "no input files found" in r.stderr else "FAIL"))
    bench_file = tmp / "bench-missing.jsonl"
    bench_file.write_text(json.dumps({"question": "What is 1+1?"}) + "\n" + json.dumps({"answer": "2"}) + "\n")
    r = run(["decontam", "run", str(REPO / "demo" / "sample"), "-o", str(tmp / "w-bm"), "--report",
             str(tmp / "w-bm-report"), "--benchmark-file", f"mine={bench_file}:question,answer"])
    rows.append(("bad input: benchmark file with a missing field",
                 next((ln for ln in r.stderr.splitlines() if ln.startswith("Error")), r.stderr[-150:]).replace(str(tmp), "…"),
                 "PASS" if one_line_error(r) else "FAIL"))

    # ---- disk full and read-only output (tmpfs mounts; needs root)
    for name, opts in (("disk full", "size=64k"), ("read-only output", "ro,size=1m")):
        mnt = tmp / name.replace(" ", "-")
        mnt.mkdir()
        if subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(mnt)], capture_output=True).returncode:
            rows.append((name, "not run: mounting a tmpfs needs root", "SKIP"))
            continue
        try:
            r = run(["pipeline", "run", a.pipeline, "--workdir", str(mnt / "w")])
            halfs = [p for p in mnt.rglob("*.parquet") if not _whole(p)]
            tmps = list(mnt.rglob("*.tmp"))
            err = next((ln for ln in r.stderr.splitlines() if ln.startswith("Error")), r.stderr[-150:])
            good = one_line_error(r) and not halfs and not tmps
            rows.append((name, err.replace(str(tmp), "…")[:150] + f"; half-written shards: {len(halfs)}",
                         "PASS" if good else "FAIL"))
        finally:
            subprocess.run(["umount", str(mnt)], capture_output=True)

    print(f"clean run of {a.pipeline}: {total:.1f} s\n")
    print("| case | result | verdict |\n|---|---|---|")
    for case, res, verdict in rows:
        print(f"| {case} | {res} | {verdict} |")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0 if all(v in ("PASS", "SKIP") for _, _, v in rows) else 1


def _whole(p: Path) -> bool:
    import pyarrow.parquet as pq

    try:
        pq.ParquetFile(p).metadata  # noqa: B018
        return True
    except (OSError, ValueError):  # pyarrow raises ArrowInvalid (a ValueError) for a broken footer
        return False


if __name__ == "__main__":
    raise SystemExit(main())
