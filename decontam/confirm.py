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
from collections import Counter, OrderedDict
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
    gram_pos: dict[int, list[int]]  # gram key -> positions in ``tokens``
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
        gram_pos: dict[int, list[int]] = {}
        gsel = res.gram_row == 2
        for k, p in zip(res.gram_key[gsel].tolist(), res.gram_pos[gsel].tolist()):
            gram_pos.setdefault(k, []).append(p)
        q_len, c_len = int(res.ntok[0]), int(res.ntok[1])
        it = ItemTokens(tokens=res.tok_hash[sel].tolist(), q_len=q_len, second_start=q_len + c_len,
                        second_name=self._sname[item].as_py() or "answer", gram_pos=gram_pos, text=text)
        self._cache[item] = it
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return it

    # -- scoring ---------------------------------------------------------------------------
    def _window_ratio(self, part: list[int], doc: list[int], offsets: Counter, a: int, b: int
                      ) -> tuple[float, int, int]:
        """Best LCS ratio of ``part`` over windows aligned at the most supported offsets."""
        size = b - a
        slack = max(2, int(size * self.slack))
        best = (0.0, 0, 0)
        for o, _votes in sorted(offsets.items(), key=lambda kv: (-kv[1], kv[0]))[:3]:
            lo = max(0, o + a - slack)
            hi = min(len(doc), o + b + slack)
            if hi <= lo:
                continue
            ratio = LCSseq.similarity(part, doc[lo:hi]) / size
            if ratio > best[0]:
                start = max(0, o + a)
                best = (ratio, start, max(min(len(doc), o + b), start + 1))
        return best

    def score(self, doc_tokens: list[int], item: int, gram_hits: list[tuple[int, int]],
              phrase_hits: list[tuple[int, int, int]]) -> PairResult:
        """Judge one pair.

        ``doc_tokens``: the document's token hashes; ``gram_hits``: ``(doc token position,
        gram key)`` of matched ``n``-grams; ``phrase_hits``: ``(doc token position, part code,
        part length)`` of matched phrase prefixes.
        """
        it = self.item_tokens(item)
        toks = it.tokens
        n = self.n
        results: list[tuple[float, str, int, int, bool]] = []
        sample_pos: list[tuple[int, int]] = []  # (item position, length) of matched grams
        occ: list[tuple[int, int]] = []  # (doc offset of item token 0, item position)
        for d, key in gram_hits:
            for p in it.gram_pos.get(key, ()):
                occ.append((d - p, p))
                if len(sample_pos) < 3 and all(sp != p for sp, _ in sample_pos):
                    sample_pos.append((p, n))
        exact_parts: dict[str, int] = {}
        for d, part, length in phrase_hits:
            name = "question" if part == PART_QUESTION else "both"
            # phrases are item prefixes: question alone, or the whole short item
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
            offsets = Counter(o for o, p in occ if a - n < p < b)
            if not offsets:
                continue
            ratio, lo, hi = self._window_ratio(toks[a:b], doc_tokens, offsets, a, b)
            # a part shorter than n counts only when it occurs whole (checked above)
            ok = ratio > self.threshold and size >= n
            results.append((ratio, name, lo, hi, ok))
        n_grams = len({d for d, _ in gram_hits}) + len(exact_parts)
        words = it.words() if sample_pos else []
        sample = [" ".join(words[p: p + ln]) for p, ln in sample_pos]
        if not results:
            return PairResult(item, "both", n_grams, 0.0, 0, 0, False, sample)
        if self.policy == "ngram":
            # plain rule: any shared gram (or a whole short item) is a hit
            results = [(r, nm, lo, hi, True) for r, nm, lo, hi, _ok in results]
        pool = [x for x in results if x[4]] or results
        top = max(x[0] for x in pool)
        near = [x for x in pool if x[0] >= top - 0.02]
        near.sort(key=lambda x: (_FIELD_RANK.get(x[1], 2), -x[0]))
        r, name, lo, hi, ok = near[0]
        return PairResult(item, name, n_grams, round(float(r), 6), lo, hi, bool(ok), sample)

    def score_row(self, doc_tokens: list[int], hits: list[tuple[int, int, int]]) -> list[PairResult]:
        """All candidate items of one document. ``hits``: ``(pos, kind, key index)`` from the kernel."""
        idx = self.index
        grams: dict[int, list[tuple[int, int]]] = {}
        phrases: dict[int, list[tuple[int, int, int]]] = {}
        g = [(p, ix) for p, kind, ix in hits if kind == 0]
        if g:
            pos = np.array([p for p, _ in g], dtype=np.int64)
            kix = np.array([ix for _, ix in g], dtype=np.int64)
            lo, hi = self._post_off[kix], self._post_off[kix + 1]
            cnt = hi - lo
            rep = np.repeat(np.arange(len(kix)), cnt)
            flat = np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt) - cnt, cnt) + np.repeat(lo, cnt)
            items = self._post_item[flat]
            keys = self._keys[kix][rep]
            for item, p, key in zip(items.tolist(), pos[rep].tolist(), keys.tolist()):
                grams.setdefault(item, []).append((p, key))
        for pos_, kind, kix_ in hits:
            if kind == 1:
                items_, parts, lens = idx.phrase_entries(kix_)
                for item, part, length in zip(items_.tolist(), parts.tolist(), lens.tolist()):
                    phrases.setdefault(item, []).append((pos_, part, length))
        return [self.score(doc_tokens, item, grams.get(item, []), phrases.get(item, []))
                for item in sorted(set(grams) | set(phrases))]


def group_hits(hit_row: np.ndarray, hit_pos: np.ndarray, hit_kind: np.ndarray, hit_idx: np.ndarray
               ) -> dict[int, list[tuple[int, int, int]]]:
    """Kernel hits grouped by row: ``{row: [(pos, kind, key index), ...]}``."""
    out: dict[int, list[tuple[int, int, int]]] = {}
    for r, p, k, i in zip(hit_row.tolist(), hit_pos.tolist(), hit_kind.tolist(), hit_idx.tolist()):
        out.setdefault(r, []).append((p, k, i))
    return out
