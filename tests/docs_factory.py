"""Real test documents, made on the spot: Office files written by LibreOffice,
PDFs by Pillow and pypdf, a Windows Write file and OLE2 containers by small
writers here, images by Pillow. Nothing is checked in as a binary blob.

Test modules load this file by path (pytest runs with --import-mode=importlib).
"""

from __future__ import annotations

import atexit
import io
import shutil
import struct
import subprocess
import tempfile
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pypdf
from PIL import Image, ImageDraw

CHINESE = "传真网关测试文件。这是一份中文的传真，请查收。"
TRADITIONAL = "傳真閘道測試文件。這是一份中文的傳真，請查收。"
ENGLISH = "The quick brown fox jumps over the lazy dog. Fax gateway test."

# ------------------------------------------------------------------ images


def png(width: int = 400, height: int = 300, mode: str = "L") -> bytes:
    image = Image.new(mode, (width, height), "white")
    ImageDraw.Draw(image).rectangle((20, 20, width - 20, height // 3), fill="black")
    return _save(image, "PNG")


def _save(image: Image.Image, fmt: str, **params: object) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **params)
    return out.getvalue()


def image_bytes(fmt: str) -> bytes:
    """A small portrait picture with a black bar at the top, in ``fmt``."""
    image = Image.new("RGB", (300, 400), "white")
    ImageDraw.Draw(image).rectangle((0, 0, 299, 60), fill="black")
    return _save(image, fmt)


def jpeg_rotated_by_exif() -> bytes:
    """A portrait picture (black bar on top when shown right) stored sideways
    with EXIF Orientation 6 (display rotated 90° clockwise), as phones do."""
    upright = Image.new("RGB", (300, 400), "white")
    ImageDraw.Draw(upright).rectangle((0, 0, 299, 60), fill="black")
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what orientation 6 undoes
    exif = Image.Exif()
    exif[0x0112] = 6
    return _save(stored, "JPEG", exif=exif.tobytes(), quality=95)


def multipage_tiff(pages: int = 3) -> bytes:
    frames = []
    for number in range(pages):
        frame = Image.new("L", (600, 800), 255)
        ImageDraw.Draw(frame).rectangle((50, 50 + number * 100, 550, 120 + number * 100), fill=0)
        frames.append(frame)
    return _save(frames[0], "TIFF", save_all=True, append_images=frames[1:], dpi=(100, 100))


def fax_tiff(resolution_lpi: float = 98.0, height: int = 1100) -> tuple[bytes, Image.Image]:
    """A bilevel G4 TIFF page exactly as fax machines store them, and its pixels."""
    rng = np.random.default_rng(7)
    pixels = np.ones((height, 1728), dtype=bool)
    pixels[100:140, 100:1600] = False
    pixels[200:800, 200:210] = False
    pixels[900:1000] = rng.random((100, 1728)) > 0.5
    image = Image.fromarray(pixels)
    return _save(image, "TIFF", compression="group4", dpi=(204, resolution_lpi)), image


def grey_photo(width: int = 800, height: int = 600) -> bytes:
    """A photo-like greyscale picture: a horizontal gradient with noise, and a
    uniform mid-grey block (128) on the left half of the bottom third."""
    rng = np.random.default_rng(1)
    gradient = np.tile(np.linspace(30, 225, width), (height, 1))
    noisy = gradient + rng.normal(0, 12, (height, width))
    noisy[height * 2 // 3 :, : width // 2] = 128
    return _save(Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)), "PNG")


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width``×``height`` pixels (a decompression bomb)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 1024))
        + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------ PDF


def raster_pdf(
    pages: int = 1, size: tuple[int, int] = (827, 1169), blank_after: int = 0, dpi: int = 100
) -> bytes:
    """A PDF of ``pages`` pages of ``size`` pixels at ``dpi`` (A4 portrait by
    default), each with a black frame around the edge and a bar near the top,
    followed by ``blank_after`` white pages."""
    images = []
    for number in range(pages):
        image = Image.new("L", size, 255)
        draw = ImageDraw.Draw(image)
        draw.rectangle((0, 0, size[0] - 1, size[1] - 1), outline=0, width=6)
        draw.rectangle((40, 40 + 10 * number, size[0] - 40, 90 + 10 * number), fill=0)
        images.append(image)
    images += [Image.new("L", size, 255) for _ in range(blank_after)]
    return _save(images[0], "PDF", save_all=True, append_images=images[1:], resolution=dpi)


def landscape_pdf() -> bytes:
    """One landscape A4 page: frame around the edge, thick bar along the top edge."""
    image = Image.new("L", (1169, 827), 255)
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, 1168, 826), outline=0, width=6)
    draw.rectangle((0, 0, 1168, 120), fill=0)
    return _save(image, "PDF", resolution=100)


def encrypted_pdf(user_password: str = "secret", owner_password: str = "owner") -> bytes:
    """``raster_pdf`` encrypted with pypdf (RC4, no extra crypto library needed).
    An empty user password makes a PDF anyone may open but not edit."""
    reader = pypdf.PdfReader(io.BytesIO(raster_pdf()))
    writer = pypdf.PdfWriter()
    for page in reader.pages:
        writer.add_page(page)
    writer.encrypt(user_password, owner_password, algorithm="RC4-128")
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def pdf_with_huge_image(width: int = 100_000, height: int = 100_000) -> bytes:
    """A one-page PDF whose image XObject declares ``width``×``height`` 1-bit
    pixels but holds a 1 kB deflate stream (a decompression bomb)."""
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(raster_pdf()))
    xobjects = writer.pages[0]["/Resources"]["/XObject"]
    name = next(iter(xobjects))
    bomb = pypdf.generic.StreamObject()
    bomb.set_data(zlib.compress(bytes(1 << 20), 9))
    bomb.update(
        {
            pypdf.generic.NameObject("/Type"): pypdf.generic.NameObject("/XObject"),
            pypdf.generic.NameObject("/Subtype"): pypdf.generic.NameObject("/Image"),
            pypdf.generic.NameObject("/Width"): pypdf.generic.NumberObject(width),
            pypdf.generic.NameObject("/Height"): pypdf.generic.NumberObject(height),
            pypdf.generic.NameObject("/ColorSpace"): pypdf.generic.NameObject("/DeviceGray"),
            pypdf.generic.NameObject("/BitsPerComponent"): pypdf.generic.NumberObject(1),
            pypdf.generic.NameObject("/Filter"): pypdf.generic.NameObject("/FlateDecode"),
        }
    )
    xobjects[pypdf.generic.NameObject(name)] = writer._add_object(bomb)
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


# ------------------------------------------------------------------ text


def chinese_text(encoding: str) -> bytes:
    """Several lines of Chinese (traditional for Big5) with Latin, in ``encoding``."""
    body = TRADITIONAL if encoding.lower().startswith(("big5", "cp950")) else CHINESE
    return "\n".join([body, ENGLISH, body * 3, body]).encode(encoding)


# ------------------------------------------------------------------ Windows Write


def write_wri(text: str) -> bytes:
    """A Windows Write 3.0 (.wri) file: a 128-byte header (wIdent 0xBE31,
    wTool 0xAB00, fcMac = end of text), the text from offset 128 in 128-byte
    pages, then one character-property and one paragraph-property page (FKPs
    whose single FOD covers all text with default properties, bfprop 0xFFFF).
    The remaining tables are empty: their page numbers all equal pnMac."""
    body = text.replace("\n", "\r\n").encode("cp1252")
    fc_mac = 128 + len(body)
    text_pages = (len(body) + 127) // 128
    pn_para = 1 + text_pages + 1  # character FKP first, then the paragraph FKP
    pn_mac = pn_para + 1

    def fkp() -> bytes:
        page = bytearray(128)
        struct.pack_into("<I", page, 0, 128)  # fcFirst: text starts at byte 128
        struct.pack_into("<IH", page, 4, fc_mac, 0xFFFF)  # one FOD: up to fcMac, defaults
        page[127] = 1  # cfod
        return bytes(page)

    header = bytearray(128)
    struct.pack_into("<HHH", header, 0, 0xBE31, 0, 0xAB00)
    struct.pack_into("<I", header, 14, fc_mac)
    # pnPara, pnFntb, pnSep, pnSetb, pnPgtb, pnFfntb
    struct.pack_into("<6H", header, 18, pn_para, pn_mac, pn_mac, pn_mac, pn_mac, pn_mac)
    struct.pack_into("<H", header, 96, pn_mac)
    return bytes(header) + body.ljust(text_pages * 128, b"\x00") + fkp() + fkp()


# ------------------------------------------------------------------ OLE2


def ole2(streams: dict[str, bytes]) -> bytes:
    """A minimal OLE2 compound file (version 3, 512-byte sectors) holding
    ``streams`` in the root storage. Streams are padded to 4096 bytes so they
    live in regular sectors; at most three streams (one directory sector)."""
    assert len(streams) <= 3
    free, end, fat_sect = 0xFFFFFFFF, 0xFFFFFFFE, 0xFFFFFFFD
    fat = [fat_sect, end]  # sector 0: the FAT, sector 1: the directory
    data_sectors = b""
    entries = [_dir_entry("Root Entry", 5, end, 0, child=1 if streams else free, right=free)]
    for number, (name, content) in enumerate(streams.items(), start=1):
        content = content.ljust(4096, b"\x00")
        count = -(-len(content) // 512)
        start = len(fat)
        fat += [start + i + 1 for i in range(count - 1)] + [end]
        data_sectors += content.ljust(count * 512, b"\x00")
        right = number + 1 if number < len(streams) else free
        entries.append(_dir_entry(name, 2, start, len(content), child=free, right=right))
    assert len(fat) <= 128
    directory = b"".join(entries).ljust(512, b"\x00")
    fat_sector = struct.pack("<128I", *(fat + [free] * (128 - len(fat))))
    header = bytearray(512)
    header[0:8] = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"
    struct.pack_into("<HHHHH", header, 0x18, 0x3E, 3, 0xFFFE, 9, 6)
    struct.pack_into("<IIIIIIIII", header, 0x28, 0, 1, 1, 0, 4096, end, 0, end, 0)
    struct.pack_into("<109I", header, 0x4C, 0, *([free] * 108))
    return bytes(header) + fat_sector + directory + data_sectors


def _dir_entry(name: str, kind: int, start: int, size: int, child: int, right: int) -> bytes:
    encoded = (name + "\0").encode("utf-16-le")
    entry = bytearray(128)
    entry[: len(encoded)] = encoded
    struct.pack_into("<HBB", entry, 0x40, len(encoded), kind, 1)
    struct.pack_into("<III", entry, 0x44, 0xFFFFFFFF, right, child)
    struct.pack_into("<II", entry, 0x74, start, size)
    return bytes(entry)


def word_fib(encrypted: bool) -> bytes:
    """The start of a WordDocument stream: FIB magic 0xA5EC, flags with fEncrypted."""
    fib = bytearray(64)
    struct.pack_into("<HH", fib, 0, 0xA5EC, 0x00C1)
    struct.pack_into("<H", fib, 0x0A, 0x0100 if encrypted else 0)
    return bytes(fib)


def biff8(encrypted: bool) -> bytes:
    """The start of an Excel Workbook stream: BOF, optionally FILEPASS, then EOF."""
    records = struct.pack("<HH", 0x0809, 16) + bytes(16)
    if encrypted:
        records += struct.pack("<HH", 0x002F, 6) + bytes(6)
    return records + struct.pack("<HH", 0x000A, 0)


# ------------------------------------------------------------------ LibreOffice


def odf_presentation(text: str) -> bytes:
    """A minimal OpenDocument presentation: one slide with one text box."""
    content = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<office:document-content office:version="1.2"'
        ' xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"'
        ' xmlns:draw="urn:oasis:names:tc:opendocument:xmlns:drawing:1.0"'
        ' xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
        ' xmlns:svg="urn:oasis:names:tc:opendocument:xmlns:svg-compatible:1.0">'
        '<office:body><office:presentation><draw:page draw:name="page1">'
        '<draw:frame svg:x="2cm" svg:y="3cm" svg:width="24cm" svg:height="6cm">'
        f"<draw:text-box><text:p>{text}</text:p></draw:text-box></draw:frame>"
        "</draw:page></office:presentation></office:body></office:document-content>"
    )
    manifest = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<manifest:manifest manifest:version="1.2"'
        ' xmlns:manifest="urn:oasis:names:tc:opendocument:xmlns:manifest:1.0">'
        '<manifest:file-entry manifest:full-path="/"'
        ' manifest:media-type="application/vnd.oasis.opendocument.presentation"/>'
        '<manifest:file-entry manifest:full-path="content.xml" manifest:media-type="text/xml"/>'
        "</manifest:manifest>"
    )
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as package:
        package.writestr(
            zipfile.ZipInfo("mimetype"),
            "application/vnd.oasis.opendocument.presentation",
            compress_type=zipfile.ZIP_STORED,
        )
        package.writestr("content.xml", content)
        package.writestr("META-INF/manifest.xml", manifest)
    return out.getvalue()


_OFFICE_CACHE: dict[str, Path] = {}


def office_documents() -> dict[str, Path]:
    """doc, docx, odt, rtf (from HTML with Chinese), xls, xlsx, ods (from CSV),
    ppt, pptx (from a hand-made one-slide .odp, also returned), written by
    LibreOffice once per test session; and a crafted .wri."""
    if _OFFICE_CACHE:
        return dict(_OFFICE_CACHE)
    work = Path(tempfile.mkdtemp(prefix="faxgate-testdocs-"))
    atexit.register(shutil.rmtree, work, True)
    html = work / "letter.html"
    html.write_text(
        "<html><head><meta charset='utf-8'></head><body>"
        f"<h1>Fax test 传真测试</h1>{f'<p>{ENGLISH}</p><p>{CHINESE}</p>' * 40}</body></html>",
        encoding="utf-8",
    )
    csv = work / "sheet.csv"
    csv.write_text("item,price\nwidget,12.50\n传真机,899.00\n", encoding="utf-8")
    odp = work / "slides.odp"
    odp.write_bytes(odf_presentation(f"Fax test slide 传真 — {ENGLISH}"))
    targets = {
        "doc": (html, "doc:MS Word 97", "HTML (StarWriter)"),
        "docx": (html, "docx:MS Word 2007 XML", "HTML (StarWriter)"),
        "odt": (html, "odt:writer8", "HTML (StarWriter)"),
        "rtf": (html, "rtf:Rich Text Format", "HTML (StarWriter)"),
        "xls": (csv, "xls:MS Excel 97", "Text - txt - csv (StarCalc):44,34,76"),
        "xlsx": (csv, "xlsx:Calc MS Excel 2007 XML", "Text - txt - csv (StarCalc):44,34,76"),
        "ods": (csv, "ods:calc8", "Text - txt - csv (StarCalc):44,34,76"),
        "ppt": (odp, "ppt:MS PowerPoint 97", "impress8"),
        "pptx": (odp, "pptx:Impress MS PowerPoint 2007 XML", "impress8"),
    }
    for fmt, (source, export, infilter) in targets.items():
        out = work / fmt
        subprocess.run(
            [
                "soffice",
                "--headless",
                "--norestore",
                f"-env:UserInstallation={(work / 'profile').as_uri()}",
                f"--infilter={infilter}",
                "--convert-to",
                export,
                "--outdir",
                str(out),
                str(source),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        (produced,) = out.iterdir()
        _OFFICE_CACHE[fmt] = produced
    _OFFICE_CACHE["odp"] = odp
    wri = work / "note.wri"
    wri.write_bytes(write_wri(f"{ENGLISH}\nWindows Write paragraph two.\n"))
    _OFFICE_CACHE["wri"] = wri
    return dict(_OFFICE_CACHE)
