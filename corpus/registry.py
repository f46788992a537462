"""Discovery of commands and stages registered by the packages above corpus/.

recall/, decontam/ and synth/ declare entry points in pyproject.toml:

* ``mathcorpus.commands``: a click command or group added under the root ``mathcorpus`` CLI;
* ``mathcorpus.stages``: a :class:`corpus.runner.Stage` subclass usable in pipeline files.

corpus/ looks them up by name here and never imports those packages directly.
"""

from __future__ import annotations

from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from corpus.config import closest
from corpus.errors import ConfigError

COMMANDS_GROUP = "mathcorpus.commands"
STAGES_GROUP = "mathcorpus.stages"

# Stages that live in corpus/ itself (no entry point needed, but listed the same way).
_BUILTIN_STAGES = {
    "copy": "corpus.passthrough:CopyStage",
    "dedup-exact": "corpus.dedup.exact:ExactDedupStage",
    "dedup-minhash": "corpus.dedup.minhash:MinhashDedupStage",
    "export": "corpus.export.stage:ExportStage",
    "extract": "corpus.extract.stage:ExtractStage",
}


def _load(spec: str) -> Any:
    mod, _, attr = spec.partition(":")
    module = __import__(mod, fromlist=[attr])
    return getattr(module, attr)


@lru_cache(maxsize=None)
def command_entry_points() -> dict[str, Any]:
    return {ep.name: ep for ep in entry_points(group=COMMANDS_GROUP)}


@lru_cache(maxsize=None)
def stage_specs() -> dict[str, str]:
    specs = dict(_BUILTIN_STAGES)
    for ep in entry_points(group=STAGES_GROUP):
        specs[ep.name] = ep.value
    return specs


def stage_names() -> list[str]:
    return sorted(stage_specs())


def get_stage_class(name: str) -> Any:
    """The Stage class registered as ``name``; ConfigError with a suggestion when unknown."""
    specs = stage_specs()
    if name not in specs:
        raise ConfigError(f"unknown stage '{name}'{closest(name, specs)} (known stages: {', '.join(sorted(specs))})")
    return _load(specs[name])
