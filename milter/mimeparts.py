"""Decoding what a hostile mailer sends: header text in any charset, MIME parts.

Chinese mail clients still send GB2312/GBK/Big5 encoded words, some send raw
8-bit headers, and attachment filenames arrive in RFC 2231 or RFC 2047 form.
Everything here turns bytes into text without raising, and never trusts a
filename for anything but display.
"""

from __future__ import annotations

import base64
import binascii
import email.feedparser
import html
import re
import unicodedata
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage, Message

#: Charsets whose declared name understates what mailers really put in them.
_CHARSET_ALIASES = {
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "x-gbk": "gb18030",
    "cp936": "gb18030",
    "euc-cn": "gb18030",
    "x-euc-cn": "gb18030",
    "big5": "big5hkscs",
    "x-big5": "big5hkscs",
    "cn-big5": "big5hkscs",
    "us-ascii": "utf-8",
    "ascii": "utf-8",
}
#: Tried in order for raw 8-bit text and for undeclared or wrong charsets.
_FALLBACKS = ("utf-8", "gb18030", "big5hkscs")

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
#: Lone surrogates, which a declared charset such as "unicode_escape" can produce
#: ("\\ud800") and which no UTF-8 file, database or SMTP reply accepts.
_SURROGATE = re.compile("[\ud800-\udfff]")
_FOLD = re.compile(r"\r?\n(?=[ \t])")

#: Parts that accompany a body but are not documents (S/MIME and PGP signatures).
_SIGNATURE_TYPES = frozenset(
    {
        "application/pgp-signature",
        "application/pkcs7-signature",
        "application/x-pkcs7-signature",
    }
)
_BODY_TEXT_LIMIT = 10_000
_FILENAME_LIMIT = 120
#: Most MIME parts (the message itself included) and deepest multipart nesting we
#: parse. The email package's parse time grows with parts x nesting depth (1,000
#: nested multiparts take ~20 s), and real mail stays far below both.
MAX_MIME_PARTS = 1000
MAX_MIME_DEPTH = 20


def codec_for(charset: str | None) -> str | None:
    """The Python codec that really decodes ``charset`` (GB2312 → GB18030...)."""
    if not charset:
        return None
    name = charset.strip().strip('"').lower().split("*", 1)[0]
    return _CHARSET_ALIASES.get(name, name)


def _plausible(text: str) -> bool:
    """GB18030 decodes nearly any bytes; Big5 read as GB18030 lands in private use."""
    return not any("\ue000" <= c <= "\uf8ff" or unicodedata.category(c) == "Cn" for c in text)


def decode_bytes(data: bytes, charset: str | None = None) -> str:
    """Decode with the declared charset, else guess UTF-8, GB18030, Big5; never raises."""
    codec = codec_for(charset)
    if codec:
        try:
            text = data.decode(codec)
        except (LookupError, UnicodeDecodeError, ValueError):
            pass
        else:
            if not _SURROGATE.search(text):
                return text
    decoded = []
    for candidate in _FALLBACKS:
        try:
            text = data.decode(candidate)
        except UnicodeDecodeError:
            continue
        if _plausible(text):
            return text
        decoded.append(text)
    if decoded:
        return decoded[0]
    try:
        text = data.decode(codec or "utf-8", errors="replace")
    except (LookupError, ValueError):  # unknown, or not a text codec ("hex", "zlib")
        text = ""
    return text if text and not _SURROGATE.search(text) else data.decode("utf-8", "replace")


def _decode_word(encoding: str, payload: str) -> bytes | None:
    try:
        if encoding in "bB":
            return base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
        return binascii.a2b_qp(payload.encode("ascii", "replace"), header=True)
    except (binascii.Error, ValueError):
        return None


def decode_rfc2047(text: str) -> str:
    """Decode RFC 2047 encoded words in ``text``.

    Adjacent encoded words in one charset are joined before decoding, because
    some mailers split a multibyte character across two words. Whitespace
    between encoded words is dropped as the RFC says.
    """
    out: list[str] = []
    pending: list[bytes] = []
    pending_charset: str | None = None
    pos = 0

    def flush() -> None:
        nonlocal pending, pending_charset
        if pending:
            out.append(decode_bytes(b"".join(pending), pending_charset))
        pending, pending_charset = [], None

    for match in _ENCODED_WORD.finditer(text):
        between = text[pos : match.start()]
        data = _decode_word(match[2], match[3])
        if data is None:  # not really an encoded word: keep it literally
            flush()
            out.append(between + match[0])
            pos = match.end()
            continue
        if between.strip(" \t\r\n") or not pending:
            flush()
            out.append(between)
        charset = codec_for(match[1])
        if pending and charset != pending_charset:
            flush()
        pending.append(data)
        pending_charset = charset
        pos = match.end()
    flush()
    out.append(text[pos:])
    return "".join(out)


def unfold(raw: bytes | str) -> str:
    """Header field value as text, unfolded and raw 8-bit guessed, encoded words kept.

    Structured fields (addresses) must be parsed in this form: a decoded
    display name may contain ',' or '<' and change what the address is.
    """
    text = raw if isinstance(raw, str) else decode_bytes(raw)
    return _FOLD.sub("", text).strip()


def decode_header(raw: bytes | str) -> str:
    """Header field value as text: unfolded, raw 8-bit guessed, RFC 2047 decoded."""
    return decode_rfc2047(unfold(raw)).strip()


def ascii_safe(text: str, limit: int = 400) -> str:
    """Printable ASCII for an SMTP reply: other characters become ``\\uXXXX``."""
    out = []
    for char in text:
        if " " <= char <= "~":
            out.append(char)
        elif char in "\t\r\n":
            out.append(" ")
        else:
            code = ord(char)
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
    result = "".join(out)
    return result if len(result) <= limit else result[: limit - 3] + "..."


def describe_char(char: str) -> str:
    """``'x'`` for ASCII, ``U+FF1B FULLWIDTH SEMICOLON`` otherwise."""
    if " " < char <= "~":
        return repr(char)
    name = unicodedata.name(char, "")
    return f"U+{ord(char):04X} {name}".strip()


def display_filename(name: str | None, index: int) -> str:
    """A filename fit for logs and replies; hostile names never become paths."""
    if not name:
        return f"attachment {index}"
    name = name.replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(c for c in name if unicodedata.category(c)[0] != "C").strip(" .")
    if not name:
        return f"attachment {index}"
    return name if len(name) <= _FILENAME_LIMIT else name[: _FILENAME_LIMIT - 3] + "..."


@dataclass(frozen=True)
class Attachment:
    """One document the sender wants faxed (or a part we must refuse)."""

    part: int  # index in message.walk() order
    filename: str  # display only
    content_type: str
    data: bytes
    unsupported: str | None = None  # a reason when the part can never be faxed


@dataclass
class MessageParts:
    attachments: list[Attachment] = field(default_factory=list)
    body_text: str = ""


class _LineEndAtEnd:
    """``re.compile(r"(\\r\\n|\\r|\\n)\\Z").search`` that looks at the end only.

    The email package strips the line end before each MIME boundary with that
    regex, which tries every position of a part's whole payload: about 4 ms
    per 500 KB attachment, a fifth of the parse. A match can only start at one
    of the last two characters, so searching from there gives the same answer.
    """

    _pattern = re.compile(r"(\r\n|\r|\n)\Z")

    def search(self, text: str) -> re.Match[str] | None:
        return self._pattern.search(text, max(0, len(text) - 2))


# Same results, constant time (tests/test_milter_mime.py compares both on hostile input).
if getattr(email.feedparser, "NLCRE_eol", None) is not None:
    email.feedparser.NLCRE_eol = _LineEndAtEnd()  # type: ignore[assignment]


class MalformedMessage(ValueError):
    """The MIME structure is too broken to find the attachments."""


class MimeLimitExceeded(MalformedMessage):
    """The message has more MIME parts or deeper nesting than we parse (a MIME bomb)."""


class _BoundedFeedParser(email.feedparser.BytesFeedParser):
    """Stops at ``MAX_MIME_PARTS`` parts or ``MAX_MIME_DEPTH`` levels, before the cost.

    ``_new_message`` is where the feed parser opens every part (multipart,
    leaf or attached message) and ``_msgstack`` holds the open ones.
    """

    _parts = 0

    def _new_message(self) -> None:
        self._parts += 1
        if self._parts > MAX_MIME_PARTS:
            raise MimeLimitExceeded(f"more than {MAX_MIME_PARTS} MIME parts (the limit)")
        if len(self._msgstack) >= MAX_MIME_DEPTH:  # type: ignore[attr-defined]
            raise MimeLimitExceeded(
                f"MIME parts nested more than {MAX_MIME_DEPTH} levels deep (the limit)"
            )
        super()._new_message()  # type: ignore[misc]


def parse(raw: bytes) -> EmailMessage:
    """The message tree; MimeLimitExceeded for a MIME bomb (see ``MAX_MIME_PARTS``)."""
    parser = _BoundedFeedParser(policy=policy.default)
    parser.feed(raw)
    return parser.close()  # type: ignore[return-value]


def split_message(raw: bytes) -> MessageParts:
    """Attachments and body text of a raw message.

    Not attachments: the text/HTML body, resources of an HTML body (parts with
    a Content-ID inside multipart/related, whatever their disposition says:
    mailers disagree on it) and signatures.
    An attached e-mail (message/rfc822) is an attachment that cannot be faxed.
    """
    result = MessageParts()
    counter = [0]
    try:
        _collect(parse(raw), result, counter, inside_related=False, is_related_root=False)
    except MalformedMessage:
        raise
    except Exception as exc:  # the email package raises many kinds on hostile input
        raise MalformedMessage(
            f"the MIME structure cannot be parsed ({type(exc).__name__})"
        ) from exc
    return result


def _collect(
    part: Message,
    result: MessageParts,
    counter: list[int],
    *,
    inside_related: bool,
    is_related_root: bool,
) -> None:
    """Visit parts in the same order as ``Message.walk()`` so indexes agree."""
    index = counter[0]
    counter[0] += 1
    content_type = part.get_content_type()
    if part.is_multipart():
        if content_type == "message/rfc822":
            result.attachments.append(
                Attachment(
                    index,
                    display_filename(_filename(part), index),
                    content_type,
                    b"",
                    "attached e-mail messages cannot be faxed; attach the document itself",
                )
            )
            _skip(part, counter)
            return
        related = content_type == "multipart/related"
        subparts = part.get_payload()
        if not isinstance(subparts, list):
            raise MalformedMessage(f"part {index}: broken multipart")
        for position, sub in enumerate(subparts):
            _collect(
                sub,
                result,
                counter,
                inside_related=related,
                is_related_root=related and position == 0,
            )
        return
    if content_type in _SIGNATURE_TYPES:
        return
    if inside_related and not is_related_root and part.get("Content-ID"):
        return  # a logo or signature image referenced by the HTML body
    disposition = part.get_content_disposition()
    filename = _filename(part)
    if disposition != "attachment":
        if content_type in ("text/plain", "text/html") and not filename:
            _add_body_text(part, result)
            return
        if part.get_content_maintype() == "multipart":  # multipart without subparts
            return
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        data = b""
    result.attachments.append(
        Attachment(index, display_filename(filename, index), content_type, data)
    )


def _skip(part: Message, counter: list[int]) -> None:
    for _ in part.walk():
        counter[0] += 1
    counter[0] -= 1  # walk() yields the part itself, already counted


_RAW_FILENAME = re.compile(r'(?i)(?:^|;)\s*(?:file)?name\s*=\s*(?:"([^"]*)"|([^;\s]+))')


def _filename(part: Message) -> str | None:
    try:
        name = part.get_filename()
    except Exception:  # malformed RFC 2231 parameters
        return None
    if not name:
        return None
    name = str(name)
    if "\ufffd" in name:
        name = _raw_8bit_filename(part) or name
    return decode_header(name)


def _raw_8bit_filename(part: Message) -> str | None:
    """A raw 8-bit filename (old Chinese mailers send GBK bytes) decoded by guessing.

    The email package turns such bytes into U+FFFD; the raw header still has them
    (as surrogate escapes), so decode them the way raw Subjects are decoded.
    """
    for header in ("content-disposition", "content-type"):
        for key, value in part.raw_items():
            if key.lower() != header:
                continue
            match = _RAW_FILENAME.search(str(value))
            if match:
                raw = (match[1] if match[1] is not None else match[2]).encode(
                    "ascii", "surrogateescape"
                )
                return decode_bytes(raw)
    return None


def _add_body_text(part: Message, result: MessageParts) -> None:
    if len(result.body_text) >= _BODY_TEXT_LIMIT:
        return
    data = part.get_payload(decode=True)
    if not isinstance(data, bytes):
        return
    text = decode_bytes(data, part.get_content_charset())
    if part.get_content_type() == "text/html":
        if result.body_text:
            return  # the text/plain alternative is already there
        text = re.sub(r"(?is)<(script|style)\b.*?</\1\s*>", " ", text)
        text = html.unescape(re.sub(r"(?s)<[^>]*>", " ", text))
        text = re.sub(r"[ \t]+", " ", text)
    text = text.replace("\r\n", "\n").strip()
    joined = f"{result.body_text}\n\n{text}" if result.body_text else text
    result.body_text = joined[:_BODY_TEXT_LIMIT]
