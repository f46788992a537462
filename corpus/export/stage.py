"""The export stage: tokenize per task, then a global merge that mixes, shuffles, packs and writes.

Runs on the ordinary runner (corpus/runner.py) in four steps, each resumable:

1. **map** (one task per input share): documents are tokenized (EOS appended) into
   ``OUTPUT/_work/tokens-RANK.bin`` with a small ``docs-RANK.arrow`` table (id, source,
   token count, id hash) and ``stats-RANK.json``. Empty texts are removed with reason
   ``empty_text``; every other document is "kept" (consumed), not copied (the stage sets
   ``writes_documents = False``).
2. **plan** (1 task): reads only the per-document arrays, applies the mix and the seeded
   global shuffle, lays documents out in one flat stream (packing for Parquet and
   ``numpy --packed``) and cuts it into shards. Writes ``OUTPUT/documents.parquet``: one row
   per output document in output order (id, source, input_index, copy, tokens, shard, offset)
   -- the recorded shuffle.
3. **write** (the same number of tasks as the map): task ``r`` writes shards ``r, r+T, ...``
   by gathering token ranges from the memory-mapped work files in bounded chunks. Output
   does not depend on the number of tasks or workers.
4. **finalize**: writes ``OUTPUT/manifest.json`` and removes ``_work/`` (``--keep-work`` keeps it).

Memory: the map holds one batch; plan holds a few 8-byte numbers per document; write holds
one chunk of tokens (a few million) at a time, whatever the input size.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from dataclasses import dataclass
from typing import Any, BinaryIO, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from corpus import __version__, schema
from corpus import fs as cfs
from corpus.config import StageConfig, closest, opt
from corpus.errors import ConfigError, FatalError, InputError
from corpus.export import mix as mixing
from corpus.export.tokenize import (
    DEFAULT_TOKENIZER,
    ENGINES,
    EngineChoice,
    LoadedTokenizer,
    choose_engine,
    encode_documents,
    load_tokenizer,
    make_engine,
    resolve_tokenizer,
)
from corpus.export.writers import DTYPES, FORMATS, choose_dtype, make_writer
from corpus.runner import BatchResult, Phase, RunContext, Stage, TaskContext
from corpus.shards import atomic_write_json, iter_batches

WORK_DIR = "_work"
MANIFEST = "manifest.json"
DOCUMENTS_FILE = "documents.parquet"
UNKNOWN_SOURCE = "unknown"
REMOVED_EMPTY = "empty_text"
# Tokens gathered per write step: bounds the write phase's memory (~16 bytes per token
# of index arrays plus the tokens themselves).
CHUNK_TOKENS = 4 << 20
DOCS_CHUNK = 1 << 20


@dataclass
class ExportConfig(StageConfig):
    """Options of ``mathcorpus export`` (the ``export`` section of a config file)."""

    section: ClassVar[str] = "export"

    format: str | None = opt(None, help="Shard format: megatron (.bin/.idx), nanotron (datatrove .ds/.ds.index), "
                                        "numpy (nanoGPT .bin + JSON sidecar) or parquet (input_ids rows).",
                             choices=FORMATS)
    tokenizer: str = opt(DEFAULT_TOKENIZER, help="tokenizer.json file, a folder holding one, or a bundled name "
                                                 "(qwen2.5, Apache-2.0).")
    seq_len: int = opt(4096, help="Training context. Packed formats (parquet, numpy --packed) write rows of this "
                                  "many tokens; megatron/nanotron record it in the manifest.")
    mix: dict[str, float] = opt(help="Weight per source, e.g. web=1.0,book=2.0,code=1.0,synth=1.5: whole repeats "
                                     "plus a deterministic token sample for the fraction; 0 drops a source. "
                                     "Sources not named keep weight 1.", factory=dict)
    seed: int = opt(0, help="Seed of the global shuffle and of the fractional mix samples.")
    packed: bool = opt(False, help="numpy only: write fixed seq-len rows instead of a flat document stream.")
    split: bool = opt(True, help="Packed formats: split documents across row ends (default); --no-split moves a "
                                 "document that does not fit to the next row and pads.")
    dtype: str = opt("auto", help="Token dtype; auto = uint16 when the vocab fits, else uint32 (int32 for "
                                  "megatron, parquet is always int32).", choices=DTYPES)
    engine: str = opt("auto", help="Tokenizer engine: auto = tiktoken when it reproduces HF tokenizers on the "
                                   "identity sample, else hf.", choices=ENGINES)
    eos: str | None = opt(None, help="End-of-document token appended to every document (default <|endoftext|> "
                                     "when the tokenizer has it).")
    pad_id: int | None = opt(None, help="Padding id for packed rows (default: the EOS id).")
    shard_tokens: int = opt(1_000_000_000, help="Roll over to a new output shard after about this many tokens.")
    identity_sample_docs: int = opt(512, help="Input documents (plus built-in probes) on which tiktoken must give "
                                              "the HF ids before it is used.")
    threads: int = opt(0, help="Tokenizer threads per task; 0 = 1 (processes scale better than tiktoken threads).")
    keep_work: bool = opt(False, help="Keep OUTPUT/_work (per-task token files) after a successful export.")
    sft: bool = opt(False, help="Export chat conversations for fine-tuning: chat template, loss mask on assistant "
                                "tokens only, conversations packed into seq-len rows without splitting one "
                                "(formats parquet and numpy --packed).")
    messages_field: str = opt("messages", help="--sft: column holding the chat turns (list of {role, content}).")
    prompt_field: str | None = opt(None, help="--sft: column with the user prompt, instead of messages; a dotted name "
                                              "reads a key of a JSON column (synth solve output: metadata.problem).")
    response_field: str | None = opt(None, help="--sft: column with the assistant response (synth solve output: "
                                                "metadata.solution).")
    system_prompt: str | None = opt(None, help="--sft: system turn put first in conversations that have none.")
    chat_template: str = opt("qwen2.5", help="--sft: a bundled template (qwen2.5 = Qwen2.5 ChatML), 'tokenizer' for "
                                             "the tokenizer's own chat_template, a .jinja file or a "
                                             "tokenizer_config.json.")
    too_long: str = opt("truncate", help="--sft: a conversation longer than --seq-len is truncated to it (removed "
                                         "when no assistant token is left) or removed; both are counted.",
                        choices=("truncate", "remove"))

    def validate(self) -> None:
        if self.format is None:
            raise ConfigError("export needs --format: one of megatron, nanotron, numpy, parquet "
                              "(e.g. --format megatron)")
        if self.seq_len < 1:
            raise ConfigError(f"--seq-len must be at least 1, got {self.seq_len}")
        if self.shard_tokens < 1:
            raise ConfigError(f"--shard-tokens must be at least 1, got {self.shard_tokens}")
        for k, v in self.mix.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v or v < 0 or v == float("inf"):
                raise ConfigError(f"--mix {k}={v}: weights must be numbers >= 0 (e.g. web=1.0,book=2.0)")
        packed_fmt = self.format == "parquet" or (self.format == "numpy" and self.packed)
        if self.packed and self.format != "numpy":
            raise ConfigError(f"--packed applies to --format numpy only (parquet is always packed, {self.format} "
                              "stores whole documents)")
        if not self.split and not packed_fmt:
            raise ConfigError("--no-split applies to packed formats only (parquet, numpy --packed); "
                              f"{self.format} stores whole documents")
        if self.pad_id is not None and self.pad_id < 0:
            raise ConfigError(f"--pad-id must be >= 0, got {self.pad_id}")
        if self.threads < 0 or self.identity_sample_docs < 0:
            raise ConfigError("--threads and --identity-sample-docs must be >= 0")
        if self.sft:
            if not self.packs:
                raise ConfigError(f"--sft writes packed rows: use --format parquet or --format numpy --packed "
                                  f"(not {self.format}{' without --packed' if self.format == 'numpy' else ''})")
            if self.mix:
                raise ConfigError("--mix does not apply to --sft (one conversation set); mix SFT exports at training "
                                  "time with TokenMixture")
            if bool(self.prompt_field) != bool(self.response_field):
                raise ConfigError("--prompt-field and --response-field go together (e.g. --prompt-field question "
                                  "--response-field answer)")
        elif self.prompt_field or self.response_field or self.system_prompt:
            raise ConfigError("--prompt-field, --response-field and --system-prompt apply to --sft only; add --sft")

    @property
    def packs(self) -> bool:
        return self.format == "parquet" or (self.format == "numpy" and self.packed)


def work_dir(output: str) -> str:
    return cfs.join(output, WORK_DIR)


class ExportStage(Stage):
    """Tokenized export (see module docstring)."""

    name = "export"
    Config = ExportConfig
    writes_documents = False
    prepare_reads_inputs = True  # the engine choice samples the input documents

    def __init__(self, config: ExportConfig) -> None:
        super().__init__(config)
        self.config: ExportConfig = config
        self.engine_choice: dict[str, Any] | None = None
        self._tok: LoadedTokenizer | None = None
        self._engine: Any = None
        self._state: dict[str, Any] = {}

    # -- driver side ---------------------------------------------------------------------
    def check(self) -> LoadedTokenizer:
        """Load the tokenizer and check the dtype: errors before anything is written."""
        cfg = self.config
        tok = load_tokenizer(resolve_tokenizer(cfg.tokenizer), cfg.eos)
        tok.text  # noqa: B018 - builds (and so validates) the HF tokenizer now, before any task starts
        choose_dtype(cfg.format or "", tok.vocab_size, cfg.dtype, tokenizer=f"tokenizer {tok.ref.name}")
        if cfg.pad_id is not None and cfg.pad_id >= tok.vocab_size:
            raise ConfigError(f"--pad-id {cfg.pad_id} is not an id of tokenizer {tok.ref.name} "
                              f"(vocab size {tok.vocab_size})")
        return tok

    def prepare(self, run: RunContext) -> None:
        if self.config.sft:  # the SFT export is its own one-process path (corpus/export/sft.py)
            raise ConfigError("export: sft: true runs from the command line only (mathcorpus export --sft ...); "
                              "run it as its own step after the pipeline")
        tok = self.check()  # cached: the CLI has usually loaded it already
        sample = _sample_texts(run.all_files(), self.config.identity_sample_docs, max_chars=1_000_000)
        self.engine_choice = _choice_dict(choose_engine(tok, self.config.engine, sample))

    def post_phases(self, run: RunContext) -> list[Phase]:
        return [Phase("plan", functools.partial(plan_phase, self.config), 1),
                Phase("write", functools.partial(write_phase, self.config), run.tasks)]

    def finalize(self, run: RunContext, summary: dict[str, Any]) -> None:
        manifest = finalize_export(self.config, run, summary)
        out = manifest["output"]
        summary["export"] = {"format": manifest["format"], "engine": manifest["tokenizer"]["engine"],
                             "documents": out["documents"], "tokens": out["tokens"], "shards": len(manifest["shards"]),
                             "manifest": os.path.join(run.output, MANIFEST)}

    # -- task side -----------------------------------------------------------------------
    def setup(self, task: TaskContext) -> None:
        cfg = self.config
        tok = load_tokenizer(resolve_tokenizer(cfg.tokenizer), cfg.eos)
        choice = self.engine_choice
        if choice is None:  # prepare() runs in the driver or as the stage's first job (corpus/runner.py)
            raise FatalError("export: no tokenizer engine was chosen; run the stage through run_stage")
        self._tok = tok
        self._engine = make_engine(tok, choice["engine"], cfg.threads or 1)
        work_dtype = np.uint16 if tok.vocab_size <= 1 << 16 else np.uint32
        wd = work_dir(task.run.output)
        cfs.makedirs(wd)
        tokens_path = cfs.join(wd, f"tokens-{task.rank:05d}.bin")
        docs_path = cfs.join(wd, f"docs-{task.rank:05d}.arrow")
        # .tmp + rename locally, one upload visible only when whole on object storage (corpus.fs)
        tokens_sink, docs_sink = cfs.AtomicWriter(tokens_path), cfs.AtomicWriter(docs_path)
        self._state = {
            "choice": choice, "work_dtype": work_dtype, "tokens_path": tokens_path, "docs_path": docs_path,
            "tokens_fh": tokens_sink.file, "tokens_sink": tokens_sink, "docs_sink": docs_sink,
            "docs_writer": ipc.new_file(docs_sink.file, DOCS_SCHEMA),
            "sources": {}, "tokens": 0, "docs": 0, "rows": 0,
        }

    def process_batch(self, batch: pa.RecordBatch, task: TaskContext) -> BatchResult:
        st = self._state
        text = batch.column(schema.TEXT)
        empty = pc.equal(pc.binary_length(text), 0)
        rows = np.arange(st["rows"], st["rows"] + batch.num_rows, dtype=np.uint64)
        st["rows"] += batch.num_rows
        removed = None
        if pc.any(empty).as_py():
            rem = batch.filter(empty)
            removed = rem.append_column(schema.REMOVAL_REASON, pa.array([REMOVED_EMPTY] * rem.num_rows, pa.string()))
            keep = pc.invert(empty)
            batch = batch.filter(keep)
            rows = rows[keep.to_numpy(zero_copy_only=False)]
        if batch.num_rows == 0:
            return BatchResult(kept=batch, removed=removed)
        assert self._tok is not None
        flat, lengths = encode_documents(self._engine, batch.column(schema.TEXT).to_pylist(), self._tok.eos_id,
                                         st["work_dtype"])
        _write_bytes(st["tokens_fh"], flat)
        ids = batch.column(schema.ID)
        sources = _sources(batch)
        st["docs_writer"].write_batch(pa.record_batch(
            [ids, sources, pa.array(lengths, pa.int64()), pa.array(mixing.id_hashes(ids.to_pylist()), pa.uint64()),
             pa.array(rows, pa.uint64())],
            schema=DOCS_SCHEMA))
        per = pa.table({"s": sources, "n": pa.array(lengths)}).group_by("s").aggregate([("n", "sum"), ("n", "count")])
        for s, n_sum, n_cnt in zip(per.column("s").to_pylist(), per.column("n_sum").to_pylist(),
                                   per.column("n_count").to_pylist()):
            d = st["sources"].setdefault(s, {"documents": 0, "tokens": 0})
            d["documents"] += n_cnt
            d["tokens"] += n_sum
        st["tokens"] += int(lengths.sum())
        st["docs"] += batch.num_rows
        task.counters["tokens"] += int(lengths.sum())
        return BatchResult(kept=batch, removed=removed)

    def finish_task(self, task: TaskContext) -> None:
        st = self._state
        st["docs_writer"].close()
        st["tokens_sink"].commit()
        st["docs_sink"].commit()
        assert self._tok is not None
        stats = {"rank": task.rank, "input_documents": st["rows"], "documents": st["docs"], "tokens": st["tokens"],
                 "sources": dict(sorted(st["sources"].items())), "work_dtype": np.dtype(st["work_dtype"]).name,
                 "tokenizer": self._tok.describe(), "engine": st["choice"]}
        # written last: its presence says the task's work files are complete
        atomic_write_json(cfs.join(work_dir(task.run.output), f"stats-{task.rank:05d}.json"), stats)
        task.extra["export"] = {"tokens": st["tokens"], "engine": st["choice"]["engine"]}

    def __getstate__(self) -> dict[str, Any]:
        # open files and the tokenizer stay in the process that made them
        d = dict(self.__dict__)
        d["_tok"] = None
        d["_engine"] = None
        d["_state"] = {}
        return d


DOCS_SCHEMA = pa.schema([pa.field("id", pa.string()), pa.field("source", pa.string()),
                         pa.field("tokens", pa.int64()), pa.field("hash", pa.uint64()),
                         pa.field("input_row", pa.uint64())])


def _choice_dict(c: EngineChoice) -> dict[str, Any]:
    return {"engine": c.engine, "reason": c.reason, "check": c.check}


def _write_bytes(fh: BinaryIO, arr: np.ndarray) -> None:
    try:
        fh.write(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<"), copy=False).data)
    except OSError as exc:
        raise FatalError(f"{getattr(fh, 'name', 'work file')}: write failed ({exc}); check free space") from exc


def _sources(batch: pa.RecordBatch) -> pa.Array:
    """The source column as strings, 'unknown' where missing or null."""
    if schema.SOURCE not in batch.schema.names:
        return pa.array([UNKNOWN_SOURCE] * batch.num_rows, pa.string())
    col = batch.column(schema.SOURCE)
    if not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    return pc.fill_null(col, UNKNOWN_SOURCE)


def _sample_texts(files: list[str], limit: int, max_chars: int = 2_000_000) -> list[str]:
    """Up to ``limit`` texts from the first batches of up to 8 input files spread over the list."""
    if limit <= 0 or not files:
        return []
    picks = sorted({files[i * (len(files) - 1) // 7] for i in range(8)}) if len(files) > 8 else list(files)
    per = max(1, limit // len(picks))
    out: list[str] = []
    chars = 0
    for f in picks:
        for batch in iter_batches(f, batch_rows=per, columns=[schema.ID, schema.TEXT]):
            for t in batch.column(schema.TEXT).to_pylist()[:per]:
                t = t[:50_000]
                out.append(t)
                chars += len(t)
            break
        if len(out) >= limit or chars >= max_chars:
            break
    return out[:limit]


# ----------------------------------------------------------------------------- plan phase
def _load_task_stats(output: str, tasks: int) -> list[dict[str, Any]]:
    stats = []
    for r in range(tasks):
        p = cfs.join(work_dir(output), f"stats-{r:05d}.json")
        if not cfs.exists(p):
            raise FatalError(f"{p} is missing: tokenize task {r} did not finish; rerun the same command to redo it")
        stats.append(cfs.read_json(p))
    first = stats[0]["tokenizer"]
    for s in stats[1:]:
        if s["tokenizer"]["sha256"] != first["sha256"]:
            raise FatalError(f"{output}: tokenize tasks used different tokenizer files; rerun with --overwrite")
    return stats


def _open_docs(output: str, rank: int) -> pa.Table:
    path = cfs.join(work_dir(output), f"docs-{rank:05d}.arrow")
    if cfs.is_remote(path):
        return ipc.open_file(pa.BufferReader(cfs.read_bytes(path))).read_all()
    return ipc.open_file(pa.memory_map(path, "r")).read_all()


def _plan_dir(output: str) -> str:
    return cfs.join(work_dir(output), "plan")


def plan_phase(cfg: ExportConfig, rank: int, world_size: int, run: RunContext) -> None:
    """Mix, shuffle, lay out and cut shards; write the plan arrays and documents.parquet."""
    output = run.output
    stats = _load_task_stats(output, run.tasks)
    tok = stats[0]["tokenizer"]
    tables = [_open_docs(output, r) for r in range(run.tasks)]
    names = sorted({s for st in stats for s in st["sources"]})
    unknown = [k for k in cfg.mix if k not in names]
    if unknown:
        k = unknown[0]
        raise ConfigError(f"--mix names source '{k}' but no input document has that source{closest(k, names)} "
                          f"(sources found: {', '.join(names) or 'none'}); fix the name or drop it from --mix")
    value_set = pa.array(names, pa.string())
    codes = np.concatenate([pc.index_in(t.column("source"), value_set=value_set).to_numpy(zero_copy_only=False)
                            .astype(np.int32) for t in tables]) if names else np.zeros(0, np.int32)
    lengths = np.concatenate([t.column("tokens").to_numpy() for t in tables]).astype(np.int64)
    hashes = np.concatenate([t.column("hash").to_numpy() for t in tables]).astype(np.uint64)
    weights = [float(cfg.mix.get(n, 1.0)) for n in names]
    docs, copies = mixing.mix_entries(codes, lengths, hashes, weights, names, cfg.seed)
    if docs.size == 0:
        raise InputError(f"nothing to export: {lengths.size} non-empty input documents and the mix "
                         f"({_mix_text(names, weights)}) keeps none of them")
    perm = mixing.shuffle_entries(docs, copies, hashes, cfg.seed)
    docs, copies = docs[perm], copies[perm]
    out_len = lengths[docs]
    pos, total = mixing.layout(out_len, cfg.seq_len, cfg.packs, cfg.split)
    starts = mixing.cut_shards(pos, total, cfg.shard_tokens, cfg.seq_len, cfg.packs)
    doc_start = np.zeros(lengths.size, dtype=np.uint64)
    if lengths.size > 1:
        np.cumsum(lengths[:-1], out=doc_start[1:])
    pdir = _plan_dir(output)
    cfs.makedirs(pdir)
    for name, arr in (("docs", docs), ("pos", pos), ("out_len", out_len), ("doc_start", doc_start)):
        _save_npy(cfs.join(pdir, f"{name}.npy"), arr)
    # per source, before and after the mix
    out_codes = codes[docs]
    sources = {}
    for c, n in enumerate(names):
        m_in = codes == c
        m_out = out_codes == c
        t_in, t_out = int(lengths[m_in].sum()), int(out_len[m_out].sum())
        sources[n] = {"weight": weights[c],
                      "before": {"documents": int(m_in.sum()), "tokens": t_in,
                                 "sequences": round(t_in / cfg.seq_len, 3)},
                      "after": {"documents": int(m_out.sum()), "tokens": t_out,
                                "sequences": round(t_out / cfg.seq_len, 3)}}
    ends = np.r_[starts[1:], np.uint64(total)] if starts.size else starts
    shards = [{"index": i, "flat_start": int(a), "flat_end": int(b)} for i, (a, b) in enumerate(zip(starts, ends))]
    task_docs = [t.num_rows for t in tables]
    in_bounds = np.cumsum([0] + [int(s["input_documents"]) for s in stats]).astype(np.uint64)
    input_index = np.concatenate([t.column("input_row").to_numpy() + in_bounds[r] for r, t in enumerate(tables)])
    _write_documents_file(output, tables, task_docs, names, codes, docs, copies, out_len, pos, starts,
                          input_index.astype(np.uint64))
    atomic_write_json(cfs.join(pdir, "plan.json"), {
        "sources": sources, "names": names, "flat_tokens": int(total), "tokens": int(out_len.sum()),
        "documents": int(docs.size), "shards": shards, "task_documents": task_docs,
        "task_tokens": [int(s["tokens"]) for s in stats], "work_dtype": stats[0]["work_dtype"], "tokenizer": tok,
    })


def _mix_text(names: list[str], weights: list[float]) -> str:
    return ", ".join(f"{n}={w:g}" for n, w in zip(names, weights)) or "no sources"


def _load_npy(path: str) -> np.ndarray:
    """A plan array: memory-mapped from a local file, read whole from object storage."""
    if cfs.is_remote(path):
        import io

        return np.load(io.BytesIO(cfs.read_bytes(path)), allow_pickle=False)
    return np.load(path, mmap_mode="r")


def _save_npy(path: str, arr: np.ndarray) -> None:
    with cfs.AtomicWriter(path) as w:
        np.save(w.file, arr, allow_pickle=False)


def _write_documents_file(output: str, tables: list[pa.Table], task_docs: list[int], names: list[str],
                          codes: np.ndarray, docs: np.ndarray, copies: np.ndarray, out_len: np.ndarray,
                          pos: np.ndarray, starts: np.ndarray, input_index: np.ndarray) -> None:
    """OUTPUT/documents.parquet: the recorded order, one row per output document."""
    path = cfs.join(output, DOCUMENTS_FILE)
    bounds = np.cumsum([0] + task_docs).astype(np.uint64)
    dict_values = pa.array(names, pa.string())
    sch = pa.schema([("id", pa.string()), ("source", pa.dictionary(pa.int32(), pa.string())),
                     ("input_index", pa.uint64()), ("copy", pa.uint32()), ("tokens", pa.int64()),
                     ("shard", pa.int32()), ("offset", pa.int64())])
    with cfs.AtomicWriter(path) as sink, pq.ParquetWriter(sink.file, sch, compression="zstd") as w:
        for lo in range(0, docs.size, DOCS_CHUNK):
            d = docs[lo:lo + DOCS_CHUNK]
            task = np.searchsorted(bounds, d, side="right") - 1
            pieces = []
            where = []
            for t in np.unique(task):
                m = np.flatnonzero(task == t)
                local = (d[m] - bounds[t]).astype(np.int64)
                pieces.append(tables[int(t)].column("id").take(pa.array(local)))
                where.append(m)
            order = np.argsort(np.concatenate(where), kind="stable")
            ids = pa.concat_arrays([p.combine_chunks() for p in pieces]).take(pa.array(order))
            p = pos[lo:lo + DOCS_CHUNK]
            shard = np.searchsorted(starts, p, side="right") - 1
            table = pa.Table.from_arrays([
                ids,
                pa.DictionaryArray.from_arrays(pa.array(codes[d], pa.int32()), dict_values),
                pa.array(input_index[d], pa.uint64()), pa.array(copies[lo:lo + DOCS_CHUNK], pa.uint32()),
                pa.array(out_len[lo:lo + DOCS_CHUNK], pa.int64()), pa.array(shard.astype(np.int32), pa.int32()),
                pa.array((p - starts[shard]).astype(np.int64), pa.int64()),
            ], schema=sch)
            w.write_table(table, row_group_size=1 << 17)


# ----------------------------------------------------------------------------- write phase
class _Gatherer:
    """Reads token ranges of documents from the per-task work files with positioned reads.

    Reads go straight into the output buffer (``os.preadv``), in file-offset order; no file
    is memory-mapped, so the process never holds more than the current chunk, however many
    pages of the work files a shuffled chunk touches.
    """

    def __init__(self, output: str, plan: dict[str, Any]) -> None:
        self.output = output
        self.dtype = np.dtype(plan["work_dtype"])
        self.task_tokens = [int(n) for n in plan["task_tokens"]]
        self.bounds = np.cumsum([0] + self.task_tokens).astype(np.int64)
        # work files on object storage are copied to local disk once per process: positioned reads
        # of every document's range would be one request each
        self._stack = contextlib.ExitStack()
        self._local: dict[int, str] = {}
        for rank, n in enumerate(self.task_tokens):
            path = cfs.join(work_dir(self.output), f"tokens-{rank:05d}.bin")
            if n and (not cfs.exists(path) or cfs.size(path) != n * self.dtype.itemsize):
                raise FatalError(f"{path}: missing or not {n * self.dtype.itemsize} bytes; the work file is "
                                 "damaged. Rerun with --overwrite")

    def _path(self, rank: int) -> str:
        path = cfs.join(work_dir(self.output), f"tokens-{rank:05d}.bin")
        if not cfs.is_remote(path):
            return path
        if rank not in self._local:
            self._local[rank] = self._stack.enter_context(cfs.local_copy(path))
        return self._local[rank]

    def gather(self, src: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """Concatenation of ``counts[i]`` tokens starting at global work offset ``src[i]``."""
        total = int(counts.sum())
        out = np.empty(total, dtype=self.dtype.newbyteorder("<"))
        if total == 0:
            return out
        view = memoryview(out).cast("B")
        item = self.dtype.itemsize
        dest = np.cumsum(counts) - counts
        fid = np.searchsorted(self.bounds, src, side="right") - 1
        for f in np.unique(fid):
            m = np.flatnonzero(fid == f)
            m = m[np.argsort(src[m], kind="stable")]  # sequential-ish reads
            local = ((src[m] - self.bounds[f]) * item).tolist()
            sizes = (counts[m] * item).tolist()
            starts = (dest[m] * item).tolist()
            fd = os.open(self._path(int(f)), os.O_RDONLY)
            try:
                for off, n, d in zip(local, sizes, starts):
                    got = 0
                    while got < n:
                        k = os.preadv(fd, [view[d + got:d + n]], off + got)
                        if k <= 0:
                            raise FatalError(f"{self._path(int(f))}: short read at byte {off + got}; the work "
                                             "file is truncated. Rerun with --overwrite")
                        got += k
            finally:
                os.close(fd)
        return out


def _load_plan(output: str) -> dict[str, Any]:
    p = cfs.join(_plan_dir(output), "plan.json")
    if not cfs.exists(p):
        raise FatalError(f"{p} is missing: the plan step did not finish; rerun the same command")
    return cfs.read_json(p)


def write_phase(cfg: ExportConfig, rank: int, world_size: int, run: RunContext) -> None:
    """Write shards ``rank, rank + world_size, ...`` of the plan."""
    output = run.output
    plan = _load_plan(output)
    mine = [s for s in plan["shards"] if s["index"] % world_size == rank]
    if not mine:
        return
    pdir = _plan_dir(output)
    docs, pos, out_len, doc_start = (_load_npy(cfs.join(pdir, f"{n}.npy"))
                                     for n in ("docs", "pos", "out_len", "doc_start"))
    gat = _Gatherer(output, plan)
    tok = plan["tokenizer"]
    dtype = choose_dtype(cfg.format or "", int(tok["vocab_size"]), cfg.dtype, tokenizer=f"tokenizer {tok['name']}")
    pad = int(cfg.pad_id if cfg.pad_id is not None else tok["eos_id"])
    meta = {"format": "mathcorpus-numpy", "seq_len": cfg.seq_len, "packed": cfg.packs, "split": cfg.split,
            "pad_id": pad, "eos_id": int(tok["eos_id"]), "vocab_size": int(tok["vocab_size"]),
            "tokenizer": tok["name"], "mathcorpus_version": __version__}
    pos_end = np.asarray(pos, dtype=np.int64) + np.asarray(out_len, dtype=np.int64)
    for sh in mine:
        lo, hi = sh["flat_start"], sh["flat_end"]
        writer = make_writer(cfg.format or "", output, sh["index"], dtype, tokenizer_name=tok["name"],
                             seq_len=cfg.seq_len, numpy_meta=meta)
        try:
            d_lo = int(np.searchsorted(pos_end, lo, side="right"))
            d_hi = int(np.searchsorted(pos, hi, side="left"))
            if cfg.packs:
                _write_packed(writer, gat, docs, pos, out_len, doc_start, d_lo, d_hi, lo, hi, cfg.seq_len, pad)
            else:
                _write_documents(writer, gat, docs, out_len, doc_start, d_lo, d_hi)
            info = writer.close()
        except BaseException:
            writer.abort()
            raise
        info.update(sh)
        atomic_write_json(cfs.join(work_dir(output), "shards", f"{sh['index']:05d}.json"), info)


def _write_documents(writer: Any, gat: _Gatherer, docs: np.ndarray, out_len: np.ndarray, doc_start: np.ndarray,
                     d_lo: int, d_hi: int) -> None:
    a = d_lo
    while a < d_hi:
        cum = np.cumsum(np.asarray(out_len[a:min(d_hi, a + CHUNK_TOKENS)], dtype=np.int64))
        b = a + max(1, int(np.searchsorted(cum, CHUNK_TOKENS, side="right")))
        b = min(b, d_hi)
        lens = np.asarray(out_len[a:b], dtype=np.int64)
        src = np.asarray(doc_start, dtype=np.int64)[np.asarray(docs[a:b], dtype=np.int64)]
        writer.add_documents(gat.gather(src, lens), lens)
        a = b


def _write_packed(writer: Any, gat: _Gatherer, docs: np.ndarray, pos: np.ndarray, out_len: np.ndarray,
                  doc_start: np.ndarray, d_lo: int, d_hi: int, lo: int, hi: int, seq_len: int, pad: int) -> None:
    step = max(1, CHUNK_TOKENS // seq_len) * seq_len
    p_all = np.asarray(pos[d_lo:d_hi], dtype=np.int64)
    n_all = np.asarray(out_len[d_lo:d_hi], dtype=np.int64)
    end_all = p_all + n_all
    for c_lo in range(lo, hi, step):
        c_hi = min(hi, c_lo + step)
        i = int(np.searchsorted(end_all, c_lo, side="right"))
        j = int(np.searchsorted(p_all, c_hi, side="left"))
        skip, dest, n = mixing.clip(p_all[i:j], n_all[i:j], c_lo, c_hi)
        src = np.asarray(doc_start, dtype=np.int64)[np.asarray(docs[d_lo + i:d_lo + j], dtype=np.int64)] + skip
        tokens = gat.gather(src, n)
        buf = np.full(c_hi - c_lo, pad, dtype=gat.dtype)
        if tokens.size:
            step_idx = np.arange(tokens.size, dtype=np.int64) - np.repeat(np.cumsum(n) - n, n)
            buf[np.repeat(dest, n) + step_idx] = tokens
        ps, pl = mixing.split_rows(dest, n, seq_len)
        writer.add_rows(buf.reshape(-1, seq_len), ps, pl)


# ----------------------------------------------------------------------------- manifest
def finalize_export(cfg: ExportConfig, run: RunContext, summary: dict[str, Any]) -> dict[str, Any]:
    """Write OUTPUT/manifest.json from the plan and shard records; remove _work unless kept."""
    output = run.output
    mpath = cfs.join(output, MANIFEST)
    if not cfs.exists(cfs.join(_plan_dir(output), "plan.json")) and cfs.exists(mpath):
        return cfs.read_json(mpath)  # a rerun after _work was already removed
    plan = _load_plan(output)
    stats = _load_task_stats(output, run.tasks)
    shards = []
    for sh in plan["shards"]:
        p = cfs.join(work_dir(output), "shards", f"{sh['index']:05d}.json")
        if not cfs.exists(p):
            raise FatalError(f"{p} is missing: shard {sh['index']} was not written; rerun the same command")
        shards.append(cfs.read_json(p))
    engines = {json.dumps(s["engine"], sort_keys=True) for s in stats}
    engine = stats[0]["engine"] if len(engines) == 1 else {"engine": "mixed", "tasks": [s["engine"] for s in stats]}
    tok = dict(plan["tokenizer"])
    tok["engine"] = engine["engine"]
    tok["engine_reason"] = engine.get("reason")
    tok["identity_check"] = engine.get("check")
    names = plan["names"]
    before = {k: sum(plan["sources"][n]["before"][k] for n in names) for k in ("documents", "tokens")}
    after = {k: sum(plan["sources"][n]["after"][k] for n in names) for k in ("documents", "tokens")}
    for d in (before, after):
        d["sequences"] = round(d["tokens"] / cfg.seq_len, 3)
    dtype = choose_dtype(cfg.format or "", int(tok["vocab_size"]), cfg.dtype, tokenizer=f"tokenizer {tok['name']}")
    flat = sum(int(s.get("flat_tokens", s["tokens"])) for s in shards)
    manifest = {
        "mathcorpus_version": __version__,
        "format": cfg.format,
        "tokens": plan["tokens"],  # in the shards (after the mix), EOS included, padding excluded
        "documents": plan["documents"],
        "dtype": dtype,
        "seq_len": cfg.seq_len,
        "packed": cfg.packs,
        "split": cfg.split if cfg.packs else None,
        "pad_id": (cfg.pad_id if cfg.pad_id is not None else tok["eos_id"]) if cfg.packs else None,
        "seed": cfg.seed,
        "mix": {n: plan["sources"][n]["weight"] for n in names},
        "mix_given": dict(cfg.mix),
        "tokenizer": tok,
        "inputs": list(run.all_files()),
        "bad_files": summary.get("bad_files", []),
        "removed": summary.get("removed_by_reason", {}),
        "sources": plan["sources"],
        "totals": {"before": before, "after": after},
        "output": {"documents": plan["documents"], "tokens": plan["tokens"], "flat_tokens": flat,
                   "padding_tokens": flat - plan["tokens"], "sequences": sum(int(s["sequences"]) for s in shards),
                   "shards": len(shards)},
        "shards": [{"index": s["index"], "files": s["files"], "tokens": s["tokens"],
                    "document_pieces": s["documents"], "sequences": s["sequences"],
                    "flat_tokens": int(s.get("flat_tokens", s["tokens"]))} for s in shards],
        "documents_file": DOCUMENTS_FILE,
        "document_boundaries": _boundaries_note(cfg),
    }
    atomic_write_json(mpath, manifest)
    if not cfg.keep_work:
        cfs.rmtree(work_dir(output))
    return manifest


def _boundaries_note(cfg: ExportConfig) -> str:
    fmt = cfg.format
    if fmt == "megatron":
        return "one Megatron sequence per document (.idx document_indices = 0..n); EOS ends every document"
    if fmt == "nanotron":
        return ".ds.index holds uint64 cumulative document ends; EOS ends every document"
    if fmt == "numpy":
        return ("NAME.docs.npy holds int64 [start, end) token ranges of document pieces in NAME.bin"
                + ("; rows are seq_len tokens, tokens outside pieces are padding" if cfg.packs else ""))
    return "doc_lengths lists the lengths of the document pieces in each row; padding follows them"

