"""Recall benchmarks: scoring throughput against raw fastText predict, and classifier quality.

``throughput`` (default): ``recall score`` (the recall-score stage's task: model load, read
Parquet shards, preprocess on Arrow buffers, batch predict, write kept and removed shards)
against the peer, raw fastText ``model.predict(list_of_str, k=1)`` over the same documents,
already preprocessed into strings and already in memory, in batches of the same size, with
the same model, in the same run. Both are single-threaded; on a shared machine CPU time is
the fair measure, so the ratio is computed from it (wall times, and the end-to-end
``run_stage`` wall time with worker start-up, are printed too). Target: ratio >= 0.85.

``quality``: English and Chinese models trained on 80% of ../shared/data/corpus_samples
(split by id hash) and evaluated on the other 20%; then leave-one-source-out: for every
source, a model trained without it is scored on it. Chinese segmentation is measured both
ways (character n-grams and jieba). Never reads the benchmark files.

Run:  .venv/bin/python bench/recall.py throughput --mb 60     (about 2 minutes)
      .venv/bin/python bench/recall.py quality               (about 3 CPU minutes; 40 models)
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# This file is named like the recall package: take its folder off sys.path so that
# `import recall` finds the package, and load the shared helpers by path.
_BENCH = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _BENCH]
_spec = importlib.util.spec_from_file_location("_bench_common", _BENCH / "_common.py")
_common = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(_common)  # type: ignore[union-attr]
REPO, SAMPLE, make_parquet_folder = _common.REPO, _common.SAMPLE, _common.make_parquet_folder

SHARED = REPO.parent / "shared" / "data" / "corpus_samples"
OUT = REPO / "bench" / "out" / "recall"


# ----------------------------------------------------------------------------- throughput
def throughput(mb: float, bucket: int, batch_rows: int, rounds: int) -> dict[str, Any]:
    from corpus.runner import RunContext, RunOptions, run_stage, run_task
    from corpus.shards import iter_batches, list_input_files
    from recall.features import preprocess
    from recall.model import RecallModel, TrainConfig, train_files
    from recall.stage import ScoreConfig, ScoreStage

    OUT.mkdir(parents=True, exist_ok=True)
    model_path = OUT / f"bench-{bucket}.bin"
    if not model_path.exists():
        cfg = TrainConfig(lang="en", bucket=bucket)  # DeepSeekMath defaults otherwise (dim 256, ngrams 3)
        t = time.monotonic()
        train_files([str(SAMPLE)], str(model_path), cfg)
        print(f"trained {model_path.name} (dim 256, wordNgrams 3, bucket {bucket:,}) in {time.monotonic() - t:.1f} s",
              file=sys.stderr)
    data = make_parquet_folder(OUT / f"input-{mb:g}mb", int(mb * 1e6), shard_bytes=int(mb * 1e6 / 4) + 1)
    files = list_input_files([str(data)])
    docs = 0
    text_bytes = 0
    lines: list[list[str]] = []
    model = RecallModel(str(model_path))
    # the peer's strings: the same documents, preprocessed once, outside the timed loop
    for f in files:
        for b in iter_batches(f, batch_rows):
            docs += b.num_rows
            text_bytes += int(pc.sum(pc.binary_length(b.column("text"))).as_py())
            lines.append(preprocess(b.column("text"), model.segmenter).to_pylist())
    ft = model.fasttext
    ft.predict(lines[0][:10], k=1)  # warm up
    opts = RunOptions(workers=1, tasks=1, batch_rows=batch_rows)

    def peer() -> tuple[float, float]:
        c, t = time.process_time(), time.monotonic()
        for batch in lines:
            ft.predict(batch, k=1)
        return time.process_time() - c, time.monotonic() - t

    def ours_task() -> tuple[float, float]:
        """What one worker runs (setup with model load, read, score, write), timed in this process."""
        out = OUT / "scored-task"
        shutil.rmtree(out, ignore_errors=True)
        stage = ScoreStage(ScoreConfig(model=str(model_path), threshold=0.5))
        run = RunContext(stage_name=stage.name, files=files, output=str(out), options=opts, tasks=1,
                         removed_dir=str(out / "_removed"), side_dir=str(out / "_side"),
                         logging_dir=str(out / "_logs"))
        stage.prepare(run)
        c, t = time.process_time(), time.monotonic()
        stats = run_task(stage, run, 0, 1)
        if stats["docs_in"] != docs:
            raise SystemExit(f"scored {stats['docs_in']} docs, expected {docs}")
        return time.process_time() - c, time.monotonic() - t

    def ours_end_to_end() -> tuple[float, dict[str, Any]]:
        out = OUT / "scored"
        shutil.rmtree(out, ignore_errors=True)
        t = time.monotonic()
        summary = run_stage(ScoreStage(ScoreConfig(model=str(model_path), threshold=0.5)), [str(data)], str(out),
                            opts)
        return time.monotonic() - t, summary

    # The machine is shared: CPU time is the fair measure of single-threaded work; rounds
    # alternate peer and ours, and each keeps its best round.
    best = {k: float("inf") for k in ("peer_cpu", "peer_wall", "task_cpu", "task_wall", "e2e_wall")}
    summary: dict[str, Any] = {}
    for _ in range(rounds):
        pc_, pw = peer()
        tc, tw = ours_task()
        ew, summary = ours_end_to_end()
        for k, v in (("peer_cpu", pc_), ("peer_wall", pw), ("task_cpu", tc), ("task_wall", tw), ("e2e_wall", ew)):
            best[k] = min(best[k], v)
    del lines
    mbs = text_bytes / 1e6
    res = {"docs": docs, "text_mb": round(mbs, 1), "bucket": bucket, "batch_rows": batch_rows, "rounds": rounds,
           **{k: round(v, 2) for k, v in best.items()},
           "ratio_cpu": round(best["peer_cpu"] / best["task_cpu"], 3),
           "ratio_wall_task": round(best["peer_wall"] / best["task_wall"], 3),
           "ratio_wall_end_to_end": round(best["peer_wall"] / best["e2e_wall"], 3),
           "kept": summary.get("kept"), "removed": summary.get("removed")}
    print(f"input: {data} ({res['text_mb']} MB of text, {docs:,} docs); model dim 256, wordNgrams 3, bucket "
          f"{bucket:,}; batches of {batch_rows:,}; best of {rounds} alternating rounds")
    print(f"peer  raw fastText predict(list, k=1) on the pre-made strings: {best['peer_cpu']:.2f} s CPU "
          f"({mbs / best['peer_cpu']:.2f} MB/s), {best['peer_wall']:.2f} s wall")
    print(f"ours  recall-score task (model load, read, preprocess, predict, write kept+removed shards): "
          f"{best['task_cpu']:.2f} s CPU ({mbs / best['task_cpu']:.2f} MB/s), {best['task_wall']:.2f} s wall")
    print(f"ours  recall score end to end (run_stage: + worker start, model hash): {best['e2e_wall']:.2f} s wall")
    verdict = "PASS" if res["ratio_cpu"] >= 0.85 else "FAIL"
    print(f"ratio ours/peer throughput: {res['ratio_cpu']:.3f} (CPU time; target >= 0.85: {verdict}); wall time "
          f"{res['ratio_wall_task']:.3f} for the task, {res['ratio_wall_end_to_end']:.3f} end to end")
    return res


# ----------------------------------------------------------------------------- quality
def _read(name: str) -> list[dict[str, Any]]:
    with gzip.open(SHARED / name, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def origin(r: dict[str, Any]) -> str:
    """A short name for the dataset a record comes from (the unit of the source hold-out)."""
    if r["source"] not in ("web", "book", "code", "qa"):
        return r["source"]  # math_positive / non_math_negative name their dataset directly
    rid = r["id"]
    for prefix, name in (("aqua", "aqua"), ("svamp", "svamp"), ("mawps", "mawps"), ("asdiv", "asdiv"),
                         ("ape210k", "ape210k"), ("math23k", "math23k"), ("pumpkin", "pumpkin_book"),
                         ("rogeryoungh", "math_notes_zh"), ("thucnews", "thucnews"),
                         ("chnsenticorp", "chnsenticorp_hotel"), ("online-shopping", "online_shopping"),
                         ("waimai", "waimai"), ("dragnet", "dragnet_web"), ("traf", "trafilatura_web"),
                         ("aeb", "article_benchmark_web"), ("moz", "readability_web")):
        if rid.startswith(prefix):
            return name
    return r["meta"].get("repo", "unknown")


def _records(lang: str) -> list[dict[str, Any]]:
    files = (["math_positive.jsonl.gz", "non_math_negative.jsonl.gz", "en_web_pages.jsonl.gz",
              "en_math_word_problems.jsonl.gz"] if lang == "en"
             else ["zh_math_positive.jsonl.gz", "zh_non_math_negative.jsonl.gz"])
    out = []
    for f in files:
        for r in _read(f):
            out.append({"id": r["id"], "text": r["text"], "label": r["label"], "origin": origin(r)})
    return out


def _train_eval(train_recs: list[dict[str, Any]], test: list[dict[str, Any]], cfg: Any,
                tmp: str) -> tuple[np.ndarray, Any]:
    from recall.model import LabelledData, RecallModel, train

    path = os.path.join(tmp, "m.bin")
    train(LabelledData.from_records(train_recs, "origin"), path, cfg.replace(eval_fraction=0.0))
    model = RecallModel(path)
    return model.score(pa.array([r["text"] for r in test], pa.string())), model


def quality(dim: int, bucket: int, epoch: int, langs: list[str]) -> dict[str, Any]:
    from recall.features import preprocess
    from recall.model import TrainConfig, eval_mask, evaluate

    results: dict[str, Any] = {"config": {"dim": dim, "bucket": bucket, "epoch": epoch, "word_ngrams": 3,
                                          "min_count": 3, "lr": 0.1, "thread": 1, "seed": 0}}
    with tempfile.TemporaryDirectory() as tmp:
        for lang, segs in (("en", ["char"]), ("zh", ["char", "jieba"])):
            if lang not in langs:
                continue
            recs = _records(lang)
            held = eval_mask([r["id"] for r in recs], 0.2, 0)
            tr = [r for r, h in zip(recs, held) if not h]
            te = [r for r, h in zip(recs, held) if h]
            for seg in segs:
                cfg = TrainConfig(lang="auto", segmenter=seg, dim=dim, bucket=bucket, epoch=epoch)
                t = time.monotonic()
                scores, _ = _train_eval(tr, te, cfg, tmp)
                secs = time.monotonic() - t
                y = np.array([r["label"] == "math" for r in te], dtype=np.int8)
                ev = evaluate(y, scores, 0.95, [r["origin"] for r in te])
                texts = pa.array([r["text"] for r in recs], pa.string())
                preprocess(texts[:10], seg)  # load jieba's dictionary outside the timing
                t = time.process_time()
                preprocess(texts, seg)
                pre_s = time.process_time() - t
                mb = pc.sum(pc.binary_length(texts)).as_py() / 1e6
                key = f"{lang}-{seg}"
                results[key] = {"train_docs": len(tr), "test_docs": len(te), "precision": ev["precision"],
                                "recall": ev["recall"], "f1": ev["f1"], "roc_auc": ev["roc_auc"],
                                "train_eval_seconds": round(secs, 1),
                                "preprocess_mb_per_s": round(mb / pre_s, 1), "by_origin": ev["by_group"]}
                print(f"{key}: F1 {ev['f1']:.4f} P {ev['precision']:.4f} R {ev['recall']:.4f} "
                      f"AUC {ev['roc_auc']:.4f} (train {len(tr)}, test {len(te)}); preprocessing "
                      f"{mb / pre_s:.1f} MB/s (CPU)", flush=True)
            # leave one source out (best segmenter for zh is chosen by the figures above)
            seg = "char"
            origins = sorted({r["origin"] for r in recs})
            loso: dict[str, Any] = {}
            for o in origins:
                tr_o = [r for r in recs if r["origin"] != o]
                te_o = [r for r in recs if r["origin"] == o]
                labels = {r["label"] for r in tr_o}
                if len(labels) < 2:
                    continue
                cfg = TrainConfig(lang="auto", segmenter=seg, dim=dim, bucket=bucket, epoch=epoch)
                scores, _ = _train_eval(tr_o, te_o, cfg, tmp)
                label = te_o[0]["label"]
                pred = scores >= 0.5
                acc = float(pred.mean() if label == "math" else (~pred).mean())
                loso[o] = {"n": len(te_o), "label": label, "accuracy": round(acc, 4),
                           "mean_score": round(float(scores.mean()), 4)}
                what = "recall" if label == "math" else "specificity"
                print(f"  {lang} held-out source {o:24s} n={len(te_o):5d} {label:8s} {what} {acc:.4f}", flush=True)
            results[f"{lang}-leave-one-source-out"] = loso
    return results


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="throughput", choices=["throughput", "quality"])
    ap.add_argument("--mb", type=float, default=100.0, help="throughput: MB of text to score")
    ap.add_argument("--bucket", type=int, default=200_000, help="fastText buckets of the models")
    ap.add_argument("--rounds", type=int, default=2, help="throughput: alternating rounds (best one kept)")
    ap.add_argument("--batch-rows", type=int, default=8192, help="throughput: rows per batch (both sides)")
    ap.add_argument("--dim", type=int, default=256, help="quality: fastText dim")
    ap.add_argument("--epoch", type=int, default=3, help="quality: fastText epochs")
    ap.add_argument("--langs", default="en,zh", help="quality: languages to run (en,zh)")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    if a.what == "throughput":
        res = throughput(a.mb, a.bucket, a.batch_rows, a.rounds)
    else:
        res = quality(a.dim, a.bucket, a.epoch, a.langs.split(","))
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
