"""Frozen local transformer encoders: a folder in, pooled embeddings out.

Owns loading a local encoder (a sentence-transformers folder or a plain Hugging Face
encoder folder; nothing is ever downloaded: ``local_files_only``) and embedding texts in
length-sorted batches. It lives on the floor because two packages use it: recall's
``encoder`` quality kind (its regression head is in recall/quality.py) and decontam's
judge tier (``--judge-embed-model``, nearest benchmark items by cosine).

This module imports only numpy and the standard library at load time, and torch and
transformers (the ``transformers`` extra) when an encoder is built, so it can be loaded
by path on a machine that has nothing else (``bench/gpu_encoder.py`` does that).

Pooling follows the folder: a sentence-transformers folder's ``1_Pooling/config.json``
(CLS, mean or max) and ``Normalize`` module are honoured; a plain encoder is mean-pooled
over its attention mask unless ``pooling`` says otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

POOLINGS = ("auto", "mean", "cls", "max")
_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


class EncoderError(ValueError):
    """The encoder folder or its settings are unusable (mapped to ConfigError by callers)."""


def encoder_fingerprint(path: str) -> str:
    """sha256 over the folder's config and weight files: what a quality model records about its encoder."""
    h = hashlib.sha256()
    names = sorted(n for n in os.listdir(path) if n in ("config.json", *_WEIGHT_FILES) or n.endswith(".safetensors"))
    for name in names:
        h.update(name.encode("utf-8"))
        with open(os.path.join(path, name), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def _st_settings(path: str) -> tuple[str | None, bool]:
    """(pooling mode, normalize) declared by a sentence-transformers folder, else (None, False)."""
    modules_file = os.path.join(path, "modules.json")
    if not os.path.isfile(modules_file):
        return None, False
    with open(modules_file, encoding="utf-8") as fh:
        modules = json.load(fh)
    pooling: str | None = None
    normalize = False
    for m in modules:
        kind = str(m.get("type", ""))
        if kind.endswith("Pooling"):
            cfg_path = os.path.join(path, m.get("path", ""), "config.json")
            if os.path.isfile(cfg_path):
                with open(cfg_path, encoding="utf-8") as fh:
                    cfg = json.load(fh)
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
                elif cfg.get("pooling_mode_max_tokens"):
                    pooling = "max"
                else:
                    pooling = "mean"
        elif kind.endswith("Normalize"):
            normalize = True
    return pooling, normalize


class Encoder:
    """A frozen local encoder: ``embed(texts)`` gives float32 pooled embeddings (n, dim)."""

    def __init__(self, path: str, *, device: str = "cpu", max_length: int = 512, pooling: str = "auto",
                 dtype: str = "float32", threads: int = 0) -> None:
        if not os.path.isdir(path):
            raise EncoderError(f"{path}: encoder folder not found; pass --encoder with a local sentence-transformers "
                               "or Hugging Face encoder folder (nothing is downloaded)")
        if pooling not in POOLINGS:
            raise EncoderError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as exc:
            raise EncoderError("the encoder quality kind needs torch and transformers: "
                               "pip install 'mathcorpus[transformers]'") from exc
        if threads:
            torch.set_num_threads(threads)
        st_pool, st_norm = _st_settings(path)
        self.path = path
        self.pooling = (st_pool or "mean") if pooling == "auto" else pooling
        self.normalize = st_norm
        self.max_length = max_length
        self.device = device
        self._torch = torch
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]
            self.model = AutoModel.from_pretrained(path, local_files_only=True, dtype=torch_dtype)
        except KeyError as exc:
            raise EncoderError(f"unknown dtype {dtype!r}; use float32, bfloat16 or float16") from exc
        except (OSError, ValueError) as exc:
            raise EncoderError(f"{path}: not a loadable encoder folder ({str(exc).splitlines()[0]})") from exc
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.model.eval().to(device)
        self.dim = int(getattr(self.model.config, "hidden_size", 0) or 0)

    def describe(self) -> dict[str, Any]:
        return {"path": os.path.abspath(self.path), "pooling": self.pooling, "normalize": self.normalize,
                "max_length": self.max_length, "dim": self.dim, "architecture": type(self.model).__name__}

    def _pool(self, hidden: Any, mask: Any) -> Any:
        torch = self._torch
        if self.pooling == "cls":
            out = hidden[:, 0]
        elif self.pooling == "max":
            out = hidden.masked_fill(mask.unsqueeze(-1) == 0, torch.finfo(hidden.dtype).min).max(dim=1).values
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            out = (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)
        if self.normalize:
            out = torch.nn.functional.normalize(out.float(), dim=-1)
        return out

    def embed(self, texts: Sequence[str], batch_size: int = 32,
              progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Pooled embeddings in input order; batches are formed from length-sorted texts (less padding)."""
        torch = self._torch
        n = len(texts)
        out = np.zeros((n, self.dim), dtype=np.float32)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        with torch.inference_mode():
            for k in range(0, n, batch_size):
                idx = order[k: k + batch_size]
                enc = self.tokenizer([texts[i] for i in idx.tolist()], padding=True, truncation=True,
                                     max_length=self.max_length, return_tensors="pt")
                enc = {key: v.to(self.device) for key, v in enc.items() if key in ("input_ids", "attention_mask",
                                                                                       "token_type_ids")}
                hidden = self.model(**enc).last_hidden_state
                out[idx] = self._pool(hidden, enc["attention_mask"]).float().cpu().numpy()
                if progress is not None:
                    progress(len(idx))
        return out
