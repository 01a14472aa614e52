"""A rendered fax page: the unit passed from rendering to coding to the modem."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from PIL import Image

Resolution = Literal["standard", "fine", "superfine"]

#: Lines per inch for each vertical resolution (T.30 / RFC 3949).
LINES_PER_INCH: dict[str, float] = {"standard": 98.0, "fine": 196.0, "superfine": 391.0}
#: Pixels per inch across the page for the standard 1728-pixel width.
DOTS_PER_INCH_ACROSS = 204.0
PAGE_WIDTH = 1728


@dataclass
class FaxPage:
    """One bilevel page. ``image`` is a PIL mode "1" image (0 = black, as PIL
    stores it), ``PAGE_WIDTH`` pixels wide, at ``resolution`` vertically."""

    image: Image.Image
    resolution: Resolution = "fine"

    @property
    def lines_per_inch(self) -> float:
        return LINES_PER_INCH[self.resolution]
