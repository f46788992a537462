"""The recall-score stage on the stage runner: threshold, keep-top, tag-only, per-source models."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus import schema
from corpus.errors import ConfigError, InputError
from corpus.registry import get_stage_class
from corpus.runner import RunOptions, run_stage
from corpus.shards import read_table
from recall.model import RecallModel
from recall.stage import REMOVAL_REASON, ScoreConfig, ScoreStage
from tests.conftest import write_jsonl
from tests.recall.conftest import read_sample


@pytest.fixture(scope="module")
def docs_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Path:
    """Two shards of real documents: 120 math, 120 non-math, with sources web and code."""
    mp = read_sample("math_positive.jsonl.gz")
    neg = read_sample("non_math_negative.jsonl.gz")
    math = [r for r in mp if r["source"] == "stackmathqa"][:100] + \
        [r for r in mp if r["source"] == "mathematics_in_lean"][:20]
    rows = [{"id": r["id"], "text": r["text"], "label": r["label"],
             "source": "code" if r["source"] == "mathematics_in_lean" else "web"} for r in math + neg[:120]]
    d = tmp_path_factory.mktemp("docs")
    write_jsonl(d / "a.jsonl", rows[::2])
    write_jsonl(d / "b.jsonl.gz", rows[1::2], "gz")
    return d


def _run(cfg: ScoreConfig, inputs: Path, out: Path, **opts: object) -> dict:
    return run_stage(ScoreStage(cfg), [str(inputs)], str(out), RunOptions(**opts))


def test_registered_and_pickles_without_loading(small_model: Path) -> None:
    assert get_stage_class("recall-score") is ScoreStage
    stage = ScoreStage(ScoreConfig(model=str(small_model)))
    stage.models()
    clone = pickle.loads(pickle.dumps(stage))
    assert all(m._ft is None for m in clone.models().values())


def test_threshold_keeps_and_removes(tmp_path: Path, docs_dir: Path, small_model: Path) -> None:
    s = _run(ScoreConfig(model=str(small_model), threshold=0.5), docs_dir, tmp_path / "out", tasks=2, workers=2)
    kept = read_table(str(tmp_path / "out"))
    removed = read_table(str(tmp_path / "out" / "_removed"))
    assert s["docs_in"] == 240 == kept.num_rows + removed.num_rows
    assert s["removed_by_reason"] == {REMOVAL_REASON: removed.num_rows}
    assert kept.schema.field(schema.MATH_SCORE).type == pa.float64()
    assert min(kept.column(schema.MATH_SCORE).to_pylist()) >= 0.5
    assert max(removed.column(schema.MATH_SCORE).to_pylist()) < 0.5
    assert set(removed.column(schema.REMOVAL_REASON).to_pylist()) == {REMOVAL_REASON}
    tag = RecallModel(small_model).tag
    assert set(kept.column(schema.RECALL_MODEL).to_pylist()) == {tag}
    assert schema.RECALL_CYCLE not in kept.column_names
    # input columns are carried through, and the scores sort math above news
    assert {"label", "source"} <= set(kept.column_names)
    labels = kept.column("label").to_pylist() + removed.column("label").to_pylist()
    right = sum(1 for lab in kept.column("label").to_pylist() if lab == "math") + \
        sum(1 for lab in removed.column("label").to_pylist() if lab == "non_math")
    assert right / len(labels) > 0.9
    hist = s["recall"]["histogram"]["counts"]
    assert len(hist) == 20 and sum(hist) == 240


def test_tag_only_keeps_everything_and_rescoring_replaces_columns(tmp_path: Path, docs_dir: Path,
                                                                   small_model: Path) -> None:
    s = _run(ScoreConfig(model=str(small_model), tag_only=True, cycle=3), docs_dir, tmp_path / "t1")
    t1 = read_table(str(tmp_path / "t1"))
    assert t1.num_rows == 240 and s["removed"] == 0
    assert set(t1.column(schema.RECALL_CYCLE).to_pylist()) == {3}
    _run(ScoreConfig(model=str(small_model), tag_only=True), tmp_path / "t1", tmp_path / "t2")
    t2 = read_table(str(tmp_path / "t2"))
    assert t2.column_names.count(schema.MATH_SCORE) == 1 and schema.RECALL_CYCLE not in t2.column_names
    a = dict(zip(t1.column("id").to_pylist(), t1.column(schema.MATH_SCORE).to_pylist()))
    b = dict(zip(t2.column("id").to_pylist(), t2.column(schema.MATH_SCORE).to_pylist()))
    assert a == b  # deterministic


def test_keep_top_keeps_the_highest_share(tmp_path: Path, docs_dir: Path, small_model: Path) -> None:
    _run(ScoreConfig(model=str(small_model), tag_only=True), docs_dir, tmp_path / "all")
    scores = np.sort(read_table(str(tmp_path / "all")).column(schema.MATH_SCORE).to_numpy())[::-1]
    s = _run(ScoreConfig(model=str(small_model), keep_top=0.25), docs_dir, tmp_path / "top", tasks=2, workers=2)
    kept = read_table(str(tmp_path / "top")).column(schema.MATH_SCORE).to_numpy()
    cut = scores[59]  # the 60th highest of 240
    assert s["recall"]["keep_top_threshold"] == pytest.approx(cut)
    assert len(kept) == int((scores >= cut).sum()) >= 60 and kept.min() >= cut
    assert s["kept"] + s["removed"] == 240


def test_per_source_models_and_thresholds(tmp_path: Path, docs_dir: Path, small_model: Path) -> None:
    code_model = tmp_path / "code.bin"
    code_model.write_bytes(small_model.read_bytes())
    (tmp_path / "code.json").write_text((small_model.with_suffix(".json")).read_text())
    cfg = ScoreConfig(source_models={"web": str(small_model), "code": str(code_model)},
                      source_thresholds={"web": 0.5, "code": 0.0})
    s = _run(cfg, docs_dir, tmp_path / "out")
    kept = read_table(str(tmp_path / "out"))
    by_source = dict(zip(kept.column("id").to_pylist(), zip(kept.column("source").to_pylist(),
                                                            kept.column(schema.RECALL_MODEL).to_pylist())))
    code_rows = [v for v in by_source.values() if v[0] == "code"]
    assert len(code_rows) == 20  # threshold 0 keeps every code document
    assert all(tag.startswith("code.bin@") for _, tag in code_rows)
    assert all(tag.startswith("small.bin@") for src, tag in by_source.values() if src == "web")
    assert s["recall"]["thresholds"]["code"] == 0.0


def test_source_without_model_is_an_error(tmp_path: Path, docs_dir: Path, small_model: Path) -> None:
    with pytest.raises(InputError, match="documents with source 'code' have no recall model; add "
                                         "code=MODEL.bin to source_models or pass --model"):
        _run(ScoreConfig(source_models={"web": str(small_model)}), docs_dir, tmp_path / "out")


def test_config_errors(small_model: Path) -> None:
    with pytest.raises(ConfigError, match="recall score needs a model"):
        ScoreConfig.from_mapping({})
    with pytest.raises(ConfigError, match="use either --threshold or --keep-top, not both"):
        ScoreConfig.from_mapping({"model": str(small_model), "threshold": 0.4, "keep_top": 0.1})
    with pytest.raises(ConfigError, match="'keep_top' must be in \\(0, 1\\], got 1.5"):
        ScoreConfig.from_mapping({"model": str(small_model), "keep_top": 1.5})
    with pytest.raises(ConfigError, match="unknown key 'treshold' for recall_score; did you mean 'threshold'"):
        ScoreConfig.from_mapping({"model": str(small_model), "treshold": 0.4})
    with pytest.raises(ConfigError, match="nope.bin: model file not found"):
        ScoreStage(ScoreConfig(model="nope.bin")).models()


def test_summary_written(tmp_path: Path, docs_dir: Path, small_model: Path) -> None:
    _run(ScoreConfig(model=str(small_model)), docs_dir, tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "_run" / "summary.json").read_text())
    assert summary["recall"]["models"] == {"default": RecallModel(small_model).tag}
    files = sorted(p.name for p in (tmp_path / "out").glob("*.parquet"))
    assert files and all(f.startswith("recall-score-") for f in files)
    assert pq.read_schema(tmp_path / "out" / files[0]).field(schema.MATH_SCORE).type == pa.float64()
