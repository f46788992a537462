"""Teacher records and the engine interface: what every backend takes and returns.

Owns :class:`SamplingConfig`, :class:`GenRequest`, :class:`Completion`, :class:`GenResult`,
the :class:`Engine` base class, per-request seeds (:func:`derive_seed`), ChatML rendering
and stop-string cutting. Backends live in ``vllm.py``, ``openai.py`` and ``hf.py``; tasks,
answer checking and provenance only ever see these types, so they never know which ran.

A request may carry ``prefix``, text the assistant has already written, which the engine
continues: tool-integrated reasoning feeds code output back this way.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import xxhash

from corpus.errors import ConfigError, MathcorpusError

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

    def generate_each(self, requests: Sequence[GenRequest]) -> list[GenResult | MathcorpusError]:
        """Like :meth:`generate`, but a request that fails comes back as its error, in its place.

        For callers that record a failed request and go on (the decontam judge). This
        default asks the whole batch, then one by one if the batch failed; backends that
        can tell requests apart override it.
        """
        try:
            return list(self.generate(requests))
        except MathcorpusError as exc:
            if len(requests) == 1:
                return [exc]
        out: list[GenResult | MathcorpusError] = []
        for r in requests:
            try:
                out.extend(self.generate([r]))
            except MathcorpusError as exc:
                out.append(exc)
        return out

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
            raise ConfigError("teacher: a custom chat_template needs a tokenizer to render it")
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
