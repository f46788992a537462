"""`mathcorpus decontam run|index|benchmarks` end to end: outputs, report contract, gates, errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from corpus.cli import main
from corpus.shards import read_table
from tests.conftest import write_jsonl
from tests.decontam.conftest import bench_record, corpus_docs

MATCH_COLUMNS = {
    "doc_id": pa.string(), "benchmark": pa.string(), "item_id": pa.string(), "field": pa.string(),
    "grams_matched": pa.int32(), "lcs_ratio": pa.float64(), "doc_start": pa.int64(), "doc_end": pa.int64(),
    "tier": pa.string(), "matched_grams_sample": pa.string(), "source": pa.string(), "domain": pa.string(),
    "removed": pa.bool_(),
}


def invoke(*args: str) -> Any:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="module")
def corpus(shared_data, tmp_path_factory) -> tuple[Path, list[dict[str, Any]]]:
    """Real web, math and Chinese documents, three of them with planted benchmark items."""
    web = corpus_docs(shared_data, "en_web_pages.jsonl.gz", 20, min_chars=2000)
    zh = corpus_docs(shared_data, "zh_non_math_negative.jsonl.gz", 10, min_chars=300)
    docs = [{"id": d["id"], "text": d["text"], "source": d["source"], "url": f"https://www.site{i % 3}.org/p/{i}"}
            for i, d in enumerate(web + zh)]
    docs[2]["text"] += "\n" + bench_record("gsm8k", 11)["question"]
    m = bench_record("math", 2000)
    docs[5]["text"] = m["problem"] + "\n" + m["solution"] + "\n" + docs[5]["text"]
    docs[22]["text"] = docs[22]["text"][:100] + bench_record("cmath", 10)["question"] + docs[22]["text"][100:]
    docs.append({"id": "empty", "text": "", "source": "web", "url": None})
    path = tmp_path_factory.mktemp("corpus") / "docs.jsonl"
    write_jsonl(path, docs)
    return path, docs


def test_run_writes_clean_shards_removed_docs_matches_and_summary(corpus, tmp_path: Path) -> None:
    path, docs = corpus
    out, rep = tmp_path / "clean", tmp_path / "rep"
    res = invoke("decontam", "run", str(path), "-o", str(out), "--benchmarks", "posttrain", "--report", str(rep))
    assert res.exit_code == 0, res.output
    planted = {docs[2]["id"], docs[5]["id"], docs[22]["id"]}
    assert "3 document(s) removed (benchmarks hit: cmath, gsm8k, math)" in res.output
    kept = read_table(str(out))
    removed = pq.read_table(rep / "removed")
    assert kept.num_rows + removed.num_rows == len(docs)
    assert set(removed.column("id").to_pylist()) == planted
    assert not planted & set(kept.column("id").to_pylist())
    reasons = dict(zip(removed.column("id").to_pylist(), removed.column("removal_reason").to_pylist()))
    assert reasons == {docs[2]["id"]: "decontam:gsm8k", docs[5]["id"]: "decontam:math",
                       docs[22]["id"]: "decontam:cmath"}
    verdict = json.loads(dict(zip(removed.column("id").to_pylist(),
                                  removed.column("decontam_verdict").to_pylist()))[docs[5]["id"]])
    assert verdict["item_id"] == "2000" and verdict["field"] == "both" and verdict["lcs_ratio"] == 1.0

    matches = pq.read_table(rep / "matches.parquet")
    for name, typ in MATCH_COLUMNS.items():
        assert matches.schema.field(name).type == typ, name
    rows = [r for r in matches.to_pylist() if r["contaminated"]]
    assert {(r["doc_id"], r["benchmark"], r["item_id"]) for r in rows} == {
        (docs[2]["id"], "gsm8k", "11"), (docs[5]["id"], "math", "2000"), (docs[22]["id"], "cmath", "10")}
    for r in rows:
        assert r["tier"] == "exact" and r["removed"] and 0 <= r["doc_start"] < r["doc_end"]
        assert json.loads(r["matched_grams_sample"])
    cm = next(r for r in rows if r["benchmark"] == "cmath")
    text22 = docs[22]["text"]
    assert text22[cm["doc_start"]: cm["doc_end"]] in bench_record("cmath", 10)["question"]

    s = json.loads((rep / "summary.json").read_text())
    assert s["profile"] == "posttrain"
    assert (s["docs_in"], s["docs_kept"], s["docs_removed"]) == (len(docs), len(docs) - 3, 3)
    g = s["benchmarks"]["gsm8k"]
    assert g["items"] == 1319 and g["items_found"] == 1 and g["docs_removed"] == 1
    assert g["pct_touched"] == round(100 / 1319, 3)
    assert s["benchmarks"]["college_math"]["unchecked_short_items"] > 50
    assert len(s["benchmarks"]["college_math"]["unchecked_item_ids"]) >= 50
    assert sum(s["by_source"].values()) == 3 and sum(s["by_domain"].values()) == 3
    assert set(s["by_domain"]) <= {"site0.org", "site1.org", "site2.org"}
    assert len(s["lcs_histogram"]["bins"]) == 11 and sum(s["lcs_histogram"]["counts"]) == matches.num_rows
    assert s["excluded"]["figure_code"]["items_with_figure_code"]["math"] > 700
    assert s["config"]["lcs_threshold"] == 0.6 and s["config"]["policy"] == "ngram+lcs"
    assert (rep / "index" / "meta.json").is_file()


def test_fail_on_hit_exits_3_and_clean_input_passes(corpus, tmp_path: Path) -> None:
    path, docs = corpus
    res = CliRunner().invoke(main, ["decontam", "run", str(path), "-o", str(tmp_path / "o"), "--benchmarks",
                                    "pretrain", "--fail-on-hit"])
    assert res.exit_code == 3
    assert "2 contaminated document(s) found" in res.output and "--fail-on-hit" in res.output
    clean = tmp_path / "clean.jsonl"
    write_jsonl(clean, [d for d in docs if d["id"] not in (docs[2]["id"], docs[5]["id"])])
    res = CliRunner().invoke(main, ["decontam", "run", str(clean), "-o", str(tmp_path / "o2"), "--benchmarks",
                                    "pretrain", "--fail-on-hit", "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["removed"] == 0
    assert (tmp_path / "o2" / "_report" / "summary.json").is_file()


def test_post_training_records_each_field_is_checked(tmp_path: Path) -> None:
    gq = bench_record("gsm8k", 21)["question"]
    sol = bench_record("math", 1500)["solution"]
    recs = [
        {"id": "r0", "text": "", "question": "Write a haiku about spring rain.", "answer": "Soft rain on the roof"},
        {"id": "r1", "text": "", "question": gq, "answer": "Let me think step by step."},
        {"id": "r2", "text": "", "question": "Explain this solution to me please.", "answer": sol},
        {"id": "r3", "text": "", "question": None, "answer": "No question here at all, just prose."},
    ]
    path = write_jsonl(tmp_path / "sft.jsonl", recs)
    rep = tmp_path / "rep"
    res = invoke("decontam", "run", str(path), "-o", str(tmp_path / "o"), "--benchmarks", "posttrain",
                 "--text-fields", "question,answer", "--report", str(rep))
    assert res.exit_code == 0, res.output
    removed = pq.read_table(rep / "removed").to_pylist()
    assert {r["id"] for r in removed} == {"r1", "r2"}
    m = {(r["doc_id"], r["doc_field"]) for r in pq.read_table(rep / "matches.parquet").to_pylist()
         if r["contaminated"]}
    assert m == {("r1", "question"), ("r2", "answer")}


def test_chat_messages_are_checked_message_by_message(tmp_path: Path) -> None:
    q = bench_record("olympiadbench", 3)["question"]
    rows = [
        {"id": "c0", "text": "", "messages": [{"role": "user", "content": "Hi there, how are you today?"},
                                              {"role": "assistant", "content": "Fine, thanks."}]},
        {"id": "c1", "text": "", "messages": [{"role": "system", "content": "You are a helpful tutor."},
                                              {"role": "user", "content": q},
                                              {"role": "assistant", "content": "Let us begin."}]},
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "chat.parquet")
    rep = tmp_path / "rep"
    res = invoke("decontam", "run", str(tmp_path / "chat.parquet"), "-o", str(tmp_path / "o"), "--benchmarks",
                 "posttrain", "--text-fields", "messages", "--report", str(rep))
    assert res.exit_code == 0, res.output
    assert pq.read_table(rep / "removed").column("id").to_pylist() == ["c1"]
    hits = [r for r in pq.read_table(rep / "matches.parquet").to_pylist() if r["contaminated"]]
    assert [(r["doc_field"], r["benchmark"], r["item_id"]) for r in hits] == [("messages[1]", "olympiadbench", "3")]


def test_missing_text_field_is_a_clear_error(corpus, tmp_path: Path) -> None:
    path, _ = corpus
    res = CliRunner().invoke(main, ["decontam", "run", str(path), "-o", str(tmp_path / "o"), "--text-fields",
                                    "question"])
    assert res.exit_code == 1
    assert res.output == (f"Error: {path}: missing required column(s) 'question'; columns found: id, text, source, "
                          "url. Rename your columns to 'id' and 'question' (e.g. with polars' rename) or add them. "
                          "Nothing was written.\n")


def test_index_command_and_prebuilt_index(corpus, tmp_path: Path) -> None:
    path, docs = corpus
    idx = tmp_path / "idx"
    res = invoke("decontam", "index", "--benchmarks", "pretrain", "-o", str(idx), "--json")
    assert res.exit_code == 0, res.output
    info = json.loads(res.output)
    assert info["benchmarks"] == ["gsm8k", "math"] and info["items"] == 6319 and info["grams"] > 500_000
    res = invoke("decontam", "run", str(path), "-o", str(tmp_path / "o"), "--index", str(idx))
    assert res.exit_code == 0, res.output
    assert "2 document(s) removed" in res.output
    res = CliRunner().invoke(main, ["decontam", "run", str(path), "-o", str(tmp_path / "o2"), "--index", str(idx),
                                    "--ngram", "10"])
    assert res.exit_code == 2
    assert res.output.strip() == (f"Error: {idx}: the index was built with other options (ngram: index 13 vs run "
                                  "10); rebuild it with the same options or drop them from this run")
    res = CliRunner().invoke(main, ["decontam", "run", str(path), "-o", str(tmp_path / "o3"), "--index", str(idx),
                                    "--benchmarks", "posttrain"])
    assert res.exit_code == 2 and "the index covers gsm8k, math but this run asks for gsm8k, math, minerva_math" \
        in res.output


def test_benchmarks_command_lists_names_counts_fields_languages() -> None:
    res = invoke("decontam", "benchmarks", "--json")
    assert res.exit_code == 0
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert len(rows) == 17
    assert rows["gsm8k"]["items"] == 1319 and rows["gsm8k"]["profiles"] == ["pretrain", "posttrain"]
    assert rows["cmath"]["lang"] == "zh" and rows["sat_math"]["profiles"] == []
    assert rows["math"]["question_fields"] == ["problem"] and rows["math"]["solution_fields"] == ["solution"]
    human = invoke("decontam", "benchmarks").output
    assert "mmlu_stem" in human and "3018" in human and "posttrain = gsm8k, math" in human


def test_report_and_diff_are_wired() -> None:
    res = invoke("decontam", "--help")
    assert "report" in res.output and "diff" in res.output
    assert invoke("decontam", "report", "--help").exit_code == 0


def test_config_file_sections_and_typos(corpus, tmp_path: Path) -> None:
    path, _ = corpus
    cfg = tmp_path / "decontam.yaml"
    cfg.write_text("decontam:\n  benchmarks: pretrain\n  lcs_threshold: 0.7\n")
    res = invoke("decontam", "run", str(path), "-o", str(tmp_path / "o"), "--config", str(cfg),
                 "--lcs-threshold", "0.65")
    assert res.exit_code == 0, res.output
    s = json.loads((tmp_path / "o" / "_report" / "summary.json").read_text())
    assert s["config"]["lcs_threshold"] == 0.65 and s["profile"] == "pretrain"  # the flag wins over the file
    bad = tmp_path / "bad.yaml"
    bad.write_text("decontam:\n  lcs_treshold: 0.7\n")
    res = CliRunner().invoke(main, ["decontam", "run", str(path), "-o", str(tmp_path / "o2"), "--config", str(bad)])
    assert res.exit_code == 2
    assert res.output.startswith(f"Error: {bad}: unknown key 'lcs_treshold' for decontam; did you mean "
                                 "'lcs_threshold'?")
