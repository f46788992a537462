// Render LaTeX formulas with the real renderers (KaTeX, MathJax v3 CHTML/SVG with and without
// assistive MathML, MathJax v4 CHTML) for the test-page builder (build_pages.py).
// Input: JSON lines {id, renderer, latex, display} on stdin. Output: JSON lines {id, html} or
// {id, error}. Needs NODE_PATH pointing at a node_modules with katex, mathjax-full@3, mathjax@4
// (install under /tmp, never in the repo: see README.md in this folder).
'use strict';
const readline = require('readline');
const katex = require('katex');
const {mathjax} = require('mathjax-full/js/mathjax.js');
const {TeX} = require('mathjax-full/js/input/tex.js');
const {CHTML} = require('mathjax-full/js/output/chtml.js');
const {SVG} = require('mathjax-full/js/output/svg.js');
const {liteAdaptor} = require('mathjax-full/js/adaptors/liteAdaptor.js');
const {RegisterHTMLHandler} = require('mathjax-full/js/handlers/html.js');
const {AssistiveMmlHandler} = require('mathjax-full/js/a11y/assistive-mml.js');
const {AllPackages} = require('mathjax-full/js/input/tex/AllPackages.js');

const adaptor = liteAdaptor();
AssistiveMmlHandler(RegisterHTMLHandler(adaptor));
const packages = AllPackages.filter((p) => p !== 'bussproofs');
const docs = {};
function mj3(kind, assistive) {
  const key = kind + assistive;
  if (!docs[key]) {
    const tex = new TeX({packages});
    const out = kind === 'svg' ? new SVG({fontCache: 'none'}) : new CHTML({fontURL: 'https://cdn.jsdelivr.net/npm/mathjax@3/es5/output/chtml/fonts/woff-v2'});
    docs[key] = mathjax.document('', {InputJax: tex, OutputJax: out, enableAssistiveMml: assistive});
  }
  return docs[key];
}

let mj4 = null;
async function mathjax4() {
  if (!mj4) {
    const MathJax = require('mathjax');
    mj4 = await MathJax.init({
      loader: {load: ['input/tex', 'output/chtml', 'a11y/assistive-mml']},
      output: {font: 'mathjax-newcm'},
      startup: {typeset: false},
    });
  }
  return mj4;
}

async function render(job) {
  const {renderer, latex, display} = job;
  switch (renderer) {
    case 'katex':
      return katex.renderToString(latex, {displayMode: display, throwOnError: true, output: 'htmlAndMathml'});
    case 'katex_mathml':
      return katex.renderToString(latex, {displayMode: display, throwOnError: true, output: 'mathml'});
    case 'katex_html':  // rendered spans only; the page wrapper keeps the source in data-math
      return katex.renderToString(latex, {displayMode: display, throwOnError: true, output: 'html'});
    case 'mj3_chtml': case 'mj3_chtml_noassist': case 'mj3_svg': case 'mj3_svg_noassist': {
      const kind = renderer.includes('svg') ? 'svg' : 'chtml';
      const doc = mj3(kind, !renderer.endsWith('noassist'));
      const node = doc.convert(latex, {display});
      const html = adaptor.outerHTML(node);
      if (html.includes('merror') || html.includes('data-mjx-error')) throw new Error('mathjax error');
      return html;
    }
    case 'mj4_chtml': {
      const MJ = await mathjax4();
      const node = await MJ.tex2chtmlPromise(latex, {display});
      const html = MJ.startup.adaptor.outerHTML(node);
      if (html.includes('merror') || html.includes('data-mjx-error')) throw new Error('mathjax error');
      return html;
    }
    default:
      throw new Error('unknown renderer ' + renderer);
  }
}

(async () => {
  const rl = readline.createInterface({input: process.stdin});
  for await (const line of rl) {
    if (!line.trim()) continue;
    const job = JSON.parse(line);
    try {
      process.stdout.write(JSON.stringify({id: job.id, html: await render(job)}) + '\n');
    } catch (e) {
      process.stdout.write(JSON.stringify({id: job.id, error: String(e.message || e)}) + '\n');
    }
  }
})();
