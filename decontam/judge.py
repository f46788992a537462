"""The LLM-judge tier (``--judge``): a teacher decides the pairs the cheaper tiers saw but did not confirm.

Owns which (record, benchmark item) pairs go to the judge, the prompts, the strict reading
of the answers and the cost controls. The cheap tiers stay in front: only pairs that a
shared 13-gram (exact tier), a MinHash LSH hit (fuzzy tier) or, with an embedding model,
a near neighbour proposed reach the judge, and only when

* the exact tier's LCS ratio is below its threshold (a confirmed pair needs no call) but
  above ``judge_floor`` (default 0.3: below it the pair shares little more than a phrase),
* or the fuzzy tier's number-masked ratio is below its threshold but above
  ``judge_fuzzy_floor``,
* or, with ``judge_embed_model``, the item is among the record's ``judge_embed_k`` nearest
  items by cosine, above ``judge_embed_floor`` (:class:`EmbedIndex`: chunked, never a
  records x items matrix),

and the record is not removed already by a cheaper tier. Pairs with the same (item text,
passage) are asked once.

Prompts are versioned YAML templates in ``decontam/judge_templates/`` (``reword@v1``: the
same problem up to names and word order; ``numbers@v1``: the same with numbers
substituted). The answer must end in the template's verdict line; anything else, and any
call that failed, is ``judge_error``: counted, shown in the summary, never counted clean.
With ``both_ways`` each pair is asked with the item first and with the record first; a
"yes" either way contaminates, otherwise an error either way is ``judge_error``.

Cost: answers are cached by content hash (corpus.teacher.RequestCache), so a rerun or a
resumed run sends only new pairs; :class:`CallBudget` caps the calls one invocation sends
(shared by its tasks through a locked counter file) and stops the run before the cap is
exceeded; a dry run counts the calls it would send and sends none.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash
import yaml

from corpus.errors import ConfigError, FatalError, MathcorpusError
from corpus.teacher import (Engine, EngineSpec, GenRequest, GenResult, RequestCache, SamplingConfig, get_engine,
                            request_hash)

TEMPLATES_DIR = Path(__file__).resolve().parent / "judge_templates"
DEFAULT_TEMPLATE = "reword@v1"
TEMPLATE_KEYS = ("id", "version", "description", "system", "user", "verdict")
VERDICT_KEYS = ("pattern", "contaminated", "clean")
_PLACEHOLDER_RE = re.compile(r"\{\{\s*(\w+)\s*\}\}")

CONTAMINATED = "contaminated"
CLEAN = "clean"
JUDGE_ERROR = "judge_error"
VERDICTS = (CONTAMINATED, CLEAN, JUDGE_ERROR)
SOURCES = ("exact", "fuzzy", "embed")
# a batch of at least this many calls that all fail stops the run (a wrong URL or model name)
# instead of filling the report with judge_error
ALL_FAILED_MIN = 4


# ----------------------------------------------------------------------------- templates
@dataclass(frozen=True)
class JudgeTemplate:
    """A judge prompt. ``ref`` (``id@version``) and ``sha`` go into every judged pair's key."""

    id: str
    version: str
    user: str
    pattern: str
    contaminated: tuple[str, ...]
    clean: tuple[str, ...]
    system: str | None = None
    description: str = ""
    source: str = ""
    sha: str = ""

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def render(self, first: str, second: str) -> tuple[dict[str, str], ...]:
        values = {"first": first, "second": second}

        def fill(s: str) -> str:
            def sub(m: re.Match[str]) -> str:
                if m.group(1) not in values:
                    raise ConfigError(f"{self.source}: placeholder '{{{{ {m.group(1)} }}}}' is unknown; judge "
                                      "templates take {{ first }} and {{ second }}")
                return values[m.group(1)]

            return _PLACEHOLDER_RE.sub(sub, s)

        msgs: list[dict[str, str]] = []
        if self.system:
            msgs.append({"role": "system", "content": fill(self.system)})
        msgs.append({"role": "user", "content": fill(self.user)})
        return tuple(msgs)

    def parse(self, answer: str | None) -> str:
        """The verdict of one raw answer, read strictly: ``contaminated``, ``clean`` or ``judge_error``.

        The last non-empty line must match the verdict pattern with a known label, and no
        earlier verdict line may say otherwise.
        """
        if not answer or not answer.strip():
            return JUDGE_ERROR
        rx = re.compile(self.pattern)
        lines = [ln for ln in answer.strip().splitlines() if ln.strip()]
        labels = []
        for ln in lines:
            m = rx.search(ln)
            if m:
                labels.append(m.group(1).strip().lower())
        last = rx.search(lines[-1])
        if last is None or len(set(labels)) != 1:
            return JUDGE_ERROR
        label = labels[0]
        if label in self.contaminated:
            return CONTAMINATED
        if label in self.clean:
            return CLEAN
        return JUDGE_ERROR


def parse_template(text: str, source: str) -> JudgeTemplate:
    """A JudgeTemplate from YAML text; ConfigError naming ``source`` for every problem."""
    from corpus.config import closest

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a judge template must be a mapping with id, version, user and verdict")
    for k in data:
        if k not in TEMPLATE_KEYS:
            raise ConfigError(f"{source}: unknown template key '{k}'{closest(str(k), TEMPLATE_KEYS)}")
    for k in ("id", "version", "user", "verdict"):
        if not data.get(k):
            raise ConfigError(f"{source}: judge template needs '{k}'")
    v = data["verdict"]
    if not isinstance(v, dict) or any(k not in v for k in VERDICT_KEYS):
        raise ConfigError(f"{source}: 'verdict' needs pattern, contaminated and clean (quote yes/no: YAML reads "
                          "them as booleans)")
    try:
        rx = re.compile(str(v["pattern"]))
    except re.error as exc:
        raise ConfigError(f"{source}: verdict pattern is not a valid regular expression ({exc})") from exc
    if rx.groups < 1:
        raise ConfigError(f"{source}: verdict pattern needs one group capturing the label")
    labels = {}
    for k in ("contaminated", "clean"):
        vals = v[k] if isinstance(v[k], list) else [v[k]]
        if any(not isinstance(x, str) for x in vals):
            raise ConfigError(f"{source}: verdict {k} labels must be quoted strings, got {vals!r}")
        labels[k] = tuple(x.lower() for x in vals)
    for name in _PLACEHOLDER_RE.findall(str(data["user"]) + str(data.get("system") or "")):
        if name not in ("first", "second"):
            raise ConfigError(f"{source}: placeholder '{{{{ {name} }}}}' is unknown; judge templates take "
                              "{{ first }} and {{ second }}")
    return JudgeTemplate(id=str(data["id"]), version=str(data["version"]), user=str(data["user"]),
                         system=data.get("system"), description=str(data.get("description") or ""),
                         pattern=str(v["pattern"]), contaminated=labels["contaminated"], clean=labels["clean"],
                         source=source, sha=xxhash.xxh3_64_hexdigest(text.encode("utf-8")))


def list_templates() -> list[str]:
    return sorted(p.name[:-len(".yaml")].replace(".", "@", 1) for p in TEMPLATES_DIR.glob("*.yaml"))


def load_template(spec: str | None) -> JudgeTemplate:
    """``name@version``, a bare name (its newest version) or a path to a YAML file."""
    spec = spec or DEFAULT_TEMPLATE
    if spec.endswith((".yaml", ".yml")) or "/" in spec:
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"decontam: judge template file {spec} does not exist")
        return parse_template(path.read_text(encoding="utf-8"), str(path))
    name, _, version = spec.partition("@")
    found = sorted(TEMPLATES_DIR.glob(f"{name}.*.yaml"))
    if version:
        found = [p for p in found if p.name == f"{name}.{version}.yaml"]
    if not found:
        raise ConfigError(f"decontam: unknown judge template '{spec}'; bundled: {', '.join(list_templates())} "
                          "(or give a path to your own YAML file)")
    path = found[-1]
    return parse_template(path.read_text(encoding="utf-8"), str(path))


# ----------------------------------------------------------------------------- candidates
@dataclass
class Candidate:
    """One (record, item) pair for the judge, with where it came from and the texts to compare."""

    row: int                 # row of the record in its batch
    doc_id: str
    benchmark: str
    item_id: str
    field: str               # item part the cheap tier aligned (question, both, answer, solution)
    doc_field: str
    source: str              # exact, fuzzy or embed
    lcs_ratio: float | None
    doc_start: int
    doc_end: int
    item_text: str
    passage: str
    grams_matched: int = 0
    sample: str = "[]"
    similarity: float | None = None

    def key(self) -> tuple[str, str]:
        return (self.item_text, self.passage)


def passage(text: str, start: int, end: int, max_chars: int) -> str:
    """The part of ``text`` a judge sees: the aligned span ``[start, end)`` with context around it.

    Short texts (an SFT field) are shown whole. A longer one is cut to ``max_chars``
    centred on the span, at whitespace, so the judge compares like with like.
    """
    if len(text) <= max_chars:
        return text
    start, end = max(0, min(start, len(text))), max(0, min(end, len(text)))
    if end - start >= max_chars:
        return text[start:start + max_chars]
    pad = (max_chars - (end - start)) // 2
    lo = max(0, start - pad)
    hi = min(len(text), lo + max_chars)
    lo = max(0, hi - max_chars)
    if lo > 0:
        sp = text.find(" ", lo, start) if start > lo else -1
        lo = sp + 1 if sp >= 0 else lo
    if hi < len(text):
        sp = text.rfind(" ", end, hi)
        hi = sp if sp > end else hi
    return text[lo:hi]


def combine(verdicts: Sequence[str]) -> str:
    """One pair's verdict from its one or two asks: any yes contaminates; else any error is an error."""
    if CONTAMINATED in verdicts:
        return CONTAMINATED
    if JUDGE_ERROR in verdicts or not verdicts:
        return JUDGE_ERROR
    return CLEAN


# ----------------------------------------------------------------------------- budget
class BudgetExceeded(FatalError):
    """The run would send more judge calls than ``--judge-max-calls`` allows."""


class CallBudget:
    """Calls one invocation may still send, shared by its tasks through a locked counter file.

    The driver resets the file when the run starts (:meth:`reset`); each task reserves a
    chunk of calls before sending it. ``max_calls`` None means no cap (only counting).
    """

    def __init__(self, path: str, max_calls: int | None) -> None:
        self.path = path
        self.max_calls = max_calls

    def reset(self) -> None:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"sent": 0, "max_calls": self.max_calls}, fh)
        os.replace(tmp, self.path)

    def reserve(self, n: int) -> int:
        """Reserve up to ``n`` calls; returns how many may be sent (fewer when the cap is near)."""
        if n <= 0:
            return 0
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.path, "a+", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                fh.seek(0)
                raw = fh.read()
                sent = int(json.loads(raw)["sent"]) if raw.strip() else 0
                grant = n if self.max_calls is None else max(0, min(n, self.max_calls - sent))
                fh.seek(0)
                fh.truncate()
                json.dump({"sent": sent + grant, "max_calls": self.max_calls}, fh)
                fh.flush()
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)
        return grant

    def sent(self) -> int:
        try:
            with open(self.path, encoding="utf-8") as fh:
                return int(json.load(fh)["sent"])
        except (OSError, ValueError, KeyError):
            return 0


# ----------------------------------------------------------------------------- judge
@dataclass
class JudgeSettings:
    """What the stage passes to :class:`Judge` (from DecontamConfig's judge_* fields)."""

    spec: EngineSpec
    template: str = DEFAULT_TEMPLATE
    both_ways: bool = False
    max_calls: int | None = None
    max_tokens: int = 512
    temperature: float = 0.0
    seed: int = 0
    cache_dir: str = ""
    budget_file: str = ""
    dry_run: bool = False
    flush_every: int = 64


@dataclass
class Judged:
    """The judge's answer on one candidate."""

    verdict: str
    answers: list[str | None]
    errors: list[str] = field(default_factory=list)


class Judge:
    """Asks the teacher about candidates, through the cache and the budget (one per worker)."""

    def __init__(self, settings: JudgeSettings, rank: int = 0) -> None:
        self.s = settings
        self.template = load_template(settings.template)
        self.cache = RequestCache(settings.cache_dir, rank).load() if settings.cache_dir else None
        self.budget = CallBudget(settings.budget_file, settings.max_calls) if settings.budget_file else None
        self._engine: Engine | None = None

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = get_engine(self.s.spec)
        return self._engine

    def requests(self, c: Candidate) -> list[GenRequest]:
        """The one or two requests of a candidate (item first; then record first with both_ways)."""
        p = SamplingConfig(n=1, temperature=self.s.temperature, top_p=1.0, max_tokens=self.s.max_tokens,
                           seed=self.s.seed)
        orders = [(c.item_text, c.passage)]
        if self.s.both_ways:
            orders.append((c.passage, c.item_text))
        return [GenRequest(key=f"{self.template.ref}:{i}", messages=self.template.render(a, b), params=p)
                for i, (a, b) in enumerate(orders)]

    def _send(self, reqs: list[GenRequest]) -> list[GenResult | MathcorpusError]:
        """Answers in order; a request that failed after its retries comes back as its error."""
        out = self.engine.generate_each(reqs)
        if len(out) >= ALL_FAILED_MIN and all(isinstance(x, MathcorpusError) for x in out):
            # nothing got through: the server or the model name is wrong, not a few pairs
            raise FatalError(f"decontam: all {len(out)} judge calls of a batch failed; first error: "
                             f"{str(out[0]).rstrip('.')}. Answers received so far are cached; fix the judge "
                             "engine and rerun.")
        return out

    def judge(self, cands: Sequence[Candidate], counters: Any) -> list[Judged]:
        """Verdicts of ``cands`` (in order). ``counters``: the task's Counter, for the summary."""
        model = self.s.spec.model
        reqs_of = [self.requests(c) for c in cands]
        keys_of = [[request_hash(model, r) for r in rs] for rs in reqs_of]
        answers: dict[str, str | None] = {}
        failures: dict[str, str] = {}
        todo: dict[str, GenRequest] = {}
        for rs, ks in zip(reqs_of, keys_of):
            for r, k in zip(rs, ks):
                hit = self.cache.get(k) if self.cache is not None else None
                if hit is not None:
                    answers[k] = hit.completions[0].text if hit.completions else None
                elif k in todo or k in answers:
                    counters["judge_requests_shared"] += 1
                else:
                    todo[k] = r
        counters["judge_requests_cached"] += sum(1 for ks in keys_of for k in ks if k in answers)
        if self.s.dry_run:
            counters["judge_calls_needed"] += len(todo)
            return [Judged(JUDGE_ERROR, [None] * len(rs), ["dry run: not sent"]) for rs in reqs_of]
        pending = list(todo.items())
        step = max(1, self.s.flush_every)
        stopped = 0
        for s in range(0, len(pending), step):
            chunk = pending[s:s + step]
            grant = self.budget.reserve(len(chunk)) if self.budget is not None else len(chunk)
            if grant < len(chunk):
                stopped = len(pending) - s - grant
                chunk = chunk[:grant]
            if chunk:
                res = self._send([r for _, r in chunk])
                counters["judge_calls"] += len(chunk)
                good = []
                for (k, _), r in zip(chunk, res):
                    if isinstance(r, MathcorpusError):
                        failures[k] = str(r)
                        counters["judge_call_failures"] += 1
                    else:
                        answers[k] = r.completions[0].text if r.completions else None
                        good.append(GenResult(key=k, completions=r.completions[:1], prompt_tokens=r.prompt_tokens))
                if self.cache is not None and good:
                    self.cache.put(good)
            if stopped:
                raise BudgetExceeded(
                    f"decontam: --judge-max-calls {self.s.max_calls} reached: this run sent "
                    f"{self.budget.sent() if self.budget else grant} judge call(s) and {stopped} more are needed "
                    "for this batch alone; nothing past the budget was sent. The answers are cached: rerun the "
                    "same command (or with a larger --judge-max-calls) to continue; only new pairs are sent.")
        out = []
        for rs, ks in zip(reqs_of, keys_of):
            verdicts, raw, errs = [], [], []
            for k in ks:
                if k in failures:
                    verdicts.append(JUDGE_ERROR)
                    raw.append(None)
                    errs.append(failures[k])
                else:
                    a = answers.get(k)
                    v = self.template.parse(a)
                    if v == JUDGE_ERROR:
                        errs.append("unparseable answer")
                    verdicts.append(v)
                    raw.append(a)
            out.append(Judged(combine(verdicts), raw, errs))
        return out


def dedupe(cands: Sequence[Candidate]) -> tuple[list[Candidate], int]:
    """Candidates with one entry per (record row, benchmark, item): the best-aligned source wins."""
    best: dict[tuple[int, str, str], Candidate] = {}
    rank = {s: i for i, s in enumerate(SOURCES)}
    for c in cands:
        k = (c.row, c.benchmark, c.item_id)
        old = best.get(k)
        if old is None or (rank[c.source], -(c.lcs_ratio or 0.0)) < (rank[old.source], -(old.lcs_ratio or 0.0)):
            best[k] = c
    return list(best.values()), len(cands) - len(best)


# ----------------------------------------------------------------------------- embeddings
class EmbedIndex:
    """Top-k benchmark items by cosine for each text, with a local encoder folder (corpus.encoder).

    Item embeddings are computed once per worker; each batch of texts is compared with them
    in blocks of ``chunk`` items, keeping a running top-k, so memory stays at ``texts x chunk``
    whatever the number of items, and no records x items matrix is ever built.
    """

    def __init__(self, model_path: str, items: Sequence[tuple[str, str, str]], k: int = 3, floor: float = 0.8,
                 chunk: int = 4096, batch_size: int = 64, device: str = "cpu") -> None:
        if not os.path.isdir(model_path):
            raise ConfigError(f"decontam: --judge-embed-model {model_path} is not a folder; give a local "
                              "sentence-transformers or Hugging Face encoder folder (nothing is downloaded)")
        self.model_path = model_path
        self.items = list(items)  # (benchmark, item_id, text)
        self.k = k
        self.floor = floor
        self.chunk = chunk
        self.batch_size = batch_size
        self.device = device
        self._model: Any = None
        self._item_emb: np.ndarray | None = None

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts`` with the local model (loaded on first use)."""
        if self._model is None:
            self._model = self._load()
        emb = np.asarray(self._model(list(texts)), dtype=np.float32)
        norms = np.linalg.norm(emb, axis=1, keepdims=True)
        return emb / np.where(norms > 0, norms, 1.0)

    def _load(self) -> Any:
        """The floor's local encoder (corpus.encoder: pooling and normalization as the folder says)."""
        from corpus.encoder import Encoder, EncoderError

        try:
            enc = Encoder(self.model_path, device=self.device)
        except EncoderError as exc:
            raise ConfigError(f"decontam: --judge-embed-model: {exc}") from exc
        return lambda texts: enc.embed(texts, batch_size=self.batch_size)

    @property
    def item_emb(self) -> np.ndarray:
        if self._item_emb is None:
            self._item_emb = self.encode([t for _, _, t in self.items])
        return self._item_emb

    def query(self, texts: Sequence[str]) -> list[list[tuple[int, float]]]:
        """For each text, up to ``k`` ``(item position, cosine)`` at or above ``floor``, best first."""
        if not texts or not self.items:
            return [[] for _ in texts]
        q = self.encode(texts)
        return topk_cosine(q, self.item_emb, self.k, self.floor, self.chunk)


def topk_cosine(q: np.ndarray, items: np.ndarray, k: int, floor: float, chunk: int = 4096
                ) -> list[list[tuple[int, float]]]:
    """Top-``k`` rows of ``items`` by dot product with each row of ``q`` (unit vectors), in item blocks."""
    n = q.shape[0]
    best_s = np.full((n, k), -np.inf, dtype=np.float32)
    best_i = np.full((n, k), -1, dtype=np.int64)
    for a in range(0, items.shape[0], chunk):
        sims = q @ items[a:a + chunk].T  # n x chunk, never n x all items
        kk = min(k, sims.shape[1])
        part = np.argpartition(-sims, kk - 1, axis=1)[:, :kk]
        s = np.take_along_axis(sims, part, axis=1)
        all_s = np.concatenate([best_s, s], axis=1)
        all_i = np.concatenate([best_i, part + a], axis=1)
        order = np.argsort(-all_s, axis=1, kind="stable")[:, :k]
        best_s = np.take_along_axis(all_s, order, axis=1)
        best_i = np.take_along_axis(all_i, order, axis=1)
    return [[(int(i), float(s)) for i, s in zip(ri, rs) if i >= 0 and s >= floor] for ri, rs in zip(best_i, best_s)]


# ----------------------------------------------------------------------------- summary
def judge_summary(counters: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The ``judge`` section of summary.json from the run's counters: settings, funnel, verdicts, calls.

    The funnel says what the cheap tiers decided before any call: every unconfirmed pair
    they saw (``seen``), those below the floors, those whose record a cheaper tier already
    removed, duplicates, and what was left for the judge (``pairs_judged``).
    """
    g = lambda k: int(counters.get(k, 0))  # noqa: E731 - a local shorthand
    seen = g("judge_seen_exact") + g("judge_seen_fuzzy") + g("judge_seen_embed")
    judged = g("judge_pairs")
    verdicts = {v: g(f"judge_verdict:{v}") for v in VERDICTS}
    return {
        **settings,
        "funnel": {
            "seen_exact": g("judge_seen_exact"), "below_floor_exact": g("judge_below_floor_exact"),
            "seen_fuzzy": g("judge_seen_fuzzy"), "below_floor_fuzzy": g("judge_below_floor_fuzzy"),
            "seen_embed": g("judge_seen_embed"), "candidates": g("judge_candidates"),
            "skipped_removed": g("judge_skipped_removed"), "duplicates": g("judge_duplicates"),
            "pairs_judged": judged,
            "prefiltered_share": round(1.0 - judged / seen, 6) if seen else 0.0,
        },
        "verdicts": verdicts,
        "judge_errors": verdicts[JUDGE_ERROR],
        "calls": {"sent": g("judge_calls"), "failed": g("judge_call_failures"),
                  "cached": g("judge_requests_cached"), "shared": g("judge_requests_shared"),
                  "needed": g("judge_calls_needed")},
    }
