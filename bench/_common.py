"""Helpers shared by the bench scripts: build large inputs from the bundled sample, measure peak RSS."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "demo" / "sample"


def make_parquet_folder(out: Path, target_bytes: int, shard_bytes: int = 128 << 20) -> Path:
    """Repeat the bundled sample (ids made unique per copy) until ``target_bytes`` of text exist."""
    from corpus.shards import read_table

    marker = out / f".done-{target_bytes}"
    if marker.exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    base = read_table([str(SAMPLE)]).select(["id", "text", "source", "lang", "url"])
    text_bytes = pc.sum(pc.binary_length(base.column("text"))).as_py()
    copies = max(1, -(-target_bytes // text_bytes))
    per_shard = max(1, shard_bytes // text_bytes)
    shard, batch = 0, []
    for c in range(copies):
        ids = pc.binary_join_element_wise(base.column("id"), pa.scalar(f"-copy{c}"), "")
        batch.append(base.set_column(0, "id", ids))
        if len(batch) == per_shard or c == copies - 1:
            pq.write_table(pa.concat_tables(batch), out / f"big-{shard:04d}.parquet", compression="zstd",
                           row_group_size=16384)
            shard += 1
            batch = []
    marker.write_text("ok")
    return out


_WRAP = ("import resource, subprocess, sys\n"
         "p = subprocess.run(sys.argv[2:])\n"
         "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
         "sys.exit(p.returncode)\n")


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    """Run ``cmd`` under a fresh wrapper; return (wall s, peak RSS MB of cmd and its children, result).

    The wrapper reads RUSAGE_CHILDREN for this one command only, so successive
    measurements in one bench run do not see each other's peaks.
    """
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".rss", delete=False) as fh:
        rss_file = fh.name
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", _WRAP, rss_file, *cmd], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    wall = time.monotonic() - t0
    try:
        peak_kb = int(Path(rss_file).read_text() or 0)
    finally:
        os.unlink(rss_file)
    return wall, peak_kb / 1024, proc


def python() -> str:
    return sys.executable
