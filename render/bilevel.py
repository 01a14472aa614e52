"""Greyscale page → bilevel page, choosing threshold or dithering per tile.

Text and line art must stay crisp (a threshold), while photos and grey fills
must keep their tones (Floyd–Steinberg error diffusion; thresholding turns a
grey photo into a black blob). Pages often mix both, so the choice is made
per 32×32 tile from the share of mid-grey pixels in it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Grey levels below this become black when thresholding.
THRESHOLD = 160
#: Tile edge in pixels for the per-region choice.
TILE = 32
#: A tile is photographic when this share of its pixels is mid-grey.
PHOTO_TILE_SHARE = 0.3
_MID_LOW, _MID_HIGH = 40, 215
_THRESHOLD_TABLE = [0] * THRESHOLD + [255] * (256 - THRESHOLD)


def photo_tiles(grey: np.ndarray) -> np.ndarray:
    """Boolean mask (per pixel) of tiles that look photographic."""
    height, width = grey.shape
    rows, cols = -(-height // TILE), -(-width // TILE)
    mid = (grey >= _MID_LOW) & (grey <= _MID_HIGH)
    padded = np.zeros((rows * TILE, cols * TILE), dtype=np.uint16)
    padded[:height, :width] = mid
    counts = padded.reshape(rows, TILE, cols, TILE).sum(axis=(1, 3))
    tiles = counts > PHOTO_TILE_SHARE * TILE * TILE
    return np.repeat(np.repeat(tiles, TILE, axis=0), TILE, axis=1)[:height, :width]


def to_bilevel(grey: Image.Image) -> Image.Image:
    """A mode "1" image of the same size (PIL convention: 0 black, 1 white)."""
    if grey.mode != "L":
        grey = grey.convert("L")
    histogram = grey.histogram()
    if sum(histogram[_MID_LOW : _MID_HIGH + 1]) <= PHOTO_TILE_SHARE * TILE * TILE:
        return grey.point(_THRESHOLD_TABLE, "1")  # no tile can be photographic: fast path
    pixels = np.asarray(grey)
    white = pixels >= THRESHOLD
    mask = photo_tiles(pixels)
    if mask.any():
        dithered = np.asarray(grey.convert("1", dither=Image.Dither.FLOYDSTEINBERG)).astype(bool)
        white = np.where(mask, dithered, white)
    return Image.fromarray(white)


def black_share(page: Image.Image) -> float:
    """Share of black pixels in a mode "1" image."""
    histogram = page.histogram()
    return histogram[0] / (page.width * page.height)
