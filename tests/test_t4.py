"""T.4/T.6 codec: round trips through our decoder and libtiff's (fax2tiff),
line structure (EOL, tag bits, fill, alignment, RTC/EOFB), and a decoder that
fails cleanly on hostile data."""

from __future__ import annotations

import ctypes
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFont

from faxgate.faxd import t4

FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
CODINGS = ("mh", "mr", "mmr")


def text_page(height: int = 2292) -> Image.Image:
    """A fine-resolution A4 text page with Latin and Chinese text."""
    img = Image.new("1", (1728, height), 1)
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, 30)
    small = ImageFont.truetype(FONT, 18)
    for i, y in enumerate(range(80, height - 80, 44)):
        f = small if i % 5 == 4 else font
        draw.text(
            (100, y),
            f"Line {i}: Fax gateway test page 传真网关测试页 – ABCxyz 0123456789",
            font=f,
            fill=0,
        )
    draw.rectangle((60, 40, 1668, height - 40), outline=0, width=3)
    return img


def edge_rows(width: int = 1728) -> np.ndarray:
    """Rows that exercise every coding mode and the line edges (True = black)."""
    rows = [np.zeros(width, bool), np.ones(width, bool)]
    alternate = np.arange(width) % 2 == 1
    # Starting black, one pixel per run, a row has width+1 runs: libtiff's decoder
    # overflows its run buffer on that (fax2tiff then loops), so end with a 2-pixel run.
    black_first = ~alternate
    black_first[-1] = black_first[-2]
    rows += [alternate, black_first, alternate, np.zeros(width, bool)]
    for pos in (0, 1, width - 2, width - 1):
        row = np.zeros(width, bool)
        row[pos] = True
        rows += [row, ~row]
    growing = np.zeros(width, bool)
    x, run, colour = 0, 1, False
    while x < width:
        growing[x : x + run] = colour
        x, run, colour = x + run, run + 7, not colour
    rows.append(growing)
    for shift in (1, -1, 2, -2, 3, -3, 4, -4, 9, -9, 70, -70):
        rows.append(np.roll(growing, shift))
        rows.append(growing)
    blips = np.zeros(width, bool)
    blips[100:103] = blips[200:201] = blips[300:340] = True
    rows += [blips, np.zeros(width, bool), blips, ~blips]  # pass mode over the blips
    long_black = np.zeros(width, bool)
    long_black[5 : width - 5] = True
    rows += [long_black, np.random.default_rng(7).random(width) < 0.5]
    return np.array(rows)


def bit_string(data: bytes, lsb_first: bool = True) -> str:
    return "".join(f"{b:08b}"[::-1] if lsb_first else f"{b:08b}" for b in data)


def eol_ends(bits: str) -> list[int]:
    """Bit positions just after each EOL (fill zeros + 000000000001)."""
    return [m.end() for m in re.finditer("0{11,}1", bits)]


@pytest.fixture(scope="module")
def page() -> Image.Image:
    return text_page()


@pytest.mark.parametrize("coding", CODINGS)
def test_text_page_round_trips_through_our_decoder(page: Image.Image, coding: str) -> None:
    data = t4.encode_image(page, coding)
    assert t4.decode_image(data, 1728, coding).tobytes() == page.tobytes()
    assert len(data) < 1728 * 2292 // 8 // 4  # really compressed


def test_2d_codings_are_smaller_on_text(page: Image.Image) -> None:
    sizes = {c: len(t4.encode_image(page, c)) for c in CODINGS}
    assert sizes["mmr"] < sizes["mr"] < sizes["mh"]


def _fax2tiff(tmp_path: Path, data: bytes, coding: str, width: int, *extra: str) -> np.ndarray:
    raw = tmp_path / f"in.{coding}"
    raw.write_bytes(data)
    out = tmp_path / "out.tif"
    flag = {"mh": ["-3", "-1"], "mr": ["-3", "-2"], "mmr": ["-4"]}[coding]
    proc = subprocess.run(
        ["fax2tiff", *flag, "-L", "-u", "-X", str(width), *extra, "-o", str(out), str(raw)],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Bad code" not in proc.stderr and "Premature" not in proc.stderr, proc.stderr
    with Image.open(out) as img:
        return t4.image_to_black(img.convert("1"))


@pytest.mark.parametrize("coding", CODINGS)
def test_fax2tiff_decodes_our_wire_streams(page: Image.Image, coding: str, tmp_path: Path) -> None:
    black = t4.image_to_black(page)
    got = _fax2tiff(tmp_path, t4.encode_image(page, coding), coding, 1728)
    # fax2tiff turns each RTC/EOFB EOL after the page into an extra white row.
    assert np.array_equal(got[: len(black)], black)
    assert not got[len(black) :].any()


@pytest.mark.parametrize("coding", CODINGS)
def test_fax2tiff_decodes_edge_rows_wide_and_narrow(coding: str, tmp_path: Path) -> None:
    for width in (1728, 3000, 5):
        black = (
            edge_rows(width) if width > 5 else np.array([[1, 0, 1, 0, 1], [0, 0, 0, 0, 1]], bool)
        )
        data = t4.encode_black(black, coding, k=3, rtc=False)
        assert np.array_equal(_fax2tiff(tmp_path, data, coding, width), black)
        assert np.array_equal(t4.decode_black(data, width, coding), black)


def _spandsp() -> ctypes.CDLL:
    """spandsp's T.4 receiver (the far end of the simulated line), via ctypes."""
    lib = ctypes.CDLL("libspandsp.so.2")
    lib.t4_rx_init.restype = ctypes.c_void_p
    lib.t4_rx_init.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    for name in ("t4_rx_start_page", "t4_rx_end_page", "t4_rx_free"):
        getattr(lib, name).argtypes = [ctypes.c_void_p]
    for name in ("t4_rx_set_rx_encoding", "t4_rx_set_image_width"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int]
    for name in ("t4_rx_set_x_resolution", "t4_rx_set_y_resolution"):
        getattr(lib, name).argtypes = [ctypes.c_void_p, ctypes.c_int]
    lib.t4_rx_put_chunk.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    return lib


@pytest.mark.parametrize(("coding", "encoding"), [("mh", 1), ("mr", 2), ("mmr", 3)])
def test_spandsp_decodes_our_wire_streams(
    page: Image.Image, coding: str, encoding: int, tmp_path: Path
) -> None:
    """spandsp 0.0.6 t4_rx: finds the page end (RTC/EOFB) and writes the page
    it decoded to a TIFF, which libtiff reads back."""
    lib = _spandsp()
    data = t4.encode_image(page, coding, k=4, min_bits_per_line=0 if coding == "mmr" else 288)
    out = tmp_path / "spandsp.tif"
    rx = lib.t4_rx_init(None, str(out).encode(), 3)  # write the TIFF as T.6
    assert rx
    lib.t4_rx_set_rx_encoding(rx, encoding)
    lib.t4_rx_set_image_width(rx, 1728)
    lib.t4_rx_set_x_resolution(rx, 8031)  # pixels per metre
    lib.t4_rx_set_y_resolution(rx, 7700)
    lib.t4_rx_start_page(rx)
    page_ended = lib.t4_rx_put_chunk(rx, data, len(data))
    assert lib.t4_rx_end_page(rx) == 0
    lib.t4_rx_free(rx)
    assert page_ended == 1
    with Image.open(out) as received:
        assert received.convert("1").tobytes() == page.tobytes()


@pytest.mark.parametrize("coding", ["mh", "mr"])
def test_fax2tiff_decodes_fill_and_aligned_eols(
    page: Image.Image, coding: str, tmp_path: Path
) -> None:
    crop = page.crop((0, 0, 1728, 400))
    data = t4.encode_image(crop, coding, min_bits_per_line=700, align_eol=True, rtc=False)
    got = _fax2tiff(tmp_path, data, coding, 1728, "-A")
    assert np.array_equal(got, t4.image_to_black(crop))


@pytest.mark.parametrize("coding", ["mh", "mr"])
@pytest.mark.parametrize("align", [False, True])
def test_fill_bits_give_minimum_line_length(page: Image.Image, coding: str, align: bool) -> None:
    crop = page.crop((0, 60, 1728, 260))
    minimum = 300  # e.g. 14400 bit/s x 20 ms
    data = t4.encode_image(crop, coding, k=4, min_bits_per_line=minimum, align_eol=align)
    bits = bit_string(data)
    ends = eol_ends(bits)
    assert len(ends) == crop.height + 6  # one EOL per line plus RTC
    line_lengths = np.diff(ends[: crop.height + 1])
    assert (line_lengths >= minimum).all()
    assert (line_lengths > minimum + 8).any()  # busy lines need no fill
    if align:
        assert all(end % 8 == 0 for end in ends[: crop.height + 1])
        assert line_lengths.min() == minimum + -minimum % 8
    else:
        assert line_lengths.min() == minimum  # short lines are padded exactly, not more
    assert ends[0] == (16 if align else 12)
    assert t4.decode_image(data, 1728, coding).tobytes() == crop.tobytes()


@pytest.mark.parametrize("k", [1, 2, 4])
def test_mr_tag_bits_follow_k(k: int) -> None:
    black = edge_rows(64)[:11]
    bits = bit_string(t4.encode_black(black, "mr", k=k))
    tags = [int(bits[end]) for end in eol_ends(bits)]
    assert tags[: len(black)] == [1 if r % k == 0 else 0 for r in range(len(black))]
    assert tags[len(black) :] == [1] * 6  # RTC is EOL+1 six times
    assert t4.k_for_resolution("standard") == 2
    assert t4.k_for_resolution("fine") == 4
    assert t4.k_for_resolution("superfine") == 8
    with pytest.raises(ValueError):
        t4.k_for_resolution("ultra")


def test_rtc_and_eofb_terminate_and_are_optional() -> None:
    black = edge_rows(100)
    mh = bit_string(t4.encode_black(black, "mh"))
    assert mh.rstrip("0").endswith("000000000001" * 6)
    mmr = bit_string(t4.encode_black(black, "mmr"))
    assert mmr.rstrip("0").endswith("000000000001" * 2)
    assert "000000000001" not in bit_string(t4.encode_black(black, "mmr", rtc=False))
    for coding in CODINGS:
        with_rtc = t4.encode_black(black, coding)
        without = t4.encode_black(black, coding, rtc=False)
        assert len(without) < len(with_rtc)
        for data in (with_rtc, without):
            assert np.array_equal(t4.decode_black(data, 100, coding), black)
            assert np.array_equal(t4.decode_black(data, 100, coding, height=len(black)), black)
        # Whatever follows RTC is not part of the page.
        assert np.array_equal(t4.decode_black(with_rtc + b"\x55" * 9, 100, coding), black)


def test_msb_first_is_the_bit_reversed_stream(page: Image.Image) -> None:
    crop = page.crop((0, 0, 1728, 120))
    for coding in CODINGS:
        lsb = t4.encode_image(crop, coding)
        msb = t4.encode_image(crop, coding, lsb_first=False)
        assert msb == t4.reverse_bits(lsb) and msb != lsb
        assert t4.decode_image(msb, 1728, coding, lsb_first=False).tobytes() == crop.tobytes()


def test_encoder_is_fast_enough_for_pages(page: Image.Image) -> None:
    for coding in CODINGS:
        t4.encode_image(page, coding)  # warm the code tables
        started = time.perf_counter()
        t4.encode_image(page, coding)
        assert time.perf_counter() - started < 0.5, coding


def test_encoder_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="mode"):
        t4.encode_image(Image.new("L", (10, 10)), "mh")
    with pytest.raises(ValueError, match="coding"):
        t4.encode_image(Image.new("1", (10, 10)), "jbig")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at most"):
        t4.encode_black(np.zeros((2, t4.MAX_WIDTH + 1), bool), "mh")
    with pytest.raises(ValueError, match="at most"):
        t4.encode_black(np.zeros((t4.MAX_HEIGHT + 1, 8), bool), "mmr")


# ----------------------------------------------------------------- random images


@st.composite
def bilevel_rows(draw: st.DrawFn) -> np.ndarray:
    width = draw(st.one_of(st.integers(1, 130), st.sampled_from([1728, 2600])))
    height = draw(st.integers(1, 7))
    rows = []
    for _ in range(height):
        kind = draw(
            st.sampled_from(["runs", "white", "black", "alternate", "edges", "noise", "again"])
        )
        if kind == "runs":
            lengths = draw(st.lists(st.integers(0, 2 * width), min_size=1, max_size=12))
            row = np.repeat(np.arange(len(lengths)) % 2 == 1, lengths)[:width]
            row = np.pad(row, (0, width - len(row)), constant_values=draw(st.booleans()))
            if draw(st.booleans()):
                row = ~row
        elif kind == "white":
            row = np.zeros(width, bool)
        elif kind == "black":
            row = np.ones(width, bool)
        elif kind == "alternate":
            row = (np.arange(width) + draw(st.integers(0, 1))) % 2 == 0
        elif kind == "edges":
            row = np.zeros(width, bool)
            row[[0, width - 1]] = True
            if draw(st.booleans()):
                row = ~row
        elif kind == "noise":
            seed = draw(st.integers(0, 2**32 - 1))
            row = np.random.default_rng(seed).random(width) < draw(st.sampled_from([0.1, 0.5, 0.9]))
        else:
            row = np.roll(rows[-1], draw(st.integers(-5, 5))) if rows else np.zeros(width, bool)
        rows.append(row)
    return np.array(rows)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    black=bilevel_rows(),
    coding=st.sampled_from(CODINGS),
    k=st.integers(1, 5),
    min_bits=st.sampled_from([0, 0, 100, 1000]),
    rtc=st.booleans(),
    align=st.booleans(),
    lsb=st.booleans(),
)
def test_random_rows_round_trip(
    black: np.ndarray, coding: str, k: int, min_bits: int, rtc: bool, align: bool, lsb: bool
) -> None:
    data = t4.encode_black(
        black, coding, k=k, min_bits_per_line=min_bits, rtc=rtc, align_eol=align, lsb_first=lsb
    )
    width = black.shape[1]
    assert np.array_equal(t4.decode_black(data, width, coding, lsb_first=lsb), black)
    got = t4.decode_black(data, width, coding, lsb_first=lsb, height=len(black))
    assert np.array_equal(got, black)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    height=st.integers(250, 800),
    width=st.integers(1, 40),
    coding=st.sampled_from(CODINGS),
    k=st.integers(1, 4),
)
def test_tall_pages_round_trip_across_bands(
    seed: int, height: int, width: int, coding: str, k: int
) -> None:
    """The encoder works in bands of rows; rows on both sides of a band edge."""
    rng = np.random.default_rng(seed)
    black = np.repeat(rng.random((height // 3 + 1, width)) < 0.3, 3, axis=0)[:height]
    black[rng.integers(0, height, 20)] ^= True
    data = t4.encode_black(black, coding, k=k, min_bits_per_line=50, align_eol=True)
    assert np.array_equal(t4.decode_black(data, width, coding), black)


# ----------------------------------------------------------------- hostile data


@settings(max_examples=300, deadline=2000)
@given(data=st.binary(max_size=400), coding=st.sampled_from(CODINGS), width=st.integers(1, 1728))
def test_garbage_decodes_or_raises_t4_error(data: bytes, coding: str, width: int) -> None:
    try:
        black = t4.decode_black(data, width, coding)
    except t4.T4DecodeError:
        return
    assert black.shape[1] == width and black.shape[0] >= 1


@settings(max_examples=150, deadline=2000)
@given(
    black=bilevel_rows(), coding=st.sampled_from(CODINGS), cut=st.floats(0, 1), flip=st.integers()
)
def test_truncated_or_corrupted_data_raises_t4_error(
    black: np.ndarray, coding: str, cut: float, flip: int
) -> None:
    data = t4.encode_black(black, coding)
    width = black.shape[1]
    truncated = data[: int(len(data) * cut)]
    try:
        got = t4.decode_black(truncated, width, coding, height=len(black))
    except t4.T4DecodeError:
        pass
    else:  # only RTC/EOFB or padding was cut off
        assert np.array_equal(got, black)
    corrupted = bytearray(data)
    corrupted[flip % len(data)] ^= 1 << (flip // len(data) % 8)
    try:
        got = t4.decode_black(bytes(corrupted), width, coding)
    except t4.T4DecodeError:
        return
    assert got.shape[1] == width


def test_endless_stream_of_short_lines_is_capped() -> None:
    started = time.perf_counter()
    with pytest.raises(t4.T4DecodeError, match="more than"):
        t4.decode_black(b"\xff" * 4000, 1728, "mmr")  # 32000 one-bit V0 lines
    assert time.perf_counter() - started < 5
    with pytest.raises(t4.T4DecodeError, match="more than 10 rows"):
        t4.decode_black(b"\xff" * 4000, 1728, "mmr", max_height=10)


def test_megabytes_of_fill_are_skipped_quickly() -> None:
    black = edge_rows(1728)[:3]
    data = t4.encode_black(black, "mr", min_bits_per_line=4_000_000)
    assert len(data) > 1_000_000
    started = time.perf_counter()
    assert np.array_equal(t4.decode_black(data, 1728, "mr"), black)
    with pytest.raises(t4.T4DecodeError):
        t4.decode_black(bytes(3_000_000) + b"\x01\x02\x03", 1728, "mh")
    assert time.perf_counter() - started < 3


def test_specific_errors() -> None:
    with pytest.raises(t4.T4DecodeError, match="no image rows"):
        t4.decode_black(b"\0\0\0", 1728, "mh")
    with pytest.raises(t4.T4DecodeError, match="without EOL"):
        t4.decode_black(b"\xff\xff", 1728, "mr")
    one_line = t4.encode_black(np.zeros((1, 1728), bool), "mh", rtc=False)
    with pytest.raises(t4.T4DecodeError, match="only 1 of 3 rows"):
        t4.decode_black(one_line, 1728, "mh", height=3)
    # A white run of 1728 in a 100-pixel line.
    with pytest.raises(t4.T4DecodeError, match="more than the width"):
        t4.decode_black(one_line, 100, "mh")
