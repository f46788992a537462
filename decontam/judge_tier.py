"""The judge tier inside the decontam stage: candidates from the cheap tiers in, judged pair rows out.

Glue between decontam/stage.py and decontam/judge.py, kept apart so the stage file stays
about the cheap tiers. :class:`JudgeTier` is mixed into ``DecontamStage``: it turns the exact
tier's unconfirmed pairs, the fuzzy tier's unconfirmed candidates and, with an embedding
model, the nearest items into :class:`~decontam.judge.Candidate` objects (item text and the
passage the judge sees), runs the judge on a batch's candidates and writes one
``tier = judge`` row per judged pair. :func:`judge_section` is summary.json's ``judge``.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from corpus.runner import TaskContext


class JudgeTier:
    """Judge-tier methods of the decontam stage (uses its ``_index``, ``_judge``, ``_embed`` and ``cfg``)."""

    _index: Any
    _judge: Any
    _embed: Any
    _item_rows: dict[tuple[str, str], int] | None
    cfg: Any

    def _item_text(self, item: int, part: str) -> str:
        """The item text the judge compares: the part the cheap tier aligned (question, solution or both)."""
        items = self._index.items  # type: ignore[union-attr]
        q = items.column("question")[item].as_py() or ""
        ch = items.column("choices")[item].as_py() or ""
        second = items.column("second")[item].as_py() or ""
        question = "\n".join(t for t in (q, ch) if t)
        if part == "question":
            return question
        if part == "both":
            return "\n\n".join(t for t in (question, second) if t)
        return second or question

    def _item_row(self, benchmark: str, item_id: str) -> int:
        if self._item_rows is None:
            items = self._index.items  # type: ignore[union-attr]
            self._item_rows = {(b, i): k for k, (b, i) in enumerate(zip(items.column("benchmark").to_pylist(),
                                                                        items.column("item_id").to_pylist()))}
        return self._item_rows[(benchmark, item_id)]

    def _candidate(self, row: int, doc_id: str, benchmark: str, item_id: str, part: str, doc_field: str,
                   source: str, ratio: float | None, lo: int, hi: int, text: str, *, item: int | None = None,
                   grams: int = 0, sample: str = "[]", similarity: float | None = None) -> Any:
        from decontam.judge import Candidate, passage

        item = self._item_row(benchmark, item_id) if item is None else item
        return Candidate(row=row, doc_id=doc_id, benchmark=benchmark, item_id=item_id, field=part,
                         doc_field=doc_field, source=source, lcs_ratio=ratio, doc_start=lo, doc_end=hi,
                         item_text=self._item_text(item, part), passage=passage(text, lo, hi, self.cfg.judge_max_chars),
                         grams_matched=grams, sample=sample, similarity=similarity)

    def _run_judge(self, jcands: list[Any], fields: list[Any], removed: np.ndarray, rows_out: list[dict[str, Any]],
                   src: Any, dom: Any, ids: Any, task: TaskContext) -> dict[int, Any]:
        """Judge the batch's candidates; add their rows to ``rows_out``; mark removals (action drop).

        Returns the first contaminating candidate of each record the judge removes.
        """
        from decontam.judge import CONTAMINATED, dedupe

        c = self.cfg
        if self._embed is not None:
            confirmed = {(m["_row"], m["benchmark"], m["item_id"]) for m in rows_out if m["contaminated"]}
            for fname, texts, rows, msg_pos in fields:
                if c.fuzzy_fields and fname not in c.fuzzy_fields:
                    continue
                tl = [t or "" for t in texts.to_pylist()]
                for i, hits in enumerate(self._embed.query(tl)):
                    doc_row = int(rows[i])
                    field_name = fname if msg_pos is None else f"{fname}[{int(msg_pos[i])}]"
                    for pos, sim in hits:
                        b, iid, _ = self._embed.items[pos]
                        if (doc_row, b, iid) in confirmed:
                            continue
                        task.counters["judge_seen_embed"] += 1
                        jcands.append(self._candidate(doc_row, ids[doc_row].as_py(), b, iid, "question", field_name,
                                                      "embed", None, 0, len(tl[i]), tl[i], item=pos,
                                                      similarity=round(sim, 6)))
        task.counters["judge_candidates"] += len(jcands)
        live = [j for j in jcands if not removed[j.row]]
        task.counters["judge_skipped_removed"] += len(jcands) - len(live)
        live, dup = dedupe(live)
        task.counters["judge_duplicates"] += dup
        if not live:
            return {}
        results = self._judge.judge(live, task.counters)
        task.counters["judge_pairs"] += len(live)
        if c.judge_dry_run:
            return {}
        ref = self._judge.template.ref
        chosen: dict[int, Any] = {}
        for jc, res in zip(live, results):
            task.counters[f"judge_verdict:{res.verdict}"] += 1
            hit = res.verdict == CONTAMINATED
            rows_out.append({
                "doc_id": jc.doc_id, "benchmark": jc.benchmark, "item_id": jc.item_id, "field": jc.field,
                "grams_matched": jc.grams_matched, "lcs_ratio": jc.lcs_ratio, "doc_start": jc.doc_start,
                "doc_end": jc.doc_end, "tier": "judge", "matched_grams_sample": jc.sample,
                "source": src[jc.row].as_py() if src is not None else None,
                "domain": dom[jc.row].as_py() if dom is not None else None,
                "removed": False, "doc_field": jc.doc_field, "contaminated": hit, "judge_verdict": res.verdict,
                "judge_answer": res.answers[0] if len(res.answers) == 1 else json.dumps(res.answers,
                                                                                        ensure_ascii=False),
                "judge_source": jc.source, "judge_template": ref, "judge_similarity": jc.similarity, "_row": jc.row,
            })
            if hit and c.judge_action == "drop":
                chosen.setdefault(jc.row, jc)
        for r in chosen:
            removed[r] = True
        return chosen


def judge_section(cfg: Any, counters: dict[str, Any]) -> dict[str, Any] | None:
    if not cfg.judge:
        return None
    from decontam.judge import judge_summary, load_template

    t = load_template(cfg.judge_template)
    return judge_summary(counters, {
        "engine": cfg.judge_engine, "model": cfg.judge_model, "template": t.ref, "template_sha": t.sha,
        "both_ways": cfg.judge_both_ways, "action": cfg.judge_action, "floor": cfg.judge_floor,
        "fuzzy_floor": cfg.judge_fuzzy_floor if cfg.fuzzy else None,
        "embed_model": cfg.judge_embed_model, "max_calls": cfg.judge_max_calls, "dry_run": cfg.judge_dry_run})
