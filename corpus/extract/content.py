"""Main content and serialization: one HTML page → text with every formula as LaTeX.

:func:`extract_page` is the pure function the stage and the quality benchmark call. Steps,
all on an lxml.html tree (resiliparse DOMs crash when mutated on 2.x):

1. decode (corpus/extract/encoding.py) and parse;
2. math, before anything is removed (MathJax v2 formulas live in ``<script>``): the page's
   TeX delimiters (``tex.page_delimiters``) and ``math.replace_math``, which turns every
   formula into one ``<mc-math>`` element; skipped entirely on pages without a signal;
3. boilerplate removal: scripts, styles, forms' controls, ``nav``/``aside``/``footer``, hidden
   elements, ARIA landmarks that are not content, and elements whose class/id names chrome
   (menus, sidebars, cookie banners, share buttons, comment widgets...). Q&A markup
   (StackExchange/MathOverflow posts, Zhihu answers) is protected by name so a question and
   its answers stay;
4. main-content choice: a single ``<main>``/``role=main`` or ``<article>`` when it holds a
   fair share of the page's text, else the body; then link-heavy lists and blocks are dropped
   (never one that holds a formula);
5. serialization: blocks separated by blank lines, headings as ``#``, list items as ``-``/``1.``,
   tables as pipe tables, ``<pre>`` as fenced code with its indentation, formulas as
   sentinels that ``tex.finalize_text`` turns into ``$…$``/``$$…$$`` (escaping literal dollars).

Speed: removal is done with compiled XPath and ``strip_elements`` (C), the one Python pass
over the tree is the serializer's ``iterwalk``.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from lxml import etree
from lxml import html as lhtml

from corpus.extract.encoding import decode_html
from corpus.extract.math import MATH_TAG, replace_math
from corpus.extract.tex import DEFAULT_DELIMITERS, finalize_text, page_delimiters, sentinel


@dataclass
class ExtractedPage:
    """What :func:`extract_page` returns. ``math`` counts formulas by markup (``katex``,
    ``mathjax2``, ``tex_raw``...); ``formulas`` is their total."""

    text: str
    title: str | None = None
    canonical_url: str | None = None
    math: Counter = field(default_factory=Counter)
    formulas: int = 0
    encoding: str | None = None
    encoding_source: str | None = None
    main: str = "body"  # which node was taken as the main content (main, article, body)
    error: str | None = None  # "empty" (nothing to parse) or "not_html" (binary payload)


_PARSER = lhtml.HTMLParser(remove_comments=True, remove_pis=True, recover=True, collect_ids=False,
                           default_doctype=False)
_XML_DECL = re.compile(r"^\s*<\?xml[^>]*\?>", re.I)
_WS = re.compile(r"\s+")

# Removed with their content (tail text kept). head goes after the title was read.
_JUNK_TAGS = ("script", "style", "noscript", "template", "iframe", "object", "embed", "svg", "canvas",
              "button", "input", "select", "textarea", "option", "nav", "aside", "footer", "dialog", "menu",
              "head", "link", "meta", "map", "audio", "video", "source", "track", "picture")
_HIDDEN = etree.XPath(
    "//*[@hidden or @aria-hidden='true' or contains(translate(@style, ' ', ''), 'display:none')"
    " or contains(translate(@style, ' ', ''), 'visibility:hidden')]"
    "[not(descendant-or-self::" + MATH_TAG + ")]")
_ROLES = etree.XPath("//*[@role='navigation' or @role='banner' or @role='contentinfo' or @role='complementary'"
                     " or @role='search' or @role='dialog' or @role='alertdialog' or @role='menu'"
                     " or @role='menubar' or @role='toolbar']")
_PAGE_HEADER = etree.XPath("//header[not(ancestor::article or ancestor::main or ancestor::*[@role='main'])]")
_NAMED = etree.XPath("//*[@class or @id]")
_MAINS = etree.XPath("//main | //*[@role='main']")
_ARTICLES = etree.XPath("//article")
_LINKY = etree.XPath(".//ul | .//ol | .//div | .//section | .//p | .//dl | .//table")
_TITLE = etree.XPath("string(//title)")
_OG_TITLE = etree.XPath("string(//meta[@property='og:title']/@content)")
_CANONICAL = etree.XPath("//link[@rel='canonical']/@href")
_MATHS = etree.XPath("//" + MATH_TAG)
_TEXT_LEN = etree.XPath("string-length(normalize-space(.))")

# Chrome, matched against each dash/underscore part of each class token and the id.
_CHROME = frozenset("""
nav navbar navigation navlinks menu menubar submenu megamenu breadcrumb breadcrumbs sidebar sidebars sidenav
footer cookie cookies consent gdpr banner share sharing sharer social socials sns shares sharethis addthis
comment comments disqus related recommended recommend advert advertisement advertising ads adsense ad sponsor
sponsored promo popup modal overlay newsletter subscribe subscription signup login signin register toolbar
pagination pager widget widgets rss skip skiplink jump editsection catlinks navbox vertical-navbox printfooter
noprint toc tagcloud taglist tags byline-share masthead topbar bottombar copyright disclaimer mw-jump-link
mw-editsection siteSub contentSub jump-to-nav mw-navigation
""".split())
_CHROME_LOWER = frozenset(t.lower() for t in _CHROME)
# Names of content a Q&A page must keep, whatever else their element is called.
_KEEP = re.compile(r"question|answer|post-?text|post-?body|postcell|answercell|s-prose|richcontent|"
                   r"article-?body|entry-?content|post-?content|mw-content|mw-parser-output|main-?content|"
                   r"^content$|^main$|^article$", re.I)
_SOFT_PREFIX = ("has", "with", "no", "is", "show", "hide", "content", "page", "layout", "js", "body", "site-has")
_NEVER_REMOVE = frozenset(("html", "body", "main", "article", MATH_TAG))

_BLOCK = frozenset("""
p div section article main header footer aside nav h1 h2 h3 h4 h5 h6 ul ol li dl dt dd table thead tbody
tfoot tr td th blockquote pre figure figcaption hr address details summary center body html fieldset form
caption title
""".split())
_HEADINGS = {"h1": "# ", "h2": "## ", "h3": "### ", "h4": "#### ", "h5": "##### ", "h6": "###### "}


def _is_chrome(name: str) -> bool:
    for token in name.lower().split():
        if _KEEP.search(token):
            return False
    for token in name.lower().split():
        parts = [p for p in re.split(r"[-_]", token) if p]
        if not parts or parts[0] in _SOFT_PREFIX:
            continue
        if parts[0] in _CHROME or parts[-1] in _CHROME or token in _CHROME_LOWER:
            return True
    return False


def _drop(el: etree._Element) -> None:
    """Remove an element and its content, keeping its tail text in place."""
    parent = el.getparent()
    if parent is None:
        return
    tail = el.tail
    if tail and tail.strip():
        prev = el.getprevious()
        if prev is not None:
            prev.tail = (prev.tail or "") + tail
        else:
            parent.text = (parent.text or "") + tail
    parent.remove(el)


def _remove_chrome(root: etree._Element) -> None:
    etree.strip_elements(root, *_JUNK_TAGS, with_tail=False)
    for xp in (_HIDDEN, _ROLES, _PAGE_HEADER):
        for el in xp(root):
            if el.tag not in _NEVER_REMOVE:
                _drop(el)
    for el in _NAMED(root):
        if el.tag in _NEVER_REMOVE or el.getparent() is None:
            continue
        name = f"{el.get('class') or ''} {el.get('id') or ''}"
        if _is_chrome(name):
            _drop(el)


def _text_len(el: etree._Element) -> int:
    return int(_TEXT_LEN(el))


def _choose_main(root: etree._Element) -> tuple[etree._Element, str]:
    body = root.find("body")
    if body is None:
        body = root
    total = _text_len(body)
    for xp, kind in ((_MAINS, "main"), (_ARTICLES, "article")):
        found = xp(body)
        if len(found) == 1:
            # a teaser <article> or a <main> that is only a header must not hide the page
            if total == 0 or _text_len(found[0]) >= 0.4 * total:
                return found[0], kind
    return body, "body"


def _prune_links(main: etree._Element) -> None:
    """Drop link lists and link-only blocks (related links, tag clouds) that escaped the names."""
    for el in reversed(_LINKY(main)):  # innermost first
        if el.getparent() is None or el.find(".//" + MATH_TAG) is not None:
            continue
        links = el.findall(".//a")
        if len(links) < 3:
            continue
        text = _WS.sub("", "".join(el.itertext()))
        if not text:
            continue
        linked = sum(len(_WS.sub("", "".join(a.itertext()))) for a in links)
        limit = 0.6 if el.tag in ("ul", "ol", "dl") else 0.8
        if linked >= limit * len(text):
            _drop(el)


# ----------------------------------------------------------------------------- serialization
def _norm(s: str) -> str:
    return _WS.sub(" ", s)


def _cell_text(cell: etree._Element) -> str:
    return _norm("".join(cell.itertext())).strip().replace("|", "\\|")


def _table(el: etree._Element) -> str | None:
    """A pipe table, or None for a layout table (walked as ordinary blocks instead)."""
    if el.find(".//table") is not None:
        return None
    rows = []
    for tr in el.iter("tr"):
        cells = [c for c in tr if c.tag in ("td", "th")]
        if cells:
            rows.append(([_cell_text(c) for c in cells], all(c.tag == "th" for c in cells)))
    if len(rows) < 2 or max(len(r) for r, _ in rows) < 2:
        return None
    if any(len(t) > 400 for r, _ in rows for t in r):
        return None
    width = max(len(r) for r, _ in rows)
    lines = []
    for i, (cells, _) in enumerate(rows):
        cells = cells + [""] * (width - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
        if i == 0:
            lines.append("|" + " --- |" * width)
    return "\n".join(lines)


def serialize(main: etree._Element) -> str:
    """Blocks of ``main`` as text (blank line between blocks); <mc-math> text is kept as is."""
    blocks: list[str] = []
    cur: list[str] = []
    lists: list[list[int]] = []  # per open list: [is_ordered, counter]

    def flush() -> None:
        if not cur:
            return
        text = "".join(cur)
        cur.clear()
        lines = [ln.strip() for ln in text.split("\n")]
        text = "\n".join(ln for ln in lines if ln)
        if text and text.strip("-#>| ") :
            blocks.append(text)

    walker = etree.iterwalk(main, events=("start", "end"))
    for event, el in walker:
        tag = el.tag
        if not isinstance(tag, str):
            continue
        if event == "start":
            if tag in _BLOCK:
                flush()
                if tag in _HEADINGS:
                    cur.append(_HEADINGS[tag])
                elif tag in ("ul", "ol"):
                    lists.append([tag == "ol", 0])
                elif tag == "li":
                    depth = max(len(lists) - 1, 0)
                    if lists and lists[-1][0]:
                        lists[-1][1] += 1
                        cur.append("  " * depth + f"{lists[-1][1]}. ")
                    else:
                        cur.append("  " * depth + "- ")
                elif tag == "pre":
                    code = "".join(el.itertext()).strip("\n")
                    if code.strip():
                        blocks.append("```\n" + code + "\n```")
                    walker.skip_subtree()
                    continue
                elif tag == "table":
                    t = _table(el)
                    if t is not None:
                        blocks.append(t)
                        walker.skip_subtree()
                        continue
                elif tag == "hr":
                    continue
            elif tag == "br":
                cur.append("\n")
            elif tag == "code":
                cur.append("`")  # finalize_text copies `…` verbatim (no TeX, no $ escaping)
            elif tag == MATH_TAG:
                cur.append(el.text or "")
                walker.skip_subtree()
                continue
            if el.text:
                cur.append(_norm(el.text))
        else:
            if tag in _BLOCK:
                flush()
                if tag in ("ul", "ol") and lists:
                    lists.pop()
            elif tag in ("td", "th"):
                cur.append("\t")
            elif tag == "code":
                cur.append("`")
            if el.tail and el is not main:
                cur.append(_norm(el.tail))
    flush()
    return "\n\n".join(blocks)


# ----------------------------------------------------------------------------- entry point
def _looks_binary(text: str) -> bool:
    head = text[:4096]
    if not head:
        return False
    bad = head.count("\x00") + head.count("\ufffd")
    return bad > 0.05 * len(head)


def parse(text: str) -> etree._Element | None:
    """Parse decoded HTML; None when there is nothing to parse."""
    text = _XML_DECL.sub("", text, count=1) if text.lstrip().startswith("<?") else text
    if not text.strip():
        return None
    try:
        return lhtml.document_fromstring(text, parser=_PARSER)
    except (etree.ParserError, ValueError):
        return None


def extract_page(html: str | bytes, url: str | None = None, *, http_charset: str | None = None,
                 math: bool = True) -> ExtractedPage:
    """Extract the main text of one page with its formulas as LaTeX.

    ``html`` is the raw page (bytes are decoded with the HTTP charset, the page's meta charset,
    then detection) or already-decoded text. ``math=False`` skips the DOM math pass (the stage
    does that for pages the byte prefilter found no math signal in); literal dollars are still
    escaped. Never raises on bad input: ``error`` says "empty" or "not_html" instead.
    """
    enc = how = None
    if isinstance(html, bytes):
        text, enc, how = decode_html(html, http_charset)
    else:
        text = html
    if _looks_binary(text):
        return ExtractedPage("", encoding=enc, encoding_source=how, error="not_html")
    root = parse(text)
    if root is None:
        return ExtractedPage("", encoding=enc, encoding_source=how, error="empty")
    title = _norm(_TITLE(root) or _OG_TITLE(root)).strip() or None
    canon = _CANONICAL(root)
    canonical = canon[0].strip() if canon and canon[0].strip() else None
    counts: Counter = Counter()
    delims = DEFAULT_DELIMITERS
    if math:
        delims = page_delimiters(root, text)
        counts.update(replace_math(root, delims))
    formulas: list[tuple[str, bool]] = []
    for k, el in enumerate(_MATHS(root)):
        formulas.append((el.text or "", el.get("data-display") == "1"))
        el.text = sentinel(k)
        for child in list(el):
            el.remove(child)
    _remove_chrome(root)
    main, kind = _choose_main(root)
    _prune_links(main)
    serialized = serialize(main)
    final, raw_counts = finalize_text(serialized, formulas, delims)
    counts.update(raw_counts)
    counts.pop("empty", None)
    n = sum(v for k, v in counts.items() if k != "unrecoverable")
    return ExtractedPage(final, title=title, canonical_url=canonical, math=counts, formulas=n, encoding=enc,
                         encoding_source=how, main=kind, error=None if final.strip() else "empty")
