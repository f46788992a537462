"""Answer extraction, equivalence, voting and the reward-model hook, on real benchmark solutions."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.errors import ConfigError, FatalError
from synth.answers import (CheckOptions, HTTPRewardScorer, brace_shorthand, extract_answer, find_boxed, is_equiv,
                           last_number, load_scorer, majority_vote, normalize_answer, parse_base_number,
                           to_halfwidth)
from tests.teacher_server import FakeOpenAI, Plan

# ----------------------------------------------------------------------------- extraction


def test_find_boxed_nested_and_variants() -> None:
    t = r"so $\boxed{\frac{1}{2}}$ and later \boxed{\{1, \sqrt{\frac{3}{4}}\}} then \fbox{7} and \boxed 12."
    assert find_boxed(t) == [r"\frac{1}{2}", r"\{1, \sqrt{\frac{3}{4}}\}", "7", "12"]
    assert find_boxed(r"truncated \boxed{\frac{1}{2") == []


@pytest.mark.parametrize("text,expected", [
    (r"Thus the answer is $\boxed{\dfrac{3}{4}}$.", r"\dfrac{3}{4}"),
    ("She pays 5 * 3 = 15 dollars.\n#### 15", "15"),
    ("Adding them up, the answer is 1,250.", "1,250"),
    ("Final Answer: The final answer is $x^2+1$. I hope it is correct.", "x^2+1"),
    ("所以一共有８个苹果。答案：８", "8"),
    ("小明有３个，又买了５个，答案是 ８。", "8"),
    ("no marker at all, 3 apples then 4 pears, total 7 fruits", "7"),
    ("no number here", None),
    ("", None),
])
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


def test_extract_without_last_number_fallback() -> None:
    assert extract_answer("we get 3 and then 4", last_number_fallback=False) is None
    assert extract_answer(r"we get 3 and then \boxed{4}", last_number_fallback=False) == "4"


def test_halfwidth_and_last_number() -> None:
    assert to_halfwidth("ＡＢ１２３，４５６．７８") == "AB123,456.78"
    assert last_number(r"costs \$1,200 and -3.5 then \frac{7}{8}") == r"\frac{7}{8}"
    assert last_number("－１２") == "-12"


@given(st.from_regex(r"[a-z0-9+\-*/^ ]{1,12}", fullmatch=True), st.integers(0, 3))
@settings(max_examples=150, deadline=None)
def test_boxed_roundtrip_with_nesting(inner: str, depth: int) -> None:
    body = inner.strip() or "0"
    for _ in range(depth):
        body = r"\frac{" + body + "}{2}"
    assert extract_answer(f"Work... so the result is \\boxed{{{body}}}. Done 99.") == body


# ----------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("a,b", [
    (r"\frac{1}{2}", "0.5"), (r"\dfrac12", r"\frac{1}{2}"), ("1/2", r"\tfrac{1}{2}"),
    (r"\{1,2\}", "2, 1"), (r"x \in [2, 5)", "[2,5)"), (r"30^\circ", "30"), ("30°", r"30^{\circ}"),
    (r"\text{(C)}", "C"), ("007", "7"), ("１８", "18"), ("1+2x", "2x+1"), ("2", r"\sqrt{4}"),
    (r"[2,\infty)\cup(-\infty,-2]", r"(-\infty, -2] \cup [2, \infty)"), ("x = 5", "5"), ("1,000", "1000"),
    (r"\$18.90", "18.9"), (r"50\%", "50"), (r"\dfrac{\sqrt{3}}{2}", r"\frac{\sqrt3}2"),
    (r"\text{Monday}", "monday"), (r"5\text{ inches}", "5"), (r"12\text{ and }13", "13, 12"),
    (r"\left( 3, -\frac{1}{2} \right)", r"(3,-\tfrac12)"), ("0.30000000000000004", "0.3"), ("1e3", "1000"),
    ("101_2", "5"), (r"\pi/2", r"\frac{\pi}{2}"),
])
def test_equivalent(a: str, b: str) -> None:
    assert is_equiv(a, b) and is_equiv(b, a)


@pytest.mark.parametrize("a,b", [
    ("(1,2)", "(2,1)"), ("[2,5)", "(2,5)"), (r"\text{odd}", r"\text{even}"), ("1,2", "1,2,3"),
    (r"\frac{1}{3}", "0.333333"), ("x^2", "x^3"), ("2x+1", "2x+2"), ("4210_{7}", "4210_{8}"),
    (r"\frac{1}{2004!}", r"\frac{2}{2004!}"), (r"\frac \pi4 + 2 - \sqrt2", r"\frac \pi5 + 2 - \sqrt2"),
    ("16386.16", "16386.17"), ("1000000", "1000001"), ("C", "D"), (r"\{1,2\}", r"\{1,3\}"),
])
def test_not_equivalent(a: str, b: str) -> None:
    assert not is_equiv(a, b) and not is_equiv(b, a)


def test_none_and_empty_never_match() -> None:
    assert not is_equiv(None, "1") and not is_equiv("1", None) and not is_equiv("", "") and not is_equiv("$$", "0")


def test_tolerance_option_applies_to_decimals_only() -> None:
    loose = CheckOptions(rel_tol=1e-3)
    assert is_equiv("3.1416", "3.14159", loose) and not is_equiv("3.1416", "3.14159")
    assert not is_equiv("1001", "1000", loose)  # integers stay exact whatever the tolerance


def test_normalize_and_helpers() -> None:
    assert normalize_answer(r"$\left(\dfrac{1}{2}, 3\right)$") == r"(\frac{1}{2},3)"
    assert brace_shorthand(r"\frac \pi4 + \sqrt2") == r"\frac{\pi}{4} + \sqrt{2}"
    assert parse_base_number("4210_{7}") == Fraction(4 * 343 + 2 * 49 + 7)
    assert parse_base_number("19_8") is None and parse_base_number("42") is False


@given(st.integers(-10**12, 10**12), st.integers(-10**12, 10**12))
@settings(max_examples=200, deadline=None)
def test_integers_equal_iff_same(a: int, b: int) -> None:
    assert is_equiv(str(a), str(b)) == (a == b)


@given(st.integers(-999, 999), st.integers(1, 999))
@settings(max_examples=100, deadline=None)
def test_fraction_forms_agree(p: int, q: int) -> None:
    sign = "-" if p < 0 else ""
    assert is_equiv(f"{sign}\\frac{{{abs(p)}}}{{{q}}}", f"{p}/{q}")
    assert is_equiv(f"{p}/{q}", str(Fraction(p, q)))


# ----------------------------------------------------------------------------- real benchmark data
def _last_boxed(s: str) -> str:
    # written independently of synth.answers: the gold answer is the last \boxed{...}
    i = s.rindex("\\boxed{") + len("\\boxed")
    depth = 0
    for k in range(i, len(s)):
        depth += {"{": 1, "}": -1}.get(s[k], 0)
        if depth == 0:
            return s[i + 1:k]
    raise ValueError("unbalanced")


def _bump_first_digit(ans: str) -> str | None:
    m = re.search(r"\d", ans)
    if not m:
        return None
    k = m.start()
    return ans[:k] + str((int(ans[k]) + 1) % 10) + ans[k + 1:]


def _plain(ans: str) -> str:
    return re.sub(r"\\text|\\mbox|[\s(){}\\]", "", ans).lower()


def _load(shared_data: Path, name: str) -> list[dict]:
    with open(shared_data / "benchmarks" / name, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def test_gsm8k_gold_solutions_verify_and_perturbed_do_not(shared_data: Path) -> None:
    rows = _load(shared_data, "gsm8k.jsonl")
    assert len(rows) == 1319
    agree = false_accepts = perturbed = 0
    for r in rows:
        gold = r["answer"].split("####")[-1].strip()
        pred = extract_answer(r["answer"])
        agree += is_equiv(pred, gold)
        value = int(gold.replace(",", ""))
        for wrong in (value + 1, value - 1, value * 10):
            perturbed += 1
            false_accepts += is_equiv(pred, str(wrong))
    assert agree / len(rows) >= 0.999, f"{agree}/{len(rows)}"
    assert perturbed == 3 * len(rows) and false_accepts == 0


@pytest.mark.parametrize("style", ["phrase", "chinese_fullwidth", "boxed", "minerva"])
def test_gsm8k_gold_in_other_answer_styles(shared_data: Path, style: str) -> None:
    fw = {ord(c): ord(c) + 0xFEE0 for c in "0123456789,.-"}
    endings = {
        "phrase": lambda g: f"\nThe answer is {g}.",
        "chinese_fullwidth": lambda g: f"\n所以答案是 {g.translate(fw)}。",
        "boxed": lambda g: f"\nSo the total is $\\boxed{{{g}}}$ dollars.",
        "minerva": lambda g: f"\nFinal Answer: The final answer is ${g}$. I hope it is correct.",
    }
    rows = _load(shared_data, "gsm8k.jsonl")
    agree = 0
    for r in rows:
        body, gold = r["answer"].split("####")
        agree += is_equiv(extract_answer(body.rstrip() + endings[style](gold.strip())), gold.strip())
    assert agree / len(rows) >= 0.999, f"{style}: {agree}/{len(rows)}"


@pytest.mark.slow
def test_math_gold_solutions_verify_and_perturbed_do_not(shared_data: Path) -> None:
    rows = _load(shared_data, "math.jsonl")
    assert len(rows) == 5000
    golds = [_last_boxed(r["solution"]) for r in rows]
    wordy = sorted({g for g in golds if not re.search(r"\d", g)})
    agree = false_accepts = perturbed = 0
    misses: list[tuple[int, str]] = []
    for i, (r, gold) in enumerate(zip(rows, golds)):
        pred = extract_answer(r["solution"])
        if is_equiv(pred, gold):
            agree += 1
        else:
            misses.append((i, gold))
        wrong = _bump_first_digit(gold)
        if wrong is None:  # a word or symbol answer: another item's, with a different plain form
            start = wordy.index(gold)
            wrong = next(w for w in wordy[start + 1:] + wordy[:start] if _plain(w) != _plain(gold))
        perturbed += 1
        if is_equiv(pred, wrong):
            false_accepts += 1
            misses.append((i, wrong))
    assert agree / len(rows) >= 0.999, f"{agree}/{len(rows)}; first misses {misses[:5]}"
    assert perturbed == len(rows) and false_accepts == 0, misses[:5]


# ----------------------------------------------------------------------------- voting
def test_majority_vote_groups_equivalent_forms() -> None:
    v = majority_vote([r"\frac{1}{2}", "0.5", "3", None, "1/2", "3"])
    assert v.answer == r"\frac{1}{2}" and v.count == 3 and v.unique_winner()
    assert v.labels == [0, 0, 1, None, 0, 1] and v.groups == [[0, 1, 4], [2, 5]]


def test_majority_vote_ties_and_weights() -> None:
    v = majority_vote(["2", "3", "3", "2"])
    assert v.winner == 0 and not v.unique_winner()
    w = majority_vote(["2", "3", "3", "2"], weights=[0.1, 0.5, 0.5, 0.2])
    assert w.answer == "3" and w.unique_winner()
    assert majority_vote([None, None]).answer is None
    with pytest.raises(ValueError, match="majority_vote: 2 answers but 1 weights"):
        majority_vote(["1", "2"], weights=[1.0])


# ----------------------------------------------------------------------------- reward model hook
def test_http_reward_scorer_reads_pooling_scores(fake_openai: FakeOpenAI) -> None:
    fake_openai.score = lambda body: {"data": [{"index": 0, "data": [[0.1], [len(body["messages"][-1]["content"])]]}]}
    s = HTTPRewardScorer(fake_openai.base_url, "rm")
    got = s.score([[{"role": "user", "content": "q"}]] * 2, ["ab", "abcd"])
    assert got == [2.0, 4.0]
    assert fake_openai.paths == ["/pooling", "/pooling"]
    assert {r["model"] for r in fake_openai.requests} == {"rm"}
    # requests run concurrently, so they arrive in any order; scores come back in input order
    assert sorted(r["messages"][-1]["content"] for r in fake_openai.requests) == ["ab", "abcd"]
    assert all(r["messages"][0] == {"role": "user", "content": "q"} for r in fake_openai.requests)


def test_http_reward_scorer_errors(fake_openai: FakeOpenAI) -> None:
    fake_openai.plans = [Plan(status=404, body={"detail": "no"})]
    with pytest.raises(FatalError, match=r"reward model at http://127\.0\.0\.1:\d+/pooling: HTTP 404"):
        HTTPRewardScorer(fake_openai.base_url, "rm").score([[]], ["x"])
    fake_openai.score = lambda body: {"data": [{"data": ["nan-text"]}]}
    with pytest.raises(FatalError, match="reward model returned a non-numeric score: 'nan-text'"):
        HTTPRewardScorer(fake_openai.base_url, "rm").score([[]], ["x"])


def test_load_scorer_specs() -> None:
    assert load_scorer(None) is None
    with pytest.raises(ConfigError, match="synth: rm_url is set but rm_model is not"):
        load_scorer("http://localhost:1/v1")
    with pytest.raises(ConfigError, match="synth: rm_url 'nonsense' is neither an http"):
        load_scorer("nonsense")
    assert isinstance(load_scorer("http://localhost:1/v1", "rm"), HTTPRewardScorer)
