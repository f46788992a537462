"""`mathcorpus decontam report --html`: one self-contained offline page, checked in headless Chromium."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from corpus.cli import main
from decontam import report as rp
from decontam.html import render_html
from tests.browser import CHROMIUM, num, offline_page
from tests.decontam.report_fixtures import (  # noqa: F401  (fixtures)
    report_dir, report_dir_b, report_scenario,
)

PAYLOAD = "</script><script>window.__injected = 1</script><img src=x onerror=window.__injected=2>"


def artifacts_dir(repo_root: Path) -> Path:
    d = Path(os.environ.get("MATHCORPUS_ARTIFACTS") or repo_root / "tests" / "artifacts")
    d.mkdir(parents=True, exist_ok=True)
    return d


def write_page(report: Path, out: Path) -> Path:
    res = CliRunner().invoke(main, ["decontam", "report", str(report), "--html", str(out)],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    assert f"wrote {out} (" in res.stderr
    return out


def inject_payload(report: Path) -> None:
    """Put markup that would run as script if the page did not escape it into a removed doc."""
    path = next((report / "removed").glob("*.parquet"))
    t = pq.read_table(path).to_pylist()
    for row in t:
        if row["id"] == "web-0":
            assert row["text"].count("eggs per day.") == 1
            row["text"] = row["text"].replace("eggs per day.", "eggs per day. " + PAYLOAD, 1)
    import pyarrow as pa

    pq.write_table(pa.Table.from_pylist(t), path)
    # the match span grows by the payload's length
    m = pq.read_table(report / "matches.parquet").to_pylist()
    for row in m:
        if row["doc_id"] == "web-0":
            row["doc_end"] += len(PAYLOAD) + 1
    schema = pq.read_schema(report / "matches.parquet")
    pq.write_table(pa.Table.from_pylist(m, schema=schema), report / "matches.parquet")


# ----------------------------------------------------------------------------- static checks
def test_page_is_self_contained(report_dir: Path, tmp_path: Path) -> None:
    html = write_page(report_dir, tmp_path / "r.html").read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>")
    # nothing is fetched: no external script, stylesheet, image or font
    assert not re.search(r"<script[^>]+src=", html)
    assert not re.search(r"<link\b", html)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "@import" not in html and "url(" not in html
    data = json.loads(re.search(r'<script id="report-data" type="application/json">(.*?)</script>',
                                html, re.S).group(1))
    summary = json.loads((report_dir / "summary.json").read_text())
    assert data["view"]["docs_removed"] == summary["docs_removed"]
    assert len(data["pairs"]) == 3 and data["total_pairs"] == 3


def test_embedded_json_cannot_close_the_script(report_dir: Path) -> None:
    inject_payload(report_dir)
    rep = rp.load_report(str(report_dir))
    pairs = rp.build_pairs(rep, rp.select_pairs(rep, None))
    assert any(PAYLOAD in (p.doc_window or "") for p in pairs)
    html = render_html(rp.summary_view(rep), pairs)
    body = html.split('<script id="report-data" type="application/json">', 1)[1]
    data_text = body.split("</script>", 1)[0]
    assert "</" not in data_text
    data = json.loads(data_text)
    assert any(PAYLOAD in (p["doc_window"] or "") for p in data["pairs"])


def test_html_pairs_limit(report_dir_b: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    res = CliRunner().invoke(main, ["decontam", "report", str(report_dir_b), "--html", str(out),
                                    "--html-pairs", "2"], catch_exceptions=False)
    assert res.exit_code == 0
    assert f"wrote {out} (2 of 4 pairs embedded)" in res.stderr
    data = json.loads(re.search(r'type="application/json">(.*?)</script>', out.read_text(), re.S).group(1))
    assert [p["lcs_ratio"] for p in data["pairs"]] == [1.0, 0.97]


def test_html_into_missing_folder(report_dir: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["decontam", "report", str(report_dir), "--html",
                                    str(tmp_path / "no" / "r.html")])
    assert res.exit_code == 1
    assert res.stderr == (f"Error: --html {tmp_path / 'no' / 'r.html'}: folder {tmp_path / 'no'} does not "
                          "exist; create it first\n")


# ----------------------------------------------------------------------------- real browser
@pytest.mark.browser
@pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium at /usr/bin/chromium")
def test_page_in_headless_chromium(report_dir_b: Path, tmp_path: Path, repo_root: Path) -> None:
    inject_payload(report_dir_b)
    page_path = write_page(report_dir_b, tmp_path / "report.html")
    summary = json.loads((report_dir_b / "summary.json").read_text())
    with offline_page(1400, 1000) as (page, problems, requests):
        page.goto(page_path.as_uri())
        page.wait_for_selector("body[data-ready=true]", timeout=15_000)

        # headline counts equal summary.json
        assert num(page.inner_text("#kpi-docs-in")) == summary["docs_in"]
        assert num(page.inner_text("#kpi-docs-kept")) == summary["docs_kept"]
        assert num(page.inner_text("#kpi-docs-removed")) == summary["docs_removed"]
        # the summary table: one row per benchmark with the summary's numbers
        for name, b in summary["benchmarks"].items():
            row = page.locator(f'#summary-table tr[data-benchmark="{name}"]')
            for key in ("items", "items_found", "docs_removed", "unchecked_short_items"):
                assert num(row.locator(f'td[data-k="{key}"]').inner_text()) == b[key], (name, key)
            assert num(row.locator('td[data-k="pct_touched"]').inner_text()) == round(b["pct_touched"], 2)
        # the bar chart drew one bar per benchmark with the items found
        bars = page.locator("#chart-benchmarks rect.bar-found")
        assert bars.count() == len(summary["benchmarks"])
        for i in range(bars.count()):
            name = bars.nth(i).get_attribute("data-benchmark")
            assert int(bars.nth(i).get_attribute("data-value")) == summary["benchmarks"][name]["items_found"]
            assert float(bars.nth(i).get_attribute("width")) > 0
        assert page.get_attribute("#chart-benchmarks", "data-drawn") == "true"
        # the histogram's bars add up to the summary's counts
        assert page.get_attribute("#chart-lcs", "data-drawn") == "true"
        values = [int(v) for v in page.eval_on_selector_all(
            "#chart-lcs rect.hist-bar", "els => els.map(e => e.getAttribute('data-value'))")]
        assert sum(values) == sum(summary["lcs_histogram"]["counts"]) == 4
        heights = page.eval_on_selector_all("#chart-lcs rect.hist-bar", "els => els.map(e => e.getBBox().height)")
        assert sum(1 for h in heights if h > 0) == 3  # two tiers in the 0.9 bin, one exact in 0.6
        assert page.locator("#chart-lcs line.thr").count() == 1
        # top domains and the unchecked items
        assert page.locator("#domains-table tbody tr").count() == len(summary["by_domain"])
        assert "12, 345, 4011" in page.inner_text("#unchecked")
        # pairs: all shown, highlighted, searchable
        assert page.get_attribute("#pair-count", "data-shown") == "4"
        assert page.locator("#pairs mark").count() >= 4
        assert page.locator("#pairs mark.fuzzy").count() >= 2
        page.fill("#pair-search", "merry-go-round")
        assert page.get_attribute("#pair-count", "data-shown") == "1"
        page.fill("#pair-search", "")
        page.select_option("#pair-tier", "exact")
        assert page.get_attribute("#pair-count", "data-shown") == "3"
        page.check("#pair-removed")
        assert page.get_attribute("#pair-count", "data-shown") == "2"
        page.uncheck("#pair-removed")
        page.select_option("#pair-tier", "")
        # markup in a document is shown as text, never run
        assert page.evaluate("window.__injected") is None
        assert PAYLOAD in page.inner_text("#pairs")
        page.screenshot(path=str(artifacts_dir(repo_root) / "decontam_report.png"), full_page=True)
    assert problems == []
    assert [u for u in requests if not u.startswith("file://")] == []
