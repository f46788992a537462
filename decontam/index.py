"""The n-gram index of the evaluation sets: build once, save, load lazily in every worker.

Owns what is matched. For every benchmark item it hashes every ``n``-gram (default 13) of
the item's full text (question, choices, then solution or answer), so question-only,
solution-only and spanning grams are all indexed, and keeps a posting list from each gram
to the items it occurs in. Items shorter than ``n`` tokens but at least ``min_phrase_tokens``
(default 8) long are indexed as whole phrases, keyed by their first ``min_phrase_tokens``
tokens; shorter items cannot be checked and are listed as unchecked.

Boilerplate must not decide a match:

* figure code (Asymptote, TikZ) is removed from items before hashing (``strip_figures``);
* grams that occur in more than ``max_gram_items`` items (instruction templates such as
  Gaokao's "请完成下面一道选择题…" preamble, shared setups) are dropped.

Both exclusions are recorded in the index metadata and repeated in every report.

On disk an index is a folder: ``meta.json``, ``items.parquet`` and ``.npy`` arrays that are
memory-mapped on load, so workers on one machine share the pages.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from corpus import __version__
from corpus.errors import ConfigError, InputError
from corpus.shards import atomic_write_json
from corpus.textnorm import figure_spans, strip_figure_code, tokenize
from decontam.benchmarks import Benchmark, Item
from decontam.kernel import KeySet, make_bitmap, scan

INDEX_FORMAT = 1
PART_QUESTION = 0
PART_SECOND = 1
PART_BOTH = 2
PART_NAMES = {PART_QUESTION: "question", PART_SECOND: "solution", PART_BOTH: "both"}
_ARRAYS = ("keys", "bitmap", "post_off", "post_item", "pkeys", "pbitmap", "ppost_off", "ppost_item",
           "ppost_part", "ppost_len")


@dataclass
class IndexOptions:
    """How an index is built (stored in its metadata; a run must use the same ``ngram``)."""

    ngram: int = 13
    min_phrase_tokens: int = 8
    max_gram_items: int = 10
    strip_figures: bool = True

    def validate(self) -> None:
        if not 2 <= self.ngram <= 64:
            raise ConfigError(f"ngram must be between 2 and 64, got {self.ngram}")
        if not 1 <= self.min_phrase_tokens <= self.ngram:
            raise ConfigError(f"min_phrase_tokens must be between 1 and ngram ({self.ngram}), "
                              f"got {self.min_phrase_tokens}")
        if self.max_gram_items < 1:
            raise ConfigError(f"max_gram_items must be at least 1, got {self.max_gram_items}")


@dataclass
class DecontamIndex:
    """Gram keys with posting lists, phrase keys, and the indexed item texts."""

    meta: dict[str, Any]
    items: pa.Table
    arrays: dict[str, np.ndarray] = field(repr=False)

    # -- views -------------------------------------------------------------------------
    @property
    def ngram(self) -> int:
        return int(self.meta["options"]["ngram"])

    @property
    def phrase_n(self) -> int:
        return int(self.meta["options"]["min_phrase_tokens"])

    @property
    def grams(self) -> KeySet:
        """The n-gram keys as the kernel reads them (built once: the bucket directory is derived)."""
        ks = self.__dict__.get("_grams")
        if ks is None:
            a = self.arrays
            ks = self.__dict__["_grams"] = KeySet(np.asarray(a["keys"]), np.asarray(a["bitmap"]),
                                                  int(self.meta["bitmap_shift"]))
        return ks

    @property
    def phrases(self) -> KeySet:
        """The short-item phrase keys as the kernel reads them."""
        ks = self.__dict__.get("_phrases")
        if ks is None:
            a = self.arrays
            ks = self.__dict__["_phrases"] = KeySet(np.asarray(a["pkeys"]), np.asarray(a["pbitmap"]),
                                                    int(self.meta["pbitmap_shift"]))
        return ks

    def gram_items(self, key_idx: int) -> np.ndarray:
        a = self.arrays
        return a["post_item"][a["post_off"][key_idx]: a["post_off"][key_idx + 1]]

    def phrase_entries(self, key_idx: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        a = self.arrays
        lo, hi = a["ppost_off"][key_idx], a["ppost_off"][key_idx + 1]
        return a["ppost_item"][lo:hi], a["ppost_part"][lo:hi], a["ppost_len"][lo:hi]

    def benchmark_names(self) -> list[str]:
        return [b["name"] for b in self.meta["benchmarks"]]

    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in self.arrays.values()) + self.items.nbytes)

    # -- persistence -----------------------------------------------------------------------
    def save(self, path: str) -> None:
        """Write the index folder atomically enough: arrays first, ``meta.json`` last."""
        os.makedirs(path, exist_ok=True)
        for name in _ARRAYS:
            tmp = os.path.join(path, f"{name}.tmp.npy")
            np.save(tmp, np.ascontiguousarray(self.arrays[name]))
            os.replace(tmp, os.path.join(path, f"{name}.npy"))
        pq.write_table(self.items, os.path.join(path, "items.parquet.tmp"), compression="zstd")
        os.replace(os.path.join(path, "items.parquet.tmp"), os.path.join(path, "items.parquet"))
        atomic_write_json(os.path.join(path, "meta.json"), self.meta)

    @classmethod
    def load(cls, path: str, mmap: bool = True) -> "DecontamIndex":
        """Load a saved index; arrays are memory-mapped read-only (shared between workers)."""
        meta_path = os.path.join(path, "meta.json")
        if not os.path.isfile(meta_path):
            raise ConfigError(f"{path}: not a decontam index (no meta.json); build one with "
                              "'mathcorpus decontam index --benchmarks posttrain -o IDX'")
        with open(meta_path, encoding="utf-8") as fh:
            meta = json.load(fh)
        if meta.get("format") != INDEX_FORMAT:
            raise ConfigError(f"{path}: index format {meta.get('format')} is not supported by this version "
                              f"(expects {INDEX_FORMAT}); rebuild it with 'mathcorpus decontam index'")
        arrays = {}
        for name in _ARRAYS:
            p = os.path.join(path, f"{name}.npy")
            if not os.path.isfile(p):
                raise InputError(f"{path}: index file {name}.npy is missing; rebuild the index")
            arrays[name] = np.load(p, mmap_mode="r" if mmap else None)
        items = pq.read_table(os.path.join(path, "items.parquet"))
        return cls(meta=meta, items=items, arrays=arrays)


# ----------------------------------------------------------------------------- building
def _clean(text: str, strip: bool) -> str:
    return strip_figure_code(text) if strip else text


def _file_digest(path: str) -> str | None:
    if not os.path.isfile(path):
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def build_index(benchmarks: list[Benchmark], options: IndexOptions | None = None,
                profile: str | None = None) -> DecontamIndex:
    """Build the index of ``benchmarks`` (deterministic: same inputs, same arrays).

    ``profile`` records how the benchmarks were selected (``pretrain``, ``posttrain`` or
    names), for reports.
    """
    opt = options or IndexOptions()
    opt.validate()
    n, pn = opt.ngram, opt.min_phrase_tokens
    items: list[Item] = [it for b in benchmarks for it in b.items]
    if not items:
        raise ConfigError("the selected benchmarks have no items")
    q_text = [_clean(it.question, opt.strip_figures) for it in items]
    c_text = [_clean(it.choices, opt.strip_figures) for it in items]
    s_text = [_clean(it.second[1], opt.strip_figures) for it in items]
    b_text = ["\n".join(t for t in (q, c, s) if t) for q, c, s in zip(q_text, c_text, s_text)]
    figure_items = Counter(it.benchmark for it in items if opt.strip_figures and figure_spans(it.both_text()))
    raw_tokens = sum(len(tokenize(it.both_text())) for it in items if figure_spans(it.both_text())) \
        if opt.strip_figures else 0

    both = scan(pa.array(b_text, pa.string()), n, emit_grams=True)
    ques = scan(pa.array(q_text, pa.string()), pn, emit_grams=True)
    n_both = both.ntok
    n_q = ques.ntok
    fig_tokens_removed = raw_tokens - int(sum(n_both[i] for i, it in enumerate(items)
                                              if opt.strip_figures and figure_spans(it.both_text())))

    # -- n-grams: unique (key, item) pairs, then drop grams shared by too many items
    g_key, g_item, g_pos = both.gram_key, both.gram_row.astype(np.int32), both.gram_pos
    order = np.lexsort((g_pos, g_item, g_key))
    g_key, g_item, g_pos = g_key[order], g_item[order], g_pos[order]
    first = np.ones(len(g_key), dtype=bool)
    first[1:] = (g_key[1:] != g_key[:-1]) | (g_item[1:] != g_item[:-1])
    pk, pi, pp = g_key[first], g_item[first], g_pos[first]
    uk, start, cnt = np.unique(pk, return_index=True, return_counts=True)
    frequent = cnt > opt.max_gram_items
    keep_key = ~frequent
    keep_pair = np.repeat(keep_key, cnt)
    keys = uk[keep_key]
    post_item = pi[keep_pair]
    post_off = np.zeros(len(keys) + 1, dtype=np.int64)
    np.cumsum(cnt[keep_key], out=post_off[1:])

    # examples of suppressed grams (most shared first), as normalized text
    examples = []
    if frequent.any():
        fidx = np.flatnonzero(frequent)
        top = fidx[np.argsort(-cnt[fidx], kind="stable")][:10]
        for k in top:
            it_i, pos = int(pi[start[k]]), int(pp[start[k]])
            toks = tokenize(b_text[it_i])[pos: pos + n]
            examples.append({"gram": " ".join(toks), "items": int(cnt[k]),
                             "benchmarks": sorted({items[int(j)].benchmark
                                                   for j in pi[start[k]: start[k] + cnt[k]]})})
    items_with_grams = np.zeros(len(items), dtype=bool)
    items_with_grams[post_item] = True

    # -- phrases: items (or questions) shorter than n but at least pn tokens
    first_q = np.full(len(items), -1, dtype=np.int64)
    qsel = ques.gram_pos == 0
    first_q[ques.gram_row[qsel]] = np.arange(len(qsel))[qsel]
    both_p = scan(pa.array(b_text, pa.string()), pn, emit_grams=True)
    first_b = np.full(len(items), -1, dtype=np.int64)
    bsel = both_p.gram_pos == 0
    first_b[both_p.gram_row[bsel]] = np.arange(len(bsel))[bsel]
    ph_key: list[int] = []
    ph_item: list[int] = []
    ph_part: list[int] = []
    ph_len: list[int] = []
    for i in range(len(items)):
        if pn <= n_q[i] < n:
            ph_key.append(int(ques.gram_key[first_q[i]]))
            ph_item.append(i)
            ph_part.append(PART_QUESTION)
            ph_len.append(int(n_q[i]))
        if pn <= n_both[i] < n and n_both[i] != n_q[i]:
            ph_key.append(int(both_p.gram_key[first_b[i]]))
            ph_item.append(i)
            ph_part.append(PART_BOTH)
            ph_len.append(int(n_both[i]))
    ph_key_a = np.array(ph_key, dtype=np.uint64)
    order = np.lexsort((np.array(ph_part, dtype=np.int8), np.array(ph_item, dtype=np.int32), ph_key_a))
    ph_key_a = ph_key_a[order]
    pkeys, pcnt = np.unique(ph_key_a, return_counts=True)
    ppost_off = np.zeros(len(pkeys) + 1, dtype=np.int64)
    np.cumsum(pcnt, out=ppost_off[1:])
    ppost_item = np.array(ph_item, dtype=np.int32)[order]
    ppost_part = np.array(ph_part, dtype=np.int8)[order]
    ppost_len = np.array(ph_len, dtype=np.int32)[order]
    has_phrase = np.zeros(len(items), dtype=bool)
    has_phrase[ppost_item] = True

    # -- unchecked items: shorter than pn tokens, or every gram was suppressed
    unchecked: dict[str, dict[str, Any]] = {}
    for i, it in enumerate(items):
        short = n_both[i] < pn
        suppressed = not short and not items_with_grams[i] and not has_phrase[i]
        if short or suppressed:
            u = unchecked.setdefault(it.benchmark, {"short": [], "suppressed": []})
            u["short" if short else "suppressed"].append(it.item_id)

    bitmap, shift = make_bitmap(keys)
    pbitmap, pshift = make_bitmap(pkeys)
    arrays = {"keys": keys, "bitmap": bitmap, "post_off": post_off, "post_item": post_item,
              "pkeys": pkeys, "pbitmap": pbitmap, "ppost_off": ppost_off, "ppost_item": ppost_item,
              "ppost_part": ppost_part, "ppost_len": ppost_len}
    table = pa.table({
        "benchmark": pa.array([it.benchmark for it in items], pa.string()),
        "item_id": pa.array([it.item_id for it in items], pa.string()),
        "question": pa.array(q_text, pa.string()),
        "choices": pa.array(c_text, pa.string()),
        "second_name": pa.array([it.second[0] for it in items], pa.string()),
        "second": pa.array(s_text, pa.string()),
        "n_question": pa.array(n_q, pa.int32()),
        "n_both": pa.array(n_both, pa.int32()),
    })
    meta = {
        "format": INDEX_FORMAT,
        "profile": profile or ",".join(b.name for b in benchmarks),
        "mathcorpus_version": __version__,
        "options": asdict(opt),
        "benchmarks": [dict(b.describe(), sha256_16=_file_digest(b.path)) for b in benchmarks],
        "items": len(items),
        "grams": int(len(keys)),
        "postings": int(len(post_item)),
        "phrases": int(len(ppost_item)),
        "bitmap_shift": int(shift),
        "pbitmap_shift": int(pshift),
        "excluded": {
            "figure_code": {
                "stripped": opt.strip_figures,
                "items_with_figure_code": dict(sorted(figure_items.items())),
                "tokens_removed": int(max(fig_tokens_removed, 0)),
            },
            "frequent_grams": {
                "max_gram_items": opt.max_gram_items,
                "grams_suppressed": int(frequent.sum()),
                "item_gram_pairs_suppressed": int(cnt[frequent].sum()),
                "examples": examples,
            },
        },
        "unchecked": {k: {"short": v["short"], "suppressed": v["suppressed"]} for k, v in sorted(unchecked.items())},
    }
    return DecontamIndex(meta=meta, items=table, arrays=arrays)


def unchecked_counts(meta: dict[str, Any]) -> dict[str, tuple[int, list[str]]]:
    """Per benchmark: ``(count, item ids)`` of items the index cannot check."""
    out = {}
    for b in meta["benchmarks"]:
        u = meta["unchecked"].get(b["name"], {"short": [], "suppressed": []})
        ids = list(u["short"]) + list(u["suppressed"])
        out[b["name"]] = (len(ids), ids)
    return out
