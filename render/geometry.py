"""Page geometry: fax pages are 1728 pixels (215 mm) wide at 204 dpi, and
98, 196 or 391 lines per inch down the page, so pixels are not square.

Everything is fitted (never cropped) into the page, keeping proportions in
physical units, below the header band when a header is stamped.
"""

from __future__ import annotations

from dataclasses import dataclass

from faxgate.faxd.page import DOTS_PER_INCH_ACROSS, LINES_PER_INCH, PAGE_WIDTH

#: Paper sizes in inches (width, length).
PAPER_INCHES: dict[str, tuple[float, float]] = {
    "a4": (210 / 25.4, 297 / 25.4),
    "letter": (8.5, 11.0),
}

#: Height of the header band at the top of each page.
HEADER_BAND_INCHES = 0.16


@dataclass(frozen=True)
class Box:
    """A placement on the page in device pixels."""

    left: int
    top: int
    width: int
    height: int


@dataclass(frozen=True)
class PageGeometry:
    resolution: str
    paper: str
    header: bool

    @property
    def width(self) -> int:
        return PAGE_WIDTH

    @property
    def lines_per_inch(self) -> float:
        return LINES_PER_INCH[self.resolution]

    @property
    def height(self) -> int:
        return round(PAPER_INCHES[self.paper][1] * self.lines_per_inch)

    @property
    def header_lines(self) -> int:
        return round(HEADER_BAND_INCHES * self.lines_per_inch) if self.header else 0

    def fit(self, width_in: float, height_in: float, upscale: bool = True) -> Box:
        """Where content of this physical size goes: as large as fits in the
        page below the header band, centred across, at the top."""
        avail_w = self.width / DOTS_PER_INCH_ACROSS
        avail_h = (self.height - self.header_lines) / self.lines_per_inch
        scale = min(avail_w / width_in, avail_h / height_in)
        if not upscale:
            scale = min(scale, 1.0)
        width = max(1, min(self.width, round(width_in * scale * DOTS_PER_INCH_ACROSS)))
        height = max(
            1, min(self.height - self.header_lines, round(height_in * scale * self.lines_per_inch))
        )
        return Box((self.width - width) // 2, self.header_lines, width, height)
