"""Build the bundled sample corpus (demo/sample/) from ../shared/data/corpus_samples.

Only permissively licensed records are kept (MIT, Apache-2.0, BSD, CC BY, CC BY-SA), and each
record carries ``meta.license`` and its origin (repo, path, commit). Everything is
deterministic (a fixed seed), so rerunning gives byte-identical files.

Run from the repo root: ``python demo/build_sample.py``. See demo/sample/NOTICE.md.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "shared" / "data" / "corpus_samples"
OUT = Path(__file__).resolve().parent / "sample"
SEED = 20241128

# (file, predicate on record, license to record when meta lacks one, schema source, cap)
STACKMATHQA_LICENSE = "CC-BY-SA-4.0 (StackExchange content; StackMathQA repo CC BY 4.0)"
WIKITEXT_LICENSE = "CC-BY-SA-3.0 (Wikipedia text via WikiText-2)"
DOLMA_LICENSE = "ODC-BY (Common Crawl docs in Dolma's test data; repo Apache-2.0)"


def _read(name: str) -> list[dict]:
    with gzip.open(SRC / name, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _doc(r: dict, source: str, license_: str | None = None, **extra: object) -> dict:
    meta = dict(r.get("meta") or {})
    if license_ and not meta.get("license"):
        meta["license"] = license_
    meta.update(extra)
    doc = {"id": r["id"], "text": r["text"], "source": source, "lang": r.get("lang") or "en",
           "label": r["label"], "url": meta.get("url"), "meta": meta}
    return doc


def _wikitext_sections(r: dict) -> list[dict]:
    """Split a WikiText article at its ' = = Heading = = ' lines: more, shorter real docs."""
    parts = re.split(r"\n \n (?== = [^=])", r["text"])
    out = []
    for i, p in enumerate(parts):
        if len(p) >= 400:
            out.append(_doc({**r, "id": f"{r['id']}-sec{i}", "text": p}, "web", WIKITEXT_LICENSE, section=i))
    return out


def build() -> list[dict]:
    rng = random.Random(SEED)
    docs: list[dict] = []
    mp = _read("math_positive.jsonl.gz")
    smqa = [r for r in mp if r["source"] == "stackmathqa"]
    docs += [_doc(r, "web", STACKMATHQA_LICENSE) for r in rng.sample(smqa, 500)]
    docs += [_doc(r, "book") for r in mp if r["source"] == "hott_book"]  # CC-BY-SA-3.0
    docs += [_doc(r, "code") for r in mp if r["source"] == "mathematics_in_lean"]  # Apache-2.0
    wp = _read("en_math_word_problems.jsonl.gz")
    aqua = [r for r in wp if r["meta"]["license"] == "Apache-2.0"]
    mit = [r for r in wp if r["meta"]["license"].startswith("MIT")]
    docs += [_doc(r, "qa") for r in rng.sample(aqua, 200)]
    docs += [_doc(r, "qa") for r in rng.sample(mit, 400)]
    zh = _read("zh_math_positive.jsonl.gz")
    ape = [r for r in zh if r["meta"]["license"].startswith("MIT")]
    docs += [_doc(r, "qa") for r in rng.sample(ape, 600)]
    neg = _read("non_math_negative.jsonl.gz")
    for r in neg:
        if r["source"] == "wikitext2":
            docs += _wikitext_sections(r)
        elif r["source"] == "dolma_cc_en_head":
            docs.append(_doc(r, "web", DOLMA_LICENSE))
    docs.sort(key=lambda d: d["id"])
    # Mirrors: real corpora hold re-hosted copies. A few exact and lightly edited copies of
    # real sample docs (marked meta.mirror_of) give the dedup demo something true to find.
    mirrors = []
    for i, d in enumerate(rng.sample([d for d in docs if d["lang"] == "en" and len(d["text"]) > 300], 60)):
        text = d["text"] if i % 2 == 0 else d["text"] + "\n\nMirrored for offline reading."
        mirrors.append({**d, "id": f"mirror-{i:03d}-{d['id']}", "url": None,
                        "meta": {**d["meta"], "mirror_of": d["id"], "mirror_kind": "exact" if i % 2 == 0 else "near"}})
    docs += mirrors
    return docs


def main() -> int:
    if not SRC.is_dir():
        print(f"error: {SRC} not found; this script needs ../shared/data beside the repo", file=sys.stderr)
        return 1
    docs = build()
    for d in docs:
        lic = d["meta"].get("license", "")
        if not re.match(r"^(MIT|Apache-2\.0|BSD|CC-BY|CC BY|ODC-BY)", lic) or "NC" in lic:
            raise SystemExit(f"refusing non-permissive record {d['id']}: {lic!r}")
    OUT.mkdir(exist_ok=True)
    # Two shards, split deterministically, so the demo exercises multi-file, multi-task runs.
    shards: list[list[dict]] = [[], []]
    for i, d in enumerate(docs):
        shards[i % 2].append(d)
    for n, rows in enumerate(shards):
        path = OUT / f"sample-{n:02d}.jsonl.gz"
        with gzip.GzipFile(path, "wb", mtime=0) as gz:
            for d in rows:
                gz.write((json.dumps(d, ensure_ascii=False, sort_keys=True) + "\n").encode("utf-8"))
    by: dict[tuple, int] = {}
    for d in docs:
        k = (d["source"], d["lang"], d["label"])
        by[k] = by.get(k, 0) + 1
    for k, v in sorted(by.items()):
        print(v, *k)
    print(len(docs), "docs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
