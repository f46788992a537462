"""The pipeline's run report (corpus/run_report.py): report.json, and report.html checked in headless Chromium.

One real pipeline over a slice of the bundled demo sample plus the planted contamination:
a command step (build a decontam index) → exact dedup → decontam → export with a mix. The
page must show what report.json holds, draw its charts, link the stages' own reports and
fetch nothing.
"""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from corpus.cli import main
from corpus.run_report import build_report, render_report_html
from tests.browser import CHROMIUM, num, offline_page
from tests.conftest import write_jsonl

REPO = Path(__file__).resolve().parents[2]


def _sample_rows(per_source: int) -> list[dict[str, Any]]:
    """The first ``per_source`` documents of each source (web, qa, book, code) of the demo sample."""
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    with gzip.open(REPO / "demo" / "sample" / "sample-00.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            d = json.loads(line)
            if seen.get(d["source"], 0) < per_source:
                seen[d["source"]] = seen.get(d["source"], 0) + 1
                rows.append({k: d[k] for k in ("id", "text", "source")})
    return rows


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished pipeline workdir (the demo sample's first docs, the planted pages, two exact copies)."""
    base = tmp_path_factory.mktemp("runreport")
    rows = _sample_rows(30)
    rows += [dict(rows[3], id="copy-of-3"), dict(rows[7], id="copy-of-7")]
    write_jsonl(base / "in" / "sample.jsonl", rows)
    planted = [json.loads(x) for x in (REPO / "demo" / "planted" / "planted.jsonl").read_text().splitlines() if x]
    write_jsonl(base / "in" / "planted.jsonl", [{k: d[k] for k in ("id", "text", "source") if k in d}
                                                 for d in planted])
    w = base / "work"
    pipe = base / "pipe.yaml"
    pipe.write_text(
        f"workdir: {w}\ninputs: [{base / 'in'}]\nexecutor: {{workers: 1}}\nstages:\n"
        "  - name: index\n"
        "    run: [decontam, index, --benchmarks, 'gsm8k,math,cmath', -o, '{workdir}/idx']\n"
        "    creates: '{workdir}/idx'\n"
        "  - {name: dedup, stage: dedup-exact}\n"
        "  - {name: decontam, stage: decontam, options: {index: '{workdir}/idx'}}\n"
        "  - {name: export, stage: export, options: {format: megatron, seq_len: 1024, seed: 0,"
        " mix: {web: 2.0, qa: 0.5}}}\n")
    r = CliRunner().invoke(main, ["pipeline", "run", str(pipe)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert f"run report: {w / 'report.html'}" in r.stdout.replace("\n", "")
    return w


def test_report_json_holds_funnel_contamination_export_and_links(run_dir: Path) -> None:
    rep = json.loads((run_dir / "report.json").read_text())
    labels = [s["label"] for s in rep["stages"]]
    assert labels == ["index", "dedup", "decontam", "export"]
    idx, dedup, dec, exp = rep["stages"]
    assert idx["kind"] == "command" and idx["seconds"] > 0 and idx["links"][0]["href"] == "idx/"
    # the funnel: each stage reads what the previous kept, and input = kept + removed
    assert dedup["docs_in"] == 129 and dedup["removed_by_reason"] == {"dedup:exact": 2}
    assert dec["docs_in"] == dedup["kept"] and exp["docs_in"] == dec["kept"]
    for s in (dedup, dec, exp):
        assert s["docs_in"] == s["kept"] + s["removed"] == s["kept"] + sum(s["removed_by_reason"].values())
        assert s["seconds"] > 0 and s["tasks"] >= 1
    assert rep["totals"] == {"steps": 4, "first_stage": "dedup", "docs_in": 129, "docs_out": exp["kept"],
                             "removed": dedup["removed"] + dec["removed"], "tokens": rep["exports"][0]["tokens"],
                             "seconds": pytest.approx(sum(s["seconds"] for s in rep["stages"]), abs=0.01)}
    # contamination: the planted pages quote GSM8K, MATH and CMATH items
    (c,) = rep["contaminations"]
    assert c["label"] == "decontam" and c["docs_removed"] == dec["removed"] >= 5
    assert sorted(c["benchmarks"]) == ["cmath", "gsm8k", "math"]
    assert sum(b["docs_removed"] for b in c["benchmarks"].values()) >= dec["removed"]
    assert rep["contamination"]["docs_removed"] == dec["removed"]  # the summary as before
    # the decontam stage wrote its own page, linked relative to the workdir
    links = {ln["title"]: ln for ln in dec["links"]}
    assert links["decontam report"]["href"] == "02-decontam/_report/report.html"
    assert (run_dir / links["decontam report"]["href"]).is_file()
    assert links["output"]["href"] == "02-decontam/" and links["removed"]["href"] == "02-decontam/_report/removed/"
    # export: tokens by source before and after the mix (web x2, qa x0.5)
    (x,) = rep["exports"]
    m = json.loads((run_dir / "03-export" / "manifest.json").read_text())
    assert x["tokens"] == m["tokens"] == exp["tokens_out"]
    src = {s["source"]: s for s in x["sources"]}
    assert src["web"]["weight"] == 2.0 and src["web"]["tokens_after"] == 2 * src["web"]["tokens_before"]
    assert src["qa"]["weight"] == 0.5 and src["qa"]["tokens_after"] < src["qa"]["tokens_before"]
    assert sum(s["tokens_after"] for s in x["sources"]) == x["tokens"]
    assert x["tokenizer"]["name"] == "qwen2.5" and len(x["tokenizer"]["sha256"]) == 64
    assert len(x["shards"]) == m["output"]["shards"]


def test_page_is_self_contained(run_dir: Path) -> None:
    html = (run_dir / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    assert "<script" not in html  # drawn server-side: nothing to run
    assert not re.search(r"<link\b", html) and "@import" not in html and "url(" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    for chart in ("chart-funnel", "chart-removals", "chart-timing", "chart-contam-0", "chart-tokens-0"):
        assert f'id="{chart}"' in html


def test_generic_stage_list_and_escaping(tmp_path: Path) -> None:
    """Any stage list renders: copy stages only, nothing removed, a label with markup in it."""
    from types import SimpleNamespace

    out = tmp_path / "00-x"
    out.mkdir()
    pipe = SimpleNamespace(path="p.yaml", workdir=str(tmp_path), steps=[])
    results = [{"kind": "stage", "label": "<b>x</b>", "stage": "copy", "docs_in": 3, "bytes_in": 10, "kept": 3,
                "removed": 0, "removed_by_reason": {}, "bad_files": [], "output": str(out), "seconds": 0.5,
                "tasks": 1},
               {"kind": "command", "label": "train", "skipped": True, "creates": None}]
    rep = build_report(pipe, results)  # type: ignore[arg-type]
    assert rep["contaminations"] == [] and rep["exports"] == [] and rep["totals"]["removed"] == 0
    html = render_report_html(rep)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert 'id="chart-funnel"' in html and "No stage removed any document." in html
    assert "command step (already done, skipped)" in html
    json.dumps(rep)  # report.json is plain JSON


def _artifacts() -> Path:
    d = Path(os.environ.get("MATHCORPUS_ARTIFACTS") or REPO / "tests" / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_page_in_headless_chromium(run_dir: Path) -> None:
    rep = json.loads((run_dir / "report.json").read_text())
    with offline_page(1440, 1000) as (page, problems, requests):
        page.goto((run_dir / "report.html").as_uri())
        page.wait_for_load_state("load")

        t = rep["totals"]
        assert num(page.inner_text("#kpi-docs-in")) == t["docs_in"]
        assert num(page.inner_text("#kpi-docs-out")) == t["docs_out"]
        assert num(page.inner_text("#kpi-removed")) == t["removed"]
        assert num(page.inner_text("#kpi-tokens")) == t["tokens"]
        # the stage table shows report.json's numbers, one row per step
        assert page.locator("#stages-table tbody tr").count() == len(rep["stages"])
        for s in rep["stages"]:
            row = page.locator(f'#stages-table tr[data-label="{s["label"]}"]')
            keys = ("docs_in", "kept", "removed", "tasks") if s["kind"] == "stage" else ()
            for k in keys:
                assert num(row.locator(f'td[data-k="{k}"]').inner_text()) == s[k], (s["label"], k)
            for ln in s["links"]:  # every link points at something that exists
                href = row.locator(f'a[href="{ln["href"]}"]')
                assert href.count() == 1 and (run_dir / ln["href"]).exists(), ln
        # the funnel drew kept + removed per shard stage, on one scale, narrowing
        shard = [s for s in rep["stages"] if s["kind"] == "stage"]
        assert page.get_attribute("#chart-funnel", "data-drawn") == "true"
        widths = []
        for s in shard:
            kept = page.locator(f'#chart-funnel rect.kept[data-label="{s["label"]}"]')
            rem = page.locator(f'#chart-funnel rect.removed[data-label="{s["label"]}"]')
            assert int(kept.get_attribute("data-value")) == s["kept"]
            assert int(rem.get_attribute("data-value")) == s["removed"]
            assert (float(rem.get_attribute("width")) > 0) == (s["removed"] > 0)
            box = kept.bounding_box()
            assert box is not None and box["width"] > 100
            widths.append(box["width"] + float(rem.get_attribute("width")))
        assert widths == sorted(widths, reverse=True)
        # removals by reason: one segment per reason, values as in report.json
        segs = page.eval_on_selector_all("#chart-removals rect.seg", "els => els.map(e => "
                                         "[e.dataset.label, e.dataset.reason, +e.dataset.value, e.getBBox().width])")
        assert sorted((a, b, v) for a, b, v, _ in segs) == sorted(
            (s["label"], k, v) for s in shard for k, v in s["removed_by_reason"].items())
        assert all(wd >= 2 for *_, wd in segs)
        # time per step: one bar per step
        assert page.locator("#chart-timing rect.bar").count() == len(rep["stages"])
        # contamination per benchmark: table and bars equal report.json
        c = rep["contaminations"][0]
        for name, b in c["benchmarks"].items():
            row = page.locator(f'#contam-0 tr[data-benchmark="{name}"]')
            for k in ("items", "items_found", "docs_removed"):
                assert num(row.locator(f'td[data-k="{k}"]').inner_text()) == b[k], (name, k)
            assert num(row.locator('td[data-k="pct_touched"]').inner_text()) == round(b["pct_touched"], 2)
            bar = page.locator(f'#chart-contam-0 rect.bar[data-label="{name}"]')
            assert float(bar.get_attribute("data-value")) == b["pct_touched"]
            assert (float(bar.get_attribute("width")) > 0) == (b["items_found"] > 0)
        # tokens by source before and after the mix, and the sources table
        x = rep["exports"][0]
        for s in x["sources"]:
            for cls, key in (("bar-a", "tokens_before"), ("bar-b", "tokens_after")):
                bar = page.locator(f'#chart-tokens-0 rect.{cls}[data-label="{s["source"]}"]')
                assert float(bar.get_attribute("data-value")) == s[key]
                assert float(bar.get_attribute("width")) > 0
            row = page.locator(f'#export-0 .sources-table tr[data-source="{s["source"]}"]')
            for k in ("weight", "docs_before", "docs_after", "tokens_before", "tokens_after"):
                assert num(row.locator(f'td[data-k="{k}"]').inner_text()) == s[k], (s["source"], k)
        assert num(page.inner_text('#export-0 .output-table td[data-k="tokens"]')) == x["tokens"]
        assert page.locator("#export-0 .shards-table tbody tr").count() == len(x["shards"])
        assert page.inner_text('#export-0 .tokenizer-table td[data-k="engine"]') == x["tokenizer"]["engine"]
        page.screenshot(path=str(_artifacts() / "run_report.png"), full_page=True)

        # the decontam stage's own page, reached through the link, renders offline too
        page.click('#stages-table tr[data-label="decontam"] a:text("decontam report")')
        page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        assert num(page.inner_text("#kpi-docs-removed")) == c["docs_removed"]
    assert problems == []
    assert [u for u in requests if not u.startswith("file://")] == []
