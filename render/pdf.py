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
import mmap
import os
import pickle
import signal
import threading

import numpy as np
import pypdfium2
import pypdfium2.raw as pdfium_c
from PIL import Image

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
_LOCK = threading.Lock()
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
    with _LOCK:
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


#: Share of the pages the parent renders itself when one child helps: the parent
#: also turns the child's masks into images, so it takes fewer pages.
_PARENT_SHARE = 0.4


def _render_parallel(
    data: bytes, filename: str, geometry: PageGeometry, count: int, workers: int, max_pixels: int
) -> list[Image.Image]:
    """The parent renders the first pages while forked children render the rest
    into an anonymous shared mapping (called with the lock held, so no other
    thread is inside PDFium when we fork)."""
    size = (geometry.width, geometry.height)
    frame = geometry.width * geometry.height
    own = max(1, round(count * _PARENT_SHARE)) if workers == 2 else count // workers
    bounds = [own + (count - own) * k // (workers - 1) for k in range(workers)]
    with mmap.mmap(-1, frame * (count - own)) as shared:
        children = [
            _fork_renderer(
                data, filename, geometry, max_pixels, (bounds[k], bounds[k + 1]), shared, own
            )
            for k in range(workers - 1)
        ]
        try:
            document = _open(data, filename)
            try:
                pages = [
                    mask_to_image(_render_page(document, i, geometry, filename, max_pixels), size)
                    for i in range(own)
                ]
            finally:
                document.close()
            while children:
                _wait_for(*children.pop(), filename)
            view = memoryview(shared)
            for index in range(own, count):
                chunk = view[(index - own) * frame : (index - own + 1) * frame]
                pages.append(mask_to_image(chunk, size))
                chunk.release()
            view.release()
        finally:
            for pid, errors in children:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                errors.close()
    return pages


def _fork_renderer(
    data: bytes,
    filename: str,
    geometry: PageGeometry,
    max_pixels: int,
    pages: tuple[int, int],
    shared: mmap.mmap,
    offset: int,
) -> tuple[int, io.BufferedReader]:
    """Fork a child that writes the masks of pages start..stop into ``shared``;
    a pickled exception comes back through the pipe if it fails."""
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: never return into the caller's code
        status = 1
        try:
            os.close(read_end)
            frame = geometry.width * geometry.height
            document = _open(data, filename)
            for index in range(*pages):
                out = np.frombuffer(
                    shared, dtype=bool, count=frame, offset=(index - offset) * frame
                )
                _render_page(
                    document,
                    index,
                    geometry,
                    filename,
                    max_pixels,
                    out.reshape(geometry.height, -1),
                )
            status = 0
        except BaseException as exc:  # noqa: BLE001 - reported to the parent, which raises it
            with contextlib.suppress(BaseException):
                os.write(write_end, pickle.dumps(exc))
        finally:
            os._exit(status)
    os.close(write_end)
    return pid, os.fdopen(read_end, "rb")


def _wait_for(pid: int, errors: io.BufferedReader, filename: str) -> None:
    report = errors.read()
    errors.close()
    _, status = os.waitpid(pid, 0)
    if status == 0:
        return
    try:
        exc = pickle.loads(report) if report else None
    except Exception:  # noqa: BLE001 - an unpicklable error still fails the page
        exc = None
    if isinstance(exc, Exception):
        raise exc
    raise CorruptDocument(filename, "rendering the PDF crashed")


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
