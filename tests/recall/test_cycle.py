"""The multi-cycle recall loop on a synthetic pool of real texts with URLs and a planted math domain."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml

import recall.cycle as cycle_mod
from corpus.errors import ConfigError, InputError
from corpus.runner import RunOptions
from recall.cycle import STATE_FORMAT, CycleConfig, run_cycle
from tests.conftest import write_jsonl
from tests.recall.conftest import planted_pool, read_sample

TRAIN = {"dim": 64, "bucket": 100_000, "epoch": 10, "lr": 0.2, "thread": 1, "seed": 0}


def _cfg(seed: Path, pool: Path, workdir: Path, **kw: Any) -> CycleConfig:
    base = {"seed": [str(seed)], "pool": [str(pool)], "workdir": str(workdir), "cycles": 3, "auto_accept": True,
            "min_domain_pages": 10, "train": dict(TRAIN)}
    base.update(kw)
    return CycleConfig.from_mapping(base)


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[Path, Path, str]:
    return planted_pool(tmp_path_factory.mktemp("pool"))


@pytest.fixture(scope="module")
def auto_run(tmp_path_factory: pytest.TempPathFactory, planted: tuple[Path, Path, str]) -> tuple[Path, dict]:
    seed, pool, _ = planted
    w = tmp_path_factory.mktemp("auto") / "W"
    return w, run_cycle(_cfg(seed, pool, w), RunOptions())


def _recall_of(w: Path, k: int, pred: Any) -> float:
    t = pq.read_table(w / f"cycle-{k:03d}" / "scores")  # id, url, scores: no text, so not read_table
    rows = [r for r in t.select(["id", "url", "math_score"]).to_pylist() if pred(r)]
    return sum(r["math_score"] >= 0.5 for r in rows) / len(rows)


def test_planted_domain_is_recalled_by_cycle_2(auto_run: tuple[Path, dict], planted: tuple[Path, Path, str]) -> None:
    w, summary = auto_run
    _, _, domain = planted

    def planted_math(r: dict) -> bool:
        return f"{domain}/questions/" in r["url"]

    def word_problems(r: dict) -> bool:
        return planted_math(r) and not r["id"].startswith("p-math_positive")

    def news_sites(r: dict) -> bool:
        return domain not in r["url"]

    # cycle 1: the book-only seed finds the Q&A half of the domain, not its word problems,
    # but enough for the domain to pass 10% and its /questions/ path to be proposed
    c1 = json.loads((w / "cycle-001" / "stats.json").read_text())
    assert [(c["domain"], c["path_prefix"]) for c in c1["candidates"]] == [(domain, "/questions/")]
    assert _recall_of(w, 1, word_problems) < 0.5
    dom = {r["domain"]: r for r in pq.read_table(w / "cycle-001" / "domains.parquet").to_pylist()}
    assert dom[domain]["math_domain"] and dom[domain]["recall_rate"] > 0.1
    assert not any(r["math_domain"] for d, r in dom.items() if d != domain)
    # cycle 2 trains on the domain's pages and recalls all of it, and still not the news
    assert _recall_of(w, 2, planted_math) >= 0.95
    assert _recall_of(w, 2, word_problems) >= 0.9
    assert _recall_of(w, 2, news_sites) < 0.02
    cycles = summary["cycles"]
    assert cycles[0]["accepted"] == 1 and cycles[0]["positives_added"] == 200
    assert cycles[1]["recalled"] > cycles[0]["recalled"]
    assert cycles[1]["overlap_previous"] > 0.9  # what cycle 1 found, cycle 2 keeps
    assert cycles[0]["heldout_seed_recall"]["all"] >= 0.9
    assert summary["status"] == "done" and summary["stop_reason"] in ("converged", "no_new_seed")


def test_state_is_versioned_and_audited(auto_run: tuple[Path, dict]) -> None:
    w, summary = auto_run
    state = json.loads((w / "state.json").read_text())
    assert state["format"] == STATE_FORMAT and state["format_version"] == 1
    assert state["revision"] == summary["revision"] > 5
    steps = [(e["cycle"], e["step"]) for e in map(json.loads, (w / "history.jsonl").read_text().splitlines())]
    assert steps[:6] == [(0, "init"), (1, "train"), (1, "score"), (1, "stats"), (1, "review"), (1, "expand")]
    assert steps[6:9] == [(2, "train"), (2, "score"), (2, "stats")]
    for k in (1, 2):
        d = w / f"cycle-{k:03d}"
        for name in ("model-web.bin", "model-web.json", "recalled.parquet", "domains.parquet", "stats.json"):
            assert (d / name).is_file(), name
        stats = json.loads((d / "stats.json").read_text())
        assert sum(stats["histogram"]["by_source"]["web"]) == stats["pool_docs"]
    score_cfg = yaml.safe_load((w / "score.yaml").read_text())["recall_score"]
    assert Path(score_cfg["source_models"]["web"]).is_file()
    # a finished run is not redone
    again = run_cycle(_cfg(*auto_run_inputs(w), w), RunOptions())
    assert again["revision"] == summary["revision"]


def auto_run_inputs(w: Path) -> tuple[Path, Path]:
    conf = json.loads((w / "state.json").read_text())["config"]
    return Path(conf["seed"][0]), Path(conf["pool"][0])


def test_resume_after_a_kill_gives_the_same_result(tmp_path: Path, planted: tuple[Path, Path, str],
                                                   auto_run: tuple[Path, dict],
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    seed, pool, _ = planted
    w = tmp_path / "W"
    real = cycle_mod.run_stage
    calls = {"n": 0}

    def killed_on_second(*a: Any, **k: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the run dies while scoring cycle 2
        return real(*a, **k)

    monkeypatch.setattr(cycle_mod, "run_stage", killed_on_second)
    with pytest.raises(KeyboardInterrupt):
        run_cycle(_cfg(seed, pool, w), RunOptions())
    monkeypatch.setattr(cycle_mod, "run_stage", real)
    state = json.loads((w / "state.json").read_text())
    assert list(state["cycles"][1]["steps"]) == ["train"]
    # a kill -9 leaves the lock file of a dead process behind: it must not block the resume
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    (w / ".lock").write_text(dead.stdout.strip())
    resumed = run_cycle(_cfg(seed, pool, w), RunOptions())
    ref_w, ref = auto_run
    assert [c["recalled"] for c in resumed["cycles"]] == [c["recalled"] for c in ref["cycles"]]
    for k in (1, 2):
        a = pq.read_table(w / f"cycle-{k:03d}" / "recalled.parquet")
        b = pq.read_table(ref_w / f"cycle-{k:03d}" / "recalled.parquet")
        assert a.equals(b)
        ma = json.loads((w / f"cycle-{k:03d}" / "model-web.json").read_text())["sha256"]
        mb = json.loads((ref_w / f"cycle-{k:03d}" / "model-web.json").read_text())["sha256"]
        assert ma == mb
    steps = [e["step"] for e in map(json.loads, (w / "history.jsonl").read_text().splitlines()) if e["cycle"] == 1]
    assert steps.count("train") == 1  # finished steps were not redone


def test_review_file_pauses_the_loop(tmp_path: Path, planted: tuple[Path, Path, str]) -> None:
    seed, pool, domain = planted
    # add a code pool: Lean files as its math, plus a per-source seed for it
    lean = [r for r in read_sample("math_positive.jsonl.gz") if r["source"] == "mathematics_in_lean"]
    news = [r for r in read_sample("non_math_negative.jsonl.gz") if r["source"] == "bbc_news"][-60:]
    code_pool = [{"id": "c-" + r["id"], "text": r["text"], "source": "code", "url": None} for r in lean[30:] + news]
    code_seed = [{"id": "s-" + r["id"], "text": r["text"], "source": "code"} for r in lean[:30]]
    write_jsonl(tmp_path / "code_pool.jsonl", code_pool)
    write_jsonl(tmp_path / "code_seed.jsonl", code_seed)
    w = tmp_path / "W"
    cfg = CycleConfig.from_mapping({
        "seed": [str(seed), str(tmp_path / "code_seed.jsonl")], "pool": [str(pool), str(tmp_path / "code_pool.jsonl")],
        "workdir": str(w), "cycles": 2, "auto_accept": False, "min_domain_pages": 10, "min_source_seed": 20,
        "train": dict(TRAIN)})
    first = run_cycle(cfg, RunOptions())
    review = w / "cycle-001" / "candidates.yaml"
    assert first["status"] == "awaiting_review" and first["review_file"] == str(review)
    assert set(first["cycles"][0]["models"]) == {"web", "code"}
    assert set(first["cycles"][0]["heldout_seed_recall"]) >= {"web", "code", "all"}
    doc = yaml.safe_load(review.read_text())
    assert doc["reviewed"] is False and [c["accept"] for c in doc["candidates"]] == [False]
    assert run_cycle(cfg, RunOptions())["status"] == "awaiting_review"  # not reviewed yet: still waiting
    doc["reviewed"] = True
    doc["candidates"][0]["accept"] = "yes"
    review.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match=f"candidates.yaml: candidate 1 \\({domain}/questions/\\): 'accept' must "
                                          "be true or false, got 'yes'"):
        run_cycle(cfg, RunOptions())
    doc["candidates"][0]["accept"] = True
    review.write_text(yaml.safe_dump(doc))
    done = run_cycle(cfg, RunOptions())
    assert done["status"] == "done" and done["stop_reason"] == "max_cycles"
    assert done["accepted_prefixes"] == [{"domain": domain, "path_prefix": "/questions/", "cycle": 1}]
    exp = pq.read_table(w / "cycle-001" / "expansion.parquet")
    assert exp.num_rows == 200 and pc.all(pc.starts_with(exp.column("url"), f"https://{domain}/questions/")).as_py()
    assert set(yaml.safe_load((w / "score.yaml").read_text())["recall_score"]["source_models"]) == {"web", "code"}
    # extending a finished run: only `cycles` changes, so it resumes; cycle 2 proposes
    # nothing new (its /questions/ is accepted already), so the loop ends there
    more = run_cycle(CycleConfig.from_mapping({**cfg.to_dict(), "cycles": 3}), RunOptions())
    assert (more["status"], more["stop_reason"]) == ("done", "no_new_seed")
    assert yaml.safe_load((w / "cycle-002" / "candidates.yaml").read_text())["reviewed_by"] == "no candidates"


def test_other_options_on_an_existing_workdir_are_refused(auto_run: tuple[Path, dict]) -> None:
    w, _ = auto_run
    seed, pool = auto_run_inputs(w)
    with pytest.raises(ConfigError, match="holds a recall cycle run with other inputs or options \\(changed: "
                                          "threshold\\)"):
        run_cycle(_cfg(seed, pool, w, threshold=0.6), RunOptions())


def test_bad_seed_is_rejected(tmp_path: Path, planted: tuple[Path, Path, str]) -> None:
    _, pool, _ = planted
    seed = write_jsonl(tmp_path / "seed.jsonl", [{"id": "a", "text": "x", "label": "non_math"}])
    with pytest.raises(InputError, match="the seed holds no math documents"):
        run_cycle(_cfg(seed, pool, tmp_path / "W"), RunOptions())
