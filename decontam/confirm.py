"""Confirmation of n-gram candidates by the LCS ratio, over an item-sized window of the document.

Owns the second half of the Qwen2.5-Math rule. The kernel finds documents that share at
least one gram (or a whole short phrase) with an item; here, for each such (document, item)
pair and for each part of the item (the question alone, the solution or answer alone, and
both together), the ratio

    LCS(part tokens, W) / |part tokens|

is computed with rapidfuzz over normalized tokens (their 64-bit hashes from the kernel). ``W``
is the stretch of the document that the matched grams align the part with, widened by a
small slack for edits: about as long as the part, never the whole document, so a long page
cannot reach the threshold by collecting scattered common words. A pair contaminates the
document when a part's ratio is above the threshold (policy ``ngram+lcs``), or when any gram
matched (policy ``ngram``, kept for comparison). Parts shorter than ``n`` tokens count only
when they occur whole.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from rapidfuzz.distance import LCSseq

from corpus.textnorm import tokenize
from decontam.index import PART_QUESTION, DecontamIndex
from decontam.kernel import scan

POLICIES = ("ngram+lcs", "ngram")


@dataclass
class ItemTokens:
    """Normalized tokens (as hashes) of one indexed item and where each of its grams occurs."""

    tokens: list[int]       # question + choices + second, as one token list
    q_len: int
    second_start: int
    second_name: str
    gram_keys: np.ndarray   # the item's gram keys, sorted
    gram_pos: np.ndarray    # position in ``tokens`` of each of those grams
    text: str               # the indexed text, for the readable gram samples
    _words: list[str] | None = None

    def words(self) -> list[str]:
        """The tokens as strings (computed on first use: only samples need them)."""
        if self._words is None:
            self._words = tokenize(self.text)
        return self._words

    def parts(self, min_tokens: int) -> list[tuple[str, int, int]]:
        """``(field, start, end)`` of the parts long enough to judge alone."""
        out = []
        n = len(self.tokens)
        if n >= min_tokens:
            out.append(("both", 0, n))
        if min_tokens <= self.q_len < n:
            out.append(("question", 0, self.q_len))
        if n - self.second_start >= min_tokens and self.second_start > 0:
            out.append((self.second_name, self.second_start, n))
        return out


@dataclass
class PairResult:
    """The verdict on one (document, item) pair."""

    item: int
    field: str
    grams_matched: int
    lcs_ratio: float
    tok_lo: int
    tok_hi: int
    contaminated: bool
    sample: list[str] = field(default_factory=list)

    def sample_json(self) -> str:
        return json.dumps(self.sample, ensure_ascii=False)


# Preference among parts with (nearly) the same ratio: the most complete evidence first.
_FIELD_RANK = {"both": 0, "question": 1}


class Confirmer:
    """Scores candidate pairs against one loaded index; caches item tokens between calls."""

    def __init__(self, index: DecontamIndex, policy: str = "ngram+lcs", threshold: float = 0.6,
                 slack: float = 0.1, cache_items: int = 4096) -> None:
        if policy not in POLICIES:
            raise ValueError(f"policy must be one of {POLICIES}, got {policy!r}")
        self.index = index
        self.policy = policy
        self.threshold = threshold
        self.slack = slack
        self.n = index.ngram
        self.min_tokens = index.phrase_n
        self._cache: OrderedDict[int, ItemTokens] = OrderedDict()
        self._cache_size = cache_items
        cols = index.items
        self._q = cols.column("question")
        self._c = cols.column("choices")
        self._s = cols.column("second")
        self._sname = cols.column("second_name")
        a = index.arrays
        # plain ndarray views of the memory maps: slicing a numpy.memmap is slow
        self._keys = np.asarray(a["keys"])
        self._post_off = np.asarray(a["post_off"])
        self._post_item = np.asarray(a["post_item"])

    # -- items ---------------------------------------------------------------------------
    def item_tokens(self, item: int) -> ItemTokens:
        hit = self._cache.get(item)
        if hit is not None:
            self._cache.move_to_end(item)
            return hit
        q = self._q[item].as_py() or ""
        c = self._c[item].as_py() or ""
        s = self._s[item].as_py() or ""
        text = "\n".join(t for t in (q, c, s) if t)
        # the same texts the index hashed (figure code already removed there)
        res = scan(pa.array([q, c, text], pa.string()), self.n, emit_tokens=True, emit_grams=True)
        sel = res.tok_row == 2
        gsel = res.gram_row == 2
        gk, gp = res.gram_key[gsel], res.gram_pos[gsel]
        order = np.argsort(gk, kind="stable")
        q_len, c_len = int(res.ntok[0]), int(res.ntok[1])
        it = ItemTokens(tokens=res.tok_hash[sel].tolist(), q_len=q_len, second_start=q_len + c_len,
                        second_name=self._sname[item].as_py() or "answer", gram_keys=gk[order],
                        gram_pos=gp[order], text=text)
        self._cache[item] = it
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return it

    # -- scoring ---------------------------------------------------------------------------
    def _window_ratio(self, part: list[int], doc: list[int], offsets: list[int], a: int, b: int
                      ) -> tuple[float, int, int]:
        """Best LCS ratio of ``part`` over windows aligned at the given item offsets (best first)."""
        size = b - a
        slack = max(2, int(size * self.slack))
        best = (0.0, 0, 0)
        for o in offsets:
            lo = max(0, o + a - slack)
            hi = min(len(doc), o + b + slack)
            if hi <= lo:
                continue
            ratio = LCSseq.similarity(part, doc[lo:hi]) / size
            if ratio > best[0]:
                start = max(0, o + a)
                best = (ratio, start, max(min(len(doc), o + b), start + 1))
        return best

    def score(self, doc_tokens: list[int], item: int, gram_pos: np.ndarray, gram_keys: np.ndarray,
              phrase_hits: list[tuple[int, int, int]]) -> PairResult:
        """Judge one pair.

        ``doc_tokens``: the document's token hashes; ``gram_pos``/``gram_keys``: doc token
        position and key of each matched ``n``-gram of this item; ``phrase_hits``: ``(doc
        token position, part code, part length)`` of matched phrase prefixes.
        """
        it = self.item_tokens(item)
        toks = it.tokens
        n = self.n
        results: list[tuple[float, str, int, int, bool]] = []
        # where each matched gram sits in the item: implied doc offset of the item's token 0
        lo = np.searchsorted(it.gram_keys, gram_keys, "left")
        cnt = np.searchsorted(it.gram_keys, gram_keys, "right") - lo
        rep = np.repeat(np.arange(len(gram_keys)), cnt)
        ipos = it.gram_pos[np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))]
        offs = gram_pos[rep] - ipos
        sample_pos: list[tuple[int, int]] = [(int(p), n) for p in dict.fromkeys(ipos.tolist()[:64]).keys()][:3]
        exact_parts: dict[str, int] = {}
        for d, part, length in phrase_hits:
            name = "question" if part == PART_QUESTION else "both"
            # phrases are item prefixes: the question alone, or the whole short item
            if doc_tokens[d: d + length] == toks[:length]:
                exact_parts[name] = d
                if len(sample_pos) < 3:
                    sample_pos.append((0, length))
        for name, a, b in it.parts(self.min_tokens):
            size = b - a
            if name in exact_parts:
                d = exact_parts[name]
                results.append((1.0, name, d, d + size, True))
                continue
            m = (ipos > a - n) & (ipos < b)
            if not m.any():
                continue
            vals, votes = np.unique(offs[m], return_counts=True)
            top = vals[np.lexsort((vals, -votes))][:3].tolist()
            ratio, lo_t, hi_t = self._window_ratio(toks[a:b], doc_tokens, top, a, b)
            # a part shorter than n counts only when it occurs whole (checked above)
            ok = ratio > self.threshold and size >= n
            results.append((ratio, name, lo_t, hi_t, ok))
        n_grams = len(np.unique(gram_pos)) + len(exact_parts)
        words = it.words() if sample_pos else []
        sample = [" ".join(words[p: p + ln]) for p, ln in sample_pos]
        if not results:
            return PairResult(item, "both", n_grams, 0.0, 0, 0, False, sample)
        if self.policy == "ngram":
            # plain rule: any shared gram (or a whole short item) is a hit
            results = [(r, nm, lo_, hi_, True) for r, nm, lo_, hi_, _ok in results]
        pool = [x for x in results if x[4]] or results
        best = max(x[0] for x in pool)
        near = [x for x in pool if x[0] >= best - 0.02]
        near.sort(key=lambda x: (_FIELD_RANK.get(x[1], 2), -x[0]))
        r, name, lo_t, hi_t, ok = near[0]
        return PairResult(item, name, n_grams, round(float(r), 6), lo_t, hi_t, bool(ok), sample)

    def score_row(self, doc_tokens: list[int], hits: np.ndarray | list[tuple[int, int, int]]) -> list[PairResult]:
        """All candidate items of one document. ``hits``: rows of ``(pos, kind, key index)`` from the kernel."""
        idx = self.index
        arr = np.asarray(hits, dtype=np.int64).reshape(-1, 3)
        g = arr[arr[:, 1] == 0]
        by_item: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        if len(g):
            kix = g[:, 2]
            lo = self._post_off[kix]
            cnt = self._post_off[kix + 1] - lo
            rep = np.repeat(np.arange(len(kix)), cnt)
            items = self._post_item[np.repeat(lo - np.cumsum(cnt) + cnt, cnt) + np.arange(int(cnt.sum()))]
            pos = g[:, 0][rep]
            keys = self._keys[kix][rep]
            order = np.argsort(items, kind="stable")
            items, pos, keys = items[order], pos[order], keys[order]
            uniq, starts = np.unique(items, return_index=True)
            ends = np.append(starts[1:], len(items))
            for it_, a, b in zip(uniq.tolist(), starts.tolist(), ends.tolist()):
                by_item[it_] = (pos[a:b], keys[a:b])
        phrases: dict[int, list[tuple[int, int, int]]] = {}
        for pos_, kind, kix_ in arr[arr[:, 1] == 1].tolist():
            items_, parts, lens = idx.phrase_entries(kix_)
            for item, part, length in zip(items_.tolist(), parts.tolist(), lens.tolist()):
                phrases.setdefault(item, []).append((pos_, part, length))
        empty_p, empty_k = np.zeros(0, np.int64), np.zeros(0, np.uint64)
        out = []
        for item in sorted(set(by_item) | set(phrases)):
            gp, gk = by_item.get(item, (empty_p, empty_k))
            out.append(self.score(doc_tokens, item, gp, gk, phrases.get(item, [])))
        return out


def group_hits(hit_row: np.ndarray, hit_pos: np.ndarray, hit_kind: np.ndarray, hit_idx: np.ndarray
               ) -> dict[int, np.ndarray]:
    """Kernel hits grouped by row: ``{row: array of (pos, kind, key index) rows}`` (hits sorted by row)."""
    if not len(hit_row):
        return {}
    rows, starts = np.unique(hit_row, return_index=True)
    ends = np.append(starts[1:], len(hit_row))
    table = np.stack([hit_pos, hit_kind, hit_idx], axis=1).astype(np.int64)
    return {r: table[a:b] for r, a, b in zip(rows.tolist(), starts.tolist(), ends.tolist())}
