"""The extract stage on the runner: kept + removed = pages in, columns, reasons, filters, resume, bad input."""

from __future__ import annotations

import gzip
import json
import os
import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from corpus import schema
from corpus.errors import ShardError
from corpus.extract.stage import OUT_SCHEMA, ExtractConfig, ExtractStage
from corpus.runner import RunOptions, run_stage
from corpus.shards import read_table


def _run(inputs: list[str], out: Path, opts: RunOptions | None = None, **cfg: object) -> dict:
    return run_stage(ExtractStage(ExtractConfig.from_mapping(dict(cfg))), inputs, str(out), opts or RunOptions())


def _removed(out: Path) -> list[dict]:
    d = out / "_removed"
    return pq.read_table(d).to_pylist() if d.is_dir() and any(d.iterdir()) else []


@pytest.fixture(scope="module")
def demo_run(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("demo") / "out"
    return out, _run([str(repo_root / "demo" / "warc" / "demo.warc.gz")], out, RunOptions(workers=1))


def test_demo_crawl_pages_in_equal_kept_plus_removed(demo_run: tuple[Path, dict]) -> None:
    out, s = demo_run
    # 164 responses: 163 HTML pages are documents, the PNG is only counted
    assert s["docs_in"] == 163 and s["kept"] == 121 and s["removed"] == 42
    assert s["removed_by_reason"] == {"extract:http_status": 2, "extract:no_math": 40}
    c = s["counters"]
    assert (c["warc_records.response"], c["warc_records.request"], c["warc_records.metadata"],
            c["warc_records.warcinfo"], c["warc_records.response_not_html"]) == (164, 12, 12, 1, 1)
    assert c["math.wikipedia"] == 34 and c["math.mathml"] > 100 and c["math.mathjax2"] > 100
    kept = pq.read_table(out)
    assert kept.schema.names == OUT_SCHEMA.names
    rows = kept.to_pylist()
    removed = _removed(out)
    assert len({r["id"] for r in rows} | {r["id"] for r in removed}) == 163
    assert all(re.fullmatch(r"<urn:uuid:[0-9a-f-]{36}>", r["id"]) for r in rows)
    assert {r["domain"] for r in rows} == {"mathoverflow.net", "physics.stackexchange.com", "en.wikipedia.org"}
    assert {r["source"] for r in rows} == {"web"} and {r["lang"] for r in rows} == {"en"}
    meta = json.loads(next(r["metadata"] for r in rows if r["domain"] == "en.wikipedia.org"))
    assert meta["title"] == "t-distributed stochastic neighbor embedding - Wikipedia"
    assert meta["warc_date"] == "2024-11-28T12:00:00Z" and meta["http_status"] == 200
    assert meta["content_type"] == "text/html; charset=utf-8" and meta["encoding"] == "utf-8"
    assert meta["math"] == {"wikipedia": 34} and meta["formulas"] == 34 and 0.5 < meta["lang_score"] <= 1
    assert {r["removal_reason"] for r in removed} == {"extract:no_math", "extract:http_status"}
    assert all(r["removal_stage"] == "extract" for r in removed)


def test_html_folder_ids_urls_and_keep_nonmath(shared_data: Path, tmp_path: Path) -> None:
    fixtures = shared_data / "web" / "defuddle_math" / "fixtures"
    s = _run([str(fixtures), str(shared_data / "web" / "warc" / "warcfile.warc.gz")], tmp_path / "o",
             keep_nonmath=True)
    assert s["docs_in"] == 13 + 16 and s["kept"] + s["removed"] == 29
    assert "extract:no_math" not in s["removed_by_reason"]
    rows = {r["id"]: r for r in read_table([str(tmp_path / "o")]).to_pylist()}
    katex = rows["math--katex"]
    assert katex["url"] == "https://www.intmath.com/cg5/katex-mathjax-comparison.php"  # <link rel=canonical>
    assert katex["domain"] == "intmath.com"
    assert rows["math--raw-latex"]["url"] is None and rows["math--raw-latex"]["domain"] is None
    assert json.loads(rows["math--temml"]["metadata"])["math"]["data_tex"] >= 1


def test_lang_filter(shared_data: Path, tmp_path: Path) -> None:
    s = _run([str(shared_data / "web" / "warc" / "warcfile.warc.gz")], tmp_path / "o", keep_nonmath=True,
             langs="en")
    kept = read_table([str(tmp_path / "o")]).to_pylist()
    removed = _removed(tmp_path / "o")
    lang_removed = [r for r in removed if r["removal_reason"] == "extract:lang"]
    assert kept and lang_removed and s["kept"] + s["removed"] == 16
    assert {r["lang"] for r in kept} == {"en"}
    assert "en" not in {r["lang"] for r in lang_removed} and "zh" in {r["lang"] for r in lang_removed}
    assert all(r["text"] for r in lang_removed)  # the text is kept for inspection


def test_resume_after_a_killed_task_gives_the_same_output(repo_root: Path, tmp_path: Path) -> None:
    warcs = []
    raw = gzip.decompress((repo_root / "demo" / "warc" / "demo.warc.gz").read_bytes())
    recs = raw.split(b"WARC/1.0\r\n")
    for k in range(3):  # three WARC files with disjoint records
        part = b"".join(b"WARC/1.0\r\n" + r for r in recs[1 + k * 40: 1 + (k + 1) * 40])
        p = tmp_path / f"part-{k}.warc"
        p.write_bytes(part)
        warcs.append(str(p))
    out = tmp_path / "out"
    first = _run(warcs, out)
    full = sorted(read_table([str(out)]).column("id").to_pylist())
    # task 1 killed: its shards, its completion marker and the run summary gone, a half-written file left
    for f in list(out.glob("extract-00001-*.parquet")) + list((out / "_removed").glob("extract-00001-*")):
        f.unlink()
    os.unlink(out / "_logs" / "map" / "completions" / "00001")
    os.unlink(out / "_run" / "summary.json")
    (out / "extract-00001-00000.parquet.tmp").write_bytes(b"garbage")
    again = _run(warcs, out)
    assert sorted(read_table([str(out)]).column("id").to_pylist()) == full
    assert (again["docs_in"], again["kept"], again["removed"]) == (first["docs_in"], first["kept"], first["removed"])
    assert again["docs_in"] == again["kept"] + again["removed"] > 0


def test_cut_warc_with_skip_bad_files_keeps_records_before_the_cut(shared_data: Path, tmp_path: Path) -> None:
    raw = gzip.decompress((shared_data / "web" / "warc" / "warcfile.warc.gz").read_bytes())
    starts = [m.start() for m in re.finditer(b"WARC-Type: response", raw)]
    cut = tmp_path / "cut.warc"
    cut.write_bytes(raw[: starts[9] + 3000])
    clipped = str(shared_data / "web" / "warc" / "clipped.warc.gz")
    s = _run([str(cut), clipped], tmp_path / "o", RunOptions(skip_bad_files=True), keep_nonmath=True)
    assert s["docs_in"] == 9 and s["kept"] + s["removed"] == 9
    assert [b["path"] for b in s["bad_files"]] == [str(cut), clipped]
    assert "cut off in WARC record 30" in s["bad_files"][0]["error"]
    with pytest.raises(ShardError, match=r"cut\.warc: the file is cut off in WARC record 30 "):
        _run([str(cut)], tmp_path / "o2", keep_nonmath=True)


def test_bad_pages_are_counted_never_crash(tmp_path: Path) -> None:
    site = tmp_path / "site"
    site.mkdir()
    (site / "huge.html").write_bytes(b"<html><body><p>$x^2$</p>" + b"<p>filler text</p>" * (50 << 16)
                                     + b"</body></html>")  # ~57 MB
    assert (site / "huge.html").stat().st_size > 50 << 20
    (site / "image.html").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 8)
    (site / "broken.html").write_bytes(b"<html><body><p>\\(x\\) caf\xe9 \xff\xfe na\xefve</p></body></html>")
    (site / "nobody.html").write_bytes(b"<html><head><title>x</title><script src='mathjax.js'></script></head></html>")
    (site / "empty.html").write_bytes(b"")
    s = _run([str(site)], tmp_path / "o")
    assert s["docs_in"] == 5 and s["kept"] == 1
    assert s["removed_by_reason"] == {"extract:empty": 1, "extract:no_math": 1, "extract:not_html": 1,
                                      "extract:too_large": 1}
    reasons = {r["id"]: r["removal_reason"] for r in _removed(tmp_path / "o")}
    assert reasons == {"huge": "extract:too_large", "image": "extract:not_html", "nobody": "extract:empty",
                       "empty": "extract:no_math"}
    kept = read_table([str(tmp_path / "o")]).to_pylist()
    assert kept[0]["id"] == "broken" and "$x$" in kept[0]["text"]


def test_parquet_html_column(tmp_path: Path) -> None:
    pq.write_table(pa.table({"page_id": ["a", "b"], "raw_html": [
        "<html><body><p>Let $x^2 = 4$, so $x = 2$ or $x = -2$.</p></body></html>",
        "<html><body><p>The weather is fine.</p></body></html>"],
        "link": ["https://example.org/a", "https://example.org/b"]}), tmp_path / "pages.parquet")
    s = _run([str(tmp_path / "pages.parquet")], tmp_path / "o", input_format="parquet", html_column="raw_html",
             url_column="link")
    assert (s["docs_in"], s["kept"], s["removed_by_reason"]) == (2, 1, {"extract:no_math": 1})
    row = read_table([str(tmp_path / "o")]).to_pylist()[0]
    assert row["id"] == "pages:0" and row["url"] == "https://example.org/a" and row["domain"] == "example.org"
    assert row["text"] == "Let $x^2 = 4$, so $x = 2$ or $x = -2$."
    assert row[schema.SOURCE] == "web"


def test_demo_pipeline_starts_from_the_warc(repo_root: Path) -> None:
    from corpus.pipeline import load_pipeline

    pipe = load_pipeline(str(repo_root / "demo" / "pipeline.yaml"), workdir="/tmp/x")
    shard_steps = [s for s in pipe.steps if s.kind == "stage"]
    first = shard_steps[0]
    assert first.stage_name == "extract" and first.inputs == ["demo/warc/demo.warc.gz"]
    recall = next(s for s in shard_steps if s.stage_name == "recall-score")
    assert recall.inputs == [first.output, "demo/sample/", "demo/planted/"]


def test_demo_warc_is_what_its_builder_makes(repo_root: Path, tmp_path: Path) -> None:
    """The committed demo WARC holds what demo/build_warc.py makes: same records, same pages.

    MathML pages are compared by their TeX annotations, so a newer latex2mathml (different but
    equivalent MathML) does not fail this; every other payload must be byte-identical.
    """
    import importlib.util
    from collections import Counter

    from corpus.extract.reader import iter_warc

    spec = importlib.util.spec_from_file_location("build_warc", repo_root / "demo" / "build_warc.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    (tmp_path / "built.warc.gz").write_bytes(mod.build())
    ann = re.compile(rb'<annotation encoding="application/x-tex">(.*?)</annotation>', re.S)

    def pages(path: Path) -> list[tuple[str, str, bytes | list[bytes]]]:
        return [(r["id"], r["url"], ann.findall(r["html"]) if b"<semantics>" in r["html"] else r["html"])
                for b in iter_warc(str(path), 500, Counter()) for r in b.to_pylist()]

    assert pages(tmp_path / "built.warc.gz") == pages(repo_root / "demo" / "warc" / "demo.warc.gz")
