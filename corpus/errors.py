"""The one small error hierarchy every package raises.

Each error carries a message written for the person running the CLI: what went wrong,
where (file, field, line) and how to fix it. The CLI maps each class to an exit code
and prints the message without a traceback unless ``--debug`` is given.
"""

from __future__ import annotations


class MathcorpusError(Exception):
    """Base class. ``exit_code`` is what the CLI exits with."""

    exit_code: int = 1

    def __init__(self, message: str) -> None:
        if not message:
            raise ValueError("MathcorpusError needs a message")
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ConfigError(MathcorpusError):
    """A configuration file or option is wrong (unknown key, bad value). Exit 2."""

    exit_code = 2


class InputError(MathcorpusError):
    """Input data is unusable: missing columns, bad JSON, invalid UTF-8, empty glob."""


class ShardError(InputError):
    """One shard file cannot be read (corrupt, truncated). Skippable with --skip-bad-files."""

    def __init__(self, message: str, path: str = "") -> None:
        super().__init__(message)
        self.path = path


class FatalError(MathcorpusError):
    """The run cannot go on: an invariant broke (kept + removed != input), disk full, etc."""


class GateTripped(MathcorpusError):
    """A quality gate fired on purpose (e.g. contamination found with --fail-on-hit). Exit 3."""

    exit_code = 3
