"""Reliability: kill -9 and resume, bad input of every kind, disk full and read-only output."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from corpus.cli import main
from tests.conftest import write_jsonl
from tests.corpus.test_pipeline import tree_digest

BIN = Path(sys.executable).parent


def make_inputs(d: Path, files: int = 6, per_file: int = 200) -> Path:
    for f in range(files):
        write_jsonl(d / f"p{f}.jsonl", [{"id": f"{f}-{i}", "text": f"document {f} {i} " * (1 + i % 9), "source": "web"}
                                       for i in range(per_file)])
    return d


PIPE = """workdir: {w}
inputs: [{inp}]
executor: {{workers: 2}}
stages:
  - stage: copy
  - {{name: c2, stage: copy}}
  - {{name: c3, stage: copy}}
"""


def test_kill_9_at_random_points_then_resume_equals_clean_run(tmp_path: Path) -> None:
    inp = make_inputs(tmp_path / "in")
    clean = tmp_path / "clean"
    (tmp_path / "clean.yaml").write_text(PIPE.format(w=clean, inp=inp))
    t0 = time.monotonic()
    subprocess.run([str(BIN / "mathcorpus"), "pipeline", "run", str(tmp_path / "clean.yaml")], check=True,
                   capture_output=True, timeout=300)
    total = time.monotonic() - t0
    want = tree_digest(clean)
    rng = random.Random(7)
    for k in range(3):
        w = tmp_path / f"killed{k}"
        cfg = tmp_path / f"k{k}.yaml"
        cfg.write_text(PIPE.format(w=w, inp=inp))
        proc = subprocess.Popen([str(BIN / "mathcorpus"), "pipeline", "run", str(cfg)], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.2, total * 0.9))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        r = subprocess.run([str(BIN / "mathcorpus"), "pipeline", "run", str(cfg)], capture_output=True, text=True,
                           timeout=300)
        assert r.returncode == 0, r.stderr
        assert tree_digest(w) == {k2.replace(str(clean), str(w)): v for k2, v in want.items()}


def run_copy(args: list[str]) -> tuple[int, str]:
    """Exit code and stderr without the '[i/n] stage ...' progress lines."""
    r = CliRunner().invoke(main, ["pipeline", "run", *args])
    return r.exit_code, "".join(line for line in r.stderr.splitlines(keepends=True) if not line.startswith("["))


def one_stage(tmp_path: Path, inp: Path, extra: str = "") -> Path:
    p = tmp_path / "p.yaml"
    p.write_text(f"workdir: {tmp_path / 'w'}\ninputs: [{inp}]\n{extra}stages:\n  - stage: copy\n")
    return p


@pytest.mark.parametrize("case", ["truncated_parquet", "zero_byte", "wrong_type", "invalid_utf8"])
def test_bad_file_is_a_clear_error_or_a_counted_skip(tmp_path: Path, case: str) -> None:
    inp = make_inputs(tmp_path / "in", files=2, per_file=20)
    bad = inp / {"truncated_parquet": "bad.parquet", "zero_byte": "bad.jsonl", "wrong_type": "bad.parquet",
                 "invalid_utf8": "bad.jsonl"}[case]
    if case == "truncated_parquet":
        pq.write_table(pa.table({"id": ["a"] * 100, "text": ["t"] * 100}), bad)
        bad.write_bytes(bad.read_bytes()[:-50])
        expect = f"Error: {bad}: not a readable Parquet file ("
    elif case == "zero_byte":
        bad.write_bytes(b"")
        expect = f"Error: {bad}: the file is empty (0 bytes); remove it or pass --skip-bad-files. Nothing was written."
    elif case == "wrong_type":
        pq.write_table(pa.table({"id": ["a"], "text": [1.5]}), bad)
        expect = (f"Error: {bad}: field 'text' has type double, expected string. Convert it to a string column "
                  "before this stage. Nothing was written.")
    else:
        bad.write_bytes(b'{"id": "z", "text": "\xff\xfe"}\n')
        expect = (f"Error: {bad}: invalid UTF-8 on line 1 (byte 21); re-encode the file as UTF-8 (e.g. iconv -f "
                  "latin1 -t utf-8) or pass --skip-bad-files. Nothing was written.")
    code, err = run_copy([str(one_stage(tmp_path, inp))])
    assert code == 1
    assert err.startswith(expect), err
    assert "Traceback" not in err
    assert not (tmp_path / "w" / "00-copy").exists() or not any((tmp_path / "w" / "00-copy").glob("*.parquet"))
    code, err = run_copy([str(one_stage(tmp_path, inp)), "--skip-bad-files", "--workdir", str(tmp_path / "w2")])
    assert code == 0, err
    assert "1 bad file(s) skipped" in err


def test_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    code, err = run_copy([str(one_stage(tmp_path, tmp_path / "empty"))])
    assert code == 1
    assert err == (f"Error: {tmp_path / 'empty'}: no input files found (looked for .parquet, .jsonl, .jsonl.gz, "
                   ".jsonl.zst, .json.gz, .ndjson); check the path or glob\n")


def test_50mb_single_document(tmp_path: Path) -> None:
    inp = tmp_path / "in"
    write_jsonl(inp / "big.jsonl", [{"id": "big", "text": "x y z " * (50 * 1024 * 1024 // 6)}, {"id": "s", "text": "a"}])
    code, err = run_copy([str(one_stage(tmp_path, inp))])
    assert code == 0, err
    assert "2 docs in, 2 kept" in err


def _mount_tmpfs(path: Path, opts: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], capture_output=True)
    return r.returncode == 0


def test_disk_full_fails_cleanly_without_complete_looking_shard(tmp_path: Path) -> None:
    mnt = tmp_path / "full"
    if os.geteuid() != 0 or not _mount_tmpfs(mnt, "size=256k"):
        pytest.skip("needs root and tmpfs mounts to simulate a full disk")
    try:
        inp = make_inputs(tmp_path / "in", files=1, per_file=30000)
        code, err = run_copy([str(one_stage(tmp_path, inp)), "--workdir", str(mnt / "w")])
        assert code == 1
        assert err.startswith("Error: "), err
        assert ("No space left on device" in err or "check free space" in err) and "Traceback" not in err
        shards = list((mnt / "w").rglob("*.parquet"))
        for s in shards:  # any shard with a final name must be a whole, readable file
            pq.ParquetFile(s).metadata  # noqa: B018
        assert not list((mnt / "w").rglob("*.tmp"))
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_read_only_output_fails_cleanly(tmp_path: Path) -> None:
    mnt = tmp_path / "ro"
    if os.geteuid() != 0 or not _mount_tmpfs(mnt, "ro,size=1m"):
        pytest.skip("needs root and tmpfs mounts to simulate read-only output")
    try:
        inp = make_inputs(tmp_path / "in", files=1, per_file=10)
        code, err = run_copy([str(one_stage(tmp_path, inp)), "--workdir", str(mnt / "w")])
        assert code == 1
        assert err.startswith("Error: ") and "Read-only file system" in err, err
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
