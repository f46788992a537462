"""Teacher models on the floor: one interface over vLLM, OpenAI-compatible HTTP and transformers.

synth (generation, quality annotation) and decontam (the judge tier) call a teacher through
this package and never import each other. ``base.py`` holds the request/result records and
the :class:`Engine` interface, ``vllm.py``, ``openai.py`` and ``hf.py`` the three backends
(retries and backoff live with the HTTP one), ``engines.py`` the backend registry and the
per-process engine, and ``cache.py`` the content-hash request cache that lets a rerun send
only requests it has not sent before. Prompt templates are not here: they stay versioned
YAML in the package that owns the task.
"""

from corpus.teacher.base import (CHATML_STOP, CHATML_TEMPLATE, Completion, Engine, GenRequest, GenResult,
                                 SamplingConfig, cut_at_stop, derive_seed, render_chat)
from corpus.teacher.cache import RequestCache, cached_generate, request_hash
from corpus.teacher.engines import BACKENDS, EngineSpec, build_engine, get_engine, timed_generate
from corpus.teacher.hf import TransformersEngine
from corpus.teacher.openai import RETRY_STATUS, OpenAIEngine
from corpus.teacher.vllm import VLLMEngine, make_sampling_params, parse_vllm_output, vllm_sampling_kwargs

__all__ = [
    "BACKENDS", "CHATML_STOP", "CHATML_TEMPLATE", "Completion", "Engine", "EngineSpec", "GenRequest", "GenResult",
    "OpenAIEngine", "RETRY_STATUS", "RequestCache", "SamplingConfig", "TransformersEngine", "VLLMEngine",
    "build_engine", "cached_generate", "cut_at_stop", "derive_seed", "get_engine", "make_sampling_params",
    "parse_vllm_output", "render_chat", "request_hash", "timed_generate", "vllm_sampling_kwargs",
]
