"""PDF pages → bilevel page images, rendered by PDFium straight into the fax
geometry (204 dpi across, the chosen lines per inch down: PDFium scales x and
y independently), so no resampling pass is needed.

pypdf (in sniff) decides about encryption; PDFium renders, because pypdf
cannot. PDFium is not thread-safe, so every call holds one lock. Long PDFs
are split between the process and forked children when the caller is
single-threaded (forking a threaded process could copy a lock some other
thread holds); children write their bilevel masks into shared memory, since
pickling page images back would cost more than rendering them.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import json
import mmap
import os
import signal
import threading
from dataclasses import dataclass

import numpy as np
import pypdfium2
import pypdfium2.raw as pdfium_c
from PIL import Image

from faxgate.render import errors
from faxgate.render.bilevel import mask_to_image, white_mask
from faxgate.render.errors import (
    CorruptDocument,
    DocumentTooLarge,
    EncryptedDocument,
    PageLimitExceeded,
)
from faxgate.render.geometry import PageGeometry

#: Largest page side PDF allows (ISO 32000: 14 400 units); beyond this a file is broken or hostile.
MAX_PAGE_POINTS = 14400.0
#: How deep form XObjects are followed when looking for oversized images.
_MAX_FORM_DEPTH = 4
#: Below this many pages, starting worker processes costs more than it saves.
PARALLEL_MIN_PAGES = 12
#: Held around every PDFium call in this process (sniff uses it too).
PDFIUM_LOCK = threading.Lock()
#: Text and vector art without anti-aliasing (crisp for thresholding); images stay smooth.
_FLAGS = (
    pdfium_c.FPDF_ANNOT
    | pdfium_c.FPDF_PRINTING
    | pdfium_c.FPDF_RENDER_NO_SMOOTHTEXT
    | pdfium_c.FPDF_RENDER_NO_SMOOTHPATH
)


def _open(data: bytes, filename: str) -> pypdfium2.PdfDocument:
    try:
        return pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        if "password" in str(exc).lower():
            raise EncryptedDocument(filename, "the PDF is password protected") from None
        raise CorruptDocument(filename, "the PDF is damaged and cannot be read") from None


def _check_images(page: pypdfium2.PdfPage, number: int, filename: str, max_pixels: int) -> None:
    """Refuse pages with an embedded image larger than ``max_pixels``: PDFium
    would decode it in full before scaling, so a 1 kB stream declaring
    100000×100000 pixels is a decompression bomb. Looks into form XObjects a
    few levels deep (the page is loaded for rendering anyway, so this is cheap)."""
    pending = [(page, pdfium_c.FPDFPage_CountObjects, pdfium_c.FPDFPage_GetObject, 0)]
    while pending:
        parent, count_objects, get_object, depth = pending.pop()
        for index in range(count_objects(parent)):
            obj = get_object(parent, index)
            kind = pdfium_c.FPDFPageObj_GetType(obj)
            if kind == pdfium_c.FPDF_PAGEOBJ_IMAGE:
                width, height = ctypes.c_uint(), ctypes.c_uint()
                known = pdfium_c.FPDFImageObj_GetImagePixelSize(obj, width, height)
                if known and width.value * height.value > max_pixels:
                    raise DocumentTooLarge(
                        filename,
                        f"an image on page {number} is {width.value}×{height.value} "
                        f"pixels, more than the limit of {max_pixels:,}",
                    )
            elif kind == pdfium_c.FPDF_PAGEOBJ_FORM and depth < _MAX_FORM_DEPTH:
                pending.append(
                    (
                        obj,
                        pdfium_c.FPDFFormObj_CountObjects,
                        pdfium_c.FPDFFormObj_GetObject,
                        depth + 1,
                    )
                )


def render_pdf(
    data: bytes,
    filename: str,
    geometry: PageGeometry,
    max_pages: int,
    workers: int = 1,
    max_pixels: int = 80_000_000,
) -> list[Image.Image]:
    """Bilevel images of every page; the page count is checked before any
    rendering, and each page's embedded images against ``max_pixels``."""
    with PDFIUM_LOCK:
        document = _open(data, filename)
        try:
            count = len(document)
            if count > max_pages:
                raise PageLimitExceeded(
                    filename, f"the PDF has {count} pages; the limit is {max_pages}"
                )
            if count == 0:
                raise CorruptDocument(filename, "the PDF has no pages")
            workers = min(workers, count // (PARALLEL_MIN_PAGES // 2))
            if workers < 2 or count < PARALLEL_MIN_PAGES or threading.active_count() > 1:
                size = (geometry.width, geometry.height)
                return [
                    mask_to_image(_render_page(document, i, geometry, filename, max_pixels), size)
                    for i in range(count)
                ]
        finally:
            document.close()
        return _render_parallel(data, filename, geometry, count, workers, max_pixels)


#: Share of the pages the parent renders itself when one child helps. The
#: parent also turns the child's masks into images (about a third of the cost
#: of rendering a page), as they arrive, so it takes fewer pages.
_PARENT_SHARE = 0.38
_PAGE_DONE, _FAILED = b"\x01", b"\x00"


def _render_parallel(
    data: bytes, filename: str, geometry: PageGeometry, count: int, workers: int, max_pixels: int
) -> list[Image.Image]:
    """The parent renders the first pages while forked children render the
    rest into an anonymous shared mapping, announcing each finished page on a
    pipe (called with the lock held, so no other thread is inside PDFium)."""
    size = (geometry.width, geometry.height)
    frame = _packed_frame(geometry)
    own = max(1, round(count * _PARENT_SHARE * 2 / workers))
    bounds = [own + (count - own) * k // (workers - 1) for k in range(workers)]
    with mmap.mmap(-1, frame * (count - own)) as shared:
        children: list[_Child] = []
        try:
            for k in range(workers - 1):
                job = _Job(data, filename, geometry, max_pixels, shared, own)
                children.append(_Child.fork(job, bounds[k], bounds[k + 1]))
            document = _open(data, filename)
            try:
                pages = [
                    mask_to_image(_render_page(document, i, geometry, filename, max_pixels), size)
                    for i in range(own)
                ]
            finally:
                document.close()
            with memoryview(shared) as view:
                for child in children:
                    for index in range(child.start, child.stop):
                        child.wait_for_page()
                        slot = (index - own) * frame
                        with view[slot : slot + frame] as chunk:
                            pages.append(Image.frombuffer("1", size, chunk, "raw", "1", 0, 1))
                    child.finish()
        finally:
            for child in children:
                child.kill()
    return pages


@dataclass(frozen=True)
class _Job:
    data: bytes
    filename: str
    geometry: PageGeometry
    max_pixels: int
    shared: mmap.mmap
    first_shared_page: int


class _Child:
    """A forked renderer: pages start..stop into shared memory, one byte on the
    pipe per finished page, or a failure byte and a JSON error record."""

    def __init__(self, pid: int, pipe: io.BufferedReader, start: int, stop: int, name: str):
        self.pid, self.pipe, self.start, self.stop, self.filename = pid, pipe, start, stop, name
        self.reaped = False

    @classmethod
    def fork(cls, job: _Job, start: int, stop: int) -> _Child:
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child never returns into the caller's code
            os.close(read_end)
            os._exit(_child_main(job, start, stop, write_end))
        os.close(write_end)
        return cls(pid, os.fdopen(read_end, "rb"), start, stop, job.filename)

    def wait_for_page(self) -> None:
        signal_byte = self.pipe.read(1)
        if signal_byte != _PAGE_DONE:
            record = self.pipe.read() if signal_byte == _FAILED else b""
            self._reap()
            try:
                error = errors.error_from_record(json.loads(record), self.filename)
            except ValueError:
                error = CorruptDocument(self.filename, "rendering the PDF crashed")
            raise error

    def finish(self) -> None:
        if self._reap() != 0:
            raise CorruptDocument(self.filename, "rendering the PDF crashed")

    def _reap(self) -> int:
        self.pipe.close()
        self.reaped = True
        return os.waitpid(self.pid, 0)[1]

    def kill(self) -> None:
        if not self.reaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self._reap()


def _packed_frame(geometry: PageGeometry) -> int:
    """Bytes of one page as packed bits (PIL raw mode "1": 1 = white, MSB first)."""
    return (geometry.width + 7) // 8 * geometry.height


def _child_main(job: _Job, start: int, stop: int, pipe: int) -> int:
    geometry = job.geometry
    frame = _packed_frame(geometry)
    mask = np.empty((geometry.height, geometry.width), dtype=bool)
    try:
        document = _open(job.data, job.filename)
        for index in range(start, stop):
            _render_page(document, index, geometry, job.filename, job.max_pixels, mask)
            offset = (index - job.first_shared_page) * frame
            out = np.frombuffer(job.shared, dtype=np.uint8, count=frame, offset=offset)
            out[:] = np.packbits(mask, axis=1).ravel()
            os.write(pipe, _PAGE_DONE)
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
        with contextlib.suppress(BaseException):
            os.write(pipe, _FAILED + json.dumps(errors.error_record(exc)).encode())
        return 1
    return 0


def _render_page(
    document: pypdfium2.PdfDocument,
    index: int,
    geometry: PageGeometry,
    filename: str,
    max_pixels: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The page's white mask (True = white), written into ``out`` when given."""
    page = document[index]
    try:
        width_pt, height_pt = page.get_size()  # after the page's own /Rotate
        if not (0 < width_pt <= MAX_PAGE_POINTS and 0 < height_pt <= MAX_PAGE_POINTS):
            raise CorruptDocument(
                filename, f"page {index + 1} has an impossible size ({width_pt}×{height_pt} pt)"
            )
        _check_images(page, index + 1, filename, max_pixels)
        landscape = width_pt > height_pt
        if landscape:  # a quarter turn anticlockwise (top to the left), as printers do
            width_pt, height_pt = height_pt, width_pt
        box = geometry.fit(width_pt / 72, height_pt / 72)
        bitmap = pypdfium2.PdfBitmap.new_native(
            geometry.width, geometry.height, format=pdfium_c.FPDFBitmap_Gray
        )
        bitmap.fill_rect((255, 255, 255, 255), 0, 0, geometry.width, geometry.height)
        pdfium_c.FPDF_RenderPageBitmap(
            bitmap, page, box.left, box.top, box.width, box.height, 3 if landscape else 0, _FLAGS
        )
        grey = np.ctypeslib.as_array(bitmap.buffer).reshape(geometry.height, bitmap.stride)
        return white_mask(grey[:, : geometry.width], out)
    finally:
        page.close()
