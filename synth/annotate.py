"""The ``annotate`` task: a teacher grades a document on an additive 0-5 scale, parsed strictly.

Owns what counts as a valid grade. The bundled template (``finemath@v1``) asks for a short
justification followed by one line ``Final score: N``. :func:`parse_score` accepts exactly
that and nothing looser: no score line, a value that is not an integer from 0 to 5, or
two score lines that disagree are errors with their own verdict, so a teacher that drifts
from the format is counted and never silently read as some score. An error is a rejected
sample (it lands in the synth stage's rejected side table with the raw answer); it is
never turned into a default score.

Verdicts: ``ok`` (accepted, the score goes to ``synth_score``), ``score_missing``,
``score_invalid``, ``score_ambiguous`` and ``truncated`` (the answer hit max_tokens).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from corpus.teacher import Completion
from synth.tasks import Sample

SCORE_MIN = 0
SCORE_MAX = 5
#: Verdicts of a sample whose grade could not be read; each is counted separately.
ERROR_VERDICTS = ("score_missing", "score_invalid", "score_ambiguous", "truncated")

# "Final score: 3", with optional markdown emphasis or a heading/bullet mark around it and an
# optional trailing period. The value is captured loosely so a bad value is reported as
# invalid rather than as missing.
_FINAL_LINE = re.compile(
    r"^[ \t>#*_-]*final[ \t]+score[ \t]*[*_]*[ \t]*[:：][ \t]*[*_]*[ \t]*(?P<value>[^\s*_]*?)[ \t]*[*_]*[ \t]*\.?[ \t]*$",
    re.IGNORECASE | re.MULTILINE)
_INT = re.compile(r"[0-9]+")


@dataclass(frozen=True)
class ParsedScore:
    """The result of reading one answer: ``score`` when valid, else an error ``verdict``."""

    verdict: str
    score: int | None = None
    justification: str = ""
    detail: str = ""


def parse_score(text: str) -> ParsedScore:
    """Read ``Final score: N`` (N an integer 0-5) from a teacher's answer, strictly.

    The justification is the text before the (first) score line. Repeating the same score
    on two lines is accepted; two different values are ``score_ambiguous``.
    """
    matches = list(_FINAL_LINE.finditer(text))
    if not matches:
        return ParsedScore("score_missing", detail="no line 'Final score: N'")
    values = [m.group("value") for m in matches]
    just = text[: matches[0].start()].strip()
    bad = [v for v in values if not (_INT.fullmatch(v) and SCORE_MIN <= int(v) <= SCORE_MAX)]
    if bad:
        return ParsedScore("score_invalid", justification=just,
                           detail=f"score {bad[0]!r} is not an integer from {SCORE_MIN} to {SCORE_MAX}")
    scores = sorted({int(v) for v in values})
    if len(scores) > 1:
        return ParsedScore("score_ambiguous", justification=just,
                           detail=f"{len(values)} score lines disagree: {', '.join(map(str, scores))}")
    return ParsedScore("ok", score=scores[0], justification=just)


def judge_annotate(document: str, completions: Sequence[Completion], *, keep_truncated: bool = False) -> list[Sample]:
    """One sample per completion; its text is the graded ``document`` itself, so accepted
    samples are training labels as they are (text + ``synth_score``).

    ``meta`` holds the score, the justification and the raw answer (also on errors, so a
    rejected grade can be read in the side table).
    """
    out = []
    for i, c in enumerate(completions):
        parsed = parse_score(c.text)
        verdict = parsed.verdict
        if c.finish_reason == "length" and not keep_truncated:
            verdict = "truncated"
        meta: dict[str, object] = {"finish_reason": c.finish_reason, "score": parsed.score if verdict == "ok" else None,
                                   "justification": parsed.justification, "raw": c.text}
        if c.tokens is not None:
            meta["tokens"] = c.tokens
        if parsed.detail:
            meta["parse_error"] = parsed.detail
        out.append(Sample(text=document, verdict=verdict, sample=i, meta=meta))
    return out
