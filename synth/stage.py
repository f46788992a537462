"""The synth stage: seed documents in, teacher-generated ``source=synth`` records out.

Owns the glue between the runner and the teacher: building requests from a batch of
seeds, calling the engine in chunks, judging samples (tasks.py), attaching provenance
columns, and making generation resumable.

Output of one run (``OUT`` is the stage's output folder):

* ``OUT/synth-*.parquet``: accepted records, ``source=synth``, with ``synth_teacher``,
  ``synth_template``, ``synth_params`` (JSON), ``synth_seed_id``, ``synth_sample`` and
  ``synth_verdict``; task details (problem, answer, votes, RM score) in ``metadata``;
* ``OUT/_side/synth_rejected/``: every rejected sample, same columns, with its verdict;
* ``OUT/_removed/``: seed documents that produced no accepted sample;
* ``OUT/_synth_cache/``: the raw samples, flushed after each engine call (``cache_dir``).

Resuming: generation is the expensive part, so each chunk's raw samples are written to
the cache as soon as they exist. A rerun skips the seed ids whose samples are already in
the cache, judges cached and new samples alike and rebuilds the task's shards, so a
killed run loses at most one chunk. Counting: a seed is "kept" when at least one sample
was accepted (``BatchResult.inputs_kept``), otherwise it is removed with a reason.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash

from corpus import fs as cfs
from corpus import schema
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError, FatalError, ShardError
from corpus.runner import BatchResult, RunContext, Stage, TaskContext
from corpus.teacher import (BACKENDS, Completion, Engine, EngineSpec, GenRequest, GenResult, SamplingConfig,
                            derive_seed, get_engine)
from synth.answers import CheckOptions, extract_answer, load_scorer
from synth.annotate import judge_annotate
from synth.sandbox import ISOLATION_MODES, NETWORK_MODES, Sandbox, check_sandbox
from synth.tasks import (TASKS, Sample, SolveOptions, Template, judge_qa, judge_rewrite, judge_solve,
                         load_template, run_tir)

CACHE_DIR = "_synth_cache"
REJECTED_SIDE = "synth_rejected"
ACCEPTED_COL = "_accepted"
SOURCE_SYNTH = "synth"
DEFAULT_N = {"rewrite": 1, "qa": 1, "solve": 8, "annotate": 1}
SELECT_MODES = ("auto", "reference", "majority", "rm")

RECORD_SCHEMA = pa.schema([
    (schema.ID, pa.string()),
    (schema.TEXT, pa.string()),
    (schema.SOURCE, pa.string()),
    (schema.LANG, pa.string()),
    (schema.METADATA, pa.string()),
    (schema.SYNTH_TEACHER, pa.string()),
    (schema.SYNTH_TEMPLATE, pa.string()),
    (schema.SYNTH_PARAMS, pa.string()),
    (schema.SYNTH_SEED_ID, pa.string()),
    (schema.SYNTH_SAMPLE, pa.int32()),
    (schema.SYNTH_VERDICT, pa.string()),
])
CACHE_SCHEMA = RECORD_SCHEMA.append(pa.field(ACCEPTED_COL, pa.bool_()))
# annotate records are the graded documents themselves plus the teacher's grade
ANNOTATE_SCHEMA = RECORD_SCHEMA.append(pa.field(schema.SYNTH_SCORE, pa.int8()))
ANNOTATE_CACHE_SCHEMA = ANNOTATE_SCHEMA.append(pa.field(ACCEPTED_COL, pa.bool_()))


@dataclass
class SynthConfig(StageConfig):
    """Options of the synth stage (the ``synth`` section of a config file)."""

    section: ClassVar[str] = "synth"

    task: str = opt(help="What to generate: rewrite (textbook-style rewrite of a document), qa (problem + "
                         "solution pairs from a document), solve (N sampled solutions per problem) or annotate "
                         "(grade each document 0-5 for quality: labels for `recall train --kind quality`).",
                    choices=TASKS)
    model: str = opt(help="Teacher model: a Hugging Face id or local folder (vllm, transformers) or the "
                          "served model name (openai).")
    engine: str = opt("vllm", help="Backend running the teacher.", choices=tuple(BACKENDS))
    n: int | None = opt(None, help="Samples per prompt (default: 8 for solve, 1 for rewrite and qa).")
    tir: bool = opt(False, help="solve only: tool-integrated reasoning; the model's Python runs in a sandbox "
                                "and its output is fed back.")
    template: str | None = opt(None, help="Prompt template: a bundled name or name@version (e.g. solve@v1), "
                                          "or a path to your own YAML file. Default: the task's newest.")
    templates_dir: str | None = opt(None, help="Folder of <id>.<version>.yaml templates searched before the "
                                               "bundled ones.")
    temperature: float = opt(0.7, help="Sampling temperature (0 = greedy).")
    top_p: float = opt(0.95, help="Nucleus sampling probability mass.")
    top_k: int = opt(0, help="Top-k cut (0 = off).")
    max_tokens: int = opt(2048, help="Most new tokens per sample (per round for TIR).")
    repetition_penalty: float = opt(1.0, help="Repetition penalty (1.0 = off).")
    stop: list[str] = opt(help="Extra stop strings, comma-separated.", factory=list)
    seed: int = opt(0, help="Base seed; each request's seed is derived from it and the seed document id.")
    sources: list[str] = opt(help="Only documents whose 'source' is one of these are seeds (e.g. qa); the others "
                                  "are removed with reason synth:source_not_selected. Default: all.", factory=list)
    answer_column: str = opt("answer", help="solve: input column holding the reference answer.")
    solution_column: str = opt("solution", help="solve: input column holding a reference solution whose final "
                                                "answer (\\boxed{}) is used when answer_column is empty.")
    qa_pairs: int = opt(3, help="qa: problem/solution pairs asked for per document.")
    select: str = opt("auto", help="solve: which samples are kept: auto (reference answer if the seed has one, "
                                   "else majority), reference, majority, or rm (RM@N).", choices=SELECT_MODES)
    min_votes: int = opt(2, help="solve, majority: the winning answer needs at least this many votes.")
    keep_top: int = opt(0, help="solve: keep at most this many accepted samples per problem (best reward "
                                "first when a reward model is set); 0 keeps all.")
    keep_truncated: bool = opt(False, help="Accept samples that hit max_tokens.")
    dedupe: bool = opt(True, help="solve: reject exact duplicate samples of the same problem.")
    min_chars: int = opt(20, help="rewrite: reject outputs shorter than this many characters.")
    rel_tol: float = opt(1e-9, help="Relative tolerance when comparing decimal answers.")
    rm_url: str | None = opt(None, help="Reward model for RM@N: URL of `vllm serve <rm> --task reward` "
                                        "(its /pooling endpoint), or module:callable returning a scorer.")
    rm_model: str | None = opt(None, help="Served name of the reward model (with rm_url).")
    flush_every: int = opt(256, help="Seeds per engine call; their samples are saved to the resume cache "
                                     "right after.")
    cache_dir: str | None = opt(None, help="Resume cache of raw samples (default OUTPUT/_synth_cache). Point "
                                           "several runs at one folder to reuse generations across them.")
    tensor_parallel_size: int = opt(1, help="vllm: GPUs per model (tensor parallelism).")
    enable_prefix_caching: bool = opt(True, help="vllm: reuse the KV cache of shared prompt prefixes.")
    gpu_memory_utilization: float = opt(0.9, help="vllm: fraction of GPU memory vLLM may use.")
    max_model_len: int | None = opt(None, help="vllm: context length limit (default: the model's).")
    dtype: str = opt("auto", help="vllm/transformers: weight dtype (auto, bfloat16, float16, float32).")
    tokenizer: str | None = opt(None, help="vllm/transformers: tokenizer folder or id if not the model's.")
    chat_template: str | None = opt(None, help="Chat template: 'chatml' or a Jinja string; default: the "
                                               "tokenizer's, else ChatML.")
    trust_remote_code: bool = opt(False, help="vllm: allow model code from the model repository.")
    base_url: str | None = opt(None, help="openai: endpoint base URL, e.g. http://localhost:8000/v1.")
    api_key_env: str = opt("OPENAI_API_KEY", help="openai: environment variable holding the API key (the "
                                                  "key itself never goes into configs or outputs).")
    concurrency: int = opt(16, help="openai: requests in flight at once.")
    max_retries: int = opt(5, help="openai: retries per request on timeouts, 429 and 5xx.")
    request_timeout: float = opt(600.0, help="openai: seconds before one request times out.")
    backoff_base: float = opt(1.0, help="openai: first retry delay in seconds (doubles each retry, jittered).")
    backoff_max: float = opt(60.0, help="openai: longest retry delay in seconds.")
    device: str = opt("cpu", help="transformers: torch device.")
    torch_threads: int = opt(0, help="transformers: CPU threads for torch (0 = torch's default).")
    max_tool_calls: int = opt(4, help="tir: most code executions per sample.")
    sandbox_timeout: float = opt(10.0, help="tir: wall-clock seconds per code execution.")
    sandbox_memory_mb: int = opt(2048, help="tir: address-space limit per code execution, in MB.")
    sandbox_workers: int = opt(4, help="tir: code executions run in parallel.")
    sandbox_network: str = opt("auto", help="tir: how network is cut: auto (network namespace when possible, "
                                            "audit hook always), unshare (require the namespace), audit.",
                               choices=NETWORK_MODES)
    sandbox: str = opt("bwrap", help="tir: how the model's code is isolated: bwrap (bubblewrap namespaces + "
                                     "seccomp: read-only Python, private work folder, no network, no other "
                                     "processes; refused where bwrap does not work) or unsafe-host (no isolation "
                                     "beyond an audit hook and a network namespace: the code can touch your files).",
                       choices=ISOLATION_MODES)

    def validate(self) -> None:
        if self.n is not None and self.n < 1:
            raise ConfigError(f"synth: n must be at least 1, got {self.n}")
        for name in ("max_tokens", "qa_pairs", "min_votes", "flush_every", "tensor_parallel_size", "concurrency",
                     "max_tool_calls", "sandbox_workers"):
            if getattr(self, name) < 1:
                raise ConfigError(f"synth: {name} must be at least 1, got {getattr(self, name)}")
        if self.temperature < 0:
            raise ConfigError(f"synth: temperature must be 0 or more, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"synth: top_p must be in (0, 1], got {self.top_p}")
        if self.keep_top < 0 or self.max_retries < 0:
            raise ConfigError("synth: keep_top and max_retries must be 0 or more")
        if self.tir and self.task != "solve":
            raise ConfigError(f"synth: --tir applies to task solve only, not {self.task}")
        if self.engine == "openai" and not self.base_url:
            raise ConfigError("synth: engine openai needs base_url (--base-url http://host:port/v1)")
        if self.select == "rm" and not self.rm_url:
            raise ConfigError("synth: select=rm needs a reward model; pass --rm-url (and --rm-model)")
        if self.task != "solve" and (self.select != "auto" or self.rm_url):
            raise ConfigError(f"synth: select and rm_url apply to task solve only, not {self.task}")

    @property
    def samples(self) -> int:
        return self.n if self.n is not None else DEFAULT_N[self.task]

    def sampling(self, stop: tuple[str, ...] = ()) -> SamplingConfig:
        return SamplingConfig(n=self.samples, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              max_tokens=self.max_tokens, seed=self.seed,
                              stop=tuple(dict.fromkeys(list(stop) + list(self.stop))),
                              repetition_penalty=self.repetition_penalty)

    def engine_spec(self) -> EngineSpec:
        if self.engine == "vllm":
            o: dict[str, Any] = {"tensor_parallel_size": self.tensor_parallel_size,
                                 "enable_prefix_caching": self.enable_prefix_caching,
                                 "gpu_memory_utilization": self.gpu_memory_utilization,
                                 "max_model_len": self.max_model_len, "dtype": self.dtype, "seed": self.seed,
                                 "tokenizer": self.tokenizer, "chat_template": self.chat_template,
                                 "trust_remote_code": self.trust_remote_code}
        elif self.engine == "openai":
            o = {"base_url": self.base_url, "api_key_env": self.api_key_env, "concurrency": self.concurrency,
                 "max_retries": self.max_retries, "timeout_s": self.request_timeout,
                 "backoff_base_s": self.backoff_base, "backoff_max_s": self.backoff_max, "seed": self.seed}
        else:
            o = {"tokenizer": self.tokenizer, "device": self.device, "dtype": self.dtype,
                 "chat_template": self.chat_template, "seed": self.seed, "threads": self.torch_threads}
        return EngineSpec(self.engine, self.model, o)


# ----------------------------------------------------------------------------- resume cache
GEN_SCHEMA = pa.schema([
    (schema.SYNTH_SEED_ID, pa.string()),
    ("gen_key", pa.string()),
    ("sample", pa.int32()),
    ("text", pa.string()),
    ("finish_reason", pa.string()),
    ("stop_reason", pa.string()),
    ("tokens", pa.int32()),
    ("tool_calls", pa.int32()),
    ("prompt_tokens", pa.int32()),
])


class GenerationCache:
    """Append-only Parquet parts holding the raw samples the teacher returned.

    Each engine call's samples are written as one part as soon as they exist, so a
    killed run loses at most one chunk. Rows carry the seed id and ``gen_key``, a hash of
    everything that shapes generation (task, model, template, sampling, seed); only rows
    with the run's key are reused, so one cache folder can serve several runs. Verdicts
    are not cached: samples are judged again on reuse, so changing ``select`` or
    ``keep_top`` never serves stale decisions.

    Parts are named ``part-{rank:05d}-{k:05d}.parquet`` (not the runner's shard prefix, so
    a rerun does not clear them) and are written to a temporary name first, so a part
    with its final name is always complete.
    """

    def __init__(self, folder: str, rank: int, gen_key: str) -> None:
        self.folder = folder
        self.rank = rank
        self.gen_key = gen_key
        self._where: dict[str, str] = {}  # seed id -> part holding its samples
        self._tables: dict[str, pa.Table] = {}  # parts read or written by this task
        self._next = 0

    def load(self) -> None:
        """Index which seeds the cache holds for this ``gen_key`` (reads two columns only)."""
        paths, nxt = cfs.numbered_parts(self.folder, self.rank)
        self._next = max(self._next, nxt)
        for path in paths:
            try:
                t = cfs.read_parquet(path, columns=[schema.SYNTH_SEED_ID, "gen_key"])
            except (pa.ArrowInvalid, OSError) as exc:
                raise ShardError(f"{path}: unreadable resume cache part ({exc}); delete it to regenerate its "
                                 "samples", path) from exc
            mine = t.filter(pc.equal(t.column("gen_key"), self.gen_key))
            for sid in mine.column(schema.SYNTH_SEED_ID).to_pylist():
                self._where[sid] = path

    def done(self, seed_id: str) -> bool:
        return seed_id in self._where

    def _part(self, path: str) -> pa.Table:
        if path not in self._tables:
            t = cfs.read_parquet(path, schema=GEN_SCHEMA)
            self._tables[path] = t.filter(pc.equal(t.column("gen_key"), self.gen_key))
        return self._tables[path]

    def completions(self, seed_ids: list[str]) -> dict[str, tuple[list[Completion], int | None]]:
        """Cached samples (in sample order) and prompt tokens of each of ``seed_ids``."""
        by_part: dict[str, list[str]] = {}
        for sid in seed_ids:
            by_part.setdefault(self._where[sid], []).append(sid)
        out: dict[str, tuple[list[Completion], int | None]] = {}
        for path, sids in by_part.items():
            t = self._part(path)
            t = t.filter(pc.is_in(t.column(schema.SYNTH_SEED_ID), value_set=pa.array(sids, pa.string())))
            for r in t.sort_by([(schema.SYNTH_SEED_ID, "ascending"), ("sample", "ascending")]).to_pylist():
                comps, _ = out.setdefault(r[schema.SYNTH_SEED_ID], ([], r["prompt_tokens"]))
                comps.append(Completion(text=r["text"], finish_reason=r["finish_reason"],
                                        stop_reason=r["stop_reason"], tokens=r["tokens"],
                                        tool_calls=r["tool_calls"] or 0))
        return out

    def append(self, results: list[GenResult], seed_ids: list[str]) -> None:
        rows = [{schema.SYNTH_SEED_ID: sid, "gen_key": self.gen_key, "sample": i, "text": c.text,
                 "finish_reason": c.finish_reason, "stop_reason": c.stop_reason, "tokens": c.tokens,
                 "tool_calls": c.tool_calls, "prompt_tokens": res.prompt_tokens}
                for sid, res in zip(seed_ids, results) for i, c in enumerate(res.completions)]
        if not rows:
            return
        table = pa.Table.from_pylist(rows, schema=GEN_SCHEMA)
        final = cfs.join(self.folder, f"part-{self.rank:05d}-{self._next:05d}.parquet")
        try:  # .tmp + rename locally; one upload, visible only when whole, on object storage
            with cfs.AtomicWriter(final) as w:
                pq.write_table(table, w.file, compression="zstd")
        except OSError as exc:
            raise FatalError(f"{final}: cannot write the resume cache ({exc}); check free space and "
                             "permissions") from exc
        self._next += 1
        self._tables[final] = table
        for sid in seed_ids:
            self._where[sid] = final


# ----------------------------------------------------------------------------- stage
def reference_answer(value: Any) -> str | None:
    """The reference answer from an answer column: a short answer as is, or the final
    answer of a full solution (GSM8K's ``answer`` field ends in ``#### 18``)."""
    if value is None:
        return None
    v = str(value).strip()
    if not v:
        return None
    if "\\boxed" in v or "####" in v or "\n" in v or len(v) > 100:
        return extract_answer(v, last_number_fallback=False)
    return v


@dataclass
class Seed:
    id: str
    text: str
    lang: str | None
    reference: str | None
    source: str | None = None


class SynthStage(Stage):
    """Generates records from seed documents with a teacher model (see module docstring)."""

    name = "synth"
    Config = SynthConfig

    def __init__(self, config: SynthConfig) -> None:
        super().__init__(config)
        self.config: SynthConfig = config
        self._reset()

    def _reset(self) -> None:
        self.engine: Engine | None = None
        self.template: Template | None = None
        self.scorer: Any = None
        self.sandbox: Sandbox | None = None
        self.cache: GenerationCache | None = None

    def __getstate__(self) -> dict[str, Any]:
        # only the config travels to workers; models, caches and sandboxes load in setup()
        return {"config": self.config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.config = state["config"]
        self._reset()

    def prepare(self, run: RunContext) -> None:
        # fail in the driver, before any worker starts, on a bad template or select mode
        tmpl = load_template(self.config.template, self.config.task, tir=self.config.tir,
                             templates_dir=self.config.templates_dir)
        if tmpl.tir:
            check_sandbox(self.config.sandbox)

    # ------------------------------------------------------------------ task side
    def setup(self, task: TaskContext) -> None:
        c = self.config
        self.template = load_template(c.template, c.task, tir=c.tir, templates_dir=c.templates_dir)
        self.engine = get_engine(c.engine_spec())
        self.scorer = load_scorer(c.rm_url, c.rm_model) if c.rm_url else None
        if self.template.tir:
            self.sandbox = Sandbox(timeout_s=c.sandbox_timeout, memory_mb=c.sandbox_memory_mb,
                                   network=c.sandbox_network, isolation=c.sandbox)
        self.cache = GenerationCache(c.cache_dir or cfs.join(task.run.output, CACHE_DIR), task.rank,
                                     self.gen_key())
        self.cache.load()
        task.extra.setdefault("engine_seconds", 0.0)
        task.extra.setdefault("stage_seconds", 0.0)
        task.extra["template"] = self.template.ref
        task.extra["template_sha"] = self.template.sha
        task.extra["engine"] = self.engine.describe()

    def _seeds(self, batch: pa.RecordBatch) -> list[Seed]:
        c = self.config
        names = batch.schema.names
        ids = batch.column(schema.ID).to_pylist()
        texts = batch.column(schema.TEXT).to_pylist()
        langs = batch.column(schema.LANG).to_pylist() if schema.LANG in names else [None] * len(ids)
        refs: list[str | None] = [None] * len(ids)
        if c.task == "solve":
            if c.answer_column in names:
                refs = [reference_answer(v) for v in batch.column(c.answer_column).to_pylist()]
            if c.solution_column in names:
                sols = batch.column(c.solution_column).to_pylist()
                refs = [r if r is not None else (extract_answer(s, last_number_fallback=False) if s else None)
                        for r, s in zip(refs, sols)]
        srcs = batch.column(schema.SOURCE).to_pylist() if schema.SOURCE in names else [None] * len(ids)
        return [Seed(i, t, lg, r, sr) for i, t, lg, r, sr in zip(ids, texts, langs, refs, srcs)]

    def _request(self, seed: Seed, sampling: SamplingConfig) -> GenRequest:
        c = self.config
        assert self.template is not None  # set in setup()
        if c.task == "solve":
            msgs = self.template.render(problem=seed.text)
        elif c.task == "qa":
            msgs = self.template.render(text=seed.text, lang=seed.lang or "en", num_pairs=c.qa_pairs)
        else:
            msgs = self.template.render(text=seed.text, lang=seed.lang or "en")
        return GenRequest(key=seed.id, messages=msgs,
                          params=sampling.with_(seed=derive_seed(c.seed, self.template.ref, seed.id)))

    def _judge(self, seed: Seed, req: GenRequest, completions: list[Any]) -> list[Sample]:
        c = self.config
        if c.task == "rewrite":
            return judge_rewrite(completions, keep_truncated=c.keep_truncated, min_chars=c.min_chars)
        if c.task == "qa":
            return judge_qa(completions, max_pairs=c.qa_pairs, keep_truncated=c.keep_truncated)
        if c.task == "annotate":
            return judge_annotate(seed.text, completions, keep_truncated=c.keep_truncated)
        opts = SolveOptions(select=c.select, min_votes=c.min_votes, keep_top=c.keep_top,
                            keep_truncated=c.keep_truncated, dedupe=c.dedupe, check=CheckOptions(rel_tol=c.rel_tol))
        return judge_solve(seed.text, completions, seed.reference, opts, self.scorer, req.messages)

    def _params_json(self, req: GenRequest) -> str:
        c = self.config
        assert self.template is not None
        p = req.params.to_dict() | {"engine": c.engine, "base_seed": c.seed, "template_sha": self.template.sha}
        p["request_seed"] = p.pop("seed")
        if c.task == "solve":
            p |= {"select": c.select, "tir": self.template.tir, "min_votes": c.min_votes, "keep_top": c.keep_top}
            if c.rm_model:
                p["rm_model"] = c.rm_model
        if c.task == "qa":
            p["qa_pairs"] = c.qa_pairs
        return json.dumps(p, sort_keys=True, ensure_ascii=False)

    def _records(self, seed: Seed, req: GenRequest, samples: list[Sample]) -> list[dict[str, Any]]:
        c = self.config
        assert self.template is not None
        params = self._params_json(req)
        rows = []
        annotate = c.task == "annotate"
        for s in samples:
            rid = f"{seed.id}/{c.task}/{s.sample}" + (f".{s.sub}" if s.sub is not None else "")
            rows.append({
                # an annotate record is the seed document itself (a label), so it keeps its source
                schema.ID: rid, schema.TEXT: s.text, schema.SOURCE: seed.source if annotate else SOURCE_SYNTH,
                schema.LANG: seed.lang,
                schema.METADATA: json.dumps({"task": c.task} | s.meta, ensure_ascii=False, default=str),
                schema.SYNTH_TEACHER: c.model, schema.SYNTH_TEMPLATE: self.template.ref,
                schema.SYNTH_PARAMS: params, schema.SYNTH_SEED_ID: seed.id, schema.SYNTH_SAMPLE: s.sample,
                schema.SYNTH_VERDICT: s.verdict, ACCEPTED_COL: s.accepted,
            } | ({schema.SYNTH_SCORE: s.meta.get("score")} if annotate else {}))
        return rows

    def gen_key(self) -> str:
        """Hash of everything that shapes what the teacher generates (not how it is judged)."""
        c = self.config
        assert self.template is not None
        key = {"task": c.task, "engine": c.engine, "model": c.model, "template": self.template.ref,
               "template_sha": self.template.sha, "sampling": c.sampling(self.template.stop).to_dict(),
               "qa_pairs": c.qa_pairs if c.task == "qa" else None, "tir": self.template.tir,
               "max_tool_calls": c.max_tool_calls if self.template.tir else None,
               "chat_template": c.chat_template, "tokenizer": c.tokenizer}
        return xxhash.xxh3_64_hexdigest(json.dumps(key, sort_keys=True).encode("utf-8"))

    def generate(self, seeds: list[Seed], task: TaskContext | None = None) -> list[GenResult]:
        """One engine call for ``seeds`` (plus the TIR rounds): raw results, in seed order."""
        assert self.engine is not None and self.template is not None
        sampling = self.config.sampling(self.template.stop)
        reqs = [self._request(s, sampling) for s in seeds]
        t0 = time.perf_counter()
        results = self.engine.generate(reqs)
        if self.template.tir:
            assert self.sandbox is not None
            run_tir(self.engine, reqs, results, self.sandbox, max_calls=self.config.max_tool_calls,
                    workers=self.config.sandbox_workers, base_seed=self.config.seed)
        if task is not None:
            task.extra["engine_seconds"] += time.perf_counter() - t0
            task.counters["samples_generated"] += sum(len(r.completions) for r in results)
            task.counters["prompt_tokens"] += sum(r.prompt_tokens or 0 for r in results)
            task.counters["completion_tokens"] += sum(c.tokens or 0 for r in results for c in r.completions)
        return results

    def records(self, seeds: list[Seed], generated: dict[str, tuple[list[Completion], int | None]]) -> pa.Table:
        """Judge each seed's samples and build its records (cache schema, seed order)."""
        assert self.template is not None
        sampling = self.config.sampling(self.template.stop)
        rows: list[dict[str, Any]] = []
        for seed in seeds:
            req = self._request(seed, sampling)
            comps, _ = generated[seed.id]
            rows.extend(self._records(seed, req, self._judge(seed, req, comps)))
        return pa.Table.from_pylist(rows, schema=ANNOTATE_CACHE_SCHEMA if self.config.task == "annotate"
                                    else CACHE_SCHEMA)

    def process_batch(self, batch: pa.RecordBatch, task: TaskContext) -> BatchResult:
        assert self.cache is not None
        t0 = time.perf_counter()
        skipped = pa.array([False] * batch.num_rows, pa.bool_())
        if self.config.sources:
            src = batch.column(schema.SOURCE) if schema.SOURCE in batch.schema.names else \
                pa.nulls(batch.num_rows, pa.string())
            skipped = pc.invert(pc.fill_null(pc.is_in(src, value_set=pa.array(self.config.sources, pa.string())),
                                             False))
            task.counters["seeds_source_not_selected"] += pc.sum(skipped).as_py() or 0
        seeds = [s for s, skip in zip(self._seeds(batch), skipped.to_pylist()) if not skip]
        todo = [s for s in seeds if not self.cache.done(s.id)]
        generated = self.cache.completions([s.id for s in seeds if self.cache.done(s.id)])
        task.counters["seeds_resumed"] += len(generated)
        step = self.config.flush_every
        for k in range(0, len(todo), step):
            chunk = todo[k:k + step]
            results = self.generate(chunk, task)
            self.cache.append(results, [s.id for s in chunk])  # flushed before anything else can fail
            for s, r in zip(chunk, results):
                generated[s.id] = (r.completions, r.prompt_tokens)
        table = self.records(seeds, generated)
        accepted_mask = table.column(ACCEPTED_COL)
        accepted = table.filter(accepted_mask).drop([ACCEPTED_COL])
        rejected = table.filter(pc.invert(accepted_mask)).drop([ACCEPTED_COL])
        if rejected.num_rows:
            task.side_writer(REJECTED_SIDE).write(rejected)
        for v, n in Counter(table.column(schema.SYNTH_VERDICT).to_pylist()).items():
            task.counters[f"verdict:{v}"] += n
        if self.config.task == "annotate":  # the grade distribution of the accepted labels
            for v, n in Counter(accepted.column(schema.SYNTH_SCORE).to_pylist()).items():
                task.counters[f"score:{v}"] += n
        task.counters["samples_accepted"] += accepted.num_rows
        task.counters["samples_rejected"] += rejected.num_rows
        ok_seeds = set(accepted.column(schema.SYNTH_SEED_ID).to_pylist())
        ids = batch.column(schema.ID).to_pylist()
        reasons = [None if i in ok_seeds else ("synth:source_not_selected" if skip else "synth:no_accepted_sample")
                   for i, skip in zip(ids, skipped.to_pylist())]
        gone = pa.array([r is not None for r in reasons], pa.bool_())
        removed = batch.filter(gone)
        if removed.num_rows:
            removed = removed.append_column(schema.REMOVAL_REASON,
                                            pa.array([r for r in reasons if r is not None], pa.string()))
        task.extra["stage_seconds"] += time.perf_counter() - t0
        return BatchResult(kept=accepted, removed=removed, inputs_kept=len(ok_seeds))
