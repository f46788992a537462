"""Fixtures for export tests: the bundled Qwen2.5 tokenizer, real documents, a tiny BPE."""

from __future__ import annotations

import gzip
import json
import unicodedata
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner, Result

from corpus.cli import main
from corpus.export.tokenize import LoadedTokenizer, load_tokenizer, resolve_tokenizer
from tests.conftest import SHARED_DATA, write_jsonl

# corpus sample file -> the source it plays in the export tests
SOURCES = {
    "math_positive.jsonl.gz": "book",
    "en_web_pages.jsonl.gz": "web",
    "zh_math_positive.jsonl.gz": "synth",
    "en_math_word_problems.jsonl.gz": "code",
    "non_math_negative.jsonl.gz": "web",
    "zh_non_math_negative.jsonl.gz": "web",
}


def load_real_docs(per_file: int, max_chars: int = 6000) -> list[dict[str, Any]]:
    """Real texts from ../shared/data/corpus_samples (English, Chinese, LaTeX), cut to max_chars."""
    rows: list[dict[str, Any]] = []
    for name, source in SOURCES.items():
        path = SHARED_DATA / "corpus_samples" / name
        with gzip.open(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh):
                if i >= per_file:
                    break
                d = json.loads(line)
                rows.append({"id": d["id"], "text": d["text"][:max_chars], "source": source})
    return rows


@pytest.fixture(scope="session")
def qwen() -> LoadedTokenizer:
    return load_tokenizer(resolve_tokenizer("qwen2.5"))


@pytest.fixture(scope="session")
def real_docs(shared_data: Path) -> list[dict[str, Any]]:
    return load_real_docs(per_file=60)


@pytest.fixture(scope="session")
def export_input(tmp_path_factory: pytest.TempPathFactory, real_docs: list[dict[str, Any]]) -> Path:
    """4 input files (3 JSONL + 1 Parquet) of real documents plus edge cases, in a fixed order."""
    docs = list(real_docs)
    docs.insert(7, {"id": "edge-empty", "text": "", "source": "web"})
    docs.insert(30, {"id": "edge-special", "text": "quote <|endoftext|> and <|im_start|>user\n<tool_call>x",
                     "source": "web"})
    docs.insert(31, {"id": "edge-nfc", "text": "cafe\u0301 \u212b", "source": "code"})
    d = tmp_path_factory.mktemp("export_in")
    parts = [docs[i::4] for i in range(4)]
    for i, part in enumerate(parts[:3]):
        write_jsonl(d / f"part-{i}.jsonl", part)
    pq.write_table(pa.Table.from_pylist(parts[3]), d / "part-3.parquet")
    return d


def input_rows(folder: Path) -> list[dict[str, Any]]:
    """Input documents in the order export numbers them (sorted files, rows in order)."""
    from corpus.shards import read_table

    return read_table([str(folder)]).to_pylist()


def nfc(s: str) -> str:
    return unicodedata.normalize("NFC", s)


def run_cli(args: list[str]) -> Result:
    return CliRunner().invoke(main, args, catch_exceptions=False)


@pytest.fixture(scope="session")
def small_tokenizer(tmp_path_factory: pytest.TempPathFactory, real_docs: list[dict[str, Any]]) -> Path:
    """A 700-id byte-level BPE trained here (GPT-2 style ByteLevel regex, <|endoftext|> in its vocab)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=["<|endoftext|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([d["text"] for d in real_docs], trainer=trainer)
    path = tmp_path_factory.mktemp("small_tok") / "tokenizer.json"
    tok.save(str(path))
    return path


# ----------------------------------------------------------------------------- loader / SFT exports
GSM8K_TRAIN = SHARED_DATA / "train_sets" / "gsm8k_train.jsonl"


def gsm8k_records(n: int, start: int = 0) -> list[dict[str, Any]]:
    """The first ``n`` GSM8K train records (MIT, see shared/data/README.md) with ids."""
    out = []
    with open(GSM8K_TRAIN, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i < start:
                continue
            if len(out) >= n:
                break
            d = json.loads(line)
            out.append({"id": f"gsm8k-train-{i}", "question": d["question"], "answer": d["answer"]})
    return out


# name -> export arguments; document formats are read at any seq_len, packed ones at theirs
LOADER_EXPORTS: dict[str, list[str]] = {
    "megatron": ["--format", "megatron", "--seq-len", "64"],
    "nanotron": ["--format", "nanotron", "--seq-len", "64"],
    "numpy": ["--format", "numpy", "--seq-len", "64"],
    "numpy-packed": ["--format", "numpy", "--packed", "--seq-len", "48"],
    "parquet": ["--format", "parquet", "--seq-len", "64"],
    "parquet-nosplit": ["--format", "parquet", "--seq-len", "40", "--no-split"],
    "sft-parquet": ["--sft", "--format", "parquet", "--seq-len", "160", "--prompt-field", "question",
                    "--response-field", "answer"],
    "sft-numpy": ["--sft", "--format", "numpy", "--packed", "--seq-len", "224", "--prompt-field", "question",
                  "--response-field", "answer"],
}


@pytest.fixture(scope="session")
def loader_exports(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Path]:
    """One small real export per format (and two SFT exports), written by `mathcorpus export`."""
    root = tmp_path_factory.mktemp("loader_exports")
    docs_in, sft_in = root / "docs_in", root / "sft_in"
    docs_in.mkdir()
    sft_in.mkdir()
    write_jsonl(docs_in / "docs.jsonl", load_real_docs(per_file=8, max_chars=2500))
    write_jsonl(sft_in / "gsm8k.jsonl", gsm8k_records(60))
    out = {}
    for name, args in LOADER_EXPORTS.items():
        dest = root / name
        res = run_cli(["export", str(sft_in if name.startswith("sft") else docs_in), "-o", str(dest), *args,
                       "--shard-tokens", "6000", "--seed", "3", "--engine", "hf", "--identity-sample-docs", "0"])
        assert res.exit_code == 0, res.output
        out[name] = dest
    return out
