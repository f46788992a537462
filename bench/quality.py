"""Quality-scoring benchmarks: throughput against raw fastText predict, the head choice, encoder speed.

``throughput`` (default): the quality-score stage's task (model load, read Parquet shards,
preprocess on Arrow buffers, score, write kept and removed shards) with a fasttext-kind
model, against the peer, raw fastText ``model.predict(list_of_str, k=1)`` of a 6-class
fastText model (dim 256, wordNgrams 3, as FineMath's fastText baseline) trained on the same
grades, over the same documents already preprocessed into strings and in memory, in batches
of the same size, in the same run. Single-threaded; CPU time is the fair measure on a shared
machine. Target: ratio >= 0.85 (within 15%).

``heads``: why the fasttext kind uses presence features and a ridge head. A scripted grader
(one point per distinct word of a list present, at most 5) grades real pages from
../shared/data/corpus_samples (never the benchmark files); 600 labels train each candidate and
the other pages are held out: ridge on presence features (words; words + bigrams), ridge on
fastText supervised sentence vectors, and the expected value of a 6-class fastText.

``encoder``: documents per second of the encoder kind on CPU (or ``--device cuda``), with
randomly initialised encoders of real sizes built from configs (BERT-base: 768 x 12 layers;
e5-small-like: 384 x 12), against the raw forward passes of the same model on the same
batches. For a GPU machine without mathcorpus' other dependencies use bench/gpu_encoder.py.

Run:  .venv/bin/python bench/quality.py throughput --mb 30
      .venv/bin/python bench/quality.py heads
      .venv/bin/python bench/quality.py encoder --docs 64
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
_spec = importlib.util.spec_from_file_location("_bench_common", _BENCH / "_common.py")
_common = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(_common)  # type: ignore[union-attr]
REPO, SAMPLE, make_parquet_folder = _common.REPO, _common.SAMPLE, _common.make_parquet_folder
SHARED = REPO.parent / "shared" / "data" / "corpus_samples"
OUT = REPO / "bench" / "out" / "quality"

RULE_WORDS = ("theorem", "proof", "lemma", "equation", "integral", "derivative", "prime", "matrix", "polynomial",
              "probability", "therefore", "solve", "answer", "let", "find", "number", "total", "sum", "suppose",
              "show")
_WORD = re.compile(r"[a-z]+")


def grade(text: str) -> int:
    """The scripted grader: one point per distinct listed word present, at most 5."""
    words = set(_WORD.findall(text.lower()))
    return min(5, sum(w in words for w in RULE_WORDS))


def _read(path: Path) -> list[dict[str, Any]]:
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _ft_lines(labels: list[int], lines: list[str]) -> str:
    return "\n".join(f"__label__{g} {ln}" for g, ln in zip(labels, lines)) + "\n"


# ----------------------------------------------------------------------------- throughput
def throughput(mb: float, batch_rows: int, rounds: int) -> dict[str, Any]:
    import fasttext

    from corpus.runner import RunContext, RunOptions, run_task
    from corpus.shards import iter_batches, list_input_files, read_table
    from recall.features import preprocess
    from recall.quality import QualityLabels, QualityTrainConfig, train_quality
    from recall.quality_stage import QualityScoreConfig, QualityScoreStage

    OUT.mkdir(parents=True, exist_ok=True)
    base = read_table([str(SAMPLE)]).select(["id", "text"]).to_pylist()
    recs = [{"id": r["id"], "text": r["text"], "score": grade(r["text"])} for r in base]
    model_path = OUT / "bench-quality.npz"
    train_quality(QualityLabels.from_records(recs), str(model_path), QualityTrainConfig(eval_fraction=0.1))
    peer_path = OUT / "bench-6class.bin"
    with tempfile.TemporaryDirectory() as tmp:
        p = os.path.join(tmp, "t.txt")
        Path(p).write_text(_ft_lines([r["score"] for r in recs],
                                     preprocess([r["text"] for r in recs]).to_pylist()), encoding="utf-8")
        fasttext.train_supervised(p, dim=256, wordNgrams=3, bucket=200_000, epoch=3, thread=1, seed=0,
                                  verbose=0).save_model(str(peer_path))
    data = make_parquet_folder(OUT / f"input-{mb:g}mb", int(mb * 1e6), shard_bytes=int(mb * 1e6 / 4) + 1)
    files = list_input_files([str(data)])
    docs = 0
    text_bytes = 0
    lines: list[list[str]] = []
    for f in files:
        for b in iter_batches(f, batch_rows):
            docs += b.num_rows
            text_bytes += sum(len(t.encode("utf-8")) for t in b.column("text").to_pylist())
            lines.append(preprocess(b.column("text")).to_pylist())
    ft = fasttext.load_model(str(peer_path))
    ft.predict(lines[0][:10], k=1)
    opts = RunOptions(workers=1, tasks=1, batch_rows=batch_rows)

    def peer() -> tuple[float, float]:
        c, t = time.process_time(), time.monotonic()
        for batch in lines:
            ft.predict(batch, k=1)
        return time.process_time() - c, time.monotonic() - t

    def ours() -> tuple[float, float, dict[str, Any]]:
        out = OUT / "scored-task"
        shutil.rmtree(out, ignore_errors=True)
        stage = QualityScoreStage(QualityScoreConfig(model=str(model_path), min_quality=3))
        run = RunContext(stage_name=stage.name, files=files, output=str(out), options=opts, tasks=1,
                         removed_dir=str(out / "_removed"), side_dir=str(out / "_side"), logging_dir=str(out / "_logs"))
        stage.prepare(run)
        c, t = time.process_time(), time.monotonic()
        stats = run_task(stage, run, 0, 1)
        if stats["docs_in"] != docs:
            raise SystemExit(f"scored {stats['docs_in']} docs, expected {docs}")
        return time.process_time() - c, time.monotonic() - t, stats

    best = {k: float("inf") for k in ("peer_cpu", "peer_wall", "ours_cpu", "ours_wall")}
    for _ in range(rounds):
        pc_, pw = peer()
        oc, ow, _stats = ours()
        for k, v in (("peer_cpu", pc_), ("peer_wall", pw), ("ours_cpu", oc), ("ours_wall", ow)):
            best[k] = min(best[k], v)
    mbs = text_bytes / 1e6
    res = {"docs": docs, "text_mb": round(mbs, 1), "batch_rows": batch_rows, "rounds": rounds,
           **{k: round(v, 2) for k, v in best.items()},
           "ratio_cpu": round(best["peer_cpu"] / best["ours_cpu"], 3),
           "ratio_wall": round(best["peer_wall"] / best["ours_wall"], 3)}
    print(f"input: {data} ({res['text_mb']} MB of text, {docs:,} docs); batches of {batch_rows:,}; best of "
          f"{rounds} alternating rounds")
    print(f"peer  raw fastText predict(list, k=1), 6-class model (dim 256, wordNgrams 3), pre-made strings: "
          f"{best['peer_cpu']:.2f} s CPU ({mbs / best['peer_cpu']:.2f} MB/s), {best['peer_wall']:.2f} s wall")
    print(f"ours  quality-score task (model load, read, preprocess, score, write kept+removed shards): "
          f"{best['ours_cpu']:.2f} s CPU ({mbs / best['ours_cpu']:.2f} MB/s), {best['ours_wall']:.2f} s wall")
    verdict = "PASS" if res["ratio_cpu"] >= 0.85 else "FAIL"
    print(f"ratio ours/peer throughput: {res['ratio_cpu']:.3f} (CPU time; target >= 0.85: {verdict}); "
          f"wall {res['ratio_wall']:.3f}")
    return res


# ----------------------------------------------------------------------------- heads
def heads(n_labels: int, seed: int) -> dict[str, Any]:
    import fasttext

    from recall.features import preprocess
    from recall.quality import QualityLabels, QualityModel, QualityTrainConfig, spearman, train_quality

    rng = random.Random(seed)
    mp = _read(SHARED / "math_positive.jsonl.gz")
    stacks = [r for r in mp if r["source"] == "stacks_project"]
    pool = ([r for r in mp if r["source"] != "stacks_project"] + rng.sample(stacks, 500)
            + rng.sample(_read(SHARED / "en_math_word_problems.jsonl.gz"), 500)
            + rng.sample(_read(SHARED / "en_web_pages.jsonl.gz"), 250))
    rng.shuffle(pool)
    texts = [r["text"] for r in pool]
    y = np.array([grade(t) for t in texts], dtype=np.float64)
    tr, te = slice(0, n_labels), slice(n_labels, None)
    lines = preprocess(texts).to_pylist()
    res: dict[str, Any] = {"labels": n_labels, "held_out": len(texts) - n_labels,
                           "held_out_grades": {str(g): int((y[te] == g).sum()) for g in range(6)}}
    print(f"{n_labels} labels, {res['held_out']} held-out real pages; held-out grades {res['held_out_grades']}")
    with tempfile.TemporaryDirectory() as tmp:
        recs = [{"id": str(i), "text": t, "score": s} for i, (t, s) in enumerate(zip(texts[tr], y[tr].tolist()))]
        for ng in (1, 2):
            path = os.path.join(tmp, f"q{ng}.npz")
            t0 = time.process_time()
            train_quality(QualityLabels.from_records(recs), path, QualityTrainConfig(eval_fraction=0.0, ngrams=ng))
            rho = spearman(y[te], QualityModel(path).score(texts[te]))
            key = "presence_ridge_words" if ng == 1 else "presence_ridge_words_bigrams"
            res[key] = round(rho or 0.0, 4)
            print(f"  ridge on presence features (ngrams {ng}): Spearman {rho:.4f} "
                  f"({time.process_time() - t0:.1f} s CPU to train)")
        p = os.path.join(tmp, "ft.txt")
        Path(p).write_text(_ft_lines(y[tr].astype(int).tolist(), lines[tr]), encoding="utf-8")
        best_ev, best_sv = -1.0, -1.0
        for dim, epoch, lr in ((64, 10, 0.3), (64, 25, 0.5), (100, 50, 0.5)):
            m = fasttext.train_supervised(p, dim=dim, epoch=epoch, lr=lr, wordNgrams=2, minCount=1, bucket=200_000,
                                          thread=1, seed=0, verbose=0)
            labs, probs = m.predict(lines[te], k=-1)
            ev = np.array([sum(float(lab[len("__label__"):]) * q for lab, q in zip(ls, ps))
                           for ls, ps in zip(labs, probs)])
            v = np.array([m.get_sentence_vector(ln) for ln in lines])
            v = np.hstack([v, np.ones((len(v), 1))])
            a = v[tr]
            w = np.linalg.solve(a.T @ a + 0.1 * np.eye(a.shape[1]), a.T @ y[tr])
            r_ev, r_sv = spearman(y[te], ev) or 0.0, spearman(y[te], v[te] @ w) or 0.0
            best_ev, best_sv = max(best_ev, r_ev), max(best_sv, r_sv)
            print(f"  fastText 6-class dim {dim} epoch {epoch} lr {lr}: expected value {r_ev:.4f}, "
                  f"ridge on sentence vectors {r_sv:.4f}")
        res["fasttext_6class_expected_value_best"] = round(best_ev, 4)
        res["fasttext_sentence_vector_ridge_best"] = round(best_sv, 4)
    return res


# ----------------------------------------------------------------------------- encoder
def encoder_speed(docs: int, device: str, max_length: int, batch_size: int, threads: int) -> dict[str, Any]:
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    from corpus.encoder import Encoder

    if threads:
        torch.set_num_threads(threads)
    texts = [r["text"] for r in _read(SAMPLE / "sample-00.jsonl.gz")[:docs]]
    tok_json = REPO / "corpus" / "data" / "tokenizers" / "qwen2.5" / "tokenizer.json"
    res: dict[str, Any] = {"docs": len(texts), "device": device, "max_length": max_length, "batch_size": batch_size,
                           "torch_threads": torch.get_num_threads()}
    for name, hidden, layers, heads_ in (("e5-small-like", 384, 12, 12), ("bert-base", 768, 12, 12)):
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            BertModel(BertConfig(vocab_size=151936, hidden_size=hidden, num_hidden_layers=layers,
                                 num_attention_heads=heads_, intermediate_size=4 * hidden,
                                 max_position_embeddings=512)).save_pretrained(tmp)
            PreTrainedTokenizerFast(tokenizer_file=str(tok_json), pad_token="<|endoftext|>").save_pretrained(tmp)
            enc = Encoder(tmp, device=device, max_length=max_length)
            enc.embed(texts[:batch_size], batch_size)  # warm up
            t0 = time.monotonic()
            enc.embed(texts, batch_size)
            ours = time.monotonic() - t0
            # peer: the same model's raw forward passes on the same batches, tokenized beforehand
            order = np.argsort([-len(t) for t in texts], kind="stable")
            batches = [enc.tokenizer([texts[i] for i in order[k:k + batch_size]], padding=True, truncation=True,
                                     max_length=max_length, return_tensors="pt")
                       for k in range(0, len(texts), batch_size)]
            t0 = time.monotonic()
            with torch.inference_mode():
                for b in batches:
                    enc.model(input_ids=b["input_ids"].to(device),
                              attention_mask=b["attention_mask"].to(device)).last_hidden_state.cpu()
            raw = time.monotonic() - t0
        res[name] = {"docs_per_s": round(len(texts) / ours, 2), "raw_forward_docs_per_s": round(len(texts) / raw, 2),
                     "ratio": round(raw / ours, 3)}
        print(f"{name} ({hidden} x {layers} layers), {device}, max_length {max_length}, batch {batch_size}: "
              f"{len(texts) / ours:.2f} docs/s (tokenize + forward + pool), raw forward {len(texts) / raw:.2f} "
              f"docs/s; ratio {raw / ours:.3f}", flush=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="throughput", choices=["throughput", "heads", "encoder"])
    ap.add_argument("--mb", type=float, default=30.0, help="throughput: MB of text to score")
    ap.add_argument("--rounds", type=int, default=2, help="throughput: alternating rounds (best kept)")
    ap.add_argument("--batch-rows", type=int, default=8192, help="throughput: rows per batch (both sides)")
    ap.add_argument("--labels", type=int, default=600, help="heads: number of training labels")
    ap.add_argument("--seed", type=int, default=3, help="heads: shuffle seed")
    ap.add_argument("--docs", type=int, default=64, help="encoder: documents to embed")
    ap.add_argument("--device", default="cpu", help="encoder: torch device")
    ap.add_argument("--max-length", type=int, default=512, help="encoder: tokens per document")
    ap.add_argument("--batch-size", type=int, default=16, help="encoder: documents per forward pass")
    ap.add_argument("--threads", type=int, default=0, help="encoder: torch CPU threads (0 = default)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    if a.what == "throughput":
        res = throughput(a.mb, a.batch_rows, a.rounds)
    elif a.what == "heads":
        res = heads(a.labels, a.seed)
    else:
        res = encoder_speed(a.docs, a.device, a.max_length, a.batch_size, a.threads)
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
