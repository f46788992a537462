"""A recall cycle over pages extracted from a WARC: real URLs and domains drive the domain expansion.

The pool is what ``mathcorpus extract --keep-nonmath`` makes of the demo crawl (Q&A pages at their
real mathoverflow.net / physics.stackexchange.com URLs, a Wikipedia article, 40 non-math
articles) plus real news on three news domains; the seed is Stacks Project sections. The cycle
must find the Q&A sites by their extracted URLs and bring all their pages in by cycle 2.
"""

from __future__ import annotations

import random
from pathlib import Path

import pyarrow.parquet as pq

from corpus.extract.stage import ExtractConfig, ExtractStage
from corpus.runner import RunOptions, run_stage
from recall.cycle import CycleConfig, run_cycle
from tests.conftest import write_jsonl
from tests.recall.conftest import read_sample

TRAIN = {"dim": 64, "bucket": 100_000, "epoch": 10, "lr": 0.2, "thread": 1, "seed": 0}


def test_cycle_on_extracted_pages_finds_the_qa_sites(repo_root: Path, shared_data: Path, tmp_path: Path) -> None:
    pages = tmp_path / "pages"
    s = run_stage(ExtractStage(ExtractConfig(keep_nonmath=True)), [str(repo_root / "demo" / "warc" / "demo.warc.gz")],
                  str(pages))
    assert s["kept"] == 161  # 120 Q&A pages, the Wikipedia article, 40 non-math articles
    rng = random.Random(0)
    books = [r for r in read_sample("math_positive.jsonl.gz") if r["source"] == "stacks_project"]
    news = [r for r in read_sample("non_math_negative.jsonl.gz") if r["source"] == "ag_news"]
    rng.shuffle(books)
    rng.shuffle(news)
    seed = write_jsonl(tmp_path / "seed.jsonl", [{"id": r["id"], "text": r["text"], "source": "book"}
                                                 for r in books[:300]])
    sites = ["dailynews.example.com", "worldwire.example.net", "sportsdesk.example.org"]
    pool_news = write_jsonl(tmp_path / "news.jsonl", [
        {"id": "n-" + r["id"], "text": r["text"], "source": "web", "url": f"https://www.{sites[i % 3]}/a/{i}"}
        for i, r in enumerate(news[:600])])
    cfg = CycleConfig.from_mapping({"seed": [str(seed)], "pool": [str(pages), str(pool_news)],
                                    "workdir": str(tmp_path / "W"), "cycles": 2, "auto_accept": True,
                                    "min_domain_pages": 10, "train": dict(TRAIN)})
    summary = run_cycle(cfg, RunOptions())
    c1 = summary["cycles"][0]
    assert c1["accepted"] == 2
    stats = pq.read_table(tmp_path / "W" / "cycle-001" / "domains.parquet").to_pylist()
    by = {r["domain"]: r for r in stats}
    # the domains come from the URLs extract took from the WARC records
    assert (by["mathoverflow.net"]["pages"], by["physics.stackexchange.com"]["pages"]) == (83, 37)
    assert by["en.wikipedia.org"]["pages"] == 1 and by["wikitext.demo.invalid"]["pages"] == 40
    assert {d for d, r in by.items() if r["math_domain"]} == {"mathoverflow.net", "physics.stackexchange.com"}
    c2 = {r["domain"]: r for r in pq.read_table(tmp_path / "W" / "cycle-002" / "domains.parquet").to_pylist()}
    assert c2["mathoverflow.net"]["recall_rate"] == 1.0 and c2["physics.stackexchange.com"]["recall_rate"] == 1.0
    assert all(c2[d]["recalled"] == 0 for d in ("wikitext.demo.invalid", *sites))
