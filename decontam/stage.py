"""The decontamination stage: thin glue from Arrow batches to kernel, confirmation and report.

Owns the run-time flow of ``mathcorpus decontam run``:

* driver side (:meth:`DecontamStage.prepare`): build the index from the selected benchmarks
  (or check a prebuilt one) and save it under ``REPORT_DIR/index``; route removed documents
  to ``REPORT_DIR/removed``;
* task side (:meth:`DecontamStage.setup` / :meth:`~DecontamStage.process_batch`): load the
  index lazily (memory-mapped), run the one-pass kernel over each checked text column of the
  batch (rows with figure code or unusual Unicode are fixed and rescanned there), confirm
  candidates by the LCS ratio, optionally run the near-duplicate tier (``--fuzzy``), and split
  the batch into kept and removed rows; every candidate pair goes to the matches side table;
* driver side again (:meth:`DecontamStage.finalize`): merge the side tables into
  ``REPORT_DIR/matches.parquet`` and write ``REPORT_DIR/summary.json``.

The stage holds only its config and paths, so it pickles cheaply to Slurm and Ray workers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from corpus import __version__, schema
from corpus import fs as cfs
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError, FatalError, InputError
from corpus.runner import BatchResult, RunContext, Stage, TaskContext
from corpus.shards import atomic_write_json
from corpus.teacher import EngineSpec
from corpus.textnorm import strip_figure_code, token_spans
from decontam.benchmarks import load_benchmarks
from decontam.confirm import POLICIES, Confirmer, PairResult, group_hits
from decontam.index import DecontamIndex, IndexOptions, build_index, unchecked_counts
from decontam.judge_tier import JudgeTier, judge_section
from decontam.kernel import scan

MATCHES_SIDE = "decontam_matches"
REPORT_DEFAULT = "_report"
MESSAGES = "messages"

#: Columns of REPORT_DIR/matches.parquet (the report and diff commands read these names).
MATCH_SCHEMA = pa.schema([
    ("doc_id", pa.string()),
    ("benchmark", pa.string()),
    ("item_id", pa.string()),
    ("field", pa.string()),
    ("grams_matched", pa.int32()),
    ("lcs_ratio", pa.float64()),
    ("doc_start", pa.int64()),
    ("doc_end", pa.int64()),
    ("tier", pa.string()),
    ("matched_grams_sample", pa.string()),
    ("source", pa.string()),
    ("domain", pa.string()),
    ("removed", pa.bool_()),
    ("doc_field", pa.string()),
    ("contaminated", pa.bool_()),
    # judge tier (null on other tiers): verdict (contaminated, clean, judge_error), the raw
    # answer(s) (one string; with both ways a JSON list of two), the tier that proposed the
    # pair (exact, fuzzy, embed), the template and, for embed candidates, the cosine
    ("judge_verdict", pa.string()),
    ("judge_answer", pa.string()),
    ("judge_source", pa.string()),
    ("judge_template", pa.string()),
    ("judge_similarity", pa.float64()),
])
HIST_BINS = [round(0.1 * i, 1) for i in range(11)]


@dataclass
class DecontamConfig(StageConfig):
    """Options of the decontam stage (section ``decontam`` of a config file)."""

    section: ClassVar[str] = "decontam"

    benchmarks: str | None = opt(None, help="Benchmarks to check against: pretrain (GSM8K + MATH), posttrain "
                                            "(all twelve Qwen2.5-Math post-training sets), all, or names "
                                            "separated by commas. Default: pretrain, or the --index's own set.")
    benchmark_file: list[str] = opt(help="Extra benchmark file NAME=PATH:question_field,answer_field "
                                         "(.jsonl or .parquet); repeatable.", factory=list, cli=False)
    index: str | None = opt(None, help="Prebuilt index folder (mathcorpus decontam index); default: build "
                                       "one into REPORT_DIR/index.")
    report: str | None = opt(None, help="Report folder: matches.parquet, summary.json, removed/ "
                                        "(default OUTPUT/_report).")
    ngram: int = opt(13, help="n-gram length in normalized tokens.")
    lcs_threshold: float = opt(0.6, help="A pair is contaminated when LCS(item, window) / |item| is above this.")
    policy: str = opt("ngram+lcs", help="ngram+lcs confirms n-gram hits by the LCS ratio; ngram flags any hit "
                                        "(for comparison).", choices=POLICIES)
    min_phrase_tokens: int = opt(8, help="Items shorter than ngram but at least this long are matched as whole "
                                         "phrases; shorter items are reported as unchecked.")
    max_gram_items: int = opt(10, help="Drop grams that occur in more than this many benchmark items "
                                       "(instruction templates, shared setups).")
    strip_figure_code: bool = opt(True, help="Keep Asymptote and TikZ figure code out of grams and LCS.")
    text_fields: list[str] = opt(help="Columns to check, comma separated (e.g. question,answer); 'messages' "
                                      "checks each message of a chat column. Default: text.", factory=list)
    window_slack: float = opt(0.1, help="Extra window on each side of an aligned item, as a share of its length.")
    fuzzy: bool = opt(False, help="Also run the near-duplicate tier: MinHash LSH over the item questions finds "
                                  "records close to an item without a shared n-gram (other numbers, light "
                                  "rewording), confirmed by the LCS ratio over number-masked tokens; its "
                                  "matches are reported with tier=fuzzy.")
    fuzzy_lcs_threshold: float = opt(0.9, help="LCS-ratio threshold of the fuzzy tier, over number-masked "
                                               "tokens (see BENCHMARKS.md for precision by threshold).")
    fuzzy_action: str = opt("drop", help="drop: fuzzy matches remove documents like exact ones; report: they "
                                         "are only written to matches.parquet.", choices=("drop", "report"))
    fuzzy_fields: list[str] = opt(help="Columns of --text-fields the fuzzy tier checks, e.g. the question "
                                       "column only (it looks for paraphrased questions; formula-heavy "
                                       "solutions add false hits). Default: all checked columns.", factory=list)
    fail_on_hit: bool = opt(False, help="Exit with status 3 when any document was removed (CI gate).")
    judge: bool = opt(False, help="LLM-judge tier: a teacher decides the pairs the cheaper tiers saw but did "
                                  "not confirm (exact-tier pairs with an LCS ratio between judge_floor and "
                                  "the threshold, unconfirmed fuzzy-tier candidates, embedding neighbours); "
                                  "judged pairs are reported with tier=judge.")
    judge_engine: str = opt("openai", help="Judge backend.", choices=("vllm", "openai", "transformers"))
    judge_model: str | None = opt(None, help="Judge model: served model name (openai) or a Hugging Face id or "
                                             "local folder (vllm, transformers).")
    judge_base_url: str | None = opt(None, help="openai: judge endpoint, e.g. http://localhost:8000/v1.")
    judge_api_key_env: str = opt("OPENAI_API_KEY", help="openai: environment variable holding the API key.")
    judge_template: str = opt("reword@v1", help="Judge prompt NAME@VERSION: reword@v1 (same problem up to "
                                                "names and word order) or numbers@v1 (also with numbers "
                                                "substituted), or a path to your own YAML file.")
    judge_both_ways: bool = opt(False, help="Ask each pair in both orders (item first, record first); a yes "
                                            "either way contaminates.")
    judge_max_calls: int | None = opt(None, help="Most judge calls this run may send; it stops before "
                                                 "exceeding them (answers so far are cached; rerun to go on).")
    judge_action: str = opt("drop", help="drop: records the judge finds contaminated are removed; report: "
                                         "judged pairs are only written to matches.parquet.",
                            choices=("drop", "report"))
    judge_floor: float = opt(0.3, help="Exact-tier pairs with an LCS ratio at or above this (and not above "
                                       "lcs_threshold) go to the judge.")
    judge_fuzzy_floor: float = opt(0.6, help="Fuzzy-tier candidates with a number-masked LCS ratio at or above "
                                             "this (and not above fuzzy_lcs_threshold) go to the judge.")
    judge_embed_model: str | None = opt(None, help="Local sentence-transformers (or Hugging Face encoder) "
                                                   "folder: also send each record's judge_embed_k nearest items "
                                                   "by cosine.")
    judge_embed_k: int = opt(3, help="Nearest items per record with judge_embed_model.")
    judge_embed_floor: float = opt(0.8, help="Least cosine similarity of an embedding candidate.")
    judge_max_chars: int = opt(3000, help="Longest passage of a record shown to the judge (centred on the "
                                          "aligned span).")
    judge_max_tokens: int = opt(512, help="Most tokens of one judge answer.")
    judge_concurrency: int = opt(16, help="openai: judge requests in flight at once.")
    judge_max_retries: int = opt(5, help="openai: retries per judge request on timeouts, 429 and 5xx.")
    judge_request_timeout: float = opt(300.0, help="openai: seconds before one judge request times out.")
    judge_cache: str | None = opt(None, help="Folder of cached judge answers (default REPORT_DIR/judge_cache); "
                                             "point runs at one folder to share answers.")
    judge_chat_template: str | None = opt(None, help="vllm/transformers: chat template ('chatml' or Jinja); "
                                                     "default the tokenizer's.")
    judge_device: str = opt("cpu", help="transformers: torch device of the judge.")
    judge_tensor_parallel_size: int = opt(1, help="vllm: GPUs per judge model.")
    judge_dry_run: bool = opt(False, help="Count the judge calls the run would send; send none.", cli=False)

    def validate(self) -> None:
        if not 0.0 < self.lcs_threshold <= 1.0:
            raise ConfigError(f"decontam: lcs_threshold must be in (0, 1], got {self.lcs_threshold}")
        if not 0.0 <= self.window_slack <= 1.0:
            raise ConfigError(f"decontam: window_slack must be in [0, 1], got {self.window_slack}")
        if not 0.0 <= self.fuzzy_lcs_threshold < 1.0:
            raise ConfigError(f"decontam: fuzzy_lcs_threshold must be in [0, 1), got {self.fuzzy_lcs_threshold}")
        checked = self.text_fields or [schema.TEXT]
        extra = [f for f in self.fuzzy_fields if f not in checked]
        if extra:
            raise ConfigError(f"decontam: fuzzy_fields {', '.join(extra)} not among the checked columns "
                              f"({', '.join(checked)}); add them to text_fields or drop them")
        self.index_options().validate()
        if self.judge:
            if not self.judge_model:
                raise ConfigError("decontam: --judge needs --judge-model (the served model name or a model folder)")
            if self.judge_engine == "openai" and not self.judge_base_url:
                raise ConfigError("decontam: --judge-engine openai needs --judge-base-url "
                                  "(e.g. http://localhost:8000/v1)")
            from decontam.judge import load_template

            load_template(self.judge_template)
            if self.judge_embed_model and not os.path.isdir(self.judge_embed_model):
                raise ConfigError(f"decontam: --judge-embed-model {self.judge_embed_model} is not a folder; give a "
                                  "local sentence-transformers or Hugging Face encoder folder (nothing is "
                                  "downloaded)")
        for name in ("judge_floor", "judge_fuzzy_floor", "judge_embed_floor"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"decontam: {name} must be in [0, 1], got {getattr(self, name)}")
        if self.judge_max_calls is not None and self.judge_max_calls < 0:
            raise ConfigError(f"decontam: judge_max_calls must be 0 or more, got {self.judge_max_calls}")
        for name in ("judge_embed_k", "judge_max_chars", "judge_max_tokens", "judge_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigError(f"decontam: {name} must be at least 1, got {getattr(self, name)}")

    def index_options(self) -> IndexOptions:
        return IndexOptions(ngram=self.ngram, min_phrase_tokens=self.min_phrase_tokens,
                            max_gram_items=self.max_gram_items, strip_figures=self.strip_figure_code)

    def judge_spec(self) -> EngineSpec:
        """The judge's engine (no secrets: the API key stays in its environment variable)."""
        if self.judge_engine == "openai":
            o: dict[str, Any] = {"base_url": self.judge_base_url, "api_key_env": self.judge_api_key_env,
                                 "concurrency": self.judge_concurrency, "max_retries": self.judge_max_retries,
                                 "timeout_s": self.judge_request_timeout}
        elif self.judge_engine == "vllm":
            o = {"tensor_parallel_size": self.judge_tensor_parallel_size, "chat_template": self.judge_chat_template}
        else:
            o = {"device": self.judge_device, "chat_template": self.judge_chat_template}
        return EngineSpec(self.judge_engine, self.judge_model or "", o)


def profile_name(cfg: DecontamConfig) -> str:
    """How the run's benchmarks were chosen, e.g. ``posttrain`` or ``posttrain+file:mine``."""
    name = cfg.benchmarks or "pretrain"
    extra = [f.split("=", 1)[0] for f in cfg.benchmark_file]
    return name + "".join(f"+file:{e}" for e in extra)


def report_dir_for(config: DecontamConfig, output: str) -> str:
    return config.report or cfs.join(output, REPORT_DEFAULT)


_INDEX_CACHE: dict[tuple[str, float], DecontamIndex] = {}


def _load_index(path: str) -> DecontamIndex:
    """The index at ``path``, shared by the tasks that run one after another in a process
    (an index on object storage is downloaded once per process and memory-mapped from there)."""
    path = cfs.local_dir(path)
    meta = os.path.join(path, "meta.json")
    key = (os.path.abspath(path), os.path.getmtime(meta) if os.path.exists(meta) else 0.0)
    if key not in _INDEX_CACHE:
        _INDEX_CACHE.clear()
        _INDEX_CACHE[key] = DecontamIndex.load(path)
    return _INDEX_CACHE[key]


def _unstrip(x: int, spans: list[tuple[int, int]]) -> int:
    """Map a char offset in figure-stripped text back to the original text."""
    shift = 0
    for a, b in spans:
        a_stripped = a - shift
        if x <= a_stripped:
            break
        if x == a_stripped + 1:  # inside the one space that replaced the block
            return b
        shift += (b - a) - 1
    return x + shift


def _keep_slices(batch: pa.RecordBatch, removed: np.ndarray) -> pa.Table:
    """The rows not removed, as zero-copy slices (removals are rare; filtering copies all text)."""
    pieces = []
    start = 0
    for r in np.flatnonzero(removed).tolist():
        if r > start:
            pieces.append(batch.slice(start, r - start))
        start = r + 1
    if start < batch.num_rows:
        pieces.append(batch.slice(start))
    return pa.Table.from_batches(pieces, schema=batch.schema)


def judge_state_paths(report_dir: str, judge_cache: str | None) -> tuple[str, str]:
    """Where the judge tier keeps its answer cache and its call-budget counter.

    The counter is a file that the tasks of one run lock while they reserve calls, which object
    storage cannot do: with the report on object storage it goes beside a local ``judge_cache``,
    and without one the run is refused with the fix.
    """
    cache = judge_cache or cfs.join(report_dir, "judge_cache")
    home = report_dir if not cfs.is_remote(report_dir) else (judge_cache or report_dir)
    budget = cfs.join(home, "judge_budget.json")
    if cfs.is_remote(budget):
        raise ConfigError(f"{report_dir}: the judge tier counts its calls in a locked file, which object storage "
                          "cannot hold; pass --judge-cache DIR on a local or shared filesystem (its budget "
                          "file goes there)")
    return cache, budget


class DecontamStage(JudgeTier, Stage):
    """Removes documents that contain benchmark items (13-gram + LCS ratio, Qwen2.5-Math rule)."""

    name = "decontam"
    Config = DecontamConfig

    def __init__(self, config: DecontamConfig) -> None:
        super().__init__(config)
        self.index_path: str | None = config.index
        self.report_dir: str | None = config.report
        self._index: DecontamIndex | None = None
        self._confirmer: Confirmer | None = None
        self._fuzzy: Any = None  # decontam.fuzzy.FuzzyIndex, built in setup() when cfg.fuzzy
        self.fuzzy_meta: dict[str, Any] = {}
        self._judge: Any = None  # decontam.judge.Judge, built in setup() when cfg.judge
        self._embed: Any = None  # decontam.judge.EmbedIndex, with cfg.judge_embed_model
        self._item_rows: dict[tuple[str, str], int] | None = None

    def required_columns(self) -> tuple[str, ...]:
        """SFT/RM/RL records checked through --text-fields need no 'text' column, only those fields."""
        if self.config.text_fields:
            return (schema.ID, *self.config.text_fields)
        return schema.REQUIRED

    def __getstate__(self) -> dict[str, Any]:
        # never ship the loaded index: workers memory-map it from index_path in setup()
        state = dict(self.__dict__)
        state["_index"] = None
        state["_confirmer"] = None
        state["_fuzzy"] = None
        state["_judge"] = None
        state["_embed"] = None
        state["_item_rows"] = None
        return state

    @property
    def cfg(self) -> DecontamConfig:
        return self.config  # type: ignore[return-value]

    # -- driver ----------------------------------------------------------------------------
    def prepare(self, run: RunContext) -> None:
        cfg = self.cfg
        self.report_dir = report_dir_for(cfg, run.output)
        if cfg.judge:
            judge_state_paths(self.report_dir, cfg.judge_cache)  # refuse before writing anything
        cfs.makedirs(self.report_dir)
        if run.options.removed_dir is None:
            run.removed_dir = cfs.join(self.report_dir, "removed")
        if cfg.index:
            idx = DecontamIndex.load(cfs.local_dir(cfg.index))
            check_index_matches(idx, cfg, cfg.index)
            self.index_path = cfg.index
            # compile (or load) the numba kernel once here, so parallel workers on a fresh
            # checkout find it in numba's cache instead of all compiling it at once
            scan(pa.array(["warm up"], pa.string()), idx.ngram)
        else:
            path = cfs.join(self.report_dir, "index")
            idx = build_index(load_benchmarks(cfg.benchmarks or "pretrain", cfg.benchmark_file), cfg.index_options(),
                              profile=profile_name(cfg))
            with cfs.local_dir_for_writing(path, last=("meta.json",)) as local:  # uploaded after, for a URL
                idx.save(local)
            self.index_path = path
        if cfg.fuzzy:
            self.fuzzy_meta = self._build_fuzzy(idx).describe()
        if cfg.judge:
            from decontam.judge import CallBudget

            # the budget counts the calls of this invocation: a rerun may send as many again
            CallBudget(self._judge_paths()[1], cfg.judge_max_calls).reset()

    def _judge_paths(self) -> tuple[str, str]:
        """(answer cache folder, budget counter file) of the judge tier."""
        return judge_state_paths(self.report_dir or "", self.cfg.judge_cache)

    def _build_fuzzy(self, idx: DecontamIndex) -> Any:
        """The near-duplicate index over the same benchmarks' questions (seconds; built per worker)."""
        from decontam.benchmarks import bundled_names
        from decontam.fuzzy import FuzzyIndex, FuzzyParams, items_from_benchmarks

        cfg = self.cfg
        names = cfg.benchmarks or ",".join(n for n in idx.benchmark_names() if n in bundled_names())
        return FuzzyIndex.build(items_from_benchmarks(load_benchmarks(names, cfg.benchmark_file)),
                                FuzzyParams(lcs_threshold=cfg.fuzzy_lcs_threshold))

    def finalize(self, run: RunContext, summary: dict[str, Any]) -> None:
        report = self.report_dir or report_dir_for(self.cfg, run.output)
        out = write_report(report, run, summary, self.cfg, self.index_path or "", self.fuzzy_meta)
        summary["decontam"] = {
            "report": report, "matches": cfs.join(report, "matches.parquet"),
            "summary": cfs.join(report, "summary.json"), "docs_removed": out["docs_removed"],
            "benchmarks_hit": sorted(k for k, v in out["benchmarks"].items() if v["docs_removed"]),
        }
        if out.get("judge"):
            summary["decontam"]["judge"] = out["judge"]
        # the offline page of this run; the pipeline's run report links every summary "html"
        from decontam.html import write_report_page

        summary["decontam"]["html"] = write_report_page(report)

    # -- task --------------------------------------------------------------------------------
    def setup(self, task: TaskContext) -> None:
        task.extra["_cpu0"] = time.process_time()
        if self.index_path is None:
            raise FatalError("decontam: no index path was prepared; run the stage through run_stage "
                             "(or pass --index)")
        self._index = _load_index(self.index_path)
        self._confirmer = Confirmer(self._index, self.cfg.policy, self.cfg.lcs_threshold, self.cfg.window_slack)
        if self.cfg.fuzzy:
            self._fuzzy = self._build_fuzzy(self._index)
        if self.cfg.judge:
            from decontam.judge import EmbedIndex, Judge, JudgeSettings

            c = self.cfg
            cache, budget = self._judge_paths()
            self._judge = Judge(JudgeSettings(spec=c.judge_spec(), template=c.judge_template,
                                              both_ways=c.judge_both_ways, max_calls=c.judge_max_calls,
                                              max_tokens=c.judge_max_tokens, cache_dir=cache, budget_file=budget,
                                              dry_run=c.judge_dry_run), rank=task.rank)
            if c.judge_embed_model:
                items = self._index.items
                self._embed = EmbedIndex(c.judge_embed_model, list(zip(
                    items.column("benchmark").to_pylist(), items.column("item_id").to_pylist(),
                    [q or "" for q in items.column("question").to_pylist()])), k=c.judge_embed_k,
                    floor=c.judge_embed_floor)
        task.extra.setdefault("index_bytes", self._index.nbytes())

    def finish_task(self, task: TaskContext) -> None:
        # CPU seconds of this task (setup, reading, checking and writing): MB/s per core
        cpu0 = task.extra.pop("_cpu0", None)
        if cpu0 is not None:
            task.extra["cpu_seconds"] = round(time.process_time() - cpu0, 3)

    def _fields(self, batch: pa.RecordBatch, task: TaskContext) -> list[tuple[str, pa.Array, np.ndarray, np.ndarray | None]]:
        """``(field name, string array, batch row of each element, message index or None)``."""
        names = self.cfg.text_fields or [schema.TEXT]
        out = []
        for name in names:
            if name not in batch.schema.names:
                raise InputError(
                    f"{task.current_file or 'input'}: field '{name}' (from --text-fields) not found; "
                    f"columns found: {', '.join(batch.schema.names)}")
            col = batch.column(name)
            if name == MESSAGES or pa.types.is_list(col.type) or pa.types.is_large_list(col.type):
                if not (pa.types.is_struct(col.type.value_type)
                        and col.type.value_type.get_field_index("content") >= 0):
                    raise InputError(f"{task.current_file or 'input'}: field '{name}' must be a list of "
                                     "{role, content} messages to be checked as chat")
                flat = pc.list_flatten(col)
                content = pc.struct_field(flat, "content")
                parents = np.asarray(pc.list_parent_indices(col), dtype=np.int64)
                offs = np.asarray(col.offsets, dtype=np.int64)
                # position of each message inside its own list (for the report's doc_field)
                pos = np.arange(len(parents), dtype=np.int64) + offs[0] - offs[parents]
                out.append((name, pc.cast(pc.fill_null(content, ""), pa.string()), parents, pos))
            elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type) or pa.types.is_null(col.type):
                arr = pc.cast(pc.fill_null(col, ""), pa.string()) if col.null_count or not pa.types.is_string(col.type) \
                    else col
                out.append((name, arr, np.arange(batch.num_rows), None))
            else:
                raise InputError(f"{task.current_file or 'input'}: field '{name}' has type {col.type}; "
                                 "--text-fields takes string columns or a chat 'messages' column")
        return out

    def process_batch(self, batch: pa.RecordBatch, task: TaskContext) -> BatchResult:
        if self._index is None or self._confirmer is None:
            self.setup(task)
        idx: DecontamIndex = self._index  # type: ignore[assignment]  (set by setup)
        conf: Confirmer = self._confirmer  # type: ignore[assignment]
        nrows = batch.num_rows
        removed = np.zeros(nrows, dtype=bool)
        best: dict[int, tuple[float, PairResult, str]] = {}
        rows_out: list[dict[str, Any]] = []
        ids = batch.column(schema.ID)
        src = batch.column(schema.SOURCE) if schema.SOURCE in batch.schema.names else None
        dom = batch.column(schema.DOMAIN) if schema.DOMAIN in batch.schema.names else None
        bench = idx.items.column("benchmark")
        item_ids = idx.items.column("item_id")
        t0 = time.perf_counter()
        # documents are cut like the items were: the index decides (it may be prebuilt)
        strip = bool(idx.meta["options"]["strip_figures"])
        fields = self._fields(batch, task)
        judging = self._judge is not None
        jcands: list[Any] = []  # decontam.judge.Candidate
        for fname, texts, rows, msg_pos in fields:
            res = scan(texts, idx.ngram, idx.grams, idx.phrase_n, idx.phrases,
                       strip_figures=strip)
            fig = res.figures
            task.counters["figure_code_rows"] += len(fig)
            task.counters["fallback_rows"] += int(len(res.fallback))
            task.counters["python_rows"] += int(res.python_rows)
            task.counters["texts_scanned"] += len(texts)
            if not len(res.hit_row):
                continue
            groups = group_hits(res.hit_row, res.hit_pos, res.hit_kind, res.hit_idx)
            # candidates only: rescan with token output (hashes and char offsets)
            cand = np.array(sorted(groups), dtype=np.int64)
            tok = scan(texts.take(pa.array(cand)), idx.ngram, emit_tokens=True,
                       strip_figures=strip)
            bounds = np.searchsorted(tok.tok_row, np.arange(len(cand) + 1))
            renorm = set(tok.renormalized.tolist())
            for j, r in enumerate(cand.tolist()):
                hits = groups[r]
                a, b = int(bounds[j]), int(bounds[j + 1])
                toks = tok.tok_hash[a:b].tolist()
                if j in renorm:
                    # offsets of NFKC/Python-normalized rows: from corpus.textnorm on the text itself
                    text = texts[r].as_py()
                    _w, starts, ends = token_spans(strip_figure_code(text) if r in fig else text)
                else:
                    starts, ends = tok.tok_start[a:b].tolist(), tok.tok_end[a:b].tolist()
                task.counters["candidate_texts"] += 1
                doc_row = int(rows[r])
                field_name = fname if msg_pos is None else f"{fname}[{int(msg_pos[r])}]"
                for pr in conf.score_row(toks, hits):
                    task.counters["candidate_pairs"] += 1
                    if starts and pr.tok_hi > pr.tok_lo:
                        lo, hi = starts[min(pr.tok_lo, len(starts) - 1)], ends[min(pr.tok_hi, len(ends)) - 1]
                    else:
                        lo = hi = 0
                    if r in fig:
                        lo, hi = _unstrip(lo, fig[r]), _unstrip(hi, fig[r])
                    rows_out.append({
                        "doc_id": ids[doc_row].as_py(), "benchmark": bench[pr.item].as_py(),
                        "item_id": item_ids[pr.item].as_py(), "field": pr.field,
                        "grams_matched": pr.grams_matched, "lcs_ratio": pr.lcs_ratio, "doc_start": lo,
                        "doc_end": hi, "tier": "exact", "matched_grams_sample": pr.sample_json(),
                        "source": src[doc_row].as_py() if src is not None else None,
                        "domain": dom[doc_row].as_py() if dom is not None else None,
                        "removed": False, "doc_field": field_name, "contaminated": pr.contaminated,
                        "_row": doc_row,
                    })
                    if pr.contaminated:
                        task.counters["contaminated_pairs"] += 1
                        removed[doc_row] = True
                        if doc_row not in best or pr.lcs_ratio > best[doc_row][0]:
                            best[doc_row] = (pr.lcs_ratio, pr, field_name)
                    elif judging:
                        task.counters["judge_seen_exact"] += 1
                        if pr.lcs_ratio >= self.cfg.judge_floor:
                            jcands.append(self._candidate(
                                doc_row, ids[doc_row].as_py(), bench[pr.item].as_py(), item_ids[pr.item].as_py(),
                                pr.field, field_name, "exact", pr.lcs_ratio, lo, hi, texts[r].as_py() or "",
                                item=pr.item, grams=pr.grams_matched, sample=pr.sample_json()))
                        else:
                            task.counters["judge_below_floor_exact"] += 1
        fuzzy_best: dict[int, tuple[float, str, str, str, int]] = {}
        if self._fuzzy is not None:
            # near-duplicate tier: it reports the pairs the exact tier did not confirm (a shared
            # n-gram in a solution with a low ratio must not hide a paraphrased question)
            seen = {(m["_row"], m["benchmark"], m["item_id"]) for m in rows_out if m["contaminated"]}
            for fname, texts, rows, msg_pos in fields:
                if self.cfg.fuzzy_fields and fname not in self.cfg.fuzzy_fields:
                    continue
                lsh0 = self._fuzzy.stats.get("candidate_pairs", 0)
                found = self._fuzzy.query(texts, floor=self.cfg.judge_fuzzy_floor if judging else None)
                if judging:
                    lsh = self._fuzzy.stats.get("candidate_pairs", 0) - lsh0
                    task.counters["judge_seen_fuzzy"] += int(lsh) - sum(fm.confirmed for fm in found)
                    task.counters["judge_below_floor_fuzzy"] += int(lsh) - len(found)
                for fm in found:
                    doc_row = int(rows[fm.doc_idx])
                    if (doc_row, fm.benchmark, fm.item_id) in seen:
                        continue
                    field_name = fname if msg_pos is None else f"{fname}[{int(msg_pos[fm.doc_idx])}]"
                    if not fm.confirmed:
                        jcands.append(self._candidate(
                            doc_row, ids[doc_row].as_py(), fm.benchmark, fm.item_id, fm.field, field_name, "fuzzy",
                            fm.lcs_ratio, fm.doc_start, fm.doc_end, texts[fm.doc_idx].as_py() or "",
                            grams=fm.shared, sample=json.dumps(list(fm.shared_sample), ensure_ascii=False)))
                        continue
                    seen.add((doc_row, fm.benchmark, fm.item_id))
                    rows_out.append({
                        "doc_id": ids[doc_row].as_py(), "benchmark": fm.benchmark, "item_id": fm.item_id,
                        "field": fm.field, "grams_matched": fm.shared, "lcs_ratio": fm.lcs_ratio,
                        "doc_start": fm.doc_start, "doc_end": fm.doc_end, "tier": "fuzzy",
                        "matched_grams_sample": json.dumps(list(fm.shared_sample), ensure_ascii=False),
                        "source": src[doc_row].as_py() if src is not None else None,
                        "domain": dom[doc_row].as_py() if dom is not None else None,
                        "removed": False, "doc_field": field_name, "contaminated": True, "_row": doc_row,
                    })
                    task.counters["fuzzy_pairs"] += 1
                    if self.cfg.fuzzy_action == "drop" and not removed[doc_row]:
                        if doc_row not in fuzzy_best or fm.lcs_ratio > fuzzy_best[doc_row][0]:
                            fuzzy_best[doc_row] = (fm.lcs_ratio, fm.benchmark, fm.item_id, field_name, fm.shared)
            for doc_row in fuzzy_best:
                removed[doc_row] = True
        judge_best: dict[int, Any] = {}
        if judging:
            judge_best = self._run_judge(jcands, fields, removed, rows_out, src, dom, ids, task)
        task.extra["check_seconds"] = round(task.extra.get("check_seconds", 0.0) + time.perf_counter() - t0, 3)
        if rows_out:
            for m in rows_out:
                m["removed"] = bool(removed[m.pop("_row")])
            task.side_writer(MATCHES_SIDE).write(pa.Table.from_pylist(rows_out, schema=MATCH_SCHEMA))
        if not removed.any():
            return BatchResult(kept=batch)
        rem = batch.take(pa.array(np.flatnonzero(removed)))
        rem_rows = np.flatnonzero(removed).tolist()
        pairs_per_doc = Counter(m["doc_id"] for m in rows_out if m["contaminated"])
        reasons, verdicts = [], []
        for r in rem_rows:
            if r not in best and r in judge_best:  # removed by the judge tier alone
                jc = judge_best[r]
                reasons.append(f"decontam-judge:{jc.benchmark}")
                verdicts.append(json.dumps({
                    "benchmark": jc.benchmark, "item_id": jc.item_id, "field": jc.field, "doc_field": jc.doc_field,
                    "lcs_ratio": jc.lcs_ratio, "tier": "judge", "judge_source": jc.source,
                    "judge_template": self._judge.template.ref, "judge_model": self.cfg.judge_model,
                    "contaminating_items": pairs_per_doc[ids[r].as_py()]}, ensure_ascii=False, sort_keys=True))
                continue
            if r not in best:  # removed by the fuzzy tier alone
                ratio, b, iid, fname, shared = fuzzy_best[r]
                reasons.append(f"decontam-fuzzy:{b}")
                verdicts.append(json.dumps({
                    "benchmark": b, "item_id": iid, "field": "question", "doc_field": fname, "lcs_ratio": ratio,
                    "shingles_shared": shared, "tier": "fuzzy", "lcs_threshold": self.cfg.fuzzy_lcs_threshold,
                    "contaminating_items": pairs_per_doc[ids[r].as_py()]}, ensure_ascii=False, sort_keys=True))
                continue
            ratio, pr, fname = best[r]
            b = bench[pr.item].as_py()
            n_pairs = pairs_per_doc[ids[r].as_py()]
            reasons.append(f"decontam:{b}")
            verdicts.append(json.dumps({
                "benchmark": b, "item_id": item_ids[pr.item].as_py(), "field": pr.field, "doc_field": fname,
                "lcs_ratio": ratio, "grams_matched": pr.grams_matched, "policy": self.cfg.policy,
                "contaminating_items": n_pairs}, ensure_ascii=False, sort_keys=True))
        rem_t = pa.Table.from_batches([rem])
        for col, vals in ((schema.DECONTAM_VERDICT, verdicts), (schema.REMOVAL_REASON, reasons)):
            arr = pa.array(vals, pa.string())
            if col in rem_t.schema.names:
                rem_t = rem_t.set_column(rem_t.schema.get_field_index(col), col, arr)
            else:
                rem_t = rem_t.append_column(col, arr)
        task.counters["docs_removed"] += len(rem_rows)
        return BatchResult(kept=_keep_slices(batch, removed), removed=rem_t)


def check_index_matches(idx: DecontamIndex, cfg: DecontamConfig, path: str) -> None:
    """A prebuilt index decides the matching options; options set away from their defaults must agree."""
    o = idx.meta["options"]
    defaults = dataclasses.asdict(IndexOptions())
    want = dataclasses.asdict(cfg.index_options())
    diff = [f"{k}: index {o.get(k)!r} vs run {v!r}" for k, v in want.items() if v != defaults[k] and o.get(k) != v]
    if diff:
        raise ConfigError(f"{path}: the index was built with other options ({'; '.join(diff)}); rebuild it "
                          "with the same options or drop them from this run")
    if cfg.benchmarks or cfg.benchmark_file:
        want_names = [b.name for b in load_benchmarks(cfg.benchmarks, cfg.benchmark_file)]
        have = idx.benchmark_names()
        if sorted(want_names) != sorted(have):
            raise ConfigError(f"{path}: the index covers {', '.join(have)} but this run asks for "
                              f"{', '.join(want_names)}; rebuild the index or drop --benchmarks")


# ----------------------------------------------------------------------------- report
def _read_side(folder: str) -> pa.Table:
    files = [cfs.join(folder, n) for n in cfs.listdir(folder) if n.endswith(".parquet")]
    if not files:
        return MATCH_SCHEMA.empty_table()
    return pa.concat_tables([cfs.read_parquet(f).cast(MATCH_SCHEMA) for f in files])


def _count_rows(folder: str) -> int:
    total = 0
    for name in cfs.listdir(folder):
        if name.endswith(".parquet"):
            with cfs.open_file(cfs.join(folder, name), "rb") as fh:
                total += pq.ParquetFile(fh).metadata.num_rows
    return total


def write_report(report: str, run: RunContext, summary: dict[str, Any], cfg: DecontamConfig,
                 index_path: str, fuzzy_meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge per-task match tables into matches.parquet and write summary.json; returns the summary."""
    matches = _read_side(cfs.join(run.side_dir, MATCHES_SIDE))
    if matches.num_rows:
        item_num = pc.cast(matches.column("item_id"), pa.int64(), safe=False) \
            if all(s.isdigit() for s in matches.column("item_id").to_pylist()) else matches.column("item_id")
        order = pc.sort_indices(pa.table({"b": matches.column("benchmark"), "i": item_num,
                                          "d": matches.column("doc_id"), "f": matches.column("doc_field")}),
                                sort_keys=[("b", "ascending"), ("i", "ascending"), ("d", "ascending"),
                                           ("f", "ascending")])
        matches = matches.take(order)
    with cfs.AtomicWriter(cfs.join(report, "matches.parquet")) as w:  # .tmp + rename, or one upload
        pq.write_table(matches, w.file, compression="zstd")

    idx = DecontamIndex.load(cfs.local_dir(index_path)) if index_path else None
    rows = matches.to_pylist()
    contaminated = [m for m in rows if m["contaminated"]]
    # with fuzzy_action=report a fuzzy pair is contaminated but its document is kept
    removed_docs = {m["doc_id"]: m for m in contaminated if m["removed"]}
    n_removed_files = _count_rows(run.removed_dir) if cfs.isdir(run.removed_dir) else 0
    if n_removed_files != summary["removed"]:
        raise FatalError(f"{report}: {summary['removed']} documents were removed but {run.removed_dir} holds "
                         f"{n_removed_files}; the report is incomplete. Rerun with --overwrite.")
    benchmarks: dict[str, Any] = {}
    unchecked = unchecked_counts(idx.meta) if idx else {}
    for b in (idx.meta["benchmarks"] if idx else []):
        name = b["name"]
        found = {m["item_id"] for m in contaminated if m["benchmark"] == name}
        docs = {m["doc_id"] for m in contaminated if m["benchmark"] == name and m["removed"]}
        short = idx.meta["unchecked"].get(name, {}).get("short", []) if idx else []
        benchmarks[name] = {
            "items": b["items"], "items_found": len(found),
            "pct_touched": round(100.0 * len(found) / b["items"], 3) if b["items"] else 0.0,
            "docs_removed": len(docs), "unchecked_short_items": len(short),
            "unchecked_item_ids": unchecked.get(name, (0, []))[1],
            "unchecked_suppressed_items": len(idx.meta["unchecked"].get(name, {}).get("suppressed", [])) if idx else 0,
            "lang": b.get("lang"),
        }
    ratios = np.array([m["lcs_ratio"] for m in rows if m["lcs_ratio"] is not None], dtype=float)
    counts, _ = np.histogram(ratios, bins=HIST_BINS) if len(ratios) else (np.zeros(10, int), None)
    by_source = Counter(m["source"] or "unknown" for m in removed_docs.values())
    by_domain = Counter(m["domain"] or "unknown" for m in removed_docs.values())
    counters = summary.get("counters", {})
    excluded = dict(idx.meta["excluded"]) if idx else {}
    excluded["documents_with_figure_code"] = counters.get("figure_code_rows", 0)
    out = {
        "profile": (idx.meta.get("profile") if idx else None) or cfg.benchmarks or "",
        "benchmarks": benchmarks,
        "docs_in": summary["docs_in"], "docs_kept": summary["kept"], "docs_removed": summary["removed"],
        "bytes_in": summary.get("bytes_in", 0),
        "by_source": dict(sorted(by_source.items())), "by_domain": dict(sorted(by_domain.items())),
        "lcs_histogram": {"bins": HIST_BINS, "counts": [int(c) for c in counts]},
        "candidate_pairs": len(rows), "contaminated_pairs": len(contaminated),
        "excluded": excluded,
        "config": dict(cfg.to_dict(), index=index_path),
        "index": {k: idx.meta[k] for k in ("items", "grams", "phrases", "options")} if idx else {},
        "fuzzy": fuzzy_meta or None,
        "judge": judge_section(cfg, counters),
        "kernel": {"fallback_rows": counters.get("fallback_rows", 0), "python_rows": counters.get("python_rows", 0),
                   "texts_scanned": counters.get("texts_scanned", 0)},
        "matches": cfs.join(report, "matches.parquet"), "removed_dir": run.removed_dir,
        "output": run.output, "mathcorpus_version": __version__,
        "check": "docs_in == docs_kept + docs_removed",
    }
    if out["docs_in"] != out["docs_kept"] + out["docs_removed"]:
        raise FatalError(f"{report}: {out['docs_in']} docs in but {out['docs_kept']} kept + "
                         f"{out['docs_removed']} removed")
    atomic_write_json(cfs.join(report, "summary.json"), out)
    return out
