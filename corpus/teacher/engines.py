"""Choosing and keeping a teacher engine: the backend registry, specs and the per-process engine.

An :class:`EngineSpec` names a backend, a model and its options; it is free of secrets
(API keys stay in environment variables) so it can go into configs, cache keys and
provenance. :func:`get_engine` keeps one engine per worker process.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from corpus.errors import ConfigError
from corpus.teacher.base import Engine, GenRequest, GenResult
from corpus.teacher.hf import TransformersEngine
from corpus.teacher.openai import OpenAIEngine
from corpus.teacher.vllm import VLLMEngine


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

        raise ConfigError(f"teacher: unknown engine '{spec.backend}'{closest(spec.backend, BACKENDS)}; "
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
