"""Build demo/planted/: real sample pages that quote real benchmark items, for the decontam demo.

A realistic contamination case: a forum page or a worksheet that reproduces a GSM8K, MATH or
CMATH test item. Each planted record is a real, permissively licensed StackMathQA (CC BY-SA) or
Ape210K (MIT) record from ../shared/data/corpus_samples that is not in the bundled sample, with one
real benchmark item inserted, and says so in ``meta.planted`` (benchmark:item_id).
These records only feed the pipeline's *input*; the recall model is trained on demo/sample alone,
so no benchmark item is ever training data.

Run from the repo root: ``python demo/build_planted.py``.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "decontam" / "data" / "benchmarks"
OUT = REPO / "demo" / "planted" / "planted.jsonl"

# (benchmark, 0-based line id, fields to quote); fixed choices keep the file reproducible.
PLANTS = [("gsm8k", 3, ("question", "answer")), ("gsm8k", 41, ("question",)), ("gsm8k", 1000, ("question",)),
          ("math", 7, ("problem", "solution")), ("math", 2500, ("problem",)), ("cmath", 12, ("question",)),
          ("cmath", 300, ("question",))]


STACKMATHQA_LICENSE = "CC-BY-SA-4.0 (StackExchange content; StackMathQA repo CC BY 4.0)"


def _host(d: dict, source: str, license_: str | None) -> dict:
    meta = dict(d.get("meta") or {})
    if license_ and not meta.get("license"):
        meta["license"] = license_
    return {**d, "source": source, "lang": d.get("lang") or "en", "url": meta.get("url"), "meta": meta}


def main() -> int:
    lines = {}
    for name in sorted({p[0] for p in PLANTS}):
        lines[name] = (BENCH / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()
    # Hosts are real StackMathQA / Ape210K records that are NOT in the bundled sample, so a
    # planted page is not a near-duplicate of a sample page (dedup would remove one of them).
    in_sample = set()
    for shard in sorted((REPO / "demo" / "sample").glob("*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            in_sample |= {json.loads(line)["id"] for line in fh}
    src = REPO.parent / "shared" / "data" / "corpus_samples"
    with gzip.open(src / "math_positive.jsonl.gz", "rt", encoding="utf-8") as fh:
        hosts = [_host(d, "web", STACKMATHQA_LICENSE) for d in map(json.loads, fh)
                 if d["source"] == "stackmathqa" and d["id"] not in in_sample][:5]
    with gzip.open(src / "zh_math_positive.jsonl.gz", "rt", encoding="utf-8") as fh:
        zh_hosts = [_host(d, "qa", None) for d in map(json.loads, fh)
                    if d["meta"].get("license", "").startswith("MIT") and d["id"] not in in_sample][:2]
    rows = []
    en_i = 0
    for k, (name, item_id, fields) in enumerate(PLANTS):
        item = json.loads(lines[name][item_id])
        quoted = "\n\n".join(str(item[f]) for f in fields)
        if name == "cmath":
            host = zh_hosts[k % 2]
            text = f"{host['text']}\n\n练习：{quoted}"
        else:
            host = hosts[en_i % len(hosts)]
            en_i += 1
            text = f"{host['text']}\n\nA similar problem I saw elsewhere:\n\n{quoted}\n\nAny hints?"
        rows.append({"id": f"planted-{k:02d}-{name}-{item_id}", "text": text, "source": host["source"],
                     "lang": host["lang"], "label": "math", "url": host.get("url"),
                     "meta": {**host["meta"], "planted": f"{name}:{item_id}", "host_id": host["id"]}})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("".join(json.dumps(r, ensure_ascii=False, sort_keys=True) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} planted records -> {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
