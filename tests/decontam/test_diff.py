"""`mathcorpus decontam diff`: items and documents newly contaminated or newly clean between runs."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from corpus.cli import main
from decontam import report as rp
from tests.decontam.report_fixtures import (  # noqa: F401  (fixtures)
    MATH_FUZZY_ITEM, report_dir, report_dir_b, report_scenario,
)


def test_diff_reports_changes_and_reasons(report_dir: Path, report_dir_b: Path) -> None:
    d = rp.diff_reports(rp.load_report(str(report_dir)), rp.load_report(str(report_dir_b)))
    assert d["config_changes"] == {"fuzzy": [False, True], "lcs_threshold": [0.6, 0.7]}
    assert d["docs_removed"] == d["docs_contaminated"] == [3, 3]
    assert [x["doc_id"] for x in d["docs"]["newly_contaminated"]] == ["web-2"]
    assert d["docs"]["newly_contaminated"][0]["why"]["tier"] == "fuzzy"
    assert d["docs"]["newly_contaminated"][0]["why"]["item_id"] == MATH_FUZZY_ITEM
    (clean,) = d["docs"]["newly_clean"]
    assert clean["doc_id"] == "web-3"
    assert clean["why"]["lcs_ratio"] == 0.65 and clean["why"]["removed"] is True
    # B still matched it, below its threshold: the reason the document is clean now
    assert clean["now"]["lcs_ratio"] == 0.65 and clean["now"]["removed"] is False
    assert d["docs"]["still_contaminated"] == 2
    assert [(x["benchmark"], x["item_id"]) for x in d["items"]["newly_contaminated"]] == [("math", MATH_FUZZY_ITEM)]
    assert [(x["benchmark"], x["item_id"]) for x in d["items"]["newly_clean"]] == [("math", "1")]
    assert d["items"]["still_contaminated"] == 2
    math = next(b for b in d["benchmarks"] if b["name"] == "math")
    assert math["newly_contaminated_items"] == 1 and math["newly_clean_items"] == 1
    assert d["warnings"] == []


def test_diff_is_antisymmetric(report_dir: Path, report_dir_b: Path) -> None:
    a, b = rp.load_report(str(report_dir)), rp.load_report(str(report_dir_b))
    ab, ba = rp.diff_reports(a, b), rp.diff_reports(b, a)
    assert [x["doc_id"] for x in ab["docs"]["newly_contaminated"]] == [x["doc_id"] for x in ba["docs"]["newly_clean"]]
    assert [x["item_id"] for x in ab["items"]["newly_clean"]] == [x["item_id"] for x in ba["items"]["newly_contaminated"]]


def test_diff_of_a_run_with_itself_is_empty(report_dir: Path) -> None:
    a = rp.load_report(str(report_dir))
    d = rp.diff_reports(a, a)
    assert d["config_changes"] == {}
    assert d["docs"]["newly_contaminated"] == d["docs"]["newly_clean"] == []
    assert d["items"]["newly_contaminated"] == d["items"]["newly_clean"] == []
    assert d["docs"]["still_contaminated"] == 3


def test_diff_by_tier(report_dir: Path, report_dir_b: Path) -> None:
    d = rp.diff_reports(rp.load_report(str(report_dir)), rp.load_report(str(report_dir_b)), tier="exact")
    assert d["docs"]["newly_contaminated"] == []
    assert [x["doc_id"] for x in d["docs"]["newly_clean"]] == ["web-3"]


def test_diff_warns_about_different_inputs(report_dir: Path, report_dir_b: Path) -> None:
    s = json.loads((report_dir_b / "summary.json").read_text())
    s["docs_in"] = 7
    (report_dir_b / "summary.json").write_text(json.dumps(s))
    d = rp.diff_reports(rp.load_report(str(report_dir)), rp.load_report(str(report_dir_b)))
    assert d["warnings"] == ["the runs read different numbers of documents (5 vs 7): some differences may "
                             "come from the inputs, not the rules"]


def test_cli_diff_terminal_and_json(report_dir: Path, report_dir_b: Path) -> None:
    res = CliRunner().invoke(main, ["decontam", "diff", str(report_dir), str(report_dir_b)], catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    out = res.stdout
    assert "documents contaminated: 3 → 3  (+1 newly contaminated, −1 newly clean)" in out
    assert "lcs_threshold" in out and "Newly contaminated documents (1)" in out
    assert "matched below the rule, ratio 0.650" in out
    assert f"math item {MATH_FUZZY_ITEM}, ratio 0.930 (fuzzy)" in out
    res = CliRunner().invoke(main, ["decontam", "diff", str(report_dir), str(report_dir_b), "--json"],
                             catch_exceptions=False)
    data = json.loads(res.stdout)
    assert data["docs"]["newly_clean"][0]["doc_id"] == "web-3"


def test_cli_diff_missing_report(report_dir: Path, tmp_path: Path) -> None:
    res = CliRunner().invoke(main, ["decontam", "diff", str(report_dir), str(tmp_path / "nope")])
    assert res.exit_code == 1
    assert res.stderr == (f"Error: {tmp_path / 'nope'}: report folder not found; pass the folder given to "
                          "`mathcorpus decontam run --report`\n")
