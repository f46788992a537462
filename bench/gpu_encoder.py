"""Encoder-kind quality scoring speed on a GPU, runnable with only numpy, torch and transformers.

Loads corpus/encoder.py by path (no mathcorpus install, no datatrove/fasttext/numba),
builds randomly initialised encoders of real sizes from configs (BERT-base 768 x 12 layers,
e5-small-like 384 x 12) with the bundled Qwen2.5 tokenizer, and embeds real pages from
demo/sample: documents per second of ``Encoder.embed`` (tokenize, forward, pool) against the
raw forward passes of the same model on the same batches, in float32 and bfloat16. Nothing is
downloaded. Takes well under 2 minutes on one GPU.

Run (from the repository root):
  python bench/gpu_encoder.py --device cuda --docs 2048 --batch-size 64 --json gpu_encoder.json
"""

from __future__ import annotations

import argparse
import gzip
import importlib.util
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("quality_encoder", REPO / "corpus" / "encoder.py")
qe = importlib.util.module_from_spec(_spec)  # type: ignore[arg-type]
_spec.loader.exec_module(qe)  # type: ignore[union-attr]


def pages(n: int) -> list[str]:
    texts: list[str] = []
    for f in sorted((REPO / "demo" / "sample").glob("*.jsonl.gz")):
        with gzip.open(f, "rt", encoding="utf-8") as fh:
            texts.extend(json.loads(line)["text"] for line in fh)
    return [texts[i % len(texts)] for i in range(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--docs", type=int, default=2048)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args()
    import torch
    import transformers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    texts = pages(a.docs)
    dev_name = torch.cuda.get_device_name(0) if a.device.startswith("cuda") else "cpu"
    res: dict = {"device": a.device, "device_name": dev_name, "torch": torch.__version__,
                 "transformers": transformers.__version__, "docs": len(texts), "batch_size": a.batch_size,
                 "max_length": a.max_length, "runs": []}
    print(f"{dev_name}: torch {torch.__version__}, transformers {transformers.__version__}; {len(texts)} docs, "
          f"batch {a.batch_size}, max_length {a.max_length}", flush=True)
    tok_json = REPO / "corpus" / "data" / "tokenizers" / "qwen2.5" / "tokenizer.json"

    def sync() -> None:
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()

    for name, hidden in (("e5-small-like", 384), ("bert-base", 768)):
        with tempfile.TemporaryDirectory() as tmp:
            torch.manual_seed(0)
            BertModel(BertConfig(vocab_size=151936, hidden_size=hidden, num_hidden_layers=12,
                                 num_attention_heads=12, intermediate_size=4 * hidden,
                                 max_position_embeddings=512)).save_pretrained(tmp)
            PreTrainedTokenizerFast(tokenizer_file=str(tok_json), pad_token="<|endoftext|>").save_pretrained(tmp)
            for dtype in a.dtypes.split(","):
                enc = qe.Encoder(tmp, device=a.device, max_length=a.max_length, dtype=dtype)
                enc.embed(texts[: 2 * a.batch_size], a.batch_size)  # warm up (kernels, allocator)
                sync()
                t0 = time.monotonic()
                emb = enc.embed(texts, a.batch_size)
                sync()
                ours = time.monotonic() - t0
                order = np.argsort([-len(t) for t in texts], kind="stable")
                batches = [enc.tokenizer([texts[i] for i in order[k:k + a.batch_size]], padding=True,
                                         truncation=True, max_length=a.max_length, return_tensors="pt")
                           for k in range(0, len(texts), a.batch_size)]
                sync()
                t0 = time.monotonic()
                with torch.inference_mode():
                    for b in batches:
                        enc.model(input_ids=b["input_ids"].to(a.device),
                                  attention_mask=b["attention_mask"].to(a.device)).last_hidden_state.float().cpu()
                sync()
                raw = time.monotonic() - t0
                row = {"model": name, "hidden": hidden, "dtype": dtype, "docs_per_s": round(len(texts) / ours, 1),
                       "raw_forward_docs_per_s": round(len(texts) / raw, 1), "ratio": round(raw / ours, 3),
                       "finite": bool(np.isfinite(emb).all())}
                res["runs"].append(row)
                print(f"{name} {dtype}: {row['docs_per_s']} docs/s (tokenize + forward + pool); raw forward "
                      f"{row['raw_forward_docs_per_s']} docs/s (pre-tokenized); ratio {row['ratio']}", flush=True)
                del enc
                if a.device.startswith("cuda"):
                    torch.cuda.empty_cache()
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res))
    return None


if __name__ == "__main__":
    sys.exit(main())
