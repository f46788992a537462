"""The extract stage: raw pages (WARC records, HTML files, HTML columns) → documents.

Thin glue on the stage runner. The runner's input hooks are overridden so the stage reads
WARC/HTML (corpus/extract/reader.py); each batch row is one page, and each page ends either
kept (a document with ``id, url, domain, text, lang, source, metadata``) or removed with a
reason, so ``docs in == kept + removed`` holds per page:

* ``extract:too_large``: the page is over ``--max-html-mb`` (it is never decoded);
* ``extract:http_status``: the WARC response status is not 2xx;
* ``extract:not_html``: the payload is binary (NUL bytes, undecodable);
* ``extract:no_math``: the byte prefilter found no math signal (not with ``--keep-nonmath``);
* ``extract:empty``: nothing is left after boilerplate removal (or nothing to parse);
* ``extract:lang``: the language is not one of ``--langs``.

Counters (summary.json): WARC records by type, non-HTML responses, prefilter signals,
encodings, formulas by markup.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import pyarrow as pa

from corpus import schema
from corpus.config import StageConfig, opt
from corpus.errors import ConfigError, MathcorpusError
from corpus.extract import reader
from corpus.runner import BatchResult, Stage, TaskContext

REASON_PREFIX = "extract:"
REASONS = ("too_large", "http_status", "not_html", "no_math", "empty", "lang")
OUT_SCHEMA = pa.schema([
    pa.field(schema.ID, pa.string()), pa.field(schema.URL, pa.string()), pa.field(schema.DOMAIN, pa.string()),
    pa.field(schema.TEXT, pa.string()), pa.field(schema.LANG, pa.string()), pa.field(schema.SOURCE, pa.string()),
    pa.field(schema.METADATA, pa.string()),
])


@dataclass
class ExtractConfig(StageConfig):
    """Options of ``mathcorpus extract`` (the ``extract`` section of a config file)."""

    section: ClassVar[str] = "extract"

    input_format: str = opt("auto", help="What the inputs are: auto (by file name), warc (.warc, .warc.gz, "
                                         ".warc.lz4, .warc.zst), html (.html files and folders of them) or "
                                         "parquet (Parquet/JSONL rows with an HTML column).",
                            choices=reader.FORMATS)
    html_column: str = opt("html", help="Parquet/JSONL input: the column holding the page HTML (string or bytes).")
    url_column: str = opt("url", help="Parquet/JSONL input: the column holding the page URL (optional).")
    keep_nonmath: bool = opt(False, help="Extract pages without any math signal too, instead of removing them "
                                         "as extract:no_math (the recall classifier selects later).")
    langs: list[str] = opt(help="Keep only pages in these languages (fastText lid.176 codes, e.g. en,zh); "
                                "others are removed as extract:lang. Empty: keep every language.", factory=list)
    max_html_mb: float = opt(10.0, help="Pages larger than this many MB are removed as extract:too_large "
                                        "without being parsed.")
    http_2xx_only: bool = opt(True, help="Remove WARC responses whose HTTP status is not 2xx "
                                         "(redirects, errors) as extract:http_status.")
    lang_chars: int = opt(400, help="Characters of page text (formulas removed) the language model reads.")
    source: str = opt("web", help="Value of the source column of every extracted document.")

    def validate(self) -> None:
        if self.max_html_mb <= 0:
            raise ConfigError(f"extract option 'max_html_mb' must be positive, got {self.max_html_mb}")
        if self.lang_chars < 20:
            raise ConfigError(f"extract option 'lang_chars' must be at least 20, got {self.lang_chars}")
        self.langs = [lang.strip().lower() for lang in self.langs if lang.strip()]


def _status_ok(status: int | None) -> bool:
    return status is None or 200 <= status < 300


def _binary(data: bytes) -> bool:
    """NUL bytes in the first 4 KB: an image, PDF or archive served as text/html (UTF-16 has a BOM)."""
    head = data[:4096]
    return b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff"))


class ExtractStage(Stage):
    """Pages → documents with math kept as LaTeX (see the module docstring for the removals)."""

    name = "extract"
    Config = ExtractConfig
    config: ExtractConfig

    def __init__(self, config: ExtractConfig) -> None:
        super().__init__(config)
        self._roots: dict[str, str] = {}

    @property
    def cfg(self) -> ExtractConfig:
        return self.config

    # -- input hooks ---------------------------------------------------------------------
    def required_columns(self) -> tuple[str, ...]:
        return (schema.ID, reader.HTML)

    def list_inputs(self, inputs: Sequence[str]) -> list[str]:
        return reader.list_units(inputs, self.cfg.input_format, self._roots)

    def preflight(self, files: Sequence[str]) -> list[tuple[str, MathcorpusError]]:
        return reader.preflight_units(files, self.cfg.html_column)

    def read_batches(self, path: str, task: TaskContext | None = None) -> Iterator[pa.RecordBatch]:
        rows = task.run.options.batch_rows if task is not None else 256
        counters = task.counters if task is not None else Counter()
        return reader.iter_unit(path, rows, counters, html_column=self.cfg.html_column,
                                url_column=self.cfg.url_column, max_bytes=int(self.cfg.max_html_mb * (1 << 20)),
                                root=self._roots.get(path))

    # -- task side -------------------------------------------------------------------------
    def setup(self, task: TaskContext) -> None:
        from corpus.extract.lang import _model

        _model()  # load the language model once per task, before the first batch

    def process_batch(self, batch: pa.RecordBatch, task: TaskContext) -> BatchResult:
        from corpus.extract.content import extract_page
        from corpus.extract.lang import detect_language
        from corpus.extract.prefilter import math_signal

        cfg = self.cfg
        langs = set(cfg.langs)
        cols = {n: batch.column(n).to_pylist() for n in reader.RAW_SCHEMA.names if n in batch.schema.names}
        kept: dict[str, list[Any]] = {f.name: [] for f in OUT_SCHEMA}
        removed: dict[str, list[Any]] = {f.name: [] for f in OUT_SCHEMA}
        reasons: list[str] = []
        counters = task.counters
        for i in range(batch.num_rows):
            data: bytes = cols[reader.HTML][i] or b""
            url = cols[schema.URL][i]
            status = cols["http_status"][i]
            meta: dict[str, Any] = {"warc_date": cols["warc_date"][i], "http_status": status,
                                    "content_type": cols["content_type"][i], "html_bytes": cols["html_bytes"][i]}
            text, lang, reason = "", None, None
            if cols["read_error"][i] == "too_large":
                reason = "too_large"
            elif cfg.http_2xx_only and not _status_ok(status):
                reason = "http_status"
            elif _binary(data):
                reason = "not_html"
            else:
                signal = math_signal(data)
                meta["math_signal"] = signal
                counters[f"prefilter.{signal or 'none'}"] += 1
                if signal is None and not cfg.keep_nonmath:
                    reason = "no_math"
                else:
                    page = extract_page(data, url, http_charset=cols["http_charset"][i], math=signal is not None)
                    counters[f"encoding.{page.encoding_source}"] += 1
                    meta.update(title=page.title, encoding=page.encoding, math=dict(page.math),
                                formulas=page.formulas, main=page.main)
                    for k, v in page.math.items():
                        counters[f"math.{k}"] += v
                    if url is None and page.canonical_url:
                        url = page.canonical_url
                    text = page.text
                    if page.error:
                        reason = page.error
                    else:
                        lang, score = detect_language(text, cfg.lang_chars)
                        meta["lang_score"] = score
                        if langs and lang not in langs:
                            reason = "lang"
            out = kept if reason is None else removed
            out[schema.ID].append(cols[schema.ID][i])
            out[schema.URL].append(url)
            out[schema.TEXT].append(text)
            out[schema.LANG].append(lang)
            out[schema.SOURCE].append(cfg.source)
            out[schema.METADATA].append(json.dumps({k: v for k, v in meta.items() if v is not None},
                                                   ensure_ascii=False, sort_keys=True))
            if reason is not None:
                reasons.append(REASON_PREFIX + reason)
        kept_b = _to_batch(kept)
        rem = None
        if reasons:
            rem = _to_batch(removed)
            rem = rem.append_column(schema.REMOVAL_REASON, pa.array(reasons, pa.string()))
        return BatchResult(kept=kept_b, removed=rem)


def _to_batch(cols: dict[str, list[Any]]) -> pa.RecordBatch:
    urls = pa.array(cols[schema.URL], pa.string())
    arrays = []
    for f in OUT_SCHEMA:
        if f.name == schema.DOMAIN:
            arrays.append(schema.domain_from_url(urls) if len(urls) else pa.array([], pa.string()))
        else:
            arrays.append(pa.array(cols[f.name], f.type))
    return pa.record_batch(arrays, schema=OUT_SCHEMA)


def describe_reasons() -> dict[str, str]:
    """Removal reasons with one line each (README and --help)."""
    return {REASON_PREFIX + r: d for r, d in (
        ("too_large", "the page is larger than --max-html-mb"),
        ("http_status", "the WARC response status is not 2xx"),
        ("not_html", "a binary payload (image, PDF, archive) served as HTML"),
        ("no_math", "no math signal in the raw bytes (without --keep-nonmath)"),
        ("empty", "no text left after boilerplate removal"),
        ("lang", "the page's language is not in --langs"),
    )}


__all__ = ["ExtractConfig", "ExtractStage", "OUT_SCHEMA", "REASONS", "describe_reasons"]
