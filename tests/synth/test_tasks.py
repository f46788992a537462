"""Templates (bundled, versioned, user overrides), output parsing, verdicts and the TIR loop."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from corpus.errors import ConfigError
from corpus.teacher import Completion, GenRequest, OpenAIEngine, SamplingConfig
from synth.answers import CheckOptions
from synth.sandbox import Sandbox
from synth.tasks import (TIR_STOP, SolveOptions, judge_qa, judge_rewrite, judge_solve, list_templates, load_template,
                         parse_qa_pairs, parse_template, python_blocks, run_tir, tool_call_pending)
from tests.teacher_server import FakeOpenAI


def C(text: str, finish: str = "stop", stop_reason: str | None = None) -> Completion:
    return Completion(text=text, finish_reason=finish, stop_reason=stop_reason, tokens=len(text.split()))


# ----------------------------------------------------------------------------- templates
def test_bundled_templates_load_and_render() -> None:
    assert {"rewrite@v1", "qa@v1", "solve@v1", "solve-tir@v1"} <= set(list_templates())
    t = load_template(None, "solve")
    assert t.ref == "solve@v1" and not t.tir and len(t.sha) == 16
    msgs = t.render(problem="What is $1+1$?")
    assert msgs == ({"role": "system", "content": "Please reason step by step, and put your final answer within "
                                                  "\\boxed{}."}, {"role": "user", "content": "What is $1+1$?"})
    tir = load_template(None, "solve", tir=True)
    assert tir.ref == "solve-tir@v1" and tir.tir and tir.stop == (TIR_STOP,)
    qa = load_template("qa@v1", "qa").render(text="DOC", lang="en", num_pairs=2)
    assert "write 2 new mathematics problems" in qa[1]["content"] and '"""\nDOC\n"""' in qa[1]["content"]
    rw = load_template("rewrite", "rewrite").render(text="DOC", lang="zh")
    assert "({{" not in rw[1]["content"] and "(zh)" in rw[1]["content"]


def test_user_templates_override_and_newest_version_wins(tmp_path: Path) -> None:
    base = (Path(__file__).resolve().parents[2] / "synth" / "templates" / "solve.v1.yaml").read_text()
    (tmp_path / "solve.v2.yaml").write_text(base.replace("version: v1", "version: v2")
                                            .replace("Please reason", "Think carefully and reason"))
    (tmp_path / "solve.v10.yaml").write_text(base.replace("version: v1", "version: v10"))
    assert load_template(None, "solve", templates_dir=str(tmp_path)).ref == "solve@v10"
    v2 = load_template("solve@v2", "solve", templates_dir=str(tmp_path))
    assert v2.render(problem="p")[0]["content"].startswith("Think carefully")
    bundled = load_template("solve@v1", "solve", templates_dir=str(tmp_path))
    assert bundled.source.endswith("synth/templates/solve.v1.yaml")
    by_path = load_template(str(tmp_path / "solve.v2.yaml"), "solve")
    assert by_path.ref == "solve@v2" and by_path.sha != load_template("solve@v1", "solve").sha


def test_template_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="x.yaml: unknown template key 'sytem'; did you mean 'system'?"):
        parse_template("id: a\nversion: v1\ntask: solve\nuser: u\nsytem: s\n", "x.yaml")
    with pytest.raises(ConfigError, match=r"x.yaml: unknown placeholder '\{\{ text \}\}' in user; task solve offers "
                                          r"problem"):
        parse_template("id: a\nversion: v1\ntask: solve\nuser: '{{ text }}'\n", "x.yaml")
    with pytest.raises(ConfigError, match="x.yaml: template key 'user' is missing or empty"):
        parse_template("id: a\nversion: v1\ntask: solve\n", "x.yaml")
    with pytest.raises(ConfigError, match="x.yaml: 'tir: true' only applies to task solve"):
        parse_template("id: a\nversion: v1\ntask: qa\nuser: '{{ text }}'\ntir: true\n", "x.yaml")
    with pytest.raises(ConfigError, match=r"template 'sovle' not found; available: .*solve@v1"):
        load_template("sovle", "solve")
    with pytest.raises(ConfigError, match=r"template qa@v1 is for task qa, not solve; pick a solve template"):
        load_template("qa@v1", "solve")
    with pytest.raises(ConfigError, match=r"--tir needs a template with 'tir: true' \(e.g. solve-tir@v1\)"):
        load_template("solve@v1", "solve", tir=True)
    with pytest.raises(ConfigError, match="synth: template file missing.yaml not found"):
        load_template("missing.yaml", "solve")


# ----------------------------------------------------------------------------- rewrite / qa
def test_judge_rewrite() -> None:
    out = judge_rewrite([C("  A clean section about primes, with proofs.  "), C("x" * 40, finish="length"),
                         C("short")], min_chars=20)
    assert [(s.verdict, s.accepted) for s in out] == [("ok", True), ("truncated", False), ("empty", False)]
    assert out[0].text == "A clean section about primes, with proofs." and out[1].meta["finish_reason"] == "length"
    assert judge_rewrite([C("x" * 40, finish="length")], keep_truncated=True)[0].accepted


QA_OUTPUT = """### Problem 1
A rectangle is 3 by 4. What is its diagonal?
### Solution 1
By Pythagoras, $\\sqrt{9+16}=5$, so the answer is $\\boxed{5}$.
### Problem 2
What is the area?
### Solution 2
It is 3 times 4, which is twelve.
### Problem 3
What is the perimeter?
### Solution 3
2(3+4) = \\boxed{1"""


def test_parse_qa_pairs_formats() -> None:
    assert parse_qa_pairs(QA_OUTPUT)[0] == ("A rectangle is 3 by 4. What is its diagonal?",
                                            "By Pythagoras, $\\sqrt{9+16}=5$, so the answer is $\\boxed{5}$.")
    assert len(parse_qa_pairs(QA_OUTPUT)) == 3
    bold = "**Problem:** What is 1+1?\n**Solution:** It is $\\boxed{2}$."
    assert parse_qa_pairs(bold) == [("What is 1+1?", "It is $\\boxed{2}$.")]
    assert parse_qa_pairs("问题：1+1等于几？\n解答：等于 \\boxed{2}。") == [("1+1等于几？", "等于 \\boxed{2}。")]
    assert parse_qa_pairs("no structure here") == []


def test_judge_qa_verdicts() -> None:
    out = judge_qa([C(QA_OUTPUT, finish="length"), C("rambling with no pairs")], max_pairs=3)
    assert [(s.sample, s.sub, s.verdict) for s in out] == [(0, 0, "ok"), (0, 1, "no_answer"), (0, 2, "truncated"),
                                                           (1, 0, "unparsed")]
    assert out[0].text.startswith("Problem:\nA rectangle is 3 by 4.") and out[0].meta["answer"] == "5"
    assert len(judge_qa([C(QA_OUTPUT)], max_pairs=1)) == 1


# ----------------------------------------------------------------------------- solve
def test_judge_solve_against_reference() -> None:
    comps = [C("... so \\boxed{\\frac{1}{2}}"), C("... \\boxed{0.5}"), C("... \\boxed{3}"), C("no idea"),
             C("... \\boxed{0.5}"), C("long \\boxed{0.5}", finish="length")]
    out = judge_solve("p", comps, "1/2", SolveOptions())
    assert [s.verdict for s in out] == ["correct", "correct", "incorrect", "no_answer", "duplicate", "truncated"]
    assert out[0].meta["answer"] == "\\frac{1}{2}" and out[0].meta["reference"] == "1/2"
    assert out[0].meta["select"] == "reference"
    assert out[0].text == "Problem:\np\n\nSolution:\n... so \\boxed{\\frac{1}{2}}"


def test_judge_solve_majority_without_reference() -> None:
    comps = [C("a \\boxed{4}"), C("b \\boxed{4.0}"), C("c \\boxed{5}"), C("d")]
    out = judge_solve("p", comps, None, SolveOptions())
    assert [s.verdict for s in out] == ["majority", "majority", "minority", "no_answer"]
    assert out[0].meta["majority_answer"] == "4" and out[0].meta["votes"] == 2
    tie = judge_solve("p", [C("\\boxed{4}"), C("\\boxed{5}")], None, SolveOptions())
    assert [s.verdict for s in tie] == ["no_majority", "no_majority"]
    lonely = judge_solve("p", [C("\\boxed{4}")], None, SolveOptions(min_votes=2))
    assert lonely[0].verdict == "no_majority"


class LengthScorer:
    """A reward model stand-in: longer solutions score higher (deterministic, inspectable)."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, list[str]]] = []

    def score(self, messages: Any, responses: list[str]) -> list[float]:
        self.calls.append((len(messages), list(responses)))
        return [float(len(r)) for r in responses]


def test_judge_solve_rm_selection_and_keep_top() -> None:
    comps = [C("x \\boxed{4}"), C("xxxx \\boxed{4}"), C("xx \\boxed{5}"), C("xxx \\boxed{4}")]
    rm = LengthScorer()
    best = judge_solve("p", comps, None, SolveOptions(select="rm"), rm, [{"role": "user", "content": "p"}])
    assert [s.verdict for s in best] == ["rm_rejected", "rm_best", "rm_rejected", "rm_rejected"]
    assert best[1].meta["rm_score"] == float(len("xxxx \\boxed{4}")) and rm.calls[0][0] == 4
    top2 = judge_solve("p", comps, "4", SolveOptions(keep_top=2), rm)
    assert [s.verdict for s in top2] == ["below_top_k", "correct", "incorrect", "correct"]
    with pytest.raises(ConfigError, match="synth: select=rm needs a reward model"):
        judge_solve("p", comps, None, SolveOptions(select="rm"))


def test_judge_solve_tolerance_option() -> None:
    out = judge_solve("p", [C("\\boxed{3.1416}")], "3.14159", SolveOptions(check=CheckOptions(rel_tol=1e-3)))
    assert out[0].verdict == "correct"


# ----------------------------------------------------------------------------- TIR
def test_python_blocks_and_pending_detection() -> None:
    text = "Let us compute.\n```python\nprint(6*7)\n```\n"
    assert python_blocks(text) == ["print(6*7)\n"]
    assert tool_call_pending(C(text, stop_reason=TIR_STOP))
    assert tool_call_pending(C(text))  # server did not say which stop string fired
    assert not tool_call_pending(C(text + "So \\boxed{42}."))
    assert not tool_call_pending(C(text, finish="length"))


def test_tir_loop_runs_code_in_the_sandbox_and_continues(fake_openai: FakeOpenAI) -> None:
    def reply(body: dict[str, Any], i: int) -> str:
        msgs = body["messages"]
        if msgs[-1]["role"] == "user":
            return ("We factor.\n```python\nimport sympy\nx = sympy.Symbol('x')\n"
                    "r = sympy.solve(x**2-5*x+6, x)\nprint(r)\n```\n")
        prefix = msgs[-1]["content"]
        found = re.findall(r"```output\n(.*?)\n```", prefix, re.S)
        if len(found) == 1:
            return "Now the sum.\n```python\nprint(sum(r))\n```\n"
        return f"The roots sum to \\boxed{{{found[-1].strip()}}}."

    fake_openai.reply = reply
    eng = OpenAIEngine("teacher", base_url=fake_openai.base_url, max_retries=0)
    tmpl = load_template(None, "solve", tir=True)
    req = GenRequest("p1", tmpl.render(problem="Sum of roots of x^2-5x+6?"),
                     SamplingConfig(n=2, seed=3, stop=tmpl.stop))
    results = eng.generate([req])
    run_tir(eng, [req], results, Sandbox(timeout_s=20), max_calls=4, workers=2, base_seed=0)
    for c in results[0].completions:
        assert c.tool_calls == 2
        assert "```output\n[2, 3]\n```\n" in c.text and "```output\n5\n```\n" in c.text
        assert c.text.endswith("The roots sum to \\boxed{5}.")
    conts = [b for b in fake_openai.requests if b.get("continue_final_message")]
    assert len(conts) == 4 and all(b["n"] == 1 for b in conts)
    assert len({b["seed"] for b in conts}) == 4  # each continuation has its own derived seed
    assert [s.verdict for s in judge_solve("p", results[0].completions, "5", SolveOptions(dedupe=False))] == \
        ["correct", "correct"]


def test_tir_stops_after_max_calls(fake_openai: FakeOpenAI) -> None:
    fake_openai.reply = lambda body, i: "```python\nprint(1)\n```\n"
    eng = OpenAIEngine("teacher", base_url=fake_openai.base_url, max_retries=0)
    req = GenRequest("p", ({"role": "user", "content": "q"},), SamplingConfig(n=1))
    results = eng.generate([req])
    run_tir(eng, [req], results, Sandbox(timeout_s=20), max_calls=2)
    c = results[0].completions[0]
    assert c.tool_calls == 2 and c.text.count("```output\n1\n```") == 2 and len(fake_openai.requests) == 3
