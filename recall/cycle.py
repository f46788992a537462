"""The multi-cycle recall loop of DeepSeekMath, as a resumable, auditable object.

Each cycle:

1. **train**: per pool source (web, book, code, ...), fastText on positives (the seed, plus
   pool pages under accepted URL prefixes) against a random sample of that source's pool;
2. **score**: the ``recall-score`` stage tags the whole pool (on the stage runner, so any
   executor works and a killed scoring run resumes);
3. **stats**: documents recalled, score histogram, overlap with the previous cycle, recall
   of the held-out part of the seed, and per-domain recall rates. Domains where more than
   ``domain_threshold`` (10%) of pages were recalled are math domains; their URL path
   prefixes recalled at ``path_threshold`` or more become expansion candidates;
4. **review**: candidates go to ``cycle-NNN/candidates.yaml``; ``auto_accept`` accepts
   them, otherwise the loop pauses until a person sets ``accept: true`` on the math ones
   and ``reviewed: true``, then reruns the same command;
5. **expand**: pool pages under every accepted prefix join the positives of the next cycle.

The loop stops after ``cycles`` cycles, when the share of newly recalled documents falls
below ``stop_new_share``, or when a review adds no new pages.

Workdir layout (every file written atomically)::

    W/state.json          format + version, config, fingerprint, per-cycle step records
    W/history.jsonl       append-only audit log: one line per finished step, with file hashes
    W/seed.parquet        the seed with its held-out flag
    W/score.yaml          config for `recall score` with the latest models and thresholds
    W/cycle-001/          model-<source>.bin/.json, scores/, recalled.parquet, domains.parquet,
                          candidates.yaml, expansion.parquet, stats.json

A killed run resumes at the first unfinished step; a finished run can be extended with a
larger ``cycles``. Changing anything else (inputs, thresholds, training options) is refused.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import xxhash
import yaml

from corpus import __version__, schema
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError, FatalError, InputError
from corpus.runner import RunOptions, run_stage
from corpus.shards import atomic_write_bytes, atomic_write_json, file_sha256, iter_batches, list_input_files
from recall.model import MATH, NON_MATH, SOURCES, LabelledData, RecallModel, TrainConfig, train
from recall.stage import HIST_BINS, ScoreConfig, ScoreStage

STATE_FORMAT = "mathcorpus-recall-cycle"
STATE_VERSION = 1
STEPS = ("train", "score", "stats", "review", "expand")
# options that may change when resuming: extending the loop or accepting is not a new run
_RESUMABLE = ("cycles", "auto_accept", "stop_new_share")


@dataclass
class CycleConfig(StageConfig):
    """Options of ``recall cycle`` (section ``recall_cycle``)."""

    section: ClassVar[str] = "recall_cycle"

    seed: list[str] = opt(help="Seed math documents (files, folders, globs): id, text, optional source/url; "
                               "with a label column only label=math rows are used.", factory=list, cli=False)
    pool: list[str] = opt(help="The pool to recall from: id, text, url (for domain statistics), optional "
                               "source (web/book/code).", factory=list, cli=False)
    workdir: str = opt("", help="Folder holding the versioned cycle state.", cli=False)
    cycles: int = opt(4, help="Maximal number of cycles (DeepSeekMath ran four).")
    negatives: list[str] = opt(help="Optional non-math documents to train against instead of a random pool "
                                    "sample.", factory=list)
    negatives_per_positive: float = opt(1.0, help="Random pool documents sampled as negatives per positive.")
    threshold: float = opt(0.5, help="math_score at or above which a pool document counts as recalled.")
    source_thresholds: dict[str, float] = opt(help="Per-source recall thresholds, e.g. web=0.6,code=0.4.",
                                              factory=dict)
    domain_threshold: float = opt(0.1, help="A domain with more than this share of its pages recalled is a "
                                            "math domain.")
    path_threshold: float = opt(0.3, help="Within a math domain, URL path prefixes with at least this share "
                                          "recalled are proposed for the seed.")
    min_domain_pages: int = opt(20, help="Ignore domains with fewer pool pages than this.")
    min_path_pages: int = opt(5, help="Ignore URL path prefixes with fewer pool pages than this.")
    path_depth: int = opt(2, help="Deepest URL path prefix proposed (/a/ is depth 1, /a/b/ depth 2).")
    auto_accept: bool = opt(False, help="Accept every candidate without review.")
    stop_new_share: float = opt(0.02, help="Stop when fewer than this share of the recalled documents are new "
                                           "compared to the previous cycle.")
    seed_holdout: float = opt(0.1, help="Share of the seed held out to measure recall each cycle.")
    min_source_seed: int = opt(50, help="A source with fewer seed documents than this trains on the whole seed.")
    default_source: str = opt("web", help="Source assumed for documents without one.")
    train: dict[str, Any] = opt(help="Options for each cycle's `recall train`, e.g. dim=64,bucket=200000 "
                                     "(see `mathcorpus recall train --help`).", factory=dict)

    def validate(self) -> None:
        if self.cycles < 1:
            raise ConfigError(f"recall cycle option 'cycles' must be at least 1, got {self.cycles}")
        for name in ("threshold", "domain_threshold", "path_threshold", "stop_new_share"):
            v = getattr(self, name)
            if not 0 <= v <= 1:
                raise ConfigError(f"recall cycle option '{name}' must be in [0, 1], got {v}")
        if not 0 <= self.seed_holdout < 1:
            raise ConfigError(f"recall cycle option 'seed_holdout' must be in [0, 1), got {self.seed_holdout}")
        if self.negatives_per_positive <= 0:
            raise ConfigError("recall cycle option 'negatives_per_positive' must be above 0")
        if self.path_depth < 0:
            raise ConfigError("recall cycle option 'path_depth' must be 0 or more")
        self.train_config()

    def train_config(self, source: str | None = None) -> TrainConfig:
        data = dict(self.train)
        for k in ("source", "lang"):
            data.pop(k, None)
        cfg = TrainConfig.from_mapping(data, source="recall cycle option 'train'")
        if source is not None:
            cfg = cfg.replace(source=source if source in SOURCES else "web")
        return cfg

    def threshold_for(self, source: str) -> float:
        return float(self.source_thresholds.get(source, self.threshold))


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")




def _hash_ids(ids: Sequence[str], seed: int) -> np.ndarray:
    return np.fromiter((xxhash.xxh3_64_intdigest(i.encode("utf-8"), seed) for i in ids), dtype=np.uint64,
                       count=len(ids))


def _write_parquet(path: str, table: pa.Table) -> None:
    tmp = path + ".tmp"
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, path)


def _url_path(urls: pa.Array) -> pa.Array:
    """Path part of each URL ("/" when there is none), lowercased; null where no URL."""
    m = pc.extract_regex(pc.utf8_lower(urls), r"^(?:[a-z][a-z0-9+.-]*://)?[^/?#]*(?P<path>/[^?#]*)?")
    path = pc.struct_field(m, "path")
    return pc.if_else(pc.or_(pc.is_null(path), pc.equal(path, "")), pa.scalar("/"), path)


def _prefix(paths: pa.Array, depth: int) -> pa.Array:
    """The first ``depth`` directory segments ("/a/" or "/a/b/"); null for shallower pages."""
    if depth == 0:
        return pa.repeat(pa.scalar("/"), len(paths))
    m = pc.extract_regex(paths, "^(?P<p>" + "/[^/]+" * depth + "/)")
    return pc.struct_field(m, "p")


def _string_column(batch: pa.RecordBatch, name: str, default: str | None = None) -> pa.Array:
    if name not in batch.schema.names:
        return pa.repeat(pa.scalar(default, pa.string()), batch.num_rows) if default is not None \
            else pa.nulls(batch.num_rows, pa.string())
    col = batch.column(name)
    if not pa.types.is_string(col.type):
        col = pc.cast(col, pa.string())
    return pc.fill_null(col, default) if default is not None else col


class CycleRun:
    """One recall-cycle workdir: its state, and the steps that advance it."""

    def __init__(self, cfg: CycleConfig, run_options: RunOptions | None = None,
                 log: Callable[[str], None] | None = None) -> None:
        if not cfg.seed:
            raise ConfigError("recall cycle needs seed documents: pass --seed FILE")
        if not cfg.pool:
            raise ConfigError("recall cycle needs a pool: pass --pool FILE")
        if not cfg.workdir:
            raise ConfigError("recall cycle needs a work folder: pass --workdir W")
        self.cfg = cfg
        self.opts = run_options or RunOptions()
        self.w = cfg.workdir
        self.log = log or (lambda msg: None)
        self.seed_files = list_input_files(cfg.seed)
        self.pool_files = list_input_files(cfg.pool)
        self.neg_files = list_input_files(cfg.negatives) if cfg.negatives else []
        self.state: dict[str, Any] = {}
        self._extended = False

    # -- state -----------------------------------------------------------------------------
    @property
    def state_path(self) -> str:
        return os.path.join(self.w, "state.json")

    def cycle_dir(self, k: int) -> str:
        return os.path.join(self.w, f"cycle-{k:03d}")

    def fingerprint(self) -> dict[str, Any]:
        """What must not change on resume: options, and the input files (absolute path, size)."""
        skip = set(_RESUMABLE) | {"seed", "pool", "negatives", "workdir"}  # files are compared below
        conf = {k: v for k, v in self.cfg.to_dict().items() if k not in skip}
        files = {name: [{"path": os.path.abspath(f), "bytes": os.path.getsize(f) if os.path.exists(f) else None}
                        for f in fl]
                 for name, fl in (("seed", self.seed_files), ("pool", self.pool_files), ("negatives", self.neg_files))}
        return {"config": conf, "files": files}

    def _load_or_init(self) -> None:
        fp = self.fingerprint()
        if os.path.exists(self.state_path):
            try:
                with open(self.state_path, encoding="utf-8") as fh:
                    st = json.load(fh)
            except json.JSONDecodeError as exc:
                raise FatalError(f"{self.state_path}: unreadable cycle state ({exc}); restore it from "
                                 "history.jsonl or start a new workdir") from exc
            if st.get("format") != STATE_FORMAT:
                raise ConfigError(f"{self.state_path}: not a recall-cycle state file")
            if st.get("format_version") != STATE_VERSION:
                raise ConfigError(f"{self.state_path}: state format version {st.get('format_version')}, this "
                                  f"mathcorpus reads version {STATE_VERSION}; use a new workdir")
            if st.get("fingerprint") != fp:
                changed = _diff_keys(st.get("fingerprint", {}), fp)
                raise ConfigError(f"{self.w}: holds a recall cycle run with other inputs or options (changed: "
                                  f"{', '.join(changed) or 'unknown'}); use a new --workdir, or only change "
                                  f"{', '.join(_RESUMABLE)} to resume")
            self.state = st
            self.state["config"]["cycles"] = self.cfg.cycles
            self.state["config"]["auto_accept"] = self.cfg.auto_accept
            self.state["config"]["stop_new_share"] = self.cfg.stop_new_share
            if st.get("status") == "awaiting_review":
                self.state["status"] = "running"  # read the review file again
            if st.get("status") == "done" and st.get("stop_reason") == "max_cycles" \
                    and self.cfg.cycles > len(st["cycles"]):
                self.state["status"] = "running"
                self.state["stop_reason"] = None
                self._extended = True
            return
        if os.path.isdir(self.w) and any(not n.startswith(".") for n in os.listdir(self.w)):
            raise ConfigError(f"{self.w}: the folder exists, is not empty and holds no recall cycle state; "
                              "choose another --workdir")
        os.makedirs(self.w, exist_ok=True)
        self.state = {"format": STATE_FORMAT, "format_version": STATE_VERSION, "mathcorpus_version": __version__,
                      "created": _now(), "revision": 0, "config": self.cfg.to_dict(), "fingerprint": fp,
                      "status": "running", "stop_reason": None, "census": None, "cycles": [],
                      "accepted": [], "reviewed": []}
        self._save()

    def _save(self) -> None:
        self.state["revision"] = int(self.state.get("revision", 0)) + 1
        self.state["updated"] = _now()
        atomic_write_json(self.state_path, self.state)

    def _record(self, cycle: int, step: str, info: dict[str, Any]) -> None:
        """Save the state and append the step to the audit log."""
        self._save()
        line = json.dumps({"time": _now(), "revision": self.state["revision"], "cycle": cycle, "step": step,
                           "info": info}, sort_keys=True, default=str)
        with open(os.path.join(self.w, "history.jsonl"), "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def _cycle(self, k: int) -> dict[str, Any]:
        while len(self.state["cycles"]) < k:
            self.state["cycles"].append({"cycle": len(self.state["cycles"]) + 1, "steps": {}})
        return self.state["cycles"][k - 1]

    # -- lock --------------------------------------------------------------------------------
    def _lock(self) -> None:
        path = os.path.join(self.w, ".lock")
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(open(path, encoding="utf-8").read().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise ConfigError(f"{self.w}: another recall cycle (pid {pid}) is running in this workdir; "
                                  "wait for it or stop it") from None
            os.unlink(path)  # a killed run left it behind
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)

    def _unlock(self) -> None:
        try:
            os.unlink(os.path.join(self.w, ".lock"))
        except FileNotFoundError:
            pass

    # -- driver ------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Advance the loop as far as it can go; returns :meth:`summary`."""
        self._load_or_init()
        self._lock()
        try:
            if self._extended:
                self._record(0, "extend", {"cycles": self.cfg.cycles})
            if self.state["census"] is None:
                self._init_step()
            while self.state["status"] == "running":
                k = len(self.state["cycles"]) or 1
                cyc = self._cycle(k)
                step = next((s for s in STEPS if s not in cyc["steps"]), None)
                if step is None:
                    self._cycle(k + 1)
                    continue
                getattr(self, f"_step_{step}")(k)
        finally:
            self._unlock()
        return self.summary()

    def summary(self) -> dict[str, Any]:
        cycles = []
        for c in self.state.get("cycles", []):
            st = c["steps"].get("stats", {})
            rv = c["steps"].get("review", {})
            ex = c["steps"].get("expand", {})
            cycles.append({"cycle": c["cycle"], "recalled": st.get("recalled"), "new": st.get("new"),
                           "new_share": st.get("new_share"), "overlap_previous": st.get("overlap_previous"),
                           "heldout_seed_recall": st.get("heldout_seed_recall"),
                           "recalled_by_source": st.get("recalled_by_source"),
                           "candidates": rv.get("candidates"), "accepted": rv.get("accepted"),
                           "positives_added": ex.get("added"), "models": c["steps"].get("train", {}).get("models")})
        return {"workdir": self.w, "status": self.state.get("status"), "stop_reason": self.state.get("stop_reason"),
                "revision": self.state.get("revision"), "cycles": cycles,
                "accepted_prefixes": self.state.get("accepted", []),
                "review_file": self.state.get("awaiting_review"),
                "score_config": os.path.join(self.w, "score.yaml")}

    # -- reading -----------------------------------------------------------------------------
    def _pool_batches(self) -> Iterator[pa.RecordBatch]:
        for path in self.pool_files:
            for batch in iter_batches(path, self.opts.batch_rows):
                yield batch

    def _sources(self, batch: pa.RecordBatch) -> pa.Array:
        return _string_column(batch, schema.SOURCE, self.cfg.default_source)

    def _read_seed(self) -> pa.Table:
        parts = []
        for path in self.seed_files:
            for b in iter_batches(path, self.opts.batch_rows):
                if "label" in b.schema.names:
                    b = b.filter(pc.fill_null(pc.equal(pc.cast(b.column("label"), pa.string()), MATH), False))
                parts.append(pa.table({
                    "id": b.column("id"), "text": b.column("text"), "source": self._sources(b),
                    "url": _string_column(b, schema.URL)}))
        if not parts or sum(p.num_rows for p in parts) == 0:
            raise InputError(f"{', '.join(self.seed_files)}: the seed holds no math documents; pass files with "
                             "'id' and 'text' (and label=math when a label column is present)")
        return pa.concat_tables(parts)

    def _read_negatives(self) -> pa.Table:
        parts = []
        for path in self.neg_files:
            for b in iter_batches(path, self.opts.batch_rows):
                if "label" in b.schema.names:
                    b = b.filter(pc.fill_null(pc.equal(pc.cast(b.column("label"), pa.string()), NON_MATH), False))
                parts.append(pa.table({"id": b.column("id"), "text": b.column("text"), "source": self._sources(b)}))
        if not parts or sum(p.num_rows for p in parts) == 0:
            raise InputError(f"{', '.join(self.neg_files)}: no non-math documents found for --negatives")
        return pa.concat_tables(parts)

    # -- steps -------------------------------------------------------------------------------
    def _init_step(self) -> None:
        """Split the seed (held-out part by id hash) and count the pool per source."""
        seed = self._read_seed()
        ids = seed.column("id").to_pylist()
        if len(set(ids)) != len(ids):
            dup = next(i for i, c in Counter(ids).items() if c > 1)
            raise InputError(f"{', '.join(self.seed_files)}: seed id '{dup}' appears more than once; ids must "
                             "be unique")
        seed_k = int(self.cfg.train_config().seed)
        cut = int(self.cfg.seed_holdout * 2**64)
        hold = np.fromiter((xxhash.xxh3_64_intdigest(i.encode("utf-8"), seed_k + 7919) < cut for i in ids),
                           dtype=bool, count=len(ids))
        seed = seed.append_column("holdout", pa.array(hold))
        _write_parquet(os.path.join(self.w, "seed.parquet"), seed)
        counts: Counter = Counter()
        with_url = 0
        total = 0
        for b in self._pool_batches():
            total += b.num_rows
            counts.update({d["values"]: d["counts"] for d in pc.value_counts(self._sources(b)).to_pylist()})
            if schema.URL in b.schema.names:
                with_url += int(pc.sum(pc.invert(pc.is_null(b.column(schema.URL)))).as_py() or 0)
        if total == 0:
            raise InputError(f"{', '.join(self.pool_files)}: the pool holds no documents")
        self.state["census"] = {"pool_docs": total, "pool_by_source": dict(sorted(counts.items())),
                                "pool_with_url": with_url, "seed_docs": len(ids),
                                "seed_holdout": int(hold.sum()),
                                "seed_by_source": dict(sorted(Counter(seed.column("source").to_pylist()).items()))}
        if with_url == 0:
            self.log("warning: the pool has no url column; domain expansion needs URLs, so no candidates will "
                     "be proposed")
        self._record(0, "init", self.state["census"])

    def _positives(self, k: int, source: str, seed: pa.Table) -> pa.Table:
        """Seed (training part) for ``source`` plus expansion pages from earlier reviews."""
        train_seed = seed.filter(pc.invert(seed.column("holdout")))
        own = train_seed.filter(pc.equal(train_seed.column("source"), source))
        base = own if own.num_rows >= self.cfg.min_source_seed else train_seed
        base = base.select(["id", "text", "source"])
        if k > 1:
            exp_path = os.path.join(self.cycle_dir(k - 1), "expansion.parquet")
            if os.path.exists(exp_path):
                exp = pq.read_table(exp_path, columns=["id", "text", "source"])
                exp = exp.filter(pc.equal(exp.column("source"), source))
                base = pa.concat_tables([base, exp])
        return base

    def _heldout_targets(self, source: str, seed: pa.Table) -> pa.Table:
        hold = seed.filter(seed.column("holdout"))
        train_seed = seed.filter(pc.invert(seed.column("holdout")))
        own = train_seed.filter(pc.equal(train_seed.column("source"), source))
        if own.num_rows >= self.cfg.min_source_seed:
            return hold.filter(pc.equal(hold.column("source"), source))
        return hold

    def _sample_negatives(self, need: dict[str, int], exclude: set[str]) -> dict[str, pa.Table]:
        """For each source, the ``need`` pool documents with the smallest id hash (not positives)."""
        seed_k = int(self.cfg.train_config().seed)
        by_source = self.state["census"]["pool_by_source"]
        rate = {s: min(1.0, 3.0 * n / max(1, by_source.get(s, 0)) + 1e-9) for s, n in need.items()}
        keep: dict[str, list[pa.Table]] = {s: [] for s in need}
        excluded = pa.array(sorted(exclude), pa.string())
        for b in self._pool_batches():
            src = self._sources(b)
            ids = b.column("id").to_pylist()
            h = _hash_ids(ids, seed_k + 104729)
            for s in need:
                cut = np.uint64(min(2**64 - 1, int(rate[s] * 2**64)))
                m = (h < cut) & pc.equal(src, s).to_numpy(zero_copy_only=False)
                if len(excluded):
                    m &= ~pc.is_in(b.column("id"), excluded).to_numpy(zero_copy_only=False)
                idx = np.flatnonzero(m)
                if idx.size:
                    keep[s].append(pa.table({"id": b.column("id").take(pa.array(idx)),
                                             "text": b.column("text").take(pa.array(idx)),
                                             "source": src.take(pa.array(idx)),
                                             "h": pa.array(h[idx])}))
        out: dict[str, pa.Table] = {}
        for s, parts in keep.items():
            if not parts:
                out[s] = pa.table({"id": pa.array([], pa.string()), "text": pa.array([], pa.string()),
                                   "source": pa.array([], pa.string())})
                continue
            t = pa.concat_tables(parts).sort_by("h")
            out[s] = t.slice(0, need[s]).drop_columns(["h"])
        return out

    def _step_train(self, k: int) -> None:
        seed = pq.read_table(os.path.join(self.w, "seed.parquet"))
        sources = sorted(self.state["census"]["pool_by_source"])
        d = self.cycle_dir(k)
        os.makedirs(d, exist_ok=True)
        positives = {s: self._positives(k, s, seed) for s in sources}
        if self.neg_files:
            negs_all = self._read_negatives()
            negatives = {}
            for s in sources:
                own = negs_all.filter(pc.equal(negs_all.column("source"), s))
                negatives[s] = own if own.num_rows else negs_all
        else:
            need = {s: max(1, math.ceil(self.cfg.negatives_per_positive * positives[s].num_rows)) for s in sources}
            exclude = set(seed.column("id").to_pylist())
            for s in sources:
                exclude.update(positives[s].column("id").to_pylist())
            negatives = self._sample_negatives(need, exclude)
        models: dict[str, Any] = {}
        for s in sources:
            pos, neg = positives[s], negatives[s]
            if neg.num_rows == 0:
                raise InputError(f"pool source '{s}': no negative documents could be sampled; the pool has "
                                 f"{self.state['census']['pool_by_source'].get(s, 0)} documents of that source")
            data = LabelledData(pos.column("id").to_pylist() + neg.column("id").to_pylist(),
                                pa.concat_arrays([pc.cast(pos.column("text"), pa.string()).combine_chunks(),
                                                  pc.cast(neg.column("text"), pa.string()).combine_chunks()]),
                                np.concatenate([np.ones(pos.num_rows, np.int8), np.zeros(neg.num_rows, np.int8)]),
                                ["positive"] * pos.num_rows + ["pool_sample"] * neg.num_rows)
            cfg = self.cfg.train_config(s)
            path = os.path.join(d, f"model-{_safe(s)}.bin")
            self.log(f"cycle {k}: training the {s} model on {pos.num_rows:,} positives and {neg.num_rows:,} "
                     "pool negatives")
            rep = train(data, path, cfg, inputs=[f"cycle {k} {s} training set"],
                        extra={"cycle": k, "pool_source": s})
            models[s] = {"path": os.path.relpath(path, self.w), "tag": rep["tag"], "sha256": rep["sha256"],
                         "positives": pos.num_rows,
                         "negatives": neg.num_rows, "eval": _short_eval(rep.get("eval"))}
        score_cfg = {"model": self._model_path(models[self._main_source()]),
                     "source_models": {s: self._model_path(m) for s, m in models.items()},
                     "source_thresholds": {s: self.cfg.threshold_for(s) for s in sources},
                     "default_source": self.cfg.default_source}
        self._write_score_yaml(k, score_cfg)
        self._cycle(k)["steps"]["train"] = {"done": _now(), "models": models}
        self._record(k, "train", {"models": {s: {"tag": m["tag"], "sha256": m["sha256"]} for s, m in models.items()}})

    def _model_path(self, model: dict[str, Any]) -> str:
        """Absolute path of a model recorded in the state (stored relative to the workdir)."""
        return os.path.abspath(os.path.join(self.w, model["path"]))

    def _main_source(self) -> str:
        by = self.state["census"]["pool_by_source"]
        return max(sorted(by), key=lambda s: by[s])

    def _write_score_yaml(self, k: int, score_cfg: dict[str, Any]) -> None:
        text = (f"# Models and thresholds of recall cycle {k}. Score a pool with them:\n"
                f"#   mathcorpus recall score POOL -o OUT --config {os.path.join(self.w, 'score.yaml')}\n"
                "# (executor options such as workers may be added in an `executor:` section)\n"
                + yaml.safe_dump({ScoreConfig.section: score_cfg}, sort_keys=True))
        atomic_write_bytes(os.path.join(self.w, "score.yaml"), text.encode("utf-8"))

    def _step_score(self, k: int) -> None:
        models = self._cycle(k)["steps"]["train"]["models"]
        sources = sorted(models)
        cfg = ScoreConfig(model=self._model_path(models[self._main_source()]),
                          source_models={s: self._model_path(models[s]) for s in sources},
                          source_thresholds={s: self.cfg.threshold_for(s) for s in sources},
                          tag_only=True, cycle=k, default_source=self.cfg.default_source,
                          select_columns=[schema.ID, schema.URL, schema.DOMAIN, schema.SOURCE])
        cfg.validate()
        out = os.path.join(self.cycle_dir(k), "scores")
        self.log(f"cycle {k}: scoring the pool ({self.state['census']['pool_docs']:,} documents)")
        summary = run_stage(ScoreStage(cfg), self.pool_files, out, self.opts)
        self._cycle(k)["steps"]["score"] = {"done": _now(), "output": os.path.relpath(out, self.w),
                                            "docs": summary.get("docs_in"),
                                            "seconds": summary.get("seconds")}
        self._record(k, "score", {"output": os.path.relpath(out, self.w), "docs": summary.get("docs_in")})

    def _score_batches(self, k: int) -> Iterator[pa.Table]:
        """id, source, math_score, url, domain, recalled of the pool scored in cycle ``k``, in batches."""
        # no text column, so not through iter_batches (which requires id and text)
        for path in list_input_files(os.path.join(self.cycle_dir(k), "scores")):
            for b in pq.ParquetFile(path).iter_batches(batch_size=self.opts.batch_rows * 8):
                src = self._sources(b)
                scores = b.column(schema.MATH_SCORE).to_numpy(zero_copy_only=False)
                thr = np.full(len(scores), self.cfg.threshold)
                for name, t in self.cfg.source_thresholds.items():
                    thr[pc.equal(src, name).to_numpy(zero_copy_only=False)] = t
                yield pa.table({"id": b.column("id"), "source": src, "math_score": b.column(schema.MATH_SCORE),
                                "url": _string_column(b, schema.URL), "domain": _string_column(b, schema.DOMAIN),
                                "recalled": pa.array(scores >= thr)})

    def _step_stats(self, k: int) -> None:
        """One streaming pass over the cycle's scores (a second one only over math domains)."""
        hist: dict[str, np.ndarray] = {}
        by_source: Counter = Counter()
        recalled_parts: list[pa.Table] = []
        domain_parts: list[pa.Table] = []
        n_docs = 0
        for t in self._score_batches(k):
            n_docs += t.num_rows
            src = t.column("source")
            scores = t.column("math_score").to_numpy(zero_copy_only=False)
            rec = t.column("recalled").to_numpy(zero_copy_only=False)
            for name in pc.unique(src).to_pylist():
                m = pc.equal(src, name).to_numpy(zero_copy_only=False)
                h = np.histogram(scores[m], bins=HIST_BINS, range=(0.0, 1.0))[0]
                hist[name] = hist.get(name, np.zeros(HIST_BINS, np.int64)) + h
                by_source[name] += int(rec[m].sum())
            recalled_parts.append(t.filter(t.column("recalled")).select(["id", "source", "domain", "math_score"]))
            has = t.filter(pc.invert(pc.is_null(t.column("domain"))))
            if has.num_rows:
                domain_parts.append(has.group_by("domain").aggregate([("recalled", "sum"), ("recalled", "count")]))
        recalled = pa.concat_tables(recalled_parts).sort_by("id")
        d = self.cycle_dir(k)
        _write_parquet(os.path.join(d, "recalled.parquet"), recalled)
        n_rec = recalled.num_rows
        prev_ids: pa.Array | None = None
        if k > 1:
            prev_ids = pq.read_table(os.path.join(self.cycle_dir(k - 1), "recalled.parquet"), columns=["id"]) \
                .column("id").combine_chunks()
        if prev_ids is None:
            inter, new, overlap, jacc = 0, n_rec, None, None
        else:
            cur_ids = recalled.column("id").combine_chunks()
            inter = int(pc.sum(pc.is_in(cur_ids, prev_ids)).as_py() or 0)
            new = n_rec - inter
            overlap = inter / len(prev_ids) if len(prev_ids) else None
            union = n_rec + len(prev_ids) - inter
            jacc = inter / union if union else None
        heldout = self._heldout_recall(k)
        domains, candidates = self._domain_stats(domain_parts, k)
        _write_parquet(os.path.join(d, "domains.parquet"), domains)
        stats = {"cycle": k, "pool_docs": n_docs, "recalled": n_rec,
                 "recalled_by_source": dict(sorted(by_source.items())),
                 "new": new, "new_share": (new / n_rec) if n_rec else 0.0, "kept_from_previous": inter,
                 "overlap_previous": overlap, "jaccard_previous": jacc, "heldout_seed_recall": heldout,
                 "histogram": {"bins": HIST_BINS, "by_source": {n: h.tolist() for n, h in sorted(hist.items())}},
                 "math_domains": int(pc.sum(domains.column("math_domain")).as_py() or 0) if domains.num_rows else 0,
                 "candidates": candidates}
        atomic_write_json(os.path.join(d, "stats.json"), stats)
        step = {k2: v for k2, v in stats.items() if k2 not in ("candidates", "histogram")}
        step["done"] = _now()
        step["candidates"] = len(candidates)
        self._cycle(k)["steps"]["stats"] = step
        self.log(f"cycle {k}: recalled {n_rec:,} of {n_docs:,} ({new:,} new); held-out seed recall "
                 f"{_fmt(heldout.get('all'))}; {len(candidates)} expansion candidate(s)")
        stop = None
        if k > 1 and stats["new_share"] < self.cfg.stop_new_share:
            stop = "converged"
        elif k >= self.cfg.cycles:
            stop = "max_cycles"
        info = {"recalled": n_rec, "new": new, "new_share": stats["new_share"], "candidates": len(candidates),
                "recalled_sha256": file_sha256(os.path.join(d, "recalled.parquet"))}
        if stop:
            self.state["status"] = "done"
            self.state["stop_reason"] = stop
            info["stop"] = stop
        self._record(k, "stats", info)

    def _heldout_recall(self, k: int) -> dict[str, Any]:
        seed = pq.read_table(os.path.join(self.w, "seed.parquet"))
        models = self._cycle(k)["steps"]["train"]["models"]
        out: dict[str, Any] = {}
        hits = total = 0
        for s in sorted(models):
            target = self._heldout_targets(s, seed)
            if target.num_rows == 0:
                continue
            scores = RecallModel(self._model_path(models[s])).score(target.column("text").combine_chunks())
            got = int((scores >= self.cfg.threshold_for(s)).sum())
            out[s] = got / target.num_rows
            hits += got
            total += target.num_rows
        out["all"] = hits / total if total else None
        out["documents"] = total
        return out

    def _domain_stats(self, parts: list[pa.Table], k: int) -> tuple[pa.Table, list[dict[str, Any]]]:
        """Per-domain recall rates (from per-batch partial counts) and the URL path prefixes
        proposed for expansion (from a second pass over the math domains' pages only)."""
        if not parts:
            return pa.table({"domain": pa.array([], pa.string()), "pages": pa.array([], pa.int64()),
                             "recalled": pa.array([], pa.int64()), "recall_rate": pa.array([], pa.float64()),
                             "math_domain": pa.array([], pa.bool_())}), []
        g = pa.concat_tables(parts).group_by("domain").aggregate([("recalled_sum", "sum"), ("recalled_count", "sum")])
        g = pa.table({"domain": g.column("domain"), "pages": pc.cast(g.column("recalled_count_sum"), pa.int64()),
                      "recalled": pc.cast(g.column("recalled_sum_sum"), pa.int64())})
        rate = pc.divide(pc.cast(g.column("recalled"), pa.float64()), pc.cast(g.column("pages"), pa.float64()))
        math_dom = pc.and_(pc.greater(rate, self.cfg.domain_threshold),
                           pc.greater_equal(g.column("pages"), self.cfg.min_domain_pages))
        g = g.append_column("recall_rate", rate).append_column("math_domain", math_dom)
        g = g.sort_by([("recalled", "descending"), ("domain", "ascending")])
        mdoms = g.filter(g.column("math_domain"))
        if mdoms.num_rows == 0:
            return g, []
        sub = pa.concat_tables([t.filter(pc.fill_null(pc.is_in(t.column("domain"), mdoms.column("domain")), False))
                                .select(["domain", "url", "recalled"]) for t in self._score_batches(k)])
        reviewed = {(r["domain"], r["path_prefix"]) for r in self.state.get("reviewed", [])}
        accepted = [(r["domain"], r["path_prefix"]) for r in self.state.get("accepted", [])]
        sub = sub.combine_chunks()
        paths = _url_path(sub.column("url").combine_chunks())
        dom_info = {r["domain"]: r for r in mdoms.to_pylist()}
        levels: dict[int, dict[tuple[str, str], tuple[int, int]]] = {}
        for depth in range(0, self.cfg.path_depth + 1):
            pre = _prefix(paths, depth)
            tt = pa.table({"domain": sub.column("domain"), "prefix": pre, "recalled": sub.column("recalled"),
                           "url": sub.column("url")}).filter(pc.invert(pc.is_null(pre)))
            if tt.num_rows == 0:
                levels[depth] = {}
                continue
            agg = tt.group_by(["domain", "prefix"]).aggregate([("recalled", "sum"), ("recalled", "count")])
            rows = {}
            for r in agg.to_pylist():
                rows[(r["domain"], r["prefix"])] = (int(r["recalled_count"]), int(r["recalled_sum"]))
            levels[depth] = rows
        # Directory prefixes, shallowest first: /questions/ is proposed, /news/ on the same
        # domain is not; a mixed prefix is looked into one level deeper. The whole domain
        # ("/") is proposed only for flat sites whose pages sit in no qualifying directory.
        candidates: list[dict[str, Any]] = []
        chosen: list[tuple[str, str]] = []
        order = list(range(1, self.cfg.path_depth + 1)) + [0]
        for depth in order:
            for (dom, pre), (pages, rec) in sorted(levels[depth].items()):
                if pages < self.cfg.min_path_pages or rec / pages < self.cfg.path_threshold:
                    continue
                if depth == 0 and any(d == dom for d, _ in chosen + accepted):
                    continue  # the domain has math directories: propose those, not all of it
                if any(dom == d and pre.startswith(p) for d, p in chosen + accepted):
                    continue  # covered by a shorter prefix
                chosen.append((dom, pre))
                if (dom, pre) in reviewed:
                    continue
                mask = pc.and_(pc.equal(sub.column("domain"), dom), pc.starts_with(paths, pre))
                ex = sub.filter(pc.and_(mask, sub.column("recalled"))).column("url").to_pylist()
                candidates.append({"domain": dom, "path_prefix": pre, "pages": pages, "recalled": rec,
                                   "recall_rate": round(rec / pages, 4),
                                   "domain_pages": int(dom_info[dom]["pages"]),
                                   "domain_recall_rate": round(float(dom_info[dom]["recall_rate"]), 4),
                                   "examples": sorted(u for u in ex if u)[:3]})
        return g, candidates

    def _step_review(self, k: int) -> None:
        d = self.cycle_dir(k)
        path = os.path.join(d, "candidates.yaml")
        if not os.path.exists(path):
            stats = json.load(open(os.path.join(d, "stats.json"), encoding="utf-8"))
            cands = [dict(c, accept=bool(self.cfg.auto_accept)) for c in stats["candidates"]]
            # nothing proposed: no reason to stop for a person
            by = "auto-accept" if self.cfg.auto_accept else ("no candidates" if not cands else None)
            doc = {"cycle": k, "reviewed": by is not None, "reviewed_by": by, "candidates": cands}
            header = (f"# Expansion candidates of recall cycle {k} (domains with more than "
                      f"{self.cfg.domain_threshold:.0%} of pages recalled).\n"
                      "# Set accept: true on the URL prefixes whose pages are math (you may add entries with\n"
                      "# domain and path_prefix), then set reviewed: true and rerun the same command.\n")
            atomic_write_bytes(path, (header + yaml.safe_dump(doc, sort_keys=False, allow_unicode=True)).encode())
        doc = _load_review(path)
        if not doc["reviewed"]:
            if self.cfg.auto_accept:  # paused for review earlier, now resumed with --auto-accept
                doc["reviewed"] = True
                doc["candidates"] = [dict(c, accept=True) for c in doc["candidates"]]
            else:
                self.state["status"] = "awaiting_review"
                self.state["awaiting_review"] = path
                self._record(k, "review-wait", {"file": path, "candidates": len(doc["candidates"])})
                self.log(f"cycle {k}: review {path}: set accept: true on math prefixes, then reviewed: true, "
                         "and rerun the same command")
                return
        accepted = [{"domain": c["domain"], "path_prefix": c["path_prefix"], "cycle": k}
                    for c in doc["candidates"] if c["accept"]]
        self.state["accepted"].extend(accepted)
        self.state["reviewed"].extend({"domain": c["domain"], "path_prefix": c["path_prefix"], "cycle": k,
                                       "accept": c["accept"]} for c in doc["candidates"])
        self.state.pop("awaiting_review", None)
        self._cycle(k)["steps"]["review"] = {"done": _now(), "candidates": len(doc["candidates"]),
                                             "accepted": len(accepted), "file_sha256": file_sha256(path),
                                             "auto": bool(self.cfg.auto_accept)}
        self._record(k, "review", {"accepted": accepted, "file_sha256": file_sha256(path)})

    def _step_expand(self, k: int) -> None:
        acc = self.state["accepted"]
        seed_ids = pq.read_table(os.path.join(self.w, "seed.parquet"), columns=["id"]).column("id").combine_chunks()
        parts: list[pa.Table] = []
        if acc:
            doms = pa.array(sorted({a["domain"] for a in acc}), pa.string())
            for b in self._pool_batches():
                if schema.URL not in b.schema.names:
                    continue
                b = schema.add_domain(b)
                dom = _string_column(b, schema.DOMAIN)
                if not pc.any(pc.is_in(dom, doms)).as_py():
                    continue
                paths = _url_path(_string_column(b, schema.URL))
                mask = np.zeros(b.num_rows, dtype=bool)
                for a in acc:
                    m = pc.and_(pc.equal(dom, a["domain"]), pc.starts_with(paths, a["path_prefix"]))
                    mask |= pc.fill_null(m, False).to_numpy(zero_copy_only=False)
                mask &= ~pc.is_in(b.column("id"), seed_ids).to_numpy(zero_copy_only=False)
                idx = pa.array(np.flatnonzero(mask))
                if len(idx):
                    parts.append(pa.table({"id": b.column("id").take(idx), "text": b.column("text").take(idx),
                                           "source": self._sources(b).take(idx),
                                           "url": _string_column(b, schema.URL).take(idx)}))
        exp = pa.concat_tables(parts) if parts else pa.table(
            {"id": pa.array([], pa.string()), "text": pa.array([], pa.string()),
             "source": pa.array([], pa.string()), "url": pa.array([], pa.string())})
        exp = exp.sort_by("id")
        path = os.path.join(self.cycle_dir(k), "expansion.parquet")
        _write_parquet(path, exp)
        prev = 0
        if k > 1:
            pe = os.path.join(self.cycle_dir(k - 1), "expansion.parquet")
            prev = pq.read_metadata(pe).num_rows if os.path.exists(pe) else 0
        added = exp.num_rows - prev
        self._cycle(k)["steps"]["expand"] = {"done": _now(), "expansion_docs": exp.num_rows, "added": added}
        info = {"expansion_docs": exp.num_rows, "added": added, "sha256": file_sha256(path)}
        if added <= 0:
            self.state["status"] = "done"
            self.state["stop_reason"] = "no_new_seed"
            info["stop"] = "no_new_seed"
        self.log(f"cycle {k}: {added:,} pool page(s) under accepted prefixes join the seed")
        self._record(k, "expand", info)


def _load_review(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as fh:
            doc = yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({exc}); fix the file and rerun") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("candidates", []), list):
        raise ConfigError(f"{path}: expected a mapping with 'reviewed' and a 'candidates' list")
    reviewed = doc.get("reviewed")
    if not isinstance(reviewed, bool):
        raise ConfigError(f"{path}: 'reviewed' must be true or false, got {reviewed!r}")
    cands = []
    for i, c in enumerate(doc.get("candidates") or []):
        if not isinstance(c, dict) or not isinstance(c.get("domain"), str) or not isinstance(c.get("path_prefix"), str):
            raise ConfigError(f"{path}: candidate {i + 1} needs a 'domain' and a 'path_prefix' string")
        if not isinstance(c.get("accept", False), bool):
            raise ConfigError(f"{path}: candidate {i + 1} ({c['domain']}{c['path_prefix']}): 'accept' must be "
                              f"true or false, got {c.get('accept')!r}")
        if not c["path_prefix"].startswith("/"):
            raise ConfigError(f"{path}: candidate {i + 1}: path_prefix must start with '/', got {c['path_prefix']!r}")
        cands.append({**c, "domain": c["domain"].lower().removeprefix("www."),
                      "path_prefix": c["path_prefix"].lower(), "accept": bool(c.get("accept", False))})
    return {"reviewed": reviewed, "candidates": cands}


def _diff_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = []
    for sect in ("config", "files"):
        a, b = old.get(sect, {}), new.get(sect, {})
        for key in sorted(set(a) | set(b)):
            if a.get(key) != b.get(key):
                out.append(key)
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "_" for c in name) or "default"


def _short_eval(ev: dict[str, Any] | None) -> dict[str, Any] | None:
    if not ev:
        return None
    return {k: ev.get(k) for k in ("n", "precision", "recall", "f1", "roc_auc")}


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def run_cycle(cfg: CycleConfig, run_options: RunOptions | None = None,
              log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run (or resume) the recall loop described by ``cfg``; returns the summary."""
    return CycleRun(cfg, run_options, log).run()
