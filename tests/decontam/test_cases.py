"""The verdict table of the decontamination rule, on real items planted in real documents.

Every case plants an item of a bundled benchmark into documents from
../shared/data/corpus_samples and checks the verdict and that the match names the
planted benchmark and item id.
"""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.decontam.conftest import bench_record, corpus_docs


@pytest.fixture(scope="module")
def web(shared_data) -> list[dict[str, Any]]:
    return corpus_docs(shared_data, "en_web_pages.jsonl.gz", 12, min_chars=3000)


@pytest.fixture(scope="module")
def zh(shared_data) -> list[dict[str, Any]]:
    return corpus_docs(shared_data, "zh_non_math_negative.jsonl.gz", 6, min_chars=600)


def _doc(doc_id: str, text: str, source: str = "web") -> dict[str, Any]:
    return {"id": doc_id, "text": text, "source": source}


def _plant(host: str, item: str, at: float = 0.5) -> str:
    cut = int(len(host) * at)
    cut = host.rfind(" ", 0, cut) + 1 if " " in host[:cut] else cut
    return host[:cut] + "\n" + item + "\n" + host[cut:]


def _match(rows: list[dict[str, Any]], doc_id: str, benchmark: str, item_id: str) -> dict[str, Any]:
    found = [r for r in rows if r["doc_id"] == doc_id and r["benchmark"] == benchmark and r["item_id"] == item_id]
    assert found, f"no match of {benchmark}/{item_id} in {doc_id}: {[(r['benchmark'], r['item_id']) for r in rows]}"
    return found[0]


def test_verbatim_question_is_flagged(check, web) -> None:
    q = bench_record("gsm8k", 7)["question"]
    removed, rows, rem = check([_doc("d0", _plant(web[0]["text"], q)), _doc("clean", web[1]["text"])])
    assert removed == {"d0"}
    m = _match(rows, "d0", "gsm8k", "7")
    assert m["field"] == "question" and m["lcs_ratio"] == 1.0 and m["contaminated"] and m["removed"]
    planted = _plant(web[0]["text"], q)
    # the char span runs from the item's first token to its last one
    assert planted[m["doc_start"]: m["doc_end"]] == q.rstrip("?")
    assert rem.column("removal_reason").to_pylist() == ["decontam:gsm8k"]


def test_question_and_solution_together_is_flagged(check, web) -> None:
    rec = bench_record("math", 100)
    removed, rows, _ = check([_doc("d1", _plant(web[2]["text"], rec["problem"] + "\n" + rec["solution"]))])
    assert removed == {"d1"}
    m = _match(rows, "d1", "math", "100")
    assert m["field"] == "both" and m["lcs_ratio"] > 0.95


def _disguise(text: str) -> str:
    """Case, whitespace, punctuation and LaTeX-markup changes that do not change meaning."""
    t = text.upper().replace("\\FRAC", "\\dfrac").replace("\\SQRT", "\\sqrt")
    t = t.replace("(", "\\left(").replace(")", "\\right)")
    t = re.sub(r"\$([^$]*)\$", r"\\( \\displaystyle \1 \\)", t)
    t = t.replace(",", " ,  ").replace(".", " ;").replace("?", " !")
    return "   ".join(t.split(" "))


def test_case_whitespace_punctuation_and_latex_changes_are_flagged(check, web) -> None:
    rec = bench_record("math", 3024)
    changed = _disguise(rec["problem"])
    assert "\\dfrac" in changed and "\\left(" in changed and "\\displaystyle" in changed
    removed, rows, _ = check([_doc("d2", _plant(web[3]["text"], changed))])
    assert removed == {"d2"}
    assert _match(rows, "d2", "math", "3024")["lcs_ratio"] == 1.0


def test_item_split_one_sentence_per_line_is_flagged(check, web) -> None:
    rec = bench_record("gsm8k", 42)
    text = rec["question"] + " " + rec["answer"]
    lines = "\n".join(s.strip() for s in re.split(r"(?<=[.?!])\s+", text))
    assert lines.count("\n") >= 3
    removed, rows, _ = check([_doc("d3", _plant(web[4]["text"], lines))])
    assert removed == {"d3"}
    _match(rows, "d3", "gsm8k", "42")


def _full_width(text: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in text)


@pytest.mark.parametrize("variant", ["plain", "full_width"])
def test_chinese_item_inside_chinese_text_is_flagged(check, zh, variant: str) -> None:
    q = bench_record("cmath", 0)["question"]
    assert re.search(r"\d", q)
    if variant == "full_width":
        q = _full_width(q.replace("，", ",").replace("？", "?"))
        assert "９９" in q
    removed, rows, _ = check([_doc("z0", _plant(zh[0]["text"], q)), _doc("z1", zh[1]["text"])])
    assert removed == {"z0"}
    m = _match(rows, "z0", "cmath", "0")
    assert m["lcs_ratio"] == 1.0


@pytest.mark.parametrize("bench,line,lang", [("amc23", 16, "en"), ("cmath", 144, "zh")])
def test_items_of_8_to_12_tokens_are_flagged(check, web, zh, bench: str, line: int, lang: str,
                                             posttrain_index) -> None:
    from corpus.textnorm import tokenize

    q = bench_record(bench, line)["question"]
    assert 8 <= len(tokenize(q)) <= 12
    host = web[5]["text"] if lang == "en" else zh[2]["text"]
    removed, rows, _ = check([_doc("s0", _plant(host, q))])
    assert removed == {"s0"}
    m = _match(rows, "s0", bench, str(line))
    assert m["lcs_ratio"] == 1.0 and m["field"] in ("question", "both")


def test_contiguous_30_percent_fragment_of_a_long_solution_is_not_flagged(check, web) -> None:
    from corpus.textnorm import tokenize

    sol = bench_record("olympiadbench", 0)["solution"][0]
    words = sol.split(" ")
    assert len(tokenize(sol)) > 150
    start = len(words) // 3
    frag = " ".join(words[start: start + int(len(words) * 0.3)])
    docs = [_doc("f0", _plant(web[6]["text"], frag))]
    removed, rows, _ = check(docs)
    assert removed == set()
    m = _match(rows, "f0", "olympiadbench", "0")
    assert m["grams_matched"] >= 10 and 0.2 < m["lcs_ratio"] < 0.6 and not m["contaminated"]
    # the plain n-gram rule (for comparison) drops this page
    removed_ngram, _, _ = check(docs, policy="ngram")
    assert removed_ngram == {"f0"}


def test_exactly_one_13_gram_of_a_long_item_is_not_flagged(check, web) -> None:
    from corpus.textnorm import tokenize

    q = bench_record("gsm8k", 100)["question"]
    toks = tokenize(q)
    assert len(toks) >= 40
    gram = " ".join(toks[10:23])
    docs = [_doc("g0", _plant(web[7]["text"], gram))]
    removed, rows, _ = check(docs)
    assert removed == set()
    m = _match(rows, "g0", "gsm8k", "100")
    assert m["grams_matched"] == 1 and m["lcs_ratio"] < 0.6
    removed_ngram, _, _ = check(docs, policy="ngram")
    assert removed_ngram == {"g0"}


def test_clean_math_pages_full_of_matrices_and_fractions_are_not_flagged(check, shared_data) -> None:
    pages = [d for d in corpus_docs(shared_data, "math_positive.jsonl.gz", 4000)
             if d["text"].count("\\frac") >= 5 and ("matrix" in d["text"] or "\\begin{array}" in d["text"])]
    assert len(pages) >= 20
    docs = [_doc(d["id"], d["text"], d["source"]) for d in pages[:60]]
    removed, _rows, _ = check(docs)
    assert removed == set()


def test_shared_asymptote_preamble_alone_is_not_flagged(check, web) -> None:
    # MATH test items 185, 442, 493 and 1045 share this grid/axes preamble verbatim; it makes
    # up most of their question tokens
    p185 = bench_record("math", 185)["problem"]
    for i in (442, 493, 1045):
        assert "pen cqcqcq=rgb(0.75,0.75,0.75);" in bench_record("math", i)["problem"]
    pre = p185[p185.index("[asy]"): p185.index("real f1")]
    figure = pre + "real f1(real x){return x^3/4-2*x;}\ndraw(graph(f1,-3,3),linewidth(1));\n[/asy]"
    page = _plant(web[8]["text"], "Here is the plot of my cubic:\n" + figure + "\nWhere are its zeros?")
    removed, rows, _ = check([_doc("a0", page)])
    assert removed == set() and rows == []
    # without figure-code stripping the preamble alone would decide the match
    removed_raw, rows_raw, _ = check([_doc("a0", page)], strip_figure_code=False)
    assert removed_raw == {"a0"}
    assert {r["item_id"] for r in rows_raw if r["contaminated"]} & {"185", "442", "493", "1045"}


def test_planted_item_after_figure_code_reports_original_offsets(check, web) -> None:
    q = bench_record("gsm8k", 3)["question"]
    page = "[asy]draw((0,0)--(1,1));[/asy] Intro.\n" + q + "\n" + web[9]["text"][:2000]
    removed, rows, _ = check([_doc("o0", page)])
    assert removed == {"o0"}
    m = _match(rows, "o0", "gsm8k", "3")
    assert page[m["doc_start"]: m["doc_start"] + 20] == q[:20]


def test_empty_and_5mb_documents_are_handled(check, shared_data) -> None:
    pages = corpus_docs(shared_data, "en_web_pages.jsonl.gz", 400)
    big = ""
    while len(big) < 5_000_000:
        big += "\n".join(d["text"] for d in pages)
    big = big[:5_000_000]
    q = bench_record("math", 2500)["problem"]
    big_hit = big[:4_000_000] + "\n" + q + "\n" + big[4_000_000:]
    docs = [_doc("empty", ""), _doc("spaces", "   \n\t "), _doc("big", big), _doc("big_hit", big_hit)]
    removed, rows, _ = check(docs)
    assert removed == {"big_hit"}
    m = _match(rows, "big_hit", "math", "2500")
    assert m["doc_start"] >= 4_000_000
