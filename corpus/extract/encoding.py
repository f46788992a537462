"""Bytes → str for web pages: HTTP charset, then ``<meta charset>``, then detection.

The declared charsets come first because they are what browsers obey; a declared charset
that does not decode the page (servers lie) falls through to detection. Detection is
resiliparse's uchardet-based ``detect_encoding`` (C, ~GB/s), chosen over charset-normalizer
(pure-Python scoring, tens of MB/s) because it runs once per page on the hot path. Labels are
mapped the WHATWG way (latin-1 → cp1252, gb2312 → gb18030), and the last resort decodes
UTF-8 with replacement characters, so no page ever raises.
"""

from __future__ import annotations

import codecs
import functools
import re

# WHATWG's encoding standard: what browsers actually use for these labels.
_ALIASES = {
    "iso-8859-1": "cp1252", "latin1": "cp1252", "latin-1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252",
    "iso8859-1": "cp1252", "gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "euc-cn": "gb18030",
    "shift-jis": "cp932", "shift_jis": "cp932", "sjis": "cp932", "x-sjis": "cp932", "ks_c_5601-1987": "cp949",
    "euc-kr": "cp949", "tis-620": "cp874", "iso-8859-9": "cp1254", "utf8": "utf-8", "unicode": "utf-8",
}
_META_RE = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9_:.()+-]{2,40})""", re.I)
# How far into the page a <meta charset> may appear (the HTML spec says 1024 bytes; real
# pages put long <head>s first, so look further).
META_SCAN_BYTES = 8192
_BOMS = ((codecs.BOM_UTF8, "utf-8"), (codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be"))


@functools.lru_cache(maxsize=256)
def normalize_label(label: str | None) -> str | None:
    """A Python codec name for a charset label, or None when Python does not know it."""
    if not label:
        return None
    key = label.strip().strip("\"'").lower()
    key = _ALIASES.get(key, key)
    try:
        return codecs.lookup(key).name
    except LookupError:
        return None


def meta_charset(data: bytes) -> str | None:
    """The charset a page declares in its ``<meta>`` tags (first ``META_SCAN_BYTES`` bytes)."""
    m = _META_RE.search(data, 0, META_SCAN_BYTES)
    return m.group(1).decode("ascii", "replace") if m else None


def _try(data: bytes, enc: str | None) -> str | None:
    if not enc:
        return None
    try:
        return data.decode(enc)
    except (UnicodeDecodeError, LookupError):
        return None


def decode_html(data: bytes, http_charset: str | None = None) -> tuple[str, str, str]:
    """Decode a page. Returns ``(text, encoding, how)``; ``how`` is bom, http, meta, utf-8,
    detected or replace (decoded as UTF-8 with U+FFFD for the bytes that did not fit)."""
    for bom, enc in _BOMS:
        if data.startswith(bom):
            return data[len(bom):].decode(enc, "replace"), enc, "bom"
    declared = normalize_label(http_charset)
    text = _try(data, declared)
    if text is not None:
        return text, declared or "", "http"
    meta = normalize_label(meta_charset(data))
    if meta and meta != declared:
        text = _try(data, meta)
        if text is not None:
            return text, meta, "meta"
    text = _try(data, "utf-8")
    if text is not None:
        return text, "utf-8", "utf-8"
    from resiliparse.parse.encoding import detect_encoding

    detected = normalize_label(detect_encoding(data, max_len=65536, html5_compatible=True))
    if detected and detected != "utf-8":
        # uchardet guesses from the first 64 KB; a page that is mostly fine but broken
        # further on still decodes, with replacement characters where it is broken.
        return data.decode(detected, "replace"), detected, "detected"
    return data.decode("utf-8", "replace"), "utf-8", "replace"
