"""``mathcorpus export --sft``: chat conversations to packed token rows with an assistant-only loss mask.

A record is a conversation: a ``messages`` list of ``{role, content}`` turns, or a
prompt/response pair (``--prompt-field question --response-field answer``; a dotted name
such as ``metadata.problem`` reads a key of a JSON or struct column, which is where
``synth run --task solve`` keeps the problem: ``--prompt-field metadata.problem
--response-field metadata.solution``). It is rendered with a chat template (the bundled
Qwen2.5 ChatML by default, a ``.j2``/``.jinja`` file, a ``tokenizer_config.json``, or
``tokenizer`` for the tokenizer's own ``chat_template``) and tokenized with the full
tokenizer, so the template's control tokens (``<|im_start|>``...) are single ids.

**Loss mask.** A token is trained when it overlaps an assistant turn's span: the text
the template adds for that turn after the generation prompt, i.e. the content and the turn
end (``<|im_end|>\\n`` for ChatML). Spans are found by rendering the conversation up to each
assistant turn with and without the generation prompt; a template whose renderings are not
prefixes of each other is refused.

**Packing.** Conversations are shuffled (seeded, by id hash), then packed into ``seq_len``
rows without splitting one: a conversation that does not fit in the rest of a row starts the
next row and the gap is padding. One longer than ``seq_len`` is truncated to ``seq_len``
tokens (``--too-long truncate``, the default; removed when nothing trained is left) or
removed (``--too-long remove``); both are counted. Formats: Parquet (``input_ids``,
``loss_mask``, ``doc_lengths``) and numpy ``--packed`` (``NAME.mask.bin`` beside the tokens).
The manifest's ``sft`` section records the template, its hash and the trained-token count.

Runs in one process and streams: tokens and masks go to ``OUTPUT/_work`` files, memory
holds a few numbers per conversation. Removed records are written with their reason to
``OUTPUT/_removed/sft-removed.parquet``; input = kept + removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpus import __version__
from corpus import fs as cfs
from corpus.errors import ConfigError, InputError
from corpus.export import mix as mixing
from corpus.export.tokenize import BUNDLED_DIR, LoadedTokenizer
from corpus.export.writers import choose_dtype, make_writer
from corpus.shards import atomic_write_json, iter_batches, list_input_files

ROLES = ("system", "user", "assistant", "tool")
TOO_LONG = ("truncate", "remove")
REMOVED_FILE = "sft-removed.parquet"
CHUNK_ROWS = 2048


# ----------------------------------------------------------------------------- templates
class ChatTemplate:
    """A Jinja chat template (rendered in a sandbox, as transformers does) and where it came from."""

    def __init__(self, source: str, name: str, text: str) -> None:
        from jinja2.exceptions import TemplateError
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message: str) -> None:
            raise TemplateError(message)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = raise_exception
        try:
            self.template = env.from_string(text)
        except TemplateError as exc:
            raise ConfigError(f"{source}: not a valid Jinja chat template ({exc})") from exc
        self.source, self.name, self.text = source, name, text
        self.sha256 = hashlib.sha256(text.encode("utf-8")).hexdigest()

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = False) -> str:
        from jinja2.exceptions import TemplateError

        try:
            return self.template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                        bos_token="", eos_token="")
        except (TemplateError, TypeError, KeyError, IndexError) as exc:
            raise _RecordError("template_error", str(exc)) from exc

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "sha256": self.sha256}


class _RecordError(Exception):
    """One record cannot be exported: removed with ``reason``."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(detail or reason)
        self.reason = reason


def load_template(spec: str, tok: LoadedTokenizer) -> ChatTemplate:
    """``spec``: a bundled name, ``tokenizer`` (its own chat_template), a .j2/.jinja file or a tokenizer_config.json."""
    if spec == "tokenizer":
        folder = Path(tok.ref.path).parent
        for cand in ("chat_template.jinja", "chat_template.j2"):
            if (folder / cand).is_file():
                return ChatTemplate(str(folder / cand), f"{tok.ref.name}:{cand}", (folder / cand).read_text("utf-8"))
        cfg = folder / "tokenizer_config.json"
        if cfg.is_file():
            t = json.loads(cfg.read_text("utf-8")).get("chat_template")
            if isinstance(t, list):  # named templates: take the default one
                t = next((x.get("template") for x in t if x.get("name") == "default"), None)
            if isinstance(t, str):
                return ChatTemplate(str(cfg), f"{tok.ref.name}:tokenizer_config", t)
        raise ConfigError(f"--chat-template tokenizer: {tok.ref.name} has no chat_template (looked for "
                          f"chat_template.jinja and tokenizer_config.json in {folder}); pass --chat-template qwen2.5 "
                          "or a .jinja file")
    p = Path(spec)
    if p.is_file():
        if p.suffix == ".json":
            t = json.loads(p.read_text("utf-8")).get("chat_template")
            if not isinstance(t, str):
                raise ConfigError(f"{p}: no 'chat_template' string in it; pass a .jinja file or a bundled name")
            return ChatTemplate(str(p), p.name, t)
        return ChatTemplate(str(p), p.name, p.read_text("utf-8"))
    bundled = BUNDLED_DIR / spec / "chat_template.j2"
    if bundled.is_file():
        return ChatTemplate(f"bundled:{spec}", f"{spec}-chatml", bundled.read_text("utf-8"))
    names = sorted(d.name for d in BUNDLED_DIR.iterdir() if (d / "chat_template.j2").is_file())
    raise ConfigError(f"--chat-template {spec}: not a file and not a bundled template ({', '.join(names)}); pass "
                      "a .jinja file, a tokenizer_config.json, 'tokenizer' or a bundled name")


# ----------------------------------------------------------------------------- records
def _field(row: dict[str, Any], name: str) -> Any:
    """Value of ``name`` in ``row``; ``a.b`` descends into a JSON-string or struct column ``a``."""
    head, _, rest = name.partition(".")
    value = row.get(head)
    for key in rest.split(".") if rest else []:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                return None
        value = value.get(key) if isinstance(value, dict) else None
    return value


def conversation(row: dict[str, Any], cfg: Any) -> list[dict[str, str]]:
    """The chat turns of one record (system prompt first when ``--system-prompt`` is given)."""
    if cfg.prompt_field:
        prompt, response = _field(row, cfg.prompt_field), _field(row, cfg.response_field)
        if not isinstance(prompt, str) or not prompt.strip():
            raise _RecordError("missing_prompt")
        if not isinstance(response, str) or not response.strip():
            raise _RecordError("missing_response")
        msgs = [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]
    else:
        raw = _field(row, cfg.messages_field)
        if isinstance(raw, str):
            try:
                raw = json.loads(raw)
            except ValueError as exc:
                raise _RecordError("bad_messages", "messages is a string but not JSON") from exc
        if not isinstance(raw, list) or not raw:
            raise _RecordError("missing_messages")
        msgs = []
        for m in raw:
            if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
                raise _RecordError("bad_messages", "each turn needs a role (system/user/assistant/tool) and a "
                                                   "string content")
            msgs.append({"role": m["role"], "content": m["content"]})
    if cfg.system_prompt and msgs[0]["role"] != "system":
        msgs.insert(0, {"role": "system", "content": cfg.system_prompt})
    if not any(m["role"] == "assistant" for m in msgs):
        raise _RecordError("no_assistant_turn")
    return msgs


def render_with_spans(template: ChatTemplate, msgs: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns."""
    full = template.render(msgs)
    spans = []
    for i, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        prefix = template.render(msgs[:i], add_generation_prompt=True) if i else ""
        upto = template.render(msgs[:i + 1])
        if not (upto.startswith(prefix) and full.startswith(upto)):
            raise ConfigError(f"chat template {template.source}: rendering is not prefix-stable (the conversation "
                              "up to a turn is not a prefix of the whole), so assistant spans cannot be found; "
                              "use a ChatML-style template")
        spans.append((len(prefix), len(upto)))
    return full, spans


def encode_masked(tok: LoadedTokenizer, texts: list[str], spans: list[list[tuple[int, int]]]
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Token ids (control tokens as single ids) and the 0/1 mask of tokens that overlap a span."""
    out = []
    for enc, sp in zip(tok.hf.encode_batch(texts, add_special_tokens=False), spans):
        ids = np.asarray(enc.ids, dtype=np.uint32)
        offs = np.asarray(enc.offsets, dtype=np.int64).reshape(-1, 2)
        mask = np.zeros(ids.size, dtype=np.uint8)
        for a, b in sp:  # overlap: a token that merges the prompt's last space with the answer is trained
            mask[(offs[:, 1] > a) & (offs[:, 0] < b)] = 1
        out.append((ids, mask))
    return out


# ----------------------------------------------------------------------------- export
def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _settings(cfg: Any, template: ChatTemplate, tok: LoadedTokenizer) -> dict[str, Any]:
    return {"format": cfg.format, "seq_len": cfg.seq_len, "seed": cfg.seed, "tokenizer": tok.ref.sha256,
            "template": template.sha256, "fields": [cfg.messages_field, cfg.prompt_field, cfg.response_field],
            "system_prompt": cfg.system_prompt, "too_long": cfg.too_long, "shard_tokens": cfg.shard_tokens,
            "dtype": cfg.dtype, "pad_id": cfg.pad_id}


def export_sft(cfg: Any, tok: LoadedTokenizer, inputs: list[str], output: str, *, overwrite: bool = False,
               batch_rows: int = 8192) -> dict[str, Any]:
    """Run the SFT export (see module doc); returns the run summary (the manifest is in OUTPUT)."""
    template = load_template(cfg.chat_template, tok)
    files = list_input_files(inputs)
    settings = _settings(cfg, template, tok)
    mpath = cfs.join(output, "manifest.json")
    if cfs.exists(mpath):
        old = cfs.read_json(mpath)
        if old.get("sft", {}).get("settings") == settings and old.get("inputs") == files and not overwrite:
            _log(f"export --sft: {output} is already complete with these settings; nothing to do")
            return {**old["sft"]["summary"], "skipped": True}
        if not overwrite:
            raise ConfigError(f"{output} holds an export made with other settings or inputs; pass --overwrite to "
                              "replace it, or choose another --output")
    if overwrite and cfs.isdir(output):
        cfs.rmtree(output)
    elif not cfs.is_empty_dir(output) and not cfs.exists(mpath):
        # an interrupted run of ours (a _work folder) is redone; anything else is not ours to delete
        names = set(cfs.listdir(output))
        if not names <= {"_work", "_removed"} and not any(n.startswith("tokens-") for n in names):
            raise ConfigError(f"{output} is not empty and holds no export; pass --overwrite or another --output")
        cfs.rmtree(output)
    # one process reads its own work files back: for an output on object storage they stay on local disk
    work = tempfile.mkdtemp(prefix="mathcorpus-sft-") if cfs.is_remote(output) else os.path.join(output, "_work")
    os.makedirs(work, exist_ok=True)
    L = cfg.seq_len
    dtype = choose_dtype(cfg.format, tok.vocab_size, cfg.dtype, tokenizer=f"tokenizer {tok.ref.name}")
    pad = int(cfg.pad_id if cfg.pad_id is not None else tok.eos_id)

    # 1. render, tokenize, mask: stream into work files
    tok_path, mask_path = os.path.join(work, "tokens.bin"), os.path.join(work, "mask.bin")
    lengths: list[int] = []
    trained: list[int] = []
    truncated: list[bool] = []
    ids: list[str] = []
    input_index: list[int] = []
    removed_rows: list[dict[str, Any]] = []
    reasons: Counter = Counter()
    docs_in = 0
    t0 = time.time()
    with open(tok_path, "wb") as tfh, open(mask_path, "wb") as mfh:
        for path in files:
            for batch in iter_batches(path, batch_rows=batch_rows, required=()):
                names = batch.schema.names
                for fname in ([cfg.prompt_field, cfg.response_field] if cfg.prompt_field else [cfg.messages_field]):
                    if fname.split(".")[0] not in names:
                        raise InputError(f"{path}: no column '{fname.split('.')[0]}' for --sft (columns: "
                                         f"{', '.join(names)}); pass --messages-field, or --prompt-field and "
                                         "--response-field naming your columns")
                rows = batch.to_pylist()
                texts, spans, meta = [], [], []
                for row in rows:
                    idx = docs_in
                    docs_in += 1
                    rid = str(row.get("id", idx))
                    try:
                        text, sp = render_with_spans(template, conversation(row, cfg))
                    except _RecordError as exc:
                        reasons[exc.reason] += 1
                        removed_rows.append({"id": rid, "input_index": idx, "file": path, "reason": exc.reason})
                        continue
                    texts.append(text)
                    spans.append(sp)
                    meta.append((rid, idx))
                for (rid, idx), (tid, mask) in zip(meta, encode_masked(tok, texts, spans)):
                    cut = False
                    if tid.size > L:
                        if cfg.too_long == "remove":
                            reasons["too_long"] += 1
                            removed_rows.append({"id": rid, "input_index": idx, "file": path, "reason": "too_long"})
                            continue
                        tid, mask, cut = tid[:L], mask[:L], True
                        if not mask.any():
                            reasons["too_long_nothing_trained"] += 1
                            removed_rows.append({"id": rid, "input_index": idx, "file": path,
                                                 "reason": "too_long_nothing_trained"})
                            continue
                    tfh.write(tid.astype("<u4").tobytes())
                    mfh.write(mask.tobytes())
                    lengths.append(int(tid.size))
                    trained.append(int(mask.sum()))
                    truncated.append(cut)
                    ids.append(rid)
                    input_index.append(idx)
            _log(f"export --sft: {docs_in:,} records read, {len(lengths):,} kept ({time.time() - t0:.1f}s)")
    if not lengths:
        raise InputError(f"nothing to export: none of the {docs_in} records gave a conversation "
                         f"(removed: {dict(reasons) or 'none'})")
    if removed_rows:
        with cfs.AtomicWriter(cfs.join(output, "_removed", REMOVED_FILE)) as w:
            pq.write_table(pa.Table.from_pylist(removed_rows), w.file)

    # 2. shuffle and pack whole conversations
    n_docs = len(lengths)
    lens = np.asarray(lengths, dtype=np.int64)
    hashes = mixing.id_hashes(ids)
    order = mixing.shuffle_entries(np.arange(n_docs, dtype=np.uint64), np.zeros(n_docs, np.uint32), hashes, cfg.seed)
    out_len = lens[order]
    pos, total = mixing.layout(out_len, L, True, False)
    pos = pos.astype(np.int64)
    starts = mixing.cut_shards(pos.astype(np.uint64), total, cfg.shard_tokens, L, True).astype(np.int64)
    src_start = np.cumsum(lens) - lens

    # 3. write shards
    all_tokens = np.memmap(tok_path, dtype="<u4", mode="r")
    all_mask = np.memmap(mask_path, dtype=np.uint8, mode="r")
    meta_np = {"format": "mathcorpus-numpy", "seq_len": L, "packed": True, "split": False, "pad_id": pad,
               "eos_id": tok.eos_id, "vocab_size": tok.vocab_size, "tokenizer": tok.ref.name, "sft": True,
               "mathcorpus_version": __version__}
    shards = []
    bounds = np.r_[starts, total]
    ends = pos + out_len
    for s in range(starts.size):
        lo, hi = int(bounds[s]), int(bounds[s + 1])
        w = make_writer(cfg.format, output, s, dtype, tokenizer_name=tok.ref.name, seq_len=L, numpy_meta=meta_np,
                        loss_mask=True)
        try:
            for c_lo in range(lo, hi, CHUNK_ROWS * L):
                c_hi = min(hi, c_lo + CHUNK_ROWS * L)
                i = int(np.searchsorted(ends, c_lo, side="right"))
                j = int(np.searchsorted(pos, c_hi, side="left"))
                d = order[i:j]
                n = out_len[i:j]
                dest = pos[i:j] - c_lo
                step = np.arange(int(n.sum()), dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
                src = np.repeat(src_start[d], n) + step
                buf = np.full(c_hi - c_lo, pad, dtype=np.int64)
                mbuf = np.zeros(c_hi - c_lo, dtype=np.uint8)
                at = np.repeat(dest, n) + step
                buf[at] = all_tokens[src]
                mbuf[at] = all_mask[src]
                w.add_rows(buf.reshape(-1, L), dest, n, mbuf.reshape(-1, L))
            info = w.close()
        except BaseException:
            w.abort()
            raise
        info["index"] = s
        shards.append(info)
    del all_tokens, all_mask

    # 4. documents.parquet, manifest
    shard_of = np.searchsorted(starts, pos, side="right") - 1
    doc_table = pa.table({
        "id": pa.array([ids[k] for k in order.tolist()], pa.string()),
        "input_index": pa.array(np.asarray(input_index, np.uint64)[order]),
        "tokens": pa.array(out_len), "trained_tokens": pa.array(np.asarray(trained, np.int64)[order]),
        "truncated": pa.array(np.asarray(truncated, bool)[order]),
        "shard": pa.array(shard_of.astype(np.int32)), "offset": pa.array(pos - starts[shard_of]),
    })
    with cfs.AtomicWriter(cfs.join(output, "documents.parquet")) as w:  # .tmp + rename, or one upload
        pq.write_table(doc_table, w.file, compression="zstd")
    tokens_out = int(lens.sum())
    trained_total = int(np.sum(trained))
    flat = sum(int(s["flat_tokens"]) for s in shards)
    removed_total = sum(reasons.values())
    summary = {"stage": "export", "docs_in": docs_in, "kept": n_docs, "removed": removed_total,
               "removed_by_reason": dict(sorted(reasons.items())), "bad_files": [], "output": output}
    sft = {"template": template.describe(), "conversations": n_docs, "trained_tokens": trained_total,
           "truncated": int(np.sum(truncated)), "removed": dict(sorted(reasons.items())),
           "too_long": cfg.too_long, "fields": {"messages": None if cfg.prompt_field else cfg.messages_field,
                                                "prompt": cfg.prompt_field, "response": cfg.response_field},
           "system_prompt": cfg.system_prompt, "loss_mask": "1 on tokens that start inside an assistant turn "
                                                            "(content and turn end)",
           "settings": settings, "summary": summary}
    tok_info = tok.describe() | {"engine": "hf", "engine_reason": "sft: chat template control tokens",
                                 "identity_check": None, "special_tokens_in_text": "control tokens"}
    manifest = {
        "mathcorpus_version": __version__, "format": cfg.format, "tokens": tokens_out, "documents": n_docs,
        "dtype": dtype, "seq_len": L, "packed": True, "split": False, "pad_id": pad, "seed": cfg.seed,
        "mix": {}, "mix_given": {}, "tokenizer": tok_info, "inputs": files, "bad_files": [],
        "removed": dict(sorted(reasons.items())), "trained_tokens": trained_total, "sft": sft,
        "output": {"documents": n_docs, "tokens": tokens_out, "flat_tokens": flat, "padding_tokens": flat - tokens_out,
                   "sequences": sum(int(s["sequences"]) for s in shards), "shards": len(shards),
                   "trained_tokens": trained_total},
        "shards": [{"index": s["index"], "files": s["files"], "tokens": s["tokens"], "document_pieces": s["documents"],
                    "sequences": s["sequences"], "flat_tokens": int(s["flat_tokens"])} for s in shards],
        "documents_file": "documents.parquet",
        "document_boundaries": ("doc_lengths lists the conversations in each row (never split); loss_mask marks "
                                "assistant tokens" if cfg.format == "parquet" else
                                "NAME.docs.npy holds [start, end) of each conversation; NAME.mask.bin the uint8 "
                                "loss mask"),
    }
    atomic_write_json(mpath, manifest)
    shutil.rmtree(work, ignore_errors=True)
    return summary
