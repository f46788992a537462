"""Bench: ``mathcorpus stats`` on a 1 GB Parquet folder keeps peak memory under 1 GB.

Peer: polars reading the same folder whole (``pl.read_parquet``), the naive way, measured in
the same run so the ratio shows what streaming saves.

    python bench/stats.py [--gb 1.0]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import make_parquet_folder, python, run_measured  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gb", type=float, default=1.0)
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "mathcorpus-bench"))
    args = ap.parse_args()
    folder = make_parquet_folder(Path(args.workdir) / f"stats-{args.gb}gb", int(args.gb * (1 << 30)))
    size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    exe = str(Path(python()).parent / "mathcorpus")
    wall, peak, proc = run_measured([exe, "stats", str(folder), "--json"])
    if proc.returncode != 0:
        print(proc.stderr, file=sys.stderr)
        return 1
    stats = json.loads(proc.stdout)
    peer = "import polars as pl,sys; df=pl.read_parquet(sys.argv[1]+'/*.parquet'); print(df.height)"
    pwall, ppeak, pproc = run_measured([python(), "-c", peer, str(folder)])
    print(f"input: {folder} ({size / 1e9:.2f} GB on disk, {stats['bytes'] / 1e9:.2f} GB of text, {stats['docs']:,} docs)")
    print(f"mathcorpus stats: {wall:.1f} s, peak RSS {peak:.0f} MB, {stats['bytes'] / 1e6 / wall:.1f} MB/s")
    print(f"peer polars.read_parquet (whole folder): {pwall:.1f} s, peak RSS {ppeak:.0f} MB")
    print(f"memory ratio peer/ours: {ppeak / peak:.1f}x; target peak < 1024 MB: {'PASS' if peak < 1024 else 'FAIL'}")
    return 0 if peak < 1024 else 1


if __name__ == "__main__":
    raise SystemExit(main())
