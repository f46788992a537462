"""Request cache by content hash: a rerun or a resumed run sends only requests it has not sent.

A request's key is a hash of everything that shapes the answer (model, messages, prefix,
sampling parameters), never of where it came from, so two runs that happen to ask the same
question share the answer. Answers are appended as Parquet parts
(``part-{rank:05d}-{k:05d}.parquet``), each written to a temporary name and renamed, so a
part with its final name is always complete and a killed run loses at most one flush.

synth keeps its own seed-keyed resume cache (its outputs are judged again on reuse); this
one serves callers whose unit is one request: the decontam judge tier and annotation.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import xxhash

from corpus import fs as cfs
from corpus.errors import FatalError, ShardError
from corpus.teacher.base import Completion, Engine, GenRequest, GenResult

CACHE_SCHEMA = pa.schema([
    ("key", pa.string()),
    ("sample", pa.int32()),
    ("text", pa.string()),
    ("finish_reason", pa.string()),
    ("stop_reason", pa.string()),
    ("tokens", pa.int32()),
    ("prompt_tokens", pa.int32()),
])


def request_hash(model: str, req: GenRequest) -> str:
    """The content key of ``req`` sent to ``model``: a 128-bit xxhash of its JSON form."""
    body = {"model": model, "messages": [dict(m) for m in req.messages], "prefix": req.prefix,
            "params": req.params.to_dict()}
    return xxhash.xxh3_128_hexdigest(json.dumps(body, sort_keys=True, ensure_ascii=False).encode("utf-8"))


class RequestCache:
    """Answers by request key, read from and appended to a folder of Parquet parts."""

    def __init__(self, folder: str, rank: int = 0) -> None:
        self.folder = folder
        self.rank = rank
        self._answers: dict[str, GenResult] = {}
        self._next = 0
        self._loaded = False

    def load(self) -> "RequestCache":
        """Read every part in the folder (any rank's), once."""
        if self._loaded:
            return self
        self._loaded = True
        paths, nxt = cfs.numbered_parts(self.folder, self.rank)
        self._next = max(self._next, nxt)
        for path in paths:
            try:
                rows = cfs.read_parquet(path, schema=CACHE_SCHEMA).to_pylist()
            except (pa.ArrowInvalid, OSError) as exc:
                raise ShardError(f"{path}: unreadable request cache part ({exc}); delete it and rerun to ask "
                                 "those requests again", path) from exc
            fresh: dict[str, GenResult] = {}
            for r in rows:
                res = fresh.setdefault(r["key"], GenResult(key=r["key"], completions=[],
                                                           prompt_tokens=r["prompt_tokens"]))
                res.completions.append(Completion(text=r["text"], finish_reason=r["finish_reason"],
                                                  stop_reason=r["stop_reason"], tokens=r["tokens"]))
            self._answers.update(fresh)
        return self

    def __len__(self) -> int:
        return len(self._answers)

    def __contains__(self, key: str) -> bool:
        return key in self._answers

    def get(self, key: str) -> GenResult | None:
        return self._answers.get(key)

    def put(self, results: Sequence[GenResult]) -> None:
        """Append ``results`` (keyed by their ``key``) as one part, atomically."""
        rows: list[dict[str, Any]] = [
            {"key": r.key, "sample": i, "text": c.text, "finish_reason": c.finish_reason,
             "stop_reason": c.stop_reason, "tokens": c.tokens, "prompt_tokens": r.prompt_tokens}
            for r in results for i, c in enumerate(r.completions)]
        if not rows:
            return
        final = cfs.join(self.folder, f"part-{self.rank:05d}-{self._next:05d}.parquet")
        try:  # .tmp + rename locally; one upload, visible only when whole, on object storage
            with cfs.AtomicWriter(final) as w:
                pq.write_table(pa.Table.from_pylist(rows, schema=CACHE_SCHEMA), w.file, compression="zstd")
        except OSError as exc:
            raise FatalError(f"{final}: cannot write the request cache ({exc}); check free space and "
                             "permissions") from exc
        self._next += 1
        for r in results:
            self._answers[r.key] = r


def cached_generate(engine: Engine, requests: Sequence[GenRequest], cache: RequestCache | None,
                    flush_every: int = 256) -> tuple[list[GenResult], int]:
    """Answers to ``requests`` in order, asking ``engine`` only for those not in ``cache``.

    Keys are content hashes (:func:`request_hash`), so the caller's own ``key`` is kept on
    the returned result but does not decide reuse. New answers are flushed every
    ``flush_every`` requests. Returns the results and how many requests were sent.
    """
    keys = [request_hash(engine.model, r) for r in requests]
    out: list[GenResult | None] = [None] * len(requests)
    todo: list[int] = []
    seen: dict[str, int] = {}
    for i, k in enumerate(keys):
        hit = cache.get(k) if cache is not None else None
        if hit is not None:
            out[i] = GenResult(key=requests[i].key, completions=hit.completions, prompt_tokens=hit.prompt_tokens)
        elif k not in seen:  # the same request twice in one call is sent once
            seen[k] = i
            todo.append(i)
    sent = 0
    for s in range(0, len(todo), max(1, flush_every)):
        chunk = todo[s:s + max(1, flush_every)]
        results = engine.generate([requests[i] for i in chunk])
        sent += len(chunk)
        if cache is not None:
            cache.put([GenResult(key=keys[i], completions=r.completions, prompt_tokens=r.prompt_tokens)
                       for i, r in zip(chunk, results)])
        for i, r in zip(chunk, results):
            out[i] = r
    for i, k in enumerate(keys):
        if out[i] is None:  # a duplicate of a request answered above
            src = out[seen[k]]
            assert src is not None
            out[i] = GenResult(key=requests[i].key, completions=src.completions, prompt_tokens=src.prompt_tokens)
    return [r for r in out if r is not None], sent
