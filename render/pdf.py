"""PDF pages → bilevel page images, rendered by PDFium straight into the fax
geometry (204 dpi across, the chosen lines per inch down: PDFium scales x and
y independently), so no resampling pass is needed.

pypdf (in sniff) decides about encryption; PDFium renders, because pypdf
cannot. PDFium is not thread-safe, so every call holds one lock; long PDFs
are split across forked worker processes when the caller is single-threaded
(forking a threaded process could copy a lock some other thread holds).
"""

from __future__ import annotations

import multiprocessing
import threading

import pypdfium2
import pypdfium2.raw as pdfium_c
from faxgate.render.bilevel import to_bilevel
from faxgate.render.errors import CorruptDocument, EncryptedDocument, PageLimitExceeded
from faxgate.render.geometry import PageGeometry
from PIL import Image

#: Largest page side PDF allows (ISO 32000: 14 400 units); beyond this a file is broken or hostile.
MAX_PAGE_POINTS = 14400.0
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


def render_pdf(
    data: bytes, filename: str, geometry: PageGeometry, max_pages: int, workers: int = 1
) -> list[Image.Image]:
    """Bilevel images of every page; the page count is checked before any rendering."""
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
                return [_render_page(document, i, geometry, filename) for i in range(count)]
        finally:
            document.close()
        return _render_parallel(data, filename, geometry, count, workers)


def _render_parallel(
    data: bytes, filename: str, geometry: PageGeometry, count: int, workers: int
) -> list[Image.Image]:
    """Contiguous page ranges rendered by forked workers (called with the lock held)."""
    bounds = [count * k // workers for k in range(workers + 1)]
    tasks = [(data, filename, geometry, bounds[k], bounds[k + 1]) for k in range(workers)]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        chunks = pool.starmap(_render_range, tasks)
    return [page for chunk in chunks for page in chunk]


def _render_range(
    data: bytes, filename: str, geometry: PageGeometry, start: int, stop: int
) -> list[Image.Image]:
    document = _open(data, filename)
    try:
        return [_render_page(document, i, geometry, filename) for i in range(start, stop)]
    finally:
        document.close()


def _render_page(
    document: pypdfium2.PdfDocument, index: int, geometry: PageGeometry, filename: str
) -> Image.Image:
    page = document[index]
    try:
        width_pt, height_pt = page.get_size()  # after the page's own /Rotate
        if not (0 < width_pt <= MAX_PAGE_POINTS and 0 < height_pt <= MAX_PAGE_POINTS):
            raise CorruptDocument(
                filename, f"page {index + 1} has an impossible size ({width_pt}×{height_pt} pt)"
            )
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
        return to_bilevel(bitmap.to_pil())
    finally:
        page.close()
