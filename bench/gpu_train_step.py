"""GPU figure: tokens/s a ~0.5B Qwen2 training step consumes vs tokens/s TokenDataset delivers.

Needs only torch, transformers, numpy (and pyarrow, which the loader's Parquet path
imports lazily): it puts the repository on ``sys.path`` and imports ``corpus.export.loader``
alone, which pulls in no other mathcorpus dependency. The export it reads is written here
with numpy, in Megatron's ``.bin``/``.idx`` layout with a ``manifest.json``: random
documents of Qwen2.5 token ids (lengths drawn from a log-normal around 1,000 tokens, EOS at
the end of each), so nothing has to be copied to the GPU machine but this repository.

Model: Qwen2.5-0.5B's shape (hidden 896, 24 layers, 14 heads, 2 KV heads, MLP 4,864,
vocab 151,936, tied embeddings), random init, bf16 weights, fused AdamW, SDPA attention,
``--batch`` x ``--seq-len`` tokens per step. Three numbers are printed and written to
``$OUT/gpu_train_step.json`` when ``OUT`` is set:

* ``train_tokens_per_s``: steps fed from a fixed batch already on the GPU (the model alone);
* ``loader_tokens_per_s``: TokenDataset + collate alone, one CPU core, no model;
* ``train_with_loader_tokens_per_s``: steps fed by the loader in the same thread, batches
  copied to the GPU each step (what a simple training loop gets).

``--tiny`` runs a 2-layer toy on CPU in seconds (the test). On an H200 the default run
takes about a minute.

    python bench/gpu_train_step.py            # GPU
    python bench/gpu_train_step.py --tiny     # CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import struct
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

QWEN_VOCAB = 151_665  # ids the Qwen2.5 tokenizer produces
QWEN_EOS = 151_643  # <|endoftext|>


def write_export(folder: Path, tokens: int, seq_len: int, seed: int = 0) -> Path:
    """A megatron export of random documents (numpy only): tokens-00000.bin/.idx + manifest.json."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lengths = []
    total = 0
    while total < tokens:
        n = int(min(8192, max(8, rng.lognormal(np.log(1000), 0.8))))
        lengths.append(n)
        total += n
    lens = np.asarray(lengths, dtype=np.int64)
    ids = (rng.zipf(1.2, size=total) % (QWEN_EOS - 1)).astype(np.int32)  # Zipfian ids, no special token
    ids[np.cumsum(lens) - 1] = QWEN_EOS
    ids.astype("<i4").tofile(folder / "tokens-00000.bin")
    ptr = np.zeros(lens.size, dtype=np.int64)
    ptr[1:] = np.cumsum(lens[:-1] * 4)
    with open(folder / "tokens-00000.idx", "wb") as fh:
        fh.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + struct.pack("<B", 4))  # int32 tokens
        fh.write(struct.pack("<Q", lens.size) + struct.pack("<Q", lens.size + 1))
        fh.write(lens.astype("<i4").tobytes() + ptr.astype("<i8").tobytes())
        fh.write(np.arange(lens.size + 1, dtype="<i8").tobytes())
    manifest = {"format": "megatron", "dtype": "int32", "seq_len": seq_len, "packed": False, "tokens": total,
                "documents": int(lens.size),
                "tokenizer": {"name": "qwen2.5", "vocab_size": QWEN_VOCAB, "eos_id": QWEN_EOS},
                "shards": [{"index": 0, "files": ["tokens-00000.bin", "tokens-00000.idx"], "tokens": total}],
                "note": "synthetic: random Zipfian ids written by bench/gpu_train_step.py"}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2))
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tiny", action="store_true", help="2-layer toy model on CPU (smoke test)")
    ap.add_argument("--seq-len", type=int, default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--warmup", type=int, default=None)
    args = ap.parse_args()
    t_start = time.perf_counter()

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from corpus.export.loader import TokenDataset, collate

    # what the loader must not drag in (the GPU machine has torch, transformers, numpy, pyarrow only)
    heavy = [m for m in ("datatrove", "polars", "numba", "xxhash", "tiktoken", "megatron", "datasketch")
             if sys.modules.get(m) is not None]
    tiny = args.tiny
    dev = torch.device("cpu" if tiny or not torch.cuda.is_available() else "cuda")
    L = args.seq_len or (64 if tiny else 2048)
    B = args.batch or (2 if tiny else 8)
    steps = args.steps or (2 if tiny else 12)
    warmup = args.warmup if args.warmup is not None else (1 if tiny else 3)
    if tiny:
        cfg = Qwen2Config(vocab_size=151_936, hidden_size=64, intermediate_size=256, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=L,
                          tie_word_embeddings=True)
        dtype = torch.float32
    else:  # Qwen2.5-0.5B's shape
        cfg = Qwen2Config(vocab_size=151_936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                          num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768,
                          rope_theta=1_000_000.0, tie_word_embeddings=True)
        dtype = torch.bfloat16
    try:
        cfg._attn_implementation = "sdpa"  # the default of recent transformers; said explicitly
    except (AttributeError, ValueError):
        pass
    need = max((steps + warmup) * B * L * 2, 200_000 if tiny else 16_000_000)
    export = write_export(Path(tempfile.mkdtemp(prefix="gpu-step-")) / "export", need, L)

    # 1. the loader alone (one core, no model)
    ds = TokenDataset(export, seq_len=L, seed=0)
    t0 = time.perf_counter()
    c0 = time.process_time()
    n_tok = 0
    buf = []
    for item in ds:
        buf.append(item)
        if len(buf) == B:
            batch = collate(buf)
            n_tok += batch["input_ids"].numel()
            buf = []
    loader_wall, loader_cpu = time.perf_counter() - t0, time.process_time() - c0
    loader_tps = n_tok / loader_wall

    # 2. the model alone, fed a fixed batch on the device
    torch.manual_seed(0)
    with dev:
        model = Qwen2ForCausalLM(cfg).to(dtype)
    n_params = sum(p.numel() for p in model.parameters())
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=dev.type == "cuda")
    model.train()

    def step(batch: dict) -> float:
        out = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"])
        logits = out.logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, logits.shape[-1]),
                                                 batch["labels"].view(-1), ignore_index=-100)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    it = iter(ds)
    fixed = collate([next(it) for _ in range(B)])
    fixed = {k: v.to(dev) for k, v in fixed.items() if k != "max_seqlen" and k != "cu_seqlens"}
    for _ in range(warmup):
        step(fixed)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step(fixed)
    sync()
    model_wall = time.perf_counter() - t0
    train_tps = steps * B * L / model_wall

    # 3. the loop a user writes: the loader feeds every step
    ds2 = TokenDataset(export, seq_len=L, seed=1)
    it = iter(ds2)
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        b = collate([next(it) for _ in range(B)])
        b = {k: v.to(dev, non_blocking=True) for k, v in b.items() if k not in ("max_seqlen", "cu_seqlens")}
        loss = step(b)
    sync()
    loop_wall = time.perf_counter() - t0
    loop_tps = steps * B * L / loop_wall

    result = {
        "device": torch.cuda.get_device_name(0) if dev.type == "cuda" else "cpu",
        "tiny": tiny, "params": n_params, "dtype": str(dtype).replace("torch.", ""), "seq_len": L, "batch": B,
        "steps": steps, "train_tokens_per_s": train_tps, "loader_tokens_per_s": loader_tps,
        "loader_tokens_per_cpu_s": n_tok / max(loader_cpu, 1e-9), "train_with_loader_tokens_per_s": loop_tps,
        "loader_over_train": loader_tps / train_tps, "last_loss": float(loss),
        "heavy_modules_imported": heavy, "torch": torch.__version__,
        "seconds": time.perf_counter() - t_start,
    }
    print(f"{result['device']}: Qwen2 {n_params / 1e6:.0f}M params, {result['dtype']}, batch {B} x {L}")
    print(f"  training step consumes      {train_tps:14,.0f} tokens/s")
    print(f"  loader delivers (1 core)    {loader_tps:14,.0f} tokens/s  ({loader_tps / train_tps:,.1f}x the step)")
    print(f"  step fed by the loader      {loop_tps:14,.0f} tokens/s")
    print(json.dumps(result))
    out = os.environ.get("OUT")
    if out:
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "gpu_train_step.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
