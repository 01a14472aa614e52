"""Plain text → pages: a monospaced grid of 80 columns in Noto Sans Mono CJK.

Chinese, Japanese and Korean characters take two columns (the font's
full-width advance is exactly two half-width cells, so the grid holds), long
lines wrap (at a space where possible), tabs expand to 8-column stops and a
form feed starts a new page, as on a line printer.
"""

from __future__ import annotations

import unicodedata

from PIL import Image, ImageDraw

from faxgate.faxd.page import DOTS_PER_INCH_ACROSS
from faxgate.render import fonts
from faxgate.render.bilevel import to_bilevel
from faxgate.render.errors import PageLimitExceeded
from faxgate.render.geometry import PageGeometry

COLUMNS = 80
TAB_STOP = 8
#: Font em in pixels at 204 dpi: a half-width cell is 20 px, 80 cells fill 1600 px.
EM = 40
LINE_PITCH = 46
MARGIN_TOP = 80


def char_width(ch: str) -> int:
    """Display columns: 2 for wide CJK, 0 for combining marks, else 1."""
    if unicodedata.combining(ch) or unicodedata.category(ch) in ("Mn", "Me", "Cf"):
        return 0
    return 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1


def _clean(line: str) -> str:
    """Tabs expanded to display columns; other control characters dropped."""
    out: list[str] = []
    column = 0
    for ch in line:
        if ch == "\t":
            spaces = TAB_STOP - column % TAB_STOP
            out.append(" " * spaces)
            column += spaces
        elif unicodedata.category(ch) == "Cc":
            continue
        else:
            out.append(ch)
            column += char_width(ch)
    return "".join(out)


def wrap(line: str, columns: int = COLUMNS) -> list[str]:
    """Split one logical line into display lines of at most ``columns`` columns."""
    rows: list[str] = []
    current: list[str] = []
    used = 0
    for ch in line:
        width = char_width(ch)
        if used + width > columns and current:
            if ch != " " and width == 1 and " " in current[1:]:
                cut = len(current) - current[::-1].index(" ")
                carry = current[cut:]
                rows.append("".join(current[: cut - 1]))
                current, used = carry, sum(char_width(c) for c in carry)
            else:
                rows.append("".join(current))
                current, used = [], 0
            if ch == " " and not current:
                continue
        current.append(ch)
        used += width
    rows.append("".join(current))
    return rows


def paginate(
    text: str, lines_per_page: int, columns: int = COLUMNS, max_pages: int | None = None
) -> list[list[str]]:
    """Pages of display lines; a form feed forces a new page. With
    ``max_pages``, layout stops once there are more pages than that, so a
    huge file costs no more than the limit allows."""
    if max_pages is not None:
        # Characters beyond this cannot fit in max_pages + 1 pages (every character
        # but zero-width marks takes a column), so a single endless line is cut
        # before the per-character layout work, not after.
        text = text[: (max_pages + 1) * lines_per_page * columns * 2]
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    pages: list[list[str]] = []
    sheets = text.split("\f")
    if len(sheets) > 1 and not sheets[-1].strip("\n"):
        sheets.pop()  # a form feed at the very end does not start another sheet
    for sheet in sheets:
        if sheet.endswith("\n"):
            sheet = sheet[:-1]
        page: list[str] = []
        pages.append(page)
        for line in sheet.split("\n"):
            for row in wrap(_clean(line), columns):
                if len(page) == lines_per_page:
                    page = []
                    pages.append(page)
                page.append(row)
            if max_pages is not None and len(pages) > max_pages:
                return pages
    return pages


def _canvas_height(geometry: PageGeometry) -> int:
    """Height of the drawing area in square 204-dpi pixels (below the header band)."""
    return round(
        (geometry.height - geometry.header_lines) * DOTS_PER_INCH_ACROSS / geometry.lines_per_inch
    )


def lines_per_page(geometry: PageGeometry) -> int:
    return max(1, (_canvas_height(geometry) - 2 * MARGIN_TOP) // LINE_PITCH)


def render_text(
    text: str, filename: str, geometry: PageGeometry, max_pages: int
) -> list[Image.Image]:
    """Bilevel page images for ``text``."""
    pages = paginate(text, lines_per_page(geometry), max_pages=max_pages)
    if len(pages) > max_pages:
        raise PageLimitExceeded(filename, f"the text runs to more than {max_pages} pages")
    return [draw_lines(rows, geometry) for rows in pages]


def draw_lines(rows: list[str], geometry: PageGeometry) -> Image.Image:
    """Draw text rows at square pixels, then squeeze to the fax line spacing."""
    font = fonts.mono(EM)
    height = _canvas_height(geometry)
    canvas = Image.new("L", (geometry.width, height), 255)
    draw = ImageDraw.Draw(canvas)
    left = (geometry.width - COLUMNS * EM // 2) // 2
    for number, row in enumerate(rows):
        if row.strip():
            draw.text((left, MARGIN_TOP + number * LINE_PITCH), row, font=font, fill=0)
    page = Image.new("L", (geometry.width, geometry.height), 255)
    page.paste(
        canvas.resize(
            (geometry.width, geometry.height - geometry.header_lines), Image.Resampling.BOX
        ),
        (0, geometry.header_lines),
    )
    return to_bilevel(page)
