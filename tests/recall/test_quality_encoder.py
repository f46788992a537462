"""Quality scoring, encoder kind, end to end with a tiny random encoder built from a config.

The encoder is a randomly initialised BERT (hidden size 32, two layers) saved with a
tokenizer built from the bundled Qwen2.5 tokenizer files: nothing is downloaded. Its
embeddings mean nothing, so these tests prove the plumbing (training, save/load, pooling,
batching, the stage and the CLI), not quality; that needs a real encoder.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from corpus.cli import main as cli
from corpus.errors import ConfigError
from corpus.shards import read_table
from recall.quality import QualityModel
from corpus.encoder import Encoder
from tests.conftest import write_jsonl
from tests.teacher_server import TOKENIZER_JSON


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    if not TOKENIZER_JSON.is_file():
        pytest.fail(f"{TOKENIZER_JSON} is missing: tests read ../shared/data beside the repo")
    out = tmp_path_factory.mktemp("tiny-bert")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(TOKENIZER_JSON), pad_token="<|endoftext|>")
    torch.manual_seed(7)
    cfg = BertConfig(vocab_size=151936, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=128)
    BertModel(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


def _as_sentence_transformers(src: Path, dst: Path, mode: str) -> Path:
    """A copy of ``src`` laid out as a sentence-transformers folder with ``mode`` pooling."""
    import shutil

    shutil.copytree(src, dst)
    (dst / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (dst / "1_Pooling").mkdir()
    (dst / "1_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 32,
                                                               f"pooling_mode_{mode}_token": True}))
    return dst


TEXTS = [f"Problem {i}: let $x^{i % 7} = {i}$; {'find the integral. ' * (i % 5)}" + "word " * (i % 23)
         for i in range(60)]


def test_pooling_and_batching(tiny_encoder: Path, tmp_path: Path) -> None:
    enc = Encoder(str(tiny_encoder), max_length=64)
    assert enc.pooling == "mean" and not enc.normalize and enc.dim == 32
    a = enc.embed(TEXTS[:13], batch_size=1)
    b = enc.embed(TEXTS[:13], batch_size=5)
    assert a.shape == (13, 32) and np.allclose(a, b, atol=1e-5)  # padding and length sorting change nothing
    import torch

    with torch.inference_mode():
        t = enc.tokenizer([TEXTS[3]], return_tensors="pt", truncation=True, max_length=64)
        hidden = enc.model(input_ids=t["input_ids"], attention_mask=t["attention_mask"]).last_hidden_state[0]
    assert np.allclose(a[3], hidden.mean(0).numpy(), atol=1e-5)
    st = Encoder(str(_as_sentence_transformers(tiny_encoder, tmp_path / "st", "cls")), max_length=64)
    assert st.pooling == "cls" and st.normalize
    c = st.embed(TEXTS[3:4])[0]
    cls = hidden[0].numpy()
    assert np.allclose(c, cls / np.linalg.norm(cls), atol=1e-5)


def test_train_save_load_score_end_to_end(tiny_encoder: Path, tmp_path: Path) -> None:
    rows = [{"id": f"d{i}", "text": t, "grade": i % 6} for i, t in enumerate(TEXTS)]
    labels = write_jsonl(tmp_path / "labels.jsonl", rows)
    q = tmp_path / "enc.npz"
    r = CliRunner().invoke(cli, ["recall", "train", "--kind", "quality", "--labels", str(labels), "--score-column",
                                 "grade", "--scorer", "encoder", "--encoder", str(tiny_encoder), "--batch-size", "7",
                                 "--max-length", "64", "--eval-fraction", "0.2", "-o", str(q), "--json"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.stdout)
    assert rep["scorer"] == "encoder" and rep["encoder"]["resolved"]["dim"] == 32
    assert rep["encoder"]["path"] == str(tiny_encoder.resolve()) and len(rep["encoder"]["fingerprint"]) == 64
    assert rep["eval"]["n"] == rep["data"]["eval_records"] > 0 and rep["eval"]["spearman"] is not None
    m = QualityModel(str(q), batch_size=3)
    s1 = m.score(TEXTS)
    s2 = pickle.loads(pickle.dumps(QualityModel(str(q), batch_size=60))).score(TEXTS)
    assert s1.shape == (60,) and np.allclose(s1, s2, atol=1e-4) and ((s1 >= 0) & (s1 <= 5)).all()
    # the head is a ridge fit on the training embeddings: reproduce it from the saved arrays
    with np.load(q) as z:
        emb = Encoder(str(tiny_encoder), max_length=64).embed(TEXTS[:5])
        manual = np.clip(((emb - z["mean"]) / z["scale"]) @ z["coef"] + float(z["intercept"]), 0, 5)
    assert np.allclose(manual, s1[:5], atol=1e-4)
    # the stage through the CLI: tag only, every document gets the model's score
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": f"x{i}", "text": t} for i, t in enumerate(TEXTS[:20])])
    r = CliRunner().invoke(cli, ["recall", "score", str(inp), "-o", str(tmp_path / "out"), "--model", str(q),
                                 "--tag-only", "--batch-size", "4", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    out = read_table(str(tmp_path / "out")).to_pylist()
    assert len(out) == 20 and np.allclose([o["quality_score"] for o in out], s1[:20], atol=1e-4)
    assert json.loads(r.stdout)["quality"]["scorer"] == "encoder"


def test_changed_or_missing_encoder_is_refused(tiny_encoder: Path, tmp_path: Path) -> None:
    import shutil

    enc_dir = tmp_path / "enc"
    shutil.copytree(tiny_encoder, enc_dir)
    labels = write_jsonl(tmp_path / "l.jsonl", [{"id": f"d{i}", "text": t, "score": i % 3}
                                                for i, t in enumerate(TEXTS[:20])])
    q = tmp_path / "q.npz"
    r = CliRunner().invoke(cli, ["recall", "train", "--kind", "quality", "--labels", str(labels), "--scorer",
                                 "encoder", "--encoder", str(enc_dir), "--eval-fraction", "0", "-o", str(q)])
    assert r.exit_code == 0, r.output
    cfg = json.loads((enc_dir / "config.json").read_text())
    cfg["layer_norm_eps"] = 1e-5
    (enc_dir / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="the encoder changed since the quality model was trained"):
        QualityModel(str(q)).score(["x"])
    r = CliRunner().invoke(cli, ["recall", "train", "--kind", "quality", "--labels", str(labels), "--scorer",
                                 "encoder", "--encoder", str(tmp_path / "nope"), "-o", str(q)])
    assert r.exit_code == 2 and "encoder folder not found" in r.output
