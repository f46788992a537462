"""Recall model: load labelled data, balance it, train fastText, evaluate, save, and predict.

A model is two files: ``NAME.bin`` (fastText) and ``NAME.json`` beside it, holding the
training config, the preprocessing rules it was trained with, hashes of the data, the
class/length balancing that was applied and a held-out evaluation (precision, recall, F1,
ROC-AUC and the threshold that reaches a target precision). Scoring reads the JSON to
prepare text exactly as in training.

Training is deterministic for a given seed when ``thread=1``: the eval split is chosen by
an xxh3 hash of each id, balancing uses a seeded numpy Generator, and fastText gets the
same seed.

Length is a confound in every sample we have (math positives are either very long LaTeX
sections or very short word problems, negatives are mid-length news and reviews). So
:func:`balance_lengths` crops each training document to a window whose token length is
drawn from the *other* class's length distribution: after that both classes' lengths are
distributed as min(X_pos, X_neg), and length alone predicts nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import xxhash

from corpus import __version__
from corpus import fs as cfs
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError, FatalError, InputError
from corpus.shards import atomic_write_json, file_sha256, iter_batches, list_input_files
from recall.features import PREPROCESS_VERSION, SEGMENTERS, crop_lines, preprocess, token_counts

MATH = "math"
NON_MATH = "non_math"
LABELS = (MATH, NON_MATH)
LABEL_PREFIX = "__label__"
_FT_MATH = LABEL_PREFIX + MATH
SOURCES = ("web", "book", "code")
MODEL_FORMAT = "mathcorpus-recall-model"


# ----------------------------------------------------------------------------- config
@dataclass
class TrainConfig(StageConfig):
    """Options of ``recall train`` (section ``recall_train``). Defaults follow DeepSeekMath."""

    section: ClassVar[str] = "recall_train"

    lang: str = opt("auto", choices=("en", "zh", "auto"),
                    help="Language of the model. en or zh keeps only records whose `lang` column matches "
                         "(when there is one); auto keeps all.")
    source: str = opt("web", choices=SOURCES, help="Pool this model serves (web, book or code); recorded "
                                                   "with the model and used by `recall cycle`.")
    segmenter: str = opt("char", choices=SEGMENTERS,
                         help="Chinese segmentation: char (each CJK character a token; wordNgrams makes "
                              "character n-grams), jieba (word segmentation) or none.")
    dim: int = opt(256, help="fastText vector size.")
    lr: float = opt(0.1, help="fastText learning rate.")
    word_ngrams: int = opt(3, help="fastText word n-gram length.")
    min_count: int = opt(3, help="fastText minimal token count.")
    epoch: int = opt(3, help="fastText epochs.")
    bucket: int = opt(2_000_000, help="fastText hash buckets for n-grams (model size is about "
                                      "bucket x dim x 4 bytes; lower it for small data).")
    thread: int = opt(1, help="fastText training threads (1 makes training reproducible).")
    seed: int = opt(0, help="Seed for the eval split, balancing and fastText.")
    eval_fraction: float = opt(0.1, help="Share of records held out for evaluation (chosen by id hash).")
    target_precision: float = opt(0.95, help="Report the lowest threshold whose held-out precision "
                                             "reaches this.")
    balance_classes: bool = opt(True, help="Downsample the larger class to the size of the smaller one.")
    balance_lengths: bool = opt(True, help="Crop training documents so both classes have the same length "
                                           "distribution (length must not be the signal).")
    max_per_class: int = opt(0, help="Use at most this many training documents per class (0 = all).")
    group_by: str = opt("source", help="Column for the per-group breakdown of the evaluation "
                                       "(a struct field as meta.repo).")

    def validate(self) -> None:
        for name in ("dim", "epoch", "word_ngrams", "min_count", "bucket", "thread"):
            if getattr(self, name) < 1:
                raise ConfigError(f"recall train option '{name}' must be at least 1, got {getattr(self, name)}")
        if not 0 < self.lr <= 10:
            raise ConfigError(f"recall train option 'lr' must be in (0, 10], got {self.lr}")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"recall train option 'eval_fraction' must be in [0, 1), got {self.eval_fraction}")
        if not 0 < self.target_precision <= 1:
            raise ConfigError("recall train option 'target_precision' must be in (0, 1], "
                              f"got {self.target_precision}")
        if self.max_per_class < 0:
            raise ConfigError(f"recall train option 'max_per_class' must be 0 or more, got {self.max_per_class}")


# ----------------------------------------------------------------------------- data
@dataclass
class LabelledData:
    """Labelled documents in memory: ids, raw texts, 1 = math / 0 = non_math, and a group."""

    ids: list[str]
    texts: pa.Array
    y: np.ndarray
    groups: list[str]
    files: list[dict[str, Any]] = field(default_factory=list)
    dropped_lang: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: np.ndarray) -> "LabelledData":
        return LabelledData([self.ids[i] for i in idx.tolist()], self.texts.take(pa.array(idx)),
                            self.y[idx], [self.groups[i] for i in idx.tolist()], self.files, self.dropped_lang)

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]], group_key: str = "source") -> "LabelledData":
        """From dicts with id, text, label (tests, notebooks); labels are checked as in files."""
        labels = [r.get("label") for r in records]
        y = _label_vector(pa.array(labels, pa.string()), "records")
        return cls([str(r["id"]) for r in records], pa.array([r["text"] for r in records], pa.string()), y,
                   [str(r.get(group_key, "")) for r in records])




def _label_vector(labels: pa.Array, where: str) -> np.ndarray:
    if labels.null_count:
        row = pc.index(pc.is_null(labels), True).as_py()
        raise InputError(f"{where}: field 'label' is empty in record {row}; every record needs label "
                         "math or non_math")
    bad = pc.unique(pc.filter(labels, pc.invert(pc.is_in(labels, pa.array(list(LABELS)))))).to_pylist()
    if bad:
        shown = ", ".join(repr(b) for b in bad[:5])
        raise InputError(f"{where}: unknown label value(s) {shown}; use math or non_math")
    return pc.equal(labels, MATH).to_numpy(zero_copy_only=False).astype(np.int8)


def _column(batch: pa.RecordBatch, name: str) -> pa.Array | None:
    """A column, or a struct field for dotted names (``meta.repo``); None when absent."""
    head, _, rest = name.partition(".")
    if head not in batch.schema.names:
        return None
    col = batch.column(head)
    for part in rest.split(".") if rest else []:
        if not pa.types.is_struct(col.type) or col.type.get_field_index(part) < 0:
            return None
        col = pc.struct_field(col, part)
    return col


def load_labelled(paths: Sequence[str], lang: str = "auto", group_by: str = "source") -> LabelledData:
    """Read labelled records (``id``, ``text``, ``label`` = math | non_math) from shard files.

    Raises InputError for an empty file, a file without a ``label`` column, unknown labels,
    or data that holds only one class.
    """
    files = list_input_files(list(paths))
    ids: list[str] = []
    texts: list[pa.Array] = []
    ys: list[np.ndarray] = []
    groups: list[str] = []
    infos: list[dict[str, Any]] = []
    dropped = 0
    for path in files:
        if os.path.exists(path) and os.path.getsize(path) == 0:
            raise InputError(f"{path}: the file is empty; training needs labelled records with 'text' and "
                             "'label' (math or non_math)")
        n = 0
        counts: Counter = Counter()
        for batch in iter_batches(path):
            if "label" not in batch.schema.names:
                raise InputError(f"{path}: no 'label' column (columns found: {', '.join(batch.schema.names)}); "
                                 "each record needs label = math or non_math")
            labels = batch.column("label")
            if not pa.types.is_string(labels.type) and not pa.types.is_null(labels.type):
                labels = pc.cast(labels, pa.string())
            if pa.types.is_null(labels.type):
                labels = pa.nulls(len(labels), pa.string())
            y = _label_vector(labels, path)
            keep = np.ones(batch.num_rows, dtype=bool)
            if lang != "auto" and "lang" in batch.schema.names:
                keep = pc.fill_null(pc.equal(batch.column("lang"), lang), False).to_numpy(zero_copy_only=False)
                dropped += int((~keep).sum())
            idx = np.flatnonzero(keep)
            g = _column(batch, group_by)
            gl = g.to_pylist() if g is not None else [""] * batch.num_rows
            bid = batch.column("id").to_pylist()
            ids.extend(bid[i] for i in idx.tolist())
            groups.extend(str(gl[i]) if gl[i] is not None else "" for i in idx.tolist())
            texts.append(batch.column("text").take(pa.array(idx)))
            ys.append(y[idx])
            n += len(idx)
            counts.update({MATH: int(y[idx].sum()), NON_MATH: int(len(idx) - y[idx].sum())})
        if n == 0 and not dropped:
            raise InputError(f"{path}: the file holds no records; training needs labelled records with "
                             "'text' and 'label' (math or non_math)")
        infos.append({"path": path, "sha256": file_sha256(path) if os.path.exists(path) else None,
                      "records": n, "math": counts[MATH], "non_math": counts[NON_MATH]})
    y = np.concatenate(ys) if ys else np.zeros(0, np.int8)
    text = pa.concat_arrays([pc.cast(t, pa.string()) for t in texts]) if texts else pa.array([], pa.string())
    data = LabelledData(ids, text, y, groups, infos, dropped)
    check_two_classes(data, ", ".join(files), lang)
    return data


def check_two_classes(data: LabelledData, where: str, lang: str = "auto") -> None:
    n_math = int(data.y.sum())
    n_non = len(data) - n_math
    if len(data) == 0:
        extra = f" after keeping lang={lang}" if lang != "auto" else ""
        raise InputError(f"{where}: no records{extra}; training needs labelled records")
    if n_math == 0 or n_non == 0:
        only, other = (MATH, NON_MATH) if n_non == 0 else (NON_MATH, MATH)
        raise InputError(f"{where}: the data holds only '{only}' records ({len(data)}); training needs both "
                         f"classes: add {other} records")


# ----------------------------------------------------------------------------- balancing
def eval_mask(ids: Sequence[str], fraction: float, seed: int) -> np.ndarray:
    """True for the records held out for evaluation: a stable hash of the id, not the order."""
    if fraction <= 0:
        return np.zeros(len(ids), dtype=bool)
    cut = int(fraction * 2**64)
    return np.fromiter((xxhash.xxh3_64_intdigest(i.encode("utf-8"), seed) < cut for i in ids),
                       dtype=bool, count=len(ids))


def balance_classes(y: np.ndarray, rng: np.random.Generator, max_per_class: int = 0,
                    enabled: bool = True) -> np.ndarray:
    """Sorted indices after downsampling the larger class (and capping both at max_per_class)."""
    pos = np.flatnonzero(y == 1)
    neg = np.flatnonzero(y == 0)
    n_pos, n_neg = len(pos), len(neg)
    if enabled:
        n_pos = n_neg = min(n_pos, n_neg)
    if max_per_class:
        n_pos, n_neg = min(n_pos, max_per_class), min(n_neg, max_per_class)
    pick_pos = rng.choice(pos, size=n_pos, replace=False) if n_pos < len(pos) else pos
    pick_neg = rng.choice(neg, size=n_neg, replace=False) if n_neg < len(neg) else neg
    return np.sort(np.concatenate([pick_pos, pick_neg]))


def balance_lengths(lengths: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(keep_tokens, start) per document so both classes share one length distribution.

    Each document keeps a window of min(own length, L) tokens, where L is drawn from the
    other class's lengths; the window starts at a random token.
    """
    keep = lengths.copy()
    start = np.zeros_like(lengths)
    pos_len = lengths[y == 1]
    neg_len = lengths[y == 0]
    if len(pos_len) == 0 or len(neg_len) == 0:
        return keep, start
    draw = np.where(y == 1, rng.choice(neg_len, size=len(y)), rng.choice(pos_len, size=len(y)))
    keep = np.minimum(lengths, np.maximum(draw, 1))
    room = lengths - keep
    start = np.floor(rng.random(len(y)) * (room + 1)).astype(np.int64)
    return keep, start


def length_summary(lengths: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    def q(a: np.ndarray) -> dict[str, float]:
        if len(a) == 0:
            return {}
        p = np.percentile(a, [10, 50, 90])
        return {"n": int(len(a)), "p10": float(p[0]), "median": float(p[1]), "p90": float(p[2])}
    return {MATH: q(lengths[y == 1]), NON_MATH: q(lengths[y == 0])}


# ----------------------------------------------------------------------------- metrics
def _average_ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    ranks = np.empty(len(x), dtype=np.float64)
    n = len(x)
    # tie groups get the mean of their ranks (Mann-Whitney)
    boundaries = np.flatnonzero(np.diff(xs)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [n]])
    for s, e in zip(starts.tolist(), ends.tolist()):
        ranks[order[s:e]] = (s + e + 1) / 2.0
    return ranks


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve (probability a positive outranks a negative); None if one class."""
    n_pos = int((y == 1).sum())
    n_neg = len(y) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    r = _average_ranks(scores.astype(np.float64))
    return float((r[y == 1].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def prf(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    pred = scores >= threshold
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    tn = int((~pred & (y == 0)).sum())
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f1 = 2 * p * r / (p + r) if p is not None and r is not None and p + r > 0 else (0.0 if p == 0 or r == 0 else None)
    acc = (tp + tn) / len(y) if len(y) else None
    return {"threshold": threshold, "precision": p, "recall": r, "f1": f1, "accuracy": acc,
            "tp": tp, "fp": fp, "fn": fn, "tn": tn}


def threshold_for_precision(y: np.ndarray, scores: np.ndarray, target: float) -> dict[str, Any] | None:
    """The lowest threshold whose precision reaches ``target`` (so recall is highest); None if none does."""
    if int((y == 1).sum()) == 0:
        return None
    order = np.argsort(-scores, kind="mergesort")
    s = scores[order]
    tp = np.cumsum(y[order] == 1)
    k = np.arange(1, len(s) + 1)
    # a threshold can only sit at the last copy of a tied score
    last = np.concatenate([s[1:] != s[:-1], [True]])
    prec = tp / k
    ok = np.flatnonzero(last & (prec >= target))
    if ok.size == 0:
        return None
    j = ok[-1]
    return {"target_precision": target, "threshold": float(s[j]), "precision": float(prec[j]),
            "recall": float(tp[j] / tp[-1]), "kept": int(k[j])}


def evaluate(y: np.ndarray, scores: np.ndarray, target_precision: float = 0.95,
             groups: Sequence[str] | None = None, threshold: float = 0.5) -> dict[str, Any]:
    """Held-out metrics: P/R/F1 at ``threshold``, ROC-AUC, threshold at target precision, per group."""
    y = np.asarray(y)
    scores = np.asarray(scores, dtype=np.float64)
    out: dict[str, Any] = {"n": int(len(y)), "math": int((y == 1).sum()), "non_math": int((y == 0).sum())}
    out.update(prf(y, scores, threshold))
    out["roc_auc"] = roc_auc(y, scores)
    out["at_target_precision"] = threshold_for_precision(y, scores, target_precision)
    if groups is not None:
        by: dict[str, Any] = {}
        g = np.asarray(groups, dtype=object)
        for name in sorted(set(groups)):
            m = g == name
            yy, ss = y[m], scores[m]
            pred = ss >= threshold
            row: dict[str, Any] = {"n": int(m.sum()), "math": int((yy == 1).sum())}
            if (yy == 1).any():
                row["recall"] = float(pred[yy == 1].mean())
            if (yy == 0).any():
                row["false_positive_rate"] = float(pred[yy == 0].mean())
            row["accuracy"] = float((pred == (yy == 1)).mean())
            by[name] = row
        out["by_group"] = by
    return out


# ----------------------------------------------------------------------------- model files
def sidecar_path(model_path: str | os.PathLike[str]) -> Path:
    """``NAME.json`` beside ``NAME.bin`` (or ``PATH.json`` when the model has no .bin suffix);
    for a model on object storage, the URL as a string (never a local Path built from a URL)."""
    if cfs.is_remote(str(model_path)):
        s = str(model_path)
        return s[:-4] + ".json" if s.endswith(".bin") else s + ".json"  # type: ignore[return-value]
    p = Path(model_path)
    return p.with_suffix(".json") if p.suffix == ".bin" else Path(str(p) + ".json")


def model_tag(path: str | os.PathLike[str], sha256: str | None = None) -> str:
    """``name.bin@<12 hex of sha256>``: what the ``recall_model`` column records."""
    digest = sha256 or file_sha256(str(path))
    return f"{cfs.basename(str(path))}@{digest[:12]}"


class RecallModel:
    """A trained model ready to score: fastText loads lazily, on first use.

    Pickles as its path only, so stages holding one can be sent to Slurm/Ray workers.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = str(path)
        if not (cfs.exists(self.path) if cfs.is_remote(self.path) else os.path.isfile(self.path)):
            raise ConfigError(f"{self.path}: model file not found; train one with `mathcorpus recall train`")
        side = str(sidecar_path(self.path))
        self.meta: dict[str, Any] = {}
        if cfs.exists(side) and not cfs.isdir(side):
            try:
                self.meta = json.loads(cfs.read_text(side))
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{side}: unreadable model metadata ({exc}); retrain or delete it") from exc
        pre = self.meta.get("preprocess", {})
        version = pre.get("version", PREPROCESS_VERSION)
        if version != PREPROCESS_VERSION:
            raise ConfigError(f"{self.path}: trained with preprocessing version {version}, this mathcorpus uses "
                              f"{PREPROCESS_VERSION}; retrain the model")
        self.segmenter: str = pre.get("segmenter", "char")
        self._ft: Any = None
        self._tag: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_ft"] = None
        return state

    @property
    def tag(self) -> str:
        if self._tag is None:
            self._tag = model_tag(self.path)
        return self._tag

    @property
    def fasttext(self) -> Any:
        if self._ft is None:
            import fasttext

            try:
                self._ft = fasttext.load_model(cfs.local_file(self.path))  # a URL: downloaded once
            except ValueError as exc:
                raise ConfigError(f"{self.path}: not a fastText model ({exc})") from exc
            if _FT_MATH not in self._ft.labels:
                raise ConfigError(f"{self.path}: the model has labels {self._ft.labels}, expected "
                                  f"{_FT_MATH}; train it with `mathcorpus recall train`")
        return self._ft

    def score_lines(self, lines: list[str]) -> np.ndarray:
        """P(math) for preprocessed lines, batch-predicted in one fastText call."""
        if not lines:
            return np.zeros(0, dtype=np.float64)
        labels, probs = self.fasttext.predict(lines, k=1)
        top = np.fromiter((p[0] for p in probs), dtype=np.float64, count=len(lines))
        is_math = np.fromiter((lab[0] == _FT_MATH for lab in labels), dtype=bool, count=len(lines))
        # two classes under softmax: P(math) = p_top when math is on top, else 1 - p_top
        return np.clip(np.where(is_math, top, 1.0 - top), 0.0, 1.0)

    def score(self, texts: pa.Array | pa.ChunkedArray | Sequence[str]) -> np.ndarray:
        """P(math) for raw documents (preprocessed with this model's rules)."""
        return self.score_lines(preprocess(texts, self.segmenter).to_pylist())


# ----------------------------------------------------------------------------- training
def _fasttext_args(cfg: TrainConfig) -> dict[str, Any]:
    return {"dim": cfg.dim, "lr": cfg.lr, "wordNgrams": cfg.word_ngrams, "minCount": cfg.min_count,
            "epoch": cfg.epoch, "bucket": cfg.bucket, "thread": cfg.thread, "seed": cfg.seed,
            "loss": "softmax", "verbose": 0}


def prepare_training_lines(data: LabelledData, cfg: TrainConfig) -> tuple[list[str], dict[str, Any]]:
    """fastText training lines (label + preprocessed, balanced, cropped, shuffled) and a report."""
    rng = np.random.default_rng(cfg.seed)
    # pick first, so only the documents used are preprocessed
    pick = balance_classes(data.y, rng, cfg.max_per_class, cfg.balance_classes)
    lines = preprocess(data.texts.take(pa.array(pick)), cfg.segmenter)
    lengths = token_counts(lines)
    nonempty = np.flatnonzero(lengths > 0)  # a document that was only a URL, say
    y = data.y[pick][nonempty]
    ln = lengths[nonempty]
    report: dict[str, Any] = {"records": len(data), "empty_after_preprocess": int(len(pick) - len(nonempty)),
                              "lengths_before": length_summary(ln, y)}
    texts = lines.take(pa.array(nonempty)).to_pylist()
    if cfg.balance_lengths:
        keep, start = balance_lengths(ln, y, rng)
        texts = crop_lines(texts, keep, start)
        ln = keep
    report["lengths_after"] = length_summary(ln, y)
    report["used"] = {MATH: int((y == 1).sum()), NON_MATH: int((y == 0).sum())}
    order = rng.permutation(len(texts))
    out = [f"{LABEL_PREFIX}{MATH if y[i] else NON_MATH} {texts[i]}" for i in order.tolist()]
    return out, report


# fastText is trained in a fresh interpreter. fastText's input-matrix initialisation leaves
# the last (rows*dim) % 10 values unwritten; a first large allocation in a new process comes
# zeroed from mmap, but later ones in a long-lived process may reuse freed heap memory, and
# then training gives different models, or "Encountered NaN", for the same data and seed.
_TRAIN_SCRIPT = """
import json, sys
import fasttext
args = json.loads(sys.argv[3])
model = fasttext.train_supervised(input=sys.argv[1], **args)
model.save_model(sys.argv[2])
"""


def train_fasttext(lines: list[str], cfg: TrainConfig, model_path: str) -> Any:
    """Train a supervised fastText model on ``lines`` (``__label__x text``) into ``model_path``.

    Returns the loaded model. Runs in a subprocess so the result depends only on the data
    and the config (see the note above).
    """
    import subprocess
    import sys

    import fasttext

    with tempfile.TemporaryDirectory(prefix="recall-train-") as tmp:
        path = os.path.join(tmp, "train.txt")
        with open(path, "w", encoding="utf-8") as fh:
            fh.write("\n".join(lines))
            fh.write("\n")
        proc = subprocess.run([sys.executable, "-c", _TRAIN_SCRIPT, path, model_path,
                               json.dumps(_fasttext_args(cfg))], capture_output=True, text=True)
    if proc.returncode != 0:
        lines_err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
        why = lines_err[-1] if lines_err else f"exit code {proc.returncode}"
        raise InputError(f"fastText could not train on {len(lines)} documents ({why}); with little data lower "
                         f"min_count (now {cfg.min_count}), and if it diverged lower lr (now {cfg.lr})")
    return fasttext.load_model(model_path)


def train(data: LabelledData, out_path: str, cfg: TrainConfig, *, inputs: Sequence[str] = (),
          extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train on ``data`` minus a held-out split, evaluate, write ``out_path`` and its JSON; return the report."""
    check_two_classes(data, ", ".join(inputs) or "training data", cfg.lang)
    held = eval_mask(data.ids, cfg.eval_fraction, cfg.seed)
    train_idx = np.flatnonzero(~held)
    eval_idx = np.flatnonzero(held)
    tr = data.subset(train_idx)
    check_two_classes(tr, "the training split of " + (", ".join(inputs) or "the data"), cfg.lang)
    lines, balance = prepare_training_lines(tr, cfg)
    train_sha = hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()
    try:
        # local: trained as NAME.tmp and renamed; a URL: trained locally, uploaded in one piece
        with cfs.atomic_local_path(out_path) as tmp_model:
            ft = train_fasttext(lines, cfg, tmp_model)
    except OSError as exc:
        raise FatalError(f"{out_path}: cannot write the model ({exc}); check the folder and free space") from exc
    sha = file_sha256(out_path)
    report: dict[str, Any] = {
        "format": MODEL_FORMAT, "format_version": 1, "mathcorpus_version": __version__,
        "model": cfs.basename(out_path), "sha256": sha, "tag": model_tag(out_path, sha),
        "lang": cfg.lang, "source": cfg.source,
        "preprocess": {"version": PREPROCESS_VERSION, "segmenter": cfg.segmenter},
        "config": cfg.to_dict(), "fasttext_args": _fasttext_args(cfg),
        "data": {"files": data.files, "records": len(data), "dropped_other_lang": data.dropped_lang,
                 "train_records": len(tr), "eval_records": int(len(eval_idx)),
                 "training_set_sha256": train_sha, "balance": balance},
    }
    model = RecallModel.__new__(RecallModel)
    model.path, model.meta, model.segmenter, model._ft, model._tag = out_path, report, cfg.segmenter, ft, None
    if len(eval_idx):
        ev = data.subset(eval_idx)
        ev_lines = preprocess(ev.texts, cfg.segmenter)
        ev_list = ev_lines.to_pylist()
        scores = model.score_lines(ev_list)
        report["eval"] = evaluate(ev.y, scores, cfg.target_precision, ev.groups)
        # the same held-out records cropped like the training data: if F1 holds here,
        # the model is not reading document length
        rng = np.random.default_rng(cfg.seed + 1)
        keep, start = balance_lengths(token_counts(ev_lines), ev.y, rng)
        cropped = crop_lines(ev_list, keep, start)
        s2 = model.score_lines(cropped)
        lm = evaluate(ev.y, s2, cfg.target_precision)
        report["eval_length_matched"] = {k: lm[k] for k in ("n", "precision", "recall", "f1", "roc_auc")}
    else:
        report["eval"] = None
    if extra:
        report.update(extra)
    atomic_write_json(str(sidecar_path(out_path)), report)
    return report


def train_files(paths: Sequence[str], out_path: str, cfg: TrainConfig) -> dict[str, Any]:
    """``recall train``: load labelled files, train, evaluate, save; returns the report."""
    data = load_labelled(paths, cfg.lang, cfg.group_by)
    return train(data, out_path, cfg, inputs=[str(p) for p in paths])


def evaluate_files(model_path: str, paths: Sequence[str], *, lang: str = "auto", group_by: str = "source",
                   threshold: float = 0.5, target_precision: float = 0.95) -> dict[str, Any]:
    """``recall eval``: score labelled files with a model and report metrics per group."""
    data = load_labelled(paths, lang, group_by) if paths else None
    if data is None:
        raise InputError("no evaluation data given; pass --data FILE")
    model = RecallModel(model_path)
    scores = model.score(data.texts)
    rep = evaluate(data.y, scores, target_precision, data.groups, threshold)
    rep["model"] = model.tag
    rep["files"] = data.files
    return rep


__all__ = [
    "MATH", "NON_MATH", "TrainConfig", "LabelledData", "RecallModel", "load_labelled", "eval_mask",
    "balance_classes", "balance_lengths", "roc_auc", "prf", "threshold_for_precision", "evaluate",
    "train", "train_files", "evaluate_files", "sidecar_path", "model_tag",
]
