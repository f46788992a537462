"""The judge tier (`decontam run --judge`) against a scripted OpenAI-compatible judge.

The scripted judge answers by a known rule read from a marker in the record ([JUDGE:yes],
[JUDGE:no], [JUDGE:reverse-yes] = yes only when the record is shown first, [JUDGE:garbage]
= an answer without a verdict line, [JUDGE:fail] = HTTP 400), so candidate selection,
both-ways logic, error accounting, the cache, the budget stop and the report columns can
be checked exactly. Pure parts (parsing, passages, top-k) are tested without a server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.cli import main
from corpus.errors import ConfigError
from decontam.benchmarks import load_bundled
from decontam.judge import (CLEAN, CONTAMINATED, JUDGE_ERROR, CallBudget, combine, list_templates, load_template,
                            parse_template, passage, topk_cosine)
from tests.conftest import write_jsonl
from tests.teacher_server import FakeOpenAI, ServedModel

TAIL = " Explain how a student might set up this kind of exercise in class and what mistakes are common."
HORSE_FAR = ("A horse 40 feet from the center of a carousel makes 30 revolutions. To go the same distance, how many "
             "revolutions would a horse 10 feet from the center need to make?")


def q(item: str) -> str:
    return next(it.question for it in load_bundled("math").items if it.item_id == item)


def records() -> list[dict[str, Any]]:
    rows = [
        # exact-tier pairs with an LCS ratio between the floor (0.3) and the threshold (0.6)
        {"id": "half-yes", "question": q("1")[:100] + TAIL + " [JUDGE:yes]"},
        {"id": "half-no", "question": q("5")[:80] + TAIL + " [JUDGE:no]"},
        {"id": "rev", "question": q("10")[:60] + TAIL + " [JUDGE:reverse-yes]"},
        {"id": "fail", "question": q("1")[:120] + TAIL + " [JUDGE:fail]"},
        # a shared 13-gram with a long item, ratio below the floor: no call
        {"id": "low", "question": " ".join(q("182").split()[:16]) + " and then a long story about school buses, "
                                  "lunch breaks, football teams, uniforms and the summer holidays follows. "
                                  "[JUDGE:yes]"},
        # confirmed by the exact tier: removed without a call (its fuzzy neighbours are not judged)
        {"id": "verbatim", "question": q("0")},
        # other numbers and rewording: an unconfirmed fuzzy-tier candidate (number-masked ratio ~0.81)
        {"id": "horse", "question": HORSE_FAR + " [JUDGE:garbage]"},
        {"id": "clean", "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as "
                                    "many clips in May. How many clips did Natalia sell altogether?"},
    ]
    for r in rows:
        r["answer"] = "42"
        r["text"] = r["question"] + "\n" + r["answer"]
        r["source"] = "sft"
    return rows


def _problems(body: dict[str, Any]) -> tuple[str, str]:
    user = body["messages"][-1]["content"]
    m = re.search(r"Problem A:\n(.*)\n\nProblem B:\n(.*)\n\nIs Problem B", user, re.S)
    assert m, user
    return m.group(1), m.group(2)


def judge_rule(body: dict[str, Any], i: int) -> str:
    """The scripted judge: the verdict named by the record's marker (see module docstring)."""
    a, b = _problems(body)
    record_first = "[JUDGE:" in a
    mark = re.search(r"\[JUDGE:([\w-]+)\]", a + b)
    kind = mark.group(1) if mark else "no"
    if kind == "garbage":
        return "Both are about horses, I think."
    yes = kind == "yes" or (kind == "reverse-yes" and record_first)
    return f"Problem B restates Problem A.\nVerdict: {'yes' if yes else 'no'}"


@pytest.fixture
def judge(fake_openai: FakeOpenAI) -> FakeOpenAI:
    fake_openai.reply = judge_rule
    fake_openai.status = lambda body: 400 if "[JUDGE:fail]" in body["messages"][-1]["content"] else None
    return fake_openai


@pytest.fixture
def sft(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "sft.jsonl", records())


def run(args: list[str]) -> tuple[int, str, str]:
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def pretrain_index(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The pretrain index, built once for this module's runs."""
    from decontam.benchmarks import load_benchmarks
    from decontam.index import build_index

    path = tmp_path_factory.mktemp("idx") / "pretrain"
    build_index(load_benchmarks("pretrain"), profile="pretrain").save(str(path))
    return str(path)


@pytest.fixture(autouse=True)
def _index(pretrain_index: str) -> None:
    global INDEX
    INDEX = pretrain_index


INDEX = ""


def base(sft: Path, out: Path, rep: Path, fake: FakeOpenAI, *extra: str) -> list[str]:
    return ["decontam", "run", str(sft), "-o", str(out), "--index", INDEX, "--text-fields", "question",
            "--report", str(rep), "--fuzzy", "--judge", "--judge-engine", "openai", "--judge-model", "judge-m",
            "--judge-base-url", fake.base_url, "--judge-max-retries", "0", *extra]


def judged(rep: Path) -> dict[str, dict[str, Any]]:
    """Judge-tier rows of matches.parquet by ``doc_id/item_id``."""
    m = pl.read_parquet(rep / "matches.parquet").filter(pl.col("tier") == "judge")
    return {f"{r['doc_id']}/{r['item_id']}": r for r in m.iter_rows(named=True)}


# ----------------------------------------------------------------------------- end to end
def test_judge_tier_selects_candidates_and_reports_exactly(judge: FakeOpenAI, sft: Path, tmp_path: Path) -> None:
    rep = tmp_path / "rep"
    code, out, err = run(base(sft, tmp_path / "out", rep, judge))
    assert code == 0, err
    j = judged(rep)
    # candidates: the four exact pairs in the band (ratio 0.3-0.6) and the fuzzy-tier candidates
    # (number-masked ratio 0.6-0.9: the paraphrase of item 468, and item 631 that shares its
    # template with half-no); not 'low' (ratio below the floor), not 'verbatim' (removed by the
    # exact tier, its fuzzy neighbours are skipped), not 'clean' (no cheap-tier hit)
    assert {k: v["judge_source"] for k, v in j.items()} == {
        "half-yes/1": "exact", "half-no/5": "exact", "rev/10": "exact", "fail/1": "exact", "horse/468": "fuzzy",
        "half-no/631": "fuzzy"}
    assert {k: v["judge_verdict"] for k, v in j.items()} == {
        "half-yes/1": CONTAMINATED, "half-no/5": CLEAN, "rev/10": CLEAN, "fail/1": JUDGE_ERROR,
        "horse/468": JUDGE_ERROR, "half-no/631": CLEAN}
    assert j["half-yes/1"]["judge_answer"] == "Problem B restates Problem A.\nVerdict: yes"
    assert j["horse/468"]["judge_answer"] == "Both are about horses, I think."
    assert j["fail/1"]["judge_answer"] is None
    assert all(v["judge_template"] == "reword@v1" and v["benchmark"] == "math" for v in j.values())
    assert [k for k, v in j.items() if v["contaminated"]] == ["half-yes/1"]
    assert [k for k, v in j.items() if v["removed"]] == ["half-yes/1"]
    assert 0.3 <= j["half-no/5"]["lcs_ratio"] < 0.6 and 0.6 <= j["horse/468"]["lcs_ratio"] <= 0.9
    # one request per judged pair, item first; the prompt carries the item and the record
    assert len(judge.requests) == 6
    # record half-no has two judged pairs (items 5 and 631) whose requests run concurrently, so
    # their order varies: look for the item-5 pair among them
    pairs = [_problems(r) for r in judge.requests if "[JUDGE:no]" in r["messages"][-1]["content"]]
    assert (q("5"), records()[1]["question"]) in pairs
    assert all(r["model"] == "judge-m" and r["temperature"] == 0.0 and r["n"] == 1 for r in judge.requests)
    # removals: exact tier + judge tier, with their reasons
    removed = pl.read_parquet(rep / "removed").select(["id", "removal_reason"]).sort("id").rows()
    assert removed == [("half-yes", "decontam-judge:math"), ("verbatim", "decontam:math")]
    s = json.loads((rep / "summary.json").read_text())
    js = s["judge"]
    assert js["verdicts"] == {CONTAMINATED: 1, CLEAN: 3, JUDGE_ERROR: 2} and js["judge_errors"] == 2
    assert js["calls"] == {"sent": 6, "failed": 1, "cached": 0, "shared": 0, "needed": 0}
    # seen: 5 unconfirmed exact pairs + 6 unconfirmed fuzzy LSH pairs; decided without a call:
    # 1 + 2 below the floors, 2 of the verbatim record (already removed)
    assert js["funnel"] == {"seen_exact": 5, "below_floor_exact": 1, "seen_fuzzy": 6, "below_floor_fuzzy": 2,
                            "seen_embed": 0, "candidates": 8, "skipped_removed": 2, "duplicates": 0,
                            "pairs_judged": 6, "prefiltered_share": round(1 - 6 / 11, 6)}
    assert js["template"] == "reword@v1" and js["model"] == "judge-m" and js["action"] == "drop"
    assert s["docs_removed"] == 2 and s["docs_in"] == 8
    assert ("judge tier (reword@v1, judge-m): 6 pair(s) judged of 8 candidate(s): 1 contaminated, 3 clean, "
            "2 judge_error; 6 call(s) sent, 0 answer(s) from cache") in out
    # the terminal report shows the tier and its errors
    code, text, _ = run(["decontam", "report", str(rep)])
    assert code == 0
    assert "judge tier: 1 of 6 pairs confirmed" in text
    assert ("Judge tier (reword@v1, judge-m): 6 pairs judged: 1 contaminated, 3 clean, 2 judge_error (never counted "
            "clean); 6 calls sent, 0 from cache, 1 failed; pre-filters decided 45.5% of 11 unconfirmed pairs without "
            "a call") in " ".join(text.split())
    code, text, _ = run(["decontam", "report", str(rep), "--tier", "judge", "--show", "6", "--verdict", "all"])
    assert code == 0 and "tier judge" in text and "verdict judge_error" in text
    assert "judge answer: Both are about horses, I think." in text
    assert "judge answer: (no answer: the call failed)" in text
    check_html_in_chromium(rep, tmp_path / "report.html", s)


def check_html_in_chromium(rep: Path, page_path: Path, summary: dict[str, Any]) -> None:
    """The HTML report shows the judge tier: its line, the tier filter, verdicts and answers; no network."""
    from tests.browser import offline_page

    code, _, err = run(["decontam", "report", str(rep), "--html", str(page_path)])
    assert code == 0, err
    with offline_page(console=False) as (page, problems, requests):
        page.goto(page_path.as_uri())
        page.wait_for_selector("body[data-ready=true]", timeout=15_000)
        rules = page.inner_text("#rules")
        assert "judge tier: 1 of 6 pairs confirmed" in rules
        assert ("judge tier (reword@v1, judge-m): 6 pairs judged: 1 contaminated, 3 clean, 2 judge_error (never "
                "counted clean); 6 calls sent, 0 from cache") in rules
        page.select_option("#pair-tier", "judge")
        assert page.get_attribute("#pair-count", "data-shown") == "6"
        assert page.locator("#pairs .tag.verdict.judge_error").count() == 2
        assert page.locator("#pairs .tag.verdict.contaminated").count() == 1
        answers = page.eval_on_selector_all("#pairs .answer", "els => els.map(e => e.textContent)")
        assert "judge answer: Both are about horses, I think." in answers
        assert "judge answer: (no answer: the call failed)" in answers
        assert int(page.inner_text("#kpi-docs-removed")) == summary["docs_removed"]
    assert problems == []
    assert all(u.startswith("file://") for u in requests), requests


def test_both_ways_and_cache(judge: FakeOpenAI, sft: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    rep = tmp_path / "rep"
    code, _, err = run(base(sft, tmp_path / "out", rep, judge, "--judge-both-ways", "--judge-cache", str(cache)))
    assert code == 0, err
    j = judged(rep)
    # reverse-yes is only yes with the record first: contaminated when both ways are asked
    assert j["rev/10"]["judge_verdict"] == CONTAMINATED and j["half-no/5"]["judge_verdict"] == CLEAN
    assert json.loads(j["rev/10"]["judge_answer"]) == ["Problem B restates Problem A.\nVerdict: no",
                                                       "Problem B restates Problem A.\nVerdict: yes"]
    assert len(judge.requests) == 12  # two per pair
    firsts = [_problems(r)[0] for r in judge.requests]
    assert sum("[JUDGE:" in a for a in firsts) == 6  # six asked with the record first
    # a second run over the same data with the same cache sends only what is not cached
    n = len(judge.requests)
    code, out, err = run(base(sft, tmp_path / "out2", tmp_path / "rep2", judge, "--judge-both-ways",
                              "--judge-cache", str(cache)))
    assert code == 0, err
    # only the failed pair (HTTP 400, both ways) is asked again: failures are never cached
    assert len(judge.requests) - n == 2
    assert all("[JUDGE:fail]" in r["messages"][-1]["content"] for r in judge.requests[-2:])
    assert "2 call(s) sent, 10 answer(s) from cache" in out
    assert {k: v["judge_verdict"] for k, v in judged(tmp_path / "rep2").items()} == \
        {k: v["judge_verdict"] for k, v in j.items()}
    # the dry run counts what a run would send and sends nothing
    n = len(judge.requests)
    code, out, err = run(base(sft, tmp_path / "out3", tmp_path / "rep3", judge, "--judge-both-ways",
                              "--judge-cache", str(cache), "--dry-run"))
    assert code == 0, err
    assert out.startswith("decontam --dry-run: 2 judge call(s) would be sent for 6 pair(s) (2 way(s) each; "
                          "10 answer(s) already cached) over 8 document(s); nothing was sent or written")
    assert len(judge.requests) == n and not (tmp_path / "out3").exists() and not (tmp_path / "rep3").exists()


def test_budget_stops_before_exceeding_and_resumes(judge: FakeOpenAI, sft: Path, tmp_path: Path) -> None:
    out, rep = tmp_path / "out", tmp_path / "rep"
    code, text, err = run(base(sft, out, rep, judge, "--dry-run", "--judge-max-calls", "3"))
    assert code == 0 and "6 judge call(s) would be sent" in text
    assert "that is more than --judge-max-calls 3: the run would stop after 3 call(s)" in text
    code, _, err = run(base(sft, out, rep, judge, "--judge-max-calls", "3"))
    assert code == 1
    assert ("decontam: --judge-max-calls 3 reached: this run sent 3 judge call(s) and 3 more are needed for this "
            "batch alone; nothing past the budget was sent.") in " ".join(err.split())
    assert len(judge.requests) == 3
    # the same command again resumes: cached answers are reused, only the two others are sent
    code, text, err = run(base(sft, out, rep, judge, "--judge-max-calls", "3"))
    assert code == 0, err
    assert len(judge.requests) == 6
    assert "3 call(s) sent, 3 answer(s) from cache" in text
    assert judged(rep)["half-yes/1"]["judge_verdict"] == CONTAMINATED


def test_action_report_keeps_records_and_diff_shows_the_tier(judge: FakeOpenAI, sft: Path, tmp_path: Path) -> None:
    cache = str(tmp_path / "cache")
    code, _, err = run(base(sft, tmp_path / "o1", tmp_path / "r1", judge, "--judge-cache", cache,
                            "--judge-action", "report"))
    assert code == 0, err
    s = json.loads((tmp_path / "r1" / "summary.json").read_text())
    assert s["docs_removed"] == 1 and judged(tmp_path / "r1")["half-yes/1"]["contaminated"]
    assert not judged(tmp_path / "r1")["half-yes/1"]["removed"]
    code, _, err = run(base(sft, tmp_path / "o2", tmp_path / "r2", judge, "--judge-cache", cache))
    assert code == 0, err
    code, out, _ = run(["decontam", "diff", str(tmp_path / "r1"), str(tmp_path / "r2"), "--tier", "judge", "--json"])
    assert code == 0
    d = json.loads(out)
    assert d["tier"] == "judge" and d["config_changes"]["judge_action"] == ["report", "drop"]
    assert d["docs_removed"] == [1, 2]
    code, out, _ = run(["decontam", "diff", str(tmp_path / "r1"), str(tmp_path / "r2"), "--tier", "judge"])
    assert code == 0 and "(tier: judge)" in out and "judge_action" in out
    # against a run without the judge, the judged record is newly contaminated, and says why
    code, _, err = run(["decontam", "run", str(sft), "-o", str(tmp_path / "o3"), "--index", INDEX, "--text-fields",
                        "question", "--report", str(tmp_path / "r3"), "--fuzzy"])
    assert code == 0, err
    code, out, _ = run(["decontam", "diff", str(tmp_path / "r3"), str(tmp_path / "r2"), "--json"])
    d = json.loads(out)
    new = {r["doc_id"]: r["why"] for r in d["docs"]["newly_contaminated"]}
    assert set(new) == {"half-yes"} and new["half-yes"]["tier"] == "judge"


def test_judge_in_a_pipeline_file(judge: FakeOpenAI, sft: Path, tmp_path: Path) -> None:
    import yaml

    opts = {"index": INDEX, "text_fields": ["question"], "fuzzy": True, "judge": True, "judge_engine": "openai",
            "judge_base_url": judge.base_url, "judge_model": "judge-m", "judge_max_retries": 0,
            "judge_template": "numbers@v1"}
    pipe = tmp_path / "p.yaml"
    pipe.write_text(yaml.safe_dump({"workdir": str(tmp_path / "w"), "inputs": [str(sft)],
                                    "stages": [{"name": "decontam", "stage": "decontam", "options": opts}]}))
    code, _, err = run(["pipeline", "run", str(pipe)])
    assert code == 0, err
    [summary] = list((tmp_path / "w").rglob("_report/summary.json"))
    js = json.loads(summary.read_text())["judge"]
    assert js["template"] == "numbers@v1" and js["calls"]["sent"] == 6 and len(judge.requests) == 6
    assert "same solution steps solve both" in judge.requests[0]["messages"][0]["content"]
    opts["judge_modle"] = "x"
    pipe.write_text(yaml.safe_dump({"workdir": str(tmp_path / "w2"), "inputs": [str(sft)],
                                    "stages": [{"name": "decontam", "stage": "decontam", "options": opts}]}))
    code, _, err = run(["pipeline", "run", str(pipe)])
    assert code == 2 and "'judge_modle'" in err and "did you mean 'judge_model'?" in err


def test_a_judge_that_answers_nothing_stops_the_run(sft: Path, tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port with nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    args = ["decontam", "run", str(sft), "-o", str(tmp_path / "o"), "--index", INDEX, "--text-fields", "question",
            "--report", str(tmp_path / "r"), "--fuzzy", "--judge", "--judge-model", "m", "--judge-base-url",
            f"http://127.0.0.1:{port}/v1", "--judge-max-retries", "0"]
    code, _, err = run(args)
    assert code == 1
    assert "decontam: all 6 judge calls of a batch failed; first error: http://127.0.0.1:" in err
    assert "connection failed" in err and "fix the judge engine and rerun" in " ".join(err.split())


def test_judge_config_errors(sft: Path, tmp_path: Path) -> None:
    args = ["decontam", "run", str(sft), "-o", str(tmp_path / "o"), "--judge"]
    code, _, err = run(args)
    assert code == 2
    assert err == "Error: decontam: --judge needs --judge-model (the served model name or a model folder)\n"
    code, _, err = run(args + ["--judge-model", "m"])
    assert code == 2 and err == ("Error: decontam: --judge-engine openai needs --judge-base-url "
                                 "(e.g. http://localhost:8000/v1)\n")
    code, _, err = run(args + ["--judge-model", "m", "--judge-base-url", "http://x/v1", "--judge-template", "rewrd@v1"])
    assert code == 2 and err.startswith("Error: decontam: unknown judge template 'rewrd@v1'; bundled: numbers@v1, "
                                        "reword@v1")
    code, _, err = run(["decontam", "run", str(sft), "-o", str(tmp_path / "o"), "--dry-run"])
    assert code == 2 and "--dry-run counts the calls of the judge tier; add --judge" in err


def test_judge_through_a_real_server(transformers_server: ServedModel, sft: Path, tmp_path: Path) -> None:
    """`transformers serve` with a tiny random model: every answer is read, none has a verdict line,
    so every pair is judge_error and none is counted clean."""
    srv = transformers_server
    before = srv.chat_requests()
    rep = tmp_path / "rep"
    args = ["decontam", "run", str(sft), "-o", str(tmp_path / "out"), "--index", INDEX, "--text-fields", "question",
            "--report", str(rep), "--fuzzy", "--judge", "--judge-engine", "openai", "--judge-model", srv.model,
            "--judge-base-url", srv.base_url, "--judge-max-tokens", "8", "--judge-concurrency", "2"]
    code, out, err = run(args)
    assert code == 0, err
    j = judged(rep)
    assert len(j) == 6 and all(v["judge_verdict"] == JUDGE_ERROR for v in j.values())
    assert all(isinstance(v["judge_answer"], str) and not v["contaminated"] for v in j.values())
    js = json.loads((rep / "summary.json").read_text())["judge"]
    assert js["verdicts"] == {CONTAMINATED: 0, CLEAN: 0, JUDGE_ERROR: 6} and js["calls"]["sent"] == 6
    assert js["calls"]["failed"] == 0
    assert srv.wait_logged(before + 6) - before == 6


def test_judge_with_the_transformers_engine(tiny_model_dir: Path, sft: Path, tmp_path: Path) -> None:
    """The in-process engine path: the tiny random model's answers are read and none is counted clean."""
    rep = tmp_path / "rep"
    code, _, err = run(["decontam", "run", str(sft), "-o", str(tmp_path / "out"), "--index", INDEX, "--text-fields",
                        "question", "--report", str(rep), "--judge", "--judge-engine", "transformers",
                        "--judge-model", str(tiny_model_dir), "--judge-max-tokens", "4"])
    assert code == 0, err
    js = json.loads((rep / "summary.json").read_text())["judge"]
    assert js["engine"] == "transformers" and js["calls"]["sent"] == 4  # the four exact-tier pairs in the band
    assert js["verdicts"][CLEAN] == 0 and js["verdicts"][JUDGE_ERROR] + js["verdicts"][CONTAMINATED] == 4


# ----------------------------------------------------------------------------- pure parts
def test_bundled_templates_and_strict_parsing() -> None:
    assert list_templates() == ["numbers@v1", "reword@v1"]
    t = load_template("reword@v1")
    assert load_template("reword").sha == t.sha and load_template("numbers@v1").ref == "numbers@v1"
    msgs = t.render("ITEM", "RECORD")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert "Problem A:\nITEM\n\nProblem B:\nRECORD" in msgs[1]["content"]
    assert t.parse("Same numbers, same question.\nVerdict: yes") == CONTAMINATED
    assert t.parse("**Verdict:** No") == CLEAN
    assert t.parse("Verdict: yes.\n") == CONTAMINATED
    for bad in ("", None, "yes", "Verdict: maybe", "Verdict: yes\nActually no.", "Verdict: yes\nVerdict: no",
                "The verdict: yes is tempting but"):
        assert t.parse(bad) == JUDGE_ERROR, bad


def test_template_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^x.yaml: 'verdict' needs pattern, contaminated and clean \(quote yes/no"):
        parse_template("id: a\nversion: v1\nuser: '{{ first }} {{ second }}'\nverdict:\n  pattern: '(yes)'\n"
                       "  yes: [yes]\n  no: [no]\n", "x.yaml")
    with pytest.raises(ConfigError, match=r"^x.yaml: placeholder '\{\{ problem \}\}' is unknown"):
        parse_template("id: a\nversion: v1\nuser: '{{ problem }}'\nverdict:\n  pattern: '(y)'\n  contaminated: ['y']\n"
                       "  clean: ['n']\n", "x.yaml")
    with pytest.raises(ConfigError, match=r"^x.yaml: unknown template key 'usr'; did you mean 'user'\?"):
        parse_template("id: a\nversion: v1\nusr: x\n", "x.yaml")


def test_combine_never_counts_an_error_clean() -> None:
    assert combine([CLEAN]) == CLEAN and combine([CLEAN, CLEAN]) == CLEAN
    assert combine([CLEAN, CONTAMINATED]) == CONTAMINATED and combine([JUDGE_ERROR, CONTAMINATED]) == CONTAMINATED
    assert combine([CLEAN, JUDGE_ERROR]) == JUDGE_ERROR and combine([]) == JUDGE_ERROR


@settings(max_examples=200, deadline=None)
@given(st.text(min_size=0, max_size=400), st.integers(0, 400), st.integers(0, 400), st.integers(20, 200))
def test_passage_is_bounded_and_holds_the_span(text: str, a: int, b: int, cap: int) -> None:
    lo, hi = sorted((a, b))
    p = passage(text, lo, hi, cap)
    assert len(p) <= cap and p in text
    lo, hi = min(lo, len(text)), min(hi, len(text))
    if hi - lo <= cap - 2:
        assert text[lo:hi] in p


def test_topk_cosine_in_chunks_equals_the_full_matrix() -> None:
    rng = np.random.default_rng(0)
    q = rng.normal(size=(7, 8)).astype(np.float32)
    items = rng.normal(size=(50, 8)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    items /= np.linalg.norm(items, axis=1, keepdims=True)
    full = q @ items.T
    got = topk_cosine(q, items, k=3, floor=0.2, chunk=6)
    for i, row in enumerate(got):
        want = [(int(j), float(full[i, j])) for j in np.argsort(-full[i])[:3] if full[i, j] >= 0.2]
        assert [j for j, _ in row] == [j for j, _ in want]
        assert np.allclose([s for _, s in row], [s for _, s in want], atol=1e-6)


def test_call_budget_grants_up_to_the_cap(tmp_path: Path) -> None:
    b = CallBudget(str(tmp_path / "b.json"), 5)
    b.reset()
    assert [b.reserve(2), b.reserve(2), b.reserve(2), b.reserve(1)] == [2, 2, 1, 0] and b.sent() == 5
    b.reset()
    assert b.sent() == 0
    free = CallBudget(str(tmp_path / "c.json"), None)
    free.reset()
    assert free.reserve(10**6) == 10**6


def test_judge_state_stays_off_object_storage() -> None:
    from corpus.errors import ConfigError
    from decontam.stage import judge_state_paths

    assert judge_state_paths("/r", None) == ("/r/judge_cache", "/r/judge_budget.json")
    assert judge_state_paths("s3://b/r", "/scratch/jc") == ("/scratch/jc", "/scratch/jc/judge_budget.json")
    with pytest.raises(ConfigError) as exc:
        judge_state_paths("s3://b/r", None)
    assert str(exc.value) == ("s3://b/r: the judge tier counts its calls in a locked file, which object storage "
                              "cannot hold; pass --judge-cache DIR on a local or shared filesystem (its budget "
                              "file goes there)")
