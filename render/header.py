"""The header line stamped across the top of every page, like a fax machine
prints its TTI: who sent it, when, and "Page n/m", so a recipient can tell a
missing page."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from PIL import Image, ImageDraw, ImageFont

from faxgate.errors import ConfigError
from faxgate.faxd.page import DOTS_PER_INCH_ACROSS, FaxPage
from faxgate.render import fonts
from faxgate.render.geometry import HEADER_BAND_INCHES

DEFAULT_TEMPLATE = "{station_id}  {sender}  {date} {time}  Page {page}/{pages}"
_FIELDS = ("station_id", "sender", "date", "time", "page", "pages")
#: Header font em in pixels at 204 dpi (about 8.5 pt) and the left margin.
_EM = 24
_LEFT = 40


@dataclass(frozen=True)
class HeaderInfo:
    """What the header says; ``page``/``pages`` are filled in per page."""

    station_id: str = ""
    sender: str = ""
    when: datetime = field(default_factory=lambda: datetime.now().astimezone())
    template: str = DEFAULT_TEMPLATE

    def text(self, page: int, pages: int) -> str:
        values = {
            "station_id": self.station_id,
            "sender": self.sender,
            "date": self.when.strftime("%Y-%m-%d"),
            "time": self.when.strftime("%H:%M"),
            "page": page,
            "pages": pages,
        }
        try:
            return self.template.format_map(values)
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ConfigError(
                f"render.header_template {self.template!r} is invalid ({exc!r}); "
                f"fields: {', '.join(_FIELDS)}"
            ) from None


def stamp(page: FaxPage, text: str) -> None:
    """Draw ``text`` into the header band of ``page`` (in place), clearing the band first."""
    band_lines = max(1, round(HEADER_BAND_INCHES * page.lines_per_inch))
    square = round(HEADER_BAND_INCHES * DOTS_PER_INCH_ACROSS)
    font = fonts.sans(_EM)
    strip = Image.new("L", (page.image.width, square), 255)
    draw = ImageDraw.Draw(strip)
    text = fit_text(text, font, page.image.width - 2 * _LEFT)
    ascent, descent = font.getmetrics()
    draw.text((_LEFT, (square - ascent - descent) // 2 + 2), text, font=font, fill=0)
    squeezed = strip.resize((page.image.width, band_lines), Image.Resampling.BOX)
    page.image.paste(squeezed.convert("1", dither=Image.Dither.NONE), (0, 0))


def fit_text(text: str, font: ImageFont.FreeTypeFont, width: int) -> str:
    """``text``, or its longest beginning plus an ellipsis that fits ``width`` pixels.

    Found by bisection: the sender's From: display name can be 100 KB, and
    dropping one character at a time re-measured the whole rest each time
    (quadratic: minutes per page).
    """
    if len(text) <= width and font.getlength(text) <= width:
        return text
    # At most ``width`` characters are kept, which bounds the work even for zero-width text.
    fits, too_long = 0, min(len(text), width) + 1
    while too_long - fits > 1:
        middle = (fits + too_long) // 2
        if font.getlength(text[:middle] + "…") <= width:
            fits = middle
        else:
            too_long = middle
    return text[:fits] + "…"
