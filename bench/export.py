"""Bench: ``mathcorpus export`` end to end vs datatrove's ``DocumentTokenizer`` on the same texts.

Input: the real mixed English/Chinese/LaTeX documents of ../shared/data/corpus_samples
(repeated ``--copies`` times with unique ids), as ``--files`` Parquet shards.

Peer, in the same run on the same files: datatrove ``ParquetReader`` -> ``DocumentTokenizer``
(HF tokenizers batch encoding, EOS appended, per-task files), with
``LocalPipelineExecutor(tasks=--files, workers=--workers)``. Ours: ``mathcorpus export
--format nanotron`` with the same tasks and workers (tokenize, global shuffle, merge, write).
Both outputs are uint32 token streams; ours is put back in input order through
``documents.parquet`` and must be byte-identical to the peer's.

The ratio is taken on CPU time (user + system of the whole process tree, i.e. core-seconds,
what a cluster bills), which stays meaningful on this shared 2-core box where wall time
swings with other people's load; wall times are printed too. With the default
``--workers 1`` every task runs inside the measured process (HF tokenizers still uses all
cores through its own threads), so all CPU time is counted; forkserver worker processes of
``--workers > 1`` are not children the measurement can collect.

``--gb N`` instead measures peak memory of our export alone on an N GB Parquet input
(the bundled demo sample repeated), to show it stays bounded. It runs with one worker, so
every task and phase runs in the measured process (forkserver workers are not children
whose peak RSS the wrapper can collect).

    python bench/export.py [--copies 2] [--files 4] [--workers 1]
    python bench/export.py --gb 1.0
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, make_parquet_folder, python, run_measured  # noqa: E402

SAMPLES = REPO.parent / "shared" / "data" / "corpus_samples"
TOKENIZER = REPO / "corpus" / "data" / "tokenizers" / "qwen2.5" / "tokenizer.json"

PEER = """
import sys
from datatrove.executor import LocalPipelineExecutor
from datatrove.pipeline.readers import ParquetReader
from datatrove.pipeline.tokens import DocumentTokenizer
inp, out, tok, tasks, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
if __name__ == "__main__":
    LocalPipelineExecutor(pipeline=[
        ParquetReader(inp, text_key="text", id_key="id"),
        DocumentTokenizer(out, tokenizer_name_or_path=tok, eos_token="<|endoftext|>", shuffle_documents=False),
    ], tasks=tasks, workers=workers, logging_dir=out + "/_logs").run()
"""


def build_input(folder: Path, copies: int, files: int) -> tuple[int, int]:
    """Write the corpus samples ``copies`` times as ``files`` Parquet shards; return (docs, text bytes)."""
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    rows = []
    for path in sorted(SAMPLES.glob("*.jsonl.gz")):
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh]
    docs = []
    for c in range(copies):
        docs += [{"id": f"{r['id']}-c{c}", "text": r["text"], "source": r["source"]} for r in rows]
    for f in range(files):
        part = docs[f * len(docs) // files:(f + 1) * len(docs) // files]
        pq.write_table(pa.Table.from_pylist(part), folder / f"part-{f:03d}.parquet")
    return len(docs), sum(len(d["text"].encode()) for d in docs)


_WRAP = ("import resource, subprocess, sys, time\n"
         "t = time.monotonic()\n"
         "p = subprocess.run(sys.argv[2:], capture_output=True, text=True)\n"
         "r = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
         "open(sys.argv[1], 'w').write(f'{time.monotonic() - t} {r.ru_utime + r.ru_stime} {r.ru_maxrss}')\n"
         "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr); sys.exit(p.returncode)\n")


def measure(cmd: list[str]) -> tuple[float, float, float, subprocess.CompletedProcess]:
    """(wall s, CPU s of the command's process tree, peak RSS MB, result)."""
    with tempfile.NamedTemporaryFile(suffix=".use", delete=False) as fh:
        path = fh.name
    proc = subprocess.run([python(), "-c", _WRAP, path, *cmd], capture_output=True, text=True)
    wall, cpu, rss = (float(x) for x in Path(path).read_text().split())
    os.unlink(path)
    return wall, cpu, rss / 1024, proc


def ours_in_input_order(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """Our tokens reordered to input order via documents.parquet, and the document lengths."""
    sys.path.insert(0, str(REPO))
    from corpus.export.writers import ExportReader

    r = ExportReader(str(out))
    got = sorted(((row["input_index"], ids) for row, ids in r.documents()), key=lambda x: x[0])
    return (np.concatenate([ids for _, ids in got]).astype("<u4"),
            np.array([ids.size for _, ids in got], dtype=np.int64))


def peer_tokens(out: Path, files: int) -> tuple[np.ndarray, np.ndarray]:
    tokens, lens = [], []
    for rank in range(files):
        p = out / f"{rank:05d}_unshuffled.ds"
        tokens.append(np.fromfile(p, dtype="<u4"))
        ends = np.fromfile(str(p) + ".index", dtype="<u8").astype(np.int64)
        lens.append(np.diff(np.r_[0, ends]))
    return np.concatenate(tokens), np.concatenate(lens)


def speed(args: argparse.Namespace, work: Path) -> int:
    inp = work / "in"
    n_docs, n_bytes = build_input(inp, args.copies, args.files)
    exe = str(Path(python()).parent / "mathcorpus")
    ours_out, peer_out = work / "ours", work / "peer"
    for d in (ours_out, peer_out):
        shutil.rmtree(d, ignore_errors=True)
    wall, cpu, _, proc = measure([exe, "export", str(inp), "-o", str(ours_out), "--format", "nanotron",
                                  "--workers", str(args.workers), "--seed", "1", "--json"])
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, file=sys.stderr)
        return 1
    manifest = json.loads((ours_out / "manifest.json").read_text())
    pwall, pcpu, _, pproc = measure([python(), "-c", PEER, str(inp), str(peer_out), str(TOKENIZER),
                                     str(args.files), str(args.workers)])
    if pproc.returncode != 0:
        print(pproc.stdout[-3000:], pproc.stderr[-3000:], file=sys.stderr)
        return 1
    ours_tok, ours_len = ours_in_input_order(ours_out)
    peer_tok, peer_len = peer_tokens(peer_out, args.files)
    identical = ours_tok.tobytes() == peer_tok.tobytes() and np.array_equal(ours_len, peer_len)
    tokens = int(manifest["output"]["tokens"])
    ratio = pcpu / cpu
    print(f"input: {n_docs:,} docs, {n_bytes / 1e6:.1f} MB of text (corpus_samples x{args.copies}), "
          f"{args.files} Parquet files; tasks={args.files} workers={args.workers}; {tokens:,} tokens")
    print(f"mathcorpus export --format nanotron (engine {manifest['tokenizer']['engine']}): {cpu:.1f} CPU s "
          f"({tokens / cpu / 1e6:.2f} M tokens per CPU s), wall {wall:.1f} s")
    print(f"peer datatrove ParquetReader+DocumentTokenizer (HF tokenizers): {pcpu:.1f} CPU s "
          f"({tokens / pcpu / 1e6:.2f} M tokens per CPU s), wall {pwall:.1f} s")
    print(f"throughput ratio ours/peer: {ratio:.1f}x per CPU second (target >= 4x: "
          f"{'PASS' if ratio >= 4 else 'FAIL'}), {pwall / wall:.1f}x in wall time; "
          f"token ids byte-identical to the peer: {identical}")
    return 0 if identical and ratio >= 4 else 1


def memory(args: argparse.Namespace, work: Path) -> int:
    folder = make_parquet_folder(work / f"export-{args.gb}gb", int(args.gb * (1 << 30)))
    size = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    exe = str(Path(python()).parent / "mathcorpus")
    out = work / "mem-out"
    shutil.rmtree(out, ignore_errors=True)
    wall, peak, proc = run_measured([exe, "export", str(folder), "-o", str(out), "--format", "megatron",
                                     "--workers", "1", "--mix", "web=1.5,qa=0.5", "--json"])
    if proc.returncode != 0:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return 1
    m = json.loads((out / "manifest.json").read_text())
    text = json.loads(proc.stdout)["summary"]["bytes_in"]
    print(f"input: {folder} ({size / 1e9:.2f} GB on disk, {text / 1e9:.2f} GB of text, "
          f"{m['totals']['before']['documents']:,} docs)")
    print(f"mathcorpus export --format megatron --workers 1: {wall:.1f} s, "
          f"{m['output']['tokens']:,} tokens out ({m['output']['documents']:,} docs, {len(m['shards'])} shards), "
          f"engine {m['tokenizer']['engine']}, peak RSS {peak:.0f} MB")
    print(f"target peak < 1024 MB: {'PASS' if peak < 1024 else 'FAIL'}")
    shutil.rmtree(out, ignore_errors=True)
    return 0 if peak < 1024 else 1


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--copies", type=int, default=2, help="Times the corpus samples are repeated.")
    ap.add_argument("--files", type=int, default=4, help="Input Parquet files (= tasks).")
    ap.add_argument("--workers", type=int, default=1, help="Worker processes, for both (see above).")
    ap.add_argument("--gb", type=float, default=0.0, help="Memory mode: our export alone on N GB of input.")
    ap.add_argument("--workdir", default=str(Path(tempfile.gettempdir()) / "mathcorpus-bench"))
    args = ap.parse_args()
    work = Path(args.workdir) / "export"
    work.mkdir(parents=True, exist_ok=True)
    return memory(args, work) if args.gb else speed(args, work)


if __name__ == "__main__":
    raise SystemExit(main())
