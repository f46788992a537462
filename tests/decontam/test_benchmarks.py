"""The benchmark registry: bundled files, ids, fields, profiles, user files."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus.errors import ConfigError
from decontam import benchmarks as B
from tests.decontam.conftest import BENCH_DIR, bench_record

TWELVE = ["gsm8k", "math", "minerva_math", "gaokao2023en", "olympiadbench", "college_math", "mmlu_stem",
          "gaokao_math_qa", "gaokao_math_cloze", "cmath", "cn_middle_school", "aime24", "amc23"]


def test_all_17_files_are_bundled_with_provenance(shared_data) -> None:
    shipped = sorted(p.name for p in BENCH_DIR.glob("*.jsonl"))
    assert shipped == sorted(p.name for p in (shared_data / "benchmarks").glob("*.jsonl"))
    assert len(shipped) == 17
    for name in shipped:
        assert (BENCH_DIR / name).read_bytes() == (shared_data / "benchmarks" / name).read_bytes()
    readme = (BENCH_DIR / "README.md").read_text()
    assert "a45202bd16f1ec06f433442dc1152d0074773465" in readme and "MIT" in readme


def test_profiles() -> None:
    assert B.resolve_names("pretrain") == ["gsm8k", "math"]
    assert B.resolve_names("posttrain") == TWELVE
    assert B.resolve_names("math, gsm8k,math") == ["math", "gsm8k"]
    assert set(B.resolve_names("all")) == set(B.bundled_names())


def test_item_ids_are_line_numbers_and_counts_match_files() -> None:
    for name in B.bundled_names():
        b = B.load_bundled(name)
        lines = (BENCH_DIR / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
        assert len(b.items) == len(lines)
        assert [it.item_id for it in b.items] == [str(i) for i in range(len(lines))]
    q = B.load_bundled("gsm8k").items[7].question
    assert q == bench_record("gsm8k", 7)["question"]


def test_fields_of_each_layout() -> None:
    math = B.load_bundled("math").items[100]
    assert math.second == ("solution", bench_record("math", 100)["solution"])
    gsm = B.load_bundled("gsm8k").items[0]
    assert "<<" not in gsm.answer and "#### 18" in gsm.answer  # calculator annotations dropped
    mmlu = B.load_bundled("mmlu_stem").items[0]
    rec = bench_record("mmlu_stem", 0)
    assert mmlu.answer == rec["choices"][rec["answer"]]
    assert mmlu.choices.split("\n") == rec["choices"]
    qa = B.load_bundled("gaokao_math_qa").items[0]
    assert qa.answer == "D" and qa.choices.startswith("A. ")  # answer None -> label; options dict
    oly = B.load_bundled("olympiadbench").items[0]
    assert oly.solution == "\n".join(bench_record("olympiadbench", 0)["solution"])
    amc = B.load_bundled("amc23").items[0]
    assert amc.answer == "27"  # 27.0 in the file
    assert B.load_bundled("cmath").lang == "zh" and B.load_bundled("math").lang == "en"


def test_stringified_lists_dicts_and_none(tmp_path: Path) -> None:
    rows = [
        {"q": "What is two plus two, asked as a question?", "a": "None", "c": "['3', '4', '5']"},
        {"q": "Pick one", "a": "4", "c": "{'A': '1', 'B': 'None', 'C': '2'}"},
        {"q": "None", "a": "x"},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    b = B.load_file_benchmark(f"mine={path}:q,a,c")
    assert [it.item_id for it in b.items] == ["0", "1", "2"]
    assert b.items[0].answer == "" and b.items[0].choices == "3\n4\n5"
    assert b.items[1].choices == "A. 1\nC. 2"
    assert b.items[2].question == ""
    assert B.value_text("{1,2,3,4}", structured=True) == "{1,2,3,4}"  # a set answer stays text


def test_benchmark_file_parquet_and_errors(tmp_path: Path) -> None:
    pq.write_table(pa.table({"problem": ["Find x if 2x = 4 and x is real.", "Compute 3+5."],
                             "solution": ["x = 2", "8"]}), tmp_path / "t.parquet")
    b = B.load_file_benchmark(f"mytest={tmp_path / 't.parquet'}:problem,solution")
    assert b.name == "mytest" and b.origin == "file" and b.items[1].answer == "8"
    with pytest.raises(ConfigError) as e:
        B.load_file_benchmark(f"mytest={tmp_path / 't.parquet'}:prblem,solution")
    assert str(e.value) == (f"{tmp_path / 't.parquet'}: question field 'prblem' not found; did you mean "
                            "'problem'? (fields: problem, solution); name the file's fields as "
                            "NAME=PATH:question_field,answer_field")
    with pytest.raises(ConfigError) as e:
        B.parse_benchmark_file_spec("just/a/path.jsonl")
    assert str(e.value) == ("--benchmark-file 'just/a/path.jsonl': expected NAME=PATH:question_field,answer_field "
                            "(e.g. mytest=data/test.jsonl:problem,solution)")
    with pytest.raises(ConfigError, match="benchmark file not found"):
        B.load_file_benchmark(f"x={tmp_path / 'missing.jsonl'}:q,a")


def test_unknown_benchmark_suggests_the_closest() -> None:
    with pytest.raises(ConfigError) as e:
        B.resolve_names("gsm8")
    assert str(e.value).startswith("unknown benchmark 'gsm8'; did you mean 'gsm8k'?")
    with pytest.raises(ConfigError) as e:
        B.load_benchmarks("", [])
    assert str(e.value) == ("no benchmarks selected; pass --benchmarks pretrain|posttrain|name,name or "
                            "--benchmark-file")


def test_duplicate_benchmark_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gsm8k.jsonl"
    path.write_text(json.dumps({"question": "a b c d e f g h", "answer": "1"}) + "\n")
    with pytest.raises(ConfigError, match="the name 'gsm8k' is already used"):
        B.load_benchmarks("pretrain", [f"gsm8k={path}:question,answer"])


def test_hub_spec_is_parsed_without_touching_the_network() -> None:
    name, path, fields = B.parse_benchmark_file_spec("aime25=hf:org/aime-2025/default@test:problem,solution")
    assert (name, path, fields.question, fields.answer) == ("aime25", "hf:org/aime-2025/default@test",
                                                            ("problem",), ("solution",))
    name, path, fields = B.parse_benchmark_file_spec("t=data/my test.jsonl:q,a,opts")
    assert (path, fields.question, fields.answer, fields.choices) == ("data/my test.jsonl", ("q",), ("a",), ("opts",))


def test_benchmark_file_with_a_missing_question_is_refused(tmp_path: Path) -> None:
    from corpus.errors import InputError

    p = tmp_path / "mine.jsonl"
    p.write_text(json.dumps({"question": "What is 1+1?", "answer": "2"}) + "\n" + json.dumps({"answer": "3"}) + "\n")
    with pytest.raises(InputError) as e:
        B.load_file_benchmark(f"mine={p}:question,answer")
    assert str(e.value) == (f"{p}: line 2 has no 'question' field (item id 1); every benchmark item needs its "
                            "question. Fix or remove that line (keep the line count if item ids must stay the "
                            "line numbers)")
