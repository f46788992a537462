"""The offline HTML page of a decontam report: one self-contained file, no network.

:func:`render_html` fills decontam/templates/report.html (inline CSS and JS, nothing
fetched) with the report as JSON: the summary view of decontam/report.py and the matched
pairs with their shared spans. The page's own small script draws the summary table, the
per-benchmark bar chart and the LCS-ratio histogram as inline SVG, the top sources and
domains, and a searchable, filterable list of pairs with the shared spans highlighted.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib import resources
from typing import Any

from corpus import __version__
from corpus import fs as cfs
from corpus.shards import atomic_write_bytes
from decontam.report import Pair

TEMPLATE = "report.html"
DATA_MARK = "__REPORT_DATA__"
TITLE_MARK = "__REPORT_TITLE__"


def _template() -> str:
    return resources.files("decontam").joinpath("templates", TEMPLATE).read_text(encoding="utf-8")


def _script_json(obj: Any) -> str:
    """JSON safe inside a <script> element: no '</' (ends the element) and no '<!--'."""
    text = json.dumps(obj, ensure_ascii=False, sort_keys=True, default=str, allow_nan=False)
    return text.replace("</", "<\\/").replace("<!--", "<\\u0021--")


def _clean(v: Any) -> Any:
    """NaN is not JSON: the page shows a missing ratio as '-'."""
    if isinstance(v, float) and v != v:
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clean(x) for x in v]
    return v


def render_html(view: dict[str, Any], pairs: Sequence[Pair], total_pairs: int | None = None) -> str:
    """The page as a string: the template with the view and pairs embedded as JSON."""
    data = _clean({
        "view": view,
        "pairs": [p.to_dict() for p in pairs],
        "total_pairs": len(pairs) if total_pairs is None else total_pairs,
        "version": __version__,
    })
    title = f"Decontamination report: {view.get('report_dir', '')}"
    page = _template()
    return page.replace(TITLE_MARK, html.escape(title)).replace(DATA_MARK, _script_json(data))


def write_html(path: str, view: dict[str, Any], pairs: Sequence[Pair], total_pairs: int | None = None) -> None:
    """Write the page atomically to ``path``."""
    atomic_write_bytes(path, render_html(view, pairs, total_pairs).encode("utf-8"))


#: The page a stage run writes into its report folder (the pipeline's run report links it).
PAGE_NAME = "report.html"


def write_report_page(report_dir: str, max_pairs: int = 1000) -> str:
    """Write ``REPORT_DIR/report.html`` at the end of a decontam run; returns its path.

    The same page as ``decontam report REPORT_DIR --html``, with the highest-ratio pairs of
    *removed* documents only: their texts are in ``removed/``, so the output is never
    scanned at the end of a large run. The command gives every pair (and filters).
    """
    import polars as pl

    from decontam import report as rp

    rep = rp.load_report(report_dir)
    rows = rp.select_pairs(rep, None, order="high").filter(pl.col("removed").fill_null(False)).head(max_pairs)
    path = cfs.join(report_dir, PAGE_NAME)
    write_html(path, rp.summary_view(rep), rp.build_pairs(rep, rows), total_pairs=rep.matches.height)
    return path
