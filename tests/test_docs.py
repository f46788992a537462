"""Docs stay true: docs/CLI.md matches the commands' help, and every command's help has an example."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _gen() -> object:
    spec = importlib.util.spec_from_file_location("gen_cli_reference", REPO / "docs" / "gen_cli_reference.py")
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def test_cli_reference_is_current() -> None:
    mod = _gen()
    assert (REPO / "docs" / "CLI.md").read_text(encoding="utf-8") == mod.render(), \
        "docs/CLI.md is stale: run .venv/bin/python docs/gen_cli_reference.py"


def test_every_leaf_command_has_an_example() -> None:
    text = _gen().render()
    sections = text.split("\n## `")[1:]
    leaves = [s for s in sections if "Commands:" not in s]
    assert len(leaves) >= 15
    missing = [s.split("`", 1)[0] for s in leaves if "Example" not in s]
    assert missing == []
