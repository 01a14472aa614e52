"""Raster images → pages: PNG, JPEG (EXIF orientation), GIF, BMP and TIFF,
including multi-page TIFFs and existing fax TIFFs.

Single images are scaled to fit the page (up or down, keeping proportions),
not split across pages: a phone photo of a receipt is read as one sheet. An
image that says how many dots per inch it has is placed at its physical size
when that fits, so a small logo is not blown up to a full page. Fax-shaped
bilevel TIFF pages (1728 wide, ~204 dpi) are passed through unchanged at
their own resolution.
"""

from __future__ import annotations

import io
from collections.abc import Iterator

from PIL import Image, ImageOps, ImageSequence, UnidentifiedImageError

from faxgate.faxd.page import LINES_PER_INCH, PAGE_WIDTH, FaxPage
from faxgate.render.bilevel import to_bilevel
from faxgate.render.errors import CorruptDocument, DocumentTooLarge, PageLimitExceeded
from faxgate.render.geometry import PageGeometry

#: Resolution tags below this are meaningless defaults (72 dpi cameras, 96 dpi screenshots).
_MIN_TRUSTED_DPI = 100
#: All frames of one file together may have this many times ``max_pixels``
#: (100 A4 pages scanned at 300 dpi need about 11 times the default).
_FRAMES_PIXEL_FACTOR = 16


def render_image(
    data: bytes, filename: str, geometry: PageGeometry, max_pixels: int, max_pages: int
) -> list[FaxPage]:
    """Pages for every frame of a TIFF, or the single frame of other formats.

    The pixel count is checked from the header, before any pixel is decoded,
    so a small file that declares a huge image fails at once.
    """
    try:
        # Pillow itself refuses only beyond twice its MAX_IMAGE_PIXELS; our own
        # limit is checked per frame right after the header is read.
        image = Image.open(io.BytesIO(data))
        pages = list(_render_frames(image, filename, geometry, max_pixels, max_pages))
    except Image.DecompressionBombError:
        reason = f"the image has more pixels than the limit of {max_pixels:,}"
        raise DocumentTooLarge(filename, reason) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise CorruptDocument(filename, f"the image is damaged ({exc})") from None
    return pages


def _render_frames(
    image: Image.Image, filename: str, geometry: PageGeometry, max_pixels: int, max_pages: int
) -> Iterator[FaxPage]:
    frames = ImageSequence.Iterator(image) if image.format == "TIFF" else iter([image])
    _check_sizes(image, filename, max_pixels, max_pages)
    for frame in frames:
        passthrough = _fax_resolution(frame)
        if passthrough is not None:
            yield FaxPage(frame.copy(), passthrough)
        else:
            yield FaxPage(_layout(frame, geometry), geometry.resolution)  # type: ignore[arg-type]


def _check_sizes(image: Image.Image, filename: str, max_pixels: int, max_pages: int) -> None:
    """Page count and pixel counts from the frame headers, before decoding any frame."""
    sizes = []
    for number, frame in enumerate(ImageSequence.Iterator(image), start=1):
        if image.format != "TIFF" and number > 1:
            break  # animations: only the first frame is a page
        if number > max_pages:
            raise PageLimitExceeded(filename, f"more than {max_pages} pages")
        sizes.append(frame.size)
    image.seek(0)
    for width, height in sizes:
        if width * height > max_pixels:
            raise DocumentTooLarge(
                filename,
                f"the image is {width}×{height} pixels, more than the limit of {max_pixels:,}",
            )
    budget = max_pixels * _FRAMES_PIXEL_FACTOR
    if sum(width * height for width, height in sizes) > budget:
        raise DocumentTooLarge(
            filename, f"its {len(sizes)} pages have more than {budget:,} pixels together"
        )


def _fax_resolution(frame: Image.Image) -> str | None:
    """The fax resolution of a page that is already a fax page, else None."""
    if frame.mode != "1" or frame.width != PAGE_WIDTH:
        return None
    dpi = frame.info.get("dpi")
    if not dpi or not 195 <= float(dpi[0]) <= 210:
        return None
    for name, lines in LINES_PER_INCH.items():
        if abs(float(dpi[1]) - lines) <= lines * 0.06:
            return name
    return None


def _layout(frame: Image.Image, geometry: PageGeometry) -> Image.Image:
    frame = ImageOps.exif_transpose(frame)
    grey = _flatten_to_grey(frame)
    dpi = frame.info.get("dpi")
    known_dpi = bool(dpi) and min(float(dpi[0]), float(dpi[1])) >= _MIN_TRUSTED_DPI
    if known_dpi:
        width_in, height_in = grey.width / float(dpi[0]), grey.height / float(dpi[1])
    else:
        width_in, height_in = grey.width / 100, grey.height / 100  # only the proportions matter
    if width_in > height_in:  # landscape: a quarter turn anticlockwise, as printers do
        grey = grey.transpose(Image.Transpose.ROTATE_90)
        width_in, height_in = height_in, width_in
    box = geometry.fit(width_in, height_in, upscale=not known_dpi)
    scaled = grey.resize((box.width, box.height), Image.Resampling.LANCZOS, reducing_gap=3.0)
    page = Image.new("L", (geometry.width, geometry.height), 255)
    page.paste(scaled, (box.left, box.top))
    return to_bilevel(page)


def _flatten_to_grey(frame: Image.Image) -> Image.Image:
    """Greyscale with transparent areas shown as white paper."""
    if frame.mode in ("RGBA", "LA", "PA") or "transparency" in frame.info:
        rgba = frame.convert("RGBA")
        paper = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(paper, rgba).convert("L")
    if frame.mode == "I;16" or frame.mode.startswith("I;16"):
        return frame.point(lambda value: value / 256).convert("L")
    return frame.convert("L")
