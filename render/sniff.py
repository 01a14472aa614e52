"""What is this attachment? Decided by content, never by name or Content-Type alone.

The milter calls :func:`sniff` on every attachment while the SMTP client is
still connected, so a file we cannot fax is rejected with a reason the sender
can act on, instead of failing hours later in faxd. It must be fast and safe
on hostile input: it reads headers, ZIP central directories and OLE2
directories, and never decompresses or renders anything.
"""

from __future__ import annotations

import io
import re
import struct
import zipfile
from dataclasses import dataclass

from faxgate.render import charsets
from faxgate.render.errors import EncryptedDocument, UnsupportedDocument
from faxgate.render.ole import SIGNATURE as OLE2_SIGNATURE
from faxgate.render.ole import CompoundFile

__all__ = ["EncryptedDocument", "Sniffed", "UnsupportedDocument", "sniff"]

#: Formats whose pages come from LibreOffice.
OFFICE_FORMATS = frozenset(
    {"doc", "docx", "xls", "xlsx", "ppt", "pptx", "odt", "ods", "odp", "rtf", "wri"}
)

#: Largest ``mimetype`` member of an ODF package we are willing to read.
_MAX_ODF_MIMETYPE = 200

_ODF_FORMATS = {
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.oasis.opendocument.spreadsheet": "ods",
    "application/vnd.oasis.opendocument.presentation": "odp",
}

_WPS_REASON = "WPS documents cannot be converted; save as .doc or PDF"
_WPS_SUFFIXES = (".wps", ".et", ".dps")

_IMAGE_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"II*\x00", "tiff"),
    (b"MM\x00*", "tiff"),
)

_EXECUTABLE_MAGIC = (
    b"\x7fELF",
    b"#!",
    b"\xfe\xed\xfa\xce",
    b"\xfe\xed\xfa\xcf",
    b"\xce\xfa\xed\xfe",
    b"\xcf\xfa\xed\xfe",
    b"\xca\xfe\xba\xbe",
    b"\x00asm",
)

_ARCHIVE_MAGIC = (
    (b"Rar!\x1a\x07", "RAR"),
    (b"7z\xbc\xaf\x27\x1c", "7-Zip"),
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"MSCF", "cabinet"),
)

_ZIP_LOCAL_HEADER = b"PK\x03\x04"
_ZIP_REASON = "archives (ZIP) cannot be faxed; attach the documents themselves"

_WRITE_MAGIC = (b"\x31\xbe\x00\x00\x00\xab", b"\x32\xbe\x00\x00\x00\xab")


@dataclass(frozen=True)
class Sniffed:
    """The kind of document (how it is rendered) and its precise format.

    ``encoding`` is set for text: the charset the file decodes with.
    """

    kind: str  # "pdf" | "image" | "text" | "office"
    format: str
    encoding: str | None = None


def sniff(data: bytes, filename: str | None = None, content_type: str | None = None) -> Sniffed:
    """Identify ``data`` or raise :class:`UnsupportedDocument` with a specific reason.

    ``content_type`` may carry a ``charset`` parameter, used for text files.
    Raises :class:`EncryptedDocument` for password-protected PDF and Office files.
    """
    if not data:
        raise UnsupportedDocument(filename, "the file is empty")
    head = data[:1024]
    for magic, fmt in _IMAGE_MAGIC:
        if data.startswith(magic):
            return Sniffed("image", fmt)
    if data.startswith(b"BM") and len(data) >= 26 and _plausible_bmp(data):
        return Sniffed("image", "bmp")
    if data.startswith(OLE2_SIGNATURE):
        return _sniff_ole2(data, filename)
    if data.startswith((_ZIP_LOCAL_HEADER, b"PK\x05\x06")):
        return _sniff_zip(data, filename)
    if data.startswith(b"{\\rtf"):
        return Sniffed("office", "rtf")
    if data.startswith(_WRITE_MAGIC):
        return Sniffed("office", "wri")
    _reject_known_binary(data, filename)
    # Readers accept junk before the PDF header, so it is searched for, but only
    # once no format's magic at offset 0 claimed the file: a PDF member stored
    # uncompressed in a ZIP or tar archive lies within the first 1024 bytes too.
    header_at = head.find(b"%PDF-")
    if header_at >= 0:
        if _ZIP_LOCAL_HEADER in head[:header_at]:  # a ZIP behind a prefix (self-extracting)
            raise UnsupportedDocument(filename, _ZIP_REASON)
        _check_pdf(data, filename)
        return Sniffed("pdf", "pdf")
    declared = _charset_param(content_type) or _html_meta_charset(data)
    encoding = charsets.detect_encoding(data, declared)
    if encoding is None:
        raise UnsupportedDocument(filename, "unknown binary data; send PDF, an image or text")
    if head.lstrip().startswith(b"%!PS"):
        raise UnsupportedDocument(filename, "PostScript files are not supported; send PDF")
    if _has_suffix(filename, _WPS_SUFFIXES):
        raise UnsupportedDocument(filename, _WPS_REASON)
    if _HTML_START.match(data[:2048].decode(encoding, errors="replace")):
        return Sniffed("text", "html", encoding)
    return Sniffed("text", "txt", encoding)


#: An HTML document: optional BOM, comments and XML declaration, then one of these tags.
_HTML_START = re.compile(
    r"^\ufeff?\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b",
    re.IGNORECASE | re.DOTALL,
)
_META_CHARSET = re.compile(rb"<meta[^>]*?charset\s*=\s*[\"']?([A-Za-z0-9_.:-]+)", re.IGNORECASE)


def _html_meta_charset(data: bytes) -> str | None:
    """The charset an HTML file declares in a <meta> tag near its start."""
    found = _META_CHARSET.search(data[:4096])
    return found.group(1).decode("ascii") if found else None


def _has_suffix(filename: str | None, suffixes: tuple[str, ...]) -> bool:
    return bool(filename) and filename.lower().endswith(suffixes)


def _charset_param(content_type: str | None) -> str | None:
    if not content_type:
        return None
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            return value.strip().strip('"')
    return None


def _plausible_bmp(data: bytes) -> bool:
    """ "BM" also starts text files; a real bitmap header has a known DIB header size."""
    (header_size,) = struct.unpack_from("<I", data, 14)
    return header_size in (12, 16, 40, 52, 56, 64, 108, 124)


def _check_pdf(data: bytes, filename: str | None) -> None:
    """Reject PDFs that need a password to open, or that no reader can parse.

    PDFs encrypted with only an owner password (printing restrictions) open
    with the empty user password and are rendered normally.
    """
    import pypdf
    import pypdfium2

    try:
        encrypted = pypdf.PdfReader(io.BytesIO(data), strict=False).is_encrypted
    except Exception:  # pypdf raises many kinds on damaged files; pdfium decides below
        encrypted = None
    if encrypted is False:
        return
    from faxgate.render.pdf import PDFIUM_LOCK

    try:
        with PDFIUM_LOCK:  # PDFium is not thread-safe; the milter sniffs in many threads
            pypdfium2.PdfDocument(data).close()
    except pypdfium2.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise EncryptedDocument(filename, "the PDF is password protected") from None
        raise UnsupportedDocument(filename, "the PDF is damaged and cannot be read") from None


def _sniff_ole2(data: bytes, filename: str | None) -> Sniffed:
    try:
        ole = CompoundFile(data)
        names = ole.names()
        if {"EncryptionInfo", "EncryptedPackage"} & names:
            raise EncryptedDocument(filename, "the Office document is password protected")
        if "WordDocument" in names:
            _check_word_encryption(ole, filename)
            return Sniffed("office", "doc")
        for stream in ("Workbook", "Book"):
            if stream in names:
                _check_excel_encryption(ole, stream, filename)
                return Sniffed("office", "xls")
        if "PowerPoint Document" in names:
            if "EncryptedSummary" in names:
                raise EncryptedDocument(filename, "the PowerPoint file is password protected")
            return Sniffed("office", "ppt")
    except ValueError as exc:
        raise UnsupportedDocument(filename, f"damaged Office file ({exc})") from None
    if _has_suffix(filename, _WPS_SUFFIXES) or any("wps" in n.lower() for n in names):
        raise UnsupportedDocument(filename, _WPS_REASON)
    raise UnsupportedDocument(filename, "unsupported OLE2 document (not Word, Excel or PowerPoint)")


def _check_word_encryption(ole: CompoundFile, filename: str | None) -> None:
    """FIB flags at offset 0x0A: fEncrypted (0x0100) or fObfuscated (0x8000)."""
    entry = ole.find("WordDocument")
    fib = ole.read_prefix(entry, 12) if entry else b""
    if len(fib) < 12:
        raise ValueError("WordDocument stream too short")
    (flags,) = struct.unpack_from("<H", fib, 0x0A)
    if flags & 0x0100 or flags & 0x8000:
        raise EncryptedDocument(filename, "the Word document is password protected")


#: BIFF record types: FILEPASS marks an encrypted workbook; BOUNDSHEET/EOF end the search.
_BIFF_FILEPASS, _BIFF_BOUNDSHEET, _BIFF_EOF = 0x002F, 0x0085, 0x000A


def _check_excel_encryption(ole: CompoundFile, stream: str, filename: str | None) -> None:
    entry = ole.find(stream)
    data = ole.read_prefix(entry, 16384) if entry else b""
    offset = 0
    while offset + 4 <= len(data):
        record, length = struct.unpack_from("<HH", data, offset)
        if record == _BIFF_FILEPASS:
            raise EncryptedDocument(filename, "the Excel workbook is password protected")
        if record in (_BIFF_BOUNDSHEET, _BIFF_EOF):
            return
        offset += 4 + length


def _sniff_zip(data: bytes, filename: str | None) -> Sniffed:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
        mimetype = archive.getinfo("mimetype") if "mimetype" in names else None
        if mimetype is not None and mimetype.file_size <= _MAX_ODF_MIMETYPE:
            if mimetype.compress_size > _MAX_ODF_MIMETYPE:
                raise zipfile.BadZipFile("oversized mimetype member")
            kind = archive.read(mimetype).decode("ascii", errors="replace").strip()
            if kind in _ODF_FORMATS:
                return Sniffed("office", _ODF_FORMATS[kind])
            if kind.startswith("application/vnd.oasis.opendocument."):
                what = kind.rsplit(".", 1)[-1]
                raise UnsupportedDocument(
                    filename, f"OpenDocument {what} files are not supported; send PDF"
                )
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, OSError):
        raise UnsupportedDocument(filename, "damaged ZIP or Office file") from None
    if "[Content_Types].xml" in names:
        for prefix, fmt in (("word/", "docx"), ("xl/", "xlsx"), ("ppt/", "pptx")):
            if any(n.startswith(prefix) for n in names):
                return Sniffed("office", fmt)
    raise UnsupportedDocument(filename, _ZIP_REASON)


def _reject_known_binary(data: bytes, filename: str | None) -> None:
    dos_header = data.startswith(b"MZ") and b"\x00" in data[:64]
    if dos_header or data.startswith(_EXECUTABLE_MAGIC):
        raise UnsupportedDocument(filename, "executable programs and scripts cannot be faxed")
    for magic, name in _ARCHIVE_MAGIC:
        if data.startswith(magic):
            raise UnsupportedDocument(
                filename, f"archives ({name}) cannot be faxed; attach the documents themselves"
            )
    if data.startswith(b"BZh") and data[3:4].isdigit():
        raise UnsupportedDocument(
            filename, "archives (bzip2) cannot be faxed; attach the documents themselves"
        )
    if len(data) >= 512 and data[257:262] == b"ustar":
        raise UnsupportedDocument(
            filename, "archives (tar) cannot be faxed; attach the documents themselves"
        )
