"""Inline SVG charts and the shared page style for mathcorpus's offline HTML reports.

Pure functions from numbers to SVG markup: no script, no font or image to fetch, so a page
renders the same offline, from a file, in any browser, and its charts can be checked from
the DOM (every bar carries ``data-value`` and, where it belongs to a row, ``data-label``).
The palette and CSS variables are those of the decontam report page, so the run report and
a stage's own report look like one product. Text is escaped here; callers pass plain strings.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence

# colours for categories (removal reasons, sources): distinct, readable on white
PALETTE = ("#3b6fb6", "#d2683c", "#4a9a5b", "#8e5ba8", "#c9a227", "#3aa6b0", "#c23b3b", "#7a7f87",
           "#b5587f", "#5b7f3a")

CSS = """
:root { --fg:#1d232b; --muted:#5f6b7a; --line:#d9dee5; --bg:#ffffff; --panel:#f6f8fa;
        --bar:#3b6fb6; --bar2:#d2683c; --ok:#4a9a5b; --hot:#c23b3b; --track:#eef1f5; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Noto Sans", sans-serif;
       color: var(--fg); background: var(--bg); margin: 0; }
header { padding: 18px 28px 12px; border-bottom: 1px solid var(--line); background: var(--panel); }
h1 { font-size: 21px; margin: 0 0 4px; }
h2 { font-size: 17px; margin: 30px 0 10px; padding-bottom: 4px; border-bottom: 1px solid var(--line); }
h3 { font-size: 14px; margin: 16px 0 6px; }
main { padding: 0 28px 40px; max-width: 1500px; }
a { color: #2a5fa8; }
code { font-size: 12.5px; background: var(--panel); padding: 0 3px; border-radius: 3px; }
.muted { color: var(--muted); }
.kpis { display: flex; flex-wrap: wrap; gap: 12px; margin: 12px 0 2px; }
.kpi { background: var(--bg); border: 1px solid var(--line); border-radius: 6px; padding: 8px 14px; min-width: 140px; }
.kpi b { display: block; font-size: 21px; font-variant-numeric: tabular-nums; }
.kpi.hot b { color: var(--hot); }
table { border-collapse: collapse; margin: 4px 0 8px; }
th, td { padding: 4px 10px; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
th { background: var(--panel); font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.num { white-space: nowrap; }
tr.total td { font-weight: 600; border-top: 2px solid var(--fg); }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(560px, 1fr)); gap: 4px 40px; }
.card { min-width: 0; overflow-x: auto; }
svg { display: block; max-width: 100%; height: auto; }
svg text { font: 12px system-ui, sans-serif; fill: var(--fg); }
svg text.val { fill: var(--muted); font-variant-numeric: tabular-nums; }
svg .axis { stroke: var(--muted); stroke-width: 1; }
svg .track { fill: var(--track); }
.legend { font-size: 12px; margin: 2px 0 6px; }
.legend .it { display: inline-block; white-space: nowrap; margin-right: 14px; }
.legend span.sw { display: inline-block; width: 10px; height: 10px; margin-right: 4px; vertical-align: middle;
                  border-radius: 2px; }
.links a { margin-right: 10px; white-space: nowrap; }
.tag { border-radius: 10px; padding: 0 8px; font-size: 12px; border: 1px solid var(--line); color: var(--muted);
       white-space: nowrap; }
#stages-table th { white-space: nowrap; }
footer { color: var(--muted); font-size: 12px; padding: 16px 28px; border-top: 1px solid var(--line); }
"""

e = html.escape


def fmt_int(v: float | int | None) -> str:
    """1234567 -> '1,234,567'; None -> '-'."""
    return "-" if v is None else f"{int(round(v)):,}"


def fmt_num(v: float | int | None, digits: int = 2) -> str:
    if v is None:
        return "-"
    if float(v).is_integer():
        return f"{int(v):,}"
    return f"{v:,.{digits}f}"


def fmt_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    if s < 60:
        return f"{s:.1f} s"
    m, sec = divmod(int(round(s)), 60)
    return f"{m} min {sec:02d} s" if m < 60 else f"{m // 60} h {m % 60:02d} min"


def colors(names: Sequence[str]) -> dict[str, str]:
    """A stable colour per category, in the order given."""
    return {n: PALETTE[i % len(PALETTE)] for i, n in enumerate(names)}


def legend(items: Mapping[str, str], cls: str = "") -> str:
    """A row of colour swatches with labels (HTML, above or below a chart)."""
    spans = "".join(f'<span class="it"><span class="sw" style="background:{c}"></span>{e(n)}</span>'
                    for n, c in items.items())
    return f'<div class="legend muted {cls}">{spans}</div>'


def _label_width(labels: Sequence[str]) -> int:
    return max(60, min(260, 7 * max((len(s) for s in labels), default=4) + 14))


def _text_room(texts: Sequence[str], px_per_char: float = 6.6) -> int:
    """Room right of the longest bar for its value label (12 px system font)."""
    return int(min(360, max(60, px_per_char * max((len(t) for t in texts), default=4) + 16)))


def _w(value: float, peak: float, width: float) -> float:
    """Bar width; a non-zero value always gets at least 2 px so it is visible."""
    if value <= 0 or peak <= 0:
        return 0.0
    return max(2.0, width * value / peak)


def hbar_chart(chart_id: str, rows: Sequence[tuple[str, float]], *, value_text: Sequence[str] | None = None,
               color: str = "var(--bar)", width: int = 640, row_h: int = 24, aria: str = "") -> str:
    """One horizontal bar per row: ``(label, value)``; bars carry class ``bar``."""
    labels = [r[0] for r in rows]
    left = _label_width(labels)
    texts = list(value_text) if value_text else [fmt_num(v) for _, v in rows]
    plot = width - left - _text_room(texts)
    peak = max((v for _, v in rows), default=0)
    h = row_h * len(rows) + 8
    parts = [f'<svg id="{e(chart_id)}" class="chart" role="img" aria-label="{e(aria)}" width="{width}" '
             f'height="{h}" viewBox="0 0 {width} {h}" data-drawn="true">']
    for i, (label, v) in enumerate(rows):
        y = 4 + i * row_h
        bw = _w(v, peak, plot)
        txt = texts[i]
        parts.append(f'<text x="{left - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end">{e(label)}</text>'
                     f'<rect class="track" x="{left}" y="{y + 3}" width="{plot}" height="{row_h - 8}" rx="2"/>'
                     f'<rect class="bar" data-label="{e(label)}" data-value="{v}" x="{left}" y="{y + 3}" '
                     f'width="{bw:.1f}" height="{row_h - 8}" rx="2" fill="{color}"><title>{e(label)}: {e(txt)}'
                     f'</title></rect>'
                     f'<text class="val" x="{left + bw + 6:.1f}" y="{y + row_h / 2 + 4:.1f}">{e(txt)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="0" y2="{h}"/></svg>')
    return "".join(parts)


def funnel_chart(chart_id: str, rows: Sequence[tuple[str, int, int, int]], *, width: int = 640,
                 row_h: int = 30) -> str:
    """Documents per stage: ``(label, docs_in, kept, removed)``; each bar is docs in, split kept | removed.

    All bars share one scale (the largest ``docs_in``), so the narrowing from stage to stage
    is the funnel. Kept parts carry class ``kept``, removed parts ``removed``.
    """
    labels = [r[0] for r in rows]
    left = _label_width(labels)
    texts = [f"{fmt_int(kept)} kept · {fmt_int(removed)} removed" for _, _, kept, removed in rows]
    plot = width - left - _text_room(texts)
    peak = max((r[1] for r in rows), default=0)
    h = row_h * len(rows) + 8
    parts = [f'<svg id="{e(chart_id)}" class="chart" role="img" aria-label="documents in, kept and removed per '
             f'stage" width="{width}" height="{h}" viewBox="0 0 {width} {h}" data-drawn="true">']
    for i, (label, docs_in, kept, removed) in enumerate(rows):
        y = 4 + i * row_h
        bh = row_h - 10
        kw = _w(kept, peak, plot)
        rw = _w(removed, peak, plot)
        parts.append(f'<text x="{left - 8}" y="{y + row_h / 2 + 3:.1f}" text-anchor="end">{e(label)}</text>'
                     f'<rect class="kept" data-label="{e(label)}" data-value="{kept}" x="{left}" y="{y + 4}" '
                     f'width="{kw:.1f}" height="{bh}" fill="var(--bar)"><title>{e(label)}: {fmt_int(kept)} kept'
                     f'</title></rect>'
                     f'<rect class="removed" data-label="{e(label)}" data-value="{removed}" x="{left + kw:.1f}" '
                     f'y="{y + 4}" width="{rw:.1f}" height="{bh}" fill="var(--bar2)"><title>{e(label)}: '
                     f'{fmt_int(removed)} removed</title></rect>'
                     f'<text class="val" x="{left + kw + rw + 6:.1f}" y="{y + row_h / 2 + 3:.1f}">'
                     f'{e(texts[i])}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="0" y2="{h}"/></svg>')
    return "".join(parts)


def stacked_chart(chart_id: str, rows: Sequence[tuple[str, Mapping[str, int]]], palette: Mapping[str, str], *,
                  width: int = 640, row_h: int = 26) -> str:
    """One bar per row split into categories: ``(label, {category: n})``; segments carry class ``seg``."""
    labels = [r[0] for r in rows]
    left = _label_width(labels)
    plot = width - left - 90
    peak = max((sum(d.values()) for _, d in rows), default=0)
    h = row_h * len(rows) + 8
    parts = [f'<svg id="{e(chart_id)}" class="chart" role="img" aria-label="removed documents by reason per '
             f'stage" width="{width}" height="{h}" viewBox="0 0 {width} {h}" data-drawn="true">']
    for i, (label, counts) in enumerate(rows):
        y = 4 + i * row_h
        x = float(left)
        total = sum(counts.values())
        parts.append(f'<text x="{left - 8}" y="{y + row_h / 2 + 4:.1f}" text-anchor="end">{e(label)}</text>')
        for cat, n in counts.items():
            sw = _w(n, peak, plot)
            parts.append(f'<rect class="seg" data-label="{e(label)}" data-reason="{e(cat)}" data-value="{n}" '
                         f'x="{x:.1f}" y="{y + 4}" width="{sw:.1f}" height="{row_h - 8}" '
                         f'fill="{palette.get(cat, "var(--bar)")}"><title>{e(label)}: {e(cat)} {fmt_int(n)}</title>'
                         f'</rect>')
            x += sw
        parts.append(f'<text class="val" x="{x + 6:.1f}" y="{y + row_h / 2 + 4:.1f}">{fmt_int(total)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="0" y2="{h}"/></svg>')
    return "".join(parts)


def paired_chart(chart_id: str, rows: Sequence[tuple[str, float, float]], series: tuple[str, str], *,
                 value_text: Sequence[tuple[str, str]] | None = None, width: int = 640, row_h: int = 34,
                 aria: str = "") -> str:
    """Two bars per row on one scale: ``(label, a, b)``; classes ``bar-a`` and ``bar-b``."""
    labels = [r[0] for r in rows]
    left = _label_width(labels)
    texts = list(value_text) if value_text else [(fmt_num(a), fmt_num(b)) for _, a, b in rows]
    plot = width - left - _text_room([t for pair in texts for t in pair], px_per_char=5.9)
    peak = max((max(a, b) for _, a, b in rows), default=0)
    h = row_h * len(rows) + 8
    bh = (row_h - 10) / 2
    parts = [f'<svg id="{e(chart_id)}" class="chart" role="img" aria-label="{e(aria)}" width="{width}" '
             f'height="{h}" viewBox="0 0 {width} {h}" data-drawn="true">']
    for i, (label, a, b) in enumerate(rows):
        y = 4 + i * row_h
        ta, tb = texts[i]
        parts.append(f'<text x="{left - 8}" y="{y + row_h / 2 + 3:.1f}" text-anchor="end">{e(label)}</text>')
        for k, (cls, v, t, col) in enumerate((("bar-a", a, ta, "var(--bar)"), ("bar-b", b, tb, "var(--bar2)"))):
            by = y + 4 + k * (bh + 1)
            bw = _w(v, peak, plot)
            parts.append(f'<rect class="{cls}" data-label="{e(label)}" data-value="{v}" x="{left}" y="{by:.1f}" '
                         f'width="{bw:.1f}" height="{bh:.1f}" fill="{col}"><title>{e(label)}, {e(series[k])}: '
                         f'{e(t)}</title></rect>'
                         f'<text class="val" x="{left + bw + 5:.1f}" y="{by + bh - 1.5:.1f}" '
                         f'style="font-size:10.5px">{e(t)}</text>')
    parts.append(f'<line class="axis" x1="{left}" x2="{left}" y1="0" y2="{h}"/></svg>')
    return "".join(parts)
