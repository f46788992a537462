"""Main content and serialization: Q&A pages keep question and answers, chrome goes, blocks keep their shape."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.extract.content import extract_page
from corpus.extract.tex import SENTINEL_CLOSE, SENTINEL_OPEN

CHROME = """<header class="site-header"><nav><a href="/">Home</a> <a href="/tags">Tags</a></nav></header>
<div id="cookie-consent" class="cookie-banner">We use cookies. <button>Accept</button></div>"""
FOOTER = """<footer class="site-footer"><a href="/about">About us</a> Site design (c) 2024</footer>"""

STACKEXCHANGE = f"""<html><head><title>Limit of sin x over x - Mathematics Stack Exchange</title>
<link rel="canonical" href="https://math.stackexchange.com/questions/75130/limit"></head>
<body class="question-page has-sidebar">{CHROME}
<div id="content"><div id="mainbar" role="main">
<div id="question-header"><h1>Limit of sin x over x</h1></div>
<div id="question" class="question"><div class="s-prose js-post-body">
<p>How do I show that $\\lim_{{x\\to 0}} \\frac{{\\sin x}}{{x}} = 1$ without L'Hopital?</p></div>
<div class="post-menu"><a href="#">Share</a> <a href="#">Improve this question</a> <a href="#">Follow</a></div>
<div class="comments js-comments-container"><span class="comment-copy">Duplicate of another question.</span>
<a class="comments-link" href="#">Add a comment</a></div></div>
<div id="answers"><div class="answer accepted-answer"><div class="s-prose js-post-body">
<p>Use the squeeze theorem: $\\cos x \\le \\frac{{\\sin x}}{{x}} \\le 1$ near zero.</p></div></div>
<div class="answer"><div class="s-prose js-post-body"><p>Or the power series of the sine.</p></div></div></div>
</div><div id="sidebar" class="sidebar"><div class="module related"><h4>Related</h4><ul>
<li><a href="/q/1">Why is the derivative of sine cosine?</a></li><li><a href="/q/2">Another question</a></li>
<li><a href="/q/3">Yet another question</a></li></ul></div></div></div>{FOOTER}
<script type="text/x-mathjax-config">MathJax.Hub.Config({{tex2jax: {{inlineMath: [['$','$']]}}}});</script>
<script src="https://cdn.jsdelivr.net/npm/mathjax@2/MathJax.js"></script></body></html>"""

ZHIHU = f"""<html><head><meta charset="utf-8"><title>如何证明 - 知乎</title></head><body>
<header class="AppHeader"><a href="/">首页</a> <a href="/explore">发现</a></header>
<div class="Question-main"><div class="QuestionHeader"><h1 class="QuestionHeader-title">如何证明根号二是无理数？</h1></div>
<div class="Question-mainColumn"><div class="Card AnswerCard"><div class="ContentItem AnswerItem">
<div class="RichContent"><div class="RichContent-inner"><span class="RichText">假设根号二是有理数，
可以写成最简分数，然后推出分子分母都是偶数，矛盾。</span></div></div>
<div class="ContentItem-actions"><button>赞同 120</button><button>分享</button></div>
<div class="Comments-container">评论区：写得好</div></div></div></div>
<div class="Question-sideColumn"><div class="Card">相关问题 相关推荐 广告</div></div></div>
<div class="CornerButtons"><button>回到顶部</button></div></body></html>"""


def test_stackexchange_keeps_question_and_answers_and_drops_chrome() -> None:
    page = extract_page(STACKEXCHANGE.encode())
    t = page.text
    assert page.title == "Limit of sin x over x - Mathematics Stack Exchange"
    assert page.canonical_url == "https://math.stackexchange.com/questions/75130/limit"
    assert "# Limit of sin x over x" in t
    assert "How do I show that $\\lim_{x\\to 0} \\frac{\\sin x}{x} = 1$ without L'Hopital?" in t
    assert "Use the squeeze theorem: $\\cos x \\le \\frac{\\sin x}{x} \\le 1$ near zero." in t
    assert "Or the power series of the sine." in t
    for chrome in ("cookies", "Accept", "Home", "Tags", "Share", "Improve this", "Add a comment", "Duplicate of",
                   "Related", "derivative of sine", "About us", "Site design", "MathJax"):
        assert chrome not in t, chrome
    assert page.math["tex_raw"] == 2 and page.formulas == 2


def test_zhihu_keeps_question_title_and_answer() -> None:
    t = extract_page(ZHIHU).text
    assert "如何证明根号二是无理数？" in t
    assert "假设根号二是有理数" in t and "矛盾。" in t
    for chrome in ("首页", "发现", "赞同", "分享", "评论区", "相关问题", "回到顶部"):
        assert chrome not in t, chrome


def test_blocks_keep_their_shape() -> None:
    html = """<html><body><main><h2>Setup</h2><p>Install it:</p>
<pre><code>def f(x):
    if x:
        return x ** 2
</code></pre>
<p>Use <code>$HOME/bin</code>; it costs $5 and $10.</p>
<table><tr><th>n</th><th>square</th></tr><tr><td>2</td><td><span class="katex"><span class="katex-mathml"><math>
<semantics><mrow><mn>4</mn></mrow><annotation encoding="application/x-tex">2^2</annotation></semantics></math></span>
<span class="katex-html" aria-hidden="true">22</span></span></td></tr></table>
<ul><li>one</li><li>two<ol><li>first</li><li>second</li></ol></li></ul>
<p>line one<br>line two</p></main></body></html>"""
    assert extract_page(html).text == (
        "## Setup\n\nInstall it:\n\n```\ndef f(x):\n    if x:\n        return x ** 2\n```\n\n"
        "Use `$HOME/bin`; it costs \\$5 and \\$10.\n\n"
        "| n | square |\n| --- | --- |\n| 2 | $2^2$ |\n\n"
        "- one\n- two\n  1. first\n  2. second\n\nline one\nline two")


def test_layout_tables_are_read_as_blocks() -> None:
    html = "<html><body><table><tr><td><p>" + "A long paragraph of prose. " * 30 + "</p></td></tr></table></body></html>"
    t = extract_page(html).text
    assert t.startswith("A long paragraph of prose.") and "|" not in t


def test_link_lists_go_but_never_a_formula() -> None:
    links = "".join(f'<li><a href="/t/{i}">topic number {i}</a></li>' for i in range(6))
    html = f"""<html><head><script src="https://cdn.example.org/katex.min.js"></script></head><body><article>
<p>{'Prose about the group of units. ' * 10}</p><ul>{links}</ul>
<ul><li><a href="/a">see</a></li><li><a href="/b">also</a></li><li><a href="/c"><span class="katex">
<span class="katex-mathml"><math><semantics><mi>x</mi><annotation encoding="application/x-tex">\\mathbb{{Z}}_n^\\times</annotation>
</semantics></math></span></span></a></li></ul></article></body></html>"""
    t = extract_page(html).text
    assert "topic number" not in t
    assert "$\\mathbb{Z}_n^\\times$" in t


def test_every_real_fixture_gives_its_formulas_once(shared_data: Path) -> None:
    pages = sorted((shared_data / "web" / "defuddle_math" / "fixtures").glob("*.html"))
    pages.append(shared_data / "web" / "wikipedia" / "en.wikipedia.org.tsne.html")
    for p in pages:
        page = extract_page(p.read_bytes())
        assert page.formulas >= 1, p.name
        assert SENTINEL_OPEN not in page.text and SENTINEL_CLOSE not in page.text, p.name
        assert page.title, p.name
    wiki = extract_page(pages[-1].read_bytes())
    assert wiki.math["wikipedia"] == 34 and wiki.main == "main"
    for chrome in ("Jump to navigation", "Navigation menu", "Privacy policy", "Personal tools"):
        assert chrome not in wiki.text, chrome


@pytest.mark.parametrize("data, error", [
    (b"", "empty"), (b"   \n ", "empty"), (b"<html><head><title>t</title></head></html>", "empty"),
    (b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 20, "not_html"), (b"%PDF-1.4\n" + b"\x00\xff" * 3000, "not_html"),
    (b"<html><body><nav><a href='/'>Home</a></nav></body></html>", "empty"),
])
def test_bad_pages_give_an_error_not_an_exception(data: bytes, error: str) -> None:
    page = extract_page(data)
    assert page.error == error and page.text == ""


def test_broken_and_declared_encodings() -> None:
    latin = "<html><head><meta charset='iso-8859-1'></head><body><p>Caf\xe9 na\xefve \u2013</p></body></html>"
    page = extract_page(latin.encode("cp1252"))
    assert page.text == "Caf\xe9 na\xefve \u2013" and page.encoding == "cp1252" and page.encoding_source == "meta"
    broken = b"<html><body><p>ok \xff\xfe\xfa text</p></body></html>"
    page = extract_page(broken, http_charset="utf-8")
    assert page.error is None and "ok" in page.text and "text" in page.text


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=400) | st.text(alphabet="<>/ab $\\&;pdivmath=\"'\n", max_size=300))
def test_extract_page_never_raises(data: bytes | str) -> None:
    page = extract_page(data)
    assert isinstance(page.text, str)
    assert (page.error is None) == bool(page.text.strip())


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=st.sampled_from(list(" \t\n\r\xa0\u3000\x1cab\ue000$")), max_size=40))
def test_norm_collapses_whitespace_like_the_regex(s: str) -> None:
    # _norm is the fast path of re.sub(r"\s+", " ", s): the same result on any text
    import re

    from corpus.extract.content import _norm

    assert _norm(s) == re.sub(r"\s+", " ", s)
