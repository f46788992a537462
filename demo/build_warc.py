"""Build demo/warc/demo.warc.gz: the small crawl the demo pipeline starts from.

What goes in (all permissively licensed, see demo/warc/NOTICE.md):

* 120 StackMathQA Q&A records (math.stackexchange / mathoverflow / physics.stackexchange,
  CC BY-SA 4.0) from ../shared/data/corpus_samples that are neither in the bundled sample nor
  planted hosts, each served at its real URL as a Q&A page with real-world chrome (navigation,
  sidebar, cookie banner, comments, footer). Their formulas are written in three markups, in
  turn: raw TeX under a MathJax v2 config (what StackExchange serves), MathJax v2
  ``<script type="math/tex">`` elements with previews, and MathML (``latex2mathml``) with a
  TeX annotation;
* the Wikipedia article "t-distributed stochastic neighbor embedding" as saved with its full
  chrome and 34 MathML formulas (CC BY-SA 4.0; from trafilatura's test cache, Apache-2.0);
* 40 Wikipedia sections from the sample's WikiText-2 articles (CC BY-SA 3.0) as plain pages
  without math (the prefilter removes them as ``extract:no_math``);
* records a real crawl has that are not documents: warcinfo, request and metadata records, a
  PNG response, a 404 page and a redirect.

Deterministic (fixed record ids, dates and order, gzip mtime 0): rerunning gives the same bytes.
Run from the repo root: ``python demo/build_warc.py``.
"""

from __future__ import annotations

import gzip
import hashlib
import html
import io
import json
import re
import sys
import uuid
from pathlib import Path

from warcio.statusandheaders import StatusAndHeaders
from warcio.warcwriter import WARCWriter

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
OUT = REPO / "demo" / "warc" / "demo.warc.gz"
N_QA = 120
N_PLAIN = 40
DATE = "2024-11-28T12:00:00Z"
NS = uuid.UUID("6d617468-636f-7270-7573-64656d6f7761")

CHROME_TOP = """<header class="site-header"><a class="logo" href="/">{site}</a>
<nav class="top-nav"><ul><li><a href="/questions">Questions</a></li><li><a href="/tags">Tags</a></li>
<li><a href="/users">Users</a></li><li><a href="/unanswered">Unanswered</a></li></ul></nav></header>
<div id="cookie-consent" class="cookie-banner">We use cookies to improve your experience.
<button>Accept all cookies</button> <a href="/legal/cookies">Customize settings</a></div>"""
CHROME_SIDE = """<div id="sidebar" class="sidebar"><div class="module related"><h4>Related</h4><ul>
<li><a href="/q/1">Why is the derivative of the area of a circle its circumference?</a></li>
<li><a href="/q/2">Intuition behind the Cauchy-Schwarz inequality</a></li>
<li><a href="/q/3">How do I compute this limit without L'Hopital?</a></li>
<li><a href="/q/4">Proof that every bounded sequence has a convergent subsequence</a></li></ul></div>
<div class="module newsletter">Subscribe to the weekly digest <input type="email"></div></div>"""
CHROME_FOOT = """<footer class="site-footer"><ul class="footer-links"><li><a href="/about">About</a></li>
<li><a href="/legal/privacy">Privacy policy</a></li><li><a href="/help">Help</a></li></ul>
<p class="copyright">Site design / logo (c) 2024; user contributions licensed under CC BY-SA.</p></footer>"""
SHARE = """<div class="post-menu share-links"><a href="#">Share</a> <a href="#">Improve this question</a>
<a href="#">Follow</a></div>"""
COMMENTS = """<div class="comments js-comments-container"><ul><li class="comment"><span class="comment-copy">
Thanks, this helped a lot!</span> <a class="comment-user" href="/u/7">user7</a></li></ul>
<a class="js-add-link comments-link" href="#">Add a comment</a></div>"""
MATHJAX2 = """<script type="text/x-mathjax-config">MathJax.Hub.Config({tex2jax: {inlineMath: [['$','$'],
['\\\\(','\\\\)']], displayMath: [['$$','$$'], ['\\\\[','\\\\]']]}});</script>
<script src="https://cdn.jsdelivr.net/npm/mathjax@2.7.9/MathJax.js?config=TeX-AMS_HTML"></script>"""


def _read(name: str) -> list[dict]:
    with gzip.open(SHARED / "corpus_samples" / name, "rt", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def _in_sample_and_planted() -> set[str]:
    ids = set()
    for shard in sorted((REPO / "demo" / "sample").glob("*.jsonl.gz")):
        with gzip.open(shard, "rt", encoding="utf-8") as fh:
            ids |= {json.loads(line)["id"] for line in fh}
    for line in (REPO / "demo" / "planted" / "planted.jsonl").read_text(encoding="utf-8").splitlines():
        meta = json.loads(line).get("meta") or {}
        if meta.get("host_id"):
            ids.add(meta["host_id"])
    return ids


def _mathml(latex: str, display: bool) -> str:
    import latex2mathml.converter

    try:
        mml = latex2mathml.converter.convert(latex, display="block" if display else "inline")
    except Exception:  # latex2mathml raises many types on TeX it does not know; keep the TeX
        return html.escape(f"$${latex}$$" if display else f"${latex}$")
    inner = mml[mml.index(">") + 1: mml.rindex("</math>")]
    head = mml[: mml.index(">") + 1]
    return (f"{head}<semantics>{inner}<annotation encoding=\"application/x-tex\">{html.escape(latex)}"
            f"</annotation></semantics></math>")


def _script(latex: str, display: bool) -> str:
    mode = "; mode=display" if display else ""
    body = latex.replace("</", "<\\/")  # a script body must not close the element
    return (f'<span class="MathJax_Preview">{html.escape(latex)}</span>'
            f'<script type="math/tex{mode}">{body}</script>')


# The formulas of a StackMathQA text, as its authors delimited them (MathJax's defaults plus $):
# fixed here, not taken from corpus/, so the demo WARC's bytes do not move when the extractor does.
_TEX = re.compile(r"\$\$(?P<d>.+?)\$\$|\\\[(?P<b>.+?)\\\]|(?P<env>\\begin\{(equation|align|gather)\*?\}.+?"
                  r"\\end\{\4\*?\})|(?<![\\$])\$(?P<i>[^$\n]+?)\$|\\\((?P<p>.+?)\\\)", re.S)


def _render_math(text: str, style: int) -> str:
    """HTML of one paragraph of TeX-bearing text in the given markup style."""
    if style == 0:
        return _esc(text)
    out, pos = [], 0
    for m in _TEX.finditer(text):
        s, e = m.span()
        display = m.group("d") is not None or m.group("b") is not None or m.group("env") is not None
        latex = m.group("d") or m.group("b") or m.group("env") or m.group("i") or m.group("p") or ""
        if not latex.strip():
            continue
        out.append(_esc(text[pos:s]))
        out.append(_script(latex, display) if style == 1 else _mathml(latex, display))
        pos = e
    out.append(_esc(text[pos:]))
    return "".join(out)


def _esc(prose: str) -> str:
    return html.escape(prose).replace("\n", "<br>\n")


def _paragraphs(text: str, style: int) -> str:
    paras = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return "\n".join(f"<p>{_render_math(p, style)}</p>" for p in paras)


def qa_page(rec: dict, k: int) -> str:
    text = rec["text"]
    style = k % 3
    paras = re.split(r"(\n\s*\n)", text)
    cut = max(1, len(paras) // 2)
    if cut % 2:  # cut on a separator, never inside a paragraph
        cut += 1
    question, answer = "".join(paras[:cut]), "".join(paras[cut:]) or "See the comments."
    title = " ".join(text.split()[:10])
    url = rec["meta"]["url"]
    site = url.split("/")[2]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} - {site}</title>
<link rel="canonical" href="{html.escape(url)}">{MATHJAX2 if style != 2 else ""}
<link rel="stylesheet" href="/static/site.css"></head>
<body class="question-page">{CHROME_TOP}
<div id="content"><div id="mainbar" role="main">
<div id="question-header"><h1 itemprop="name">{html.escape(title)}</h1></div>
<div id="question" class="question"><div class="s-prose js-post-body">{_paragraphs(question, style)}</div>
{SHARE}{COMMENTS}</div>
<div id="answers"><h2 class="answers-subheader">1 Answer</h2>
<div class="answer accepted-answer"><div class="s-prose js-post-body">{_paragraphs(answer, style)}</div>
{SHARE}</div></div></div>{CHROME_SIDE}</div>{CHROME_FOOT}
</body></html>"""


def plain_page(rec: dict, k: int) -> str:
    body = rec["text"]
    m = re.match(r"\s*=\s*(.+?)\s*=\s*\n", body)
    title = m.group(1) if m else f"Article {k}"
    paras = "\n".join(f"<p>{html.escape(p.strip())}</p>" for p in body.split("\n") if p.strip()
                      and not p.strip().startswith("="))
    return f"""<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title></head>
<body>{CHROME_TOP.format(site="Encyclopedia")}<main><article><h1>{html.escape(title)}</h1>{paras}</article></main>
{CHROME_FOOT}</body></html>"""


def _rid(key: str) -> str:
    return f"<urn:uuid:{uuid.uuid5(NS, key)}>"


def _response(writer: WARCWriter, url: str, body: bytes, key: str, status: str = "200 OK",
              ctype: str = "text/html; charset=utf-8", extra: list[tuple[str, str]] | None = None) -> None:
    headers = [("Content-Type", ctype), ("Content-Length", str(len(body)))] + (extra or [])
    http = StatusAndHeaders(status, headers, protocol="HTTP/1.1")
    rec = writer.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=http,
                                    warc_headers_dict={"WARC-Record-ID": _rid(key), "WARC-Date": DATE})
    writer.write_record(rec)


def _request(writer: WARCWriter, url: str, key: str) -> None:
    host = url.split("/")[2]
    path = "/" + url.split("/", 3)[3] if url.count("/") >= 3 else "/"
    http = StatusAndHeaders(f"GET {path} HTTP/1.1", [("Host", host), ("User-Agent", "mathcorpus-demo")],
                            is_http_request=True)
    rec = writer.create_warc_record(url, "request", payload=io.BytesIO(b""), http_headers=http,
                                    warc_headers_dict={"WARC-Record-ID": _rid("req:" + key), "WARC-Date": DATE})
    writer.write_record(rec)


def _metadata(writer: WARCWriter, url: str, key: str) -> None:
    rec = writer.create_warc_record(url, "metadata", payload=io.BytesIO(b"fetchTimeMs: 120\n"),
                                    warc_content_type="application/warc-fields",
                                    warc_headers_dict={"WARC-Record-ID": _rid("meta:" + key), "WARC-Date": DATE})
    writer.write_record(rec)


def build() -> bytes:
    skip = _in_sample_and_planted()
    qa = [r for r in _read("math_positive.jsonl.gz") if r["source"] == "stackmathqa" and r["id"] not in skip
          and (r.get("meta") or {}).get("url")][:N_QA]
    wikitext = [r for r in _read("non_math_negative.jsonl.gz") if r["source"] == "wikitext2"][:N_PLAIN]
    buf = io.BytesIO()
    writer = WARCWriter(buf, gzip=True)
    info = writer.create_warcinfo_record("demo.warc.gz", {"software": "mathcorpus demo/build_warc.py",
                                                          "format": "WARC File Format 1.0",
                                                          "description": "mathcorpus demo crawl; see NOTICE.md"})
    info.rec_headers.replace_header("WARC-Record-ID", _rid("warcinfo"))
    info.rec_headers.replace_header("WARC-Date", DATE)
    writer.write_record(info)
    for k, r in enumerate(qa):
        url = r["meta"]["url"]
        page = qa_page(r, k).replace("{site}", url.split("/")[2]).encode("utf-8")
        if k % 10 == 0:
            _request(writer, url, r["id"])
        _response(writer, url, page, r["id"])
        if k % 10 == 0:
            _metadata(writer, url, r["id"])
    tsne = (SHARED / "web" / "wikipedia" / "en.wikipedia.org.tsne.html").read_bytes()
    _response(writer, "https://en.wikipedia.org/wiki/T-distributed_stochastic_neighbor_embedding", tsne, "tsne")
    for k, r in enumerate(wikitext):
        _response(writer, f"https://wikitext.demo.invalid/{r['id']}", plain_page(r, k).encode("utf-8"), r["id"])
    png = b"\x89PNG\r\n\x1a\n" + hashlib.sha256(b"demo").digest() * 4
    _response(writer, "https://math.stackexchange.com/static/logo.png", png, "png", ctype="image/png")
    _response(writer, "https://math.stackexchange.com/q/0", b"<html><body><h1>Page not found</h1></body></html>",
              "404", status="404 Not Found")
    _response(writer, "http://math.stackexchange.com/", b"", "redirect", status="301 Moved Permanently",
              extra=[("Location", "https://math.stackexchange.com/")])
    return buf.getvalue()


def main() -> int:
    if not SHARED.is_dir():
        print(f"error: {SHARED} not found; this script needs ../shared/data beside the repo", file=sys.stderr)
        return 1
    data = build()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_bytes(data)
    print(f"{OUT}: {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()[:16]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
