"""Tokenizer resolution, the tiktoken fast path's identity with HF, special strings as text."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from corpus.errors import ConfigError
from corpus.export.tokenize import (
    BUNDLED_DIR,
    PROBES,
    HFEngine,
    LoadedTokenizer,
    TiktokenEngine,
    build_tiktoken,
    choose_engine,
    decode,
    encode_documents,
    load_tokenizer,
    resolve_tokenizer,
    verify_identity,
)
from tests.corpus.export.conftest import load_real_docs, nfc


def test_bundled_default_is_qwen25_with_license(qwen: LoadedTokenizer) -> None:
    d = BUNDLED_DIR / "qwen2.5"
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "LICENSE", "NOTICE.md"):
        assert (d / f).is_file(), f
    assert "Apache License" in (d / "LICENSE").read_text()
    assert qwen.ref.name == "qwen2.5"
    assert qwen.vocab_size == 151665
    assert (qwen.eos_token, qwen.eos_id) == ("<|endoftext|>", 151643)
    assert len(qwen.ref.sha256) == 64


def test_bundled_files_equal_shared_data(shared_data: Path) -> None:
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"):
        assert (BUNDLED_DIR / "qwen2.5" / f).read_bytes() == (shared_data / "tokenizers" / "qwen2.5" / f).read_bytes()


def test_missing_tokenizer_path_is_a_clear_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope" / "tokenizer.json")
    with pytest.raises(ConfigError) as exc:
        resolve_tokenizer(missing)
    assert str(exc.value) == (
        f"tokenizer '{missing}' not found: it is not a tokenizer.json file, a folder holding tokenizer.json, or a "
        "bundled name (qwen2.5). Pass --tokenizer with the path to a tokenizer.json (or its folder); download hub "
        "tokenizers first, e.g. huggingface-cli download Qwen/Qwen2.5-Math-7B tokenizer.json")


def test_folder_without_tokenizer_json_and_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="has no tokenizer.json"):
        resolve_tokenizer(str(tmp_path))
    bad = tmp_path / "tokenizer.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="cannot load it as an HF tokenizers file"):
        load_tokenizer(resolve_tokenizer(str(bad)))


def test_folder_resolves_to_its_tokenizer_json(small_tokenizer: Path) -> None:
    ref = resolve_tokenizer(str(small_tokenizer.parent))
    assert ref.path == str(small_tokenizer.resolve())


def test_unknown_eos_is_an_error() -> None:
    with pytest.raises(ConfigError, match="--eos '<nope>' is not a token of qwen2.5"):
        load_tokenizer(resolve_tokenizer("qwen2.5"), eos="<nope>")


def test_special_token_strings_are_plain_text(qwen: LoadedTokenizer) -> None:
    text = "a<|endoftext|>b <|im_start|>user\nhi<|im_end|> <tool_call>{}</tool_call> <|fim_prefix|>"
    enc, nfc_flag, why = build_tiktoken(qwen)
    assert enc is not None, why
    hf_ids = HFEngine(qwen).encode([text])[0]
    tt_ids = TiktokenEngine(enc, nfc_flag).encode([text])[0]
    assert hf_ids == tt_ids
    assert max(hf_ids) < 151643  # no added token (special or not) is produced from text
    assert decode(qwen, hf_ids) == text
    # while the complete tokenizer would have matched them as control tokens
    assert 151643 in qwen.hf.encode(text, add_special_tokens=False).ids


def test_tiktoken_identical_to_hf_on_real_documents(qwen: LoadedTokenizer) -> None:
    docs = [d["text"] for d in load_real_docs(per_file=80, max_chars=20000)]
    enc, nfc_flag, why = build_tiktoken(qwen)
    assert enc is not None, why
    report = verify_identity(HFEngine(qwen), TiktokenEngine(enc, nfc_flag), docs + list(PROBES))
    assert report.identical, report.mismatch
    assert report.docs == len(docs) + len(PROBES) and report.tokens > 100_000


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(min_size=0, max_size=200))
def test_engines_agree_and_round_trip_on_any_text(qwen: LoadedTokenizer, text: str) -> None:
    enc, nfc_flag, _ = build_tiktoken(qwen)
    hf_ids = HFEngine(qwen).encode([text])[0]
    assert TiktokenEngine(enc, nfc_flag).encode([text])[0] == hf_ids
    assert decode(qwen, hf_ids) == nfc(text)


def test_auto_engine_picks_tiktoken_and_records_the_check(qwen: LoadedTokenizer) -> None:
    choice = choose_engine(qwen, "auto", ["some sample text", "数学"])
    assert choice.engine == "tiktoken"
    assert choice.check["identical"] is True and choice.check["docs"] == len(PROBES) + 2
    assert choose_engine(qwen, "hf", []).engine == "hf"


def _word_level_tokenizer(path: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"<unk>": 0, "hello": 1, "world": 2, "</s>": 3}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["</s>"])
    tok.save(str(path))
    return path


def test_non_bpe_tokenizer_falls_back_to_hf(tmp_path: Path) -> None:
    tok = load_tokenizer(resolve_tokenizer(str(_word_level_tokenizer(tmp_path / "tokenizer.json"))))
    assert tok.eos_token == "</s>"
    choice = choose_engine(tok, "auto", ["hello world"])
    assert (choice.engine, choice.reason) == ("hf", "tiktoken not applicable: model type 'WordLevel' is not BPE")
    with pytest.raises(ConfigError, match="--engine tiktoken cannot reproduce tokenizer"):
        choose_engine(tok, "tiktoken", [])


def test_merge_order_mismatch_disables_tiktoken(tmp_path: Path, qwen: LoadedTokenizer) -> None:
    spec: dict[str, Any] = json.loads(Path(qwen.ref.path).read_text())
    merges = spec["model"]["merges"]
    merges[0], merges[1] = merges[1], merges[0]  # HF would merge in another order than the ranks say
    p = tmp_path / "tokenizer.json"
    p.write_text(json.dumps(spec))
    tok = load_tokenizer(resolve_tokenizer(str(p)))
    assert choose_engine(tok, "auto", []).reason == \
        "tiktoken not applicable: merge results are not numbered in merge order"


def test_identity_check_catches_a_divergent_engine(qwen: LoadedTokenizer) -> None:
    class OffByOne:
        name = "broken"

        def encode(self, texts: list[str]) -> list[list[int]]:
            return [[i + (1 if k == 3 else 0) for k, i in enumerate(ids)] for ids in HFEngine(qwen).encode(texts)]

    report = verify_identity(HFEngine(qwen), OffByOne(), ["The quick brown fox jumps"])
    assert not report.identical
    assert report.mismatch is not None and (report.mismatch["doc"], report.mismatch["token"]) == (0, 3)


def test_small_byte_level_tokenizer_gets_the_fast_path(small_tokenizer: Path) -> None:
    tok = load_tokenizer(resolve_tokenizer(str(small_tokenizer)))
    assert tok.vocab_size == 700 and tok.eos_id == 0
    choice = choose_engine(tok, "auto", [d for d in ("x = 1 + 2", "小明", "<|endoftext|> as text")])
    assert choice.engine == "tiktoken", choice.reason


def test_encode_documents_appends_eos_and_flattens(qwen: LoadedTokenizer) -> None:
    texts = ["Hello world", "", "数学 $x^2$"]
    flat, lens = encode_documents(HFEngine(qwen), texts, qwen.eos_id, np.uint32)
    expect = [qwen.text.encode(t, add_special_tokens=False).ids + [qwen.eos_id] for t in texts]
    assert lens.tolist() == [len(e) for e in expect]
    assert flat.tolist() == [i for e in expect for i in e]
    assert flat.dtype == np.uint32
