"""Bench: TokenDataset throughput vs Megatron-Core's GPTDataset and datatrove's DatatroveFolderDataset.

One export of the bundled demo sample (``demo/sample``, ~2,500 real documents, 1.57M
tokens) is written as ``--format megatron`` and ``--format nanotron`` (the same documents in
the same order) and, for our loader only, ``--format parquet`` (packed rows, decoded one row
group at a time); then each reader iterates it in its shuffled training order, ``--seq-len``
tokens per sample, with no model in the loop:

* ours: ``TokenDataset`` over each export: every item is built in full (``input_ids``,
  ``labels`` with -100 at document ends, ``position_ids`` restarting per document);
* Megatron-Core 0.16 ``GPTDataset`` built by ``BlendedMegatronDatasetBuilder`` over the
  megatron export (``reset_position_ids``, ``eod_mask_loss``; attention mask off), index
  building timed separately;
* datatrove ``DatatroveFolderDataset`` over the nanotron ``.ds`` files (``shuffle=True``,
  ``return_positions=True``: the same information as ours).

Throughput is tokens per CPU-second of the measuring process (= per core: every reader runs
single-threaded here), so the figure does not move with other people's load on a shared
machine; wall time is printed too. Each reader runs passes over its epoch until
``--min-seconds`` of CPU time are spent.

    python bench/loader.py [--seq-len 2048] [--min-seconds 3] [--work /tmp/loader-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def build_exports(work: Path, seq_len: int) -> dict[str, Path]:
    from click.testing import CliRunner

    from corpus.cli import main

    out = {}
    for fmt in ("megatron", "nanotron", "parquet"):
        dest = work / fmt
        if not (dest / "manifest.json").exists():
            res = CliRunner().invoke(main, ["export", str(REPO / "demo" / "sample"), "-o", str(dest), "--format", fmt,
                                            "--seq-len", str(seq_len), "--seed", "1", "--overwrite"],
                                     catch_exceptions=False)
            if res.exit_code:
                raise SystemExit(res.output)
        out[fmt] = dest
    return out


def measure(name: str, one_pass: Callable[[], int], min_seconds: float) -> dict[str, float]:
    """Run ``one_pass`` (an epoch; returns its tokens) until ``min_seconds`` of CPU time are spent."""
    tokens = 0
    c0, w0 = time.process_time(), time.perf_counter()
    passes = 0
    while True:
        tokens += one_pass()
        passes += 1
        if time.process_time() - c0 >= min_seconds:
            break
    cpu, wall = time.process_time() - c0, time.perf_counter() - w0
    return {"reader": name, "tokens": tokens, "passes": passes, "cpu_s": cpu, "wall_s": wall,
            "tokens_per_cpu_s": tokens / cpu}


def megatron_dataset(prefixes: list[str], weights: list[float], seq_len: int, n: int, vocab: int, eod: int) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
        from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

        from tests.corpus.export.test_readers import megatron_tokenizer

    cfg = GPTDatasetConfig(random_seed=1, sequence_length=seq_len, blend=(prefixes, weights), split="100,0,0",
                           path_to_cache=None, tokenizer=megatron_tokenizer(vocab, eod), reset_position_ids=True,
                           reset_attention_mask=False, eod_mask_loss=True, create_attention_mask=False)
    return BlendedMegatronDatasetBuilder(GPTDataset, [n, 0, 0], lambda: True, cfg).build()[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--min-seconds", type=float, default=3.0)
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "mathcorpus-loader-bench"))
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    exports = build_exports(work, args.seq_len)
    print(f"exports ready in {time.perf_counter() - t0:.1f}s: {work}", file=sys.stderr)

    from corpus.export.cli import blend_pairs
    from corpus.export.loader import TokenDataset

    L = args.seq_len
    rows = []
    for fmt in ("megatron", "nanotron", "parquet"):
        ds = TokenDataset(exports[fmt], seq_len=L, seed=1)

        def ours(ds: TokenDataset = ds) -> int:  # the public iterator: a new shuffled epoch each pass
            return sum(int(item["input_ids"].size) for item in ds)

        rows.append(measure(f"mathcorpus TokenDataset ({fmt})", ours, args.min_seconds))
        if fmt == "megatron":
            n_samples = ds.n
    m = json.loads((exports["megatron"] / "manifest.json").read_text())
    pairs = blend_pairs([str(exports["megatron"])])
    c0 = time.process_time()
    gpt = megatron_dataset([p for _, p in pairs], [w for w, _ in pairs], L, n_samples,
                           m["tokenizer"]["vocab_size"], m["tokenizer"]["eos_id"])
    build = time.process_time() - c0

    def megatron() -> int:
        return sum(int(gpt[i]["tokens"].numel()) for i in range(len(gpt)))

    r = measure("Megatron-Core GPTDataset (BlendedDataset)", megatron, args.min_seconds)
    r["index_build_cpu_s"] = build
    rows.append(r)
    from datatrove.utils.dataset import DatatroveFolderDataset

    mn = json.loads((exports["nanotron"] / "manifest.json").read_text())
    dt = DatatroveFolderDataset(str(exports["nanotron"]), seq_len=L, token_size=np.dtype(mn["dtype"]).itemsize,
                                shuffle=True, seed=1, return_positions=True)

    def datatrove() -> int:  # seq_len + 1 tokens per sample, seq_len of them trained
        return sum(int(dt[i]["input_ids"].numel()) - 1 for i in range(len(dt)))

    rows.append(measure("datatrove DatatroveFolderDataset", datatrove, args.min_seconds))
    ours_best = rows[0]["tokens_per_cpu_s"]
    if args.json:
        print(json.dumps({"seq_len": L, "rows": rows}, indent=2))
        return
    print(f"seq_len {L}; tokens per CPU-second (one core); ratio = ours (megatron export) / reader")
    print(f"{'reader':48s} {'tokens':>12s} {'cpu s':>7s} {'wall s':>7s} {'M tok/s/core':>13s} {'ratio':>7s}")
    for r in rows:
        print(f"{r['reader']:48s} {r['tokens']:12,d} {r['cpu_s']:7.2f} {r['wall_s']:7.2f} "
              f"{r['tokens_per_cpu_s'] / 1e6:13.2f} {ours_best / r['tokens_per_cpu_s']:7.2f}")
    build = next(r["index_build_cpu_s"] for r in rows if "index_build_cpu_s" in r)
    print(f"Megatron index build: {build:.2f} CPU s (not in its throughput)")


if __name__ == "__main__":
    main()
