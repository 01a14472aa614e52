"""Fuzzing: thousands of malformed messages and Subjects through the milter.

Every message must end in ACCEPT, DISCARD or a 5xx with an ASCII reply of
short lines. The spool is writable here, so there is no deliberate 4xx: a
TEMPFAIL can only come from the exception guard, i.e. a bug.
"""

from __future__ import annotations

import base64
import io
import random
import shutil
import tempfile
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path

import pypdf
import pytest
from PIL import Image

from faxgate import config as config_mod
from faxgate.milter.app import FaxMilter, Runtime
from faxgate.milter.harness import Outcome, Session, drive
from faxgate.store import Store

FAX = "fax@fax.example.com"
ALICE = "alice@example.com"
SEED = 20261204


@pytest.fixture(scope="module")
def runtime() -> Iterator[Runtime]:
    # fsync on tmpfs is cheap: the fuzzer spools many jobs.
    shm = Path("/dev/shm")
    base = Path(tempfile.mkdtemp(prefix="faxgate-fuzz-", dir=shm if shm.is_dir() else None))
    cfg = config_mod.parse(
        {
            "store": {"path": str(base / "faxgate.db")},
            "spool": {"directory": str(base / "spool")},
            "milter": {"fax_addresses": [FAX]},
            "limits": {"jobs_per_day": 0},
        }
    )
    store = Store.open(cfg)
    store.add_sender(ALICE, destinations="international", allow_premium=True)
    yield Runtime.create(cfg, store)
    store.close()
    shutil.rmtree(base, ignore_errors=True)


def _pdf() -> bytes:
    writer = pypdf.PdfWriter()
    writer.add_blank_page(width=200, height=200)
    buf = io.BytesIO()
    writer.write(buf)
    return buf.getvalue()


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("L", (16, 16), 200).save(buf, "PNG")
    return buf.getvalue()


def corpus() -> list[bytes]:
    pdf, png = _pdf(), _png()
    seeds = []
    for n, parts in enumerate(
        [
            [("a.pdf", pdf, "application/pdf")],
            [("报价.pdf", pdf, "application/pdf"), ("p.png", png, "image/png")],
            [("t.txt", "你好".encode("gb18030"), "text/plain")],
            [],
        ]
    ):
        msg = EmailMessage()
        msg["From"] = ALICE
        msg["To"] = FAX
        msg["Subject"] = "86-755-83235170/金恒科技; 755-83235171"
        msg["Message-ID"] = f"<seed{n}@example.com>"
        msg.set_content("body text\n")
        if n == 1:
            msg.add_alternative("<p>hi <img src='cid:l@x'></p>", subtype="html")
        for filename, data, ctype in parts:
            maintype, subtype = ctype.split("/")
            msg.add_attachment(data, maintype=maintype, subtype=subtype, filename=filename)
        seeds.append(msg.as_bytes())
    return seeds


HOSTILE_SNIPPETS = [
    b'Content-Type: multipart/mixed; boundary=""\r\n',
    b"Content-Type: multipart/mixed\r\n",
    b"Content-Disposition: attachment; filename*0*=utf-8''%ZZ%E4; filename*1=x\r\n",
    b'Content-Disposition: attachment; filename="=?x-unknown?B?!!!?="\r\n',
    b"Content-Transfer-Encoding: base64\r\n",
    b"Content-Transfer-Encoding: x-uuencode\r\n",
    b'Content-Type: text/plain; charset="x-nonexistent"\r\n',
    b"Subject: =?GB2312?B?" + base64.b64encode("测试".encode("gb2312"))[:-1] + b"?=\r\n",
    b"Subject: =?utf-8?Q?=E4=B8?= =?big5?B?////?= =?hex?B?QUJD?= =?zlib?Q?x?=\r\n",
    b'From: <>, <@>, "\\" <a@b\r\n',
    b"Auto-Submitted: \r\n",
    b"Content-Type: message/rfc822\r\n",
    b"Content-Type: multipart/related; boundary=b\r\n\r\n--b\r\nContent-ID: <x>\r\n\r\n--b--\r\n",
    b"\r\n--\r\n--\r\n",
    b"X: " + b"A" * 5000 + b"\r\n",
    b"\x00\xff\xfe\r\n",
    b"Authentication-Results: ; ; (((\r\n",
    b"X-Priority: 99999999999999999999\r\n",
]


def mutate(rng: random.Random, data: bytes) -> bytes:
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(7)
        pos = rng.randrange(len(buf) + 1)
        if op == 0 and buf:  # flip bytes
            for _ in range(rng.randint(1, 8)):
                buf[rng.randrange(len(buf))] = rng.randrange(256)
        elif op == 1:  # delete a range
            del buf[pos : pos + rng.randint(1, 400)]
        elif op == 2 and buf:  # duplicate a range
            start = rng.randrange(len(buf))
            buf[pos:pos] = buf[start : start + rng.randint(1, 400)]
        elif op == 3:  # hostile header or MIME fragment
            buf[pos:pos] = rng.choice(HOSTILE_SNIPPETS)
        elif op == 4:  # truncate
            del buf[pos:]
        elif op == 5:  # deep nesting
            depth = rng.randint(1, 300)
            nest = b"".join(
                b"Content-Type: multipart/mixed; boundary=n%d\r\n\r\n--n%d\r\n" % (i, i)
                for i in range(depth)
            )
            buf[pos:pos] = nest
        else:  # line-ending chaos
            buf[:] = bytes(buf).replace(b"\r\n", rng.choice([b"\n", b"\r", b"\r\r\n", b"\n\r"]))
    return bytes(buf)


def check_outcome(outcome: Outcome, what: str) -> None:
    assert outcome.result in ("accept", "discard", "reject"), f"{what}: {outcome}"
    if outcome.result == "reject":
        assert outcome.reply is not None and outcome.code is not None, what
        assert outcome.code.startswith("5"), f"{what}: {outcome.reply}"
        for line in outcome.reply:
            assert line.isascii() and len(line.encode()) <= 500, f"{what}: {line!r}"


def test_mutated_messages_never_crash(runtime: Runtime) -> None:
    rng = random.Random(SEED)
    seeds = corpus()
    results: dict[str, int] = {}
    deadline = time.monotonic() + 14
    count = 0
    session = None
    try:
        while count < 3000 and time.monotonic() < deadline:
            if count % 10 == 0:  # ten messages per SMTP session: state must reset at MAIL
                if session is not None:
                    session.close()
                session = Session(lambda: FaxMilter(runtime))
            session.set_macros({"i": f"Q{count}"})
            raw = mutate(rng, rng.choice(seeds))
            recipients = [FAX] if rng.random() < 0.8 else [FAX, "other@example.org"]
            outcome = session.message(raw, ALICE, recipients)
            check_outcome(outcome, f"message {count} (seed {SEED})")
            results[outcome.result] = results.get(outcome.result, 0) + 1
            count += 1
    finally:
        if session is not None:
            session.close()
    assert count >= 1000, f"only {count} messages in the time budget"
    # The fuzzer must reach both the accepting and the rejecting paths.
    assert results.get("reject", 0) > 50 and results.get("discard", 0) > 10, results


SUBJECT_ALPHABET = "0123456789-/;；,|+ AFaf()金恒科技張三\t\u3000０１２\u200b\x00\x7f=?"
CHARSETS = ["utf-8", "gb2312", "gbk", "gb18030", "big5", "latin-1", "x-bogus", "hex", "rot13"]


def random_subject(rng: random.Random) -> bytes:
    text = "".join(rng.choice(SUBJECT_ALPHABET) for _ in range(rng.randint(0, 80)))
    style = rng.randrange(3)
    charset = rng.choice(CHARSETS)
    try:
        data = text.encode("utf-8" if charset == "x-bogus" else charset, errors="replace")
    except LookupError:
        data = text.encode()
    if style == 0:
        return data  # raw 8-bit
    if style == 1:
        return b"=?" + charset.encode() + b"?B?" + base64.b64encode(data) + b"?="
    return b"=?" + charset.encode() + b"?Q?" + data.hex("=").upper().encode() + b"?="


def test_random_subjects_never_crash(runtime: Runtime) -> None:
    rng = random.Random(SEED + 1)
    template = corpus()[0]
    deadline = time.monotonic() + 6
    count = 0
    while count < 2000 and time.monotonic() < deadline:
        subject = random_subject(rng)
        raw = template.replace(b"Subject: 86-755-83235170/=?utf-8?b?", b"X-Old: ", 1).replace(
            b"\nTo: ", b"\nSubject: " + subject + b"\r\nTo: ", 1
        )
        raw = raw.replace(b"<seed0@", b"<s%d@" % count)
        outcome = drive(lambda: FaxMilter(runtime), raw, ALICE, [FAX], {"i": f"S{count}"})
        check_outcome(outcome, f"subject {subject!r}")
        if outcome.result == "reject":
            assert outcome.reply[1] in ("5.6.0", "5.7.1", "5.6.1"), outcome.reply
        count += 1
    assert count >= 500
