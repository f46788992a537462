"""Quality scorer: learn a teacher's 0-5 grades, report how well the scores rank, and score documents.

Owns ``recall train --kind quality``: labelled shards in (the ``synth run --task annotate``
output folder as it is, or any shards with ``text`` and a 0-5 score column), a model file
out, with a held-out report. Two kinds:

* ``fasttext`` (default): fastText's input tokens as presence features (recall/
  quality_features.py) with a ridge-regression head solved by conjugate gradients in numpy
  (intercept unpenalised). A regression head ranks: a 5-class fastText read through its
  expected value collapses the top grades (figures in recall/quality_features.py);
* ``encoder``: a frozen local transformer encoder (corpus/encoder.py) and a
  closed-form ridge head on its standardised pooled embeddings, as FineMath and
  FineWeb-Edu train theirs (a linear head on a frozen encoder).

A model is ``Q.npz`` (the head) and ``Q.json`` beside it: kind, settings, the encoder's path
and fingerprint, data hashes, and the held-out report (per-class F1 after rounding,
F1 at each threshold, Spearman against the teacher, and the share kept at each threshold,
predicted and by the teacher). The held-out split is by a hash of ``synth_seed_id`` when
present (samples of one document stay together), else of ``id``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from corpus import __version__, schema
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError, FatalError, InputError
from corpus.shards import atomic_write_bytes, atomic_write_json, file_sha256, iter_batches, list_input_files
from recall.features import PREPROCESS_VERSION, SEGMENTERS, preprocess

MODEL_FORMAT = "mathcorpus-quality-model"
SCORERS = ("fasttext", "encoder")
SCORE_MIN, SCORE_MAX = 0.0, 5.0
THRESHOLDS = (1, 2, 3, 4, 5)
#: Score columns tried, in order, when none is named: the annotate task's, then common names.
SCORE_COLUMNS = (schema.SYNTH_SCORE, "score", "int_score", "quality_label")


# ----------------------------------------------------------------------------- config
@dataclass
class QualityTrainConfig(StageConfig):
    """Options of ``recall train --kind quality`` (section ``quality_train``)."""

    section: ClassVar[str] = "quality_train"

    scorer: str = opt("fasttext", choices=SCORERS,
                      help="Quality kind: fasttext (presence features of fastText's tokens, ridge head) or "
                           "encoder (frozen local transformer, ridge head on pooled embeddings).")
    score_column: str | None = opt(None, help="Column holding the 0-5 grade (default: the first of "
                                              + ", ".join(SCORE_COLUMNS) + " present).")
    seed: int = opt(0, help="Seed of the held-out split.")
    eval_fraction: float = opt(0.1, help="Share of labelled documents held out for the report (by id hash).")
    segmenter: str = opt("char", choices=SEGMENTERS, help="fasttext kind: Chinese segmentation (as recall).")
    ngrams: int = opt(1, help="fasttext kind: longest token run used as a feature (1 = words only; "
                              "measured best at 600 labels).")
    buckets: int = opt(1 << 20, help="fasttext kind: hash buckets of the presence features.")
    l2: float = opt(1.0, help="Ridge penalty of the head (fasttext: on the presence weights; encoder: l2/100 x "
                              "documents, on standardised embeddings).")
    max_iter: int = opt(300, help="fasttext kind: most conjugate-gradient iterations.")
    encoder: str | None = opt(None, help="encoder kind: local sentence-transformers or Hugging Face encoder "
                                         "folder (nothing is downloaded).")
    pooling: str = opt("auto", choices=("auto", "mean", "cls", "max"),
                       help="encoder kind: pooling (auto = the folder's sentence-transformers setting, else mean).")
    max_length: int = opt(512, help="encoder kind: tokens per document (longer ones are cut).")
    batch_size: int = opt(32, help="encoder kind: documents per forward pass.")
    device: str = opt("cpu", help="encoder kind: torch device (cpu, cuda, cuda:1).")

    def validate(self) -> None:
        for name in ("ngrams", "buckets", "max_iter", "max_length", "batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"quality train option '{name}' must be at least 1, got {getattr(self, name)}")
        if self.ngrams > 5:
            raise ConfigError(f"quality train option 'ngrams' must be at most 5, got {self.ngrams}")
        if self.l2 <= 0:
            raise ConfigError(f"quality train option 'l2' must be above 0, got {self.l2}")
        if not 0 <= self.eval_fraction < 1:
            raise ConfigError(f"quality train option 'eval_fraction' must be in [0, 1), got {self.eval_fraction}")
        if self.scorer == "encoder" and not self.encoder:
            raise ConfigError("quality kind encoder needs --encoder PATH (a local sentence-transformers or "
                              "Hugging Face encoder folder)")


# ----------------------------------------------------------------------------- data
@dataclass
class QualityLabels:
    """Graded documents in memory: ids, split keys, texts and grades (floats in 0..5)."""

    ids: list[str]
    keys: list[str]
    texts: pa.Array
    y: np.ndarray
    files: list[dict[str, Any]] = field(default_factory=list)
    score_column: str = ""

    def __len__(self) -> int:
        return len(self.ids)

    def subset(self, idx: np.ndarray) -> "QualityLabels":
        il = idx.tolist()
        return QualityLabels([self.ids[i] for i in il], [self.keys[i] for i in il], self.texts.take(pa.array(idx)),
                             self.y[idx], self.files, self.score_column)

    @classmethod
    def from_records(cls, records: Sequence[dict[str, Any]], score_column: str = "score") -> "QualityLabels":
        y = np.array([float(r[score_column]) for r in records], dtype=np.float64)
        ids = [str(r["id"]) for r in records]
        return cls(ids, ids, pa.array([r["text"] for r in records], pa.string()), y, [], score_column)


def _pick_score_column(names: Sequence[str], wanted: str | None, path: str) -> str:
    if wanted:
        if wanted not in names:
            raise InputError(f"{path}: no score column '{wanted}' (columns found: {', '.join(names)}); pass "
                             "--score-column with the column holding the 0-5 grade")
        return wanted
    for c in SCORE_COLUMNS:
        if c in names:
            return c
    raise InputError(f"{path}: no score column (looked for {', '.join(SCORE_COLUMNS)}; columns found: "
                     f"{', '.join(names)}); pass --score-column NAME")


def load_quality_labels(paths: Sequence[str], score_column: str | None = None) -> QualityLabels:
    """Read graded documents (``id``, ``text``, a 0-5 score column) from shard files or folders.

    Raises InputError naming the file, field and row for a missing column, a null or
    non-numeric grade, or one outside 0-5.
    """
    files = list_input_files(list(paths))
    ids: list[str] = []
    keys: list[str] = []
    texts: list[pa.Array] = []
    ys: list[np.ndarray] = []
    infos: list[dict[str, Any]] = []
    column = score_column
    for path in files:
        n = 0
        row0 = 0
        for batch in iter_batches(path):
            col_name = _pick_score_column(batch.schema.names, column, path)
            column = column or col_name
            col = batch.column(col_name)
            if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_null(col.type)):
                raise InputError(f"{path}: field '{col_name}' has type {col.type}; grades must be numbers from 0 to 5")
            if col.null_count:
                row = row0 + pc.index(pc.is_null(col), True).as_py()
                raise InputError(f"{path}: field '{col_name}' is empty in record {row}; every labelled document "
                                 "needs a grade from 0 to 5 (drop ungraded records first)")
            y = col.to_numpy(zero_copy_only=False).astype(np.float64)
            bad = np.flatnonzero(~np.isfinite(y) | (y < SCORE_MIN) | (y > SCORE_MAX))
            if bad.size:
                raise InputError(f"{path}: field '{col_name}' is {float(y[bad[0]]):g} in record {row0 + int(bad[0])}; "
                                 "grades must be from 0 to 5")
            bid = batch.column(schema.ID).to_pylist()
            ids.extend(bid)
            keys.extend(batch.column(schema.SYNTH_SEED_ID).to_pylist() if schema.SYNTH_SEED_ID in batch.schema.names
                        else bid)
            texts.append(batch.column(schema.TEXT))
            ys.append(y)
            n += batch.num_rows
            row0 += batch.num_rows
        infos.append({"path": path, "sha256": file_sha256(path) if os.path.exists(path) else None, "records": n})
    if not ids:
        raise InputError(f"{', '.join(files) or ', '.join(paths)}: no graded records; training needs documents with "
                         "'text' and a 0-5 grade")
    keys = [k if k is not None else i for k, i in zip(keys, ids)]
    y = np.concatenate(ys)
    if len(np.unique(y)) < 2:
        raise InputError(f"{', '.join(files)}: every record has grade {y[0]:g}; a scorer needs at least two "
                         "different grades")
    text = pa.concat_arrays([pc.cast(t, pa.string()) for t in texts])
    return QualityLabels(ids, keys, text, y, infos, column or "")


# ----------------------------------------------------------------------------- metrics
def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    r = np.empty(len(x), dtype=np.float64)
    b = np.concatenate([[0], np.flatnonzero(np.diff(xs)) + 1, [len(x)]])
    for s, e in zip(b[:-1].tolist(), b[1:].tolist()):
        r[order[s:e]] = (s + e - 1) / 2.0
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (ties get average ranks); None when either side is constant."""
    ra, rb = _ranks(np.asarray(a, np.float64)), _ranks(np.asarray(b, np.float64))
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _f1(tp: int, fp: int, fn: int) -> dict[str, Any]:
    p = tp / (tp + fp) if tp + fp else None
    r = tp / (tp + fn) if tp + fn else None
    f = 2 * p * r / (p + r) if p and r else (0.0 if (p == 0 or r == 0) else None)
    return {"precision": p, "recall": r, "f1": f, "support": tp + fn}


def evaluate_quality(y: np.ndarray, pred: np.ndarray) -> dict[str, Any]:
    """Held-out report: Spearman, MAE, per-class F1 (prediction rounded), F1 and share kept per threshold."""
    y = np.asarray(y, np.float64)
    pred = np.clip(np.asarray(pred, np.float64), SCORE_MIN, SCORE_MAX)
    yc = np.rint(y).astype(int)
    pc_ = np.rint(pred).astype(int)
    per_class = {}
    for c in range(int(SCORE_MIN), int(SCORE_MAX) + 1):
        per_class[str(c)] = _f1(int(((pc_ == c) & (yc == c)).sum()), int(((pc_ == c) & (yc != c)).sum()),
                                int(((pc_ != c) & (yc == c)).sum()))
    at: dict[str, Any] = {}
    for t in THRESHOLDS:
        keep_p, keep_y = pred >= t, y >= t
        row = _f1(int((keep_p & keep_y).sum()), int((keep_p & ~keep_y).sum()), int((~keep_p & keep_y).sum()))
        row["kept_share"] = float(keep_p.mean()) if len(y) else None
        row["teacher_share"] = float(keep_y.mean()) if len(y) else None
        at[str(t)] = row
    f1s = [v["f1"] for v in per_class.values() if v["support"] and v["f1"] is not None]
    return {"n": int(len(y)), "labels": {str(k): int(v) for k, v in sorted(Counter(yc.tolist()).items())},
            "spearman": spearman(y, pred), "mae": float(np.abs(pred - y).mean()) if len(y) else None,
            "accuracy_rounded": float((pc_ == yc).mean()) if len(y) else None,
            "macro_f1": float(np.mean(f1s)) if f1s else None, "per_class": per_class,
            "f1_at_3": at["3"]["f1"], "at_threshold": at}


# ----------------------------------------------------------------------------- heads
def fit_sparse_ridge(indptr: np.ndarray, idx: np.ndarray, y: np.ndarray, dim: int, l2: float,
                     max_iter: int = 300, tol: float = 1e-6) -> tuple[np.ndarray, float, int]:
    """Ridge regression on a binary CSR matrix, unpenalised intercept, by conjugate gradients.

    Solves (Xc'Xc + l2 I) w = Xc'(y - mean y) with Xc the column-centred matrix, using only
    sparse products (X v and X' u as bincounts), so memory stays at the matrix itself.
    Returns (weights, intercept, iterations).
    """
    n = len(y)
    rows = np.repeat(np.arange(n, dtype=np.int32), np.diff(indptr))  # int32: 4 bytes per stored feature
    col_mean = np.bincount(idx, minlength=dim).astype(np.float64) / n
    ym = float(y.mean())

    def xv(v: np.ndarray) -> np.ndarray:
        return np.bincount(rows, weights=v[idx], minlength=n) - col_mean @ v

    def xtu(u: np.ndarray) -> np.ndarray:
        return np.bincount(idx, weights=u[rows], minlength=dim) - col_mean * u.sum()

    w = np.zeros(dim)
    r = xtu(y - ym)
    p = r.copy()
    rs = float(r @ r)
    stop = tol * tol * max(rs, 1e-300)
    it = 0
    for it in range(1, max_iter + 1):
        ap = xtu(xv(p)) + l2 * p
        a = rs / float(p @ ap)
        w += a * p
        r -= a * ap
        rs_new = float(r @ r)
        if rs_new <= stop:
            break
        p = r + (rs_new / rs) * p
        rs = rs_new
    return w, ym - float(col_mean @ w), it


def fit_dense_ridge(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Closed-form ridge on standardised features: (coef, mean, scale, intercept); penalty l2 * n."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    ym = float(y.mean())
    a = z.T @ z + l2 * len(y) * np.eye(z.shape[1])
    coef = np.linalg.solve(a, z.T @ (y - ym))
    return coef, mean, scale, ym


# ----------------------------------------------------------------------------- model files
def sidecar_path(model_path: str | os.PathLike[str]) -> Path:
    p = Path(model_path)
    return p.with_suffix(".json") if p.suffix in (".npz", ".bin") else Path(str(p) + ".json")


def model_tag(path: str, sha256: str | None = None) -> str:
    return f"{Path(path).name}@{(sha256 or file_sha256(path))[:12]}"


def is_quality_model(path: str) -> bool:
    """Whether ``path`` is a quality model (by its sidecar), so `recall score` can route it."""
    side = sidecar_path(path)
    if not side.is_file():
        return False
    try:
        return json.loads(side.read_text(encoding="utf-8")).get("format") == MODEL_FORMAT
    except (json.JSONDecodeError, OSError):
        return False


class QualityModel:
    """A trained quality model ready to score; heavy parts (weights, encoder) load on first use.

    Pickles as its path and settings only, so a stage holding one can go to Slurm/Ray workers.
    """

    def __init__(self, path: str, *, device: str | None = None, batch_size: int | None = None) -> None:
        self.path = str(path)
        side = sidecar_path(self.path)
        if not os.path.isfile(self.path):
            raise ConfigError(f"{self.path}: quality model not found; train one with "
                              "`mathcorpus recall train --kind quality`")
        try:
            self.meta: dict[str, Any] = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{side}: unreadable quality model metadata ({exc}); retrain the model") from exc
        if self.meta.get("format") != MODEL_FORMAT:
            raise ConfigError(f"{self.path}: not a quality model ({side} has format "
                              f"{self.meta.get('format')!r}); train one with `recall train --kind quality`")
        self.kind: str = self.meta["scorer"]
        pre = self.meta.get("preprocess", {})
        if self.kind == "fasttext" and pre.get("version") != PREPROCESS_VERSION:
            raise ConfigError(f"{self.path}: trained with preprocessing version {pre.get('version')}, this "
                              f"mathcorpus uses {PREPROCESS_VERSION}; retrain the model")
        self.device = device or self.meta.get("encoder", {}).get("device", "cpu")
        self.batch_size = batch_size or int(self.meta.get("encoder", {}).get("batch_size", 32))
        self._tag: str | None = None
        self._head: dict[str, np.ndarray] | None = None
        self._scorer: Any = None
        self._encoder: Any = None

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_head"] = state["_scorer"] = state["_encoder"] = None
        return state

    @property
    def tag(self) -> str:
        if self._tag is None:
            self._tag = model_tag(self.path)
        return self._tag

    def head(self) -> dict[str, np.ndarray]:
        if self._head is None:
            try:
                with np.load(self.path) as z:
                    self._head = {k: z[k] for k in z.files}
            except (OSError, ValueError) as exc:
                raise ConfigError(f"{self.path}: unreadable quality model ({exc}); retrain it") from exc
        return self._head

    def load(self) -> None:
        """Load the weights (and the encoder) now, e.g. in a worker's setup."""
        h = self.head()
        if self.kind == "fasttext" and self._scorer is None:
            from recall.quality_features import LinearScorer

            weights = np.zeros(int(self.meta["features"]["buckets"]), dtype=np.float32)
            weights[h["index"]] = h["weight"]
            self._scorer = LinearScorer(weights, int(self.meta["features"]["ngrams"]))
        elif self.kind == "encoder" and self._encoder is None:
            self._encoder = _open_encoder(self.meta["encoder"], device=self.device)

    def score(self, texts: pa.Array | pa.ChunkedArray | Sequence[str],
              progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Scores on the teacher's 0-5 scale (clipped) for raw documents."""
        self.load()
        h = self.head()
        if self.kind == "fasttext":
            lines = preprocess(texts, self.meta["preprocess"]["segmenter"])
            raw = self._scorer(lines) + float(h["intercept"])
        else:
            if isinstance(texts, (pa.Array, pa.ChunkedArray)):
                texts = texts.to_pylist()
            emb = self._encoder.embed(list(texts), self.batch_size, progress)
            raw = ((emb - h["mean"]) / h["scale"]) @ h["coef"] + float(h["intercept"])
        return np.clip(raw, SCORE_MIN, SCORE_MAX)


def _open_encoder(enc_meta: dict[str, Any], *, device: str) -> Any:
    from corpus.encoder import Encoder, EncoderError, encoder_fingerprint

    path = enc_meta["path"]
    try:
        enc = Encoder(path, device=device, max_length=int(enc_meta["max_length"]), pooling=enc_meta["pooling"])
        if enc_meta.get("fingerprint") and encoder_fingerprint(path) != enc_meta["fingerprint"]:
            raise ConfigError(f"{path}: the encoder changed since the quality model was trained (fingerprint "
                              "differs); retrain the head on this encoder")
    except EncoderError as exc:
        raise ConfigError(str(exc)) from exc
    return enc


# ----------------------------------------------------------------------------- training
def _save_npz(path: str, arrays: dict[str, np.ndarray]) -> str:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    try:
        atomic_write_bytes(path, buf.getvalue())
    except OSError as exc:
        raise FatalError(f"{path}: cannot write the quality model ({exc})") from exc
    return file_sha256(path)


def _train_fasttext_kind(tr: QualityLabels, cfg: QualityTrainConfig) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    from recall.quality_features import csr_features

    lines = preprocess(tr.texts, cfg.segmenter)
    indptr, idx = csr_features(lines, cfg.ngrams, cfg.buckets)
    w, b, iters = fit_sparse_ridge(indptr, idx, tr.y, cfg.buckets, cfg.l2, cfg.max_iter)
    nz = np.flatnonzero(w)
    arrays = {"index": nz.astype(np.int32), "weight": w[nz].astype(np.float32), "intercept": np.float64(b)}
    info = {"features": {"kind": "presence", "ngrams": cfg.ngrams, "buckets": cfg.buckets,
                         "nonzero_weights": int(len(nz)), "mean_features_per_doc": float(np.diff(indptr).mean())},
            "preprocess": {"version": PREPROCESS_VERSION, "segmenter": cfg.segmenter},
            "head": {"kind": "ridge", "l2": cfg.l2, "cg_iterations": iters}}
    return arrays, info


def _train_encoder_kind(tr: QualityLabels, cfg: QualityTrainConfig,
                        log: Callable[[str], None]) -> tuple[dict[str, np.ndarray], dict[str, Any], Any]:
    from corpus.encoder import encoder_fingerprint

    assert cfg.encoder is not None  # validate() checks
    enc_meta = {"path": os.path.abspath(cfg.encoder), "max_length": cfg.max_length, "pooling": cfg.pooling,
                "batch_size": cfg.batch_size, "device": cfg.device, "fingerprint": None}
    enc = _open_encoder(enc_meta, device=cfg.device)
    enc_meta["fingerprint"] = encoder_fingerprint(cfg.encoder)
    log(f"embedding {len(tr):,} training documents with {cfg.encoder} on {cfg.device} ...")
    x = enc.embed(tr.texts.to_pylist(), cfg.batch_size)
    coef, mean, scale, b = fit_dense_ridge(x.astype(np.float64), tr.y, cfg.l2 / 100.0)
    arrays = {"coef": coef.astype(np.float64), "mean": mean, "scale": scale, "intercept": np.float64(b)}
    info = {"encoder": enc_meta | {"resolved": enc.describe()},
            "head": {"kind": "ridge", "l2": cfg.l2, "penalty": "l2/100 * n on standardised embeddings"}}
    return arrays, info, enc


def train_quality(data: QualityLabels, out_path: str, cfg: QualityTrainConfig, *, inputs: Sequence[str] = (),
                  log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """Train on ``data`` minus a held-out split, evaluate, write ``out_path`` (npz) and its JSON."""
    from recall.model import eval_mask

    held = eval_mask(data.keys, cfg.eval_fraction, cfg.seed)
    tr = data.subset(np.flatnonzero(~held))
    ev = data.subset(np.flatnonzero(held))
    if len(tr) < 2 or len(np.unique(tr.y)) < 2:
        raise InputError(f"{', '.join(inputs) or 'the labels'}: the training split has {len(tr)} record(s) and "
                         f"{len(np.unique(tr.y))} distinct grade(s); add graded documents or lower eval_fraction")
    out_dir = os.path.dirname(os.path.abspath(out_path))
    os.makedirs(out_dir, exist_ok=True)
    enc = None
    if cfg.scorer == "fasttext":
        arrays, info = _train_fasttext_kind(tr, cfg)
    else:
        arrays, info, enc = _train_encoder_kind(tr, cfg, log)
    sha = _save_npz(out_path, arrays)
    train_sha = hashlib.sha256()
    for i, s in zip(tr.ids, tr.y.tolist()):
        train_sha.update(f"{i}\t{s}\n".encode("utf-8"))
    report: dict[str, Any] = {
        "format": MODEL_FORMAT, "format_version": 1, "mathcorpus_version": __version__, "scorer": cfg.scorer,
        "model": os.path.basename(out_path), "sha256": sha, "tag": model_tag(out_path, sha),
        "config": cfg.to_dict(), **info,
        "data": {"files": data.files, "score_column": data.score_column, "records": len(data),
                 "train_records": len(tr), "eval_records": len(ev),
                 "train_labels": {str(int(k)): int(v) for k, v in sorted(Counter(np.rint(tr.y).tolist()).items())},
                 "training_set_sha256": train_sha.hexdigest()},
    }
    if len(ev):
        model = QualityModel.__new__(QualityModel)
        model.path, model.meta, model.kind = out_path, report, cfg.scorer
        model.device, model.batch_size = cfg.device, cfg.batch_size
        model._tag, model._head, model._scorer, model._encoder = None, arrays, None, enc
        report["eval"] = evaluate_quality(ev.y, model.score(ev.texts))
    else:
        report["eval"] = None
    atomic_write_json(str(sidecar_path(out_path)), report)
    return report


def train_quality_files(paths: Sequence[str], out_path: str, cfg: QualityTrainConfig,
                        log: Callable[[str], None] = lambda m: None) -> dict[str, Any]:
    """``recall train --kind quality``: load graded shards, train, evaluate, save; returns the report."""
    data = load_quality_labels(paths, cfg.score_column)
    log(f"{len(data):,} graded documents (grade column '{data.score_column}'); training the {cfg.scorer} scorer ...")
    return train_quality(data, out_path, cfg, inputs=[str(p) for p in paths], log=log)


__all__ = ["QualityTrainConfig", "QualityLabels", "QualityModel", "load_quality_labels", "evaluate_quality",
           "spearman", "fit_sparse_ridge", "fit_dense_ridge", "train_quality", "train_quality_files",
           "is_quality_model", "sidecar_path", "SCORERS"]
