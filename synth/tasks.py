"""Synthesis tasks: versioned prompt templates, output parsing and sample verdicts.

Owns what each task asks the teacher and how its answers are judged:

* ``rewrite``: a web document becomes a clean, self-contained textbook-style section;
* ``qa``: problem + step-by-step solution pairs grounded in a document;
* ``solve``: N chain-of-thought solutions per problem, kept by rejection sampling against
  the reference answer (or the majority answer when there is none), optionally ranked
  by a reward model (RM@N). Its TIR variant runs the model's Python in the sandbox and
  feeds the output back before the model continues;
* ``annotate``: a teacher grades a document on an additive 0-5 scale (``finemath@v1``);
  the strict score parser lives in ``synth/annotate.py``.

Templates are YAML files named ``<id>.<version>.yaml``. The bundled ones live in
``synth/templates/``; a user folder (``templates_dir``) or an explicit file path
overrides them. Records carry ``<id>@<version>`` and a hash of the file's content.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import xxhash
import yaml

from corpus.errors import ConfigError
from corpus.teacher import Completion, Engine, GenRequest, GenResult, derive_seed
from synth.answers import CheckOptions, RewardScorer, extract_answer, is_equiv, majority_vote
from synth.sandbox import Sandbox

TASKS = ("rewrite", "qa", "solve", "annotate")
BUNDLED_DIR = Path(__file__).resolve().parent / "templates"
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "rewrite": frozenset({"text", "lang"}),
    "qa": frozenset({"text", "lang", "num_pairs"}),
    "solve": frozenset({"problem"}),
    "annotate": frozenset({"text", "lang"}),
}
#: Template used when none is given, for tasks whose template is not named after the task.
DEFAULT_TEMPLATE = {"annotate": "finemath"}
TEMPLATE_KEYS = frozenset({"id", "version", "task", "description", "system", "user", "stop", "tir"})
_PLACEHOLDER_RE = re.compile(r"\{\{\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}")
TIR_STOP = "```output"

# Accepted verdicts: the sample is written to the output. Everything else goes to the
# rejected side table with its verdict.
ACCEPTED = frozenset({"ok", "correct", "majority", "rm_best"})


# ----------------------------------------------------------------------------- templates
@dataclass(frozen=True)
class Template:
    """A prompt template. ``ref`` (``id@version``) and ``sha`` go into every record."""

    id: str
    version: str
    task: str
    user: str
    system: str | None = None
    description: str = ""
    stop: tuple[str, ...] = ()
    tir: bool = False
    source: str = ""
    sha: str = ""

    @property
    def ref(self) -> str:
        return f"{self.id}@{self.version}"

    def render(self, **values: Any) -> tuple[dict[str, str], ...]:
        """Chat messages with ``{{ name }}`` placeholders filled in."""

        def fill(s: str) -> str:
            def sub(m: re.Match[str]) -> str:
                name = m.group(1)
                if name not in values:
                    raise ConfigError(f"{self.source}: placeholder '{{{{ {name} }}}}' has no value "
                                      f"for task {self.task}")
                return str(values[name])

            return _PLACEHOLDER_RE.sub(sub, s)

        msgs = []
        if self.system:
            msgs.append({"role": "system", "content": fill(self.system)})
        msgs.append({"role": "user", "content": fill(self.user)})
        return tuple(msgs)


def parse_template(text: str, source: str) -> Template:
    """A Template from YAML text; ConfigError naming ``source`` for every problem."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: invalid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a template must be a mapping with id, version, task and user")
    from corpus.config import closest

    for k in data:
        if k not in TEMPLATE_KEYS:
            raise ConfigError(f"{source}: unknown template key '{k}'{closest(str(k), TEMPLATE_KEYS)} "
                              f"(valid keys: {', '.join(sorted(TEMPLATE_KEYS))})")
    for k in ("id", "version", "task", "user"):
        if not data.get(k):
            raise ConfigError(f"{source}: template key '{k}' is missing or empty")
    task = str(data["task"])
    if task not in TASKS:
        raise ConfigError(f"{source}: task must be one of {', '.join(TASKS)}, got {task!r}{closest(task, TASKS)}")
    allowed = PLACEHOLDERS[task]
    for part in ("system", "user"):
        for name in _PLACEHOLDER_RE.findall(str(data.get(part) or "")):
            if name not in allowed:
                raise ConfigError(f"{source}: unknown placeholder '{{{{ {name} }}}}' in {part}; task {task} "
                                  f"offers {', '.join(sorted(allowed))}")
    stop = data.get("stop") or []
    if isinstance(stop, str) or not all(isinstance(s, str) for s in stop):
        raise ConfigError(f"{source}: 'stop' must be a list of strings")
    tir = bool(data.get("tir", False))
    if tir and task != "solve":
        raise ConfigError(f"{source}: 'tir: true' only applies to task solve")
    if tir and TIR_STOP not in stop:
        stop = list(stop) + [TIR_STOP]
    return Template(id=str(data["id"]), version=str(data["version"]), task=task, user=str(data["user"]),
                    system=str(data["system"]) if data.get("system") else None,
                    description=str(data.get("description") or ""), stop=tuple(stop), tir=tir, source=source,
                    sha=xxhash.xxh3_64_hexdigest(text.encode("utf-8")))


def _version_key(path: Path) -> tuple[int, str]:
    v = path.name.rsplit(".", 2)[-2]
    m = re.fullmatch(r"v?(\d+)", v)
    return (int(m.group(1)) if m else -1, v)


def _candidates(name: str, dirs: Sequence[Path]) -> list[Path]:
    for d in dirs:
        found = sorted(d.glob(f"{name}.*.yaml"), key=_version_key)
        found = [p for p in found if p.name.count(".") == 2]
        if found:
            return found
    return []


def list_templates(templates_dir: str | None = None) -> list[str]:
    """``id@version`` of every template a run can use (user folder first, then bundled)."""
    out = []
    for d in ([Path(templates_dir)] if templates_dir else []) + [BUNDLED_DIR]:
        for p in sorted(d.glob("*.*.yaml")):
            name, ver, _ = p.name.rsplit(".", 2)
            out.append(f"{name}@{ver}")
    return sorted(set(out))


def load_template(spec: str | None, task: str, *, tir: bool = False, templates_dir: str | None = None) -> Template:
    """Resolve ``spec`` (None, ``name``, ``name@version`` or a file path) to a Template.

    None picks the task's default (``solve-tir`` for TIR); a bare name picks its newest
    version. ``templates_dir`` is searched before the bundled templates.
    """
    if task not in TASKS:
        raise ConfigError(f"synth: unknown task {task!r}; use one of {', '.join(TASKS)}")
    dirs = ([Path(templates_dir)] if templates_dir else []) + [BUNDLED_DIR]
    if templates_dir and not Path(templates_dir).is_dir():
        raise ConfigError(f"synth: templates_dir {templates_dir} is not a folder")
    if spec and (spec.endswith((".yaml", ".yml")) or "/" in spec or spec.startswith(".")):
        path = Path(spec)
        if not path.is_file():
            raise ConfigError(f"synth: template file {spec} not found")
    else:
        name = spec or ("solve-tir" if (task == "solve" and tir) else DEFAULT_TEMPLATE.get(task, task))
        name, _, version = name.partition("@")
        if version:
            path = next((d / f"{name}.{version}.yaml" for d in dirs if (d / f"{name}.{version}.yaml").is_file()),
                        Path())
            if not path.name:
                raise ConfigError(f"synth: template {spec} not found; available: "
                                  f"{', '.join(list_templates(templates_dir))}")
        else:
            found = _candidates(name, dirs)
            if not found:
                raise ConfigError(f"synth: template {name!r} not found; available: "
                                  f"{', '.join(list_templates(templates_dir))}")
            path = found[-1]
    tmpl = parse_template(path.read_text(encoding="utf-8"), str(path))
    if tmpl.task != task:
        raise ConfigError(f"{path}: template {tmpl.ref} is for task {tmpl.task}, not {task}; pick a {task} template")
    if tir and not tmpl.tir:
        raise ConfigError(f"{path}: --tir needs a template with 'tir: true' (e.g. solve-tir@v1)")
    return tmpl


# ----------------------------------------------------------------------------- samples
@dataclass
class Sample:
    """One generated record before provenance columns are attached."""

    text: str
    verdict: str
    sample: int
    sub: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.verdict in ACCEPTED


def _completion_meta(c: Completion) -> dict[str, Any]:
    m: dict[str, Any] = {"finish_reason": c.finish_reason}
    if c.tokens is not None:
        m["tokens"] = c.tokens
    if c.tool_calls:
        m["tool_calls"] = c.tool_calls
    return m


def judge_rewrite(completions: Sequence[Completion], *, keep_truncated: bool = False,
                  min_chars: int = 20) -> list[Sample]:
    """``ok``; ``truncated`` (hit max_tokens) or ``empty`` (shorter than ``min_chars``) otherwise."""
    out = []
    for i, c in enumerate(completions):
        text = c.text.strip()
        if len(text) < min_chars:
            verdict = "empty"
        elif c.finish_reason == "length" and not keep_truncated:
            verdict = "truncated"
        else:
            verdict = "ok"
        out.append(Sample(text=text, verdict=verdict, sample=i, meta=_completion_meta(c)))
    return out


_QA_HEAD = re.compile(
    r"(?im)^[ \t]*(?:#{1,4}[ \t]*|\*\*)?(problem|question|solution|问题|题目|解答)[ \t]*(\d*)[ \t]*[:：.]?"
    r"[ \t]*(?:\*\*)?[ \t]*:?[ \t]*")


def parse_qa_pairs(text: str) -> list[tuple[str, str]]:
    """(problem, solution) pairs from "### Problem N ... ### Solution N ..." style output."""
    heads = list(_QA_HEAD.finditer(text))
    pairs: list[tuple[str, str]] = []
    problem: str | None = None
    for k, m in enumerate(heads):
        end = heads[k + 1].start() if k + 1 < len(heads) else len(text)
        body = text[m.end():end].strip()
        kind = m.group(1).lower()
        if kind in ("problem", "question", "问题", "题目"):
            problem = body
        elif problem:
            pairs.append((problem, body))
            problem = None
    return [(p, s) for p, s in pairs if p and s]


def format_pair(problem: str, solution: str) -> str:
    return f"Problem:\n{problem}\n\nSolution:\n{solution}"


def judge_qa(completions: Sequence[Completion], *, max_pairs: int, keep_truncated: bool = False,
             check: CheckOptions | None = None) -> list[Sample]:
    """One record per parsed pair: ``ok`` when its solution states a final answer.

    ``no_answer`` when it does not, ``truncated`` for the last pair of a sample that hit
    max_tokens, ``unparsed`` (one record holding the raw text) when no pair was found.
    """
    out: list[Sample] = []
    for i, c in enumerate(completions):
        pairs = parse_qa_pairs(c.text)[:max_pairs]
        if not pairs:
            out.append(Sample(text=c.text.strip(), verdict="unparsed", sample=i, sub=0, meta=_completion_meta(c)))
            continue
        for j, (prob, sol) in enumerate(pairs):
            ans = extract_answer(sol, last_number_fallback=False)
            last = j == len(pairs) - 1
            if last and c.finish_reason == "length" and not keep_truncated:
                verdict = "truncated"
            elif ans is None:
                verdict = "no_answer"
            else:
                verdict = "ok"
            meta = _completion_meta(c) | {"problem": prob, "solution": sol, "answer": ans, "pair": j}
            out.append(Sample(text=format_pair(prob, sol), verdict=verdict, sample=i, sub=j, meta=meta))
    return out


@dataclass(frozen=True)
class SolveOptions:
    """How solve samples are accepted.

    ``select``: ``auto`` (reference answer when the seed has one, else majority),
    ``reference``, ``majority`` or ``rm`` (RM@N: the reward model's best sample).
    ``keep_top``: keep at most this many accepted samples per problem, best RM score
    first when a scorer is set (0 keeps all).
    """

    select: str = "auto"
    min_votes: int = 2
    keep_top: int = 0
    keep_truncated: bool = False
    dedupe: bool = True
    check: CheckOptions = CheckOptions()


def judge_solve(problem: str, completions: Sequence[Completion], reference: str | None, opts: SolveOptions,
                scorer: RewardScorer | None = None,
                messages: Sequence[dict[str, str]] | None = None) -> list[Sample]:
    """Verdict per sample: correct/incorrect (reference), majority/minority (vote), rm_best.

    Truncated samples, duplicates and samples without a final answer are rejected first
    (``truncated``, ``duplicate``, ``no_answer``); what remains is judged by agreement.
    """
    texts = [c.text.strip() for c in completions]
    # no last-number fallback: a kept solution must state its answer (boxed or "the answer is")
    answers = [extract_answer(t, last_number_fallback=False) for t in texts]
    verdicts: list[str | None] = [None] * len(texts)
    seen: set[str] = set()
    for i, c in enumerate(completions):
        if c.finish_reason == "length" and not opts.keep_truncated:
            verdicts[i] = "truncated"
        elif answers[i] is None:
            verdicts[i] = "no_answer"
        elif opts.dedupe and texts[i] in seen:
            verdicts[i] = "duplicate"
        seen.add(texts[i])
    live = [i for i, v in enumerate(verdicts) if v is None]
    mode = opts.select
    if mode == "auto":
        mode = "reference" if reference is not None else "majority"
    vote = majority_vote([answers[i] if i in live else None for i in range(len(texts))], opts=opts.check)
    majority_answer = vote.answer if (vote.unique_winner() and vote.count >= opts.min_votes) else None
    scores: list[float | None] = [None] * len(texts)
    if scorer is not None and live:
        conv = list(messages or [{"role": "user", "content": problem}])
        got = scorer.score([conv] * len(live), [texts[i] for i in live])
        for i, s in zip(live, got):
            scores[i] = float(s)
    if mode == "reference":
        for i in live:
            if reference is None:
                verdicts[i] = "no_reference"
            else:
                verdicts[i] = "correct" if is_equiv(answers[i], reference, opts.check) else "incorrect"
    elif mode == "majority":
        for i in live:
            if majority_answer is None:
                verdicts[i] = "no_majority"
            else:
                verdicts[i] = "majority" if vote.labels[i] == vote.winner else "minority"
    elif mode == "rm":
        if scorer is None:
            raise ConfigError("synth: select=rm needs a reward model; pass --rm-url and --rm-model")
        ranked = sorted(live, key=lambda i: (-(scores[i] or 0.0), i))
        top = ranked[: max(1, opts.keep_top)]
        for i in live:
            verdicts[i] = "rm_best" if i in top else "rm_rejected"
    else:
        raise ConfigError(f"synth: unknown select mode {opts.select!r}; use auto, reference, majority or rm")
    if opts.keep_top > 0 and mode != "rm":
        acc = [i for i in range(len(texts)) if verdicts[i] in ACCEPTED]
        acc.sort(key=lambda i: (-(scores[i] if scores[i] is not None else 0.0), i))
        for i in acc[opts.keep_top:]:
            verdicts[i] = "below_top_k"
    out = []
    for i, c in enumerate(completions):
        meta = _completion_meta(c) | {"problem": problem, "solution": texts[i], "answer": answers[i],
                                      "reference": reference, "select": mode}
        if mode == "majority" or (mode == "reference" and vote.winner is not None):
            meta["majority_answer"] = majority_answer
            meta["votes"] = vote.count
        if scores[i] is not None:
            meta["rm_score"] = scores[i]
        out.append(Sample(text=format_pair(problem, texts[i]), verdict=str(verdicts[i]), sample=i, meta=meta))
    return out


def verdict_counts(samples: Sequence[Sample]) -> Counter:
    return Counter(s.verdict for s in samples)


# ----------------------------------------------------------------------------- TIR
_PY_BLOCK = re.compile(r"```python[ \t]*\n(.*?)```", re.S)


def python_blocks(text: str) -> list[str]:
    """Code of every complete ```python block, in order."""
    return [m.group(1) for m in _PY_BLOCK.finditer(text)]


def tool_call_pending(c: Completion) -> bool:
    """Whether a sample stopped to have its last code block run.

    True when the backend says the ``````output`` stop string ended it, or (for servers that
    do not report which stop string fired) when the text ends with a complete python
    block and no final answer after it.
    """
    if c.finish_reason != "stop":
        return False
    if c.stop_reason == TIR_STOP:
        return True
    t = c.text.rstrip()
    if not t.endswith("```"):
        return False
    last_py = t.rfind("```python")
    return last_py >= 0 and "\\boxed" not in t[last_py:] and bool(python_blocks(t[last_py:]))


def run_tir(engine: Engine, requests: Sequence[GenRequest], results: list[GenResult], sandbox: Sandbox, *,
            max_calls: int = 4, workers: int = 4, base_seed: int = 0, max_output_chars: int = 2000) -> None:
    """Continue every sample that stopped at a tool call, up to ``max_calls`` times.

    Each round runs the pending programs (all blocks of that sample so far, so state
    carries over) in parallel sandboxes, appends ``````output ... ``````, and asks the engine
    to continue each trajectory once (``n=1``, seed derived from the seed doc, sample and
    round). ``results`` is updated in place: each completion's text becomes the whole
    trajectory.
    """
    for rnd in range(1, max_calls + 1):
        pending = [(ri, ci) for ri, r in enumerate(results) for ci, c in enumerate(r.completions)
                   if c.tool_calls < max_calls and tool_call_pending(c) and python_blocks(c.text)]
        if not pending:
            return
        outs = sandbox.run_many([python_blocks(results[ri].completions[ci].text) for ri, ci in pending], workers)
        conts = []
        for (ri, ci), res in zip(pending, outs):
            c = results[ri].completions[ci]
            text = c.text if c.text.endswith("\n") else c.text + "\n"
            c.text = f"{text}{TIR_STOP}\n{res.feedback(max_output_chars)}\n```\n"
            c.tool_calls += 1
            req = requests[ri]
            conts.append(GenRequest(key=f"{req.key}/{ci}/r{rnd}", messages=req.messages, prefix=c.text,
                                    params=req.params.with_(n=1, seed=derive_seed(base_seed, req.key, ci, rnd))))
        for (ri, ci), got in zip(pending, engine.generate(conts)):
            c = results[ri].completions[ci]
            more = got.completions[0]
            c.text += more.text
            c.finish_reason = more.finish_reason
            c.stop_reason = more.stop_reason
            if more.tokens is not None:
                c.tokens = (c.tokens or 0) + more.tokens
