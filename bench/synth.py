"""Benchmarks for synth/: the layer's overhead over raw engine calls, and answer-checker agreement.

Owns two measurements, each printed with the command's own peer so the ratio is read
in one run on one machine:

``overhead`` (default): the same solve requests sent (a) straight to ``engine.generate``
and (b) through the whole synth stage on the runner (templates, seeds, answer checking,
voting, provenance, the resume cache, Parquet shards). The ratio b / a is our overhead.
On CPU it uses a tiny random Qwen2 model (built here, nothing downloaded); on a GPU box
pass ``--engine vllm --model <small model>`` to compare tokens/s with vLLM's own offline
``LLM.generate`` on the same prompts and sampling parameters.

``answers``: agreement of the answer checker with the gold answers of the bundled GSM8K
and MATH test sets (each gold solution against its own answer) and its false-accept rate
on perturbed answers, next to math-verify alone. The benchmark files are only used to
test the checker, never to tune a model.

Examples::

    .venv/bin/python bench/synth.py overhead --seeds 32 --n 4 --max-tokens 16
    .venv/bin/python bench/synth.py overhead --engine vllm --model Qwen/Qwen2.5-0.5B-Instruct --seeds 512 --n 8
    .venv/bin/python bench/synth.py answers --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared" / "data"


# ----------------------------------------------------------------------------- overhead
def build_tiny_model(folder: Path) -> str:
    import torch
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    tok = PreTrainedTokenizerFast(tokenizer_file=str(SHARED / "tokenizers" / "qwen2.5" / "tokenizer.json"),
                                  eos_token="<|im_end|>", pad_token="<|endoftext|>")
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=151936, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=2048,
                      tie_word_embeddings=True)
    Qwen2ForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def load_seeds(k: int) -> list[dict[str, Any]]:
    """GSM8K *train* questions as solve seeds (their answer field ends in '#### N')."""
    rows = []
    with open(SHARED / "train_sets" / "gsm8k_train.jsonl", encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= k:
                break
            r = json.loads(line)
            rows.append({"id": f"gsm8k-train-{i}", "text": r["question"], "answer": r["answer"]})
    return rows


def overhead(args: argparse.Namespace) -> dict[str, Any]:
    from corpus.runner import RunOptions, run_stage
    from corpus.shards import read_table
    from corpus.teacher import get_engine
    from synth.stage import SynthConfig, SynthStage
    from synth.tasks import load_template

    tmp = Path(tempfile.mkdtemp(prefix="bench-synth-"))
    model = args.model or build_tiny_model(tmp / "tiny")
    seeds = load_seeds(args.seeds)
    src = tmp / "seeds.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in seeds))
    cfg = SynthConfig.from_mapping({"task": "solve", "engine": args.engine, "model": model, "n": args.n,
                                    "max_tokens": args.max_tokens, "temperature": 0.7, "flush_every": args.flush_every,
                                    "tensor_parallel_size": args.tp,
                                    "torch_threads": args.torch_threads})
    stage = SynthStage(cfg)
    tmpl = load_template(None, "solve")
    stage.template = tmpl
    engine = get_engine(cfg.engine_spec())  # the same cached instance the stage's setup() gets
    from synth.stage import Seed, reference_answer

    reqs = [stage._request(Seed(r["id"], r["text"], None, reference_answer(r["answer"])), cfg.sampling(tmpl.stop))
            for r in seeds]
    engine.generate(reqs[:1])  # load the model outside both timings
    t0 = time.perf_counter()
    raw = engine.generate(reqs)
    raw_s = time.perf_counter() - t0
    tokens = sum(c.tokens or 0 for r in raw for c in r.completions)
    native = None
    if args.engine == "vllm":
        # vLLM's own offline throughput on identical prompts and sampling parameters
        from corpus.teacher import make_sampling_params

        llm = engine.llm  # type: ignore[attr-defined]
        prompts = engine.build_prompts(reqs)  # type: ignore[attr-defined]
        sps = [make_sampling_params(r.params) for r in reqs]
        t0 = time.perf_counter()
        outs = llm.generate(prompts, sps, use_tqdm=False)
        native_s = time.perf_counter() - t0
        native_tokens = sum(len(c.token_ids) for o in outs for c in o.outputs)
        native = {"seconds": round(native_s, 3), "tokens_per_s": round(native_tokens / native_s, 1)}
    out = tmp / "out"
    t0 = time.perf_counter()
    summary = run_stage(SynthStage(cfg), [str(src)], str(out), RunOptions(batch_rows=args.batch_rows))
    ours_s = time.perf_counter() - t0
    stats = json.loads(next((out / "_logs" / "mathcorpus_stats").glob("00000.json")).read_text())
    extra = stats["extra"]
    ours_tokens = summary["counters"].get("completion_tokens", 0)
    kept = read_table(str(out)).num_rows if list(out.glob("*.parquet")) else 0
    # The tiny model's samples hold no answers, so judging them is cheap; time the judge on
    # realistic samples too: each seed's own reference solution, answer boxed, n times.
    from corpus.teacher import Completion
    from synth.tasks import SolveOptions, judge_solve

    t0 = time.perf_counter()
    judged = 0
    for r in seeds:
        body, _, gold = r["answer"].rpartition("####")
        comps = [Completion(text=f"{body.strip()}\nSo the answer is $\\boxed{{{gold.strip()}}}$. ({k})",
                            finish_reason="stop") for k in range(args.n)]
        judged += sum(x.accepted for x in judge_solve(r["text"], comps, reference_answer(r["answer"]),
                                                      SolveOptions()))
    judge_ms = 1000 * (time.perf_counter() - t0) / (len(seeds) * args.n)
    layer_s = ours_s - extra["engine_seconds"]
    res = {
        "engine": args.engine, "model": model if args.model else "tiny random Qwen2 (hidden 16, 1 layer)",
        "seeds": len(seeds), "n": args.n, "max_tokens": args.max_tokens, "samples": len(seeds) * args.n,
        "raw_engine": {"seconds": round(raw_s, 3), "tokens": tokens, "tokens_per_s": round(tokens / raw_s, 1)},
        "synth_stage": {"seconds": round(ours_s, 3), "tokens": ours_tokens,
                        "tokens_per_s": round(ours_tokens / ours_s, 1),
                        "engine_seconds": round(extra["engine_seconds"], 3),
                        "process_batch_seconds": round(extra["stage_seconds"], 3), "records_kept": kept},
        "ratio_total": round(ours_s / raw_s, 3),
        "layer_seconds": round(layer_s, 3),
        "overhead_vs_raw": round(layer_s / raw_s, 4),
        "judge_ms_per_realistic_sample": round(judge_ms, 3), "realistic_samples_accepted": judged,
        "ratio_process_batch": round(extra["stage_seconds"] / extra["engine_seconds"], 3),
        "layer_ms_per_sample": round(1000 * (extra["stage_seconds"] - extra["engine_seconds"])
                                     / (len(seeds) * args.n), 3),
    }
    if native:
        res["vllm_offline"] = native
    return res


# ----------------------------------------------------------------------------- answers
def _last_boxed(s: str) -> str:
    i = s.rindex("\\boxed{") + len("\\boxed")
    depth = 0
    for k in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[k], 0)
        if depth == 0:
            return s[i + 1:k]
    raise ValueError("unbalanced")


def _bump_first_digit(ans: str) -> str | None:
    m = re.search(r"\d", ans)
    if not m:
        return None
    k = m.start()
    return ans[:k] + str((int(ans[k]) + 1) % 10) + ans[k + 1:]


def _plain(ans: str) -> str:
    return re.sub(r"\\text|\\mbox|[\s(){}\\]", "", ans).lower()


def _cases(name: str) -> list[tuple[str, str, list[str]]]:
    """(solution, gold answer, perturbed answers) for every item of a benchmark file."""
    rows = [json.loads(x) for x in open(SHARED / "benchmarks" / f"{name}.jsonl", encoding="utf-8")]
    out = []
    if name == "gsm8k":
        for r in rows:
            gold = r["answer"].split("####")[-1].strip()
            v = int(gold.replace(",", ""))
            out.append((r["answer"], gold, [str(v + 1), str(v - 1), str(v * 10)]))
        return out
    golds = [_last_boxed(r["solution"]) for r in rows]
    wordy = sorted({g for g in golds if not re.search(r"\d", g)})
    for r, gold in zip(rows, golds):
        wrong = _bump_first_digit(gold)
        if wrong is None:
            k = wordy.index(gold)
            wrong = next(w for w in wordy[k + 1:] + wordy[:k] if _plain(w) != _plain(gold))
        out.append((r["solution"], gold, [wrong]))
    return out


def _check_chunk(args: tuple[str, list[tuple[str, str, list[str]]]]) -> dict[str, int]:
    name, cases = args
    from math_verify import parse, verify

    from synth.answers import extract_answer, is_equiv

    c = {"ours_agree": 0, "ours_false": 0, "mv_agree": 0, "mv_false": 0, "perturbed": 0}
    for sol, gold, wrongs in cases:
        pred = extract_answer(sol)
        c["ours_agree"] += is_equiv(pred, gold)
        target = parse(sol)
        wrap = (lambda a: f"${a}$") if name == "math" else (lambda a: a)
        c["mv_agree"] += bool(verify(parse(wrap(gold)), target))
        for w in wrongs:
            c["perturbed"] += 1
            c["ours_false"] += is_equiv(pred, w)
            c["mv_false"] += bool(verify(parse(wrap(w)), target))
    return c


def answers(args: argparse.Namespace) -> dict[str, Any]:
    res: dict[str, Any] = {}
    for name in ("gsm8k", "math"):
        cases = _cases(name)
        step = max(1, len(cases) // (args.workers * 4))
        chunks = [(name, cases[i:i + step]) for i in range(0, len(cases), step)]
        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=args.workers) as pool:
            parts = list(pool.map(_check_chunk, chunks))
        tot = {k: sum(p[k] for p in parts) for k in parts[0]}
        res[name] = {
            "items": len(cases),
            "ours": f"{tot['ours_agree']}/{len(cases)} = {100 * tot['ours_agree'] / len(cases):.2f}%",
            "math_verify_alone": f"{tot['mv_agree']}/{len(cases)} = {100 * tot['mv_agree'] / len(cases):.2f}%",
            "perturbed": tot["perturbed"],
            "ours_false_accepts": tot["ours_false"], "math_verify_false_accepts": tot["mv_false"],
            "seconds": round(time.perf_counter() - t0, 1),
        }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd")
    o = sub.add_parser("overhead", help="synth stage vs raw engine calls")
    o.add_argument("--engine", default="transformers", choices=("transformers", "vllm", "openai"))
    o.add_argument("--model", default=None, help="default: a tiny random Qwen2 built in a temp folder")
    o.add_argument("--seeds", type=int, default=32)
    o.add_argument("--n", type=int, default=4)
    o.add_argument("--max-tokens", type=int, default=16)
    o.add_argument("--flush-every", type=int, default=16)
    o.add_argument("--batch-rows", type=int, default=8192)
    o.add_argument("--tp", type=int, default=1)
    o.add_argument("--torch-threads", type=int, default=1, help="transformers engine: torch CPU threads")
    a = sub.add_parser("answers", help="answer-checker agreement on GSM8K and MATH gold solutions")
    a.add_argument("--workers", type=int, default=max(1, min(2, os.cpu_count() or 1)))
    args = ap.parse_args()
    if args.cmd in (None, "overhead"):
        if args.cmd is None:
            args = ap.parse_args(["overhead"])
        res = overhead(args)
        print(json.dumps(res, indent=2))
        print(f"synth stage / raw engine: {res['ratio_total']}x wall (engine speed varies on a shared box); "
              f"our layer (stage wall - engine time) = {res['layer_seconds']} s = "
              f"{100 * res['overhead_vs_raw']:.2f}% of the raw engine time; "
              f"{res['layer_ms_per_sample']} ms per sample inside process_batch; judging realistic samples: "
              f"{res['judge_ms_per_realistic_sample']} ms each", file=sys.stderr)
    else:
        res = answers(args)
        print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
