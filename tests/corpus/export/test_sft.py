"""``mathcorpus export --sft``: chat template, assistant-only loss mask, packing without splits, counts."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest

from corpus.export.loader import TokenDataset
from corpus.export.tokenize import LoadedTokenizer
from tests.conftest import write_jsonl
from tests.corpus.export.conftest import gsm8k_records, run_cli

SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."


def chatml(turns: list[tuple[str, str]]) -> str:
    return "".join(f"<|im_start|>{r}\n{c}<|im_end|>\n" for r, c in turns)


def sft_export(inp: Path, out: Path, *args: str) -> dict[str, Any]:
    res = run_cli(["export", str(inp), "-o", str(out), "--sft", "--engine", "hf", *args])
    assert res.exit_code == 0, res.output
    return json.loads((out / "manifest.json").read_text())


def conversations(out: Path, m: dict[str, Any]) -> list[tuple[dict[str, Any], np.ndarray, np.ndarray]]:
    """(documents.parquet row, tokens, loss mask) of every conversation, cut from the shards by doc_lengths."""
    docs = pq.read_table(out / "documents.parquet").to_pylist()
    pieces = []
    for sh in m["shards"]:
        path = out / sh["files"][0]
        if m["format"] == "parquet":
            t = pq.read_table(path).to_pydict()
            for ids, lens, mask in zip(t["input_ids"], t["doc_lengths"], t["loss_mask"]):
                a = 0
                for n in lens:
                    pieces.append((np.asarray(ids[a:a + n]), np.asarray(mask[a:a + n])))
                    a += n
        else:
            base = str(path)[:-4]
            toks = np.fromfile(path, m["dtype"])
            mask = np.fromfile(base + ".mask.bin", np.uint8)
            for a, b in np.load(base + ".docs.npy"):
                pieces.append((toks[a:b], mask[a:b]))
    assert len(pieces) == len(docs) == m["documents"]  # one piece per conversation: none was split
    return [(d, t, k) for d, (t, k) in zip(docs, pieces)]


@pytest.mark.parametrize("fmt", [["--format", "parquet"], ["--format", "numpy", "--packed"]])
def test_prompt_response_records_train_on_the_answer_only(tmp_path: Path, qwen: LoadedTokenizer,
                                                           fmt: list[str]) -> None:
    recs = gsm8k_records(40)
    write_jsonl(tmp_path / "in" / "gsm8k.jsonl", recs)
    m = sft_export(tmp_path / "in", tmp_path / "out", *fmt, "--seq-len", "512", "--prompt-field", "question",
                   "--response-field", "answer", "--shard-tokens", "4000")
    by_id = {r["id"]: r for r in recs}
    convs = conversations(tmp_path / "out", m)
    assert sorted(d["id"] for d, _, _ in convs) == sorted(by_id)
    assert [d["id"] for d, _, _ in convs] != [r["id"] for r in recs]  # shuffled
    for d, toks, mask in convs:
        r = by_id[d["id"]]
        text = qwen.hf.decode(toks.tolist(), skip_special_tokens=False)
        assert text == chatml([("system", SYSTEM), ("user", r["question"]), ("assistant", r["answer"])])
        assert qwen.hf.decode(toks[mask == 1].tolist(), skip_special_tokens=False) == r["answer"] + "<|im_end|>\n"
        assert d["trained_tokens"] == int(mask.sum()) and not d["truncated"]
    sft = m["sft"]
    assert sft["template"]["name"] == "qwen2.5-chatml" and len(sft["template"]["sha256"]) == 64
    assert sft["trained_tokens"] == m["trained_tokens"] == sum(int(k.sum()) for _, _, k in convs)
    assert sft["conversations"] == 40 and sft["truncated"] == 0 and m["packed"] and m["split"] is False
    assert len(m["shards"]) > 1 and m["tokenizer"]["sha256"]
    # the loader trains exactly these tokens (each trained token is one label)
    ds = TokenDataset(tmp_path / "out")
    assert sum(int(it["loss_mask"].sum()) for it in ds) == sft["trained_tokens"]


def test_messages_records_mask_every_assistant_turn(tmp_path: Path, qwen: LoadedTokenizer) -> None:
    recs = gsm8k_records(12, start=100)
    rows = []
    for i, r in enumerate(recs):
        msgs = [{"role": "user", "content": r["question"]}, {"role": "assistant", "content": "Let me think."},
                {"role": "user", "content": "Go on."}, {"role": "assistant", "content": r["answer"]}]
        if i % 2:
            msgs.insert(0, {"role": "system", "content": "Reason step by step."})
        rows.append({"id": r["id"], "messages": msgs})
    rows.append({"id": "no-assistant", "messages": [{"role": "user", "content": "hi"}]})
    rows.append({"id": "bad-role", "messages": [{"role": "robot", "content": "x"}]})
    rows.append({"id": "empty", "messages": []})
    write_jsonl(tmp_path / "in" / "chat.jsonl", rows)
    m = sft_export(tmp_path / "in", tmp_path / "out", "--format", "parquet", "--seq-len", "600",
                   "--system-prompt", "Be brief.")
    assert m["removed"] == {"bad_messages": 1, "missing_messages": 1, "no_assistant_turn": 1}
    removed = pq.read_table(tmp_path / "out" / "_removed" / "sft-removed.parquet").to_pylist()
    assert sorted((r["id"], r["reason"]) for r in removed) == [
        ("bad-role", "bad_messages"), ("empty", "missing_messages"), ("no-assistant", "no_assistant_turn")]
    by_id = {r["id"]: r for r in rows}
    convs = conversations(tmp_path / "out", m)
    assert len(convs) == 12
    for d, toks, mask in convs:
        msgs = by_id[d["id"]]["messages"]
        system = msgs[0]["content"] if msgs[0]["role"] == "system" else "Be brief."
        turns = [("system", system)] + [(t["role"], t["content"]) for t in msgs if t["role"] != "system"]
        assert qwen.hf.decode(toks.tolist(), skip_special_tokens=False) == chatml(turns)
        trained = qwen.hf.decode(toks[mask == 1].tolist(), skip_special_tokens=False)
        assert trained == "Let me think.<|im_end|>\n" + msgs[-1]["content"] + "<|im_end|>\n"


def test_synth_solve_output_and_too_long_conversations(tmp_path: Path, qwen: LoadedTokenizer) -> None:
    # the shape `synth run --task solve` writes: text = problem + solution, details in metadata JSON
    recs = gsm8k_records(30, start=200)
    rows = [{"id": f"{r['id']}/solve/0", "text": r["question"] + "\n\n" + r["answer"], "source": "synth",
             "metadata": json.dumps({"task": "solve", "problem": r["question"], "solution": r["answer"]})}
            for r in recs]
    rows.append({"id": "no-solution", "text": "x", "metadata": json.dumps({"problem": "p"})})
    write_jsonl(tmp_path / "in" / "synth-00000.jsonl", rows)
    lengths = [len(qwen.hf.encode(chatml([("system", SYSTEM), ("user", r["question"]), ("assistant", r["answer"])]),
                                  add_special_tokens=False).ids) for r in recs]
    limit = int(np.median(lengths))
    over = sum(n > limit for n in lengths)
    args = ["--format", "parquet", "--seq-len", str(limit), "--prompt-field", "metadata.problem",
            "--response-field", "metadata.solution"]
    m = sft_export(tmp_path / "in", tmp_path / "trunc", *args)
    assert m["sft"]["truncated"] + m["removed"].get("too_long_nothing_trained", 0) == over > 0
    assert m["removed"]["missing_response"] == 1
    assert m["documents"] + sum(m["removed"].values()) == 31  # input = kept + removed
    for d, toks, _ in conversations(tmp_path / "trunc", m):
        assert toks.size <= limit and d["truncated"] == (toks.size == limit and d["tokens"] == limit)
    m = sft_export(tmp_path / "in", tmp_path / "remove", *args, "--too-long", "remove")
    assert m["removed"] == {"missing_response": 1, "too_long": over} and m["sft"]["truncated"] == 0
    assert m["documents"] == 30 - over


def test_chat_template_choices(tmp_path: Path, qwen: LoadedTokenizer, small_tokenizer: Path) -> None:
    write_jsonl(tmp_path / "in" / "g.jsonl", gsm8k_records(5))
    tpl = tmp_path / "plain.jinja"
    tpl.write_text("{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}"
                   "{% if add_generation_prompt %}### assistant: {% endif %}")
    args = ["--format", "parquet", "--seq-len", "1024", "--prompt-field", "question", "--response-field", "answer"]
    m = sft_export(tmp_path / "in", tmp_path / "custom", *args, "--chat-template", str(tpl))
    assert m["sft"]["template"]["source"] == str(tpl)
    answers = {r["id"]: r["answer"] for r in gsm8k_records(5)}
    for d, toks, mask in conversations(tmp_path / "custom", m):
        text = qwen.hf.decode(toks[mask == 1].tolist(), skip_special_tokens=False)
        # the answer and the template's newline; its first token may carry the prompt's last space
        assert text.endswith(answers[d["id"]] + "\n") and not text[:-len(answers[d["id"]]) - 1].strip()
    # a tokenizer's own chat_template (tokenizer_config.json beside tokenizer.json)
    own = tmp_path / "tok"
    own.mkdir()
    shutil.copy(small_tokenizer, own / "tokenizer.json")
    (own / "tokenizer_config.json").write_text(json.dumps({"chat_template": tpl.read_text()}))
    m = sft_export(tmp_path / "in", tmp_path / "own", *args, "--tokenizer", str(own), "--chat-template", "tokenizer")
    assert m["sft"]["template"]["name"].endswith("tok:tokenizer_config")
    res = run_cli(["export", str(tmp_path / "in"), "-o", str(tmp_path / "x"), "--sft", *args, "--tokenizer",
                   str(small_tokenizer), "--chat-template", "tokenizer"])
    assert res.exit_code == 2 and "has no chat_template (looked for chat_template.jinja and " \
                                  "tokenizer_config.json in" in res.output


def test_errors_and_rerun(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "in" / "g.jsonl", gsm8k_records(6))
    base = ["export", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--sft", "--seq-len", "512"]
    res = run_cli([*base, "--format", "megatron"])
    assert res.exit_code == 2 and "--sft writes packed rows: use --format parquet or --format numpy --packed " \
                                  "(not megatron)" in res.output
    res = run_cli([*base, "--format", "parquet", "--prompt-field", "question"])
    assert res.exit_code == 2 and "--prompt-field and --response-field go together" in res.output
    res = run_cli([*base, "--format", "parquet"])
    assert res.exit_code == 1 and "g.jsonl: no column 'messages' for --sft (columns: id, question, answer); pass " \
                                  "--messages-field, or --prompt-field and --response-field" in res.output
    good = [*base, "--format", "parquet", "--prompt-field", "question", "--response-field", "answer"]
    assert run_cli(good).exit_code == 0
    first = (tmp_path / "out" / "manifest.json").read_text()
    res = run_cli(good)
    assert res.exit_code == 0 and (tmp_path / "out" / "manifest.json").read_text() == first
    res = run_cli([*good, "--seed", "9"])
    assert res.exit_code == 2 and "holds an export made with other settings or inputs; pass --overwrite" in res.output
    assert run_cli([*good, "--seed", "9", "--overwrite"]).exit_code == 0


def test_sft_in_a_pipeline_is_refused_not_silently_exported_as_text(tmp_path: Path) -> None:
    from corpus.errors import ConfigError
    from corpus.export.stage import ExportConfig, ExportStage
    from corpus.runner import run_stage

    write_jsonl(tmp_path / "in" / "g.jsonl", [{"id": r["id"], "text": r["question"], "question": r["question"],
                                              "answer": r["answer"]} for r in gsm8k_records(3)])
    cfg = ExportConfig(format="parquet", sft=True, prompt_field="question", response_field="answer", seq_len=256)
    with pytest.raises(ConfigError, match=r"sft: true runs from the command line only \(mathcorpus export --sft"):
        run_stage(ExportStage(cfg), [str(tmp_path / "in")], str(tmp_path / "out"))
    assert not (tmp_path / "out" / "manifest.json").exists()
