"""Teacher engines: one interface, three backends (vLLM offline, OpenAI-compatible HTTP, transformers).

Owns how a batch of chat requests becomes sampled completions. Every backend takes the
same :class:`GenRequest` list and returns the same :class:`GenResult` list, in order, so
tasks, answer checking and provenance never know which one ran:

* ``vllm``: offline ``vllm.LLM`` batch generation, ``n`` samples per prompt, the model's
  chat template, prefix caching and tensor parallelism. vllm is imported lazily (it lives
  in the ``mathcorpus[vllm]`` extra).
* ``openai``: any OpenAI-compatible ``/chat/completions`` endpoint (``vllm serve``, SGLang,
  a hosted API) through an async httpx client with a concurrency limit, retries with
  exponential backoff and seeded jitter, and timeouts.
* ``transformers``: a CPU path for small models and for tests.

A request may carry ``prefix``, text the assistant has already written, which the engine
continues: tool-integrated reasoning feeds code output back this way.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import random
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import xxhash

from corpus.errors import ConfigError, FatalError

# Qwen's ChatML, used when a tokenizer carries no chat template of its own (the bundled
# Qwen2.5 tokenizer files ship without one, and so do many base models).
CHATML_TEMPLATE = "chatml"
CHATML_STOP = ("<|im_end|>", "<|endoftext|>")


# ----------------------------------------------------------------------------- records
@dataclass(frozen=True)
class SamplingConfig:
    """Sampling parameters shared by every backend. ``top_k`` 0 means no top-k cut."""

    n: int = 1
    temperature: float = 0.7
    top_p: float = 0.95
    top_k: int = 0
    max_tokens: int = 2048
    seed: int | None = None
    stop: tuple[str, ...] = ()
    repetition_penalty: float = 1.0

    def with_(self, **changes: Any) -> "SamplingConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class GenRequest:
    """One prompt: chat ``messages``, sampling ``params`` (``n`` samples), optional ``prefix``."""

    key: str
    messages: tuple[dict[str, str], ...]
    params: SamplingConfig
    prefix: str = ""


@dataclass
class Completion:
    """One sample. ``finish_reason`` is ``stop`` (EOS or a stop string) or ``length``.

    ``stop_reason`` names the stop string that ended it, when the backend reports one.
    """

    text: str
    finish_reason: str
    stop_reason: str | None = None
    tokens: int | None = None
    tool_calls: int = 0  # sandbox runs fed back into this sample (TIR)


@dataclass
class GenResult:
    key: str
    completions: list[Completion]
    prompt_tokens: int | None = None


def derive_seed(base: int, *parts: object) -> int:
    """A 31-bit seed from a base seed and labels (seed doc id, round): stable across runs.

    Seeding per request, not per batch, makes a sample independent of which other
    requests shared its batch, so a resumed run regenerates exactly what was lost.
    """
    return xxhash.xxh64_intdigest("\x1f".join(map(str, parts)).encode("utf-8"),
                                  seed=base & 0xFFFFFFFFFFFFFFFF) & 0x7FFFFFFF


# ----------------------------------------------------------------------------- interface
class Engine(ABC):
    """A teacher model. ``generate`` returns one GenResult per request, in request order."""

    backend: str = "engine"

    def __init__(self, model: str) -> None:
        self.model = model

    @abstractmethod
    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        ...

    def close(self) -> None:
        """Free the model (GPU memory, connections)."""

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model}


def render_chat(tokenizer: Any, messages: Sequence[dict[str, str]], prefix: str = "",
                chat_template: str | None = None) -> str:
    """The prompt text for ``messages`` plus the assistant's ``prefix`` to continue from.

    Uses ``chat_template`` (a Jinja string or ``"chatml"``), else the tokenizer's own
    template, else ChatML.
    """
    tmpl = chat_template
    if tmpl is None and tokenizer is not None and getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True)
        return text + prefix
    if tmpl is not None and tmpl != CHATML_TEMPLATE:
        if tokenizer is None:
            raise ConfigError("synth: a custom chat_template needs a tokenizer to render it")
        text = tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=True,
                                             chat_template=tmpl)
        return text + prefix
    parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
    return "".join(parts) + "<|im_start|>assistant\n" + prefix


def cut_at_stop(text: str, stops: Sequence[str]) -> tuple[str, str | None]:
    """Cut ``text`` at the earliest stop string (backends that over-generate past it)."""
    best: tuple[int, str] | None = None
    for s in stops:
        if not s:
            continue
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    if best is None:
        return text, None
    return text[:best[0]], best[1]


# ----------------------------------------------------------------------------- vLLM
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
                    raise ConfigError("synth: --engine vllm needs the vllm package; install it with "
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


# ----------------------------------------------------------------------------- OpenAI-compatible
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})


class OpenAIEngine(Engine):
    """Chat completions over HTTP with bounded concurrency, retries and timeouts.

    ``n`` is sent as is; servers that return fewer choices (many hosted APIs ignore ``n``)
    are asked again for the rest. ``prefix`` continues the assistant turn with vLLM's and
    SGLang's ``continue_final_message`` extension.
    """

    backend = "openai"

    def __init__(self, model: str, *, base_url: str, api_key_env: str = "OPENAI_API_KEY", concurrency: int = 16,
                 max_retries: int = 5, timeout_s: float = 600.0, connect_timeout_s: float = 10.0,
                 backoff_base_s: float = 1.0, backoff_max_s: float = 60.0, seed: int = 0,
                 extra_body: dict[str, Any] | None = None, transport: Any = None) -> None:
        super().__init__(model)
        if not base_url:
            raise ConfigError("synth: --engine openai needs --base-url (e.g. http://localhost:8000/v1)")
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.concurrency = max(1, concurrency)
        self.max_retries = max(0, max_retries)
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.seed = seed
        self.extra_body = dict(extra_body or {})
        self.transport = transport
        self.stats: dict[str, int] = {"requests": 0, "retries": 0, "timeouts": 0}
        self.sleeps: list[float] = []  # backoff delays actually waited (tests and logs)

    @property
    def url(self) -> str:
        return f"{self.base_url}/chat/completions"

    def build_payload(self, req: GenRequest, n: int | None = None, seed_offset: int = 0) -> dict[str, Any]:
        p = req.params
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [dict(m) for m in req.messages],
            "n": p.n if n is None else n,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "max_tokens": p.max_tokens,
        }
        if p.seed is not None:
            body["seed"] = p.seed + seed_offset
        if p.stop:
            body["stop"] = list(p.stop)
        if p.top_k and p.top_k > 0:
            body["top_k"] = p.top_k  # vLLM / SGLang extension
        if p.repetition_penalty != 1.0:
            body["repetition_penalty"] = p.repetition_penalty
        if req.prefix:
            body["messages"].append({"role": "assistant", "content": req.prefix})
            body["continue_final_message"] = True
            body["add_generation_prompt"] = False
        body.update(self.extra_body)
        return body

    def backoff(self, attempt: int, rng: random.Random, retry_after: float | None = None) -> float:
        """Exponential backoff with "equal jitter": half fixed, half drawn from ``rng``."""
        cap = min(self.backoff_max_s, self.backoff_base_s * (2 ** attempt))
        delay = cap / 2 + rng.uniform(0, cap / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_max_s))
        return delay

    async def _post(self, client: Any, sem: asyncio.Semaphore, body: dict[str, Any], key: str) -> dict[str, Any]:
        import httpx

        # one RNG per request, seeded by its key: jitter is reproducible whatever the
        # order in which concurrent requests happen to fail
        rng = random.Random(derive_seed(self.seed, "backoff", key, body.get("seed")))
        last = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            async with sem:
                self.stats["requests"] += 1
                try:
                    r = await client.post(self.url, json=body)
                except httpx.TimeoutException as exc:
                    self.stats["timeouts"] += 1
                    last = f"timed out after {self.timeout_s:g} s ({type(exc).__name__})"
                    r = None
                except httpx.TransportError as exc:
                    last = f"connection failed ({exc})"
                    r = None
            if r is not None:
                if r.status_code == 200:
                    try:
                        return r.json()
                    except json.JSONDecodeError:
                        last = f"invalid JSON in response: {r.text[:200]!r}"
                elif r.status_code in RETRY_STATUS:
                    last = f"HTTP {r.status_code}: {r.text[:200]}"
                    ra = r.headers.get("retry-after")
                    try:
                        retry_after = float(ra) if ra else None
                    except ValueError:
                        retry_after = None
                else:
                    raise FatalError(f"{self.url}: HTTP {r.status_code} for model {self.model!r}: "
                                     f"{r.text[:300]}. Check --model and --base-url; this error is not retried.")
            if attempt == self.max_retries:
                break
            delay = self.backoff(attempt, rng, retry_after)
            self.sleeps.append(delay)
            self.stats["retries"] += 1
            await asyncio.sleep(delay)
        raise FatalError(f"{self.url}: request {key} failed after {self.max_retries + 1} attempt(s): {last}. "
                         "Generated samples so far are saved; rerun the same command to resume.")

    async def _one(self, client: Any, sem: asyncio.Semaphore, req: GenRequest) -> GenResult:
        want = req.params.n
        comps: list[Completion] = []
        prompt_tokens = None
        rounds = 0
        while len(comps) < want:
            body = self.build_payload(req, n=want - len(comps), seed_offset=rounds)
            data = await self._post(client, sem, body, f"{req.key}#{rounds}")
            choices = sorted(data.get("choices") or [], key=lambda c: c.get("index", 0))
            if not choices:
                raise FatalError(f"{self.url}: response for {req.key} has no choices: {json.dumps(data)[:300]}")
            usage = data.get("usage") or {}
            per = None
            if usage.get("completion_tokens") is not None:
                per = int(usage["completion_tokens"]) // len(choices)
            if prompt_tokens is None and usage.get("prompt_tokens") is not None:
                prompt_tokens = int(usage["prompt_tokens"])
            for ch in choices[: want - len(comps)]:
                msg = ch.get("message") or {}
                text = msg.get("content")
                if text is None:
                    text = ch.get("text") or ""
                sr = ch.get("stop_reason")
                comps.append(Completion(text=text, finish_reason=str(ch.get("finish_reason") or "stop"),
                                        stop_reason=sr if isinstance(sr, str) else None, tokens=per))
            rounds += 1
            if rounds > want + 2:
                raise FatalError(f"{self.url}: server keeps returning fewer than n={want} choices")
        return GenResult(key=req.key, completions=comps, prompt_tokens=prompt_tokens)

    async def agenerate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        import httpx

        headers = {"Content-Type": "application/json"}
        key = os.environ.get(self.api_key_env)
        if key:
            headers["Authorization"] = f"Bearer {key}"
        timeout = httpx.Timeout(self.timeout_s, connect=min(self.connect_timeout_s, self.timeout_s))
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        sem = asyncio.Semaphore(self.concurrency)
        async with httpx.AsyncClient(headers=headers, timeout=timeout, limits=limits,
                                     transport=self.transport) as client:
            return list(await asyncio.gather(*(self._one(client, sem, r) for r in requests)))

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(self.agenerate(requests))
        # called from inside an event loop (a notebook): run ours in a helper thread
        box: dict[str, Any] = {}

        def runner() -> None:
            try:
                box["out"] = asyncio.run(self.agenerate(requests))
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                box["err"] = exc

        t = threading.Thread(target=runner)
        t.start()
        t.join()
        if "err" in box:
            raise box["err"]
        return box["out"]

    def describe(self) -> dict[str, Any]:
        return {"backend": self.backend, "model": self.model, "base_url": self.base_url}


# ----------------------------------------------------------------------------- transformers
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
            raise ConfigError("synth: --engine transformers needs torch and transformers; install "
                              "`pip install 'mathcorpus[transformers]'`") from exc
        if not os.path.exists(self.model) and os.sep in self.model:
            raise ConfigError(f"synth: model folder {self.model} does not exist; pass --model with a local "
                              "folder or a Hugging Face model id")
        try:
            self._tok = AutoTokenizer.from_pretrained(self.tokenizer_path or self.model)
            import transformers

            dtype = "auto" if self.dtype == "auto" else getattr(torch, self.dtype, None)
            if dtype is None or (dtype != "auto" and not isinstance(dtype, torch.dtype)):
                raise ConfigError(f"synth: unknown dtype {self.dtype!r}; use auto, bfloat16, float16 or float32")
            # transformers renamed torch_dtype to dtype in 4.56
            major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
            key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
            self._model = AutoModelForCausalLM.from_pretrained(self.model, **{key: dtype}).to(self.device)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"synth: cannot load model {self.model!r} with transformers ({exc})") from exc
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


# ----------------------------------------------------------------------------- factory
@dataclass
class EngineSpec:
    """Everything needed to build an engine; hashable into a cache key, free of secrets."""

    backend: str
    model: str
    options: dict[str, Any] = field(default_factory=dict)

    def key(self) -> str:
        return json.dumps({"b": self.backend, "m": self.model, "o": self.options}, sort_keys=True, default=str)


BACKENDS: dict[str, type[Engine]] = {"vllm": VLLMEngine, "openai": OpenAIEngine, "transformers": TransformersEngine}

_CACHE_LOCK = threading.Lock()
_CACHE: dict[str, Engine] = {}


def build_engine(spec: EngineSpec) -> Engine:
    if spec.backend not in BACKENDS:
        from corpus.config import closest

        raise ConfigError(f"synth: unknown engine '{spec.backend}'{closest(spec.backend, BACKENDS)}; "
                          f"use one of {', '.join(BACKENDS)}")
    return BACKENDS[spec.backend](spec.model, **spec.options)


def get_engine(spec: EngineSpec) -> Engine:
    """The engine for ``spec``, reused across tasks of one worker process.

    A local executor runs many tasks in one process; loading a 72B model once per task
    would cost minutes each. One engine is kept; asking for another frees the old one.
    """
    k = spec.key()
    with _CACHE_LOCK:
        eng = _CACHE.get(k)
        if eng is None:
            for old in _CACHE.values():
                old.close()
            _CACHE.clear()
            eng = build_engine(spec)
            _CACHE[k] = eng
        return eng


def timed_generate(engine: Engine, requests: Sequence[GenRequest]) -> tuple[list[GenResult], float]:
    """``engine.generate`` and the wall seconds it took (for the overhead benchmark)."""
    t0 = time.perf_counter()
    out = engine.generate(requests)
    return out, time.perf_counter() - t0
