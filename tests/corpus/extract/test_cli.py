"""``mathcorpus extract`` on the command line: results, exact errors, and a real kill then resume."""

from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from click.testing import CliRunner

from corpus.cli import main
from corpus.extract.reader import iter_warc
from corpus.shards import read_table

BIN = Path(sys.executable).parent


def test_cli_json_and_human_output(repo_root: Path, tmp_path: Path) -> None:
    warc = str(repo_root / "demo" / "warc" / "demo.warc.gz")
    r = CliRunner().invoke(main, ["extract", warc, "-o", str(tmp_path / "o"), "--json", "--langs", "en"])
    assert r.exit_code == 0, r.output
    s = json.loads(r.stdout)
    assert (s["docs_in"], s["kept"], s["removed"]) == (163, 121, 42)
    r = CliRunner().invoke(main, ["extract", warc, "-o", str(tmp_path / "o"), "--langs", "en"])  # complete: skipped
    assert r.exit_code == 0, r.output
    lines = r.stdout.splitlines()
    assert lines[0] == (f"extract: 163 docs in, 121 kept, 42 removed (extract:http_status: 2, extract:no_math: 40); "
                        f"0 bad file(s) skipped; output in {tmp_path / 'o'} (already complete, skipped)")
    assert lines[1].startswith("extract: formulas by markup: mathjax2: ") and lines[1].endswith(", wikipedia: 34")
    assert lines[2] == ("extract: WARC records: metadata: 12, request: 12, response: 164, response_not_html: 1, "
                        "warcinfo: 1")


def test_bad_inputs_give_one_line_errors(shared_data: Path, tmp_path: Path) -> None:
    clipped = str(shared_data / "web" / "warc" / "clipped.warc.gz")
    r = CliRunner().invoke(main, ["extract", clipped, "-o", str(tmp_path / "o")])
    assert r.exit_code == 1
    assert r.stderr == (f"Error: {clipped}: the file is cut off in WARC record 1 (<urn:uuid:f3dfa8fa-f031-4a38-90cc-"
                        "1dcee3d07bb5>: 75,207 of 88,275 bytes); 0 complete record(s) before it were read. "
                        "Re-download the file, or pass --skip-bad-files to keep what was read\n")
    missing = str(tmp_path / "nowhere")
    r = CliRunner().invoke(main, ["extract", missing, "-o", str(tmp_path / "o2")])
    assert r.exit_code == 1
    assert r.stderr.startswith(f"Error: {missing}: no input files found (looked for .warc, .warc.gz, .warc.lz4, ")
    notwarc = tmp_path / "x.warc.gz"
    notwarc.write_bytes(gzip.compress(b"hello\n"))
    r = CliRunner().invoke(main, ["extract", str(notwarc), "-o", str(tmp_path / "o3")])
    assert r.exit_code == 1
    assert r.stderr == (f"Error: {notwarc}: no WARC record found (not a WARC file, or its compression is not gzip, "
                        "LZ4 or zstd); check the file or pass --skip-bad-files. Nothing was written.\n")
    assert not (tmp_path / "o3" / "_logs").exists()
    r = CliRunner().invoke(main, ["extract", clipped, "-o", str(tmp_path / "o4"), "--max-html-mb", "0"])
    assert r.exit_code == 2
    assert r.stderr == "Error: extract option 'max_html_mb' must be positive, got 0.0\n"
    r = CliRunner().invoke(main, ["extract", clipped, "-o", str(tmp_path / "o5"), "--input-format", "pdf"])
    assert r.exit_code == 2 and "Invalid value for '--input-format'" in r.stderr


def _parts(repo_root: Path, tmp_path: Path, n: int = 4) -> list[str]:
    raw = gzip.decompress((repo_root / "demo" / "warc" / "demo.warc.gz").read_bytes())
    recs = raw.split(b"WARC/1.0\r\n")[1:]
    size = len(recs) // n + 1
    out = []
    for k in range(n):
        p = tmp_path / f"part-{k}.warc"
        p.write_bytes(b"".join(b"WARC/1.0\r\n" + r for r in recs[k * size:(k + 1) * size]))
        out.append(str(p))
    return out


def test_killed_run_resumes_to_the_same_output(repo_root: Path, tmp_path: Path) -> None:
    parts = _parts(repo_root, tmp_path)
    cmd = [str(BIN / "mathcorpus"), "extract", *parts, "--workers", "1"]
    want = sorted(r["id"] for p in parts for b in iter_warc(p, 500, Counter()) for r in b.to_pylist())
    assert len(want) == len(set(want)) == 163
    out = tmp_path / "killed"
    proc = subprocess.Popen(cmd + ["-o", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    marker = out / "_logs" / "map" / "completions" / "00000"
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the CLI and its datatrove workers, mid-run
    proc.wait(timeout=30)
    assert not (out / "_run" / "summary.json").exists(), "the run finished before it could be killed"
    again = subprocess.run(cmd + ["-o", str(out), "--json"], capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    s = json.loads(again.stdout)
    assert (s["docs_in"], s["kept"], s["removed"]) == (163, 121, 42)
    # every page exactly once: kept or removed, none lost, none duplicated by the rerun
    got = read_table([str(out)]).column("id").to_pylist() + read_table([str(out / "_removed")]).column("id").to_pylist()
    assert sorted(got) == want
