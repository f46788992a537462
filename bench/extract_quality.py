"""Extraction quality on every test page: formula recovery, duplicates, main text, boilerplate, dollars.

Pages: the real fixtures copied in tests/data/web (defuddle's 13 math pages, a Wikipedia article;
ground truth in tests/data/web/truth/) and the renderer-built pages in tests/data/web/built/
(KaTeX, MathJax v2/v3/v4, MathML, LaTeX images, raw TeX; ground truth next to each page).
Systems, measured on the same pages in the same run: ours (``corpus.extract.content.extract_page``),
trafilatura 2.3.1 (Markdown output), resiliparse plain text and main-content mode, magic-html
(MegaMath's HTML stage; its HTML is turned into text with lxml) when it imports.

Scoring, the same for every system:
- a truth formula is *recovered* when the output holds it as LaTeX: a ``$…$``/``$$…$$``/``\\(…\\)``/
  ``\\[…\\]`` formula whose rendered tokens (latex2mathml leaves) match ≥ 0.85 (difflib ratio), or,
  for formulas with a command/script and ≥ 4 characters, the LaTeX itself (spaces removed) as a
  substring of the output; single-symbol formulas need delimiters;
- *duplicated*: a delimited formula matching an already matched truth formula beyond its count,
  or the formula's rendered Unicode text (≥ 5 characters, not ASCII LaTeX) written next to it;
- main text *kept* / boilerplate *leaked*: normalized fragment (lowercase, letters/digits/``$``)
  found in the normalized output;
- *literal-dollar page correct*: every literal-dollar sentence is in the output written with
  ``\\$`` (an unescaped ``$5 … $10`` reads as a formula to any TeX-aware reader).

    .venv/bin/python bench/extract_quality.py [--json out.json] [--systems ours,trafilatura,...]
    # magic-html (optional): pip install --target /tmp/math/pylib --no-deps --ignore-requires-python \\
    #   magic-html py_asciimath lark lxml_html_clean tabulate ; MAGIC_HTML_PATH=/tmp/math/pylib
    # OpenWebMath (optional): its text_extraction folder from keirp/OpenWebMath in OWM_PATH
    # --negatives DIR: real pages without math (e.g. adbar/trafilatura's tests/cache) — formulas invented
"""

from __future__ import annotations

import argparse
import difflib
import functools
import json
import os
import re
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "tests" / "data" / "web"
sys.path.insert(0, str(REPO))

from corpus.extract.tex import RENDERER_DELIMITERS, find_raw_tex  # noqa: E402

MATCH = 0.85


# ---- pages --------------------------------------------------------------------------------------
def load_pages() -> list[dict]:
    pages = []
    for jf in sorted((WEB / "truth").glob("*.json")):
        truth = json.loads(jf.read_text(encoding="utf-8"))
        truth["path"] = str(WEB / truth["html"])
        pages.append(truth)
    for jf in sorted((WEB / "built").glob("*.json")):
        truth = json.loads(jf.read_text(encoding="utf-8"))
        truth["path"] = str(jf.with_suffix(".html"))
        pages.append(truth)
    return pages


# ---- formula comparison ---------------------------------------------------------------------------
_DROP_CMDS = re.compile(r"\\(displaystyle|textstyle|scriptstyle|left|right|big|Big|bigg|Bigg|bigl|bigr|Bigl|Bigr|"
                        r"biggl|biggr|middle|limits|nolimits|,|;|:|!|quad|qquad)(?![A-Za-z])|~")


_XML = None


@functools.lru_cache(maxsize=65536)
def tokens(latex: str) -> tuple[str, ...]:
    """Rendered tokens of a formula: latex2mathml's leaf texts, NFKC-normalized, spacing dropped."""
    import latex2mathml.converter
    from lxml import etree

    global _XML
    if _XML is None:
        _XML = etree.XMLParser(recover=True, resolve_entities=False, no_network=True)

    src = re.sub(r"\\(left|right|bigl|bigr|Bigl|Bigr)\.", " ", latex)  # invisible fences
    src = src.replace(r"\genfrac{}{}{0pt}{}", r"\binom")
    src = _DROP_CMDS.sub(" ", src)
    src = re.sub(r"\\[dt]frac", r"\\frac", src)
    src = re.sub(r"\\operatorname\{(\w+)\}", r"\\mathrm{\1}", src)
    src = re.sub(r"(?<!\\)&", " ", src)  # alignment points are layout, not content
    try:
        root = etree.fromstring(latex2mathml.converter.convert(src).encode(), _XML)
        leaves = [(el.text or "") for el in root.iter() if len(el) == 0 and (el.text or "").strip()]
    except Exception:  # noqa: BLE001 - latex2mathml raises many types; fall back to characters
        leaves = re.findall(r"\\[A-Za-z]+|\S", src)
    out = []
    for leaf in leaves:
        leaf = unicodedata.normalize("NFKC", leaf).strip()
        leaf = leaf.replace("\u2212", "-").replace("\u2061", "").replace("\u2062", "").replace("\u00a0", "")
        leaf = leaf.replace("\u2223", "|").replace("\u2225", "‖")  # \mid vs | render the same bar
        for ch in ([leaf] if len(leaf) > 1 and leaf.isalpha() else list(leaf)):
            if ch.strip() and ch not in "{}":
                out.append(ch)
    return tuple(out)


def similar(a: str, b: str) -> float:
    ta, tb = tokens(a), tokens(b)
    if ta == tb:
        return 1.0
    if not ta or not tb:
        return 0.0
    # multi-letter identifiers may be split or joined differently: compare characters
    ca, cb = "".join(ta), "".join(tb)
    return max(difflib.SequenceMatcher(None, ta, tb, autojunk=False).ratio(),
               difflib.SequenceMatcher(None, ca, cb, autojunk=False).ratio())


def compact(s: str) -> str:
    return re.sub(r"\s+", "", s)


def norm_text(s: str) -> str:
    s = s.replace("\\$", "$").lower()
    s = re.sub(r"[^\w$]+", " ", s)
    return " ".join(s.replace("_", " ").split())


def rendered_text(latex: str) -> str:
    return "".join(tokens(latex))


def score_page(truth: dict, output: str) -> dict:
    formulas = truth["formulas"]
    found = [f for _, _, f, _ in find_raw_tex(output, RENDERER_DELIMITERS)]
    used = [False] * len(found)
    recovered = 0
    matched_truth = [False] * len(formulas)
    comp_out = compact(output)
    for i, f in enumerate(formulas):
        best, best_j = 0.0, -1
        for j, g in enumerate(found):
            if used[j]:
                continue
            s = similar(f["latex"], g)
            if s > best:
                best, best_j = s, j
                if s == 1.0:
                    break
        if best >= MATCH:
            used[best_j] = True
            matched_truth[i] = True
            recovered += 1
            continue
        c = compact(f["latex"])
        if len(c) >= 4 and re.search(r"\\[A-Za-z]|[_^]", c) and c in comp_out:
            matched_truth[i] = True
            recovered += 1
    # duplicates: leftover delimited formulas equal to a truth formula
    dup = 0
    for j, g in enumerate(found):
        if used[j]:
            continue
        if any(similar(f["latex"], g) >= MATCH for f in formulas):
            dup += 1
    # rendered Unicode duplicates next to kept LaTeX
    text_wo_math = output
    for _, _, g, _ in find_raw_tex(output, RENDERER_DELIMITERS):
        text_wo_math = text_wo_math.replace(g, " ")
    comp_rest = compact(text_wo_math)
    for i, f in enumerate(formulas):
        r = rendered_text(f["latex"])
        if matched_truth[i] and len(r) >= 5 and r not in compact(f["latex"]) and r in comp_rest:
            dup += 1
    nout = norm_text(output)
    kept = sum(1 for m in truth["main"] if norm_text(m) in nout)
    leaked = sum(1 for b in truth["boilerplate"] if norm_text(b) in nout)
    literal_ok = None
    if truth.get("literal_dollar"):
        flat = " ".join(output.split())
        literal_ok = all(" ".join(s.replace("$", "\\$").split()) in flat for s in truth["literal_dollar"])
    return {"formulas": len(formulas), "recovered": recovered, "duplicated": dup,
            "main": len(truth["main"]), "kept": kept, "boiler": len(truth["boilerplate"]), "leaked": leaked,
            "literal_ok": literal_ok}


# ---- systems ------------------------------------------------------------------------------------
def sys_ours(html: bytes, url: str | None) -> str:
    from corpus.extract.content import extract_page

    return extract_page(html, url).text


def sys_trafilatura(html: bytes, url: str | None) -> str:
    import trafilatura

    return trafilatura.extract(html.decode("utf-8", "replace"), url=url, output_format="markdown") or ""


def sys_resiliparse(html: bytes, url: str | None) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(HTMLTree.parse_from_bytes(html, "utf-8"))


def sys_resiliparse_main(html: bytes, url: str | None) -> str:
    from resiliparse.extract.html2text import extract_plain_text
    from resiliparse.parse.html import HTMLTree

    return extract_plain_text(HTMLTree.parse_from_bytes(html, "utf-8"), main_content=True)


_MAGIC = None


def sys_magic_html(html: bytes, url: str | None) -> str:
    global _MAGIC
    import lxml.html

    if _MAGIC is None:
        sys.path.insert(0, os.environ.get("MAGIC_HTML_PATH", "/tmp/math/pylib"))
        from magic_html import GeneralExtractor

        _MAGIC = GeneralExtractor()
    res = _MAGIC.extract(html.decode("utf-8", "replace"), base_url=url or "https://example.org/page",
                         html_type="article")
    body = res.get("html") or ""
    if not body.strip():
        return ""
    return html_blocks_text(lxml.html.fromstring(body))


_BLOCKS = frozenset("p div h1 h2 h3 h4 h5 h6 li pre td th dd dt blockquote tr table ul ol section article".split())


def html_blocks_text(root) -> str:
    """Text of an HTML tree with a blank line at every block boundary (no nested duplicates)."""
    out: list[str] = []

    def walk(el) -> None:
        block = el.tag in _BLOCKS
        if block:
            out.append("\n\n")
        if el.text:
            out.append(el.text)
        for child in el:
            if isinstance(child.tag, str):
                walk(child)
            if child.tail:
                out.append(child.tail)
        if block:
            out.append("\n\n")

    walk(root)
    text = re.sub(r"[ \t]+", " ", "".join(out))
    return re.sub(r"\s*\n\s*\n\s*", "\n\n", text).strip()


_OWM_CONFIG = {  # the majority values of OpenWebMath's extract_from_cc/configs/randomized_all.yaml
    "markdown_headings": True, "markdown_code": True,
    "boilerplate_config": {"ratio_threshold": 0.18, "absolute_threshold": 10, "end_threshold": 15, "enable": True},
    "remove_buttons": True, "remove_image_figures": True, "remove_link_clusters": True,
    "table_config": {"min_rows": 2, "min_cols": 3, "format": "plain"}, "remove_chinese": True,
    "remove_edit_buttons": True, "extract_latex": True}


def sys_openwebmath(html: bytes, url: str | None) -> str:
    """OpenWebMath's extractor (keirp/OpenWebMath text_extraction) from OWM_PATH, if present."""
    for p in (os.environ.get("OWM_PATH", "/tmp/math/owm/text_extraction"),
              os.environ.get("MAGIC_HTML_PATH", "/tmp/math/pylib")):
        if p not in sys.path:
            sys.path.insert(0, p)
    from text_extract.extract import extract_text

    return extract_text(html.decode("utf-8", "replace"), _OWM_CONFIG) or ""


SYSTEMS = {"ours": sys_ours, "trafilatura": sys_trafilatura, "resiliparse": sys_resiliparse,
           "resiliparse_main": sys_resiliparse_main, "magic_html": sys_magic_html,
           "openwebmath": sys_openwebmath}


def run(systems: list[str], pages: list[dict]) -> dict:
    results: dict[str, dict] = {}
    for name in systems:
        fn = SYSTEMS[name]
        htmls = [Path(page["path"]).read_bytes() for page in pages]
        try:
            fn(htmls[0], None)  # imports and lazy set-up are not timed
            t0 = time.perf_counter()
            outs = [fn(html, None) for html in htmls]
            seconds = time.perf_counter() - t0
        except Exception as exc:  # noqa: BLE001 - a peer that does not run is reported, not fatal
            results[name] = {"error": f"{type(exc).__name__}: {exc}"[:200]}
            continue
        per_page = {page["name"]: score_page(page, out) | {"markup": page["markup"]} for page, out in zip(pages, outs)}
        results[name] = {"pages": per_page, "seconds": seconds}
    return results


def summarize(res: dict) -> dict:
    pages = res["pages"]
    tot = Counter()
    by_markup: dict[str, Counter] = defaultdict(Counter)
    lit_pages = lit_ok = 0
    for p in pages.values():
        for k in ("formulas", "recovered", "duplicated", "main", "kept", "boiler", "leaked"):
            tot[k] += p[k]
            by_markup[p["markup"]][k] += p[k]
        if p["literal_ok"] is not None:
            lit_pages += 1
            lit_ok += bool(p["literal_ok"])
    def r(a: int, b: int) -> float:
        return a / b if b else float("nan")
    return {"recovery": r(tot["recovered"], tot["formulas"]),
            "duplicated": r(tot["duplicated"], tot["formulas"]),
            "main_kept": r(tot["kept"], tot["main"]), "boiler_leaked": r(tot["leaked"], tot["boiler"]),
            "literal_pages": f"{lit_ok}/{lit_pages}", "formulas": tot["formulas"],
            "per_markup": {m: r(c["recovered"], c["formulas"]) for m, c in sorted(by_markup.items())},
            "pages_per_s": len(pages) / res["seconds"] if res["seconds"] else float("nan")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--json", help="write per-page results here")
    ap.add_argument("--worst", type=int, default=0, help="print the N worst pages of 'ours'")
    ap.add_argument("--negatives", help="folder of real pages without math (e.g. trafilatura's tests/cache): "
                    "count the formulas ours invents there")
    args = ap.parse_args()
    pages = load_pages()
    print(f"{len(pages)} pages, {sum(len(p['formulas']) for p in pages)} formulas", file=sys.stderr)
    results = run(args.systems.split(","), pages)
    summaries = {n: summarize(r) for n, r in results.items() if "error" not in r}
    markups = sorted({m for s in summaries.values() for m in s["per_markup"]})
    print("| system | formula recovery | duplicated | main text kept | boilerplate leaked | literal-dollar pages | "
          "pages/s | " + " | ".join(markups) + " |")
    print("|---" * (7 + len(markups)) + "|")
    for n, s in summaries.items():
        print(f"| {n} | {s['recovery']:.3f} | {s['duplicated']:.3f} | {s['main_kept']:.3f} | "
              f"{s['boiler_leaked']:.3f} | {s['literal_pages']} | {s['pages_per_s']:.0f} | "
              + " | ".join(f"{s['per_markup'].get(m, float('nan')):.2f}" for m in markups) + " |")
    for n, r in results.items():
        if "error" in r:
            print(f"| {n} | did not run: {r['error']} |")
    if args.worst and "ours" in results and "pages" in results["ours"]:
        rows = sorted(results["ours"]["pages"].items(),
                      key=lambda kv: (kv[1]["recovered"] / max(1, kv[1]["formulas"]), kv[1]["kept"] / max(1, kv[1]["main"])))
        for name, p in rows[: args.worst]:
            print(name, p, file=sys.stderr)
    if args.negatives:
        from corpus.extract.content import extract_page

        known = {Path(p["path"]).name for p in pages}
        files = [f for f in sorted(Path(args.negatives).glob("*.htm*")) if f.name not in known]
        found = Counter()
        for f in files:
            page = extract_page(f.read_bytes())
            if page.formulas:
                found[f.name] = page.formulas
        print(f"\nnon-math pages: {len(files)}, pages with an invented formula: {len(found)}, "
              f"formulas invented: {sum(found.values())} {dict(found) if found else ''}")
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "summaries": summaries}, indent=1))


if __name__ == "__main__":
    main()
