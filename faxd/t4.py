"""T.4 (MH, MR) and T.6 (MMR) fax image coding.

The encoder is vectorised with numpy: the changing elements of all rows are
found at once from the packed rows, the 2D mode of every candidate changing
element is decided with one ``searchsorted`` over all rows together, and the
code words are placed into 64-bit output words. A dense fine A4 text page
takes 20-35 ms (a dithered photo page a few hundred); the output is
bit-identical to libtiff's coder (see bench/bench_codec.py). Pages are coded
just before dialling, so this matters.

The decoder is a straightforward table-driven state machine in Python (tests,
thumbnails, TIFF reading). It validates everything it reads and raises
``T4DecodeError`` on malformed or truncated data; every step consumes input, so
it always terminates.

Bit order: fax modems (Class 1) put each byte on the line LSB first, and TIFF
FillOrder=2 stores it the same way, so ``lsb_first=True`` is the default.
"""

from __future__ import annotations

import re
from array import array
from functools import cache
from itertools import chain
from typing import Literal

import numpy as np
from PIL import Image

from faxgate.faxd import t4tables as tables

Coding = Literal["mh", "mr", "mmr"]
CODINGS: tuple[str, ...] = ("mh", "mr", "mmr")

#: Widest row we code; every run code (make-ups + terminating) then fits in 64 bits.
MAX_WIDTH = 8192
#: Most rows we code in one page; keeps the encoder's int32 arithmetic exact.
MAX_HEIGHT = 65535
#: Default cap on decoded rows: a long superfine page is ~5000 rows; a hostile
#: stream of 1-bit lines must not make us allocate gigabytes.
DEFAULT_MAX_HEIGHT = 20000

_EOL_BITS = 12
_BIT_REVERSE = bytes(int(f"{i:08b}"[::-1], 2) for i in range(256))


class T4DecodeError(ValueError):
    """The coded data is malformed, truncated or uses an unsupported feature."""


#: MR K parameter per vertical resolution (T.4 4.2.1.3.4: 3.85 l/mm K=2,
#: 7.7 l/mm K=4, 15.4 l/mm K=8; spandsp uses the same values).
_K_FOR_RESOLUTION = {"standard": 2, "fine": 4, "superfine": 8}


def k_for_resolution(resolution: str) -> int:
    """MR K parameter: at most K-1 2D lines follow each 1D line."""
    try:
        return _K_FOR_RESOLUTION[resolution]
    except KeyError:
        raise ValueError(f"unknown fax resolution {resolution!r}") from None


def reverse_bits(data: bytes) -> bytes:
    """Swap the bit order inside every byte (MSB-first <-> LSB-first)."""
    return data.translate(_BIT_REVERSE)


def _check_coding(coding: str) -> None:
    if coding not in CODINGS:
        raise ValueError(f"unknown fax coding {coding!r} (expected one of {', '.join(CODINGS)})")


def _code(bits: str) -> tuple[int, int]:
    return int(bits, 2), len(bits)


# --------------------------------------------------------------------------- encoder


@cache
def _run_codes(white: bool) -> tuple[np.ndarray, np.ndarray]:
    """Complete code (make-ups + terminating code, concatenated) for every run
    length 0..MAX_WIDTH of one colour, as (values, bit lengths)."""
    terminating = tables.WHITE_TERMINATING if white else tables.BLACK_TERMINATING
    makeups = tables.makeup_codes(white)
    values = np.zeros(MAX_WIDTH + 1, dtype=np.uint64)
    lengths = np.zeros(MAX_WIDTH + 1, dtype=np.int64)
    for run in range(MAX_WIDTH + 1):
        bits, rest = "", run
        while rest > 2560:
            bits += makeups[2560]
            rest -= 2560
        if rest >= 64:
            bits += makeups[rest // 64 * 64]
            rest %= 64
        bits += terminating[rest]
        values[run], lengths[run] = int(bits, 2), len(bits)
    return values, lengths


_PASS = _code(tables.PASS)
_HORIZONTAL = _code(tables.HORIZONTAL)
_VERTICAL_VALUES = np.array([int(c, 2) for c in tables.VERTICAL], dtype=np.uint64)
_VERTICAL_LENGTHS = np.array([len(c) for c in tables.VERTICAL], dtype=np.int64)


def image_to_black(image: Image.Image) -> np.ndarray:
    """Rows of a PIL mode "1" image as a bool array, True = black."""
    width, _ = image.size
    return np.unpackbits(packed_rows(image), axis=1, count=width).astype(bool)


def black_to_image(black: np.ndarray) -> Image.Image:
    """Inverse of :func:`image_to_black`."""
    return packed_to_image(np.packbits(black, axis=1), black.shape[1])


def packed_rows(image: Image.Image) -> np.ndarray:
    """Rows of a mode "1" image packed MSB first, 1 = black, each padded to whole bytes."""
    if image.mode != "1":
        raise ValueError(f"fax coding needs a bilevel mode '1' image, not mode {image.mode!r}")
    width, height = image.size
    # Pillow keeps mode "1" as one byte per pixel (0 or 255): fetched as such and
    # packed by numpy it is several times faster than Pillow's own "1;I" packing.
    pixels = np.frombuffer(image.tobytes("raw", "L"), dtype=np.uint8).reshape(height, width)
    return np.packbits(pixels == 0, axis=1)


class _Lines:
    """Coding-step candidates of every row.

    A changing element is a pixel whose colour differs from the pixel to its
    left (an imaginary white pixel precedes each row). The candidates of a row
    are its changing elements plus an imaginary one at ``width`` that ends the
    row, as flat arrays over all rows: ``a1`` (position), ``row``, ``a0`` (the
    candidate before, -1 at the row start) and ``index`` (0-based within the
    row; even = a change to black). 1D coding turns them into runs, 2D coding
    into modes."""

    def __init__(self, black: np.ndarray, width: int) -> None:
        height, stride = black.shape
        if stride * 8 < width + 1:  # room for the end-of-row marker bit
            black = np.concatenate([black, np.zeros((height, 1), dtype=np.uint8)], axis=1)
            stride += 1
        # Each pixel XOR its left neighbour, eight pixels per byte at once.
        changed = black >> 1
        changed[:, 1:] |= black[:, :-1] << 7
        changed ^= black
        # Mark position `width` and clear the padding after it.
        end_byte, end_bit = divmod(width, 8)
        keep = (0xFF00 >> end_bit) & 0xFF  # the bits before `width` in its byte
        changed[:, end_byte] = (changed[:, end_byte] & keep) | (0x80 >> end_bit)
        changed[:, end_byte + 1 :] = 0
        # The set bits of the (few) non-zero bytes, in row-major order.
        flat = changed.ravel()
        changed_bytes = np.flatnonzero(flat)
        changed_bits = np.flatnonzero(np.unpackbits(flat[changed_bytes]))
        # int32 halves the memory traffic of everything downstream.
        byte = changed_bytes[changed_bits >> 3].astype(np.int32)
        self.row = byte // stride
        self.a1 = (byte - self.row * stride) * 8 + (changed_bits & 7).astype(np.int32)
        self.width = width
        self.height = height
        ends = np.flatnonzero(self.a1 == width)
        self.first = np.empty(height, dtype=np.int32)  # first candidate of each row
        self.first[0] = 0
        self.first[1:] = ends[:-1] + 1
        self.a0 = np.empty_like(self.a1)
        self.a0[1:] = self.a1[:-1]
        self.a0[self.first] = -1
        self.index = np.arange(len(self.a1), dtype=np.int32) - self.first[self.row]

    def candidates(self, rows: np.ndarray) -> np.ndarray | slice:
        """Index of the candidates of the rows selected by a bool mask; a slice
        (no copying) when they are all rows from some row on."""
        chosen = np.flatnonzero(rows)
        if len(chosen) and len(chosen) == self.height - chosen[0]:
            return slice(int(self.first[chosen[0]]), None)
        return np.flatnonzero(rows[self.row])


def _encode_1d(lines: _Lines, rows: np.ndarray):
    """MH code words for the selected rows: (row of each word, values, lengths)."""
    white_values, white_lengths = _run_codes(True)
    black_values, black_lengths = _run_codes(False)
    sel = lines.candidates(rows)
    runs = lines.a1[sel] - np.maximum(lines.a0[sel], 0)
    white = (lines.index[sel] & 1) == 0
    values = np.where(white, white_values[runs], black_values[runs])
    lengths = np.where(white, white_lengths[runs], black_lengths[runs])
    return lines.row[sel], values, lengths


def _encode_2d(lines: _Lines, rows: np.ndarray):
    """MR/MMR 2D code words for the selected rows, each coded against the row
    above (row 0 against an all-white line): (row of each word, values, lengths).

    Every candidate a1 (with a0 the element before it) gets its mode decided
    independently: the b1/b2 search and the chain of pass modes depend only on
    a0 and a1. Which candidates actually start a coding step depends on
    horizontal mode consuming a2; that is resolved by the parity of the position
    inside each run of horizontal decisions."""
    width = lines.width
    stride = width + 2  # keys row * stride + position keep rows apart
    keys = lines.row * stride + lines.a1
    # The reference for row r is row r-1's candidates (its end marker included):
    # ref_keys shifts every row down by one behind an all-white row 0.
    one = np.ones(1, dtype=np.int32)
    ref_keys = np.concatenate((one * width, keys + stride))
    ref_pos = np.concatenate((one * width, lines.a1))
    ref_first = np.concatenate((one * 0, lines.first[:-1] + 1))  # per row
    ref_end = np.concatenate((one * 0, lines.first[1:]))  # index of the reference's end marker
    sel = lines.candidates(rows)
    row, a0, a1, index = lines.row[sel], lines.a0[sel], lines.a1[sel], lines.index[sel]
    row_start = np.flatnonzero(index == 0)
    # First reference element at or right of a1 (never past the end marker).
    at_a1 = np.searchsorted(ref_keys, keys[sel], side="left").astype(np.int32)
    # First reference element right of a0: the previous candidate's search (its
    # a1 is our a0), one further if that element sits exactly at a0.
    right_of_a0 = np.empty_like(at_a1)
    right_of_a0[1:] = at_a1[:-1]
    right_of_a0[0] = 0
    right_of_a0 += ref_pos[right_of_a0] == a0
    right_of_a0[row_start] = ref_first[row[row_start]]
    # b1 changes to the colour a1 changes to: same parity of index within its row.
    k = right_of_a0 + ((right_of_a0 - ref_first[row] - index) & 1)
    # Pass mode while b2 < a1; each pass moves b1 two elements on.
    passes = np.maximum(0, (at_a1 - k) // 2)
    b1_index = np.minimum(k + 2 * passes, ref_end[row])
    delta = a1 - ref_pos[b1_index]
    horizontal = np.abs(delta) > 3
    # A horizontal step consumes the candidate after it (its a2), unless that
    # candidate was itself consumed: within a run of horizontal decisions every
    # second one is skipped, counted from the run's first.
    h = np.flatnonzero(horizontal)
    start = np.ones(len(a1), dtype=bool)
    if len(h):
        after = h + 1
        same_row = after < len(a1)
        same_row[same_row] = index[after[same_row]] != 0
        run_first = np.ones(len(h), dtype=bool)
        run_first[1:] = (h[1:] != h[:-1] + 1) | (index[h[1:]] == 0)
        run_start = np.maximum.accumulate(np.where(run_first, h, -1))
        skipped = after[same_row & ((after - run_start) % 2 == 1)]
        start[skipped] = False

    steps = np.flatnonzero(start)
    passes = passes[steps]
    horizontal = horizontal[steps]
    words = passes + np.where(horizontal, 3, 1)
    mode_at = np.cumsum(words) - words + passes
    total = int(words.sum())
    values = np.full(total, _PASS[0], dtype=np.uint64)
    lengths = np.full(total, _PASS[1], dtype=np.int64)
    vertical = ~horizontal
    vi = delta[steps[vertical]] + 3
    values[mode_at[vertical]] = _VERTICAL_VALUES[vi]
    lengths[mode_at[vertical]] = _VERTICAL_LENGTHS[vi]
    h_steps = steps[horizontal]
    if len(h_steps):
        h_at = mode_at[horizontal]
        values[h_at] = _HORIZONTAL[0]
        lengths[h_at] = _HORIZONTAL[1]
        # a0 is the last pass's b2 after passes, and counts as 0 at the row start.
        after_pass = ref_pos[np.maximum(b1_index[h_steps] - 1, 0)]
        h_a0 = np.where(passes[horizontal] > 0, after_pass, np.maximum(a0[h_steps], 0))
        h_a1 = a1[h_steps]
        # a2: the next candidate in the same row, else the row end.
        nxt = np.minimum(h_steps + 1, len(a1) - 1)
        h_a2 = np.where((h_steps + 1 < len(a1)) & (index[nxt] != 0), a1[nxt], width)
        first_run = h_a1 - h_a0
        second_run = h_a2 - h_a1
        first_white = (index[h_steps] & 1) == 0
        white_values, white_lengths = _run_codes(True)
        black_values, black_lengths = _run_codes(False)
        values[h_at + 1] = np.where(first_white, white_values[first_run], black_values[first_run])
        lengths[h_at + 1] = np.where(
            first_white, white_lengths[first_run], black_lengths[first_run]
        )
        values[h_at + 2] = np.where(first_white, black_values[second_run], white_values[second_run])
        lengths[h_at + 2] = np.where(
            first_white, black_lengths[second_run], white_lengths[second_run]
        )
    return np.repeat(row[steps], words), values, lengths


#: Rows coded together; a band's arrays then fit in the CPU caches.
_BAND_ROWS = 256


def _band_words(lines: _Lines, coding: str, k: int, first_row: int, own_from: int):
    """Code words of one band of rows in row order: (page row of each word,
    values, lengths). ``lines`` starts at page row ``first_row``; rows before
    ``own_from`` are only there as the reference of the band's first row."""
    rows = np.arange(first_row, first_row + lines.height)
    own = rows >= own_from
    if coding == "mh":
        groups = [_encode_1d(lines, own)]
    elif coding == "mr":
        one_d = own & (rows % k == 0)
        two_d = own & ~one_d
        groups = [_encode_1d(lines, one_d)] if one_d.any() else []
        if two_d.any():
            groups.append(_encode_2d(lines, two_d))
    else:
        groups = [_encode_2d(lines, own)]
    if len(groups) == 1:
        word_row, values, lengths = groups[0]
    else:  # MR: interleave the 1D and 2D rows' words in row order
        per_row = [np.bincount(g[0], minlength=lines.height) for g in groups]
        row_first = np.cumsum(per_row[0] + per_row[1]) - per_row[0] - per_row[1]
        size = sum(len(g[0]) for g in groups)
        word_row = np.empty(size, dtype=np.int32)
        values = np.empty(size, dtype=np.uint64)
        lengths = np.empty(size, dtype=np.int64)
        for (rows_of, group_values, group_lengths), counts in zip(groups, per_row, strict=True):
            rank = np.arange(len(rows_of)) - (np.cumsum(counts) - counts)[rows_of]
            at = row_first[rows_of] + rank
            word_row[at] = rows_of
            values[at] = group_values
            lengths[at] = group_lengths
    return word_row + first_row, values, lengths


def _pack(values: np.ndarray, lengths: np.ndarray, lsb_first: bool) -> bytes:
    """Concatenate code words (value, bit length) MSB-first into bytes, zero-padded.

    Each word is placed into 64-bit output words (OR-ing the words that share an
    output word, plus the spill of a word that straddles two). Only a word's low
    64 bits can be non-zero (long words are zero fill before an EOL), so those
    are all that is placed."""
    ends = np.cumsum(lengths)
    total = int(ends[-1]) if len(ends) else 0
    placed = np.minimum(lengths, 64)
    start = ends - placed
    word = start >> 6
    shift = 64 - (start & 63) - placed  # negative: spills into the next output word
    spill = np.flatnonzero(shift < 0)
    main = values << np.maximum(shift, 0).astype(np.uint64)
    main[spill] = values[spill] >> (-shift[spill]).astype(np.uint64)
    out = np.zeros((total + 63) // 64 + 1, dtype=np.uint64)
    if len(word):
        firsts = np.flatnonzero(np.diff(word, prepend=-1))
        out[word[firsts]] = np.bitwise_or.reduceat(main, firsts)
        out[word[spill] + 1] |= values[spill] << (64 + shift[spill]).astype(np.uint64)
    data = out.astype(">u8").tobytes()[: (total + 7) // 8]
    return reverse_bits(data) if lsb_first else data


def encode_black(
    black: np.ndarray,
    coding: Coding,
    *,
    k: int = 4,
    min_bits_per_line: int = 0,
    rtc: bool = True,
    align_eol: bool = False,
    lsb_first: bool = True,
) -> bytes:
    """Code a bool array of rows (True = black). See :func:`encode_image`."""
    if black.ndim != 2 or black.shape[0] < 1:
        raise ValueError(f"cannot code an image of shape {black.shape}")
    packed = np.packbits(np.asarray(black, dtype=bool), axis=1)
    return encode_packed(
        packed,
        black.shape[1],
        coding,
        k=k,
        min_bits_per_line=min_bits_per_line,
        rtc=rtc,
        align_eol=align_eol,
        lsb_first=lsb_first,
    )


def encode_image(
    image: Image.Image,
    coding: Coding,
    *,
    k: int = 4,
    min_bits_per_line: int = 0,
    rtc: bool = True,
    align_eol: bool = False,
    lsb_first: bool = True,
) -> bytes:
    """Code a PIL mode "1" image as MH, MR or MMR.

    T.4 (mh, mr): each line is preceded by EOL (MR: EOL + tag bit, 1 = next line
    1D; every ``k``-th line is 1D). Zero fill is inserted before each EOL so a
    coded line plus its following EOL is at least ``min_bits_per_line`` bits
    (minimum scan-line time); ``align_eol`` additionally makes every EOL end on a
    byte boundary (TIFF Group3Options bit 2). ``rtc`` appends RTC (6 x EOL, MR:
    EOL+1); without it the data ends after the last line (TIFF Class F strips).
    T.6 (mmr): no EOLs and no fill (``min_bits_per_line``/``align_eol`` do not
    apply); ``rtc`` appends EOFB. Output is zero-padded to whole bytes, each byte
    LSB first unless ``lsb_first`` is False.
    """
    return encode_packed(
        packed_rows(image),
        image.size[0],
        coding,
        k=k,
        min_bits_per_line=min_bits_per_line,
        rtc=rtc,
        align_eol=align_eol,
        lsb_first=lsb_first,
    )


def encode_packed(
    packed: np.ndarray,
    width: int,
    coding: Coding,
    *,
    k: int = 4,
    min_bits_per_line: int = 0,
    rtc: bool = True,
    align_eol: bool = False,
    lsb_first: bool = True,
) -> bytes:
    """Code rows packed MSB first, 1 = black, each padded to whole bytes (PIL's
    "1;I" layout, as :func:`decode_packed` returns). See :func:`encode_image`."""
    _check_coding(coding)
    height = packed.shape[0]
    if not (1 <= height <= MAX_HEIGHT and 1 <= width <= MAX_WIDTH):
        raise ValueError(f"cannot code a {width}x{height} image (at most {MAX_WIDTH}x{MAX_HEIGHT})")
    if k < 1:
        raise ValueError("MR K parameter must be at least 1")
    if min_bits_per_line < 0:
        raise ValueError("min_bits_per_line must not be negative")
    # Work in bands of rows: the arrays stay in the CPU caches (about 10 %
    # faster on a text page) and memory stays bounded on tall pages. Each band
    # also scans the row above it, the reference line of its first row.
    parts = []
    for start in range(0, height, _BAND_ROWS):
        above = max(start - 1, 0)
        stop = min(start + _BAND_ROWS, height)
        parts.append(_band_words(_Lines(packed[above:stop], width), coding, k, above, start))
    word_row, data_values, data_lengths = (
        np.concatenate([part[i] for part in parts]) for i in range(3)
    )
    all_rows = np.arange(height)

    if coding == "mmr":
        trailer = [(1, _EOL_BITS), (1, _EOL_BITS)] if rtc else []  # EOFB
        values = np.concatenate((data_values, np.array([v for v, _ in trailer], np.uint64)))
        lengths = np.concatenate((data_lengths, np.array([n for _, n in trailer], np.int64)))
        return _pack(values, lengths, lsb_first)

    # T.4: a prefix word before each row: fill after the row before, EOL, and
    # (MR) the row's tag bit.
    eol_value, eol_bits = (2, _EOL_BITS + 1) if coding == "mr" else (1, _EOL_BITS)
    prefix_values = np.full(height, eol_value, dtype=np.uint64)
    if coding == "mr":
        prefix_values |= (all_rows % k == 0).astype(np.uint64)
    if min_bits_per_line or align_eol:
        data_bits = np.bincount(word_row, weights=data_lengths, minlength=height).astype(np.int64)
        fill = np.maximum(0, min_bits_per_line - data_bits - eol_bits)
        if align_eol:
            tag_bits = eol_bits - _EOL_BITS
            fill += -(tag_bits + data_bits + fill + _EOL_BITS) % 8
    else:
        fill = np.zeros(height, dtype=np.int64)
    prefix_lengths = np.empty(height, dtype=np.int64)
    prefix_lengths[0] = _EOL_BITS + (4 if align_eol else 0) + (eol_bits - _EOL_BITS)
    prefix_lengths[1:] = fill[:-1] + eol_bits
    trailer = []
    if rtc:
        # RTC: six EOLs (MR: EOL+1); the first ends the last line, so it is padded.
        rtc_value = eol_value | (coding == "mr")
        trailer = [(rtc_value, int(fill[-1]) + eol_bits)] + [(rtc_value, eol_bits)] * 5
    words = len(word_row)
    total = words + height + len(trailer)
    values = np.empty(total, dtype=np.uint64)
    lengths = np.empty(total, dtype=np.int64)
    data_at = np.arange(words) + word_row + 1  # after the prefixes of rows 0..row
    values[data_at] = data_values
    lengths[data_at] = data_lengths
    words_per_row = np.bincount(word_row, minlength=height)
    prefix_at = np.cumsum(words_per_row) - words_per_row + all_rows
    values[prefix_at] = prefix_values
    lengths[prefix_at] = prefix_lengths
    for i, (value, bits) in enumerate(trailer):
        values[total - len(trailer) + i] = value
        lengths[total - len(trailer) + i] = bits
    return _pack(values, lengths, lsb_first)


# --------------------------------------------------------------------------- decoder

_PEEK = 13  # longest code word (black make-ups) is 13 bits
_NON_ZERO_BYTE = re.compile(rb"[^\x00]")
_MODE_PASS = 7
_MODE_HORIZONTAL = 8


def _lookup(codes: dict[str, int], bits: int) -> list[int]:
    """Table indexed by the next ``bits`` input bits: (value << 4 | code length),
    0 where no code word matches."""
    table = [0] * (1 << bits)
    for code, value in codes.items():
        shift = bits - len(code)
        base = int(code, 2) << shift
        table[base : base + (1 << shift)] = [value << 4 | len(code)] * (1 << shift)
    return table


@cache
def _run_table(white: bool) -> list[int]:
    terminating = tables.WHITE_TERMINATING if white else tables.BLACK_TERMINATING
    codes = {code: run for run, code in enumerate(terminating)}
    codes.update({code: run for run, code in tables.makeup_codes(white).items()})
    return _lookup(codes, _PEEK)


@cache
def _mode_table() -> list[int]:
    codes = {code: i for i, code in enumerate(tables.VERTICAL)}
    codes[tables.PASS] = _MODE_PASS
    codes[tables.HORIZONTAL] = _MODE_HORIZONTAL
    return _lookup(codes, _PEEK)


class _Decoder:
    def __init__(self, data: bytes, width: int, coding: str, height: int | None, max_height: int):
        arr = np.frombuffer(data + b"\0\0\0", dtype=np.uint8).astype(np.uint32)
        # windows[i] = bytes i, i+1, i+2 as a 24-bit int: any 13 bits starting in
        # byte i. An array (4 bytes per input byte) indexes as fast as a list.
        self.windows = array("I", ((arr[:-2] << 16) | (arr[1:-1] << 8) | arr[2:]).tobytes())
        self.data = data
        self.nbits = len(data) * 8
        self.width = width
        self.coding = coding
        self.height = height
        self.max_height = max_height
        self.pos = 0
        self.white = _run_table(True)
        self.black = _run_table(False)
        self.modes = _mode_table()

    def peek(self, pos: int) -> int:
        return (self.windows[pos >> 3] >> (11 - (pos & 7))) & 0x1FFF

    def error(self, message: str, row: int) -> T4DecodeError:
        if self.pos > self.nbits:
            message += " (data truncated)"
        return T4DecodeError(f"{self.coding.upper()} data: {message} at row {row + 1}")

    def skip_zeros(self, pos: int) -> int:
        """Position of the next 1 bit at or after ``pos`` (>= nbits if none)."""
        if pos >= self.nbits:
            return pos
        v = self.peek(pos)
        if v:
            return pos + _PEEK - v.bit_length()
        # Long fill: the 13 bits from pos are zero, so the next 1 bit is in a
        # later byte; let the regex engine find that byte.
        found = _NON_ZERO_BYTE.search(self.data, (pos >> 3) + 1)
        if found is None:
            return max(pos, self.nbits)
        index = found.start()
        return index * 8 + 8 - self.data[index].bit_length()

    def run(self, pos: int, white: bool, row: int) -> tuple[int, int]:
        """Decode one run (make-up codes then a terminating code): (length, new pos)."""
        table = self.white if white else self.black
        total = 0
        while True:
            entry = table[(self.windows[pos >> 3] >> (11 - (pos & 7))) & 0x1FFF]
            if not entry:
                self.pos = pos
                raise self.error(f"invalid {'white' if white else 'black'} run code", row)
            pos += entry & 15
            total += entry >> 4
            if entry >> 4 < 64:
                return total, pos

    def row_1d(self, row: int) -> list[int]:
        width = self.width
        windows = self.windows
        tables = (self.white, self.black)
        pos = self.pos
        changes: list[int] = []
        a = 0
        colour = 0
        while a < width:
            table = tables[colour]
            while True:  # make-up codes, then the terminating code (run < 64)
                entry = table[(windows[pos >> 3] >> (11 - (pos & 7))) & 0x1FFF]
                if not entry:
                    self.pos = pos
                    raise self.error(f"invalid {('white', 'black')[colour]} run code", row)
                pos += entry & 15
                a += entry >> 4
                if entry < 1024:  # run < 64
                    break
            if a >= width:
                if a > width:
                    self.pos = pos
                    raise self.error(f"runs add up to more than the width {width}", row)
            elif changes and changes[-1] == a:
                changes.pop()  # a zero-length run: no change of colour
            else:
                changes.append(a)
            colour ^= 1
        self.pos = pos
        return changes

    def row_2d(self, reference: list[int], row: int) -> list[int]:
        width = self.width
        ref = reference + [width, width, width]
        modes = self.modes
        windows = self.windows
        pos = self.pos
        changes: list[int] = []
        append = changes.append
        a0 = -1
        colour = 0  # colour of a0: 0 white, 1 black
        m = 0  # b1 = ref[m]: first element right of a0 whose index parity is colour
        while a0 < width:
            bits = windows[pos >> 3] >> (11 - (pos & 7))
            if bits & 0x1000:  # V0 ("1"), most codes: a1 = b1, always valid
                pos += 1
                a0 = ref[m]
                colour ^= 1
                if a0 < width:
                    append(a0)
                    m += 1  # ref is strictly increasing: ref[m+1] > a0
                continue
            entry = modes[bits & 0x1FFF]
            if not entry:
                self.pos = pos
                raise self.error("invalid or unsupported 2D mode code", row)
            pos += entry & 15
            mode = entry >> 4
            if mode < _MODE_PASS:  # vertical
                a1 = ref[m] + mode - 3
                if a1 <= a0 or a1 > width:
                    self.pos = pos
                    raise self.error("vertical mode outside the line", row)
                a0 = a1
                if a0 < width:
                    append(a0)
                colour ^= 1
                # The next b1 has the other parity: ref[m-1] if it lies right of
                # a0 (only possible after VL), else further right.
                if m and ref[m - 1] > a0:
                    m -= 1
                elif a0 < width:
                    m += 1
                    while ref[m] <= a0:
                        m += 2
            elif mode == _MODE_PASS:
                a0 = ref[m + 1]
                if a0 >= width:
                    self.pos = pos
                    raise self.error("pass mode beyond the end of the line", row)
                m += 2
            else:
                first, pos = self.run(pos, colour == 0, row)
                second, pos = self.run(pos, colour == 1, row)
                a1 = max(a0, 0) + first
                a2 = a1 + second
                if a2 > width:
                    self.pos = pos
                    raise self.error(f"runs add up to more than the width {width}", row)
                for a in (a1, a2):
                    if a < width:
                        if changes and changes[-1] == a:
                            changes.pop()
                        else:
                            changes.append(a)
                a0 = a2
                while ref[m] <= a0 < width:
                    m += 2
        self.pos = pos
        return changes

    def eol_at(self, pos: int) -> int | None:
        """If fill zeros and an EOL start at ``pos``, the position after the EOL."""
        one = self.skip_zeros(pos)
        if one < self.nbits and one - pos >= _EOL_BITS - 1:
            return one + 1
        return None

    def only_zeros_from(self, pos: int) -> bool:
        return self.skip_zeros(pos) >= self.nbits

    def complete(self, rows: list[list[int]]) -> bool:
        """True when the expected number of rows has been decoded."""
        return self.height is not None and len(rows) >= self.height

    def make_room(self, rows: list[list[int]]) -> None:
        """Refuse to decode one row more than ``max_height``."""
        if len(rows) >= self.max_height:
            raise self.error(f"more than {self.max_height} rows", len(rows))

    def decode_t4(self) -> list[list[int]]:
        mr = self.coding == "mr"
        rows: list[list[int]] = []
        previous: list[int] = []
        while not self.complete(rows):
            eols = 0
            tag = None
            while (after := self.eol_at(self.pos)) is not None:
                eols += 1
                self.pos = after
                if mr:
                    tag = (self.windows[after >> 3] >> (23 - (after & 7))) & 1
                    self.pos += 1
            if self.pos >= self.nbits or self.only_zeros_from(self.pos):
                break  # end of data (with or without RTC)
            if eols >= 2 and rows:
                break  # RTC
            if mr and tag is None:
                raise self.error("2D-coded line without EOL and tag bit", len(rows))
            self.make_room(rows)
            if mr and tag == 0:
                previous = self.row_2d(previous, len(rows))
            else:
                previous = self.row_1d(len(rows))
            if self.pos > self.nbits:
                raise self.error("line runs past the end of the data", len(rows))
            rows.append(previous)
        return rows

    def decode_t6(self) -> list[list[int]]:
        rows: list[list[int]] = []
        previous: list[int] = []
        while not self.complete(rows):
            if self.pos >= self.nbits or self.only_zeros_from(self.pos):
                break
            after = self.eol_at(self.pos)
            if after is not None:
                if self.eol_at(after) is None:
                    raise self.error("EOL inside T.6 data", len(rows))
                break  # EOFB
            self.make_room(rows)
            previous = self.row_2d(previous, len(rows))
            if self.pos > self.nbits:
                raise self.error("line runs past the end of the data", len(rows))
            rows.append(previous)
        return rows


def decode_packed(
    data: bytes,
    width: int,
    coding: Coding,
    *,
    lsb_first: bool = True,
    height: int | None = None,
    max_height: int = DEFAULT_MAX_HEIGHT,
) -> np.ndarray:
    """Decode to rows packed MSB first, 1 = black, each padded to whole bytes
    (PIL's "1;I" layout). See :func:`decode_image`."""
    _check_coding(coding)
    if not 1 <= width <= MAX_WIDTH:
        raise ValueError(f"width must be 1..{MAX_WIDTH}, not {width}")
    if height is not None and height < 1:
        raise ValueError("height must be at least 1")
    data = bytes(data)
    if lsb_first:
        data = reverse_bits(data)
    decoder = _Decoder(data, width, coding, height, max_height)
    rows = decoder.decode_t6() if coding == "mmr" else decoder.decode_t4()
    if not rows:
        raise T4DecodeError(f"{coding.upper()} data: no image rows")
    if height is not None and len(rows) < height:
        raise T4DecodeError(
            f"{coding.upper()} data: only {len(rows)} of {height} rows (data truncated)"
        )
    # Changing elements -> pixels, a block of rows at a time to bound memory.
    packed = np.empty((len(rows), (width + 7) // 8), dtype=np.uint8)
    block = max(1, (1 << 22) // (width + 1))
    for first in range(0, len(rows), block):
        chunk = rows[first : first + block]
        counts = np.fromiter(map(len, chunk), dtype=np.int64, count=len(chunk))
        cols = np.fromiter(chain.from_iterable(chunk), dtype=np.int64, count=int(counts.sum()))
        marks = np.zeros((len(chunk), width + 1), dtype=np.uint8)
        marks[np.repeat(np.arange(len(chunk)), counts), cols] = 1
        black = np.bitwise_xor.accumulate(marks, axis=1)[:, :width]
        packed[first : first + len(chunk)] = np.packbits(black, axis=1)
    return packed


def packed_to_image(packed: np.ndarray, width: int) -> Image.Image:
    """A mode "1" image from rows packed MSB first, 1 = black."""
    return Image.frombytes("1", (width, len(packed)), packed.tobytes(), "raw", "1;I")


def decode_black(
    data: bytes,
    width: int,
    coding: Coding,
    *,
    lsb_first: bool = True,
    height: int | None = None,
    max_height: int = DEFAULT_MAX_HEIGHT,
) -> np.ndarray:
    """Decode to a bool array of rows (True = black). See :func:`decode_image`."""
    packed = decode_packed(
        data, width, coding, lsb_first=lsb_first, height=height, max_height=max_height
    )
    return np.unpackbits(packed, axis=1, count=width).astype(bool)


def decode_image(
    data: bytes,
    width: int,
    coding: Coding,
    *,
    lsb_first: bool = True,
    height: int | None = None,
    max_height: int = DEFAULT_MAX_HEIGHT,
) -> Image.Image:
    """Decode MH/MR/MMR data into a PIL mode "1" image.

    T.4 data may carry fill bits and may or may not end with RTC; T.6 data may or
    may not end with EOFB. With ``height`` decoding stops after that many rows
    (and fewer is an error); without it, at RTC/EOFB or the end of the data.
    Raises :class:`T4DecodeError` on malformed or truncated data, or when more
    than ``max_height`` rows would result.
    """
    packed = decode_packed(
        data, width, coding, lsb_first=lsb_first, height=height, max_height=max_height
    )
    return packed_to_image(packed, width)
