"""Hand-built decontam REPORT_DIRs for the report, HTML and diff tests.

A report folder is what ``mathcorpus decontam run --report`` writes (summary.json,
matches.parquet, removed/). These builders write one by hand from real benchmark items
planted in real web pages of ../shared/data/corpus_samples, with the summary counts derived
from the matches the same way the run derives them, so the tests do not depend on the
matcher and the numbers are consistent.
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from decontam.benchmarks import load_bundled
from tests.conftest import SHARED_DATA

GSM8K_ITEM = "0"      # Janet's ducks
MATH_ITEM = "0"       # vertical asymptotes of y = 2/(x^2+x-6)
MATH_FUZZY_ITEM = "468"  # the merry-go-round horse
BENCH_SIZES = {"gsm8k": 1319, "math": 5000}


def web_pages(n: int) -> list[dict[str, Any]]:
    """The first ``n`` real English web pages of the shared corpus sample."""
    path = SHARED_DATA / "corpus_samples" / "en_web_pages.jsonl.gz"
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            rec = json.loads(line)
            out.append(rec)
            if len(out) == n:
                break
    return out


def item(bench: str, item_id: str) -> Any:
    return next(it for it in load_bundled(bench).items if it.item_id == item_id)


@dataclass
class Doc:
    id: str
    text: str
    source: str
    domain: str


@dataclass
class Match:
    doc: Doc
    benchmark: str
    item_id: str
    field: str
    planted: str
    lcs_ratio: float
    tier: str
    removed: bool
    grams: int = 0
    contaminated: bool | None = None  # default: same as removed


def _plant(host: str, planted: str, at: float = 0.5) -> tuple[str, int]:
    """``host`` with ``planted`` inserted at a paragraph break near ``at`` of its length."""
    cut = host.find("\n", int(len(host) * at))
    cut = len(host) if cut < 0 else cut
    text = host[:cut] + "\n\n" + planted + "\n\n" + host[cut:]
    return text, cut + 2


def write_report(root: Path, docs: list[Doc], matches: list[Match], *, docs_in: int,
                 threshold: float = 0.6, fuzzy: bool = False,
                 unchecked: dict[str, list[str]] | None = None) -> Path:
    """Write summary.json, matches.parquet and removed/ for ``matches`` over ``docs``."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for m in matches:
        start = m.doc.text.index(m.planted)
        grams = json.dumps([" ".join(m.planted.lower().split()[:13])])
        rows.append({
            "doc_id": m.doc.id, "benchmark": m.benchmark, "item_id": m.item_id, "field": m.field,
            "grams_matched": m.grams, "lcs_ratio": m.lcs_ratio, "doc_start": start,
            "doc_end": start + len(m.planted), "tier": m.tier, "matched_grams_sample": grams,
            "source": m.doc.source, "domain": m.doc.domain, "removed": m.removed, "doc_field": "text",
            "contaminated": m.removed if m.contaminated is None else m.contaminated,
        })
    schema = pa.schema([
        ("doc_id", pa.string()), ("benchmark", pa.string()), ("item_id", pa.string()), ("field", pa.string()),
        ("grams_matched", pa.int32()), ("lcs_ratio", pa.float64()), ("doc_start", pa.int64()),
        ("doc_end", pa.int64()), ("tier", pa.string()), ("matched_grams_sample", pa.string()),
        ("source", pa.string()), ("domain", pa.string()), ("removed", pa.bool_()), ("doc_field", pa.string()),
        ("contaminated", pa.bool_()),
    ])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), root / "matches.parquet")
    removed_ids = sorted({m.doc.id for m in matches if m.removed})
    by_id = {d.id: d for d in docs}
    (root / "removed").mkdir(exist_ok=True)
    removed_docs = [by_id[i] for i in removed_ids]
    pq.write_table(pa.table({
        "id": [d.id for d in removed_docs], "text": [d.text for d in removed_docs],
        "source": [d.source for d in removed_docs], "domain": [d.domain for d in removed_docs],
        "removal_reason": ["decontam"] * len(removed_docs),
        "decontam_verdict": [json.dumps({"benchmarks": sorted({m.benchmark for m in matches if m.doc.id == d.id})})
                             for d in removed_docs],
    }), root / "removed" / "decontam-00000-00000.parquet")
    unchecked = unchecked or {}
    benchmarks = {}
    for name, size in BENCH_SIZES.items():
        found = {m.item_id for m in matches if m.benchmark == name and m.removed}
        benchmarks[name] = {
            "items": size, "items_found": len(found), "pct_touched": round(100 * len(found) / size, 4),
            "docs_removed": len({m.doc.id for m in matches if m.benchmark == name and m.removed}),
            "unchecked_short_items": len(unchecked.get(name, [])),
            "unchecked_item_ids": unchecked.get(name, []),
        }
    by_source: dict[str, int] = {}
    by_domain: dict[str, int] = {}
    for d in removed_docs:
        by_source[d.source] = by_source.get(d.source, 0) + 1
        by_domain[d.domain] = by_domain.get(d.domain, 0) + 1
    edges = [round(i / 10, 1) for i in range(11)]
    counts = [0] * 10
    for m in matches:
        counts[min(int(m.lcs_ratio * 10), 9)] += 1
    summary = {
        "profile": "pretrain", "benchmarks": benchmarks, "docs_in": docs_in,
        "docs_kept": docs_in - len(removed_ids), "docs_removed": len(removed_ids),
        "by_source": by_source, "by_domain": by_domain,
        "lcs_histogram": {"bins": edges, "counts": counts},
        "excluded": {"figure_code": True, "frequent_grams": 12},
        "config": {"ngram": 13, "lcs_threshold": threshold, "policy": "ngram+lcs", "benchmarks": "pretrain",
                   "fuzzy": fuzzy},
    }
    (root / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return root


@dataclass
class Scenario:
    """Documents and planted texts shared by the reports of one test."""

    docs: dict[str, Doc]
    planted: dict[str, str]


def scenario() -> Scenario:
    pages = web_pages(5)
    q_gsm = item("gsm8k", GSM8K_ITEM).question
    math0 = item("math", MATH_ITEM)
    q_math = math0.question + "\n" + math0.solution
    # a paraphrase of the horse problem: other numbers, light rewording
    fuzzy = ("A horse 48 feet from the center of a merry-go-round makes 20 revolutions. To travel the same "
             "distance, how many revolutions would a horse 12 feet from the center have to make?")
    partial = " ".join(item("math", "1").question.split()[:14])
    planted = {"gsm": q_gsm, "math": q_math, "fuzzy": fuzzy, "partial": partial}
    texts = {
        "web-0": _plant(pages[0]["text"], q_gsm)[0],
        "web-1": _plant(pages[1]["text"], q_math, 0.3)[0],
        "web-2": _plant(pages[2]["text"], fuzzy)[0],
        "web-3": _plant(pages[3]["text"], partial)[0],
        "web-4": pages[4]["text"],
    }
    meta = {"web-0": ("web", "mathhelp.example.org"), "web-1": ("book", "textbooks.example.com"),
            "web-2": ("web", "mathhelp.example.org"), "web-3": ("web", "forum.example.net"),
            "web-4": ("web", "news.example.com")}
    docs = {k: Doc(k, t, *meta[k]) for k, t in texts.items()}
    return Scenario(docs, planted)


def report_a(root: Path, sc: Scenario) -> Path:
    """Run A: exact tier only, threshold 0.6: the 14-token fragment (ratio 0.65) is removed."""
    d, p = sc.docs, sc.planted
    return write_report(root, list(d.values()), [
        Match(d["web-0"], "gsm8k", GSM8K_ITEM, "question", p["gsm"], 1.0, "exact", True, grams=41),
        Match(d["web-1"], "math", MATH_ITEM, "both", p["math"], 0.97, "exact", True, grams=60),
        Match(d["web-3"], "math", "1", "question", p["partial"], 0.65, "exact", True, grams=2),
    ], docs_in=len(d), threshold=0.6, fuzzy=False, unchecked={"math": ["12", "345", "4011"]})


def report_b(root: Path, sc: Scenario) -> Path:
    """Run B: threshold 0.7 and --fuzzy: the fragment is only reported, the paraphrase is removed."""
    d, p = sc.docs, sc.planted
    return write_report(root, list(d.values()), [
        Match(d["web-0"], "gsm8k", GSM8K_ITEM, "question", p["gsm"], 1.0, "exact", True, grams=41),
        Match(d["web-1"], "math", MATH_ITEM, "both", p["math"], 0.97, "exact", True, grams=60),
        Match(d["web-2"], "math", MATH_FUZZY_ITEM, "question", p["fuzzy"], 0.93, "fuzzy", True, grams=24),
        Match(d["web-3"], "math", "1", "question", p["partial"], 0.65, "exact", False, grams=2),
    ], docs_in=len(d), threshold=0.7, fuzzy=True, unchecked={"math": ["12", "345", "4011"]})


@pytest.fixture
def report_scenario() -> Scenario:
    return scenario()


@pytest.fixture
def report_dir(tmp_path: Path, report_scenario: Scenario) -> Path:
    return report_a(tmp_path / "report_a", report_scenario)


@pytest.fixture
def report_dir_b(tmp_path: Path, report_scenario: Scenario) -> Path:
    return report_b(tmp_path / "report_b", report_scenario)
