"""Greyscale page → bilevel page, choosing threshold or dithering per tile.

Text and line art must stay crisp (a threshold), while photos and grey fills
must keep their tones (Floyd–Steinberg error diffusion; thresholding turns a
grey photo into a black blob). Pages often mix both, so the choice is made
per 32×32 tile from the share of mid-grey pixels in it. Most pages are pure
text, so a sparse sample decides first whether any tile can be photographic.

Work is done on numpy arrays: the white/black mask is written straight into
the caller's buffer (possibly shared with the parent process) and becomes a
PIL mode "1" image with one copy (raw mode "1;8").
"""

from __future__ import annotations

import numpy as np
from PIL import Image

#: Grey levels below this become black when thresholding: high enough that
#: grey text and thin grey lines (light footers, table rules) stay readable.
THRESHOLD = 180
#: Tile edge in pixels for the per-region choice.
TILE = 32
#: A tile is photographic when this share of its pixels is mid-grey.
PHOTO_TILE_SHARE = 0.3
_MID_LOW, _MID_HIGH = 40, 215
#: Every SAMPLE-th pixel in each direction is looked at by the quick check.
_SAMPLE = 4


def _mid_grey(pixels: np.ndarray) -> np.ndarray:
    return (pixels >= _MID_LOW) & (pixels <= _MID_HIGH)


def photo_tiles(grey: np.ndarray) -> np.ndarray:
    """Boolean mask (per pixel) of tiles that look photographic."""
    height, width = grey.shape
    rows, cols = -(-height // TILE), -(-width // TILE)
    padded = np.zeros((rows * TILE, cols * TILE), dtype=np.uint16)
    padded[:height, :width] = _mid_grey(grey)
    counts = padded.reshape(rows, TILE, cols, TILE).sum(axis=(1, 3))
    tiles = counts > PHOTO_TILE_SHARE * TILE * TILE
    # Grow by one tile, so the rim of a grey area is dithered like its inside
    # instead of turning into a black frame.
    grown = tiles.copy()
    grown[1:] |= tiles[:-1]
    grown[:-1] |= tiles[1:]
    grown[:, 1:] |= tiles[:, :-1]
    grown[:, :-1] |= tiles[:, 1:]
    tiles = grown
    return np.repeat(np.repeat(tiles, TILE, axis=0), TILE, axis=1)[:height, :width]


def white_mask(grey: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """True where the bilevel page is white; written into ``out`` when given."""
    if out is None:
        out = np.empty(grey.shape, dtype=bool)
    np.greater_equal(grey, THRESHOLD, out=out)
    sample = grey[::_SAMPLE, ::_SAMPLE]
    if np.count_nonzero(_mid_grey(sample)) * _SAMPLE * _SAMPLE <= PHOTO_TILE_SHARE * TILE * TILE:
        return out  # no tile can be photographic: threshold only
    mask = photo_tiles(grey)
    if mask.any():
        image = Image.fromarray(np.ascontiguousarray(grey))
        dithered = np.asarray(image.convert("1", dither=Image.Dither.FLOYDSTEINBERG))
        np.copyto(out, dithered, where=mask)
    return out


def mask_to_image(white: np.ndarray | memoryview, size: tuple[int, int]) -> Image.Image:
    """A mode "1" image from a C-contiguous boolean mask (or its bytes)."""
    return Image.frombuffer("1", size, white, "raw", "1;8", 0, 1)


def to_bilevel(grey: Image.Image) -> Image.Image:
    """A mode "1" image of the same size (PIL convention: 0 black, 1 white)."""
    if grey.mode != "L":
        grey = grey.convert("L")
    return mask_to_image(white_mask(np.asarray(grey)), grey.size)


def black_share(page: Image.Image) -> float:
    """Share of black pixels in a mode "1" image."""
    histogram = page.histogram()
    return histogram[0] / (page.width * page.height)
