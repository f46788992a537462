"""Encoding detection (HTTP, meta, detection) and language id with the offline lite model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from corpus.extract.encoding import decode_html, meta_charset, normalize_label
from corpus.extract.lang import detect_language, prose_sample

RU = "<html><body><p>Это обычная страница о погоде в Москве и новостях города.</p></body></html>"
JA = "<html><body><p>これは日本語のページです。天気とニュースについて書いています。</p></body></html>"


def test_http_charset_comes_first() -> None:
    data = RU.encode("koi8-r")
    text, enc, how = decode_html(data, "KOI8-R")
    assert (enc, how) == ("koi8-r", "http") and "Москве" in text


def test_meta_charset_when_http_says_nothing() -> None:
    page = RU.replace("<body>", '<head><meta http-equiv="Content-Type" content="text/html; charset=windows-1251">'
                                '</head><body>')
    text, enc, how = decode_html(page.encode("cp1251"))
    assert (enc, how) == ("cp1251", "meta") and "Москве" in text
    assert meta_charset(b'<meta charset="utf-8">') == "utf-8"


def test_detection_when_nothing_is_declared() -> None:
    text, enc, how = decode_html(JA.encode("shift_jis"))
    assert how == "detected" and enc == "cp932" and "日本語" in text
    text, enc, how = decode_html(RU.encode("utf-8"))
    assert (enc, how) == ("utf-8", "utf-8")


def test_a_lying_declaration_falls_through() -> None:
    # declared UTF-8 but the bytes are cp1251: the declaration does not decode, detection does
    text, enc, how = decode_html((RU * 3).encode("cp1251"), "utf-8")
    assert how == "detected" and "Москве" in text


def test_bom_and_labels() -> None:
    assert decode_html(b"\xef\xbb\xbf<p>x</p>", "latin-1")[1:] == ("utf-8", "bom")
    assert normalize_label("ISO-8859-1") == "cp1252" and normalize_label("gb2312") == "gb18030"
    assert normalize_label("no-such-charset") is None


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([None, "utf-8", "latin-1", "bogus", "shift_jis", ""]))
def test_decoding_never_raises(data: bytes, charset: str | None) -> None:
    text, enc, how = decode_html(data, charset)
    assert isinstance(text, str) and enc and how


@pytest.mark.parametrize("text, lang", [
    ("The derivative of $x^2$ is $2x$, which follows from the limit definition of the derivative.", "en"),
    ("设 $x$ 为实数，求方程 $x^2 - 5x + 6 = 0$ 的所有解，并说明理由。", "zh"),
    ("Die Ableitung der Funktion ist überall stetig, wie man leicht nachrechnet.", "de"),
    ("Это обычная страница о погоде в Москве и новостях города.", "ru"),
])
def test_language(text: str, lang: str) -> None:
    got, score = detect_language(text)
    assert got == lang and 0.5 < score <= 1.0


def test_formulas_are_not_prose_and_long_input_is_read_past_80_chars() -> None:
    assert prose_sample("a $\\frac{1}{2}$ b $$x^2$$ c") == "a b c"
    assert detect_language("$x^2 + y^2 = z^2$ $$\\sum_i a_i$$") == ("und", 0.0)
    # 100 characters of formulas-free English noise before the German: an 80-char cut would say "en"
    text = "OK OK OK OK OK " * 7 + "Die Ableitung der Funktion ist überall stetig, wie man leicht nachrechnet. " * 3
    assert detect_language(text)[0] == "de"


def test_bundled_model_is_the_one_its_notice_names() -> None:
    import hashlib
    import re

    from corpus.extract.lang import model_path

    notice = (model_path().parent / "NOTICE.md").read_text(encoding="utf-8")
    want = re.search(r"sha256\s+`([0-9a-f]{64})`", notice)
    assert want and hashlib.sha256(model_path().read_bytes()).hexdigest() == want.group(1)
