"""TIFF Class F (RFC 3949 profile S / TIFF-F) writer and reader.

We write the IFDs ourselves: the format is small, and it keeps the strips
exactly as our codec produced them (FillOrder 2 = LSB first, as on the wire;
EOL-aligned G3 without RTC, as TIFF Class F requires). The reader decodes with
our own decoder and accepts the common variants other fax software writes
(either byte order, FillOrder 1 or 2, WhiteIsZero or BlackIsZero, several
strips, resolutions in dots per inch or per centimetre). Pages in our own
layout are decoded by libtiff and proven by re-encoding (see
:func:`_decode_own_strip`), since faxd reloads its pages.tif before calls.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import io
import os
import struct
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from faxgate.durable import replace_atomically
from faxgate.faxd.page import LINES_PER_INCH, FaxPage
from faxgate.faxd.t4 import (
    DEFAULT_MAX_HEIGHT,
    MAX_WIDTH,
    Coding,
    decode_packed,
    encode_image,
    k_for_resolution,
    packed_rows,
    packed_to_image,
)

#: Most pages we read from one file; a hostile file must not make us loop.
MAX_PAGES = 1000

# Tag numbers (TIFF 6.0, TIFF-F).
NEW_SUBFILE_TYPE = 254
IMAGE_WIDTH = 256
IMAGE_LENGTH = 257
BITS_PER_SAMPLE = 258
COMPRESSION = 259
PHOTOMETRIC = 262
FILL_ORDER = 266
STRIP_OFFSETS = 273
SAMPLES_PER_PIXEL = 277
ROWS_PER_STRIP = 278
STRIP_BYTE_COUNTS = 279
X_RESOLUTION = 282
Y_RESOLUTION = 283
T4_OPTIONS = 292
T6_OPTIONS = 293
RESOLUTION_UNIT = 296
PAGE_NUMBER = 297
SOFTWARE = 305
CLEAN_FAX_DATA = 327

COMPRESSION_G3 = 3
COMPRESSION_G4 = 4
T4_2D = 1
T4_UNCOMPRESSED = 2
T4_FILL_BITS = 4
T6_UNCOMPRESSED = 2

_SHORT, _LONG, _RATIONAL, _ASCII = 3, 4, 5, 2
_TYPE_SIZES = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_TYPE_FORMATS = {1: "B", 2: "B", 3: "H", 4: "I", 6: "b", 7: "B", 8: "h", 9: "i"}


class TiffFormatError(ValueError):
    """The file is not a TIFF we can read as fax pages (structure, not coding)."""


# --------------------------------------------------------------------------- writer


def _ifd(entries: list[tuple[int, int, int, bytes]], base: int) -> bytes:
    """Serialise one IFD placed at file offset ``base`` (next-IFD offset 0, patched
    by the caller); values longer than four bytes go right after it.
    ``entries``: (tag, type, count, packed value)."""
    entries = sorted(entries)
    table_size = 2 + 12 * len(entries) + 4
    extra = bytearray()
    table = bytearray(struct.pack("<H", len(entries)))
    for tag, typ, count, value in entries:
        if len(value) <= 4:
            table += struct.pack("<HHI", tag, typ, count) + value.ljust(4, b"\0")
        else:
            table += struct.pack("<HHII", tag, typ, count, base + table_size + len(extra))
            extra += value
            if len(extra) % 2:
                extra += b"\0"
    table += struct.pack("<I", 0)
    return bytes(table + extra)


#: Tags of ``_strip_tags`` written as LONG in our files (the rest are SHORT).
_LONG_TAGS = frozenset({IMAGE_WIDTH, IMAGE_LENGTH, ROWS_PER_STRIP, T4_OPTIONS})


def _strip_tags(width: int, height: int, coding: Coding) -> list[tuple[int, int]]:
    """The tags that say how one page's strip is coded: the same in our TIFF-F
    files and in the scratch file libtiff codes a strip in, so both agree."""
    tags = [
        (IMAGE_WIDTH, width),
        (IMAGE_LENGTH, height),
        (BITS_PER_SAMPLE, 1),
        (SAMPLES_PER_PIXEL, 1),
        (PHOTOMETRIC, 0),
        (FILL_ORDER, 2),
        (ROWS_PER_STRIP, height),
        (RESOLUTION_UNIT, 2),
        (COMPRESSION, COMPRESSION_G4 if coding == "mmr" else COMPRESSION_G3),
    ]
    if coding != "mmr":
        tags.append((T4_OPTIONS, T4_FILL_BITS | (T4_2D if coding == "mr" else 0)))
    return tags


def _short(tag: int, *values: int) -> tuple[int, int, int, bytes]:
    return (tag, _SHORT, len(values), struct.pack(f"<{len(values)}H", *values))


def _long(tag: int, value: int) -> tuple[int, int, int, bytes]:
    return (tag, _LONG, 1, struct.pack("<I", value))


def tiff_f_bytes(pages: Sequence[FaxPage], coding: Coding = "mr") -> bytes:
    """The complete TIFF Class F file for ``pages`` as bytes."""
    if not pages:
        raise ValueError("a TIFF Class F file needs at least one page")
    if coding not in ("mh", "mr", "mmr"):
        raise ValueError(f"unknown fax coding {coding!r}")
    for number, page in enumerate(pages):
        if page.resolution not in LINES_PER_INCH:
            raise ValueError(f"page {number + 1}: unknown resolution {page.resolution!r}")
    out = bytearray(b"II*\0" + struct.pack("<I", 0))
    link_at = 4  # where the offset of the next IFD is stored
    for number, (page, strip) in enumerate(zip(pages, _encode_strips(pages, coding), strict=True)):
        width, height = page.image.size
        strip_at = len(out)
        out += strip
        if len(out) % 2:
            out += b"\0"
        ifd_at = len(out)
        out[link_at : link_at + 4] = struct.pack("<I", ifd_at)

        lines_per_inch = round(LINES_PER_INCH[page.resolution])
        entries = [
            (_long if tag in _LONG_TAGS else _short)(tag, value)
            for tag, value in _strip_tags(width, height, coding)
        ]
        entries += [
            _long(NEW_SUBFILE_TYPE, 2),
            _long(STRIP_OFFSETS, strip_at),
            _long(STRIP_BYTE_COUNTS, len(strip)),
            (X_RESOLUTION, _RATIONAL, 1, struct.pack("<II", 204, 1)),
            (Y_RESOLUTION, _RATIONAL, 1, struct.pack("<II", lines_per_inch, 1)),
            _short(PAGE_NUMBER, number, len(pages)),
            (SOFTWARE, _ASCII, 8, b"faxgate\0"),
            _short(CLEAN_FAX_DATA, 0),
        ]
        if coding == "mmr":
            entries.append(_long(T6_OPTIONS, 0))
        out += _ifd(entries, ifd_at)
        link_at = ifd_at + 2 + 12 * len(entries)
    return bytes(out)


def _encode_strips(pages: Sequence[FaxPage], coding: Coding) -> list[bytes]:
    """Every page's strip, coded on all cores: libtiff runs without the GIL
    (ctypes releases it), so threads are enough."""
    workers = min(len(pages), os.cpu_count() or 1)
    if workers < 2:
        return [_encode_strip(page, coding) for page in pages]
    with ThreadPoolExecutor(workers, thread_name_prefix="tiff-f") as pool:
        return list(pool.map(functools.partial(_encode_strip, coding=coding), pages))


def _encode_strip(page: FaxPage, coding: Coding) -> bytes:
    """The page's strip: G4 with EOFB, as libtiff writes it; G3 EOL-aligned
    without RTC. The system's libtiff codes it when its choice of K is ours,
    several times faster than our numpy coder and bit-identical to it (tests
    compare the two); otherwise our coder does."""
    if page.image.mode != "1":
        raise ValueError(f"fax coding needs a bilevel mode '1' image, not mode {page.image.mode!r}")
    k = k_for_resolution(page.resolution)
    if _libtiff() is not None and (coding != "mr" or k == _libtiff_k(page.resolution)):
        try:
            return _libtiff_strip(page, coding)
        except OSError:  # libtiff refused (odd sizes, no memory): our coder can
            pass
    if coding == "mmr":
        return encode_image(page.image, "mmr", rtc=True)
    return encode_image(page.image, coding, k=k, rtc=False, align_eol=True)


@functools.cache
def _libtiff() -> ctypes.CDLL | None:
    """The system's libtiff (Debian libtiff6, which libtiff-tools pulls in),
    or None; its error and warning printers are switched off, since failures
    are reported through return values and handled by falling back."""
    name = ctypes.util.find_library("tiff")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
    except OSError:
        return None
    lib.TIFFFdOpen.restype = ctypes.c_void_p
    lib.TIFFFdOpen.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p]
    lib.TIFFSetField.restype = ctypes.c_int
    lib.TIFFWriteEncodedStrip.restype = ctypes.c_ssize_t
    lib.TIFFWriteEncodedStrip.argtypes = [
        ctypes.c_void_p,
        ctypes.c_uint32,
        ctypes.c_void_p,
        ctypes.c_ssize_t,
    ]
    lib.TIFFClose.argtypes = [ctypes.c_void_p]
    lib.TIFFSetErrorHandler.argtypes = lib.TIFFSetWarningHandler.argtypes = [ctypes.c_void_p]
    lib.TIFFSetErrorHandler(None)
    lib.TIFFSetWarningHandler(None)
    return lib


def _libtiff_k(resolution: str) -> int:
    """libtiff's MR K: 4 above 150 lines per inch, else 2 (tif_fax3.c)."""
    return 4 if LINES_PER_INCH[resolution] > 150 else 2


def _libtiff_strip(page: FaxPage, coding: Coding) -> bytes:
    """libtiff's strip for ``page``: rows packed with 1 = black (how libtiff's
    fax coder reads WhiteIsZero data) go in through TIFFWriteEncodedStrip
    into an in-memory scratch file; FillOrder 2 makes the strip LSB first."""
    lib = _libtiff()
    assert lib is not None
    width, height = page.image.size
    rows = packed_rows(page.image).tobytes()
    # An anonymous in-memory file: nothing on disk, nothing left if we are killed.
    scratch = os.memfd_create("faxgate-strip", os.MFD_CLOEXEC)
    try:
        own_fd = os.dup(scratch)  # libtiff closes the descriptor it was given
        tif = lib.TIFFFdOpen(own_fd, b"strip", b"w")
        if not tif:
            os.close(own_fd)
            raise OSError("libtiff cannot open its scratch file")
        handle = ctypes.c_void_p(tif)
        try:
            for tag, value in _strip_tags(width, height, coding):
                if not lib.TIFFSetField(handle, ctypes.c_uint32(tag), ctypes.c_uint32(value)):
                    raise OSError(f"libtiff refused tag {tag}")
            lines = ctypes.c_double(LINES_PER_INCH[page.resolution])  # sets libtiff's K
            if not lib.TIFFSetField(handle, ctypes.c_uint32(Y_RESOLUTION), lines):
                raise OSError("libtiff refused the resolution")
            if lib.TIFFWriteEncodedStrip(handle, 0, rows, len(rows)) < 0:
                raise OSError("libtiff could not code the page")
        finally:
            lib.TIFFClose(handle)
        data = os.pread(scratch, os.fstat(scratch).st_size, 0)
    finally:
        os.close(scratch)
    tiff = _Tiff(data, "libtiff scratch file")
    tags, _ = tiff.ifd(tiff.unpack("I", 4)[0])
    (offset,), (count,) = tags[STRIP_OFFSETS], tags[STRIP_BYTE_COUNTS]
    return data[offset : offset + count]


def write_tiff_f(path: str | Path, pages: Sequence[FaxPage], coding: Coding = "mr") -> None:
    """Write ``pages`` as one multi-page TIFF Class F file, atomically: the data
    goes to a temporary file in the same directory, is fsynced and renamed into
    place, so readers never see a half-written file and errors leave nothing."""
    replace_atomically(path, tiff_f_bytes(pages, coding))


# --------------------------------------------------------------------------- reader


class _Tiff:
    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.name = name
        if data[:4] == b"II*\0":
            self.order = "<"
        elif data[:4] == b"MM\0*":
            self.order = ">"
        else:
            raise TiffFormatError(f"{name}: not a classic TIFF file")

    def unpack(self, fmt: str, offset: int) -> tuple:
        size = struct.calcsize(self.order + fmt)
        if offset < 0 or offset + size > len(self.data):
            raise TiffFormatError(f"{self.name}: offset {offset} outside the file")
        return struct.unpack_from(self.order + fmt, self.data, offset)

    def ifd(self, offset: int) -> tuple[dict[int, tuple], int]:
        """Tags of the IFD at ``offset`` (numeric values as tuples) and the next offset."""
        (count,) = self.unpack("H", offset)
        tags: dict[int, tuple] = {}
        for i in range(count):
            at = offset + 2 + 12 * i
            tag, typ, n = self.unpack("HHI", at)
            size = _TYPE_SIZES.get(typ)
            if size is None:
                continue  # unknown type: skip the tag, as TIFF readers must
            if n > 1_000_000:
                raise TiffFormatError(f"{self.name}: tag {tag} claims {n} values")
            value_at = at + 8 if size * n <= 4 else self.unpack("I", at + 8)[0]
            if typ in (5, 10):
                fmt = "I" if typ == 5 else "i"
                raw = self.unpack(f"{2 * n}{fmt}", value_at)
                tags[tag] = tuple(
                    raw[2 * j] / raw[2 * j + 1] if raw[2 * j + 1] else 0.0 for j in range(n)
                )
            elif typ in _TYPE_FORMATS:
                tags[tag] = self.unpack(f"{n}{_TYPE_FORMATS[typ]}", value_at)
        (next_offset,) = self.unpack("I", offset + 2 + 12 * count)
        return tags, next_offset


def _first(tags: dict[int, tuple], tag: int, default: float) -> float:
    values = tags.get(tag)
    return values[0] if values else default


def _resolution_name(tags: dict[int, tuple]) -> str:
    """Nearest fax resolution to the file's vertical resolution (98/196/391 lpi;
    files also say 100/200/400 dpi or 3.85/7.7/15.4 lines per mm)."""
    y = _first(tags, Y_RESOLUTION, 0.0)
    unit = _first(tags, RESOLUTION_UNIT, 2)
    if unit == 3:
        y *= 2.54
    if y <= 0:
        return "fine"
    return min(LINES_PER_INCH, key=lambda name: abs(LINES_PER_INCH[name] - y))


def _page(tiff: _Tiff, tags: dict[int, tuple], number: int) -> FaxPage:
    where = f"{tiff.name} page {number}"

    def one(tag: int, default: int | None = None) -> int:
        if tags.get(tag):
            return int(tags[tag][0])
        if default is None:
            raise TiffFormatError(f"{where}: required tag {tag} missing")
        return default

    width, height = one(IMAGE_WIDTH), one(IMAGE_LENGTH)
    if not (1 <= width <= MAX_WIDTH and 1 <= height <= DEFAULT_MAX_HEIGHT):
        raise TiffFormatError(f"{where}: unsupported size {width}x{height}")
    if one(BITS_PER_SAMPLE, 1) != 1 or one(SAMPLES_PER_PIXEL, 1) != 1:
        raise TiffFormatError(f"{where}: not a bilevel image")
    compression = one(COMPRESSION, 1)
    if compression == COMPRESSION_G3:
        options = one(T4_OPTIONS, 0)
        if options & T4_UNCOMPRESSED:
            raise TiffFormatError(f"{where}: G3 uncompressed mode is not supported")
        coding: Coding = "mr" if options & T4_2D else "mh"
    elif compression == COMPRESSION_G4:
        if one(T6_OPTIONS, 0) & T6_UNCOMPRESSED:
            raise TiffFormatError(f"{where}: G4 uncompressed mode is not supported")
        coding = "mmr"
    else:
        raise TiffFormatError(f"{where}: compression {compression} is not CCITT G3/G4")
    photometric = one(PHOTOMETRIC, 0)
    if photometric not in (0, 1):
        raise TiffFormatError(f"{where}: photometric interpretation {photometric} is not bilevel")
    lsb_first = one(FILL_ORDER, 1) == 2
    offsets = tags.get(STRIP_OFFSETS)
    counts = tags.get(STRIP_BYTE_COUNTS)
    if not offsets or not counts or len(offsets) != len(counts):
        raise TiffFormatError(f"{where}: missing or inconsistent strip tags")
    rows_per_strip = one(ROWS_PER_STRIP, height)
    rows_per_strip = height if rows_per_strip <= 0 else min(rows_per_strip, height)
    resolution = _resolution_name(tags)
    if len(offsets) == 1 and lsb_first and photometric == 0 and rows_per_strip == height:
        offset, count = int(offsets[0]), int(counts[0])
        if offset >= 0 and count >= 0 and offset + count <= len(tiff.data):
            strip = tiff.data[offset : offset + count]
            page = _decode_own_strip(strip, width, height, coding, resolution)
            if page is not None:
                return page
    strips = []
    remaining = height
    for offset, count in zip(map(int, offsets), map(int, counts), strict=True):
        if remaining <= 0:
            break
        if offset < 0 or count < 0 or offset + count > len(tiff.data):
            raise TiffFormatError(f"{where}: strip data outside the file")
        rows = min(rows_per_strip, remaining)
        strips.append(
            decode_packed(
                tiff.data[offset : offset + count],
                width,
                coding,
                lsb_first=lsb_first,
                height=rows,
            )
        )
        remaining -= rows
    if remaining > 0:
        raise TiffFormatError(f"{where}: strips hold fewer rows than ImageLength {height}")
    packed = np.concatenate(strips)
    if photometric == 1:  # BlackIsZero: the codec's "white" runs are black pixels
        packed = ~packed
    return FaxPage(image=packed_to_image(packed, width), resolution=resolution)


def _decode_own_strip(
    strip: bytes, width: int, height: int, coding: Coding, resolution: str
) -> FaxPage | None:
    """Fast path for strips as :func:`tiff_f_bytes` writes them (faxd reloads
    its own pages.tif): libtiff decodes (through Pillow, a few ms a page
    against 100+ ms for our Python decoder), and our writer's coder must
    reproduce the strip bit for bit from the result, which proves the pixels
    right. None when the strip is not ours or libtiff fails: the caller then
    decodes strictly."""
    tiff = _single_strip_tiff(strip, width, height, coding)
    try:
        with Image.open(io.BytesIO(tiff)) as image:
            image.load()
            if image.mode != "1" or image.size != (width, height):
                return None
            page = FaxPage(image=image.copy(), resolution=resolution)  # type: ignore[arg-type]
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    return page if _encode_strip(page, coding) == strip else None


def _single_strip_tiff(strip: bytes, width: int, height: int, coding: Coding) -> bytes:
    """A minimal one-page TIFF around ``strip`` (FillOrder 2, WhiteIsZero)."""
    head = b"II*\0" + struct.pack("<I", 8 + len(strip) + len(strip) % 2)
    body = strip + b"\0" * (len(strip) % 2)
    entries = [
        _long(IMAGE_WIDTH, width),
        _long(IMAGE_LENGTH, height),
        _short(BITS_PER_SAMPLE, 1),
        _short(COMPRESSION, COMPRESSION_G4 if coding == "mmr" else COMPRESSION_G3),
        _short(PHOTOMETRIC, 0),
        _short(FILL_ORDER, 2),
        _long(STRIP_OFFSETS, 8),
        _short(SAMPLES_PER_PIXEL, 1),
        _long(ROWS_PER_STRIP, height),
        _long(STRIP_BYTE_COUNTS, len(strip)),
    ]
    if coding != "mmr":
        entries.append(_long(T4_OPTIONS, T4_FILL_BITS | (T4_2D if coding == "mr" else 0)))
    return head + body + _ifd(entries, len(head) + len(body))


def read_tiff_f(path: str | Path) -> list[FaxPage]:
    """Read every page of a CCITT G3/G4 TIFF (TIFF Class F and common variants).

    Raises :class:`TiffFormatError` for files that are not such TIFFs and
    :class:`faxgate.faxd.t4.T4DecodeError` for corrupt image data."""
    path = Path(path)
    tiff = _Tiff(path.read_bytes(), str(path))
    (offset,) = tiff.unpack("I", 4)
    pages: list[FaxPage] = []
    seen: set[int] = set()
    while offset:
        if offset in seen or len(pages) >= MAX_PAGES:
            raise TiffFormatError(f"{path}: IFD chain loops or has more than {MAX_PAGES} pages")
        seen.add(offset)
        tags, offset = tiff.ifd(offset)
        if int(_first(tags, NEW_SUBFILE_TYPE, 0)) & 1:
            continue  # a reduced-resolution thumbnail, not a page
        pages.append(_page(tiff, tags, len(pages) + 1))
    if not pages:
        raise TiffFormatError(f"{path}: no pages")
    return pages
