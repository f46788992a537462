"""The dedup stages end to end: planted duplicates across shards and tasks, the keep rule,
determinism across worker counts, resuming after a kill, and the CLI."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from corpus import schema
from corpus.cli import main
from corpus.dedup.exact import ExactDedupConfig, ExactDedupStage
from corpus.dedup.minhash import MinhashDedupConfig, MinhashDedupStage
from corpus.runner import RunOptions, run_stage
from corpus.shards import iter_batches, read_table
from tests.conftest import REPO, write_jsonl

N_FILES = 4


def _sample(shared: Path, name: str, n: int, min_chars: int = 0, max_chars: int = 10**9) -> list[dict[str, Any]]:
    out = []
    for batch in iter_batches(str(shared / "corpus_samples" / name), batch_rows=2048):
        for r in batch.select(["id", "text"]).to_pylist():
            if min_chars <= len(r["text"]) <= max_chars:
                out.append(r)
                if len(out) == n:
                    return out
    return out


def _change_one_word(text: str, word: str) -> str:
    words = text.split(" ")
    words[len(words) // 2] = word
    return " ".join(words)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, Any]:
    """Real docs in 4 shards, with planted copies always in a different shard than their original."""
    rnd = random.Random(7)
    long_en = _sample(shared_data, "math_positive.jsonl.gz", 24, 2500, 6000)
    short_en = _sample(shared_data, "en_math_word_problems.jsonl.gz", 120)
    zh = _sample(shared_data, "zh_math_positive.jsonl.gz", 60)
    zh_long = _sample(shared_data, "zh_math_positive.jsonl.gz", 6, 700, 3000)
    base = long_en + short_en + zh + zh_long
    for r in base:
        r["math_score"] = round(rnd.uniform(0.1, 0.6), 3)
    shards: list[list[dict[str, Any]]] = [[] for _ in range(N_FILES)]
    home = {}
    for i, r in enumerate(base):
        shards[i % N_FILES].append(r)
        home[r["id"]] = i % N_FILES
    expect: dict[str, dict[str, str]] = {"exact": {}, "minhash": {}}  # removed id -> kept id

    def plant(row: dict[str, Any], src: dict[str, Any]) -> None:
        shards[(home[src["id"]] + 1 + len(row["id"]) % 3) % N_FILES].append(row)

    # exact copies (case and whitespace only) of short English and Chinese problems
    for k, src in enumerate(short_en[:10] + zh[:5]):
        copy = {"id": f"exact-{k}", "text": "  " + src["text"].upper().replace(" ", "\n "), "math_score": 0.9}
        plant(copy, src)
        expect["exact"][src["id"]] = copy["id"]  # the copy has the higher score: the original goes
    # a triple with equal scores and lengths: the smallest id is kept
    src = short_en[10]
    for k in range(2):
        plant({"id": f"exact-tie-{k}", "text": src["text"], "math_score": src["math_score"]}, src)
    triple = sorted([src["id"], "exact-tie-0", "exact-tie-1"])
    expect["exact"].update({t: triple[0] for t in triple[1:]})
    # equal scores, different lengths after normalization-neutral padding: the longest is kept
    src = short_en[11]
    plant({"id": "exact-long", "text": src["text"] + "   \n", "math_score": src["math_score"]}, src)
    expect["exact"][src["id"]] = "exact-long"
    # near copies: one word changed in long English and Chinese docs, a LaTeX-only change in one
    for k, src in enumerate(long_en[:8]):
        plant({"id": f"near-{k}", "text": _change_one_word(src["text"], "banana"), "math_score": 0.05}, src)
        expect["minhash"][f"near-{k}"] = src["id"]
    for k, src in enumerate(zh_long[:3]):
        t = src["text"]
        plant({"id": f"near-zh-{k}", "text": t[: len(t) // 2] + "香蕉" + t[len(t) // 2 + 2:], "math_score": 0.95}, src)
        expect["minhash"][src["id"]] = f"near-zh-{k}"
    src = long_en[8]
    plant({"id": "near-latex", "text": src["text"].replace("(", "\\left(").replace(")", "\\right)") + " \\quad",
           "math_score": None}, src)
    expect["minhash"]["near-latex"] = src["id"]
    # different problems from one template: must all survive both stages
    templates = []
    for k in range(30):
        v, t = 40 + 7 * k, 2 + k % 5
        templates.append({"id": f"tmpl-{k}", "math_score": 0.5,
                          "text": f"A train travels at {v} km/h for {t} hours. How far does it travel? "
                                  f"Answer: {v * t} km."})
    for k in range(20):
        a, b = 3 + k, 11 + 2 * k
        templates.append({"id": f"tmpl-zh-{k}", "math_score": 0.5, "text": f"小明有{a}个苹果，又买了{b}个，一共有几个？答：{a + b}个。"})
    for i, r in enumerate(templates):
        shards[i % N_FILES].append(r)
    d = tmp_path_factory.mktemp("dedup") / "in"
    for i, rows in enumerate(shards):
        write_jsonl(d / f"part-{i}.jsonl", rows)
    return {"dir": d, "expect": expect, "templates": [r["id"] for r in templates],
            "n": sum(len(s) for s in shards)}


def _table(folder: Path) -> pa.Table:
    files = sorted(p for p in folder.glob("*.parquet"))
    return pa.concat_tables([pq.read_table(p) for p in files], promote_options="permissive")


def _removed_map(out: Path) -> dict[str, str]:
    t = read_table([str(out / "_removed")])
    return dict(zip(t.column("id").to_pylist(), t.column(schema.DEDUP_KEPT_ID).to_pylist()))


def test_planted_exact_copies_across_shards_are_found(corpus_dir: dict[str, Any], tmp_path: Path) -> None:
    out = tmp_path / "exact"
    s = run_stage(ExactDedupStage(ExactDedupConfig()), [str(corpus_dir["dir"])], str(out), RunOptions())
    assert s["tasks"] == N_FILES and s["docs_in"] == corpus_dir["n"]
    assert s["kept"] + s["removed"] == s["docs_in"]
    assert _removed_map(out) == corpus_dir["expect"]["exact"]
    assert s["removed_by_reason"] == {"dedup:exact": len(corpus_dir["expect"]["exact"])}
    removed = read_table([str(out / "_removed")])
    kept = read_table([str(out)])
    # a removed doc and its kept doc share the cluster id; kept cluster members point at themselves
    kept_cluster = {i: c for i, c in zip(kept.column("id").to_pylist(), kept.column(schema.DEDUP_CLUSTER).to_pylist())}
    for rid, cl, kid in zip(removed.column("id").to_pylist(), removed.column(schema.DEDUP_CLUSTER).to_pylist(),
                            removed.column(schema.DEDUP_KEPT_ID).to_pylist()):
        assert cl.startswith("ex-") and kept_cluster[kid] == cl, rid
    kept_rows = kept.filter(pa.compute.is_valid(kept.column(schema.DEDUP_CLUSTER)))
    assert kept_rows.column("id").to_pylist() == kept_rows.column(schema.DEDUP_KEPT_ID).to_pylist()
    assert kept_rows.num_rows == len(set(corpus_dir["expect"]["exact"].values()))
    assert set(removed.column(schema.REMOVAL_STAGE).to_pylist()) == {"dedup-exact"}
    assert not (out / "_work").exists()
    assert json.loads((out / "_run" / "dedup.json").read_text())["removed"] == s["removed"]


def test_planted_near_copies_across_shards_are_found(corpus_dir: dict[str, Any], tmp_path: Path) -> None:
    exact = tmp_path / "exact"
    run_stage(ExactDedupStage(ExactDedupConfig()), [str(corpus_dir["dir"])], str(exact), RunOptions())
    out = tmp_path / "mh"
    s = run_stage(MinhashDedupStage(MinhashDedupConfig()), [str(exact)], str(out), RunOptions())
    assert _removed_map(out) == corpus_dir["expect"]["minhash"]
    assert s["dedup"]["bands"] == 9 and s["dedup"]["rows"] == 12
    kept_ids = set(read_table([str(out)]).column("id").to_pylist())
    assert set(corpus_dir["templates"]) <= kept_ids  # template problems differ in their numbers
    # exact dedup's cluster ids survive on the documents minhash does not touch
    kept = read_table([str(out)])
    clusters = [c for c in kept.column(schema.DEDUP_CLUSTER).to_pylist() if c]
    assert any(c.startswith("ex-") for c in clusters) and any(c.startswith("mh-") for c in clusters)


def test_template_problems_are_not_merged(corpus_dir: dict[str, Any], tmp_path: Path) -> None:
    rows = [r for r in read_table([str(corpus_dir["dir"])]).to_pylist() if r["id"].startswith("tmpl")]
    write_jsonl(tmp_path / "t.jsonl", rows)
    inp = [str(tmp_path / "t.jsonl")]
    s = run_stage(MinhashDedupStage(MinhashDedupConfig()), inp, str(tmp_path / "default"))
    assert s["removed"] == 0 and s["kept"] == 50
    s = run_stage(ExactDedupStage(ExactDedupConfig(normalize="text")), inp, str(tmp_path / "ex"))
    assert s["removed"] == 0
    # at threshold 0.5 LSH makes candidates of problems that share only the template (true
    # Jaccard about 1/3); checking them on the whole signature keeps them apart
    s = run_stage(MinhashDedupStage(MinhashDedupConfig(threshold=0.5)), inp, str(tmp_path / "low"))
    assert s["removed"] == 0 and s["dedup"]["candidate_pairs"] > 0 and s["dedup"]["pairs"] == 0
    s = run_stage(MinhashDedupStage(MinhashDedupConfig(threshold=0.5, verify=False)), inp, str(tmp_path / "nv"))
    assert s["removed"] > 0


@pytest.mark.slow
def test_same_output_with_1_and_4_workers(corpus_dir: dict[str, Any], tmp_path: Path) -> None:
    for stage in (MinhashDedupStage(MinhashDedupConfig()), ExactDedupStage(ExactDedupConfig(partitions=3))):
        outs = []
        for w in (1, 4):
            out = tmp_path / f"{stage.name}-{w}"
            run_stage(stage, [str(corpus_dir["dir"])], str(out), RunOptions(workers=w))
            outs.append(out)
        a, b = outs
        assert sorted(p.name for p in a.glob("*.parquet")) == sorted(p.name for p in b.glob("*.parquet"))
        assert _table(a).equals(_table(b))
        assert _table(a / "_removed").equals(_table(b / "_removed"))
        assert _table(a / "_removed").num_rows > 0


def test_window_and_partition_settings_do_not_change_the_result(corpus_dir: dict[str, Any], tmp_path: Path) -> None:
    inp = [str(corpus_dir["dir"])]
    run_stage(MinhashDedupStage(MinhashDedupConfig()), inp, str(tmp_path / "a"))
    run_stage(MinhashDedupStage(MinhashDedupConfig(window_rows=7, buffer_mb=1)), inp, str(tmp_path / "b"),
              RunOptions(batch_rows=16))
    assert _removed_map(tmp_path / "a") == _removed_map(tmp_path / "b")
    run_stage(ExactDedupStage(ExactDedupConfig(partitions=1)), inp, str(tmp_path / "c"))
    run_stage(ExactDedupStage(ExactDedupConfig(partitions=16)), inp, str(tmp_path / "d"))
    assert _table(tmp_path / "c").equals(_table(tmp_path / "d"))
    assert _table(tmp_path / "c" / "_removed").equals(_table(tmp_path / "d" / "_removed"))


def test_resume_after_lost_global_step_and_map_outputs(corpus_dir: dict[str, Any], tmp_path: Path) -> None:
    inp = [str(corpus_dir["dir"])]
    ref = tmp_path / "ref"
    run_stage(MinhashDedupStage(MinhashDedupConfig()), inp, str(ref))
    out = tmp_path / "out"
    stage = MinhashDedupStage(MinhashDedupConfig(keep_work=True))
    run_stage(stage, inp, str(out))
    # as if killed: the cluster result and one band's pairs are gone, a signature run was
    # half written, map task 2 died after writing its shard, and the run never finished
    work = out / "_work" / "dedup-minhash"
    (work / "clusters" / "000.parquet").unlink()
    (work / "dups" / "00003.dups").unlink()
    (work / "sigs" / "bucket_000" / "00001-000.minhash.sig").write_bytes(b"\0" * 7)
    for phase, rank in (("clusters", 0), ("buckets", 3), ("signatures", 1), ("map", 2)):
        os.unlink(out / "_logs" / phase / "completions" / f"{rank:05d}")
    (out / "_run" / "summary.json").unlink()
    (out / "dedup-minhash-00002-00000.parquet.tmp").write_bytes(b"garbage")
    s = run_stage(stage, inp, str(out))
    assert s["docs_in"] == corpus_dir["n"]
    assert _table(out).equals(_table(ref))
    assert _table(out / "_removed").equals(_table(ref / "_removed"))


def test_lost_work_files_of_a_finished_step_fail_clearly(corpus_dir: dict[str, Any], tmp_path: Path) -> None:
    from corpus.errors import FatalError

    out = tmp_path / "out"
    stage = ExactDedupStage(ExactDedupConfig(keep_work=True, partitions=2))
    run_stage(stage, [str(corpus_dir["dir"])], str(out))
    cluster_file = out / "_work" / "dedup-exact" / "clusters" / "001.parquet"
    cluster_file.unlink()
    os.unlink(out / "_logs" / "map" / "completions" / "00001")
    (out / "_run" / "summary.json").unlink()
    with pytest.raises(FatalError) as e:
        run_stage(stage, [str(corpus_dir["dir"])], str(out))
    assert str(e.value) == (f"{cluster_file}: the dedup cluster file is missing although the global step is marked "
                            f"done (was OUTPUT/_work deleted while the stage was incomplete?); delete {out} and run "
                            "the stage again")
    shutil.rmtree(out)
    s = run_stage(stage, [str(corpus_dir["dir"])], str(out))
    assert s["removed"] == len(corpus_dir["expect"]["exact"])


def _cli(*args: str) -> list[str]:
    return [str(REPO / ".venv" / "bin" / "mathcorpus"), *args] if (REPO / ".venv" / "bin" / "mathcorpus").exists() \
        else [sys.executable, "-c", "from corpus.cli import main; main()", *args]


@pytest.mark.parametrize("kill_after", ["signatures/completions/00001", "map/completions/00000"])
def test_rerun_after_kill_gives_the_same_output(corpus_dir: dict[str, Any], tmp_path: Path, kill_after: str) -> None:
    inp = str(corpus_dir["dir"])
    ref = tmp_path / "ref"
    run_stage(MinhashDedupStage(MinhashDedupConfig()), [inp], str(ref), RunOptions(batch_rows=64))
    out = tmp_path / "out"
    args = _cli("dedup", "minhash", inp, "-o", str(out), "--batch-rows", "64")
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    marker = out / "_logs" / kill_after
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert marker.exists() and not (out / "_run" / "summary.json").exists(), "the run was not killed mid-way"
    res = CliRunner().invoke(main, ["dedup", "minhash", inp, "-o", str(out), "--batch-rows", "64", "--json"])
    assert res.exit_code == 0, res.output
    assert _table(out).equals(_table(ref))
    assert _table(out / "_removed").equals(_table(ref / "_removed"))


def test_bad_file_with_skip_keeps_positions_aligned(corpus_dir: dict[str, Any], tmp_path: Path) -> None:
    import gzip

    inp = tmp_path / "in"
    shutil.copytree(corpus_dir["dir"], inp)
    # part-1 becomes a gzip stream cut in the middle: its first batches are read, then it fails
    data = (inp / "part-1.jsonl").read_bytes()
    (inp / "part-1.jsonl").unlink()
    gz = gzip.compress(data, mtime=0)
    (inp / "part-1.jsonl.gz").write_bytes(gz[: len(gz) * 2 // 3])
    out = tmp_path / "out"
    s = run_stage(ExactDedupStage(ExactDedupConfig()), [str(inp)], str(out),
                  RunOptions(skip_bad_files=True, batch_rows=8))
    assert len(s["bad_files"]) == 1 and s["kept"] + s["removed"] == s["docs_in"] < corpus_dir["n"]
    removed = _removed_map(out)
    kept = set(read_table([str(out)]).column("id").to_pylist())
    # every removed doc points at a doc that was kept: positions never slipped
    assert removed and all(k in kept for k in removed.values())


def test_cli_exact_and_minhash_json_and_help(corpus_dir: dict[str, Any], tmp_path: Path) -> None:
    runner = CliRunner()
    res = runner.invoke(main, ["dedup", "minhash", "--help"])
    assert res.exit_code == 0
    assert "9 x 12" in res.output and "P(pair becomes a candidate)" in res.output and "Example:" in res.output
    res = runner.invoke(main, ["dedup", "exact", "--help"])
    assert res.exit_code == 0 and "Example:" in res.output and "--normalize [light|text|none]" in res.output
    res = runner.invoke(main, ["dedup", "exact", str(corpus_dir["dir"]), "-o", str(tmp_path / "e"), "--json"])
    assert res.exit_code == 0, res.output
    s = json.loads(res.output)
    assert s["removed_by_reason"] == {"dedup:exact": len(corpus_dir["expect"]["exact"])}
    res = runner.invoke(main, ["dedup", "minhash", str(tmp_path / "e"), "-o", str(tmp_path / "m"), "--threshold",
                               "0.85", "--ngram", "4", "--num-perm", "96"])
    assert res.exit_code == 0, res.output
    assert "dedup-minhash:" in res.output and "bands x" in res.output
    cfg = json.loads((tmp_path / "m" / "_run" / "config.json").read_text())["fingerprint"]["stage_config"]
    assert (cfg["threshold"], cfg["ngram"], cfg["num_perm"]) == (0.85, 4, 96)


def test_cli_config_file_and_errors(corpus_dir: dict[str, Any], tmp_path: Path) -> None:
    runner = CliRunner()
    (tmp_path / "c.yaml").write_text("threshold: 0.7\nkeep: longest\n")
    res = runner.invoke(main, ["dedup", "minhash", str(corpus_dir["dir"]), "-o", str(tmp_path / "m"), "--config",
                               str(tmp_path / "c.yaml"), "--threshold", "0.9", "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.output)["dedup"]
    assert (d["threshold"], d["keep"], d["bands"], d["rows"]) == (0.9, "longest", 5, 22)
    (tmp_path / "s.toml").write_text('[executor]\nbatch_rows = 32\n\n[dedup-exact]\nnormalize = "none"\n')
    res = runner.invoke(main, ["dedup", "exact", str(corpus_dir["dir"]), "-o", str(tmp_path / "e"), "--config",
                               str(tmp_path / "s.toml")])
    assert res.exit_code == 0, res.output
    run_cfg = json.loads((tmp_path / "e" / "_run" / "config.json").read_text())
    assert run_cfg["executor"]["batch_rows"] == 32 and run_cfg["fingerprint"]["stage_config"]["normalize"] == "none"
    (tmp_path / "bad.yaml").write_text("treshold: 0.7\n")
    res = runner.invoke(main, ["dedup", "minhash", str(corpus_dir["dir"]), "-o", str(tmp_path / "x"), "--config",
                               str(tmp_path / "bad.yaml")])
    assert res.exit_code == 2
    assert "unknown key 'treshold' for dedup-minhash; did you mean 'threshold'?" in res.output
    res = runner.invoke(main, ["dedup", "minhash", str(corpus_dir["dir"]), "-o", str(tmp_path / "y"), "--bands", "4"])
    assert res.exit_code == 2
    assert res.output.strip() == ("Error: dedup-minhash: set both bands and rows (got bands=4, rows=0), or neither "
                                  "to choose them from the threshold")
    res = runner.invoke(main, ["dedup", "exact", str(corpus_dir["dir"]), "-o", str(tmp_path / "z"), "--keep", "best"])
    assert res.exit_code == 2 and "'best' is not one of 'score', 'longest', 'first'" in res.output
