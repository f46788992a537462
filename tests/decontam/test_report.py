"""`mathcorpus decontam report`: loading a REPORT_DIR, the summary view, pairs, terminal and JSON."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.cli import main
from corpus.errors import InputError
from decontam import report as rp
from tests.decontam.report_fixtures import (  # noqa: F401  (fixtures)
    GSM8K_ITEM, MATH_FUZZY_ITEM, MATH_ITEM, item, report_dir, report_dir_b, report_scenario,
)


def run(args: list[str]) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


# ----------------------------------------------------------------------------- loading
def test_load_report_reads_summary_and_matches(report_dir: Path) -> None:
    rep = rp.load_report(str(report_dir))
    assert rep.summary["docs_in"] == 5
    assert rep.matches.height == 3
    assert set(rep.matches["tier"].to_list()) == {"exact"}
    assert rep.threshold == 0.6


def test_load_report_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError) as exc:
        rp.load_report(str(tmp_path / "nope"))
    assert str(exc.value) == (f"{tmp_path / 'nope'}: report folder not found; pass the folder given to "
                              "`mathcorpus decontam run --report`")


def test_load_report_without_summary(tmp_path: Path) -> None:
    (tmp_path / "rep").mkdir()
    with pytest.raises(InputError) as exc:
        rp.load_report(str(tmp_path / "rep"))
    assert str(exc.value) == (f"{tmp_path / 'rep'}: not a decontam report folder (summary.json is missing); "
                              "pass the folder given to `mathcorpus decontam run --report`, after the run has "
                              "finished")


def test_load_report_bad_json(report_dir: Path) -> None:
    (report_dir / "summary.json").write_text('{"benchmarks": {', encoding="utf-8")
    with pytest.raises(InputError, match=r"summary.json: invalid JSON on line 1"):
        rp.load_report(str(report_dir))


def test_load_report_matches_missing_columns(report_dir: Path) -> None:
    pl.DataFrame({"doc_id": ["a"], "benchmark": ["gsm8k"]}).write_parquet(report_dir / "matches.parquet")
    with pytest.raises(InputError) as exc:
        rp.load_report(str(report_dir))
    assert str(exc.value) == (
        f"{report_dir / 'matches.parquet'}: missing column(s) item_id, lcs_ratio, tier, removed; columns found: "
        "doc_id, benchmark. This file was not written by `mathcorpus decontam run`, or by an older version; "
        "rerun it")


def test_matches_without_verdict_column_count_removed_pairs_as_confirmed(report_dir_b: Path) -> None:
    df = pl.read_parquet(report_dir_b / "matches.parquet").drop(["contaminated", "doc_field"])
    df.write_parquet(report_dir_b / "matches.parquet")
    rep = rp.load_report(str(report_dir_b))
    assert rep.matches["contaminated"].to_list() == rep.matches["removed"].to_list()
    assert rp.summary_view(rep)["tiers"]["exact"]["confirmed"] == 2


def test_load_report_without_matches_file_is_empty(report_dir: Path) -> None:
    (report_dir / "matches.parquet").unlink()
    view = rp.summary_view(rp.load_report(str(report_dir)))
    assert view["matches"] == 0
    assert view["tiers"]["exact"]["matches"] == 0


# ----------------------------------------------------------------------------- summary view
def test_summary_view_equals_summary_json(report_dir: Path) -> None:
    summary = json.loads((report_dir / "summary.json").read_text())
    view = rp.summary_view(rp.load_report(str(report_dir)))
    assert [b["name"] for b in view["benchmarks"]] == ["gsm8k", "math"]
    for b in view["benchmarks"]:
        s = summary["benchmarks"][b["name"]]
        for key in ("items", "items_found", "pct_touched", "docs_removed", "unchecked_short_items"):
            assert b[key] == s[key], (b["name"], key)
    assert (view["docs_in"], view["docs_kept"], view["docs_removed"]) == (5, 2, 3)
    assert view["pct_removed"] == 60.0
    assert view["top_sources"] == [["web", 2], ["book", 1]]
    assert view["top_domains"] == [["forum.example.net", 1], ["mathhelp.example.org", 1],
                                   ["textbooks.example.com", 1]]
    assert view["unchecked"] == {"math": {"count": 3, "item_ids": ["12", "345", "4011"]}}
    assert view["lcs_histogram"]["counts"] == summary["lcs_histogram"]["counts"]
    assert view["lcs_histogram"]["total"] == 3


def test_top_domains_sorted_by_count_then_name(report_dir: Path) -> None:
    rep = rp.load_report(str(report_dir))
    rep.summary["by_domain"] = {"b.org": 2, "a.org": 2, "c.org": 5, "zero.org": 0}
    view = rp.summary_view(rep, top=2)
    assert view["top_domains"] == [["c.org", 5], ["a.org", 2]]
    assert view["domains_total"] == 3


def test_tier_breakdown_from_matches(report_dir_b: Path) -> None:
    view = rp.summary_view(rp.load_report(str(report_dir_b)))
    # the 0.65 fragment is a candidate pair below run B's 0.7 rule: counted, not confirmed
    assert view["tiers"]["exact"] == {"matches": 3, "confirmed": 2, "docs": 2, "items": 2, "docs_removed": 2}
    assert view["tiers"]["fuzzy"] == {"matches": 1, "confirmed": 1, "docs": 1, "items": 1, "docs_removed": 1}
    math = next(b for b in view["benchmarks"] if b["name"] == "math")
    assert (math["items_found_exact"], math["items_found_fuzzy"]) == (1, 1)
    hist = view["lcs_histogram"]
    # the per-tier split of the histogram adds up to the summary's counts, bin by bin
    assert [sum(col) for col in zip(*hist["by_tier"].values())] == hist["counts"]
    assert hist["by_tier"]["fuzzy"][9] == 1


@pytest.mark.parametrize(("bins", "edges"), [
    ([0.0, 0.5, 1.0], [0.0, 0.5, 1.0]),          # edges
    ([0.0, 0.5], [0.0, 0.5, 1.0]),               # left edges
])
def test_histogram_edges(bins: list[float], edges: list[float]) -> None:
    assert rp.histogram_edges({"bins": bins, "counts": [1, 2]}) == edges


# ----------------------------------------------------------------------------- highlighting
def test_shared_spans_cover_the_planted_question() -> None:
    q = item("gsm8k", GSM8K_ITEM).question
    doc = "Some unrelated intro text about farms.\n\n" + q.upper() + "\n\nAnd an unrelated ending."
    sa, sb = rp.shared_spans(q, doc)
    assert sa == [(0, len(q) - 1)]  # all of the question but its final "?"
    start = doc.index(q.upper())
    assert sb == [(start, start + len(q) - 1)]


def test_shared_spans_mask_numbers_for_fuzzy() -> None:
    a = "A horse 64 feet from the center makes 27 revolutions"
    b = "A horse 48 feet from the center makes 20 revolutions"
    plain, _ = rp.shared_spans(a, b)
    masked, _ = rp.shared_spans(a, b, mask_numbers=True)
    assert plain == [(11, 37)]  # "A horse" is shorter than the 3-token minimum run
    assert masked == [(0, len(a))]


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab c1.\n\\{}$中文", max_size=60), st.text(alphabet="ab c1.\n\\{}$中文", max_size=60))
def test_segments_rebuild_the_text(a: str, b: str) -> None:
    sa, sb = rp.shared_spans(a, b, min_run=1)
    for text, spans in ((a, sa), (b, sb)):
        segs = rp.segments(text, spans)
        assert "".join(s for s, _ in segs) == text
        assert all(0 <= s < e <= len(text) for s, e in spans)
        assert all(e1 <= s2 for (_, e1), (s2, _) in zip(spans, spans[1:]))


# ----------------------------------------------------------------------------- pairs
def test_select_pairs_filters_and_orders(report_dir_b: Path) -> None:
    rep = rp.load_report(str(report_dir_b))
    high = rp.select_pairs(rep, 2)
    assert high["lcs_ratio"].to_list() == [1.0, 0.97]
    low = rp.select_pairs(rep, 1, order="low")
    assert low["item_id"].to_list() == ["1"]
    assert rp.select_pairs(rep, None, tier="fuzzy")["item_id"].to_list() == [MATH_FUZZY_ITEM]
    assert rp.select_pairs(rep, None, benchmarks=["gsm8k"])["doc_id"].to_list() == ["web-0"]
    assert rp.select_pairs(rep, None, min_ratio=0.95).height == 2
    assert rp.select_pairs(rep, None, verdict="below")["doc_id"].to_list() == ["web-3"]
    assert rp.select_pairs(rep, None, verdict="contaminated").height == 3
    sample = rp.select_pairs(rep, 3, order="sample", seed=7)
    assert sample.height == 3
    assert sample.equals(rp.select_pairs(rep, 3, order="sample", seed=7))


def test_select_pairs_unknown_benchmark(report_dir: Path) -> None:
    rep = rp.load_report(str(report_dir))
    with pytest.raises(InputError) as exc:
        rp.select_pairs(rep, 1, benchmarks=["gsm8"])
    assert str(exc.value) == (f"--benchmark gsm8: not in this report; did you mean 'gsm8k'? "
                              f"(benchmarks in {report_dir}: gsm8k, math)")


def test_build_pairs_item_and_document_window(report_dir_b: Path, report_scenario) -> None:  # noqa: F811
    rep = rp.load_report(str(report_dir_b))
    pairs = {p.doc_id: p for p in rp.build_pairs(rep, rp.select_pairs(rep, None))}
    gsm = pairs["web-0"]
    assert gsm.item_text == item("gsm8k", GSM8K_ITEM).question
    assert report_scenario.planted["gsm"] in gsm.doc_window
    # the window is the span plus a little context, never the whole page
    assert len(gsm.doc_window) < len(report_scenario.docs["web-0"].text)
    assert gsm.doc_window == report_scenario.docs["web-0"].text[gsm.window_offset:gsm.window_offset + len(gsm.doc_window)]
    s, e = gsm.doc_spans[0]
    assert gsm.doc_window[s:e] in report_scenario.planted["gsm"]
    assert e - s > 0.9 * len(report_scenario.planted["gsm"])
    both = pairs["web-1"]
    assert both.field == "both"
    assert both.item_text.startswith(item("math", MATH_ITEM).question)
    assert item("math", MATH_ITEM).solution in both.item_text
    fuzzy = pairs["web-2"]
    assert fuzzy.tier == "fuzzy"
    # numbers are masked when highlighting a fuzzy pair: the whole paraphrase start is one run
    assert fuzzy.doc_window[fuzzy.doc_spans[0][0]:fuzzy.doc_spans[0][1]].startswith("A horse 48 feet")
    kept = pairs["web-3"]
    assert kept.removed is False and kept.doc_window is None and kept.doc_spans == []


def test_build_pairs_reads_kept_docs_from_docs_paths(report_dir_b: Path, report_scenario, tmp_path: Path) -> None:  # noqa: F811
    d = report_scenario.docs["web-3"]
    kept = tmp_path / "kept"
    kept.mkdir()
    pl.DataFrame({"id": [d.id], "text": [d.text]}).write_parquet(kept / "decontam-00000-00000.parquet")
    rep = rp.load_report(str(report_dir_b))
    rows = rp.select_pairs(rep, None, verdict="below")
    (pair,) = rp.build_pairs(rep, rows, doc_paths=[str(kept)])
    assert report_scenario.planted["partial"] in pair.doc_window
    # the run's own OUTPUT, recorded in summary.json, is searched without --docs
    rep.summary["output"] = str(kept)
    (pair,) = rp.build_pairs(rep, rows)
    assert report_scenario.planted["partial"] in pair.doc_window


def test_build_pairs_unknown_benchmark_keeps_the_pair(report_dir: Path) -> None:
    rep = rp.load_report(str(report_dir))
    rows = rp.select_pairs(rep, 1).with_columns(pl.lit("private_test").alias("benchmark"))
    (pair,) = rp.build_pairs(rep, rows)
    assert pair.item_text is None and pair.doc_window is not None


# ----------------------------------------------------------------------------- CLI
def test_cli_report_terminal_summary(report_dir: Path) -> None:
    code, out, err = run(["decontam", "report", str(report_dir)])
    assert code == 0, err
    assert "5 documents in, 2 kept, 3 removed (60.0%)" in out
    assert "Per benchmark" in out
    gsm_line = next(line for line in out.splitlines() if line.startswith("│ gsm8k"))
    assert gsm_line.split("│")[1:6] == [" gsm8k     ", " 1,319 ", "           1 ", "      0.08 ", "            1 "]
    assert "Top sources by removed docs" in out and "mathhelp.example.org" in out
    assert "LCS-ratio distribution of matches (removal threshold 0.6)" in out
    assert "12, 345, 4011" in out
    assert "Excluded from matching" in out


def test_cli_report_show_pairs(report_dir: Path) -> None:
    code, out, _ = run(["decontam", "report", str(report_dir), "--show", "1", "--benchmark", "gsm8k"])
    assert code == 0
    assert "#1  ratio 1.000 (threshold 0.6)  tier exact, 41 grams  removed" in out
    assert "gsm8k item 0 (question)" in out and "document web-0 chars" in out
    assert out.count("Janet") == 2  # the item and the document window side by side
    assert "#2" not in out


def test_cli_report_min_ratio_filters_pairs(report_dir: Path) -> None:
    code, out, _ = run(["decontam", "report", str(report_dir), "--show", "5", "--min-ratio", "0.9"])
    assert code == 0
    assert "#2  ratio 0.970" in out and "#3" not in out


def test_cli_report_json(report_dir: Path) -> None:
    code, out, _ = run(["decontam", "report", str(report_dir), "--json", "--show", "2"])
    assert code == 0
    data = json.loads(out)
    summary = json.loads((report_dir / "summary.json").read_text())
    assert data["docs_removed"] == summary["docs_removed"]
    assert {b["name"]: b["items_found"] for b in data["benchmarks"]} == {
        k: v["items_found"] for k, v in summary["benchmarks"].items()}
    assert [p["lcs_ratio"] for p in data["pairs"]] == [1.0, 0.97]
    assert data["pairs"][0]["item_text"] == item("gsm8k", GSM8K_ITEM).question


def test_cli_report_errors(report_dir: Path, tmp_path: Path) -> None:
    code, _, err = run(["decontam", "report", str(tmp_path / "missing")])
    assert code == 1
    assert err == (f"Error: {tmp_path / 'missing'}: report folder not found; pass the folder given to "
                   "`mathcorpus decontam run --report`\n")
    code, _, err = run(["decontam", "report", str(report_dir), "--show", "1", "--benchmark", "matth"])
    assert code == 1
    assert err.startswith("Error: --benchmark matth: not in this report; did you mean 'math'?")


def test_cli_report_of_a_copied_folder(report_dir: Path, tmp_path: Path) -> None:
    # a report folder is self-describing: it can be moved and still read
    dst = tmp_path / "moved"
    shutil.copytree(report_dir, dst)
    code, out, _ = run(["decontam", "report", str(dst), "--show", "1"])
    assert code == 0 and "Janet" in out
