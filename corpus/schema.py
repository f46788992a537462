"""The document schema: every column name any stage reads or writes, in one place.

Packages hand off to each other only through these columns, so recall/, decontam/ and
synth/ never need to import each other. Required columns are ``id`` (a string unique
within a dataset) and ``text`` (a string). Everything else is optional, and any column
not named here is carried through every stage untouched.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from collections.abc import Sequence

from corpus.errors import InputError

# -- required -------------------------------------------------------------------------
ID = "id"
TEXT = "text"
REQUIRED = (ID, TEXT)

# -- optional input columns -----------------------------------------------------------
SOURCE = "source"  # web | book | code | qa | synth | ...
URL = "url"
DOMAIN = "domain"  # derived from url when absent
LANG = "lang"  # en | zh | ...
METADATA = "metadata"  # a JSON string

# -- added by recall/ -----------------------------------------------------------------
MATH_SCORE = "math_score"
RECALL_MODEL = "recall_model"
RECALL_CYCLE = "recall_cycle"
QUALITY_SCORE = "quality_score"  # 0-5, from a quality model trained on teacher grades
QUALITY_MODEL = "quality_model"  # name@sha of that model

# -- added by dedup (corpus/dedup/) ----------------------------------------------------
DEDUP_CLUSTER = "dedup_cluster"
DEDUP_KEPT_ID = "dedup_kept_id"

# -- added by decontam/ ---------------------------------------------------------------
DECONTAM_VERDICT = "decontam_verdict"

# -- added by synth/ ------------------------------------------------------------------
SYNTH_TEACHER = "synth_teacher"
SYNTH_TEMPLATE = "synth_template"
SYNTH_PARAMS = "synth_params"
SYNTH_SEED_ID = "synth_seed_id"
SYNTH_SAMPLE = "synth_sample"
SYNTH_VERDICT = "synth_verdict"
SYNTH_SCORE = "synth_score"  # annotate task: the teacher's integer grade (0-5)

# -- written on removed documents by the runner ---------------------------------------
REMOVAL_STAGE = "removal_stage"
REMOVAL_REASON = "removal_reason"

LINEAGE = (
    SOURCE,
    MATH_SCORE,
    RECALL_MODEL,
    DEDUP_CLUSTER,
    DECONTAM_VERDICT,
    SYNTH_TEACHER,
    SYNTH_TEMPLATE,
    SYNTH_SEED_ID,
)


def check_required(schema: pa.Schema, path: str, required: Sequence[str] = REQUIRED) -> None:
    """Raise InputError naming the file and the columns found when a required column is missing.

    Every stage needs ``id``; most need ``text``. A stage that reads other columns (decontam
    over SFT ``question``/``answer`` fields) passes its own ``required``.
    """
    missing = [c for c in required if c not in schema.names]
    if missing:
        found = ", ".join(schema.names) or "(none)"
        wanted = " and ".join(repr(c) for c in required)
        raise InputError(
            f"{path}: missing required column(s) {', '.join(repr(m) for m in missing)}; "
            f"columns found: {found}. Rename your columns to {wanted} "
            f"(e.g. with polars' rename) or add them."
        )


def conform_batch(batch: pa.RecordBatch, path: str, required: Sequence[str] = REQUIRED) -> pa.RecordBatch:
    """Validate and normalise one batch: id cast to string, text must be non-null string.

    Integer ids are cast to strings (JSONL files often carry numeric ids); a text column
    of any other type, or a null text, is an error naming the file and the row. When
    ``text`` is not required and absent, only the id is checked.
    """
    check_required(batch.schema, path, required)
    if TEXT not in batch.schema.names:
        return _conform_ids(batch, path)
    text = batch.column(TEXT)
    if not (pa.types.is_string(text.type) or pa.types.is_large_string(text.type)):
        if pa.types.is_null(text.type) and len(text) > 0:
            raise InputError(
                f"{path}: field 'text' is null in row 0; every document needs a string text. "
                "Drop or fill empty documents before this stage."
            )
        if not pa.types.is_null(text.type):
            raise InputError(
                f"{path}: field 'text' has type {text.type}, expected string. "
                "Convert it to a string column before this stage."
            )
        text = pa.array([""] * 0, pa.string()) if len(text) == 0 else text
    if text.null_count:
        row = pc.index(pc.is_null(text), True).as_py()
        raise InputError(
            f"{path}: field 'text' is null in row {row} of a batch; every document needs a "
            "string text. Drop or fill empty documents before this stage."
        )
    if pa.types.is_large_string(text.type):
        text = pc.cast(text, pa.string())
    batch = _conform_ids(batch, path)
    cols = list(batch.columns)
    cols[batch.schema.get_field_index(TEXT)] = text
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


def _conform_ids(batch: pa.RecordBatch, path: str) -> pa.RecordBatch:
    ids = batch.column(ID)
    if not pa.types.is_string(ids.type):
        if pa.types.is_integer(ids.type) or pa.types.is_large_string(ids.type):
            ids = pc.cast(ids, pa.string())
        else:
            raise InputError(
                f"{path}: field 'id' has type {ids.type}, expected string (or integer). "
                "Cast ids to strings before this stage."
            )
    if ids.null_count:
        row = pc.index(pc.is_null(ids), True).as_py()
        raise InputError(f"{path}: field 'id' is null in row {row}; every document needs an id.")
    cols = list(batch.columns)
    cols[batch.schema.get_field_index(ID)] = ids
    return pa.RecordBatch.from_arrays(cols, names=batch.schema.names)


def domain_from_url(urls: pa.Array) -> pa.Array:
    """Host part of each URL, lowercased, without a leading ``www.``; null where no URL."""
    host = pc.extract_regex(pc.utf8_lower(urls), r"^(?:[a-z][a-z0-9+.-]*://)?(?:[^@/]*@)?(?P<host>[^/:?#]+)")
    out = pc.struct_field(host, "host")
    return pc.replace_substring_regex(out, r"^www\.", "")


def add_domain(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Add ``domain`` derived from ``url`` when the batch has a url but no domain column."""
    if DOMAIN in batch.schema.names or URL not in batch.schema.names:
        return batch
    urls = batch.column(URL)
    if not pa.types.is_string(urls.type):
        return batch
    dom = domain_from_url(urls)
    return batch.append_column(DOMAIN, dom)
