"""Embedding candidates of the judge tier (`--judge-embed-model`) with a tiny random local encoder.

The encoder is built from a config (nothing downloaded) and laid out as a sentence-transformers
folder; its similarities mean nothing, but they are deterministic, so the candidates the stage
sends must be exactly each record's top-k items by cosine computed here with the full matrix
(the stage computes them in item blocks). What a real encoder would find could not be
measured here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from click.testing import CliRunner

from corpus.cli import main
from decontam.benchmarks import load_benchmarks, load_bundled
from decontam.index import DecontamIndex, build_index
from tests.conftest import write_jsonl
from tests.teacher_server import TOKENIZER_JSON, FakeOpenAI


@pytest.fixture(scope="module")
def st_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT with the bundled Qwen2.5 tokenizer, as a sentence-transformers folder (mean, normalized)."""
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    out = tmp_path_factory.mktemp("tiny-st")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_JSON), pad_token="<|endoftext|>")
    torch.manual_seed(11)
    BertModel(BertConfig(vocab_size=151936, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512)).save_pretrained(out)
    tok.save_pretrained(out)
    (out / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (out / "1_Pooling").mkdir()
    (out / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                               "pooling_mode_mean_tokens": True}))
    return out


def test_embedding_candidates_are_the_top_k_by_cosine(fake_openai: FakeOpenAI, st_encoder: Path,
                                                      tmp_path: Path) -> None:
    from corpus.encoder import Encoder

    items = [it for it in load_bundled("math").items[:40]]
    bench = write_jsonl(tmp_path / "mine.jsonl", [{"question": it.question, "answer": it.answer or "x"}
                                                  for it in items])
    idx_path = tmp_path / "idx"
    build_index(load_benchmarks("", [f"mine={bench}:question,answer"])).save(str(idx_path))
    records = [{"id": f"r{i}", "question": q, "text": q} for i, q in enumerate([
        "A farmer has some chickens and cows; together they have 30 heads and 74 legs. How many cows?",
        "What is the sum of the interior angles of a hexagon, in degrees?",
        "Simplify the fraction 84/126 and write it in lowest terms.",
    ])]
    sft = write_jsonl(tmp_path / "sft.jsonl", records)
    fake_openai.reply = lambda body, i: "Verdict: no"
    rep = tmp_path / "rep"
    res = CliRunner().invoke(main, [
        "decontam", "run", str(sft), "-o", str(tmp_path / "out"), "--index", str(idx_path), "--text-fields",
        "question", "--report", str(rep), "--judge", "--judge-model", "m", "--judge-base-url", fake_openai.base_url,
        "--judge-embed-model", str(st_encoder), "--judge-embed-k", "2", "--judge-embed-floor", "0.0"],
        catch_exceptions=False)
    assert res.exit_code == 0, res.stderr
    m = pl.read_parquet(rep / "matches.parquet").filter(pl.col("tier") == "judge")
    got = {(r["doc_id"], r["item_id"]): r["judge_similarity"] for r in m.iter_rows(named=True)}
    assert set(m["judge_source"].to_list()) == {"embed"} and set(m["judge_verdict"].to_list()) == {"clean"}
    # the same top-2 from the full similarity matrix
    index = DecontamIndex.load(str(idx_path))
    enc = Encoder(str(st_encoder))
    a = enc.embed([r["question"] for r in records])
    b = enc.embed([q or "" for q in index.items.column("question").to_pylist()])
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    sims = a @ b.T
    ids = index.items.column("item_id").to_pylist()
    want = {(f"r{i}", ids[j]): float(sims[i, j]) for i in range(len(records)) for j in np.argsort(-sims[i])[:2]}
    assert set(got) == set(want)
    assert all(abs(got[k] - want[k]) < 1e-4 for k in want)
    assert len(fake_openai.requests) == 6
    js = json.loads((rep / "summary.json").read_text())["judge"]
    assert js["funnel"]["seen_embed"] == 6 and js["embed_model"] == str(st_encoder)
    # a folder that is not there is a config error naming the option
    res = CliRunner().invoke(main, [
        "decontam", "run", str(sft), "-o", str(tmp_path / "out2"), "--index", str(idx_path), "--text-fields",
        "question", "--judge", "--judge-model", "m", "--judge-base-url", fake_openai.base_url,
        "--judge-embed-model", str(tmp_path / "missing")])
    assert res.exit_code == 2
    assert f"--judge-embed-model {tmp_path / 'missing'} is not a folder" in res.stderr
