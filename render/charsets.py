"""Decoding plain-text attachments: declared charset first, else detection.

Chinese mail clients still send GBK and Big5 text files, often without a
charset parameter, so detection matters as much as the declaration.
"""

from __future__ import annotations

import codecs
import re
import unicodedata

import charset_normalizer

#: Bytes looked at when deciding whether data is text (detection cost is bounded).
SAMPLE_BYTES = 256 * 1024

#: Declared names replaced by a superset that decodes what senders actually produce.
_SUPERSETS = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "big5": "cp950",
    "shift_jis": "cp932",
    "euc_jp": "euc_jis_2004",
    "iso8859_1": "cp1252",
    "ascii": "utf-8",
}

#: Candidates for detection when no charset is declared and the data is not UTF-8.
_DETECTION_CANDIDATES = ["gb18030", "cp950", "big5hkscs", "cp932", "euc_kr", "cp1252", "latin_1"]

_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)

#: Control characters that belong in text files (tab, newlines, form feed, escape, backspace).
_ALLOWED_CONTROLS = frozenset("\t\n\r\f\v\x1b\x08\x1a")

#: Share of stray control or replacement characters above which data is not text.
MAX_CONTROL_SHARE = 0.01


def _canonical(charset: str) -> str | None:
    try:
        name = codecs.lookup(charset.strip().strip('"')).name
    except (LookupError, ValueError):
        return None
    return _SUPERSETS.get(name.replace("-", "_"), name)


def looks_like_text(text: str) -> bool:
    """True when ``text`` has almost no control characters: binary data decoded
    as a single-byte charset is full of them."""
    if not text:
        return False
    stray = sum(
        1
        for ch in text
        if ch == "\ufffd" or (unicodedata.category(ch) == "Cc" and ch not in _ALLOWED_CONTROLS)
    )
    return stray <= len(text) * MAX_CONTROL_SHARE


def _decode_prefix(data: bytes, encoding: str) -> str | None:
    """Decode a sample that may end in the middle of a multi-byte character."""
    decoder = codecs.getincrementaldecoder(encoding)("strict")
    try:
        return decoder.decode(data, final=len(data) < SAMPLE_BYTES)
    except (UnicodeDecodeError, LookupError):
        return None


def detect_encoding(data: bytes, declared: str | None = None) -> str | None:
    """The encoding ``data`` is text in, or None when it is not text at all."""
    sample = data[:SAMPLE_BYTES]
    for bom, name in _BOMS:
        if sample.startswith(bom):
            return name
    if declared:
        name = _canonical(declared)
        if name:
            text = _decode_prefix(sample, name)
            if text is not None and looks_like_text(text):
                return name
    text = _decode_prefix(sample, "utf-8")
    if text is not None and looks_like_text(text):
        return "utf-8"
    if b"\x00" in sample:  # Latin text in UTF-16 is also valid (NUL-ridden) UTF-8
        return _utf16_without_bom(sample)
    if text is not None:
        return None
    if len(data) > SAMPLE_BYTES:
        # The detector decodes strictly: a sample cut inside a multi-byte
        # character would rule out every East Asian encoding.
        cut = sample.rfind(b"\n")
        sample = sample[: cut + 1] if cut > 0 else sample
    best = charset_normalizer.from_bytes(sample, cp_isolation=_DETECTION_CANDIDATES).best()
    candidates = [_canonical(best.encoding) or best.encoding] if best else []
    # Western text the detector finds too odd (tables, repeated lines) is still text.
    for name in [*candidates, "cp1252", "latin-1"]:
        text = _decode_prefix(sample, name)
        if text is not None and looks_like_text(text):
            return name
    return None


def _utf16_without_bom(sample: bytes) -> str | None:
    """UTF-16 without a byte order mark: Latin text has a zero in every other
    byte; CJK text has few zeros, so there the byte order whose characters are
    nearly all from common scripts wins; binary data is neither."""
    sample = sample[: len(sample) // 2 * 2]
    even_zeros = sample[0::2].count(0)
    odd_zeros = sample[1::2].count(0)
    half = len(sample) // 2 or 1
    for name, zeros in (("utf-16-le", odd_zeros), ("utf-16-be", even_zeros)):
        if zeros > half * 0.3:
            text = _decode_prefix(sample, name)
            if (
                text is not None
                and looks_like_text(text)
                and _script_share(text) >= _MIN_SCRIPT_SHARE
            ):
                return name
    scored = []
    for name in ("utf-16-le", "utf-16-be"):
        text = _decode_prefix(sample, name)
        if text is not None and looks_like_text(text):
            scored.append((_script_share(text), name))
    if scored and max(scored)[0] >= _MIN_SCRIPT_SHARE:
        return max(scored)[1]
    return None


#: Share of characters from common scripts that BOM-less UTF-16 must have.
_MIN_SCRIPT_SHARE = 0.9
#: ASCII and Latin-1, general punctuation, CJK symbols, kana, CJK ideographs,
#: Hangul syllables and full-width forms: what real text in the expected
#: languages is made of (the wrong byte order gives scattered code points).
_COMMON_SCRIPTS = re.compile(
    "[\t\n\r\f\x20-\x7e\xa0-\xff\u2000-\u206f\u3000-\u30ff\u4e00-\u9fff\uac00-\ud7a3\uff00-\uffef]"
)


def _script_share(text: str) -> float:
    return len(_COMMON_SCRIPTS.findall(text)) / max(1, len(text))


def decode_text(data: bytes, encoding: str) -> str:
    """Decode the whole file; a few bad bytes become U+FFFD rather than failing."""
    return data.decode(encoding, errors="replace")
