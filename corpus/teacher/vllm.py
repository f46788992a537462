"""The ``vllm`` backend: offline ``vllm.LLM`` batch generation.

``n`` samples per prompt, the model's chat template, prefix caching and tensor
parallelism. vllm is imported lazily (it lives in the ``mathcorpus[vllm]`` extra), and the
mapping to ``SamplingParams`` is a plain function so it is testable without vllm.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from corpus.errors import ConfigError, FatalError
from corpus.teacher.base import Completion, Engine, GenRequest, GenResult, SamplingConfig, render_chat


def vllm_sampling_kwargs(p: SamplingConfig) -> dict[str, Any]:
    """Keyword arguments for ``vllm.SamplingParams`` (kept separate so tests need no vllm)."""
    kw: dict[str, Any] = {
        "n": p.n,
        "temperature": p.temperature,
        "top_p": p.top_p,
        # -1 disables top-k in every vLLM release (0 only in recent ones)
        "top_k": p.top_k if p.top_k and p.top_k > 0 else -1,
        "max_tokens": p.max_tokens,
        "repetition_penalty": p.repetition_penalty,
        "skip_special_tokens": True,
    }
    if p.seed is not None:
        kw["seed"] = p.seed
    if p.stop:
        kw["stop"] = list(p.stop)
    return kw


def make_sampling_params(p: SamplingConfig, factory: Callable[..., Any] | None = None) -> Any:
    """``vllm.SamplingParams`` for ``p`` (or whatever ``factory`` builds from the same kwargs)."""
    if factory is None:
        from vllm import SamplingParams

        factory = SamplingParams
    return factory(**vllm_sampling_kwargs(p))


def parse_vllm_output(out: Any, key: str) -> GenResult:
    """A GenResult from a ``vllm.RequestOutput`` (``outputs``: list of ``CompletionOutput``)."""
    comps = []
    for c in sorted(out.outputs, key=lambda c: getattr(c, "index", 0)):
        stop_reason = getattr(c, "stop_reason", None)
        comps.append(Completion(
            text=c.text,
            finish_reason=str(getattr(c, "finish_reason", None) or "stop"),
            stop_reason=stop_reason if isinstance(stop_reason, str) else None,
            tokens=len(c.token_ids) if getattr(c, "token_ids", None) is not None else None,
        ))
    prompt_ids = getattr(out, "prompt_token_ids", None)
    return GenResult(key=key, completions=comps, prompt_tokens=len(prompt_ids) if prompt_ids is not None else None)


class VLLMEngine(Engine):
    """Offline batch generation with ``vllm.LLM`` (one model per process, loaded on first use)."""

    backend = "vllm"

    def __init__(self, model: str, *, tensor_parallel_size: int = 1, enable_prefix_caching: bool = True,
                 gpu_memory_utilization: float = 0.9, max_model_len: int | None = None, dtype: str = "auto",
                 seed: int = 0, tokenizer: str | None = None, chat_template: str | None = None,
                 trust_remote_code: bool = False, llm_factory: Callable[..., Any] | None = None,
                 sampling_factory: Callable[..., Any] | None = None) -> None:
        super().__init__(model)
        self.tensor_parallel_size = tensor_parallel_size
        self.enable_prefix_caching = enable_prefix_caching
        self.gpu_memory_utilization = gpu_memory_utilization
        self.max_model_len = max_model_len
        self.dtype = dtype
        self.seed = seed
        self.tokenizer = tokenizer
        self.chat_template = chat_template
        self.trust_remote_code = trust_remote_code
        self._llm_factory = llm_factory
        self._sampling_factory = sampling_factory
        self._llm: Any = None

    def llm_kwargs(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "model": self.model,
            "tensor_parallel_size": self.tensor_parallel_size,
            "enable_prefix_caching": self.enable_prefix_caching,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "dtype": self.dtype,
            "seed": self.seed,
            "trust_remote_code": self.trust_remote_code,
        }
        if self.max_model_len:
            kw["max_model_len"] = self.max_model_len
        if self.tokenizer:
            kw["tokenizer"] = self.tokenizer
        return kw

    @property
    def llm(self) -> Any:
        if self._llm is None:
            factory = self._llm_factory
            if factory is None:
                try:
                    from vllm import LLM
                except ImportError as exc:
                    raise ConfigError("teacher: --engine vllm needs the vllm package; install it with "
                                      "`pip install 'mathcorpus[vllm]'` on a GPU machine, or use "
                                      "--engine openai against a running server") from exc
                factory = LLM
            self._llm = factory(**self.llm_kwargs())
        return self._llm

    def build_prompts(self, requests: Sequence[GenRequest]) -> list[str]:
        tok = self.llm.get_tokenizer()
        return [render_chat(tok, r.messages, r.prefix, self.chat_template) for r in requests]

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        prompts = self.build_prompts(requests)
        params = [make_sampling_params(r.params, self._sampling_factory) for r in requests]
        outs = self.llm.generate(prompts, params, use_tqdm=False)
        if len(outs) != len(requests):
            raise FatalError(f"vllm returned {len(outs)} outputs for {len(requests)} prompts")
        return [parse_vllm_output(o, r.key) for o, r in zip(outs, requests)]

    def close(self) -> None:
        self._llm = None
