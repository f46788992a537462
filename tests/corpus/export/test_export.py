"""``mathcorpus export`` end to end: round trips for every format, counts, mix, determinism, errors."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from corpus.export.stage import ExportConfig, ExportStage
from corpus.export.tokenize import LoadedTokenizer, decode
from corpus.export.writers import (
    DatatroveReader,
    ExportReader,
    MegatronReader,
    NumpyReader,
    ParquetTokenReader,
    read_megatron_index,
)
from corpus.registry import get_stage_class
from corpus.runner import RunOptions, run_stage
from tests.conftest import write_jsonl
from tests.corpus.export.conftest import input_rows, load_real_docs, nfc, run_cli

MIX = "web=1.5,book=0.5,code=2.0"
WEIGHTS = {"web": 1.5, "book": 0.5, "code": 2.0, "synth": 1.0}


def export(inp: Path, out: Path, *args: str) -> dict[str, Any]:
    res = run_cli(["export", str(inp), "-o", str(out), *args])
    assert res.exit_code == 0, res.output
    return json.loads((out / "manifest.json").read_text())


def format_level_pieces(out: Path, m: dict[str, Any]) -> list[np.ndarray]:
    """Document pieces read with each format's own reader (no documents.parquet)."""
    pieces: list[np.ndarray] = []
    for sh in m["shards"]:
        first = str(out / sh["files"][0])
        if m["format"] == "megatron":
            pieces += list(MegatronReader(first[:-4]).documents())
        elif m["format"] == "nanotron":
            pieces += list(DatatroveReader(first).documents())
        elif m["format"] == "numpy":
            pieces += list(NumpyReader(first).documents())
        else:
            pieces += list(ParquetTokenReader(first).documents())
    return pieces


CASES = [
    ("megatron", []),
    ("nanotron", []),
    ("numpy", []),
    ("numpy", ["--packed"]),
    ("parquet", []),
    ("parquet", ["--no-split"]),
]


@pytest.mark.parametrize("fmt,extra", CASES, ids=[f + "".join(e) for f, e in CASES])
def test_round_trip_every_format(tmp_path: Path, export_input: Path, qwen: LoadedTokenizer, fmt: str,
                                 extra: list[str]) -> None:
    out = tmp_path / "out"
    m = export(export_input, out, "--format", fmt, "--mix", MIX, "--seed", "5", "--seq-len", "256",
               "--shard-tokens", "20000", *extra)
    rows = input_rows(export_input)
    assert m["format"] == fmt and len(m["shards"]) > 1 and m["tokenizer"]["engine"] == "tiktoken"
    reader = ExportReader(str(out))
    seen: Counter = Counter()
    order: list[tuple[int, int]] = []
    docs: list[np.ndarray] = []
    for row, ids in reader.documents():
        # EOS ends every document and appears nowhere else
        assert int(ids[-1]) == qwen.eos_id and not (ids[:-1] == qwen.eos_id).any()
        src = rows[row["input_index"]]
        assert (row["id"], row["source"]) == (src["id"], src["source"])
        assert decode(qwen, ids[:-1]) == nfc(src["text"])
        seen[row["input_index"]] += 1
        order.append((row["input_index"], row["copy"]))
        docs.append(ids)
    # undoing the recorded shuffle gives the input order back
    assert sorted(order) != order
    by_index = sorted(set(i for i, _ in order))
    assert [rows[i]["id"] for i in by_index] == [r["id"] for i, r in enumerate(rows) if i in seen]
    # every document is there as often as its weight says (fractional weights: 0 or 1 extra copy)
    for i, r in enumerate(rows):
        if r["text"] == "":
            assert seen[i] == 0
            continue
        w = WEIGHTS[r["source"]]
        assert int(w) <= seen[i] <= int(w) + (1 if w % 1 else 0), (r["id"], seen[i])
    # the format's own reader sees the same tokens, in the same order, with the same boundaries
    pieces = format_level_pieces(out, m)
    assert np.array_equal(np.concatenate(pieces), np.concatenate(docs))
    if not m["packed"]:
        assert [p.size for p in pieces] == [d.size for d in docs]
    else:
        assert all(p.size <= 256 for p in pieces)
        assert m["output"]["sequences"] * 256 == m["output"]["flat_tokens"]


def test_manifest_token_counts_are_exact(tmp_path: Path, export_input: Path, qwen: LoadedTokenizer) -> None:
    out = tmp_path / "out"
    m = export(export_input, out, "--format", "megatron", "--mix", MIX, "--seed", "1")
    rows = input_rows(export_input)
    before: dict[str, Counter] = {}
    ntok = {}
    for i, r in enumerate(rows):
        if not r["text"]:
            continue
        n = len(qwen.text.encode(r["text"], add_special_tokens=False).ids) + 1  # + EOS
        ntok[i] = n
        c = before.setdefault(r["source"], Counter())
        c["documents"] += 1
        c["tokens"] += n
    for name, c in before.items():
        assert m["sources"][name]["before"]["documents"] == c["documents"]
        assert m["sources"][name]["before"]["tokens"] == c["tokens"]
        assert m["sources"][name]["weight"] == WEIGHTS[name]
    table = ExportReader(str(out)).document_table().to_pylist()
    after: dict[str, Counter] = {}
    for row in table:
        assert row["tokens"] == ntok[row["input_index"]]
        a = after.setdefault(row["source"], Counter())
        a["documents"] += 1
        a["tokens"] += row["tokens"]
    for name, a in after.items():
        assert m["sources"][name]["after"] == {"documents": a["documents"], "tokens": a["tokens"],
                                               "sequences": round(a["tokens"] / 4096, 3)}
    total = sum(a["tokens"] for a in after.values())
    assert m["output"]["tokens"] == total == sum(s["tokens"] for s in m["shards"])
    idx_total = sum(int(read_megatron_index(str(out / s["files"][1])).sequence_lengths.sum()) for s in m["shards"])
    assert idx_total == total
    assert m["removed"] == {"empty_text": 1}
    assert m["tokenizer"]["sha256"] == qwen.ref.sha256 and m["tokenizer"]["vocab_size"] == 151665
    assert m["tokenizer"]["eos_id"] == 151643 and m["seed"] == 1 and m["dtype"] == "int32"
    assert m["mix"] == WEIGHTS and m["mix_given"] == {"web": 1.5, "book": 0.5, "code": 2.0}
    assert m["inputs"] == [str(p) for p in sorted(export_input.iterdir())]
    assert m["mathcorpus_version"] and m["seq_len"] == 4096
    assert not (out / "_work").exists()


def test_mix_ratios_within_one_percent_on_10k_documents(tmp_path: Path) -> None:
    docs = load_real_docs(per_file=2500, max_chars=1500)
    names = ["web", "book", "code", "synth"]
    for i, d in enumerate(docs):
        d["source"] = names[i % 4]
        d["id"] = f"{d['id']}#{i}"
    docs = docs[:10_000]
    assert len(docs) == 10_000
    inp = tmp_path / "in"
    for k in range(2):
        write_jsonl(inp / f"p{k}.jsonl", docs[k::2])
    target = {"web": 1.0, "book": 2.0, "code": 0.4, "synth": 1.5}
    m = export(inp, tmp_path / "out", "--format", "numpy", "--mix",
               ",".join(f"{k}={v}" for k, v in target.items()), "--seed", "11")
    for name, w in target.items():
        s = m["sources"][name]
        ratio = s["after"]["tokens"] / s["before"]["tokens"]
        assert abs(ratio - w) <= 0.01 * w, (name, ratio)
        doc_ratio = s["after"]["documents"] / s["before"]["documents"]
        assert abs(doc_ratio - w) <= 0.05 * w, (name, doc_ratio)


def _output_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.iterdir()) if p.is_file()}


def test_same_seed_is_byte_identical_with_1_and_4_workers(tmp_path: Path, export_input: Path) -> None:
    args = ["--format", "parquet", "--mix", MIX, "--seed", "9", "--seq-len", "128", "--shard-tokens", "15000"]
    export(export_input, tmp_path / "w1", *args, "--workers", "1")
    export(export_input, tmp_path / "w4", *args, "--workers", "4")
    one, four = _output_bytes(tmp_path / "w1"), _output_bytes(tmp_path / "w4")
    assert set(one) == set(four) and len(one) > 3
    for name in one:
        assert one[name] == four[name], name
    export(export_input, tmp_path / "s2", *args[:-4], "--seed", "10", *args[-4:])
    other = _output_bytes(tmp_path / "s2")
    assert other["documents.parquet"] != one["documents.parquet"]


def test_fewer_tasks_give_the_same_bytes(tmp_path: Path, export_input: Path) -> None:
    args = ["--format", "megatron", "--seed", "2", "--shard-tokens", "30000"]
    export(export_input, tmp_path / "t4", *args)
    export(export_input, tmp_path / "t1", *args, "--tasks", "1")
    assert _output_bytes(tmp_path / "t4") == _output_bytes(tmp_path / "t1")


def test_missing_tokenizer_fails_before_writing(tmp_path: Path, export_input: Path) -> None:
    missing = tmp_path / "no" / "tokenizer.json"
    res = run_cli(["export", str(export_input), "-o", str(tmp_path / "out"), "--format", "megatron",
                   "--tokenizer", str(missing)])
    assert res.exit_code == 2
    assert res.output.strip() == (
        f"Error: tokenizer '{missing}' not found: it is not a tokenizer.json file, a folder holding tokenizer.json, "
        "or a bundled name (qwen2.5). Pass --tokenizer with the path to a tokenizer.json (or its folder); download "
        "hub tokenizers first, e.g. huggingface-cli download Qwen/Qwen2.5-Math-7B tokenizer.json")
    assert not (tmp_path / "out").exists()


def test_vocab_dtype_mismatch_fails_before_writing(tmp_path: Path, export_input: Path) -> None:
    res = run_cli(["export", str(export_input), "-o", str(tmp_path / "out"), "--format", "nanotron",
                   "--dtype", "uint16"])
    assert res.exit_code == 2
    assert res.output.strip() == ("Error: vocab/dtype mismatch: --dtype uint16 holds ids up to 65535 but tokenizer "
                                  "qwen2.5 has 151,665 ids (up to 151664); use --dtype uint32 or leave --dtype auto")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args,message", [
    (["--format", "megatron", "--no-split"],
     "Error: --no-split applies to packed formats only (parquet, numpy --packed); megatron stores whole documents"),
    (["--format", "nanotron", "--packed"],
     "Error: --packed applies to --format numpy only (parquet is always packed, nanotron stores whole documents)"),
    ([], "Error: export needs --format: one of megatron, nanotron, numpy, parquet (e.g. --format megatron)"),
    (["--format", "numpy", "--mix", "web=-1"], "Error: --mix web=-1: weights must be numbers >= 0 (e.g. "
                                               "web=1.0,book=2.0)"),
])
def test_option_errors(tmp_path: Path, export_input: Path, args: list[str], message: str) -> None:
    res = run_cli(["export", str(export_input), "-o", str(tmp_path / "out"), *args])
    assert res.exit_code == 2 and res.output.strip() == message


def test_unknown_mix_source_is_named(tmp_path: Path, export_input: Path) -> None:
    res = run_cli(["export", str(export_input), "-o", str(tmp_path / "out"), "--format", "numpy",
                   "--mix", "bok=2"])
    assert res.exit_code == 2
    assert res.output.strip() == ("Error: --mix names source 'bok' but no input document has that source; did you "
                                  "mean 'book'? (sources found: book, code, synth, web); fix the name or drop it "
                                  "from --mix")


def test_small_vocab_uses_uint16_and_its_own_eos(tmp_path: Path, export_input: Path, small_tokenizer: Path) -> None:
    out = tmp_path / "out"
    m = export(export_input, out, "--format", "megatron", "--tokenizer", str(small_tokenizer))
    assert m["dtype"] == "uint16" and m["tokenizer"]["vocab_size"] == 700 and m["tokenizer"]["eos_id"] == 0
    assert read_megatron_index(str(out / m["shards"][0]["files"][1])).dtype == np.uint16
    assert (out / m["shards"][0]["files"][1]).read_bytes()[17] == 8  # Megatron's uint16 code


def test_json_output_and_stage_registration(tmp_path: Path, export_input: Path) -> None:
    res = run_cli(["export", str(export_input), "-o", str(tmp_path / "out"), "--format", "numpy", "--json"])
    assert res.exit_code == 0
    data = json.loads(res.output)
    assert data["summary"]["export"]["format"] == "numpy"
    assert data["summary"]["docs_in"] == data["summary"]["kept"] + data["summary"]["removed"]
    assert data["manifest"]["output"]["documents"] == data["summary"]["kept"]
    assert get_stage_class("export") is ExportStage


def test_stage_runs_from_python_and_is_skipped_when_complete(tmp_path: Path, export_input: Path) -> None:
    stage = ExportStage(ExportConfig.from_mapping({"format": "nanotron", "seed": 3}))
    s1 = run_stage(stage, [str(export_input)], str(tmp_path / "out"), RunOptions(workers=2))
    assert s1["export"]["format"] == "nanotron" and not s1.get("skipped")
    s2 = run_stage(ExportStage(ExportConfig.from_mapping({"format": "nanotron", "seed": 3})), [str(export_input)],
                   str(tmp_path / "out"), RunOptions(workers=2))
    assert s2["skipped"] is True


def test_killed_write_task_is_redone_on_rerun(tmp_path: Path, export_input: Path) -> None:
    out = tmp_path / "out"
    args = ["--format", "nanotron", "--seed", "4", "--shard-tokens", "20000", "--keep-work"]
    m = export(export_input, out, *args)
    before = _output_bytes(out)
    # as if the write task of rank 1 and the finalize step had been killed
    lost = [f for s in m["shards"] if s["index"] % 4 == 1 for f in s["files"]]
    assert lost
    for f in lost:
        (out / f).unlink()
    (out / "_logs" / "write" / "completions" / "00001").unlink()
    (out / "_run" / "summary.json").unlink()
    (out / "manifest.json").unlink()
    export(export_input, out, *args)
    assert _output_bytes(out) == before
