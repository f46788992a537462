"""Ground truth for the copied real fixtures (tests/data/web/defuddle_math, wikipedia).

defuddle pages: formulas and main-text fragments are read from defuddle's own expected Markdown
(``expected/*.md``), with the overrides listed below where defuddle's reference keeps something
that is not part of the formula (a ``\\tag`` label). The Wikipedia article: formulas are the
34 ``x-tex`` annotations, main text the article's paragraphs, boilerplate the site chrome
(navigation, footer, categories, navbox). Writes tests/data/web/truth/<name>.json.

    .venv/bin/python tests/data/web/builder/fixture_truth.py
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import lxml.html

WEB = Path(__file__).resolve().parents[1]
OUT = WEB / "truth"

MARKUP = {"katex-centraliser": "katex", "katex": "katex", "katex-data-math": "data_tex",
          "latex-image-services": "latex_img", "small-equation-image": "latex_img",
          "mathjax-chtml-no-assistive": "mathjax3", "mathjax-svg": "mathjax3",
          "mathjax-tagged-equation": "mathjax3", "mathjax": "mathjax3", "mathjax-tex-scripts": "mathjax2",
          "raw-latex": "tex_raw", "temml": "temml", "wikipedia-mathml": "wikipedia"}
# defuddle writes the \tag label into the formula; the formula is "a = b + c".
OVERRIDES = {"mathjax-tagged-equation": {0: "a = b + c"}}
LITERAL = {"raw-latex": ["This costs $100 per unit, which is not math."]}

_DISPLAY = re.compile(r"\$\$\s*(.+?)\s*\$\$", re.S)
_INLINE = re.compile(r"(?<![\\$])\$(?=\S)([^$\n]+?)(?<=\S)\$(?!\d)")
_CODE = re.compile(r"```.*?```|`[^`\n]*`", re.S)


def fragments(text: str) -> list[str]:
    out = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("|") or line.startswith("#"):
            continue
        line = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", line)
        line = line.replace("**", "").replace("*", "")
        for frag in re.split(r"(?<=[.?!:;])\s+|\s*\u0000\s*", line):
            frag = frag.strip(" ,")
            if len(frag) >= 25 and len(frag.split()) >= 4:
                out.append(frag)
    return out


def defuddle(name: str) -> dict:
    md = (WEB / "defuddle_math/expected" / f"math--{name}.md").read_text(encoding="utf-8")
    md = re.sub(r"^```json\n.*?\n```\n", "", md, flags=re.S)
    md = _CODE.sub("\u0000", md)
    formulas = []
    # keep document order: mark display and inline formulas by position
    spans = [(m.start(), m.end(), m.group(1), True) for m in _DISPLAY.finditer(md)]
    rest = _DISPLAY.sub(lambda m: "\u0000" * len(m.group(0)), md)
    spans += [(m.start(), m.end(), m.group(1), False) for m in _INLINE.finditer(rest)]
    spans.sort()
    for i, (_, _, latex, disp) in enumerate(spans):
        latex = OVERRIDES.get(name, {}).get(i, " ".join(latex.split()))
        formulas.append({"latex": latex, "display": disp})
    prose = _INLINE.sub("\u0000", rest)
    lit = LITERAL.get(name, [])
    main = [f for f in fragments(prose.replace("\u0000" * 2, "\u0000")) if "$" not in f] + lit
    return {"name": f"defuddle-{name}", "markup": MARKUP[name], "variant": f"defuddle:{name}",
            "formulas": formulas, "main": main, "boilerplate": [], "literal_dollar": lit,
            "source": f"defuddle_math/fixtures/math--{name}.html, expected/math--{name}.md (MIT)",
            "html": f"defuddle_math/fixtures/math--{name}.html"}


def wikipedia() -> dict:
    path = WEB / "wikipedia/en.wikipedia.org.tsne.html"
    root = lxml.html.parse(str(path)).getroot()
    formulas = []
    for el in root.xpath("//span[contains(@class,'mwe-math-element')]"):
        ann = el.xpath(".//annotation[@encoding='application/x-tex']/text()")
        latex = ann[0].strip()
        m = re.match(r"^\{\\displaystyle\s*(.*)\}$", latex, re.S)
        latex = m.group(1).strip() if m else latex
        formulas.append({"latex": " ".join(latex.split()),
                         "display": el.getparent().tag == "dd" and not (el.tail or "").strip(" .,")})
    main = []
    for p in root.xpath("//div[contains(@class,'mw-parser-output')]/p"):
        for el in p.xpath(".//span[contains(@class,'mwe-math-element')]"):
            tail = el.tail
            el.clear()
            el.text, el.tail = "\u2063", tail  # fragments stop at formulas
        text = " ".join(p.text_content().split()).replace("\u2063", "\u0000")
        main += [f for f in fragments(text) if len(f) < 400]
    boiler = ["Create account", "Main page", "Random article", "Donate to Wikipedia", "About Wikipedia",
              "This page was last edited on 25 October 2019",
              "Text is available under the Creative Commons Attribution-ShareAlike License",
              "Machine learning algorithms", "From Wikipedia, the free encyclopedia",
              "Privacy policy", "Cookie statement", "Mobile view"]
    html = path.read_text(encoding="utf-8")
    boiler = [b for b in boiler if b in html]
    return {"name": "wikipedia-tsne", "markup": "wikipedia", "variant": "wikipedia:tsne",
            "formulas": formulas, "main": main, "boilerplate": boiler, "literal_dollar": [],
            "source": "wikipedia/en.wikipedia.org.tsne.html (trafilatura tests; CC BY-SA 4.0)",
            "html": "wikipedia/en.wikipedia.org.tsne.html"}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    pages = [defuddle(n) for n in MARKUP] + [wikipedia()]
    for page in pages:
        (OUT / f"{page['name']}.json").write_text(json.dumps(page, indent=1, ensure_ascii=False) + "\n",
                                                 encoding="utf-8")
    print(f"wrote {len(pages)} truth files to {OUT}")


if __name__ == "__main__":
    main()
