"""Train a small Qwen2-architecture model on a mathcorpus export with plain PyTorch and TokenDataset.

The model is built from a config with random weights (nothing is downloaded); its vocab
size is the export's tokenizer's (the bundled Qwen2.5 tokenizer by default). The loss is
the mean cross-entropy over the labels the loader marks as trained (``labels != -100``).
``position_ids`` restart at every document; with ``attn_implementation="flash_attention_2"``
on a GPU, transformers uses them to keep attention inside each packed document.

Stop and resume exactly: ``--save-at K`` writes ``OUT/ckpt.pt`` (model, optimizer, the
loader's ``state_dict()`` and the torch RNG state) after step K, ``--stop-at K`` ends the
run there, and ``--resume`` continues from the checkpoint; the losses are the same as an
uninterrupted run. Each step prints ``{"step": k, "loss": x}`` as one JSON line.

Example:
    mathcorpus export demo/sample -o /tmp/tok --format megatron --seq-len 128
    python examples/train_tiny.py /tmp/tok --steps 200 --out /tmp/run
    python examples/train_tiny.py /tmp/tok --steps 200 --out /tmp/run --save-at 100 --stop-at 100
    python examples/train_tiny.py /tmp/tok --steps 200 --out /tmp/run --resume
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from corpus.export.loader import TokenDataset, collate  # noqa: E402


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("export", help="export folder (any format, or an SFT export)")
    p.add_argument("--out", required=True, help="run folder (checkpoint)")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=None, help="default: the export's")
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--hidden", type=int, default=64)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--save-at", type=int, default=None)
    p.add_argument("--stop-at", type=int, default=None)
    p.add_argument("--resume", action="store_true")
    return p.parse_args(argv)


def build_model(vocab_size: int, seq_len: int, args: argparse.Namespace) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    cfg = Qwen2Config(vocab_size=vocab_size, hidden_size=args.hidden, intermediate_size=args.hidden * 4,
                      num_hidden_layers=args.layers, num_attention_heads=args.heads,
                      num_key_value_heads=max(1, args.heads // 2), max_position_embeddings=max(seq_len, 128),
                      tie_word_embeddings=True, attention_dropout=0.0)
    return Qwen2ForCausalLM(cfg)


def batches(ds: TokenDataset, size: int) -> Iterator[dict[str, Any]]:
    """Batches of ``size`` items, running on into the next epoch (the loader tracks its state)."""
    buf = []
    while True:
        for item in ds:
            buf.append(item)
            if len(buf) == size:
                yield collate(buf)
                buf = []


def main(argv: list[str] | None = None) -> list[float]:
    args = parse(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    ds = TokenDataset(args.export, seq_len=args.seq_len, rank=rank, world_size=world, seed=args.seed)
    model = build_model(int(ds.manifest["tokenizer"]["vocab_size"]), ds.seq_len, args)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    ckpt = Path(args.out) / "ckpt.pt"
    step = 0
    if args.resume:
        state = torch.load(ckpt, weights_only=False)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        ds.load_state_dict(state["loader"])
        torch.set_rng_state(state["rng"])
        step = state["step"]
    model.train()
    losses = []
    for batch in batches(ds, args.batch_size):
        if step >= args.steps:
            break
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), batch["labels"].reshape(-1),
                               ignore_index=-100)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        losses.append(loss.item())
        print(json.dumps({"step": step, "loss": round(losses[-1], 6)}), flush=True)
        if args.save_at == step:
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "loader": ds.state_dict(),
                        "rng": torch.get_rng_state(), "step": step}, str(ckpt) + ".tmp")
            os.replace(str(ckpt) + ".tmp", ckpt)
        if args.stop_at == step:
            break
    return losses


if __name__ == "__main__":
    main()
