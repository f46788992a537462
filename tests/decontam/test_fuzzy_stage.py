"""`mathcorpus decontam run --fuzzy`: the near-duplicate tier inside the stage, then `report` on its output."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner

from corpus.cli import main
from decontam.benchmarks import load_bundled
from tests.conftest import write_jsonl

HORSE_PARA = ("A horse 48 feet from the center of a merry-go-round makes 20 revolutions. To travel the same "
              "distance, how many revolutions would a horse 12 feet from the center have to make?")
# other numbers and a light rewording, and no 13-gram in common with GSM8K test item 0
# (the longest shared run is 10 tokens), so only the fuzzy tier can find it
DUCKS_PARA = ("Janet’s ducks lay 18 eggs per day. She eats 3 for breakfast each morning and bakes muffins for her "
              "friends every day with 5. She sells the remainder at the farmers' market daily for $4 per fresh duck "
              "egg. How many dollars does she make every day at the farmers' market?")


def question(bench: str, item_id: str) -> str:
    return next(it.question for it in load_bundled(bench).items if it.item_id == item_id)


@pytest.fixture
def sft(tmp_path: Path) -> Path:
    """Post-training records: question/answer fields, one paraphrase each of a MATH and a GSM8K item."""
    rows = [
        {"id": "para-horse", "question": "Solve step by step.\n\n" + HORSE_PARA, "answer": "The answer is 80."},
        {"id": "para-ducks", "question": DUCKS_PARA, "answer": "She makes $33."},
        {"id": "verbatim", "question": question("math", "0"), "answer": "2"},
        {"id": "clean", "question": "Natalia sold clips to 48 of her friends in April, and then she sold half "
                                    "as many clips in May. How many clips did Natalia sell altogether?",
         "answer": "72"},
    ]
    for r in rows:
        r["text"] = r["question"] + "\n" + r["answer"]
        r["source"] = "sft"
    return write_jsonl(tmp_path / "sft.jsonl", rows)


def run(args: list[str]) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def test_fuzzy_tier_in_the_stage(sft: Path, tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    code, out, err = run(["decontam", "run", str(sft), "-o", str(tmp_path / "out"), "--benchmarks", "pretrain",
                          "--text-fields", "question,answer", "--report", str(rep), "--fuzzy"])
    assert code == 0, err
    m = pl.read_parquet(rep / "matches.parquet").filter(pl.col("contaminated"))
    fuzzy = m.filter(pl.col("tier") == "fuzzy").sort("doc_id")
    assert fuzzy.select(["doc_id", "benchmark", "item_id", "doc_field"]).rows() == [
        ("para-ducks", "gsm8k", "0", "question"), ("para-horse", "math", "468", "question")]
    assert all(r > 0.9 for r in fuzzy["lcs_ratio"].to_list())
    # the verbatim item is the exact tier's, and is not reported again as fuzzy
    exact = m.filter(pl.col("tier") == "exact")
    assert set(exact["doc_id"].to_list()) == {"verbatim"}
    assert m.filter((pl.col("doc_id") == "verbatim") & (pl.col("tier") == "fuzzy")).height == 0
    # the fuzzy span points at the paraphrase inside the question field
    horse = fuzzy.row(1, named=True)
    q = "Solve step by step.\n\n" + HORSE_PARA
    span = q[horse["doc_start"]:horse["doc_end"]]
    assert HORSE_PARA.rstrip("?") in span and len(span) <= len(HORSE_PARA) + 25
    summary = json.loads((rep / "summary.json").read_text())
    assert summary["docs_removed"] == 3 and summary["docs_kept"] == 1
    assert summary["config"]["fuzzy"] is True and summary["config"]["fuzzy_lcs_threshold"] == 0.9
    assert summary["fuzzy"]["items_indexed"] > 5000
    reasons = pl.read_parquet(rep / "removed").select(["id", "removal_reason"]).sort("id").rows()
    assert reasons == [("para-ducks", "decontam-fuzzy:gsm8k"), ("para-horse", "decontam-fuzzy:math"),
                       ("verbatim", "decontam:math")]
    # the report reads this folder: fuzzy pairs side by side, tier column filled
    code, out, _ = run(["decontam", "report", str(rep), "--show", "5", "--tier", "fuzzy"])
    assert code == 0
    assert "fuzzy tier: 2 of 2 pairs confirmed" in out
    assert "#1  ratio" in out and "(threshold 0.9)  tier fuzzy" in out
    assert "math item 468 (question)" in out and "document para-horse question" in out
    skipped = summary["fuzzy"]["skipped_short_items"]
    code, out, _ = run(["decontam", "report", str(rep)])
    assert (f"Fuzzy tier: {sum(skipped.values()):,} item(s) not indexed (too short or formula-only; the exact "
            f"tier still checks them): gsm8k {skipped['gsm8k']:,}, math {skipped['math']:,}") in out


def test_fuzzy_action_report_keeps_documents(sft: Path, tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    code, _, err = run(["decontam", "run", str(sft), "-o", str(tmp_path / "out"), "--benchmarks", "pretrain",
                        "--text-fields", "question,answer", "--report", str(rep), "--fuzzy",
                        "--fuzzy-action", "report"])
    assert code == 0, err
    summary = json.loads((rep / "summary.json").read_text())
    assert summary["docs_removed"] == 1
    m = pl.read_parquet(rep / "matches.parquet")
    fz = m.filter(pl.col("tier") == "fuzzy")
    assert fz.height == 2 and fz["contaminated"].all() and not fz["removed"].any()
    assert summary["benchmarks"]["gsm8k"]["docs_removed"] == 0
    # a diff against the dropping run names the two paraphrases as the only changes in removal
    rep2 = tmp_path / "rep2"
    run(["decontam", "run", str(sft), "-o", str(tmp_path / "out2"), "--benchmarks", "pretrain",
         "--text-fields", "question,answer", "--report", str(rep2), "--fuzzy"])
    code, out, _ = run(["decontam", "diff", str(rep), str(rep2), "--json"])
    d = json.loads(out)
    assert d["config_changes"]["fuzzy_action"] == ["report", "drop"]
    assert set(d["config_changes"]) == {"fuzzy_action", "report", "index"}  # the last two are paths
    assert d["docs_removed"] == [1, 3]
    assert d["docs"]["newly_contaminated"] == [] and d["docs"]["newly_clean"] == []


def test_fuzzy_threshold_is_validated(sft: Path, tmp_path: Path) -> None:
    code, _, err = run(["decontam", "run", str(sft), "-o", str(tmp_path / "out"), "--fuzzy",
                        "--fuzzy-lcs-threshold", "1.5"])
    assert code == 2
    assert err == "Error: decontam: fuzzy_lcs_threshold must be in [0, 1), got 1.5\n"
