"""Fixtures for recall tests: real labelled samples from ../shared/data, small fast models, a URL pool.

Models here are trained with a fixed seed and one thread, on small dims and bucket counts so
each one takes a few seconds on a 2-core CI box. Session-scoped fixtures train each once.
"""

from __future__ import annotations

import gzip
import json
import random
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SHARED_DATA, write_jsonl

SAMPLES = SHARED_DATA / "corpus_samples"
EN_FILES = ("math_positive.jsonl.gz", "non_math_negative.jsonl.gz", "en_web_pages.jsonl.gz",
            "en_math_word_problems.jsonl.gz")
ZH_FILES = ("zh_math_positive.jsonl.gz", "zh_non_math_negative.jsonl.gz")
#: fastText options for tests: small and fast; everything else at the DeepSeekMath defaults.
FAST = {"dim": 64, "bucket": 100_000, "thread": 1, "seed": 0}


def read_sample(name: str) -> list[dict[str, Any]]:
    with gzip.open(SAMPLES / name, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def origin(r: dict[str, Any]) -> str:
    """The dataset a sample record comes from: the unit left out in source hold-out tests."""
    if r["source"] not in ("web", "book", "code", "qa"):
        return r["source"]
    return r["id"].split("-")[0]


def records(files: tuple[str, ...]) -> list[dict[str, Any]]:
    return [{"id": r["id"], "text": r["text"], "label": r["label"], "source": origin(r), "lang": r["lang"]}
            for f in files for r in read_sample(f)]


@pytest.fixture(scope="session")
def en_records(shared_data: Path) -> list[dict[str, Any]]:
    return records(EN_FILES)


@pytest.fixture(scope="session")
def zh_records(shared_data: Path) -> list[dict[str, Any]]:
    return records(ZH_FILES)


@pytest.fixture(scope="session")
def small_labelled(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """A small labelled English file (300 math, 300 non-math real records) for CLI tests."""
    rng = random.Random(7)
    pos = [r for r in records(("math_positive.jsonl.gz", "en_math_word_problems.jsonl.gz"))]
    neg = [r for r in records(("non_math_negative.jsonl.gz",))]
    rows = rng.sample(pos, 300) + rng.sample(neg, 300)
    rng.shuffle(rows)
    return write_jsonl(tmp_path_factory.mktemp("labelled") / "small.jsonl", rows)


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory, small_labelled: Path) -> Path:
    """A model trained on ``small_labelled`` (fast settings)."""
    from recall.model import TrainConfig, train_files

    out = tmp_path_factory.mktemp("model") / "small.bin"
    train_files([str(small_labelled)], str(out), TrainConfig(lang="en", epoch=10, lr=0.3, **FAST))
    return out


def planted_pool(tmp: Path, seed_n: int = 300, planted_math: int = 200, planted_other: int = 40,
                 news: int = 1600) -> tuple[Path, Path, str]:
    """Seed file, pool file and the planted math domain.

    Seed: Stacks Project sections (research LaTeX, labelled source=book). Pool (source=web):
    real news (AG News, BBC) on four news domains, and on ``mathhub.example.org`` real math
    Q&A (StackMathQA) plus word problems (SVAMP, MAWPS, AQuA) under /questions/, with some
    news under /news/. The seed has no Q&A and no word problems: the first model recalls
    only part of the planted domain, and expansion has to bring in the rest.
    """
    rng = random.Random(0)
    mp = read_sample("math_positive.jsonl.gz")
    neg = read_sample("non_math_negative.jsonl.gz")
    wp = [r for r in read_sample("en_math_word_problems.jsonl.gz") if not r["id"].startswith("asdiv")]
    books = [r for r in mp if r["source"] == "stacks_project"]
    smqa = [r for r in mp if r["source"] == "stackmathqa"]
    ag = [r for r in neg if r["source"] == "ag_news"]
    bbc = [r for r in neg if r["source"] == "bbc_news"]
    for x in (books, smqa, ag, bbc, wp):
        rng.shuffle(x)
    seed = [{"id": r["id"], "text": r["text"], "source": "book"} for r in books[:seed_n]]
    domain = "mathhub.example.org"
    pool = []
    planted = smqa[: planted_math // 2] + wp[: planted_math // 2]
    for i, r in enumerate(planted):
        pool.append({"id": "p-" + r["id"], "text": r["text"], "source": "web",
                     "url": f"https://{domain}/questions/{i}/q"})
    for i, r in enumerate(ag[:planted_other]):
        pool.append({"id": "p-" + r["id"], "text": r["text"], "source": "web", "url": f"https://{domain}/news/{i}"})
    doms = ["dailynews.example.com", "worldwire.example.net", "sportsdesk.example.org"]
    n_ag = news * 3 // 4
    for i, r in enumerate(ag[planted_other: planted_other + n_ag]):
        topic = r["meta"]["topic"].lower().replace("/", "-")
        pool.append({"id": "p-" + r["id"], "text": r["text"], "source": "web",
                     "url": f"https://www.{doms[i % 3]}/{topic}/{i}"})
    for i, r in enumerate(bbc[: news - n_ag]):
        pool.append({"id": "p-" + r["id"], "text": r["text"], "source": "web",
                     "url": f"https://bbc.example.co.uk/news/{r['meta']['topic']}/{i}"})
    rng.shuffle(pool)
    return write_jsonl(tmp / "seed.jsonl", seed), write_jsonl(tmp / "pool.jsonl.gz", pool, "gz"), domain
