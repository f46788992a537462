"""The byte prefilter: every page with formulas passes, ordinary pages and literal dollars do not."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.extract.prefilter import has_math_signal, math_signal
from corpus.extract.reader import iter_warc

REPO = Path(__file__).resolve().parents[3]


def _math_pages(shared_data: Path) -> list[Path]:
    pages = sorted((shared_data / "web" / "defuddle_math" / "fixtures").glob("*.html"))
    pages.append(shared_data / "web" / "wikipedia" / "en.wikipedia.org.tsne.html")
    pages += sorted((REPO / "tests" / "data" / "web" / "built").glob("*.html"))  # renderer-built pages
    return pages


def test_every_page_with_formulas_has_a_signal(shared_data: Path) -> None:
    pages = _math_pages(shared_data)
    assert len(pages) >= 14
    missed = [p.name for p in pages if not has_math_signal(p.read_bytes())]
    # the target is >= 99%; on these test sets nothing may be missed
    assert missed == []


def test_demo_crawl_math_pages_pass_and_plain_pages_do_not(repo_root: Path) -> None:
    rows = [r for b in iter_warc(str(repo_root / "demo" / "warc" / "demo.warc.gz"), 500, Counter())
            for r in b.to_pylist() if r["http_status"] == 200]
    math = [r for r in rows if "stackexchange" in r["url"] or "mathoverflow" in r["url"] or "wikipedia" in r["url"]]
    plain = [r for r in rows if "wikitext.demo.invalid" in r["url"]]
    assert len(math) == 121 and len(plain) == 40
    assert all(has_math_signal(r["html"]) for r in math)
    assert not any(has_math_signal(r["html"]) for r in plain)


def test_real_crawl_pages_mostly_have_no_signal(shared_data: Path) -> None:
    rows = [r for b in iter_warc(str(shared_data / "web" / "warc" / "warcfile.warc.gz"), 100, Counter())
            for r in b.to_pylist()]
    hits = [math_signal(r["html"]) for r in rows]
    assert sum(h is not None for h in hits) <= 2 and set(hits) <= {None, "dollar"}


@pytest.mark.parametrize("snippet, signal", [
    (b'<script src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>', "mathjax"),
    (b'<link rel="stylesheet" href="/css/katex.min.css">', "atex"),
    (b'<script type="math/tex; mode=display">x</script>', "math/tex"),
    (b"<p><math><mi>x</mi></math></p>", "<math"),
    (b'<m:math xmlns:m="http://www.w3.org/1998/Math/MathML">', "mathml"),
    (b"<mjx-container class='mjx-chtml'>", "mjx-"),
    (b'<img src="https://latex.codecogs.com/gif.latex?x^2">', "atex"),
    (b'<img src="/cgi-bin/mimetex.cgi?x^2">', "mimetex"),
    (b"<p>so \\frac{a}{b} holds</p>", "tex"),
    (b"<p>where \\(x\\) is real</p>", "tex"),
    (b"<p>we get $x^2 + 1$ here</p>", "dollar"),
    (b"<p>$$\\sum a$$</p>", "tex"),
])
def test_each_marker(snippet: bytes, signal: str) -> None:
    assert math_signal(b"<html><body>" + snippet + b"</body></html>") == signal


@pytest.mark.parametrize("text", [
    b"<p>It costs $5 and a sandwich $10.</p>", b"<p>Prices: $3.50, $4.99 and $12</p>",
    b"<script>$(document).ready(function(){ $('.nav').hide(); });</script>",
    b"<p>C:\\Users\\me\\Documents</p>", b"<p>Mathematics department news</p>",
])
def test_ordinary_pages_have_no_signal(text: bytes) -> None:
    assert math_signal(text) is None


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,.!?0123456789<>/=\"'\n", max_size=500))
def test_plain_prose_and_tags_never_signal(text: str) -> None:
    assert math_signal(text.replace("math", "mat").replace("atex", "ate").replace("mjx", "mj")
                       .replace("codecogs", "codecog").replace("mimetex", "mime").encode()) is None
