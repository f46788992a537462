"""Build the renderer-made test pages in tests/data/web/built/ (run by hand, output committed).

Text and formulas come from ../shared/data/corpus_samples/math_positive.jsonl.gz (never from
benchmark files). Each page's formulas are rendered by the real renderer of its markup
(render_formulas.cjs: npm katex, mathjax-full@3 CHTML/SVG with and without assistive MathML,
mathjax@4; Python latex2mathml for bare MathML), or carried as the source the markup keeps
(MathJax v2 scripts, LaTeX image URLs, raw TeX under a declared delimiter config), and wrapped
in a page template with real boilerplate (navigation, cookie banner, sidebar, share buttons,
comment chrome, footer; a Q&A layout with question and answers). Next to each page,
``<name>.json`` is its ground truth: formulas (LaTeX, display flag), main-text fragments,
boilerplate fragments, literal-dollar sentences.

    npm install --prefix /tmp/math/node katex@0.16 mathjax-full@3 mathjax@4
    NODE_PATH=/tmp/math/node/node_modules .venv/bin/python tests/data/web/builder/build_pages.py
"""

from __future__ import annotations

import gzip
import html
import json
import os
import random
import re
import subprocess
import zlib
import sys
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
OUT = HERE.parent / "built"
SOURCE = Path(os.environ.get("MC_SHARED", HERE.parents[4] / "shared")) / "data/corpus_samples/math_positive.jsonl.gz"
SEED = 20261204

_FORMULA = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\\\((.+?)\\\)|(?<![\\$])\$([^$\n]+?)\$(?!\d)", re.S)
_BAD_TEX = re.compile(r"\\(label|tag|newcommand|def|ref|eqref|require|color|href|mbox|displaylines|"
                      r"bbox|class|cssId|style|text\{[^}]*\$)|\$|%|\\\\\s*$|<|>|&(?!\s)|\\\{\\\}")
_WORDS = re.compile(r"[A-Za-z][A-Za-z ,.;:'()-]{19,}")


def parse_paragraph(par: str) -> list[tuple[str, str, bool]] | None:
    """[('text', s, False) | ('tex', latex, display)] or None if the paragraph is ambiguous."""
    segs: list[tuple[str, str, bool]] = []
    pos = 0
    for m in _FORMULA.finditer(par):
        prose = par[pos:m.start()]
        segs.append(("text", prose, False))
        if m.group(1) is not None:
            latex, disp = m.group(1), True
        elif m.group(2) is not None:
            latex, disp = m.group(2), True
        elif m.group(3) is not None:
            latex, disp = m.group(3), False
        else:
            latex, disp = m.group(4), False
        latex = " ".join(latex.split())
        if not latex or len(latex) > 220 or _BAD_TEX.search(latex) or latex.count("{") != latex.count("}"):
            return None
        segs.append(("tex", latex, disp))
        pos = m.end()
    segs.append(("text", par[pos:], False))
    for kind, s, _ in segs:
        if kind == "text" and re.search(r"[$\\`*_#<>{}\[\]|]|http", s):
            return None
    return [(k, _squash(s) if k == "text" else s, d) for k, s, d in segs]


def chunk(segs: list[tuple[str, str, bool]], limit: int = 500) -> list[list[tuple[str, str, bool]]]:
    """Split a long paragraph at sentence ends in its prose, so pages have several blocks."""
    out: list[list[tuple[str, str, bool]]] = [[]]
    size = 0
    for k, s, d in segs:
        if k == "text" and size > limit and ". " in s:
            head, tail = s.split(". ", 1)
            out[-1].append((k, head + ".", d))
            out.append([(k, tail, d)])
            size = len(tail)
            continue
        out[-1].append((k, s, d))
        size += len(s)
    return [c for c in out if c]


def _squash(s: str) -> str:
    """Collapse inner whitespace, keeping one leading/trailing space where there was one."""
    core = " ".join(s.split())
    if not core:
        return " " if s else ""
    return (" " if s[:1].isspace() else "") + core + (" " if s[-1:].isspace() else "")


def load_docs(n: int) -> list[list[list[tuple[str, str, bool]]]]:
    docs = []
    with gzip.open(SOURCE, "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    random.Random(SEED).shuffle(rows)
    for row in rows:
        pars = []
        for par in re.split(r"\n\s*\n", row["text"]):
            par = " ".join(par.split("\n")).strip()
            if len(par) < 30:
                continue
            segs = parse_paragraph(par)
            if segs is None:
                continue
            pars.extend(chunk(segs))
            if len(pars) >= 9:
                break
        nform = sum(1 for p in pars for k, _, _ in p if k == "tex")
        ntext = sum(1 for p in pars if any(k == "text" and len(s) > 40 for k, s, _ in p))
        if 4 <= nform and ntext >= 2:
            # cap formulas per page (page size)
            kept, count = [], 0
            for p in pars:
                c = sum(1 for k, _, _ in p if k == "tex")
                if count + c > 14 and kept:
                    break
                kept.append(p)
                count += c
            docs.append(kept)
        if len(docs) >= n:
            break
    return docs


def render_batch(jobs: list[dict]) -> dict[int, dict]:
    node_path = os.environ.get("NODE_PATH", "/tmp/math/node/node_modules")
    inp = "\n".join(json.dumps(j) for j in jobs) + "\n"
    res = subprocess.run(["node", str(HERE / "render_formulas.cjs")], input=inp, text=True,
                         capture_output=True, env={**os.environ, "NODE_PATH": node_path}, check=True,
                         timeout=900)
    return {r["id"]: r for r in map(json.loads, res.stdout.splitlines())}


# ---- boilerplate pools -------------------------------------------------------------------
SITES = ["Prime Notes", "The Lemma Log", "Calculus Corner", "Vector Space Weekly", "Proof Garden",
         "Open Problems Daily", "Integral Insights", "Matrix Musings"]
NAV = ["Home", "Archive", "Topics", "About us", "Contact", "Subscribe", "Log in", "Search"]
COOKIE = ["We use cookies to improve your experience on our website and to show you relevant advertising.",
          "By continuing to browse this site you agree to our use of cookies and our privacy policy.",
          "This website stores cookies on your computer to personalise content and analyse our traffic."]
SIDEBAR = ["Popular posts this week from our community of contributors",
           "Sign up for our newsletter to receive the latest articles in your inbox",
           "Follow us on social media for daily puzzles and announcements",
           "Related articles you might also enjoy reading next weekend"]
SHARE = ["Share this article on Twitter", "Share this article on Facebook", "Copy the link to this article"]
COMMENTS = ["Leave a reply to join the discussion below", "You must be logged in to post a comment",
            "Your email address will not be published and required fields are marked"]
FOOTER = ["All rights reserved by the publishers of this website", "Privacy policy and terms of service",
          "Powered by an open source publishing platform and hosted in the cloud"]
QA_CHROME = ["Improve this answer and follow the discussion", "Add a comment to ask for clarification",
             "Not the answer you are looking for? Browse other questions tagged algebra",
             "Hot network questions from across the network"]
LITERAL = ["The textbook costs $45 and the workbook costs $12, so the bundle saves you $7 overall.",
           "Tickets were $5 for students and $10 for everyone else at the seminar.",
           "A used calculator sells for about $20, while a new one is closer to $90 in most stores.",
           "Between $3 and $4 per page is what the printing shop charged us last term."]


def boiler_pick(rng: random.Random) -> dict[str, list[str]]:
    return {"cookie": rng.sample(COOKIE, 1), "sidebar": rng.sample(SIDEBAR, 2),
            "share": rng.sample(SHARE, 2), "comments": rng.sample(COMMENTS, 2),
            "footer": rng.sample(FOOTER, 2)}


def page_html(title: str, head: str, body_main: str, bp: dict[str, list[str]], site: str,
              layout: str, tail_scripts: str = "") -> str:
    nav = "".join(f'<li><a href="/{n.lower().replace(" ", "-")}">{n}</a></li>' for n in NAV)
    side = "".join(f'<div class="widget"><h3>{s.split()[0]}</h3><p>{s}.</p></div>' for s in bp["sidebar"])
    share = "".join(f'<a class="share-btn" href="#">{s}</a>' for s in bp["share"])
    comments = "".join(f"<p>{s}.</p>" for s in bp["comments"])
    foot = "".join(f"<p>{s}.</p>" for s in bp["footer"])
    article = (f'<article class="post"><header><h1 class="entry-title">{html.escape(title)}</h1>'
               f'<div class="meta">Posted by <a href="/u/1">admin</a> on March 3, 2021</div></header>'
               f'<div class="entry-content">{body_main}</div>'
               f'<div class="share">{share}</div></article>')
    if layout == "qa":
        article = body_main
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)} - {site}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="canonical" href="https://example.org/{re.sub(r'[^a-z0-9]+', '-', title.lower())[:60]}">
<link rel="stylesheet" href="/static/site.css">
{head}
</head><body>
<div id="cookie-banner" class="cookie-consent"><p>{bp["cookie"][0]}</p><button>Accept all</button><button>Manage settings</button></div>
<header class="site-header"><a class="logo" href="/">{site}</a><nav class="main-nav"><ul>{nav}</ul></nav></header>
<div class="container"><main id="main">
{article}
<section id="comments" class="comments-area"><h2>3 Comments</h2>{comments}<form><textarea></textarea><button>Post Comment</button></form></section>
</main>
<aside class="sidebar">{side}</aside></div>
<footer class="site-footer">{foot}<p>&copy; 2021 {site}</p></footer>
{tail_scripts}
</body></html>
"""


def text_fragments(segs: list[tuple[str, str, bool]]) -> list[str]:
    out = []
    for k, s, _ in segs:
        if k == "text":
            for frag in re.split(r"(?<=[.?!])\s+", s):
                frag = frag.strip()
                if len(frag) >= 25 and len(frag.split()) >= 4:
                    out.append(frag)
    return out


MARKUP_OF = {"katex": "katex", "katex_autorender": "katex", "katex_mathml": "katex",
             "katex_datamath": "data_tex", "mj3_chtml": "mathjax3", "mj3_chtml_noassist": "mathjax3",
             "mj3_svg": "mathjax3", "mj3_svg_noassist": "mathjax3", "mj4_chtml": "mathjax4",
             "mathjax2": "mathjax2", "mathjax2_preview": "mathjax2", "mathml": "mathml",
             "latex_img": "latex_img", "raw_dollar": "tex_raw", "raw_custom": "tex_raw",
             "raw_katex_autorender": "tex_raw", "qa_raw": "tex_raw",
             "mj2_browser": "mathjax2", "katex_browser": "katex"}
RENDERER_OF = {"katex": "katex", "katex_autorender": "katex", "katex_mathml": "katex_mathml",
               "katex_datamath": "katex_html", "mj3_chtml": "mj3_chtml",
               "mj3_chtml_noassist": "mj3_chtml_noassist", "mj3_svg": "mj3_svg",
               "mj3_svg_noassist": "mj3_svg_noassist", "mj4_chtml": "mj4_chtml"}
PLAN = [("katex", 3), ("katex_autorender", 1), ("katex_mathml", 2), ("katex_datamath", 2),
        ("mj3_chtml", 3), ("mj3_chtml_noassist", 3), ("mj3_svg", 2), ("mj3_svg_noassist", 2),
        ("mj4_chtml", 2), ("mathjax2", 2), ("mathjax2_preview", 1), ("mathml", 3), ("latex_img", 3),
        ("raw_dollar", 2), ("raw_custom", 2), ("raw_katex_autorender", 2), ("qa_raw", 2),
        ("mj2_browser", 2), ("katex_browser", 2)]
LITERAL_PAGES = {"mj2_browser": 0, "katex_browser": 1, "katex": 0, "raw_dollar": 0, "raw_custom": 1, "raw_katex_autorender": 0, "mathjax2": 1,
                 "qa_raw": 0, "mj3_chtml": 1}

HEAD = {
    "katex": '<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/katex@0.16.9/dist/katex.min.css">',
    "mj3": '<script id="MathJax-script" async src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>',
    "mj4": '<script id="MathJax-script" async src="https://cdn.jsdelivr.net/npm/mathjax@4/tex-mml-chtml.js"></script>',
    "mj2": '<script type="text/javascript" src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/MathJax.js?config=TeX-AMS_HTML"></script>',
}
AUTORENDER = """<script defer src="https://cdn.jsdelivr.net/npm/katex@0.16.9/dist/contrib/auto-render.min.js"></script>
<script>document.addEventListener("DOMContentLoaded", function() {
  renderMathInElement(document.body, {
    delimiters: [
      {left: "$$", right: "$$", display: true},
      {left: "\\\\[", right: "\\\\]", display: true},
      {left: "\\\\(", right: "\\\\)", display: false}
    ],
    throwOnError: false
  });
});</script>"""
MJ2_DOLLAR = """<script type="text/x-mathjax-config">
MathJax.Hub.Config({
  tex2jax: {inlineMath: [['$','$'], ['\\\\(','\\\\)']], displayMath: [['$$','$$'], ['\\\\[','\\\\]']],
            processEscapes: true},
  "HTML-CSS": {linebreaks: {automatic: true}}
});
</script>"""
MJ3_CUSTOM = """<script>
window.MathJax = {
  tex: {
    inlineMath: [['[math]', '[/math]']],
    displayMath: [['[dmath]', '[/dmath]']],
    processEscapes: true
  },
  options: {skipHtmlTags: ['script', 'noscript', 'style', 'textarea', 'pre', 'code']}
};
</script>"""


def main() -> None:
    rng = random.Random(SEED)
    total = sum(n for _, n in PLAN)
    docs = load_docs(total * 2 + 10)
    print(f"{len(docs)} candidate docs", file=sys.stderr)
    import latex2mathml.converter as l2m

    # Render every candidate doc's formulas with every renderer it may be used with.
    jobs, jid = [], 0
    index: dict[tuple[int, int, str], int] = {}
    for di, doc in enumerate(docs):
        flat = [(l, d) for p in doc for k, l, d in p if k == "tex"]
        for fi, (latex, disp) in enumerate(flat):
            for r in set(RENDERER_OF.values()) | {"katex_mathml"}:
                index[(di, fi, r)] = jid
                jobs.append({"id": jid, "renderer": r, "latex": latex, "display": disp})
                jid += 1
    results = render_batch(jobs)

    def rendered(di: int, r: str) -> list[str] | None:
        doc = docs[di]
        n = sum(1 for p in doc for k, _, _ in p if k == "tex")
        out = []
        for fi in range(n):
            res = results[index[(di, fi, r)]]
            if "error" in res:
                return None
            out.append(res["html"])
        # every page's formulas must also be valid for KaTeX (ground truth sanity)
        return out

    OUT.mkdir(parents=True, exist_ok=True)
    for old in OUT.glob("*"):
        old.unlink()
    used: set[int] = set()
    for variant, count in PLAN:
        for n in range(count):
            # pick a doc that renders fully with this variant's renderer and with KaTeX
            di = None
            for cand in range(len(docs)):
                if cand in used:
                    continue
                if rendered(cand, "katex_mathml") is None:
                    continue
                if variant in RENDERER_OF and rendered(cand, RENDERER_OF[variant]) is None:
                    continue
                if variant == "mathml":
                    try:
                        for p in docs[cand]:
                            for k, l, _ in p:
                                if k == "tex":
                                    l2m.convert(l)
                    except Exception:  # noqa: BLE001 - latex2mathml raises many types
                        continue
                di = cand
                break
            if di is None:
                print(f"no doc for {variant}", file=sys.stderr)
                continue
            used.add(di)
            name = f"{variant}-{n + 1}"
            build_page(name, variant, docs[di], rendered(di, RENDERER_OF[variant]) if variant in RENDERER_OF else None,
                       rng, literal=(LITERAL_PAGES.get(variant) == n), l2m=l2m)
    build_asciimath_page(rng)
    print(f"wrote {len(list(OUT.glob('*.html')))} pages to {OUT}", file=sys.stderr)


def build_page(name: str, variant: str, doc: list, htmls: list[str] | None, rng: random.Random,
               literal: bool, l2m) -> None:
    site = rng.choice(SITES)
    bp = boiler_pick(rng)
    formulas: list[dict] = []
    main_frags: list[str] = []
    blocks: list[str] = []
    fi = 0
    for pi, segs in enumerate(doc):
        parts = []
        alone = sum(1 for k, s, _ in segs if k == "text" and s.strip()) == 0
        for k, s, d in segs:
            if k == "text":
                parts.append(html.escape(s, quote=False))
                continue
            formulas.append({"latex": s, "display": d})
            parts.append(render_one(variant, s, d, htmls[fi] if htmls else None, alone, l2m))
            fi += 1
        main_frags += text_fragments(segs)
        tag = "p"
        blocks.append(f"<{tag}>" + "".join(parts).strip() + f"</{tag}>")
        if pi == 1:
            blocks.append(f"<h2>{rng.choice(['Background', 'The main idea', 'Worked example', 'Discussion'])}</h2>")
    literal_sentences = []
    if literal:
        sent = rng.choice(LITERAL)
        literal_sentences.append(sent)
        main_frags.append(sent)
        shown = html.escape(sent, quote=False)
        if variant == "mj2_browser":  # MathJax's processEscapes: an author escapes prose dollars
            shown = shown.replace("$", "\\$")
        blocks.insert(1, f"<p>{shown}</p>")
    title = (main_frags[0] if main_frags else "Notes")[:60].rstrip(" ,.;:")
    head, tail = "", ""
    markup = MARKUP_OF[variant]
    if variant.startswith("katex") and variant != "katex_browser":
        head = HEAD["katex"]
        if variant == "katex_autorender":
            tail = AUTORENDER
    elif variant.startswith("mj3"):
        head = HEAD["mj3"]
    elif variant == "mj4_chtml":
        head = HEAD["mj4"]
    elif variant.startswith("mathjax2"):
        head = HEAD["mj2"]
    elif variant in ("raw_dollar", "qa_raw"):
        head = MJ2_DOLLAR + HEAD["mj2"]
    elif variant == "raw_custom":
        head = MJ3_CUSTOM + HEAD["mj3"]
    elif variant == "raw_katex_autorender":
        head = HEAD["katex"]
        tail = AUTORENDER
    elif variant == "mj2_browser":
        head = MJ2_DOLLAR + f'<script src="{NODE2}/mathjax/MathJax.js?config=TeX-AMS_CHTML"></script>'
    elif variant == "katex_browser":
        head = (f'<link rel="stylesheet" href="{NODE}/katex/dist/katex.min.css">'
                f'<script src="{NODE}/katex/dist/katex.min.js"></script>')
        tail = AUTORENDER.replace("https://cdn.jsdelivr.net/npm/katex@0.16.9/dist/contrib/auto-render.min.js",
                                  f"{NODE}/katex/dist/contrib/auto-render.min.js")
    body = "\n".join(blocks)
    layout = "blog"
    boiler = [s for v in bp.values() for s in v] + ["Posted by admin on March 3, 2021"]
    if variant == "qa_raw":
        layout = "qa"
        body, extra_main, extra_boiler = qa_layout(title, blocks, rng)
        main_frags += extra_main
        boiler = [s for k, v in bp.items() for s in v] + extra_boiler
    page = page_html(title, head, body, bp, site, layout, tail)
    if variant.endswith("_browser"):
        page = browser_render(page)
    (OUT / f"{name}.html").write_text(page, encoding="utf-8")
    truth = {"name": name, "markup": markup, "variant": variant, "formulas": formulas,
             "main": main_frags, "boilerplate": boiler, "literal_dollar": literal_sentences,
             "source": "math_positive.jsonl.gz (shared/data/corpus_samples)"}
    (OUT / f"{name}.json").write_text(json.dumps(truth, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


NODE = "file:///tmp/math/node/node_modules"
NODE2 = "file:///tmp/math/node2/node_modules"  # npm mathjax@2.7.9
CDN = {NODE2 + "/mathjax/": "https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.9/",
       NODE + "/katex/dist/": "https://cdn.jsdelivr.net/npm/katex@0.16.9/dist/"}


def browser_render(page: str) -> str:
    """Typeset the page in headless Chromium and return the DOM a saved page would hold."""
    import tempfile

    with tempfile.NamedTemporaryFile("w", suffix=".html", dir="/tmp", delete=False, encoding="utf-8") as fh:
        fh.write(page)
    try:
        res = subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu",
                              "--allow-file-access-from-files", "--virtual-time-budget=20000",
                              "--dump-dom", "file://" + fh.name], capture_output=True, text=True,
                             timeout=120, check=True)
    finally:
        os.unlink(fh.name)
    dom = res.stdout
    if "MathJax-Element-1" not in dom and 'class="katex"' not in dom:
        Path("/tmp/math/br_fail.html").write_text(page, encoding="utf-8")
        raise RuntimeError("the renderer did not typeset the page (saved to /tmp/math/br_fail.html)")
    for local, cdn in CDN.items():
        dom = dom.replace(local, cdn)
    # MathJax 2 injects ~60 kB of menu/zoom CSS; keep one line of it, not the bulk
    dom = re.sub(r"<style type=\"text/css\">\.MathJax_Hover_Frame.*?</style>", "", dom, flags=re.S)
    dom = re.sub(r"<style type=\"text/css\">#MathJax_About.*?</style>", "", dom, flags=re.S)
    return dom


def qa_layout(title: str, blocks: list[str], rng: random.Random) -> tuple[str, list[str], list[str]]:
    """Question = first blocks, answers = the rest, with Stack Exchange-like chrome."""
    cut = max(1, len(blocks) // 3)
    q = "\n".join(blocks[:cut])
    answers = blocks[cut:]
    chrome = rng.sample(QA_CHROME, 3)
    ans_html = []
    per = max(1, len(answers) // 2)
    for i in range(0, len(answers), per):
        a = "\n".join(answers[i:i + per])
        ans_html.append(f'<div class="answer" id="answer-{i}"><div class="votecell"><span class="vote-count">{rng.randint(0, 40)}</span></div>'
                        f'<div class="answercell"><div class="s-prose js-post-body">{a}</div>'
                        f'<div class="post-menu"><a href="#">Share</a> <a href="#">{chrome[0]}</a></div>'
                        f'<div class="user-info">answered Jan 3, 2019 at 10:12</div></div>'
                        f'<div class="comments"><a class="js-add-link" href="#">{chrome[1]}</a></div></div>')
    body = (f'<div id="question-header"><h1 itemprop="name">{html.escape(title)}</h1></div>'
            f'<div class="question"><div class="s-prose js-post-body">{q}</div>'
            f'<div class="post-taglist"><a class="post-tag">algebra</a> <a class="post-tag">calculus</a></div></div>'
            f'<div id="answers"><h2>{len(ans_html)} Answers</h2>' + "".join(ans_html) + "</div>"
            f'<div class="bottom-notice"><p>{chrome[2]}.</p></div>')
    return body, [], chrome


def render_one(variant: str, latex: str, disp: bool, rendered: str | None, alone: bool, l2m) -> str:
    esc = html.escape
    if variant in ("katex", "katex_autorender", "katex_mathml", "mj3_chtml", "mj3_chtml_noassist",
                   "mj3_svg", "mj3_svg_noassist", "mj4_chtml"):
        return rendered or ""
    if variant == "katex_datamath":
        cls = "math-block" if disp else "math-inline"
        return f'<span class="{cls}" data-math="{esc(latex)}">{rendered}</span>'
    if variant == "mathjax2":
        typ = "math/tex; mode=display" if disp else "math/tex"
        return f'<script type="{typ}">{latex}</script>'
    if variant == "mathjax2_preview":
        typ = "math/tex; mode=display" if disp else "math/tex"
        return (f'<span class="MathJax_Preview" style="color: inherit;">{esc(latex)}</span>'
                f'<script type="{typ}" id="MathJax-Element-{zlib.crc32(latex.encode()) % 1000}">{latex}</script>')
    if variant == "mathml":
        return l2m.convert(latex, display="block" if disp else "inline")
    if variant == "latex_img":
        q = quote(latex)
        style = sum(map(ord, latex)) % 3
        if style == 0:
            src = f"https://latex.codecogs.com/png.latex?{q}"
            alt = ""
        elif style == 1:
            src = f"https://s0.wp.com/latex.php?latex={quote(latex, safe='')}&amp;bg=ffffff&amp;fg=000000&amp;s=0"
            alt = latex
        else:
            src = f"https://www.example.edu/cgi-bin/mimetex.cgi?{q}"
            alt = latex
        cls = "latex" if style == 1 else ("display-math" if disp else "inline-math")
        img = f'<img src="{src}" alt="{esc(alt)}" title="{esc(alt)}" class="{cls}">'
        # WordPress-style display: the image alone in a centred paragraph
        return f'</p><p style="text-align:center">{img}</p><p>' if disp and not alone else img
    if variant == "mj2_browser":  # raw TeX, typeset by MathJax 2 in Chromium
        return f"$${esc(latex, quote=False)}$$" if disp else f"${esc(latex, quote=False)}$"
    if variant == "katex_browser":  # raw TeX, typeset by KaTeX auto-render in Chromium
        return f"\\[{esc(latex, quote=False)}\\]" if disp else f"\\({esc(latex, quote=False)}\\)"
    if variant == "raw_dollar":
        return f"$${esc(latex, quote=False)}$$" if disp else f"${esc(latex, quote=False)}$"
    if variant == "qa_raw":  # Stack Exchange wraps raw TeX in span.math-container
        body = f"$${esc(latex, quote=False)}$$" if disp else f"${esc(latex, quote=False)}$"
        return f'<span class="math-container">{body}</span>'
    if variant == "raw_custom":
        return f"[dmath]{esc(latex, quote=False)}[/dmath]" if disp else f"[math]{esc(latex, quote=False)}[/math]"
    if variant == "raw_katex_autorender":  # pandoc's HTML shape
        if disp:
            return f'<span class="math display">\\[{esc(latex, quote=False)}\\]</span>'
        return f'<span class="math inline">\\({esc(latex, quote=False)}\\)</span>'
    raise ValueError(variant)


ASCIIMATH = [  # (AsciiMath source, LaTeX it means), written for this page
    ("sum_(i=1)^n i = (n(n+1))/2", r"\sum_{i=1}^{n} i = \frac{n(n+1)}{2}", True),
    ("x = (-b +- sqrt(b^2 - 4ac))/(2a)", r"x = \frac{-b \pm \sqrt{b^2 - 4ac}}{2a}", True),
    ("int_0^1 x^2 dx = 1/3", r"\int_0^1 x^2 dx = \frac{1}{3}", False),
    ("alpha + beta = gamma", r"\alpha + \beta = \gamma", False),
    ("lim_(x->0) sin(x)/x = 1", r"\lim_{x \to 0} \frac{\sin(x)}{x} = 1", True),
    ("root(3)(27) = 3", r"\sqrt[3]{27} = 3", False),
    ("[[a,b],[c,d]]", r"\begin{bmatrix} a & b \\ c & d \end{bmatrix}", True),
    ("e^(i pi) + 1 = 0", r"e^{i \pi} + 1 = 0", False),
    ("a_n = a_(n-1) + a_(n-2)", r"a_n = a_{n-1} + a_{n-2}", False),
    ("f'(x) = lim_(h->0) (f(x+h)-f(x))/h", r"f'(x) = \lim_{h \to 0} \frac{f(x+h)-f(x)}{h}", True),
]


def build_asciimath_page(rng: random.Random) -> None:
    bp = boiler_pick(rng)
    site = rng.choice(SITES)
    prose = ["The first identity every student meets is the sum of the first natural numbers.",
             "Solving a quadratic equation always comes back to the same formula.",
             "Integrals of polynomials over the unit interval are easy to evaluate.",
             "Greek letters are common names for angles in a triangle.",
             "The classic limit of the sine function appears in every calculus course.",
             "Cube roots of perfect cubes are whole numbers.",
             "A two by two matrix is written with square brackets.",
             "Euler's identity links five fundamental constants together.",
             "The Fibonacci numbers satisfy a simple recurrence relation.",
             "The derivative is defined as a limit of difference quotients."]
    blocks, formulas = [], []
    for (src, latex, disp), p in zip(ASCIIMATH, prose):
        typ = "math/asciimath; mode=display" if disp else "math/asciimath"
        sc = f'<script type="{typ}">{src}</script>'  # script text is raw in HTML
        blocks.append(f"<p>{p} {sc}</p>" if not disp else f"<p>{p}</p>\n<div>{sc}</div>")
        formulas.append({"latex": latex, "display": disp})
    head = ('<script type="text/x-mathjax-config">MathJax.Hub.Config({asciimath2jax: {delimiters: [["`","`"]]}});</script>'
            '<script src="https://cdnjs.cloudflare.com/ajax/libs/mathjax/2.7.7/MathJax.js?config=AM_CHTML"></script>')
    page = page_html("AsciiMath notes for beginners", head, "\n".join(blocks), bp, site, "blog")
    (OUT / "asciimath-1.html").write_text(page, encoding="utf-8")
    truth = {"name": "asciimath-1", "markup": "asciimath", "variant": "asciimath", "formulas": formulas,
             "main": prose, "boilerplate": [s for v in bp.values() for s in v], "literal_dollar": [],
             "source": "AsciiMath written for this page; LaTeX equivalents alongside"}
    (OUT / "asciimath-1.json").write_text(json.dumps(truth, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
