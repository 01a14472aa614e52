"""faxgate.render.sniff: attachments identified by content, with specific reasons."""

from __future__ import annotations

import io
import struct
import tarfile
import time
import zipfile

import docs_factory as docs
import pytest

from faxgate.errors import PermanentError
from faxgate.render.ole import CompoundFile
from faxgate.render.sniff import EncryptedDocument, Sniffed, UnsupportedDocument, sniff


@pytest.fixture(scope="module")
def office():
    return {fmt: path.read_bytes() for fmt, path in docs.office_documents().items()}


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [("PNG", "png"), ("JPEG", "jpeg"), ("GIF", "gif"), ("BMP", "bmp"), ("TIFF", "tiff")],
)
def test_images_by_magic_not_name(fmt, expected):
    # The name and Content-Type lie; the content decides.
    assert sniff(docs.image_bytes(fmt), "report.doc", "application/msword") == Sniffed(
        "image", expected
    )


def test_pdf_and_pdf_with_leading_junk():
    pdf = docs.raster_pdf()
    assert sniff(pdf, "a.pdf") == Sniffed("pdf", "pdf")
    assert sniff(b"\r\n" * 100 + pdf, "a.pdf").kind == "pdf"


def test_password_protected_pdf_is_encrypted():
    with pytest.raises(EncryptedDocument) as info:
        sniff(docs.encrypted_pdf(), "secret.pdf")
    assert "secret.pdf" in str(info.value) and "password" in str(info.value)
    assert info.value.filename == "secret.pdf" and isinstance(info.value, PermanentError)


def test_pdf_with_only_an_owner_password_opens():
    assert sniff(docs.encrypted_pdf(user_password=""), "restricted.pdf").kind == "pdf"


def test_damaged_pdf():
    with pytest.raises(UnsupportedDocument, match="damaged"):
        sniff(b"%PDF-1.4\n" + bytes(range(256)) * 4, "broken.pdf")


@pytest.mark.parametrize(
    "fmt", ["doc", "docx", "odt", "rtf", "xls", "xlsx", "ods", "ppt", "pptx", "odp", "wri"]
)
def test_office_files_written_by_libreoffice(office, fmt):
    assert sniff(office[fmt], f"x.{fmt}") == Sniffed("office", fmt)


def test_word_document_with_encryption_flag(office):
    data = bytearray(office["doc"])
    ole = CompoundFile(bytes(data))
    entry = ole.find("WordDocument")
    assert entry is not None and entry.size >= 4096  # in regular sectors
    offset = (entry.start + 1) * 512 + 0x0A
    (flags,) = struct.unpack_from("<H", data, offset)
    struct.pack_into("<H", data, offset, flags | 0x0100)
    with pytest.raises(EncryptedDocument, match="Word document is password protected"):
        sniff(bytes(data), "locked.doc")


@pytest.mark.parametrize(
    ("streams", "reason"),
    [
        ({"EncryptionInfo": b"\x04", "EncryptedPackage": b"\x00"}, "Office document"),
        ({"WordDocument": docs.word_fib(encrypted=True)}, "Word document"),
        ({"Workbook": docs.biff8(encrypted=True)}, "Excel workbook"),
        ({"PowerPoint Document": b"\x00", "EncryptedSummary": b"\x00"}, "PowerPoint"),
    ],
)
def test_encrypted_ole2_containers(streams, reason):
    with pytest.raises(EncryptedDocument, match=reason):
        sniff(docs.ole2(streams), "locked")


@pytest.mark.parametrize(
    ("streams", "fmt"),
    [
        ({"WordDocument": docs.word_fib(encrypted=False)}, "doc"),
        ({"Workbook": docs.biff8(encrypted=False)}, "xls"),
        ({"Book": docs.biff8(encrypted=False)}, "xls"),
        ({"PowerPoint Document": b"\x00", "Current User": b"\x00"}, "ppt"),
    ],
)
def test_plain_ole2_containers(streams, fmt):
    assert sniff(docs.ole2(streams), "file.bin") == Sniffed("office", fmt)


def test_wps_documents_are_refused_with_advice():
    with pytest.raises(UnsupportedDocument, match=r"WPS documents.*\.doc or PDF"):
        sniff(docs.ole2({"WpsContent": b"\x00"}), "报价.wps")
    with pytest.raises(UnsupportedDocument, match="WPS"):
        sniff(docs.ole2({"Something": b"\x00"}), "报价.wps")


def test_text_in_chinese_encodings():
    assert sniff(docs.chinese_text("gbk"), "a.txt").encoding == "gb18030"
    assert sniff(docs.chinese_text("big5"), "b.txt").encoding in ("cp950", "big5hkscs", "big5")
    assert sniff(docs.chinese_text("utf-8"), "c.txt").encoding == "utf-8"
    assert sniff(docs.chinese_text("utf-16"), "d.txt").encoding == "utf-16"


JAPANESE = "拝啓　時下ますますご清栄のこととお慶び申し上げます。\n見積書を添付いたします。\n敬具\n"


def test_undeclared_shift_jis_text():
    assert sniff(JAPANESE.encode("shift_jis"), "見積.txt").encoding == "cp932"


@pytest.mark.parametrize("order", ["utf-16-le", "utf-16-be"])
@pytest.mark.parametrize("text", [docs.ENGLISH + "\n", docs.CHINESE * 3 + "\n", JAPANESE])
def test_utf16_without_byte_order_mark(order, text):
    assert sniff(text.encode(order), "note.txt") == Sniffed("text", "txt", order)


def test_binary_with_zero_bytes_is_not_utf16():
    with pytest.raises(UnsupportedDocument, match="unknown binary"):
        sniff(b"abc\x00\x01\x02" * 100, "data.bin")
    with pytest.raises(UnsupportedDocument, match="unknown binary"):
        sniff(bytes(range(1, 256)) * 8 + b"\x00", "data.bin")


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"<!DOCTYPE html><html><body><p>Hi</p></body></html>", Sniffed("text", "html", "utf-8")),
        (b"  <!-- saved page -->\n<HTML><BODY>x</BODY></HTML>", Sniffed("text", "html", "utf-8")),
        (
            '<html><head><meta charset="big5"></head><body>傳真</body></html>'.encode("big5"),
            Sniffed("text", "html", "cp950"),
        ),
        ("<html><body>传真</body></html>".encode("utf-16"), Sniffed("text", "html", "utf-16")),
        (b"Use <b>bold</b> and <html> tags like this.\n", Sniffed("text", "txt", "utf-8")),
    ],
)
def test_html_documents_are_told_from_text_mentioning_tags(data, expected):
    assert sniff(data, "page") == expected


def test_large_chinese_text_is_detected_beyond_the_sample():
    # Longer than the detection sample, which must not end inside a character.
    data = (docs.CHINESE + "\n").encode("gbk") * 20_000
    assert len(data) > 300_000
    assert sniff(data, "big.txt").encoding == "gb18030"


def test_undeclared_western_text():
    letter = "Sehr geehrte Damen und Herren,\nanbei unser Angebot für Bürobedarf.\nGrüße\n"
    assert sniff(letter.encode("cp1252"), "brief.txt").encoding == "cp1252"
    assert sniff(("Grüße aus Köln. " * 400).encode("latin-1"), "x.txt").encoding == "cp1252"


def test_declared_charset_is_used():
    data = "Grüße aus Köln, déjà vu".encode("latin-1")
    result = sniff(data, "a.txt", 'text/plain; charset="ISO-8859-1"')
    assert result == Sniffed("text", "txt", "cp1252")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"MZ\x90\x00\x03\x00\x00\x00" + bytes(200), "executable"),
        (b"\x7fELF\x02\x01\x01" + bytes(200), "executable"),
        (b"#!/bin/sh\nrm -rf /\n", "executable"),
        (b"Rar!\x1a\x07\x01\x00" + bytes(100), "RAR"),
        (b"7z\xbc\xaf\x27\x1c" + bytes(100), "7-Zip"),
        (b"\x1f\x8b\x08\x00" + bytes(100), "gzip"),
        (b"BZh91AY&SY" + bytes(100), "bzip2"),
        (b"\xfd7zXZ\x00" + bytes(100), "xz"),
        (bytes(range(256)) * 20, "unknown binary"),
        (b"%!PS-Adobe-3.0\n%%Pages: 1\n", "PostScript"),
    ],
)
def test_rejected_with_specific_reason(data, reason):
    with pytest.raises(UnsupportedDocument, match=reason) as info:
        sniff(data, "evil.bin")
    assert str(info.value).startswith("evil.bin: ")


def test_zip_and_tar_archives():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("a.txt", "hello")
    with pytest.raises(UnsupportedDocument, match=r"archives \(ZIP\)"):
        sniff(out.getvalue(), "a.zip")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as archive:
        info = tarfile.TarInfo("a.txt")
        info.size = 5
        archive.addfile(info, io.BytesIO(b"hello"))
    with pytest.raises(UnsupportedDocument, match=r"archives \(tar\)"):
        sniff(out.getvalue(), "a.tar")


@pytest.mark.parametrize("prefix", [b"", b"\r\n" * 20], ids=["plain", "behind-junk"])
def test_zip_with_a_stored_pdf_is_an_archive_not_a_pdf(prefix):
    # A stored member's data follows its local header: %PDF- is within 1024 bytes.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr("invoice.pdf", docs.raster_pdf())
    data = prefix + out.getvalue()
    assert b"%PDF-" in data[:1024]
    with pytest.raises(UnsupportedDocument, match=r"archives \(") as info:
        sniff(data, "invoice.zip")
    assert info.value.filename == "invoice.zip"


def test_tar_with_a_pdf_is_an_archive_not_a_pdf():
    out = io.BytesIO()
    pdf = docs.raster_pdf()
    with tarfile.open(fileobj=out, mode="w") as archive:
        info = tarfile.TarInfo("invoice.pdf")
        info.size = len(pdf)
        archive.addfile(info, io.BytesIO(pdf))
    with pytest.raises(UnsupportedDocument, match=r"archives \(tar\)"):
        sniff(out.getvalue(), "invoice.tar")


def test_zip_bomb_is_judged_by_its_directory_only():
    # 1 GB of zeros compresses to ~1 MB; sniff must not inflate it.
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("[Content_Types].xml", "<Types/>")
        with archive.open("word/document.xml", "w", force_zip64=True) as member:
            chunk = bytes(1 << 20)
            for _ in range(1024):
                member.write(chunk)
    started = time.monotonic()
    assert sniff(out.getvalue(), "big.docx") == Sniffed("office", "docx")
    assert time.monotonic() - started < 1.0


def test_odf_mimetype_member_is_bounded():
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("mimetype", "application/vnd.oasis.opendocument.text" + " " * 10**6)
    with pytest.raises(UnsupportedDocument, match="ZIP"):
        sniff(out.getvalue(), "huge-mimetype.odt")


def test_damaged_ole2_file():
    broken = docs.ole2({"WordDocument": docs.word_fib(False)})[:700]
    with pytest.raises(UnsupportedDocument, match="damaged Office file"):
        sniff(broken, "broken.doc")
