"""Header decoding and MIME splitting on hostile and Chinese input."""

from __future__ import annotations

import base64
import time
from email.message import EmailMessage

import pytest

from faxgate.milter.mimeparts import (
    MAX_MIME_DEPTH,
    MAX_MIME_PARTS,
    MimeLimitExceeded,
    ascii_safe,
    decode_bytes,
    decode_header,
    describe_char,
    display_filename,
    split_message,
)
from faxgate.milter.rules.auth_results import passes


def b_word(charset: str, text: str, codec: str | None = None) -> str:
    return f"=?{charset}?B?{base64.b64encode(text.encode(codec or charset)).decode()}?="


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b_word("GB2312", "金恒科技"), "金恒科技"),
        # GB2312 declared, GBK-only character sent (common): decoded as GB18030.
        (b_word("GB2312", "镕基", "gbk"), "镕基"),
        (b_word("big5", "金恆科技"), "金恆科技"),
        (b_word("UTF-8", "张三"), "张三"),
        ("=?utf-8?q?=E5=BC=A0_=E4=B8=89?=", "张 三"),
        # Adjacent words are joined without the space between them.
        (b_word("utf-8", "75") + " " + b_word("utf-8", "5-1"), "755-1"),
        ("755-8323 =?bogus?B?%%%?=", "755-8323 =?bogus?B?%%%?="),
        ("folded\r\n line", "folded line"),
    ],
)
def test_decode_header(raw: str, expected: str) -> None:
    assert decode_header(raw) == expected


def test_multibyte_character_split_across_encoded_words() -> None:
    data = "金恒".encode("gb18030")
    first = base64.b64encode(data[:3]).decode()
    second = base64.b64encode(data[3:]).decode()
    assert decode_header(f"=?gbk?B?{first}?= =?gbk?B?{second}?=") == "金恒"


@pytest.mark.parametrize(
    ("text", "codec"), [("金恒科技", "utf-8"), ("金恒科技", "gb18030"), ("金恆科技", "big5")]
)
def test_raw_8bit_guessing(text: str, codec: str) -> None:
    assert decode_bytes(text.encode(codec)) == text
    assert decode_header(b"86-755-1/" + text.encode(codec)) == f"86-755-1/{text}"


def test_ascii_safe_and_describe() -> None:
    assert ascii_safe("a张\x00b") == "a\\u5f20\\u0000b"
    assert ascii_safe("x" * 1000, 50).endswith("...") and len(ascii_safe("x" * 1000, 50)) == 50
    assert describe_char("；") == "U+FF1B FULLWIDTH SEMICOLON"
    assert describe_char("x") == "'x'"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", "passwd"),
        ("C:\\Users\\x\\evil.exe", "evil.exe"),
        ("\x1b[31mred\x00.pdf", "[31mred.pdf"),
        ("...", "attachment 3"),
        (None, "attachment 3"),
        ("a" * 300 + ".pdf", "a" * 117 + "..."),
    ],
)
def test_display_filename(name: str | None, expected: str) -> None:
    assert display_filename(name, 3) == expected


def test_signature_and_forwarded_message_parts() -> None:
    msg = EmailMessage()
    msg["Subject"] = "x"
    msg.set_content("text")
    msg.add_attachment(b"%PDF-1.4 x", maintype="application", subtype="pdf", filename="a.pdf")
    msg.add_attachment(b"sig", maintype="application", subtype="pgp-signature")
    inner = EmailMessage()
    inner["Subject"] = "fwd"
    inner.set_content("inner")
    msg.add_attachment(inner)
    parts = split_message(msg.as_bytes())
    assert [a.filename for a in parts.attachments][0] == "a.pdf"
    assert parts.attachments[1].unsupported and "e-mail" in parts.attachments[1].unsupported
    assert parts.body_text == "text"
    indexes = [p for p, _ in enumerate(msg.walk())]
    assert parts.attachments[0].part in indexes


def test_html_only_body_text() -> None:
    msg = EmailMessage()
    msg.set_content("<html><style>p{}</style><p>Hello &amp; bye</p></html>", subtype="html")
    assert split_message(msg.as_bytes()).body_text == "Hello & bye"


def _nested(depth: int) -> bytes:
    opening = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i)
        for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(depth)))
    leaf = b"Content-Type: text/plain\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nx"
    return opening + leaf + closing


def _flat(parts: int) -> bytes:
    leaf = b"--B\r\nContent-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\nx\r\n"
    return b"Content-Type: multipart/mixed; boundary=B\r\n\r\n" + leaf * parts + b"--B--\r\n"


def test_mime_bombs_stop_at_the_limits_quickly() -> None:
    # 10,000 nested multiparts took minutes (parse cost is parts x depth); 100,000
    # tiny attachments took 150 s in the milter. Both must stop at once, naming the limit.
    started = time.monotonic()
    with pytest.raises(MimeLimitExceeded, match=f"more than {MAX_MIME_DEPTH} levels deep"):
        split_message(_nested(10_000))
    with pytest.raises(MimeLimitExceeded, match=f"more than {MAX_MIME_PARTS} MIME parts"):
        split_message(_flat(100_000))
    assert time.monotonic() - started < 5


def test_deeply_nested_comments_in_authentication_results_are_linear() -> None:
    depth = 50_000
    value = "mx; dkim=pass " + "(" * depth + ")" * depth + " header.d=example.com"
    started = time.monotonic()
    assert passes(value, "example.com")
    assert time.monotonic() - started < 1


def test_mime_limits_leave_room_for_real_mail() -> None:
    assert len(split_message(_nested(MAX_MIME_DEPTH - 1)).attachments) == 1
    assert len(split_message(_flat(MAX_MIME_PARTS - 1)).attachments) == MAX_MIME_PARTS - 1


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("mx; dkim=pass header.d=example.com", True),
        ("mx; dkim=pass header.i=@mail.example.com", True),
        ("mx; dkim=fail header.d=example.com; dmarc=pass header.from=example.com", True),
        ("mx; dkim=pass header.d=evil.com", False),
        ("mx; dkim=pass (comment; dkim=pass header.d=example.com) header.d=evil.com", False),
        ("mx; dmarc=fail header.from=example.com", False),
        ("mx; dkim=pass (a \\) dkim=fail (b)) header.d=example.com", True),
        ("mx; dkim=pass (unclosed header.d=example.com", False),
        ("mx", False),
    ],
)
def test_authentication_results_alignment(value: str, ok: bool) -> None:
    assert passes(value, "example.com") is ok


def test_part_indexes_match_walk_order_used_by_faxd() -> None:
    """faxd reads documents[].part as an index into email's walk(): same bytes."""
    from email import message_from_bytes, policy

    msg = EmailMessage()
    msg["Subject"] = "x"
    msg.set_content("plain")
    msg.add_alternative('<p><img src="cid:logo@x"></p>', subtype="html")
    msg.get_payload()[1].add_related(b"\x89PNG logo", "image", "png", cid="<logo@x>")
    msg.add_attachment(b"%PDF-1.4 first", maintype="application", subtype="pdf", filename="1.pdf")
    msg.add_attachment(b"sig", maintype="application", subtype="pkcs7-signature")
    msg.add_attachment("second text", subtype="plain", filename="2.txt")
    msg.add_attachment(b"\x89PNG third", maintype="image", subtype="png", filename="3.png")
    raw = msg.as_bytes()
    attachments = split_message(raw).attachments
    assert [a.filename for a in attachments] == ["1.pdf", "2.txt", "3.png"]
    walked = list(message_from_bytes(raw, policy=policy.default).walk())
    for attachment in attachments:
        assert walked[attachment.part].get_payload(decode=True) == attachment.data


@pytest.mark.parametrize("codec", ["gbk", "utf-8"])
def test_raw_8bit_attachment_filename(codec: str) -> None:
    name = "报价单.pdf".encode(codec)
    raw = (
        b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
        b'Content-Type: application/pdf; name="' + name + b'"\r\n'
        b'Content-Disposition: attachment; filename="' + name + b'"\r\n'
        b"Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--b--\r\n"
    )
    (attachment,) = split_message(raw).attachments
    assert attachment.filename == "报价单.pdf"
    assert attachment.data == b"%PDF-1.4\n"


def test_line_end_search_agrees_with_the_email_packages_regex() -> None:
    import email.feedparser
    import random
    import re

    from faxgate.milter.mimeparts import _LineEndAtEnd

    assert isinstance(email.feedparser.NLCRE_eol, _LineEndAtEnd)  # installed on import
    stdlib = re.compile(r"(\r\n|\r|\n)\Z")
    fast = _LineEndAtEnd()
    rng = random.Random(7)
    samples = ["", "\n", "\r", "\r\n", "\n\r", "\r\r\n", "x\n\n", "ab", "a\r\nb", "\n\n\r\n"]
    samples += ["".join(rng.choice("a\r\n") for _ in range(rng.randint(0, 6))) for _ in range(500)]
    for text in samples:
        expected, got = stdlib.search(text), fast.search(text)
        assert (expected and (expected.span(), expected.group(0))) == (
            got and (got.span(), got.group(0))
        ), repr(text)


@pytest.mark.parametrize("charset", ["unicode_escape", "raw_unicode_escape", "utf-16", "utf-7"])
def test_declared_charsets_never_yield_lone_surrogates(charset: str) -> None:
    for payload in (b"\\ud800x", b"+2AA-", b"\x00\xd8"):
        text = decode_bytes(payload, charset)
        text.encode("utf-8")  # a lone surrogate would raise here (job.json, store, replies)
    word = "=?unicode_escape?q?=5Cud800?="
    assert decode_header(f"755-1/{word}").encode("utf-8")
