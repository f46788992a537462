"""The n-gram index: contents, exclusions, persistence, memory; and the confirmation window."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from corpus.errors import ConfigError
from corpus.textnorm import strip_figure_code, tokenize
from decontam import kernel as K
from decontam.benchmarks import load_benchmarks, load_file_benchmark
from decontam.confirm import Confirmer
from decontam.index import DecontamIndex, IndexOptions, build_index
from decontam.stage import DecontamConfig, DecontamStage
from tests.decontam.conftest import bench_record


def _item_index(idx: DecontamIndex, bench: str, item_id: str) -> int:
    b = idx.items.column("benchmark").to_pylist()
    i = idx.items.column("item_id").to_pylist()
    return next(k for k, (x, y) in enumerate(zip(b, i)) if x == bench and y == item_id)


def test_every_gram_of_question_solution_and_span_is_indexed(posttrain_index) -> None:
    rec = bench_record("math", 3024)
    k = _item_index(posttrain_index, "math", "3024")
    hs = K.reference_token_hashes(rec["problem"] + "\n" + rec["solution"])
    keys = K.reference_gram_keys(hs, 13)
    gs = posttrain_index.grams
    for key in keys:
        ix = int(np.searchsorted(gs.keys, np.uint64(key)))
        assert gs.keys[ix] == key
        assert k in posttrain_index.gram_items(ix).tolist()
    # question-only, solution-only and spanning grams are all among them
    nq = len(tokenize(rec["problem"]))
    assert len(keys) == len(hs) - 12 and nq > 13


def test_index_is_small_and_deterministic(posttrain_index) -> None:
    assert posttrain_index.nbytes() < 300e6
    again = build_index(load_benchmarks("posttrain"))
    for name, arr in posttrain_index.arrays.items():
        assert np.array_equal(np.asarray(arr), again.arrays[name]), name
    assert posttrain_index.meta["profile"] == "gsm8k,math,minerva_math,gaokao2023en,olympiadbench,college_math," \
        "mmlu_stem,gaokao_math_qa,gaokao_math_cloze,cmath,cn_middle_school,aime24,amc23"


def test_short_items_are_phrases_or_listed_as_unchecked(posttrain_index) -> None:
    meta = posttrain_index.meta
    short = meta["unchecked"]["college_math"]["short"]
    assert len(short) > 50
    for item_id in short[:20]:
        rec = bench_record("college_math", int(item_id))
        assert len(tokenize(rec["question"] + "\n" + rec["answer"])) < 8
    # AMC 23 item 16 has a 12-token question: indexed as a phrase
    k = _item_index(posttrain_index, "amc23", "16")
    assert k in np.asarray(posttrain_index.arrays["ppost_item"]).tolist()


def test_figure_code_is_excluded_and_reported(posttrain_index) -> None:
    fig = posttrain_index.meta["excluded"]["figure_code"]
    assert fig["stripped"] and fig["items_with_figure_code"]["math"] > 700 and fig["tokens_removed"] > 50_000
    rec = bench_record("math", 185)
    asy = rec["problem"][rec["problem"].index("[asy]"): rec["problem"].index("[/asy]")]
    gram = K.reference_gram_keys(K.reference_token_hashes(asy), 13)[5]
    assert gram not in set(np.asarray(posttrain_index.grams.keys).tolist())
    k = _item_index(posttrain_index, "math", "185")
    assert posttrain_index.items.column("question")[k].as_py() == strip_figure_code(rec["problem"])


def test_grams_shared_by_many_items_are_suppressed(tmp_path: Path) -> None:
    # an instruction template opening every item (as in the Gaokao files) must not decide a match
    template = "请完成下面一道选择题，每个小题四个选项中，只有一项是符合题目要求的。"
    rows = [{"question": template + f"已知第{i}个集合的元素个数为{i * 7 + 3}，求它的子集个数。", "answer": str(i)}
            for i in range(12)]
    path = tmp_path / "tmpl.jsonl"
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    bench = load_file_benchmark(f"tmpl={path}:question,answer")
    idx = build_index([bench], IndexOptions(max_gram_items=10))
    fq = idx.meta["excluded"]["frequent_grams"]
    assert fq["grams_suppressed"] > 0
    shared = "".join(tokenize(template + "已知第"))
    assert fq["examples"] and all(ex["items"] == 12 and ex["gram"].replace(" ", "") in shared
                                  for ex in fq["examples"])
    template_gram = K.reference_gram_keys(K.reference_token_hashes(template), 13)[0]
    assert template_gram not in set(idx.grams.keys.tolist())
    loose = build_index([bench], IndexOptions(max_gram_items=20))
    assert template_gram in set(loose.grams.keys.tolist())


def test_save_load_roundtrip_and_errors(tmp_path: Path, posttrain_index) -> None:
    small = build_index(load_benchmarks("pretrain"))
    small.save(str(tmp_path / "idx"))
    back = DecontamIndex.load(str(tmp_path / "idx"))
    assert back.meta == json.loads(json.dumps(small.meta))
    assert np.array_equal(back.grams.keys, small.grams.keys)
    with pytest.raises(ConfigError) as e:
        DecontamIndex.load(str(tmp_path))
    assert str(e.value) == (f"{tmp_path}: not a decontam index (no meta.json); build one with "
                            "'mathcorpus decontam index --benchmarks posttrain -o IDX'")


def test_stage_pickles_without_the_index(posttrain_index_path: str) -> None:
    from corpus.runner import RunContext, RunOptions, TaskContext

    stage = DecontamStage(DecontamConfig.from_mapping({"index": posttrain_index_path}))
    ctx = RunContext("decontam", [], "/tmp/x", RunOptions(), 1, "/tmp/x/r", "/tmp/x/s", "/tmp/x/l")
    stage.setup(TaskContext(run=ctx, rank=0, world_size=1, files=[]))
    assert stage._index is not None
    blob = pickle.dumps(stage)
    assert len(blob) < 20_000
    assert pickle.loads(blob)._index is None


def test_window_is_item_sized_not_the_whole_page(posttrain_index) -> None:
    conf = Confirmer(posttrain_index)
    k = _item_index(posttrain_index, "gsm8k", "100")
    it = conf.item_tokens(k)
    q = it.tokens[: it.q_len]
    # one 13-gram of the question, surrounded by a long page that reuses the question's words
    filler = [t for t in q for _ in range(3)] * 20
    doc = filler + q[10:23] + filler
    keys = K.reference_gram_keys(q, 13)
    res = conf.score(doc, k, np.array([len(filler)], np.int64), np.array([keys[10]], np.uint64), [])
    assert res.grams_matched == 1
    assert res.tok_hi - res.tok_lo <= len(it.tokens) + 2
    assert not res.contaminated
    full = conf.score(filler + it.tokens + filler, k, np.array([len(filler) + 10], np.int64),
                      np.array([keys[10]], np.uint64), [])
    assert full.contaminated and full.lcs_ratio == 1.0 and full.field == "both"
