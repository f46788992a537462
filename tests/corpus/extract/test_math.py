"""DOM math → <mc-math> (corpus/extract/math.py) on real fixtures and renderer-built pages."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter
from pathlib import Path

import lxml.html
import pytest

from corpus.extract.math import MATH_TAG, has_math_signal, replace_math, unwrap_displaystyle
from corpus.extract.tex import RENDERER_DELIMITERS, page_delimiters

WEB = Path(__file__).resolve().parents[2] / "data" / "web"
FIX = WEB / "defuddle_math" / "fixtures"


def run(html: str) -> tuple[list[tuple[str, bool]], Counter, lxml.html.HtmlElement]:
    root = lxml.html.fromstring(html)
    counts = replace_math(root, page_delimiters(root))
    got = [(el.text or "", el.get("data-display") == "1") for el in root.iter(MATH_TAG)]
    for el in root.iter(MATH_TAG):
        assert len(el) == 0
    return got, counts, root


def fixture(name: str) -> str:
    return (FIX / f"math--{name}.html").read_text(encoding="utf-8")


def test_mathjax2_scripts_with_parameters() -> None:
    got, counts, root = run(fixture("mathjax-tex-scripts"))
    assert counts == {"mathjax2": 10}
    assert got[0] == ("E_u", False)
    assert got[7] == (r"f_u = D+\gamma B \quad \text{and} \quad f_l = D-\gamma B.", True)
    assert [d for _, d in got].count(True) == 2
    assert not root.xpath("//script")


def test_mathjax2_preview_and_frames_removed() -> None:
    html = ('<p>a <span class="MathJax_Preview">x+1</span><span class="MathJax" id="MathJax-Element-1-Frame">'
            '<nobr>x+1</nobr></span><script type="math/tex; charset=utf-8; mode=display" id="MathJax-Element-1">'
            "x+1</script> b</p>")
    got, counts, root = run(html)
    assert got == [("x+1", True)]
    assert " ".join(root.text_content().split()) == "a x+1 b"


def test_asciimath_and_mml_scripts() -> None:
    got, counts, _ = run('<p><script type="math/asciimath">sum_(i=1)^n i</script> and '
                         '<script type="math/mml"><math><mfrac><mi>a</mi><mi>b</mi></mfrac></math></script></p>')
    assert got == [(r"\sum_{i=1}^{n}i", False), (r"\frac{a}{b}", False)]
    assert counts == {"asciimath": 1, "mathjax2": 1}


def test_katex_annotation_and_rendered_spans_dropped() -> None:
    got, counts, root = run(fixture("katex"))
    assert counts["katex"] == 7
    assert not root.xpath("//*[contains(@class,'katex-html')]")
    assert ("k_{n+1} = n^2 + k_n^2 - k_{n-1}", False) in got


def test_katex_display_wrapper() -> None:
    got, counts, _ = run(fixture("katex-centraliser"))
    assert counts["katex"] == 28
    assert sum(d for _, d in got) >= 8


def test_data_math_wrappers() -> None:
    got, counts, _ = run(fixture("katex-data-math"))
    assert counts == {"data_tex": 5}
    assert got[-1] == (r"x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a}", True)
    assert got[0] == (r"\forall x (M(x) \rightarrow D(x))", False)


def test_temml_data_entry() -> None:
    got, counts, root = run(fixture("temml"))
    assert counts == {"data_tex": 21}
    assert ("E = mc^2", True) in got
    assert not root.xpath("//*[local-name()='math']")


def test_mathjax3_assistive_and_tagged() -> None:
    got, counts, _ = run(fixture("mathjax-tagged-equation"))
    assert got == [("a=b+c", True), (r"\begin{aligned}x & = & y \\ u & = & v\end{aligned}", True)]
    got, counts, _ = run(fixture("mathjax-svg"))
    assert got[0] == (r"r_{\text{perf}}", False)
    assert counts == {"mathjax3": 2}


def test_mathjax3_without_assistive_and_lazy_placeholder() -> None:
    got, counts, root = run(fixture("mathjax-chtml-no-assistive"))
    assert counts == {"mathjax3": 4, "unrecoverable": 1}
    assert got[0] == (r"z=\frac{1}{n}\sum_{i=1}^nx_i", True)
    assert not root.xpath("//mjx-container")


def test_mathjax4_data_latex() -> None:
    truth = json.loads((WEB / "built" / "mj4_chtml-1.json").read_text(encoding="utf-8"))
    got, counts, _ = run((WEB / "built" / "mj4_chtml-1.html").read_text(encoding="utf-8"))
    assert [g for g, _ in got] == [f["latex"] for f in truth["formulas"]]
    assert counts == {"mathjax3": len(truth["formulas"])}


def test_wikipedia_written_once_and_unwrapped() -> None:
    got, counts, root = run((WEB / "wikipedia" / "en.wikipedia.org.tsne.html").read_text(encoding="utf-8"))
    assert counts["wikipedia"] == 34
    assert not root.xpath("//img[contains(@class,'mwe-math-fallback')]")
    assert all(not g.startswith("{\\displaystyle") for g, _ in got)
    assert (r"p_{ij}={\frac {p_{j\mid i}+p_{i\mid j}}{2N}}", True) in got
    got, counts, _ = run(fixture("wikipedia-mathml"))
    assert got[0] == ("ax^{2}+bx+c=0", False) and got[1][1] is True


def test_unwrap_displaystyle() -> None:
    assert unwrap_displaystyle(r"{\displaystyle x^{2}}") == "x^{2}"
    assert unwrap_displaystyle(r"{\displaystyle a}+{b}") == r"{\displaystyle a}+{b}"


def test_latex_images() -> None:
    got, counts, _ = run(fixture("latex-image-services"))
    assert [g for g, _ in got] == [r"\frac{a}{b}", r"\sum_{i=1}^{n}a_i", r"\alpha+\beta", r"\frac{m}{v}"]
    got, counts, _ = run(fixture("small-equation-image"))
    assert counts == {"latex_img": 2} and all(d for _, d in got)
    got, _, _ = run('<p>See <img class="latex" src="https://s0.wp.com/latex.php?latex=x%5E2+%2B+1&bg=fff" '
                    'alt="x^2 + 1"> and <img src="/cgi-bin/mimetex.cgi?%5Csqrt%7B2%7D"> and '
                    '<img src="photo.jpg" alt="A photo of a cat"></p>')
    assert got == [("x^2 + 1", False), (r"\sqrt{2}", False)]


def test_tail_text_kept_and_mathml_display() -> None:
    got, _, root = run('<p>x <math display="block" alttext="a+b"><mi>a</mi></math> tail <math><mi>c</mi></math>.</p>')
    assert got == [("a+b", True), ("c", False)]
    assert root.xpath("string(//p)").replace(" ", "") == "xa+btailc."


def test_no_signal_is_a_noop() -> None:
    root = lxml.html.fromstring("<html><body><p>Just text, $5.</p></body></html>")
    assert not has_math_signal(root)
    assert replace_math(root, RENDERER_DELIMITERS) == Counter()


def _quality():
    spec = importlib.util.spec_from_file_location("eq", WEB.parents[2] / "bench" / "extract_quality.py")
    eq = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eq)
    return eq


def test_quality_targets_on_every_test_page() -> None:
    """The whole extractor on all fixtures and renderer-built pages meets issue 12's math targets."""
    pytest.importorskip("corpus.extract.content")
    eq = _quality()
    res = eq.run(["ours"], eq.load_pages())["ours"]
    s = eq.summarize(res)
    assert s["formulas"] > 400
    assert s["recovery"] >= 0.97, s
    assert min(s["per_markup"].values()) >= 0.90, s["per_markup"]
    assert s["duplicated"] <= 0.02, s
    lit_ok, lit_pages = map(int, s["literal_pages"].split("/"))
    assert lit_pages >= 5 and lit_ok == lit_pages


def test_test_pages_are_complete() -> None:
    """Every built page has its ground truth; every markup and the literal-dollar case are covered."""
    pages = sorted((WEB / "built").glob("*.html"))
    assert len(pages) >= 35
    markups = Counter()
    literal = 0
    for page in pages:
        truth = json.loads(page.with_suffix(".json").read_text(encoding="utf-8"))
        assert truth["formulas"] and truth["main"], page.name
        markups[truth["markup"]] += 1
        literal += bool(truth["literal_dollar"])
    assert set(markups) >= {"katex", "data_tex", "mathjax3", "mathjax4", "mathjax2", "asciimath", "mathml",
                            "latex_img", "tex_raw"}
    assert literal >= 5
    assert (WEB / "README.md").exists() and (WEB / "defuddle_math" / "LICENSE").exists()
    assert (WEB / "wikipedia" / "LICENSE.trafilatura").exists()


def test_mathjax2_saved_page_without_its_scripts() -> None:
    """A browser-typeset MathJax 2 page whose math/tex scripts were stripped (as some page savers
    do): each rendered frame still gives its formula once, from data-mathml."""
    eq = _quality()
    truth = json.loads((WEB / "built" / "mj2_browser-1.json").read_text(encoding="utf-8"))
    root = lxml.html.fromstring((WEB / "built" / "mj2_browser-1.html").read_bytes())
    for script in root.xpath("//script[starts-with(@type, 'math/')]"):
        script.drop_tree()
    counts = replace_math(root, page_delimiters(root))
    got = [el.text for el in root.iter(MATH_TAG)]
    assert counts["mathjax2"] == len(truth["formulas"]) == len(got)
    assert all(eq.similar(t["latex"], g) >= eq.MATCH for t, g in zip(truth["formulas"], got))
    assert not root.xpath("//*[contains(@class, 'MJX_Assistive_MathML')]")


def test_mathjax2_browser_page_written_once() -> None:
    truth = json.loads((WEB / "built" / "mj2_browser-2.json").read_text(encoding="utf-8"))
    got, counts, root = run((WEB / "built" / "mj2_browser-2.html").read_text(encoding="utf-8"))
    assert [g for g, _ in got] == [f["latex"] for f in truth["formulas"]]
    assert [d for _, d in got] == [f["display"] for f in truth["formulas"]]
    assert not root.xpath("//*[contains(@class, 'MathJax_CHTML') or contains(@class, 'MathJax_Preview')]")
