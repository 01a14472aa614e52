"""TIFF Class F: our files read pixel-exact by libtiff (Pillow, tiffinfo), files
written by libtiff (Pillow, fax2tiff) read pixel-exact by us, atomic writes and
clean errors on hostile files."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw, ImageFont, ImageOps, features

from faxgate.faxd import t4, tifff
from faxgate.faxd.page import FaxPage
from faxgate.faxd.tifff import (
    TiffFormatError,
    _single_strip_tiff,
    read_tiff_f,
    tiff_f_bytes,
    write_tiff_f,
)

FONT = "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc"
CODINGS = ("mh", "mr", "mmr")


def text_image(height: int, seed: int = 0) -> Image.Image:
    img = Image.new("1", (1728, height), 1)
    draw = ImageDraw.Draw(img)
    font = ImageFont.truetype(FONT, 26)
    for i, y in enumerate(range(40, height - 40, 38)):
        draw.text(
            (90 + seed * 7, y),
            f"{seed}/{i} faxgate 传真 TIFF Class F — 0123456789",
            font=font,
            fill=0,
        )
    draw.line((0, 0, 1727, height - 1), fill=0, width=2)
    return img


@pytest.fixture(scope="module")
def pages() -> list[FaxPage]:
    return [
        FaxPage(text_image(2292, 1), "fine"),
        FaxPage(text_image(1146, 2), "standard"),
        FaxPage(text_image(600, 3), "superfine"),
    ]


def libtiff_frames(path: Path) -> list[Image.Image]:
    frames = []
    with Image.open(path) as img:
        for i in range(img.n_frames):
            img.seek(i)
            frames.append(img.convert("1"))
    return frames


@contextlib.contextmanager
def numpy_coder() -> Iterator[None]:
    """Strips coded by our numpy coder, not libtiff: what libtiff then decodes
    is an independent check of our coder."""
    saved = tifff._libtiff
    tifff._libtiff = lambda: None
    try:
        yield
    finally:
        tifff._libtiff = saved


@pytest.mark.parametrize("coding", CODINGS)
def test_libtiff_reads_our_files_pixel_exact(
    pages: list[FaxPage], coding: str, tmp_path: Path
) -> None:
    path = tmp_path / "fax.tif"
    with numpy_coder():
        write_tiff_f(path, pages, coding)
    frames = libtiff_frames(path)
    assert [f.tobytes() for f in frames] == [p.image.tobytes() for p in pages]
    with Image.open(path) as img:
        for number, page in enumerate(pages):
            img.seek(number)
            tags = img.tag_v2
            assert tags[254] == 2 and tags[256] == 1728 and tags[257] == page.image.height
            assert tags[259] == (4 if coding == "mmr" else 3)
            assert tags[262] == 0 and tags[266] == 2 and tags[258] in (1, (1,))
            assert tags[278] == page.image.height and len(img.tag[273]) == 1
            assert float(tags[282]) == 204
            assert (
                float(tags[283]) == {"standard": 98, "fine": 196, "superfine": 391}[page.resolution]
            )
            assert tags[296] == 2 and tags[297] == (number, len(pages))
            assert tags[305] == "faxgate"
            if coding == "mmr":
                assert tags[293] == 0
            else:
                assert tags[292] == (5 if coding == "mr" else 4)  # 2D bit, fill bits
    info = subprocess.run(["tiffinfo", "-D", str(path)], capture_output=True, text=True)
    assert info.returncode == 0 and "Bad code" not in info.stderr, info.stderr
    # And back through our reader, resolutions included.
    back = read_tiff_f(path)
    assert [(p.resolution, p.image.tobytes()) for p in back] == [
        (p.resolution, p.image.tobytes()) for p in pages
    ]


def test_g3_strips_are_eol_aligned_without_rtc(pages: list[FaxPage], tmp_path: Path) -> None:
    path = tmp_path / "mr.tif"
    write_tiff_f(path, pages[1:2], "mr")
    with Image.open(path) as img:
        (offset,), (count,) = img.tag[273], img.tag[279]
    strip = path.read_bytes()[offset : offset + count]
    height = pages[1].image.height
    assert strip == t4.encode_image(pages[1].image, "mr", k=2, rtc=False, align_eol=True)
    bits = "".join(f"{b:08b}"[::-1] for b in strip)
    eol_ends = [m.end() for m in re.finditer("0{11,}1", bits)]
    assert len(eol_ends) == height  # one EOL per row, no RTC
    assert all(end % 8 == 0 for end in eol_ends)


@pytest.mark.parametrize(
    "options",
    [
        {"compression": "group4"},
        {"compression": "group3"},
        {"compression": "group3", "tiffinfo": {292: 1}},  # 2D
        {"compression": "group3", "tiffinfo": {292: 5, 266: 2}},  # 2D, fill bits, LSB first
        {"compression": "group4", "tiffinfo": {266: 2}},
    ],
)
def test_we_read_pillow_written_fax_tiffs(options: dict, tmp_path: Path) -> None:
    """Pillow's libtiff encoder: BlackIsZero, several strips, either fill order."""
    image = text_image(1500, 5)
    path = tmp_path / "pil.tif"
    image.save(path, **options)
    with Image.open(path) as saved:
        assert saved.tag_v2[262] == 1 and len(saved.tag[273]) > 1
        assert saved.tag_v2.get(266, 1) == options.get("tiffinfo", {}).get(266, 1)
    (page,) = read_tiff_f(path)
    assert page.image.tobytes() == image.tobytes()
    # Inverted, so the codec's white runs are white pixels again.
    inverted = ImageOps.invert(image.convert("L")).convert("1")
    inverted.save(path, **options)
    assert read_tiff_f(path)[0].image.tobytes() == inverted.tobytes()


@pytest.mark.parametrize("output", [["-5"], ["-6"], ["-6", "-p"], ["-8"], ["-6", "-m"]])
def test_we_read_fax2tiff_output(output: list[str], tmp_path: Path) -> None:
    """libtiff re-encodes our wire stream (1D, 2D, unaligned, G4, MSB-first)."""
    image = text_image(700, 6)
    raw = tmp_path / "page.g3"
    raw.write_bytes(t4.encode_image(image, "mh"))
    out = tmp_path / "out.tif"
    subprocess.run(
        ["fax2tiff", "-1", "-R", "98", *output, "-o", str(out), str(raw)],
        check=True,
        capture_output=True,
        timeout=20,
    )
    (page,) = read_tiff_f(out)
    assert page.resolution == "standard"
    got = t4.image_to_black(page.image)
    expected = t4.image_to_black(image)
    assert np.array_equal(got[: len(expected)], expected) and not got[len(expected) :].any()


@pytest.mark.parametrize(
    "options",
    [
        ["-B"],
        ["-B", "-c", "g4"],
        ["-c", "g3:2d:fill"],
        ["-c", "g3:1d", "-r", "64"],
        ["-c", "g4", "-f", "msb2lsb"],
    ],
)
def test_we_read_tiffcp_rewrites(pages: list[FaxPage], options: list[str], tmp_path: Path) -> None:
    """libtiff rewrites our file: big-endian, recoded, several strips, MSB first."""
    ours, theirs = tmp_path / "ours.tif", tmp_path / "theirs.tif"
    write_tiff_f(ours, pages[1:], "mr")
    subprocess.run(["tiffcp", *options, str(ours), str(theirs)], check=True, timeout=20)
    back = read_tiff_f(theirs)
    assert [(p.resolution, p.image.tobytes()) for p in back] == [
        (p.resolution, p.image.tobytes()) for p in pages[1:]
    ]


def test_resolution_variants_map_to_nearest(tmp_path: Path) -> None:
    image = Image.new("1", (1728, 50), 1)
    cases = [
        ({"dpi": (200, 100)}, "standard"),
        ({"dpi": (200, 200)}, "fine"),
        ({"dpi": (204, 391)}, "superfine"),
        ({"resolution_unit": 3, "x_resolution": 80.0, "y_resolution": 77.0}, "fine"),
        ({"resolution_unit": 3, "x_resolution": 80.0, "y_resolution": 38.5}, "standard"),
        ({"resolution_unit": 3, "x_resolution": 80.0, "y_resolution": 154.0}, "superfine"),
    ]
    for options, expected in cases:
        path = tmp_path / "r.tif"
        image.save(path, compression="group4", **options)
        assert read_tiff_f(path)[0].resolution == expected, options


def test_write_is_atomic(pages: list[FaxPage], tmp_path: Path) -> None:
    path = tmp_path / "out.tif"
    write_tiff_f(path, pages[:1], "mr")
    before = path.read_bytes()
    bad = [pages[1], FaxPage(Image.new("L", (1728, 10)), "fine")]
    with pytest.raises(ValueError, match="mode"):
        write_tiff_f(path, bad, "mr")
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]
    with pytest.raises(ValueError, match="at least one page"):
        write_tiff_f(tmp_path / "empty.tif", [], "mh")
    with pytest.raises(OSError):
        write_tiff_f(tmp_path / "missing" / "x.tif", pages[:1], "mh")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.tif"]


def test_rejects_files_that_are_not_fax_tiffs(pages: list[FaxPage], tmp_path: Path) -> None:
    path = tmp_path / "x.tif"
    path.write_bytes(b"%PDF-1.4 not a tiff")
    with pytest.raises(TiffFormatError, match="not a classic TIFF"):
        read_tiff_f(path)
    Image.new("1", (100, 10)).save(path, compression="tiff_lzw")
    with pytest.raises(TiffFormatError, match="compression 5"):
        read_tiff_f(path)
    Image.new("L", (100, 10)).save(path, compression="raw")
    with pytest.raises(TiffFormatError, match="bilevel"):
        read_tiff_f(path)
    # An IFD chain that points back at itself.
    data = bytearray(tiff_f_bytes(pages[2:], "mmr"))
    first_ifd = int.from_bytes(data[4:8], "little")
    count = int.from_bytes(data[first_ifd : first_ifd + 2], "little")
    link = first_ifd + 2 + 12 * count
    data[link : link + 4] = data[4:8]
    path.write_bytes(bytes(data))
    with pytest.raises(TiffFormatError, match="loops"):
        read_tiff_f(path)
    # Strip data cut short.
    data = tiff_f_bytes(pages[2:], "mr")
    path.write_bytes(_cut_strip(data))
    with pytest.raises(t4.T4DecodeError):
        read_tiff_f(path)


def _cut_strip(data: bytes) -> bytes:
    """Zero the second half of the first strip (data starts at offset 8)."""
    strip_end = int.from_bytes(data[4:8], "little")
    half = 8 + (strip_end - 8) // 2
    return data[:half] + bytes(strip_end - half) + data[strip_end:]


@st.composite
def random_page(draw: st.DrawFn) -> np.ndarray:
    width = draw(st.one_of(st.integers(1, 200), st.just(1728)))
    height = draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**32 - 1))
    density = draw(st.sampled_from([0.02, 0.5, 0.98]))
    black = np.random.default_rng(seed).random((height, width)) < density
    if draw(st.booleans()):  # long runs and identical rows
        black = np.repeat(black[:, : max(1, width // 16)], 16, axis=1)[:, :width]
        black = np.pad(black, ((0, 0), (0, width - black.shape[1])), mode="edge")
    return black


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(black=random_page(), coding=st.sampled_from(CODINGS))
def test_random_pages_pixel_exact_in_libtiff(
    black: np.ndarray, coding: str, tmp_path_factory
) -> None:
    width = black.shape[1]
    # libtiff's 1D decoder overflows on a row of width+1 runs when width % 32 == 0.
    runs = 1 + black[:, 0].astype(int) + (black[:, 1:] != black[:, :-1]).sum(axis=1)
    assume(not (width % 32 == 0 and (runs > width).any()))
    path = tmp_path_factory.mktemp("rand") / "p.tif"
    image = t4.black_to_image(black)
    with numpy_coder():
        write_tiff_f(path, [FaxPage(image, "fine")], coding)
    (frame,) = libtiff_frames(path)
    assert frame.tobytes() == image.tobytes()
    assert read_tiff_f(path)[0].image.tobytes() == image.tobytes()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    black=random_page(),
    coding=st.sampled_from(CODINGS),
    resolution=st.sampled_from(["standard", "fine", "superfine"]),
)
def test_libtiff_strips_are_bit_identical_to_our_coder(
    black: np.ndarray, coding: str, resolution: str
) -> None:
    """write_tiff_f lets libtiff code the strips (faster) only because they
    are the same bytes our coder writes."""
    pages = [FaxPage(t4.black_to_image(black), resolution)]
    with numpy_coder():
        ours = tiff_f_bytes(pages, coding)
    assert tiff_f_bytes(pages, coding) == ours


def test_text_pages_through_libtiff_coder_match_ours(pages: list[FaxPage]) -> None:
    for coding in CODINGS:
        with numpy_coder():
            ours = tiff_f_bytes(pages, coding)
        assert tiff_f_bytes(pages, coding) == ours, coding


@settings(max_examples=200, deadline=2000)
@given(position=st.integers(0, 10**6), value=st.integers(0, 255), cut=st.integers(0, 10**6))
def test_damaged_files_raise_value_errors_only(
    position: int, value: int, cut: int, tmp_path_factory
) -> None:
    image = Image.new("1", (64, 12), 1)
    ImageDraw.Draw(image).ellipse((5, 2, 50, 10), fill=0)
    data = bytearray(tiff_f_bytes([FaxPage(image, "fine"), FaxPage(image, "standard")], "mr"))
    data[position % len(data)] = value
    damaged = bytes(data[: max(8, len(data) - cut % 40)])
    path = tmp_path_factory.mktemp("bad") / "d.tif"
    path.write_bytes(damaged)
    try:
        pages = read_tiff_f(path)
    except (TiffFormatError, t4.T4DecodeError):
        return
    assert all(p.image.mode == "1" for p in pages)


def test_pillow_decodes_fax_tiffs_with_libtiff() -> None:
    """The cross-checks above only mean something with libtiff doing the decoding,
    and the libtiff-coder comparisons only with the system's libtiff found."""
    assert features.check("libtiff")
    assert tifff._libtiff() is not None


@pytest.mark.parametrize("coding", CODINGS)
def test_our_own_files_are_read_through_libtiff_and_proven(
    pages: list[FaxPage], coding: str, tmp_path: Path, monkeypatch
) -> None:
    """faxd reloads its pages.tif: our layout is decoded by libtiff and checked
    by re-encoding, without the slow Python decoder."""
    path = tmp_path / "fax.tif"
    write_tiff_f(path, pages, coding)

    def no_python_decoder(*args, **kwargs):
        raise AssertionError("the Python decoder was used for our own file")

    monkeypatch.setattr("faxgate.faxd.tifff.decode_packed", no_python_decoder)
    back = read_tiff_f(path)
    assert [(p.resolution, p.image.tobytes()) for p in back] == [
        (p.resolution, p.image.tobytes()) for p in pages
    ]


@pytest.mark.parametrize("coding", ["mh", "mr"])
def test_strips_not_in_our_layout_are_decoded_strictly(
    pages: list[FaxPage], coding: str, tmp_path: Path, monkeypatch
) -> None:
    """A valid strip that our encoder would not have written (extra fill before
    each EOL) cannot be proven by re-encoding, so the strict decoder reads it."""
    page = pages[1]
    strip = t4.encode_image(
        page.image, coding, k=2, min_bits_per_line=2000, rtc=False, align_eol=True
    )
    path = tmp_path / "fill.tif"
    path.write_bytes(_single_strip_tiff(strip, 1728, page.image.height, coding))
    calls = []
    real = read_tiff_f.__globals__["decode_packed"]

    def counting(*args, **kwargs):
        calls.append(args[2])
        return real(*args, **kwargs)

    monkeypatch.setattr("faxgate.faxd.tifff.decode_packed", counting)
    (back,) = read_tiff_f(path)
    assert calls == [coding]
    assert back.image.tobytes() == page.image.tobytes()


def test_our_coder_takes_over_when_libtiff_cannot_work(pages: list[FaxPage], monkeypatch) -> None:
    with numpy_coder():
        expected = tiff_f_bytes(pages, "mmr")
    attempts = []

    def no_scratch_file(*args):
        attempts.append(args)
        raise OSError(24, "Too many open files")

    monkeypatch.setattr("os.memfd_create", no_scratch_file)
    assert tiff_f_bytes(pages, "mmr") == expected
    assert len(attempts) == len(pages)
