"""The ``openai`` backend: any OpenAI-compatible ``/chat/completions`` endpoint.

``vllm serve``, SGLang, ``transformers serve`` or a hosted API, through an async httpx
client with a concurrency limit, retries on timeouts, 429 and 5xx with exponential backoff
and seeded jitter (so a rerun waits the same), and timeouts. Other HTTP errors are not
retried: they mean a wrong model name or URL.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
from collections.abc import Sequence
from typing import Any

from corpus.errors import ConfigError, FatalError, MathcorpusError
from corpus.teacher.base import Completion, Engine, GenRequest, GenResult, derive_seed


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
            raise ConfigError("teacher: --engine openai needs --base-url (e.g. http://localhost:8000/v1)")
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

    async def _run_all(self, requests: Sequence[GenRequest], one: Any) -> list[Any]:
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
            return list(await asyncio.gather(*(one(client, sem, r) for r in requests)))

    async def agenerate_each(self, requests: Sequence[GenRequest]) -> list[GenResult | MathcorpusError]:
        """Every request on its own: one that fails after its retries comes back as its error."""
        async def one(client: Any, sem: asyncio.Semaphore, r: GenRequest) -> GenResult | MathcorpusError:
            try:
                return await self._one(client, sem, r)
            except MathcorpusError as exc:
                return exc

        return await self._run_all(requests, one)

    async def agenerate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        return await self._run_all(requests, self._one)

    def generate(self, requests: Sequence[GenRequest]) -> list[GenResult]:
        if not requests:
            return []
        return self._sync(self.agenerate, requests)

    def generate_each(self, requests: Sequence[GenRequest]) -> list[GenResult | MathcorpusError]:
        if not requests:
            return []
        return self._sync(self.agenerate_each, requests)

    def _sync(self, coro: Any, requests: Sequence[GenRequest]) -> Any:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return asyncio.run(coro(requests))
        # called from inside an event loop (a notebook): run ours in a helper thread
        box: dict[str, Any] = {}

        def runner() -> None:
            try:
                box["out"] = asyncio.run(coro(requests))
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
