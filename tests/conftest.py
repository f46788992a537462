"""Shared fixtures: paths to the bundled sample and ../shared/data, tiny shard builders."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
SAMPLE = REPO / "demo" / "sample"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"{SHARED_DATA} is missing: tests read real data from ../shared/data beside the repo")
    return SHARED_DATA


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    return SAMPLE


def write_jsonl(path: Path, rows: list[dict[str, Any]], compress: str | None = None) -> Path:
    """Write rows as JSON lines (optionally .gz or .zst) and return the path."""
    data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress == "gz":
        with gzip.GzipFile(path, "wb", mtime=0) as fh:
            fh.write(data)
    elif compress == "zst":
        import zstandard

        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


@pytest.fixture
def tiny_docs() -> list[dict[str, Any]]:
    return [
        {"id": f"d{i}", "text": t, "source": s, "lang": lang, "url": u}
        for i, (t, s, lang, u) in enumerate([
            ("Let $x^2 = 4$. Then $x = \\pm 2$.", "web", "en", "https://math.stackexchange.com/q/1"),
            ("小明有3个苹果，又买了5个，一共有几个？", "qa", "zh", None),
            ("The match ended 2-1 after extra time.", "web", "en", "https://www.bbc.co.uk/sport/1"),
            ("theorem foo : 1 + 1 = 2 := by norm_num", "code", "en", None),
        ])
    ]


@pytest.fixture(autouse=True)
def _clean_cli_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """--debug / -v export MATHCORPUS_DEBUG / MATHCORPUS_VERBOSE for worker processes; keep tests apart."""
    monkeypatch.delenv("MATHCORPUS_DEBUG", raising=False)
    monkeypatch.delenv("MATHCORPUS_VERBOSE", raising=False)


# Teacher servers (scripted OpenAI-compatible, real `transformers serve`) and the tiny model,
# for every package's tests.
from tests.teacher_server import fake_openai, tiny_model_dir, transformers_server  # noqa: E402,F401
