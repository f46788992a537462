"""The benchmark registry: bundled evaluation sets, user files, the HF hub, and profiles.

Owns how an evaluation set becomes a list of :class:`Item` s with a question, a solution or
answer, and choices. A benchmark's name is its file stem; an item's id is its 0-based line
(or row) number in that file, as a string, so a report can point at the exact record.

Sources:

* bundled package data (``decontam/data/benchmarks/*.jsonl``, see the README there for
  provenance and licenses);
* any local ``.jsonl``/``.parquet`` with a field mapping
  (``NAME=PATH:question_field,answer_field``, see :func:`parse_benchmark_file_spec`);
* the Hugging Face hub when ``datasets`` is installed and online
  (``NAME=hf:REPO[/CONFIG]@SPLIT:question_field,answer_field``); never used in tests.

Profiles follow Qwen2.5-Math: ``pretrain`` = GSM8K + MATH, ``posttrain`` = all twelve
post-training evaluation sets (GaoKao counts as one: its QA and cloze files).
"""

from __future__ import annotations

import ast
import json
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any

from corpus.config import closest
from corpus.errors import ConfigError, InputError
from corpus.textnorm import is_cjk

PROFILES: dict[str, tuple[str, ...]] = {
    "pretrain": ("gsm8k", "math"),
    "posttrain": (
        "gsm8k", "math", "minerva_math", "gaokao2023en", "olympiadbench", "college_math", "mmlu_stem",
        "gaokao_math_qa", "gaokao_math_cloze", "cmath", "cn_middle_school", "aime24", "amc23",
    ),
}


@dataclass(frozen=True)
class FieldMap:
    """Which record fields hold the question, the solution, the answer and the choices."""

    question: tuple[str, ...]
    solution: tuple[str, ...] = ()
    answer: tuple[str, ...] = ()
    choices: tuple[str, ...] = ()


# Field layouts of the bundled files (see decontam/data/benchmarks/README.md). Fields listed
# together are joined; missing or 'None' fields are skipped.
_BUILTIN_FIELDS: dict[str, FieldMap] = {
    "gsm8k": FieldMap(("question",), answer=("answer",)),
    "math": FieldMap(("problem",), solution=("solution",)),
    "minerva_math": FieldMap(("problem",), solution=("solution",)),
    "gaokao2023en": FieldMap(("question",), answer=("answer",)),
    "olympiadbench": FieldMap(("context", "question"), solution=("solution",), answer=("final_answer",)),
    "college_math": FieldMap(("question",), answer=("answer",)),
    "mmlu_stem": FieldMap(("question",), answer=("answer",), choices=("choices",)),
    "gaokao_math_qa": FieldMap(("passage", "question"), answer=("answer", "label"), choices=("options",)),
    "gaokao_math_cloze": FieldMap(("passage", "question"), answer=("answer",), choices=("options",)),
    "cmath": FieldMap(("question",), answer=("answer",)),
    "cn_middle_school": FieldMap(("question",), answer=("answer",)),
    "aime24": FieldMap(("problem",), solution=("solution",), answer=("answer",)),
    "amc23": FieldMap(("problem",), answer=("answer",)),
    "gaokao2024_I": FieldMap(("question",), answer=("answer",)),
    "gaokao2024_II": FieldMap(("question",), answer=("answer",)),
    "gaokao2024_mix": FieldMap(("question",), answer=("answer",)),
    "sat_math": FieldMap(("question",), answer=("Answer",), choices=("options",)),
}
# Fields that may hold a list or dict written as a string ("['a', 'b']", "{'A': ...}").
_STRUCTURED = ("choices", "options", "solution", "final_answer")
# GSM8K solutions carry calculator annotations (<<16-3-4=9>>) that copies on the web drop.
_CALC_RE = re.compile(r"<<[^<>]*>>")


@dataclass(frozen=True)
class Item:
    """One evaluation item: texts are raw (not normalized); empty string = absent."""

    benchmark: str
    item_id: str
    question: str
    solution: str = ""
    answer: str = ""
    choices: str = ""

    @property
    def second(self) -> tuple[str, str]:
        """``(part name, text)`` of the part after the question: the solution, else the answer."""
        if self.solution:
            return "solution", self.solution
        return "answer", self.answer

    def both_text(self) -> str:
        """Question, choices and solution/answer as one text (grams spanning the parts)."""
        return "\n".join(t for t in (self.question, self.choices, self.second[1]) if t)


@dataclass
class Benchmark:
    """A loaded evaluation set."""

    name: str
    path: str
    origin: str  # package | file | hub
    items: list[Item]
    fields: FieldMap
    lang: str = "en"
    meta: dict[str, Any] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        f = self.fields
        return {
            "name": self.name, "items": len(self.items), "lang": self.lang, "origin": self.origin,
            "path": self.path, "question_fields": list(f.question), "solution_fields": list(f.solution),
            "answer_fields": list(f.answer), "choices_fields": list(f.choices),
        }


# ----------------------------------------------------------------------------- values
def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, str) and v.strip() in ("", "None", "null", "nan"))


def _parse_structured(v: str) -> Any:
    s = v.strip()
    if not (s[:1] in "[{" and s[-1:] in "]}"):
        return v
    for parse in (json.loads, ast.literal_eval):
        try:
            out = parse(s)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(out, (list, dict)):
            return out
    return v


def value_text(v: Any, structured: bool = False) -> str:
    """A field value as text: lists joined by newlines, dicts as ``key. value`` lines.

    Numbers print without a spurious ``.0`` (AMC answers are floats such as ``27.0``).
    """
    if _is_missing(v):
        return ""
    if isinstance(v, str) and structured:
        v = _parse_structured(v)
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return str(int(v)) if v.is_integer() else repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, dict):
        return "\n".join(f"{k}. {value_text(x)}" for k, x in v.items() if not _is_missing(x))
    if isinstance(v, (list, tuple)):
        return "\n".join(value_text(x) for x in v if not _is_missing(x))
    return str(v)


def _join(record: dict[str, Any], names: tuple[str, ...], structured: bool = False) -> str:
    parts = [value_text(record.get(n), structured=structured or n in _STRUCTURED) for n in names]
    return "\n".join(p for p in parts if p)


def make_item(benchmark: str, item_id: str, record: dict[str, Any], fields: FieldMap) -> Item:
    """Build an :class:`Item` from one record according to ``fields``.

    Choices and solutions may be lists or dicts, possibly written as strings; answers are
    parsed only when their field is known to hold a list (a set answer such as ``{1,2}``
    must stay text).
    """
    question = _join(record, fields.question)
    solution = _join(record, fields.solution, structured=True)
    answer = _join(record, fields.answer)
    choices = _join(record, fields.choices, structured=True)
    if benchmark == "mmlu_stem" and isinstance(record.get("answer"), int):
        # the answer is an index into the choices: use the choice text
        ch = _parse_structured(record["choices"]) if isinstance(record.get("choices"), str) else record.get("choices")
        if isinstance(ch, list) and 0 <= record["answer"] < len(ch):
            answer = value_text(ch[record["answer"]])
    if benchmark == "gsm8k":
        answer = _CALC_RE.sub("", answer)
    return Item(benchmark, item_id, question, solution, answer, choices)


def detect_lang(items: list[Item]) -> str:
    """``zh`` when CJK characters make up a large share of the questions, else ``en``."""
    sample = "".join(it.question for it in items[:200])
    letters = [c for c in sample if c.isalpha()]
    if not letters:
        return "en"
    share = sum(1 for c in letters if is_cjk(ord(c))) / len(letters)
    return "zh" if share > 0.3 else "en"


# ----------------------------------------------------------------------------- reading
def _read_records(path: str) -> list[dict[str, Any]]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{path}: benchmark file not found")
    if p.suffix == ".parquet":
        import pyarrow.parquet as pq

        try:
            return pq.read_table(p).to_pylist()
        except (OSError, ValueError) as exc:
            raise InputError(f"{path}: not a readable Parquet file ({exc})") from exc
    if not p.name.endswith((".jsonl", ".json")):
        raise ConfigError(f"{path}: unsupported benchmark file type; use .jsonl or .parquet")
    out: list[dict[str, Any]] = []
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh):
            if not line.strip():
                # keep numbering: an item's id is its line number
                out.append({})
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}: invalid JSON on line {lineno + 1}: {exc.msg} (column {exc.colno})") from exc
            if not isinstance(rec, dict):
                raise InputError(f"{path}: line {lineno + 1} is not a JSON object")
            out.append(rec)
    return out


def package_dir() -> Path:
    """Folder of the bundled benchmark files."""
    return Path(str(resources.files("decontam") / "data" / "benchmarks"))


@lru_cache(maxsize=1)
def bundled_names() -> tuple[str, ...]:
    d = package_dir()
    return tuple(sorted(p.name[: -len(".jsonl")] for p in d.glob("*.jsonl")))


def _build(name: str, path: str, origin: str, records: list[dict[str, Any]], fields: FieldMap) -> Benchmark:
    items = []
    for i, rec in enumerate(records):
        if not rec:
            continue
        items.append(make_item(name, str(i), rec, fields))
    if not any(it.question for it in items):
        raise ConfigError(
            f"{path}: benchmark '{name}' has no text in question field(s) {', '.join(fields.question)}; "
            f"fields found: {', '.join(sorted(records[0])) if records else '(file is empty)'}")
    return Benchmark(name=name, path=path, origin=origin, items=items, fields=fields, lang=detect_lang(items))


@lru_cache(maxsize=64)
def load_bundled(name: str) -> Benchmark:
    """One bundled benchmark by name (cached: the files are read-only package data)."""
    if name not in bundled_names():
        raise ConfigError(f"unknown benchmark '{name}'{closest(name, bundled_names())} "
                          f"(bundled: {', '.join(bundled_names())}; profiles: {', '.join(PROFILES)})")
    path = str(package_dir() / f"{name}.jsonl")
    fields = _BUILTIN_FIELDS.get(name, FieldMap(("question",), answer=("answer",)))
    return _build(name, path, "package", _read_records(path), fields)


def parse_benchmark_file_spec(spec: str) -> tuple[str, str, FieldMap]:
    """Parse ``NAME=PATH[:question_field[,answer_field[,choices_field]]]``.

    PATH is a ``.jsonl``/``.parquet`` file, or ``hf:REPO[/CONFIG]@SPLIT`` for the Hugging Face
    hub. The answer field may hold a full solution or a short answer; both are indexed.
    """
    if "=" not in spec:
        raise ConfigError(f"--benchmark-file {spec!r}: expected NAME=PATH:question_field,answer_field "
                          "(e.g. mytest=data/test.jsonl:problem,solution)")
    name, rest = spec.split("=", 1)
    name = name.strip()
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ConfigError(f"--benchmark-file {spec!r}: the name {name!r} may only use letters, digits, '_', '.', '-'")
    path, fields_s = rest, ""
    m = re.match(r"^(hf:[^:]+)(?::(.*))?$", rest) or re.match(r"^(.*\.(?:jsonl|json|parquet)):(.*)$", rest)
    if m:
        path, fields_s = m.group(1), m.group(2) or ""
    parts = [f.strip() for f in fields_s.split(",") if f.strip()] if fields_s else []
    if len(parts) > 3:
        raise ConfigError(f"--benchmark-file {spec!r}: at most three fields (question,answer,choices)")
    q = parts[0] if parts else "question"
    a = parts[1] if len(parts) > 1 else "answer"
    c = (parts[2],) if len(parts) > 2 else ()
    return name, path, FieldMap((q,), answer=(a,), choices=c)


def load_file_benchmark(spec: str) -> Benchmark:
    """A benchmark from a local JSONL/Parquet file given as ``NAME=PATH:question,answer``."""
    name, path, fields = parse_benchmark_file_spec(spec)
    if path.startswith("hf:"):
        return load_hub_benchmark(name, path[3:], fields)
    records = _read_records(path)
    present = set().union(*(r.keys() for r in records[:100])) if records else set()
    if records and fields.question[0] not in present:
        raise ConfigError(f"{path}: question field '{fields.question[0]}' not found"
                          f"{closest(fields.question[0], present)} (fields: {', '.join(sorted(present))}); "
                          f"name the file's fields as NAME=PATH:question_field,answer_field")
    for i, rec in enumerate(records):
        # An item without its question would silently go unchecked: refuse the file instead.
        if rec and rec.get(fields.question[0]) is None:  # absent or null; the string 'None' is data
            raise InputError(f"{path}: line {i + 1} has no '{fields.question[0]}' field (item id {i}); every "
                             "benchmark item needs its question. Fix or remove that line (keep the line count "
                             "if item ids must stay the line numbers)")
    return _build(name, os.path.abspath(path), "file", records, fields)


def load_hub_benchmark(name: str, ref: str, fields: FieldMap) -> Benchmark:
    """``REPO[/CONFIG]@SPLIT`` from the Hugging Face hub (needs ``datasets`` and a network)."""
    try:
        import datasets  # type: ignore[import-not-found]
    except ImportError as exc:
        raise ConfigError(f"benchmark '{name}': loading {ref!r} from the hub needs the 'datasets' package "
                          "(pip install datasets); or download it and pass NAME=PATH.jsonl") from exc
    repo, _, split = ref.partition("@")
    repo_parts = repo.split("/")
    config = repo_parts[2] if len(repo_parts) > 2 else None
    ds = datasets.load_dataset("/".join(repo_parts[:2]), config, split=split or "test")
    return _build(name, f"hf:{ref}", "hub", [dict(r) for r in ds], fields)


def resolve_names(spec: str) -> list[str]:
    """Expand ``pretrain``/``posttrain``/``all`` or a comma list into bundled names."""
    names: list[str] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        if part in PROFILES:
            names.extend(PROFILES[part])
        elif part == "all":
            names.extend(bundled_names())
        else:
            if part not in bundled_names():
                raise ConfigError(f"unknown benchmark '{part}'{closest(part, list(bundled_names()) + list(PROFILES))} "
                                  f"(bundled: {', '.join(bundled_names())}; profiles: pretrain, posttrain, all)")
            names.append(part)
    seen: set[str] = set()
    return [n for n in names if not (n in seen or seen.add(n))]


def load_benchmarks(spec: str | None, files: list[str] | tuple[str, ...] = ()) -> list[Benchmark]:
    """Benchmarks named by ``spec`` (profile or names) plus ``NAME=PATH:...`` file specs."""
    out = [load_bundled(n) for n in resolve_names(spec or "")]
    for f in files:
        b = load_file_benchmark(f)
        if any(x.name == b.name for x in out):
            raise ConfigError(f"--benchmark-file {f!r}: the name '{b.name}' is already used; choose another NAME")
        out.append(b)
    if not out:
        raise ConfigError("no benchmarks selected; pass --benchmarks pretrain|posttrain|name,name or --benchmark-file")
    return out
