"""examples/train_tiny.py: a Qwen2-architecture model learns from an export through TokenDataset, and resumes exactly."""

from __future__ import annotations

import gzip
import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from click.testing import CliRunner

from corpus.cli import main as cli
from tests.conftest import SAMPLE, write_jsonl

REPO = Path(__file__).resolve().parents[2]


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("train_tiny", REPO / "examples" / "train_tiny.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def small_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A megatron export of the first 40 documents of demo/sample (the whole demo takes too long)."""
    root = tmp_path_factory.mktemp("tiny")
    rows = []
    with gzip.open(SAMPLE / "sample-00.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            rows.append({"id": d["id"], "text": d["text"][:3000], "source": d.get("source", "web")})
            if len(rows) == 40:
                break
    write_jsonl(root / "in" / "docs.jsonl", rows)
    res = CliRunner().invoke(cli, ["export", str(root / "in"), "-o", str(root / "tok"), "--format", "megatron",
                                   "--seq-len", "64", "--engine", "hf", "--identity-sample-docs", "0"],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return root / "tok"


def test_loss_falls_and_resume_gives_the_same_losses(small_export: Path, tmp_path: Path) -> None:
    train = load_example()
    common = [str(small_export), "--steps", "24", "--batch-size", "2", "--seq-len", "32", "--hidden", "32",
              "--lr", "1e-2", "--threads", "1"]
    full = train.main([*common, "--out", str(tmp_path / "full")])
    assert len(full) == 24
    first, last = full[0], sum(full[-5:]) / 5
    assert first > 11 and last < first - 3, full  # ln(151,665) = 11.9 at random init
    head = train.main([*common, "--out", str(tmp_path / "cut"), "--save-at", "10", "--stop-at", "10"])
    assert head == full[:10]
    tail = train.main([*common, "--out", str(tmp_path / "cut"), "--resume"])
    assert tail == full[10:]
