"""MathML → LaTeX converters compared on the same MathML (issue 12 §7).

Two MathML sets:
- ``latex2mathml``: N formulas taken from shared/data/corpus_samples/math_positive.jsonl.gz (seeded
  sample of ``$…$``/``$$…$$`` bodies), converted to MathML with latex2mathml;
- ``latex2mathml, environments only``: the sample's matrices, ``cases``, ``aligned``, ``array``;
- ``real pages``: the MathML of the Wikipedia article and defuddle's KaTeX/Wikipedia fixtures with
  their TeX annotation removed (the annotation is the answer key);
- ``mathjax3 assistive``: the assistive MathML MathJax 3/4 wrote into the renderer-built test pages
  (tests/data/web/built/mj*_*.html), whose source LaTeX is in the page's ground truth.
Each converter's LaTeX is scored against the source LaTeX by rendered tokens (the same
``similar`` as bench/extract_quality.py): *recovered* = similarity ≥ 0.85, plus the mean
similarity, the share of matrix/array formulas recovered, and microseconds per formula.

Converters: ours (corpus.extract.mathml), ``mathml-to-latex`` (PyPI), the mmltex XSLT that
OpenWebMath and MegaMath vendor (run with lxml.etree.XSLT; pass its folder with --mmltex, e.g.
extracted from keirp/OpenWebMath text_extraction/text_extract/mmltex: MIT-style licence by Vasil
Yaroshevich, not vendored here).

    .venv/bin/python bench/mathml_compare.py --n 1500 --mmltex /tmp/math/mmltex
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import re
import sys
import time
from pathlib import Path

from lxml import etree

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import extract_quality as eq  # noqa: E402

from corpus.extract.mathml import mathml_to_latex  # noqa: E402

SAMPLE = REPO.parent / "shared" / "data" / "corpus_samples" / "math_positive.jsonl.gz"
_FORMULA = re.compile(r"\$\$(.+?)\$\$|(?<![\\$])\$([^$\n]{2,200}?)\$", re.S)


def latex_sample(n: int, seed: int = 7) -> list[str]:
    with gzip.open(SAMPLE, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line)["text"] for line in fh]
    out: list[str] = []
    for text in rows:
        for m in _FORMULA.finditer(text):
            tex = " ".join((m.group(1) or m.group(2)).split())
            if 3 <= len(tex) <= 300 and "\\label" not in tex and "\\tag" not in tex:
                out.append(tex)
    random.Random(seed).shuffle(out)
    return list(dict.fromkeys(out))[: n * 2]


def mathml_set_latex2mathml(n: int) -> list[tuple[str, str]]:
    import latex2mathml.converter

    pairs = []
    for tex in latex_sample(n):
        try:
            mml = latex2mathml.converter.convert(tex)
        except Exception:  # noqa: BLE001 - latex2mathml raises many types on unsupported input
            continue
        pairs.append((tex, mml))
        if len(pairs) >= n:
            break
    return pairs


def mathml_set_environments(n: int) -> list[tuple[str, str]]:
    """Matrices, cases, aligned/array: the layouts converters break most."""
    import latex2mathml.converter

    pairs = []
    for tex in latex_sample(100000):
        if not re.search(r"\\begin\{(p|b|v|B|V)?matrix\}|\\begin\{(array|cases|aligned)\}", tex):
            continue
        try:
            pairs.append((tex, latex2mathml.converter.convert(tex)))
        except Exception:  # noqa: BLE001 - latex2mathml raises many types on unsupported input
            continue
        if len(pairs) >= n:
            break
    return pairs


def mathml_set_real_pages() -> list[tuple[str, str]]:
    """Real pages' MathML with its TeX annotation removed (Wikipedia t-SNE, defuddle's KaTeX and
    Wikipedia fixtures): the annotation is the answer key."""
    import lxml.html

    pairs = []
    web = REPO / "tests/data/web"
    for page in [web / "wikipedia/en.wikipedia.org.tsne.html", *sorted((web / "defuddle_math/fixtures").glob("*.html"))]:
        root = lxml.html.fromstring(page.read_text(encoding="utf-8"))
        for m in root.xpath("//math[.//annotation[@encoding='application/x-tex']]"):
            ann = m.xpath(".//annotation[@encoding='application/x-tex']")[0]
            tex = " ".join(ann.text_content().split())
            tex = re.sub(r"^\{\\displaystyle\s*(.*)\}$", r"\1", tex)
            ann.getparent().remove(ann)
            m.attrib.pop("alttext", None)
            m.set("xmlns", "http://www.w3.org/1998/Math/MathML")
            pairs.append((tex, lxml.html.tostring(m, encoding="unicode")))
    return pairs


def mathml_set_mathjax() -> list[tuple[str, str]]:
    import lxml.html

    pairs = []
    for page in sorted((REPO / "tests/data/web/built").glob("mj*.html")):
        truth = json.loads(page.with_suffix(".json").read_text(encoding="utf-8"))
        root = lxml.html.fromstring(page.read_bytes())
        maths = [c.xpath(".//*[local-name()='math']") for c in root.iter("mjx-container")]
        if len(maths) != len(truth["formulas"]) or not all(maths):
            continue
        for f, m in zip(truth["formulas"], maths):
            el = m[0]
            for node in el.iter():  # v4 carries data-latex: a converter must not see the answer
                node.attrib.pop("data-latex", None)
            el.set("xmlns", "http://www.w3.org/1998/Math/MathML")
            pairs.append((f["latex"], lxml.html.tostring(el, encoding="unicode")))
    return pairs


def conv_ours(mml: str) -> str:
    return mathml_to_latex(mml)


def conv_mathml_to_latex(mml: str) -> str:
    from mathml_to_latex.converter import MathMLToLaTeX

    return MathMLToLaTeX().convert(mml)


_XSLT = None


def conv_mmltex(mml: str) -> str:
    root = etree.fromstring(mml.encode("utf-8"), etree.XMLParser(recover=True))
    if root.tag == "math":  # HTML-serialized MathML: put it in the MathML namespace
        root = etree.fromstring(re.sub(r"<math\b", '<math xmlns="http://www.w3.org/1998/Math/MathML"', mml,
                                       count=1).encode(), etree.XMLParser(recover=True))
    out = str(_XSLT(root)).strip()
    for a, b in (("$$", "$$"), ("$", "$"), ("\\[", "\\]")):
        if out.startswith(a) and out.endswith(b) and len(out) >= len(a) + len(b):
            return out[len(a):-len(b)].strip()
    return out


def evaluate(name: str, fn, pairs: list[tuple[str, str]]) -> dict:
    rec = sims = 0.0
    mat = mat_ok = errors = 0
    t0 = time.perf_counter()
    outs = []
    for tex, mml in pairs:
        try:
            outs.append(fn(mml))
        except Exception:  # noqa: BLE001 - a converter failing on one formula counts as a miss
            outs.append("")
            errors += 1
    dt = time.perf_counter() - t0
    for (tex, _), out in zip(pairs, outs):
        s = eq.similar(tex, out) if out else 0.0
        sims += s
        rec += s >= eq.MATCH
        if re.search(r"\\begin\{(p|b|v|B|V)?matrix|\\begin\{(array|cases|aligned)", tex):
            mat += 1
            mat_ok += s >= eq.MATCH
    n = len(pairs)
    return {"converter": name, "n": n, "recovered": rec / n, "mean_similarity": sims / n,
            "matrix_n": mat, "matrix_recovered": mat_ok / mat if mat else float("nan"),
            "errors": errors, "us_per_formula": dt / n * 1e6}


def main() -> None:
    global _XSLT
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1500)
    ap.add_argument("--mmltex", help="folder with mmltex.xsl (and its includes)")
    args = ap.parse_args()
    convs = {"ours": conv_ours}
    try:
        import mathml_to_latex  # noqa: F401 - optional peer (pip install '.[peers]')

        convs["mathml-to-latex"] = conv_mathml_to_latex
    except ImportError:
        print("mathml-to-latex not installed: pip install 'mathcorpus[peers]'", file=sys.stderr)
    if args.mmltex:
        _XSLT = etree.XSLT(etree.parse(str(Path(args.mmltex) / "mmltex.xsl")))
        convs["mmltex (XSLT)"] = conv_mmltex
    sets = {"latex2mathml": mathml_set_latex2mathml(args.n),
            "latex2mathml, environments only": mathml_set_environments(300),
            "mathjax3 assistive": mathml_set_mathjax(),
            "real pages (annotation removed)": mathml_set_real_pages()}
    print("| MathML set | converter | formulas | recovered (≥0.85) | mean similarity | matrices/arrays recovered | "
          "errors | µs/formula |")
    print("|---|---|---|---|---|---|---|---|")
    for sname, pairs in sets.items():
        for cname, fn in convs.items():
            r = evaluate(cname, fn, pairs)
            print(f"| {sname} | {cname} | {r['n']} | {r['recovered']:.3f} | {r['mean_similarity']:.3f} | "
                  f"{r['matrix_recovered']:.3f} (of {r['matrix_n']}) | {r['errors']} | {r['us_per_formula']:.0f} |")


if __name__ == "__main__":
    main()
