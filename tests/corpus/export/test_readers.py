"""Real trainers' own readers accept the shards: Megatron-Core GPTDataset, datatrove, HF datasets + Trainer."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corpus.export.cli import blend_pairs
from corpus.export.writers import DatatroveReader, ExportReader
from tests.corpus.export.conftest import run_cli


def documents(path: Path) -> list[tuple[int, ...]]:
    return [tuple(ids.tolist()) for _, ids in ExportReader(str(path)).documents()]


# ----------------------------------------------------------------------------- Megatron-Core
def megatron_tokenizer(vocab_size: int, eod: int) -> Any:
    from megatron.core.tokenizers import MegatronTokenizerBase

    class Tok(MegatronTokenizerBase):
        """The ids Megatron's GPTDataset asks of a tokenizer (no text is tokenized here)."""

        def __init__(self) -> None:
            self.unique_identifiers = {"class": "mathcorpus-test", "vocab_size": vocab_size, "eod": eod}

        def tokenize(self, text: str) -> list[int]:
            raise NotImplementedError

        def detokenize(self, ids: list[int]) -> str:
            raise NotImplementedError

        def vocab(self) -> dict[str, int]:
            return {}

        @property
        def vocab_size(self) -> int:
            return vocab_size

        def apply_chat_template(self) -> None:
            raise NotImplementedError

        @property
        def eod(self) -> int:
            return eod

        @property
        def pad(self) -> int:
            return -1

    return Tok()


def test_megatron_gpt_dataset_reads_the_blend(loader_exports: dict[str, Path], tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from megatron.core.datasets.blended_megatron_dataset_builder import BlendedMegatronDatasetBuilder
        from megatron.core.datasets.gpt_dataset import GPTDataset, GPTDatasetConfig

    out = loader_exports["megatron"]
    m = json.loads((out / "manifest.json").read_text())
    # the CLI prints Megatron-LM's --data-path; the test builds the blend from the same pairs
    res = run_cli(["export", "blend", f"{out}:2", "--json"])
    assert res.exit_code == 0, res.output
    data_path = json.loads(res.output)["data_path"]
    pairs = blend_pairs([f"{out}:2"])
    assert data_path == [x for w, p in pairs for x in (f"{w:.10g}", p)] and len(pairs) == len(m["shards"]) > 1
    shard_tokens = [s["tokens"] for s in m["shards"]]
    assert [w for w, _ in pairs] == pytest.approx([2 * t / sum(shard_tokens) for t in shard_tokens])
    L = 64
    cfg = GPTDatasetConfig(random_seed=1, sequence_length=L, blend=([p for _, p in pairs], [w for w, _ in pairs]),
                           split="100,0,0", path_to_cache=None,  # no cache: no torch.distributed needed
                           tokenizer=megatron_tokenizer(m["tokenizer"]["vocab_size"], m["tokenizer"]["eos_id"]),
                           reset_position_ids=True, reset_attention_mask=True, eod_mask_loss=True,
                           create_attention_mask=False)
    n = 400
    train = BlendedMegatronDatasetBuilder(GPTDataset, [n, 0, 0], lambda: True, cfg).build()[0]
    assert len(train) >= n
    # samples come from each shard in proportion to its tokens
    counts = np.bincount(np.asarray(train.dataset_index), minlength=len(pairs))
    assert np.allclose(counts / n, np.asarray(shard_tokens) / sum(shard_tokens), atol=0.02)
    docs = [np.asarray(d, dtype="<u4").tobytes() for d in documents(out)]
    eos = m["tokenizer"]["eos_id"]
    for i in range(0, n, 5):
        s = train[i]
        tokens, labels = s["tokens"].numpy(), s["labels"].numpy()
        assert tokens.shape == (L,) and np.array_equal(tokens[1:], labels[:-1])
        seq = np.r_[tokens, labels[-1]]
        cut = np.flatnonzero(seq == eos) + 1
        parts = [p.astype("<u4").tobytes() for p in np.split(seq, cut) if p.size]
        # a sample is a run of our documents: the first piece ends one, the last starts one, the rest are whole
        for k, p in enumerate(parts):
            first, last = k == 0, k == len(parts) - 1
            if first and last:
                ok = any(_aligned_find(d, p) for d in docs)
            elif first:
                ok = any(d.endswith(p) for d in docs)
            elif last:
                ok = any(d.startswith(p) for d in docs)
            else:
                ok = p in set(docs)
            assert ok, (i, k)
        # position ids restart after every EOS and the EOS position takes no loss
        pos = s["position_ids"].numpy()
        assert all(pos[c] == 0 for c in cut if c < L)
        assert (s["loss_mask"].numpy()[tokens == eos] == 0).all()


def _aligned_find(hay: bytes, needle: bytes) -> bool:
    at = hay.find(needle)
    while at >= 0:
        if at % 4 == 0:
            return True
        at = hay.find(needle, at + 1)
    return False


# ----------------------------------------------------------------------------- datatrove / nanotron
def test_datatrove_folder_dataset_reads_the_ds_files(loader_exports: dict[str, Path]) -> None:
    from datatrove.utils.dataset import DatatroveFolderDataset

    out = loader_exports["nanotron"]
    m = json.loads((out / "manifest.json").read_text())
    L = 50
    token_size = np.dtype(m["dtype"]).itemsize
    ds = DatatroveFolderDataset(str(out), seq_len=L, token_size=token_size, return_positions=True)
    # nanotron's Nanoset opens each dataset folder this way: a *.ds glob, not recursive, unshuffled
    nanoset = DatatroveFolderDataset(str(out), seq_len=L, filename_pattern="*.ds",
                                     recursive=False, token_size=token_size, shuffle=False)
    expected = 0
    windows = []
    for sh in m["shards"]:
        r = DatatroveReader(str(out / sh["files"][0]))
        tokens = np.asarray(r.tokens, dtype=np.int64)
        ends = set(r.doc_ends.tolist())
        n = tokens.size // (L + 1)
        expected += n
        for j in range(n):
            a = j * (L + 1)
            start, pos = a, []
            for p in range(a, a + L + 1):
                if p in ends:
                    start = p
                pos.append(p - start)
            windows.append((tokens[a:a + L + 1], pos))
    assert len(ds) == len(nanoset) == expected > 10
    for j, (toks, pos) in enumerate(windows):
        item = ds[j]
        assert item["input_ids"].tolist() == toks.tolist() == nanoset[j]["input_ids"].tolist()
        assert item["positions"].tolist() == pos


# ----------------------------------------------------------------------------- HF datasets + Trainer
@pytest.mark.parametrize("name", ["parquet", "sft-parquet"])
def test_hf_trainer_trains_on_the_parquet_rows(loader_exports: dict[str, Path], tmp_path: Path, name: str) -> None:
    import datasets
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM, Trainer, TrainingArguments

    out = loader_exports[name]
    m = json.loads((out / "manifest.json").read_text())
    files = sorted(str(out / s["files"][0]) for s in m["shards"])
    ds = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path / "hf"))
    assert len(ds) == m["output"]["sequences"] and len(ds[0]["input_ids"]) == m["seq_len"]

    def add_labels(row: dict[str, Any]) -> dict[str, Any]:
        ids = np.asarray(row["input_ids"], dtype=np.int64)
        keep = np.zeros(ids.size, dtype=bool)
        keep[:sum(row["doc_lengths"])] = True  # padding follows the documents
        if "loss_mask" in row:
            keep &= np.asarray(row["loss_mask"], dtype=bool)
        return {"labels": np.where(keep, ids, -100).tolist()}

    ds = ds.map(add_labels, remove_columns=[c for c in ds.column_names if c not in ("input_ids",)])
    ds.set_format("torch")
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(vocab_size=m["tokenizer"]["vocab_size"], hidden_size=32, intermediate_size=64,
                                         num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                         max_position_embeddings=m["seq_len"], tie_word_embeddings=True))
    args = TrainingArguments(output_dir=str(tmp_path / "run"), per_device_train_batch_size=2, max_steps=3,
                             learning_rate=1e-3, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
                             dataloader_num_workers=0, disable_tqdm=True)
    trainer = Trainer(model=model, args=args, train_dataset=ds)
    result = trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 3 and len(losses) == 3
    assert all(math.isfinite(x) and x > 0 for x in losses) and math.isfinite(result.training_loss)


def test_blend_refuses_other_formats_and_missing_exports(loader_exports: dict[str, Path], tmp_path: Path) -> None:
    res = run_cli(["export", "blend", str(loader_exports["nanotron"])])
    assert res.exit_code == 1 and "a nanotron export; Megatron-LM's --data-path takes --format megatron exports" \
                                  in res.output
    res = run_cli(["export", "blend", str(tmp_path)])
    assert res.exit_code == 1 and "no manifest.json; pass folders written by mathcorpus export --format megatron" \
                                  in res.output
    res = run_cli(["export", "blend", str(loader_exports["megatron"])])
    words = res.output.split()
    assert res.exit_code == 0 and sum(float(w) for w in words[0::2]) == pytest.approx(1.0)
    assert all(Path(p + ".bin").exists() and Path(p + ".idx").exists() for p in words[1::2])
