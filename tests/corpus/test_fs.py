"""corpus/fs.py: path handling, atomic writes on a local disk and on a real S3 API (moto server),
and the one-line error for a missing backend."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from corpus import fs as cfs
from corpus.errors import FatalError
from tests.conftest import REPO
from tests.corpus.storage_servers import S3Server


def test_paths_never_turn_urls_into_local_paths() -> None:
    assert cfs.join("s3://b/out", "_run", "summary.json") == "s3://b/out/_run/summary.json"
    assert cfs.join("out", "_run") == os.path.join("out", "_run")
    assert cfs.dirname("s3://b/out/x.json") == "s3://b/out"
    assert cfs.basename("https://h/p/a.jsonl.gz") == "a.jsonl.gz"
    assert cfs.inside("s3://b/out/a.parquet", "s3://b/out/") and not cfs.inside("s3://b/outer/a", "s3://b/out")
    assert cfs.is_remote("s3://b") and cfs.is_remote("http://h/x") and not cfs.is_remote("/tmp/x")
    assert not cfs.is_remote("file.jsonl")


def test_local_atomic_writer_commits_by_rename_and_aborts_cleanly(tmp_path: Path) -> None:
    target = tmp_path / "d" / "x.bin"
    w = cfs.AtomicWriter(str(target))
    w.write(b"abc")
    assert not target.exists() and (tmp_path / "d" / "x.bin.tmp").exists()
    w.commit()
    assert target.read_bytes() == b"abc" and not (tmp_path / "d" / "x.bin.tmp").exists()
    with pytest.raises(RuntimeError), cfs.AtomicWriter(str(tmp_path / "y.bin")) as w2:
        w2.write(b"partial")
        raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_s3_object_appears_only_when_the_write_commits(s3_server: S3Server) -> None:
    base = s3_server.bucket("fs-atomic")
    url = f"{base}/big/part.bin"
    fs = s3_server.fs()
    # over 5 MiB: s3fs has started a multipart upload, yet no object exists until commit
    w = cfs.AtomicWriter(url)
    w.write(os.urandom(6 << 20))
    w.file.flush()
    assert not fs.exists(url)
    w.write(b"tail")
    w.commit()
    assert fs.size(url) == (6 << 20) + 4
    # a failed write is discarded: no object, and no multipart upload left behind
    w = cfs.AtomicWriter(f"{base}/big/failed.bin")
    w.write(os.urandom(6 << 20))
    w.file.flush()
    w.abort()
    assert not fs.exists(f"{base}/big/failed.bin")
    assert fs.call_s3("list_multipart_uploads", Bucket="fs-atomic").get("Uploads", []) == []


def test_s3_helpers_round_trip(s3_server: S3Server) -> None:
    base = s3_server.bucket("fs-helpers")
    cfs.atomic_write_json(f"{base}/run/_run/summary.json", {"docs_in": 3})
    assert cfs.read_json(f"{base}/run/_run/summary.json") == {"docs_in": 3}
    for name in ("t-00001-00000.parquet", "t-00001-00001.parquet", "t-00002-00000.parquet"):
        cfs.atomic_write_bytes(f"{base}/run/sub/{name}", b"x")
    assert cfs.listdir(f"{base}/run") == ["_run", "sub"]
    assert cfs.isdir(f"{base}/run/sub") and not cfs.is_empty_dir(f"{base}/run")
    cfs.remove_prefixed(f"{base}/run", "t-00001-", recursive=True)
    assert cfs.listdir(f"{base}/run/sub") == ["t-00002-00000.parquet"]
    with cfs.local_dir_for_writing(f"{base}/idx", last=("meta.json",)) as d:
        Path(d, "a.npy").write_bytes(b"1")
        Path(d, "meta.json").write_text("{}")
    local = cfs.local_dir(f"{base}/idx")
    assert sorted(os.listdir(local)) == ["a.npy", "meta.json"]
    cfs.rmtree(f"{base}/run")
    assert not cfs.exists(f"{base}/run/_run/summary.json") and cfs.is_empty_dir(f"{base}/run")


def test_unknown_scheme_is_one_line() -> None:
    with pytest.raises(FatalError) as e:
        cfs.url_to_fs("nosuch://bucket/x")
    assert str(e.value) == ("nosuch://bucket/x: unknown URL scheme 'nosuch://'; use a local path or an fsspec URL "
                            "such as s3://bucket/prefix or https://host/file.jsonl.gz")


def test_missing_aiohttp_names_the_extra(tmp_path: Path) -> None:
    # a fresh interpreter where aiohttp cannot be imported, as on an install without the extra
    code = ("import sys; sys.modules['aiohttp'] = None\n"
            "from corpus.cli import main\n"
            "main(['stats', 'http://127.0.0.1:9/shard.jsonl.gz'])\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    assert r.returncode == 1, r.stderr
    assert r.stderr.strip().splitlines() == [
        "Error: http://127.0.0.1:9/shard.jsonl.gz: reading or writing http:// URLs needs the 'aiohttp' package; "
        "install it with pip install 'mathcorpus[http]' (or pip install aiohttp)"]
