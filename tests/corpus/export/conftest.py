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
