"""bench/gpu_train_step.py runs (--tiny, on CPU) with none of mathcorpus' other dependencies importable."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# present here, absent on the GPU machine (it has torch, transformers, numpy, pyarrow)
BLOCKED = ("datatrove", "polars", "numba", "xxhash", "datasketch", "megatron", "tiktoken", "rapidfuzz", "fasttext",
           "jieba", "resiliparse", "lxml", "click", "corpus.shards", "corpus.runner", "corpus.config")


def test_gpu_train_step_tiny_runs_with_the_loader_alone(tmp_path: Path) -> None:
    code = ("import sys, runpy\n"
            f"for m in {BLOCKED!r}:\n    sys.modules[m] = None\n"
            "sys.argv = ['bench/gpu_train_step.py', '--tiny']\n"
            "runpy.run_path('bench/gpu_train_step.py', run_name='__main__')\n")
    env = dict(os.environ, OUT=str(tmp_path / "out"))
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads((tmp_path / "out" / "gpu_train_step.json").read_text())
    assert r["tiny"] and r["device"] == "cpu" and r["heavy_modules_imported"] == []
    assert r["train_tokens_per_s"] > 0 and r["loader_tokens_per_s"] > r["train_tokens_per_s"]
    assert 10 < r["last_loss"] < 13  # cross-entropy of a random 151,936-way model on real-shaped ids
    assert "training step consumes" in res.stdout and "loader delivers" in res.stdout
