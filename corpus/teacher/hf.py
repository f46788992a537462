"""The ``transformers`` backend: ``AutoModelForCausalLM.generate`` on CPU or any torch device.

The small-model and test path. torch and transformers are imported on first use.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from corpus.errors import ConfigError
from corpus.teacher.base import CHATML_STOP, Completion, Engine, GenRequest, GenResult, cut_at_stop, render_chat


class TransformersEngine(Engine):
    """``AutoModelForCausalLM.generate`` on CPU (or any torch device), one prompt at a time.

    Each request runs alone with ``torch.manual_seed(request seed)``, so a sample does not
    depend on batch composition; this is the small-model and test path, not a fast one.
    """

    backend = "transformers"

    def __init__(self, model: str, *, tokenizer: str | None = None, device: str = "cpu", dtype: str = "auto",
                 chat_template: str | None = None, seed: int = 0, threads: int = 0) -> None:
        super().__init__(model)
        self.threads = threads
        self.tokenizer_path = tokenizer
        self.device = device
        self.dtype = dtype
        self.chat_template = chat_template
        self.seed = seed
        self._model: Any = None
        self._tok: Any = None

    def load(self) -> None:
        if self._model is not None:
            return
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise ConfigError("teacher: --engine transformers needs torch and transformers; install "
                              "`pip install 'mathcorpus[transformers]'`") from exc
        if not os.path.exists(self.model) and os.sep in self.model:
            raise ConfigError(f"teacher: model folder {self.model} does not exist; pass --model with a local "
                              "folder or a Hugging Face model id")
        try:
            self._tok = AutoTokenizer.from_pretrained(self.tokenizer_path or self.model)
            import transformers

            dtype = "auto" if self.dtype == "auto" else getattr(torch, self.dtype, None)
            if dtype is None or (dtype != "auto" and not isinstance(dtype, torch.dtype)):
                raise ConfigError(f"teacher: unknown dtype {self.dtype!r}; use auto, bfloat16, float16 or float32")
            # transformers renamed torch_dtype to dtype in 4.56
            major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
            key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
            self._model = AutoModelForCausalLM.from_pretrained(self.model, **{key: dtype}).to(self.device)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"teacher: cannot load model {self.model!r} with transformers ({exc})") from exc
        self._model.eval()
        if self.threads > 0:
            # on a shared CPU box fewer threads is often faster: torch's per-op thread
            # hand-off dominates for small models
            torch.set_num_threads(self.threads)
        self._tok.padding_side = "left"
        if self._tok.pad_token_id is None:
            self._tok.pad_token = self._tok.eos_token

    def _eos_ids(self) -> list[int]:
        ids = set()
        if self._tok.eos_token_id is not None:
            ids.add(int(self._tok.eos_token_id))
        vocab = self._tok.get_vocab()
        for s in CHATML_STOP:
            if s in vocab:
                ids.add(int(vocab[s]))
        return sorted(ids)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        import torch

        self.load()
        out: list[GenResult] = []
        eos = self._eos_ids()
        for req in requests:
            p = req.params
            prompt = render_chat(self._tok, req.messages, req.prefix, self.chat_template)
            enc = self._tok(prompt, return_tensors="pt", add_special_tokens=False).to(self.device)
            torch.manual_seed(p.seed if p.seed is not None else self.seed)
            kw: dict[str, Any] = {
                "max_new_tokens": p.max_tokens, "num_return_sequences": p.n, "eos_token_id": eos,
                "pad_token_id": self._tok.pad_token_id, "repetition_penalty": p.repetition_penalty,
            }
            if p.temperature > 0:
                kw.update(do_sample=True, temperature=p.temperature, top_p=p.top_p,
                          top_k=p.top_k if p.top_k > 0 else 0)
            else:
                kw["do_sample"] = False
            if p.stop:
                kw.update(stop_strings=list(p.stop), tokenizer=self._tok)
            with torch.no_grad():
                seqs = self._model.generate(**enc, **kw)
            n_prompt = enc["input_ids"].shape[1]
            comps = []
            for row in seqs[:, n_prompt:].tolist():
                # tokens up to and including the first EOS are the sample
                n_tok = len(row)
                ended = False
                for i, t in enumerate(row):
                    if t in eos:
                        n_tok, ended = i + 1, True
                        break
                text = self._tok.decode(row[:n_tok], skip_special_tokens=True)
                text, hit = cut_at_stop(text, p.stop)
                finish = "stop" if (ended or hit) else "length"
                comps.append(Completion(text=text, finish_reason=finish, stop_reason=hit, tokens=n_tok))
            out.append(GenResult(key=req.key, completions=comps, prompt_tokens=int(n_prompt)))
        return out
