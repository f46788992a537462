"""The run report of ``mathcorpus pipeline run``: ``WORKDIR/report.json`` and ``WORKDIR/report.html``.

:func:`build_report` turns the step results of a pipeline run into one plain dict (the
JSON file); :func:`render_report_html` draws that dict, and only that dict, as one offline
page (inline CSS and SVG from corpus/charts.py, no script, nothing fetched):

* the document funnel across stages, removals by reason per stage and the time per step;
* contamination per benchmark for every stage whose summary names a benchmark report
  (decontam), and tokens by source before and after the mix for every stage that wrote a
  ``manifest.json`` (export), with the manifest as tables (sources and weights, output,
  shards, tokenizer);
* links to each stage's output, removed documents and own reports.

Stages are handled generically: whatever a stage is, its row comes from its run summary.
A stage that writes a page a person reads names it in its summary as a mapping with an
``html`` path (decontam: ``summary["decontam"]["html"]``); a benchmark report as a mapping
whose ``summary`` path ends in ``summary.json``. corpus/ never imports the stage packages.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from corpus import __version__
from corpus import charts as ch
from corpus import fs as cfs
from corpus.charts import e, fmt_int, fmt_num, fmt_seconds
from corpus.shards import atomic_write_bytes, atomic_write_json

if TYPE_CHECKING:
    from corpus.pipeline import Pipeline

REPORT_VERSION = 2
#: Shards listed in the page per export (all are in report.json and manifest.json).
MAX_SHARD_ROWS = 50
_STAGE_KEYS = ("label", "stage", "docs_in", "bytes_in", "kept", "removed", "removed_by_reason", "output",
               "removed_dir", "seconds", "skipped", "tasks")


def _read_json(path: str) -> dict[str, Any] | None:
    if cfs.exists(path):
        return cfs.read_json(path)
    return None


def _link(title: str, path: str, workdir: str) -> dict[str, str]:
    """A link from WORKDIR/report.html: relative inside the workdir (the folder can move), else file://
    (a URL on object storage stays the URL)."""
    if cfs.is_remote(path) or cfs.is_remote(workdir):
        href = path
        if cfs.is_remote(path) and cfs.is_remote(workdir) and cfs.inside(path, workdir):
            href = path.rstrip("/")[len(workdir.rstrip("/")) + 1:]
        return {"title": title, "path": path, "href": href}
    ap = os.path.abspath(path)
    wd = os.path.abspath(workdir)
    href = os.path.relpath(ap, wd) if ap == wd or ap.startswith(wd + os.sep) else Path(ap).as_uri()
    if os.path.isdir(ap) and not href.endswith("/"):
        href += "/"
    return {"title": title, "path": path, "href": href}


def _has_files(folder: str | None) -> bool:
    return bool(folder) and bool(cfs.listdir(folder))  # type: ignore[arg-type]


def _contamination(label: str, found: dict[str, Any], rep: dict[str, Any]) -> dict[str, Any]:
    bench = {}
    for name in sorted(found.get("benchmarks") or {}):
        b = found["benchmarks"][name] or {}
        bench[name] = {k: b.get(k) for k in ("items", "items_found", "pct_touched", "docs_removed")}
    return {"label": label, "profile": found.get("profile"), "report": rep.get("report"),
            "html": rep.get("html"), "docs_in": found.get("docs_in"), "docs_removed": found.get("docs_removed"),
            "benchmarks": bench}


def _export(label: str, m: dict[str, Any], path: str) -> dict[str, Any]:
    sources = []
    for name, s in sorted((m.get("sources") or {}).items()):
        before, after = s.get("before") or {}, s.get("after") or {}
        sources.append({"source": name, "weight": s.get("weight"),
                        "docs_before": before.get("documents"), "docs_after": after.get("documents"),
                        "tokens_before": before.get("tokens"), "tokens_after": after.get("tokens")})
    tok = m.get("tokenizer") or {}
    out = m.get("output") or {}
    return {
        "label": label, "manifest": path, "format": m.get("format"), "seed": m.get("seed"),
        "seq_len": m.get("seq_len"), "dtype": m.get("dtype"), "packed": m.get("packed"),
        "tokens": m.get("tokens", out.get("tokens")), "documents": m.get("documents", out.get("documents")),
        "sequences": out.get("sequences"), "padding_tokens": out.get("padding_tokens"),
        "mix_given": m.get("mix_given") or {},
        "sources": sources,
        "shards": [{k: s.get(k) for k in ("index", "files", "sequences", "tokens")} for s in m.get("shards") or []],
        "tokenizer": {k: tok.get(k) for k in ("name", "engine", "vocab_size", "eos_token", "eos_id", "sha256", "path")
                      if k in tok},
    }


def build_report(pipe: Pipeline, results: list[dict[str, Any]]) -> dict[str, Any]:
    """The run report as one dict: per-step rows, funnel, contamination, exports, timings, links."""
    wd = pipe.workdir
    stages: list[dict[str, Any]] = []
    contaminations: list[dict[str, Any]] = []
    exports: list[dict[str, Any]] = []
    contamination = manifest = None
    # what each shard stage reads, to say where a stage takes in documents from outside the chain
    inputs = {st.label: list(st.inputs) for st in getattr(pipe, "steps", []) if st.kind == "stage"}
    prev_output: str | None = None
    for r in results:
        if r["kind"] != "stage":
            row = {"label": r["label"], "kind": "command", "creates": r.get("creates"),
                   "skipped": r.get("skipped", False), "seconds": r.get("seconds"), "links": []}
            if r.get("creates") and cfs.exists(r["creates"]):
                row["links"].append(_link("created", r["creates"], wd))
            stages.append(row)
            continue
        row = {k: r.get(k) for k in _STAGE_KEYS}
        row["kind"] = "stage"
        row["inputs"] = inputs.get(row["label"], [])
        row["extra_inputs"] = [i for i in row["inputs"] if i != prev_output] if prev_output else []
        prev_output = str(r.get("output"))
        row["bad_files"] = len(r.get("bad_files") or [])
        row["removed_by_reason"] = dict(row.get("removed_by_reason") or {})
        links = []
        if row.get("output"):
            links.append(_link("output", str(row["output"]), wd))
        if _has_files(r.get("removed_dir")):
            links.append(_link("removed", str(r["removed_dir"]), wd))
        # reports a stage names in its summary: {"<key>": {"html": page, "report": folder, "summary": json}}
        for key, val in r.items():
            if not isinstance(val, dict):
                continue
            if isinstance(val.get("html"), str) and cfs.exists(val["html"]):
                links.append(_link(f"{key} report", val["html"], wd))
            if str(val.get("summary", "")).endswith("summary.json"):
                found = _read_json(val["summary"])
                if found is not None:
                    row["report"] = val.get("report")
                    row["report_summary"] = found
                    contamination = found
                    if found.get("benchmarks"):
                        contaminations.append(_contamination(row["label"], found, val))
                    if val.get("report"):
                        links.append(_link(f"{key} report folder", val["report"], wd))
        mpath = cfs.join(str(r.get("output")), "manifest.json")
        m = _read_json(mpath)
        if m:
            manifest = m
            row["tokens_out"] = m.get("tokens_after_mix", m.get("tokens"))
            exports.append(_export(row["label"], m, mpath))
            links.append(_link("manifest.json", mpath, wd))
        row["links"] = links
        stages.append(row)
    shard_rows = [s for s in stages if s["kind"] == "stage" and s.get("docs_in") is not None]
    totals = {
        "steps": len(stages),
        "first_stage": shard_rows[0]["label"] if shard_rows else None,
        "docs_in": shard_rows[0]["docs_in"] if shard_rows else None,
        "docs_out": shard_rows[-1]["kept"] if shard_rows else None,
        "removed": sum(s.get("removed") or 0 for s in shard_rows),
        "tokens": exports[-1]["tokens"] if exports else None,
        "seconds": round(sum(s.get("seconds") or 0 for s in stages), 3),
    }
    return {"report_version": REPORT_VERSION, "pipeline": pipe.path, "workdir": wd,
            "mathcorpus_version": __version__, "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "totals": totals, "stages": stages, "contaminations": contaminations, "exports": exports,
            "contamination": contamination, "export_manifest": manifest}


def write_report(report: dict[str, Any], workdir: str) -> tuple[str, str]:
    """Write ``report.json`` and ``report.html`` into the workdir (atomically); returns both paths."""
    jp = cfs.join(workdir, "report.json")
    hp = cfs.join(workdir, "report.html")
    atomic_write_json(jp, report)
    atomic_write_bytes(hp, render_report_html(report).encode("utf-8"))
    return jp, hp


# ----------------------------------------------------------------------------- terminal
def render_report_terminal(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    con = Console(file=sys.stdout, width=120)
    t = Table(title=f"pipeline {report['pipeline']}")
    for c in ("stage", "docs in", "MB in", "kept", "removed", "removed by reason", "tokens out", "s"):
        t.add_column(c, justify="left" if c in ("stage", "removed by reason") else "right")
    for s in report["stages"]:
        if s["kind"] == "command":
            t.add_row(s["label"], "", "", "", "", "(command step)", "", f"{s['seconds']:.1f}" if s.get("seconds") else "")
            continue
        reasons = ", ".join(f"{k}={v}" for k, v in (s.get("removed_by_reason") or {}).items())
        t.add_row(s["label"], fmt_int(s.get("docs_in")), f"{(s.get('bytes_in') or 0) / 1e6:,.2f}",
                  fmt_int(s.get("kept")), fmt_int(s.get("removed")), reasons,
                  fmt_int(s["tokens_out"]) if s.get("tokens_out") else "", f"{s.get('seconds') or 0:.1f}")
    con.print(t)
    for c in report.get("contaminations") or []:
        ct = Table(title=f"contamination ({c['label']})")
        for col in ("benchmark", "items", "items found", "% touched", "docs removed"):
            ct.add_column(col, justify="left" if col == "benchmark" else "right")
        for name, b in c["benchmarks"].items():
            ct.add_row(name, str(b.get("items", "")), str(b.get("items_found", "")),
                       f"{b.get('pct_touched') or 0:.2f}", str(b.get("docs_removed", "")))
        con.print(ct)
    for x in report.get("exports") or []:
        con.print(f"export ({x['label']}): {x['format']}, {fmt_int(x['tokens'])} tokens, "
                  f"{fmt_int(x['documents'])} documents, {len(x['shards'])} shard(s), seq_len {x['seq_len']}, "
                  f"tokenizer {x['tokenizer'].get('name')} ({x['tokenizer'].get('engine')})")
    for s in report["stages"]:
        for ln in s.get("links") or []:
            if ln["title"].endswith(" report") or ln["title"] == "manifest.json":
                con.print(f"{s['label']}: {ln['title']} {ln['path']}")
    con.print(f"run report: {os.path.join(report['workdir'], 'report.html')}")


# ----------------------------------------------------------------------------- HTML
def _td(v: Any, key: str, text: str | None = None) -> str:
    return f'<td class="num" data-k="{e(key)}" data-v="{e(json.dumps(v))}">{e(text if text is not None else fmt_num(v))}</td>'


def _links_html(links: list[dict[str, str]]) -> str:
    return "".join(f'<a href="{e(ln["href"])}" title="{e(ln["path"])}">{e(ln["title"])}</a>' for ln in links)


def _kpis(report: dict[str, Any]) -> str:
    t = report["totals"]
    cards = [("kpi-docs-in", f"documents into {t.get('first_stage') or 'the first stage'}",
              fmt_int(t.get("docs_in")), ""),
             ("kpi-docs-out", "documents out", fmt_int(t.get("docs_out")), ""),
             ("kpi-removed", "removed (all stages)", fmt_int(t.get("removed")), "hot" if t.get("removed") else ""),
             ("kpi-tokens", "tokens exported", fmt_int(t.get("tokens")), ""),
             ("kpi-seconds", "time (all steps)", fmt_seconds(t.get("seconds")), "")]
    return "".join(f'<div class="kpi {cls}"><b id="{i}">{e(v)}</b><span class="muted">{e(lbl)}</span></div>'
                   for i, lbl, v, cls in cards)


def _stage_table(report: dict[str, Any]) -> str:
    head = ("<tr><th>#</th><th>step</th><th>stage</th><th class=num>docs in</th><th class=num>MB in</th>"
            "<th class=num>kept</th><th class=num>removed</th><th>removed by reason</th><th class=num>tasks</th>"
            "<th class=num>time</th><th>links</th></tr>")
    rows = []
    for i, s in enumerate(report["stages"]):
        lab = e(s["label"])
        if s["kind"] == "command":
            note = "command step" + (" (already done, skipped)" if s.get("skipped") else "")
            rows.append(f'<tr data-label="{lab}" data-kind="command"><td class=num>{i + 1}</td><td>{lab}</td>'
                        f'<td class=muted>{note}</td><td colspan=6></td>'
                        f'{_td(s.get("seconds"), "seconds", fmt_seconds(s.get("seconds")))}'
                        f'<td class=links>{_links_html(s["links"])}</td></tr>')
            continue
        reasons = "<br>".join(f"{e(k)}: {fmt_int(v)}" for k, v in s["removed_by_reason"].items()) or \
            '<span class="muted">none</span>'
        skipped = ' <span class="tag" title="finished in an earlier run; skipped">done earlier</span>' if s.get("skipped") else ""
        mb_in = f"{(s.get('bytes_in') or 0) / 1e6:,.2f}"
        also = ""
        if s.get("extra_inputs"):
            also = f'<div class="muted" style="font-size:12px">+ {e(", ".join(s["extra_inputs"]))}</div>'
        rows.append(f'<tr data-label="{lab}" data-kind="stage"><td class=num>{i + 1}</td><td>{lab}{skipped}{also}</td>'
                    f'<td><code>{e(str(s.get("stage")))}</code></td>{_td(s.get("docs_in"), "docs_in", fmt_int(s.get("docs_in")))}'
                    f'{_td(s.get("bytes_in"), "bytes_in", mb_in)}'
                    f'{_td(s.get("kept"), "kept", fmt_int(s.get("kept")))}'
                    f'{_td(s.get("removed"), "removed", fmt_int(s.get("removed")))}<td>{reasons}</td>'
                    f'{_td(s.get("tasks"), "tasks", fmt_int(s.get("tasks")))}'
                    f'{_td(s.get("seconds"), "seconds", fmt_seconds(s.get("seconds")))}'
                    f'<td class=links>{_links_html(s["links"])}</td></tr>')
    return f'<table id="stages-table"><thead>{head}</thead><tbody>{"".join(rows)}</tbody></table>'


def _overview(report: dict[str, Any]) -> str:
    shard = [s for s in report["stages"] if s["kind"] == "stage" and s.get("docs_in") is not None]
    if not shard:
        return ""
    funnel = ch.funnel_chart("chart-funnel", [(s["label"], s["docs_in"], s["kept"], s["removed"]) for s in shard])
    reasons: list[str] = []
    for s in shard:
        for k in s["removed_by_reason"]:
            if k not in reasons:
                reasons.append(k)
    pal = ch.colors(reasons)
    with_removals = [(s["label"], s["removed_by_reason"]) for s in shard if s["removed_by_reason"]]
    removals = (ch.legend(pal) + ch.stacked_chart("chart-removals", with_removals, pal)) if with_removals else \
        '<p class="muted" id="chart-removals-empty">No stage removed any document.</p>'
    timed = [s for s in report["stages"] if s.get("seconds") is not None]
    timing = ch.hbar_chart("chart-timing", [(s["label"], float(s["seconds"])) for s in timed],
                           value_text=[fmt_seconds(s["seconds"]) + (" (earlier run)" if s.get("skipped") else "")
                                       for s in timed], aria="seconds per step") if timed else ""
    extra = "".join(f'<div class="muted" style="font-size:12px">{e(s["label"])} also reads '
                    f'{e(", ".join(s["extra_inputs"]))}</div>' for s in shard if s.get("extra_inputs"))
    return (f'<div class="grid"><section class="card"><h2>Document funnel</h2>'
            f'{ch.legend({"kept": "var(--bar)", "removed": "var(--bar2)"})}{funnel}{extra}</section>'
            f'<section class="card"><h2>Removals by reason</h2>{removals}</section></div>'
            + (f'<section class="card"><h2>Time per step</h2>{timing}</section>' if timing else ""))


def _pct(v: float | None) -> str:
    return f"{v or 0:.2f}"


def _contamination_html(c: dict[str, Any], n: int, workdir: str) -> str:
    cid = f"contam-{n}"
    bench = c["benchmarks"]
    names = sorted(bench, key=lambda k: (-(bench[k].get("items_found") or 0), k))
    # one bar per benchmark: the share of its items found in the data (what decontam reports as
    # % touched); the label adds the counts behind it and the documents removed
    chart = ch.hbar_chart(
        f"chart-{cid}", [(k, float(bench[k].get("pct_touched") or 0)) for k in names],
        value_text=[f"{_pct(bench[k].get('pct_touched'))}% · {fmt_int(bench[k].get('items_found'))} of "
                    f"{fmt_int(bench[k].get('items'))} items · {fmt_int(bench[k].get('docs_removed'))} docs removed"
                    for k in names],
        color="var(--hot)", aria="share of each benchmark's items found in the data")
    rows = "".join(f'<tr data-benchmark="{e(k)}"><td>{e(k)}</td>{_td(bench[k].get("items"), "items", fmt_int(bench[k].get("items")))}'
                   f'{_td(bench[k].get("items_found"), "items_found", fmt_int(bench[k].get("items_found")))}'
                   f'{_td(bench[k].get("pct_touched"), "pct_touched", _pct(bench[k].get("pct_touched")))}'
                   f'{_td(bench[k].get("docs_removed"), "docs_removed", fmt_int(bench[k].get("docs_removed")))}</tr>'
                   for k in names)
    link = ""
    if c.get("html"):
        link = f' · <a href="{e(_link("", c["html"], workdir)["href"])}">full report</a>'
    return (f'<section class="card contamination" id="{cid}" data-label="{e(c["label"])}">'
            f'<h3>{e(c["label"])} <span class="muted">profile {e(str(c.get("profile") or "-"))}, '
            f'{fmt_int(c.get("docs_removed"))} of {fmt_int(c.get("docs_in"))} documents removed</span></h3>'
            f'<div class="legend muted">bars: % of the benchmark\'s items found in the data</div>'
            f'{chart}<table class="contam-table"><thead><tr><th>benchmark</th><th class=num>items</th>'
            f'<th class=num>items found</th><th class=num>% touched</th><th class=num>docs removed</th></tr></thead>'
            f'<tbody>{rows}</tbody></table></section>')


def _export_html(x: dict[str, Any], n: int, workdir: str) -> str:
    xid = f"export-{n}"
    src = x["sources"]
    chart = ch.paired_chart(
        f"chart-tokens-{n}", [(s["source"], float(s["tokens_before"] or 0), float(s["tokens_after"] or 0)) for s in src],
        ("before the mix", "after the mix"),
        value_text=[(f"{fmt_int(s['tokens_before'])} before", f"{fmt_int(s['tokens_after'])} after") for s in src],
        aria="tokens per source before and after the mix") if src else ""
    total_after = sum(s["tokens_after"] or 0 for s in src)
    srows = "".join(
        f'<tr data-source="{e(s["source"])}"><td>{e(s["source"])}</td>{_td(s["weight"], "weight", fmt_num(s["weight"], 3))}'
        f'{_td(s["docs_before"], "docs_before", fmt_int(s["docs_before"]))}{_td(s["docs_after"], "docs_after", fmt_int(s["docs_after"]))}'
        f'{_td(s["tokens_before"], "tokens_before", fmt_int(s["tokens_before"]))}'
        f'{_td(s["tokens_after"], "tokens_after", fmt_int(s["tokens_after"]))}'
        f'<td class=num>{100.0 * (s["tokens_after"] or 0) / max(1, total_after):.1f}%</td></tr>' for s in src)
    sources = ('<table class="sources-table"><thead><tr><th>source</th><th class=num>weight</th>'
               '<th class=num>docs before</th><th class=num>docs after</th><th class=num>tokens before</th>'
               f'<th class=num>tokens after</th><th class=num>share after</th></tr></thead><tbody>{srows}</tbody></table>')
    out = [("format", x.get("format"), str(x.get("format"))), ("tokens", x.get("tokens"), fmt_int(x.get("tokens"))),
           ("documents", x.get("documents"), fmt_int(x.get("documents"))),
           ("sequences", x.get("sequences"), fmt_int(x.get("sequences"))),
           ("seq_len", x.get("seq_len"), fmt_int(x.get("seq_len"))), ("dtype", x.get("dtype"), str(x.get("dtype"))),
           ("packed", x.get("packed"), str(x.get("packed"))), ("seed", x.get("seed"), str(x.get("seed"))),
           ("shards", len(x["shards"]), fmt_int(len(x["shards"])))]
    orows = "".join(f'<tr><th>{e(k)}</th>{_td(v, k, t)}</tr>' for k, v, t in out)
    shard_rows = "".join(
        f'<tr><td class=num>{fmt_int(s.get("index"))}</td><td>{e(", ".join(s.get("files") or []))}</td>'
        f'{_td(s.get("sequences"), "sequences", fmt_int(s.get("sequences")))}{_td(s.get("tokens"), "tokens", fmt_int(s.get("tokens")))}</tr>'
        for s in x["shards"][:MAX_SHARD_ROWS])
    more = len(x["shards"]) - MAX_SHARD_ROWS
    if more > 0:
        shard_rows += f'<tr><td colspan=4 class=muted>… {more:,} more in manifest.json</td></tr>'
    tok = x["tokenizer"]
    trows = "".join(f'<tr><th>{e(k)}</th><td data-k="{e(k)}" title="{e(str(v))}">'
                    f'{e(str(v)[:16] + "…" if k == "sha256" and v else str(v))}</td></tr>' for k, v in tok.items())
    mlink = _link("manifest.json", x["manifest"], workdir)
    return (f'<section class="export" id="{xid}" data-label="{e(x["label"])}"><h3>{e(x["label"])} '
            f'<span class="muted">· <a href="{e(mlink["href"])}">manifest.json</a></span></h3>'
            f'<div class="grid"><div class="card"><h3>Tokens by source, before and after the mix</h3>'
            f'{ch.legend({"before the mix": "var(--bar)", "after the mix": "var(--bar2)"})}{chart}</div>'
            f'<div class="card"><h3>Sources and weights</h3>{sources}</div></div>'
            f'<div class="grid"><div class="card"><h3>Output</h3><table class="output-table">{orows}</table></div>'
            f'<div class="card"><h3>Tokenizer</h3><table class="tokenizer-table">{trows}</table></div></div>'
            f'<h3>Shards</h3><table class="shards-table"><thead><tr><th class=num>#</th><th>files</th>'
            f'<th class=num>sequences</th><th class=num>tokens</th></tr></thead><tbody>{shard_rows}</tbody></table>'
            f'</section>')


def render_report_html(report: dict[str, Any]) -> str:
    """The run report as one self-contained page (inline CSS and SVG; no script, nothing fetched)."""
    wd = report["workdir"]
    contam = "".join(_contamination_html(c, i, wd) for i, c in enumerate(report.get("contaminations") or []))
    exports = "".join(_export_html(x, i, wd) for i, x in enumerate(report.get("exports") or []))
    body = [
        f'<header><h1>mathcorpus run report</h1><div class="muted">pipeline <code>{e(report["pipeline"])}</code> · '
        f'workdir <code>{e(wd)}</code> · mathcorpus {e(report["mathcorpus_version"])} · finished '
        f'{e(report["finished"])}</div><div class="kpis" id="kpis">{_kpis(report)}</div></header><main>',
        _overview(report),
        f'<h2>Stages</h2>{_stage_table(report)}',
        f'<h2>Contamination per benchmark</h2><div class="grid">{contam}</div>' if contam else "",
        f'<h2>Export</h2>{exports}' if exports else "",
        '</main><footer>Everything on this page is in <a href="report.json">report.json</a> next to it. '
        'Links are relative to the workdir.</footer>',
    ]
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f'<title>mathcorpus run report: {e(os.path.basename(os.path.normpath(wd)) or wd)}</title>'
            f'<style>{ch.CSS}</style></head><body>{"".join(body)}</body></html>\n')
