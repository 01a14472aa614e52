"""faxgate.render: PDF, images and text to fax pages; geometry, bilevel,
header, cover, limits. Office formats are in test_render_office.py."""

from __future__ import annotations

import io
import threading
import time
from datetime import datetime

import docs_factory as docs
import numpy as np
import pypdf
import pytest
from PIL import Image, ImageDraw

from faxgate.errors import ConfigError
from faxgate.render import (
    CorruptDocument,
    CoverInfo,
    Document,
    DocumentTooLarge,
    EncryptedDocument,
    HeaderInfo,
    PageLimitExceeded,
    RenderError,
    RenderOptions,
    UnsupportedDocument,
    fonts,
    render_cover_page,
    render_documents,
    render_with_sources,
)
from faxgate.render.geometry import PageGeometry
from faxgate.render.pdf import render_pdf
from faxgate.render.text import paginate, render_text, wrap

WHEN = datetime(2026, 12, 4, 9, 30)
#: A character Noto CJK has no glyph for: it draws the missing-glyph box.
MISSING = "\U0010fffd"


def render(*documents: Document, **options) -> list:
    options.setdefault("workers", 1)
    return render_documents(list(documents), RenderOptions(**options))


def black(image: Image.Image) -> np.ndarray:
    """True where a mode "1" page is black."""
    return ~np.asarray(image)


def content_box(image: Image.Image) -> tuple[int, int, int, int]:
    rows = np.flatnonzero(black(image).any(axis=1))
    cols = np.flatnonzero(black(image).any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def frame_intact(image: Image.Image) -> bool:
    """The PDF's border frame shows on all four sides: nothing was cropped."""
    left, top, right, bottom = content_box(image)
    ink = black(image)[top:bottom, left:right]
    return bool(
        ink[:3].mean() > 0.9
        and ink[-3:].mean() > 0.9
        and ink[:, :3].mean() > 0.9
        and ink[:, -3:].mean() > 0.9
    )


# ------------------------------------------------------------------ geometry


@pytest.mark.parametrize(
    ("resolution", "paper", "height"),
    [
        ("standard", "a4", 1146),
        ("fine", "a4", 2292),
        ("superfine", "a4", 4572),
        ("standard", "letter", 1078),
        ("fine", "letter", 2156),
        ("superfine", "letter", 4301),
    ],
)
def test_page_size_for_each_resolution_and_paper(resolution, paper, height):
    (page,) = render(Document(docs.raster_pdf(), "a.pdf"), resolution=resolution, paper=paper)
    assert page.image.mode == "1"
    assert page.image.size == (1728, height)
    assert page.resolution == resolution
    assert frame_intact(page.image)


def test_a4_pdf_keeps_its_proportions_and_is_not_cropped():
    (page,) = render(Document(docs.raster_pdf(), "a4.pdf"))
    left, top, right, bottom = content_box(page.image)
    # An A4 page at 204 dpi is 1687 pixels wide: centred, full length at 196 lpi.
    assert abs((right - left) - 1687) <= 4 and abs(left - (1728 - 1687) // 2) <= 3
    assert abs((bottom - top) - 2292) <= 4
    physical_ratio = ((bottom - top) / 196) / ((right - left) / 204)
    assert abs(physical_ratio - 297 / 210) < 0.01
    assert frame_intact(page.image)


def test_landscape_page_is_turned_to_portrait():
    (page,) = render(Document(docs.landscape_pdf(), "wide.pdf"))
    left, top, right, bottom = content_box(page.image)
    assert bottom - top > right - left  # long side down the page
    assert frame_intact(page.image)
    ink = black(page.image)[top:bottom, left:right]
    width = right - left
    # The bar along the landscape page's top edge is now down the left side.
    assert ink[:, : width // 10].mean() > 0.9
    assert ink[:, width // 2 :].mean() < 0.05


def test_pdf_rotate_attribute_is_honoured():
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(docs.landscape_pdf()))
    writer.pages[0].rotate(90)  # shown portrait: nothing more to turn
    out = io.BytesIO()
    writer.write(out)
    (page,) = render(Document(out.getvalue(), "rotated.pdf"))
    left, top, right, bottom = content_box(page.image)
    ink = black(page.image)[top:bottom, left:right]
    assert bottom - top > right - left and frame_intact(page.image)
    assert ink[:, -(right - left) // 10 :].mean() > 0.9  # /Rotate 90: top edge to the right


# ------------------------------------------------------------------ PDF


def test_encrypted_pdf_is_refused_with_its_name():
    with pytest.raises(EncryptedDocument, match=r"^locked\.pdf: .*password"):
        render(Document(docs.encrypted_pdf(), "locked.pdf"))


def test_pdf_with_owner_password_only_renders():
    (page,) = render(Document(docs.encrypted_pdf(user_password=""), "restricted.pdf"))
    assert frame_intact(page.image)


def test_trailing_blank_pages_are_dropped_unless_disabled():
    pdf = docs.raster_pdf(pages=2, blank_after=2)
    assert len(render(Document(pdf, "a.pdf"))) == 2
    assert len(render(Document(pdf, "a.pdf"), drop_blank_pages=False)) == 4


def test_blank_page_in_the_middle_is_kept():
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(docs.raster_pdf(pages=1, blank_after=1)))
    writer.append(io.BytesIO(docs.raster_pdf()))
    out = io.BytesIO()
    writer.write(out)
    pages = render(Document(out.getvalue(), "gap.pdf"))
    assert [bool(black(p.image).any()) for p in pages] == [True, False, True]


def test_pdf_page_limit_checked_before_rendering():
    started = time.monotonic()
    with pytest.raises(PageLimitExceeded, match=r"^long\.pdf: .*5 pages.*limit is 3"):
        render(Document(docs.raster_pdf(pages=5), "long.pdf"), max_pages=3)
    assert time.monotonic() - started < 2


def test_page_limit_counts_the_whole_job():
    two = docs.raster_pdf(pages=2)
    with pytest.raises(PageLimitExceeded, match=r"^second\.pdf"):
        render(Document(two, "first.pdf"), Document(two, "second.pdf"), max_pages=3)


def test_damaged_pdf_is_a_clear_error():
    data = docs.raster_pdf()
    with pytest.raises((UnsupportedDocument, RenderError)) as info:
        render(Document(data[: len(data) // 3], "cut.pdf"))
    assert str(info.value).startswith("cut.pdf: ")


def test_parallel_rendering_gives_the_same_pages():
    assert threading.active_count() == 1  # else render_pdf stays in-process
    pdf = docs.raster_pdf(pages=14)
    geometry = PageGeometry("fine", "a4", header=False)
    serial = render_pdf(pdf, "a.pdf", geometry, 100, workers=1)
    parallel = render_pdf(pdf, "a.pdf", geometry, 100, workers=2)
    assert len(parallel) == 14
    assert all(a.tobytes() == b.tobytes() for a, b in zip(serial, parallel, strict=True))


def test_pdf_with_a_decompression_bomb_image_fails_fast():
    bomb = docs.pdf_with_huge_image()
    assert len(bomb) < 50_000
    started = time.monotonic()
    with pytest.raises(DocumentTooLarge, match=r"^bomb\.pdf: an image on page 1 is 100000×100000"):
        render(Document(bomb, "bomb.pdf"))
    assert time.monotonic() - started < 1.0


def test_error_in_a_forked_renderer_reaches_the_caller():
    assert threading.active_count() == 1
    writer = pypdf.PdfWriter(clone_from=io.BytesIO(docs.raster_pdf(pages=14)))
    writer.pages[13].mediabox = pypdf.generic.RectangleObject([0, 0, 20000, 20000])
    out = io.BytesIO()
    writer.write(out)
    geometry = PageGeometry("fine", "a4", header=False)
    with pytest.raises(CorruptDocument, match=r"^huge\.pdf: page 14 has an impossible size"):
        render_pdf(out.getvalue(), "huge.pdf", geometry, 100, workers=2)


# ------------------------------------------------------------------ images


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "TIFF", "JPEG"])
def test_image_formats_fill_the_page_width(fmt):
    (page,) = render(Document(docs.image_bytes(fmt), f"picture.{fmt.lower()}"))
    left, top, right, bottom = content_box(page.image)
    assert page.image.size == (1728, 2292)
    assert right - left >= 1720  # 300×400 picture without dpi: fitted to the width
    assert black(page.image)[top : top + 100, left:right].mean() > 0.9  # the bar on top


def test_jpeg_exif_orientation_is_applied():
    (page,) = render(Document(docs.jpeg_rotated_by_exif(), "phone.jpg"))
    left, top, right, bottom = content_box(page.image)
    # Upright, the only black is the bar across the top of the picture.
    assert top == 0 and right - left >= 1720 and bottom - top < 400


def test_multipage_tiff_gives_one_page_per_frame():
    pages = render(Document(docs.multipage_tiff(3), "scan.tif"))
    assert len(pages) == 3
    tops = [content_box(p.image)[1] for p in pages]
    assert tops[0] < tops[1] < tops[2]


def test_fax_tiff_is_kept_at_its_own_resolution():
    data, original = docs.fax_tiff(resolution_lpi=98)
    (page,) = render(Document(data, "received.tif"), resolution="fine")
    assert page.resolution == "standard"
    assert np.array_equal(np.asarray(page.image), np.asarray(original))


def test_grey_photo_is_dithered_not_thresholded():
    # Portrait 600×800 photo; its bottom-left third is flat mid-grey (128).
    photo = Image.open(io.BytesIO(docs.grey_photo(800, 600))).transpose(Image.Transpose.ROTATE_90)
    out = io.BytesIO()
    photo.save(out, "PNG")
    (page,) = render(Document(out.getvalue(), "photo.png"))
    left, top, right, bottom = content_box(page.image)
    ink = black(page.image)[top:bottom, left:right]
    assert 0.2 < ink.mean() < 0.8
    # ROTATE_90 put the flat block (bottom-left of the landscape) at the bottom-right.
    h, w = ink.shape
    block = ink[int(h * 0.72) : int(h * 0.95), int(w * 0.72) : int(w * 0.95)]
    assert 0.4 < block.mean() < 0.6
    # The gradient (dark left → light right in the landscape) now runs bottom → top.
    upper, lower = ink[: h // 4, : w // 2].mean(), ink[h // 2 : h * 3 // 4, : w // 2].mean()
    assert lower > upper + 0.2


def test_line_art_is_thresholded_cleanly():
    (page,) = render(Document(docs.png(400, 300), "art.png"))
    left, top, right, bottom = content_box(page.image)
    ink = black(page.image)[top:bottom, left:right]
    # The black rectangle is solid and nothing outside it is speckled.
    assert ink[5:-5, 5:-5].mean() > 0.999
    assert black(page.image).sum() == pytest.approx(ink.sum(), rel=0.001)


def test_grey_lines_stay_visible_and_grey_areas_have_no_black_rim():
    image = Image.new("L", (600, 800), 255)
    draw = ImageDraw.Draw(image)
    for y in range(50, 300, 50):
        draw.line((50, y, 550, y), fill=150, width=2)  # light grey rules
    draw.rectangle((100, 400, 500, 700), fill=170)  # a shaded box
    out = io.BytesIO()
    image.save(out, "PNG")
    (page,) = render(Document(out.getvalue(), "grey.png"))
    ink = black(page.image)
    scale = 1728 / 600  # fitted to the width
    for y in range(50, 300, 50):
        row = round(y * 196 / 204 * scale)
        assert ink[row - 4 : row + 5, 300:1400].any(axis=0).mean() > 0.95
    top, bottom = round(420 * 196 / 204 * scale), round(680 * 196 / 204 * scale)
    left, right = round(100 * scale), round(500 * scale)
    inside = ink[top:bottom, left + 60 : right - 60].mean()
    rim = ink[top:bottom, left + 2 : left + 12].mean()
    assert 0.2 < inside < 0.45 and abs(rim - inside) < 0.1


def test_decompression_bomb_fails_fast():
    bomb = docs.png_declaring(100_000, 100_000)
    assert len(bomb) < 2000
    started = time.monotonic()
    with pytest.raises(DocumentTooLarge, match=r"^bomb\.png: .*pixels"):
        render(Document(bomb, "bomb.png"))
    assert time.monotonic() - started < 1.0


def test_pixel_limit_is_configurable():
    with pytest.raises(DocumentTooLarge, match="2000×1000 pixels"):
        render(Document(docs.png(2000, 1000), "big.png"), max_pixels=1_000_000)


def test_pixel_budget_for_all_frames_of_a_tiff():
    # Each 600×800 frame is at the limit; 17 together are more than 16 times it.
    started = time.monotonic()
    with pytest.raises(DocumentTooLarge, match=r"^scan\.tif: its 17 pages have more than"):
        render(Document(docs.multipage_tiff(17), "scan.tif"), max_pixels=480_000)
    assert time.monotonic() - started < 1  # judged from the headers, nothing decoded


def test_tiff_page_limit_from_the_headers():
    with pytest.raises(PageLimitExceeded, match=r"^scan\.tif: more than 2 pages"):
        render(Document(docs.multipage_tiff(3), "scan.tif"), max_pages=2)


def test_damaged_image():
    data = docs.png(400, 300)
    with pytest.raises(CorruptDocument, match=r"^cut\.png: the image is damaged"):
        render(Document(data[:60], "cut.png"))


# ------------------------------------------------------------------ text


def test_wrap_counts_wide_characters_twice():
    assert wrap("中" * 50) == ["中" * 40, "中" * 10]
    assert wrap("word " * 20) == ["word " * 15 + "word", "word " * 3 + "word "]


def test_pagination_tabs_and_form_feeds():
    pages = paginate("a\tb\fsecond page\f", lines_per_page=60)
    assert pages == [["a       b"], ["second page"]]
    assert len(paginate("\n".join(["x"] * 130), lines_per_page=60)) == 3


def _glyph(char: str) -> bytes:
    image = Image.new("L", (80, 80), 255)
    ImageDraw.Draw(image).text((10, 10), char, font=fonts.mono(40), fill=0)
    return image.tobytes()


def test_notdef_premise():
    notdef = _glyph(MISSING)
    assert _glyph("\U0010fffc") == notdef  # both draw the missing-glyph box
    assert _glyph("传") not in (notdef, _glyph("真"))


@pytest.mark.parametrize("encoding", ["gbk", "gb18030", "big5", "utf-16", "utf-8"])
def test_chinese_text_is_decoded_and_drawn(encoding):
    data = docs.chinese_text(encoding)
    text = data.decode(encoding)
    pages = render(Document(data, f"{encoding}.txt"))
    reference = render(Document(text.encode("utf-8"), "utf8.txt"))
    tofu = render(Document("".join(MISSING if ord(c) > 0x2E80 else c for c in text).encode(), "x"))
    assert len(pages) == 1 and black(pages[0].image).any()
    assert np.array_equal(np.asarray(pages[0].image), np.asarray(reference[0].image))
    assert not np.array_equal(np.asarray(pages[0].image), np.asarray(tofu[0].image))


HTML_QUOTE = """<!DOCTYPE html>
<html><head><meta charset="gbk"><title>not shown</title>
<style>p { color: red }</style><script>document.write("not shown")</script></head>
<body><h1>报价单 &amp; Quote</h1><p>Dear   customer,<br>please see below.</p>
<table><tr><th>Item</th><th>Price</th></tr><tr><td>纸 A4</td><td>&yen;12</td></tr></table>
<ul><li>one</li><li>two</li></ul><pre>keep   these
  spaces</pre></body></html>"""
HTML_AS_TEXT = (
    "报价单 & Quote\n\nDear customer,\nplease see below.\n\nItem\tPrice\n纸 A4\t¥12\n\n"
    "• one\n• two\n\nkeep   these\n  spaces\n"
)


def test_html_attachment_is_faxed_as_its_text_not_its_markup():
    from faxgate.render.htmltext import html_to_text

    assert html_to_text(HTML_QUOTE) == HTML_AS_TEXT
    pages = render(Document(HTML_QUOTE.encode("gbk"), "quote.html"))  # charset from <meta>
    as_text = render(Document(HTML_AS_TEXT.encode("utf-8"), "quote.txt"))
    (markup,) = render_text(HTML_QUOTE, "quote.txt", RenderOptions().geometry, 5)
    assert len(pages) == 1 and black(pages[0].image).any()
    assert np.array_equal(np.asarray(pages[0].image), np.asarray(as_text[0].image))
    assert not np.array_equal(np.asarray(pages[0].image), np.asarray(markup))


def test_declared_charset_wins():
    text = "Ünïcödé façade 1234"
    as_latin1 = render(Document(text.encode("latin-1"), "a.txt", charset="iso-8859-1"))
    as_utf8 = render(Document(text.encode("utf-8"), "b.txt"))
    assert np.array_equal(np.asarray(as_latin1[0].image), np.asarray(as_utf8[0].image))


def test_text_page_limit():
    with pytest.raises(PageLimitExceeded, match=r"^long\.txt: .*more than 3 pages"):
        render(Document(b"line\n" * 500, "long.txt"), max_pages=3)


def test_huge_text_stops_at_the_page_limit_quickly():
    started = time.monotonic()
    with pytest.raises(PageLimitExceeded):
        render(Document("传真 fax line\t".encode() * 2_000_000, "huge.txt"), max_pages=100)
    assert time.monotonic() - started < 3


def test_whitespace_only_text_gives_one_page():
    assert len(render(Document(b"   \n\n  \n", "empty.txt"))) == 1


# ------------------------------------------------------------------ header and cover


def _band(page) -> np.ndarray:
    return black(page.image)[: round(0.16 * page.lines_per_inch)]


def test_header_on_every_page_with_page_numbers():
    header = HeaderInfo("+86 755 1234567", "张三", WHEN)
    pages = render(Document(docs.raster_pdf(pages=2), "a.pdf"), header=header)
    first, second = (_band(p) for p in pages)
    assert first.any() and second.any()
    assert not np.array_equal(first, second)  # "Page 1/2" versus "Page 2/2"
    left, top, right, bottom = content_box(pages[0].image)
    assert frame_intact(pages[0].image.crop((0, len(first) + 1, 1728, pages[0].image.height)))


def test_header_template_fields():
    header = HeaderInfo("+86 755 1234567", "张三 <zhang@example.cn>", WHEN)
    assert (
        header.text(2, 5) == "+86 755 1234567  张三 <zhang@example.cn>  2026-12-04 09:30  Page 2/5"
    )
    custom = HeaderInfo(
        "8675512", "li", WHEN, template="{date}|{time}|{sender}|{station_id}|{page}"
    )
    assert custom.text(3, 3) == "2026-12-04|09:30|li|8675512|3"


def test_header_shows_chinese_sender():
    pdf = Document(docs.raster_pdf(), "a.pdf")
    named = render(pdf, header=HeaderInfo("1", "张三", WHEN))[0]
    tofu = render(pdf, header=HeaderInfo("1", MISSING * 2, WHEN))[0]
    assert not np.array_equal(_band(named), _band(tofu))


def test_header_template_with_unknown_field_is_a_config_error():
    with pytest.raises(ConfigError, match="header_template"):
        HeaderInfo(template="{nonsense}").text(1, 1)


def test_cover_page_comes_first_and_counts():
    cover = CoverInfo("李四", "采购部", "张三 <zhang@example.com>", "+86 755 1", WHEN, "请查收。\n")
    labelled = render_with_sources(
        [Document(docs.raster_pdf(pages=2), "a.pdf")],
        RenderOptions(cover=cover, header=HeaderInfo("1", "张三", WHEN), workers=1),
    )
    assert [source for source, _ in labelled] == ["(cover page)", "a.pdf", "a.pdf"]
    assert black(labelled[0][1].image).mean() > 0.005


def test_cover_page_draws_chinese_and_truncates_long_comments():
    options = RenderOptions()
    named = render_cover_page(CoverInfo("李四", "采购部", "张三", when=WHEN), options, 3)
    tofu = render_cover_page(
        CoverInfo(MISSING * 2, MISSING * 3, MISSING * 2, when=WHEN), options, 3
    )
    assert not np.array_equal(np.asarray(named.image), np.asarray(tofu.image))
    long_body = render_cover_page(CoverInfo("A", comment="line\n" * 500, when=WHEN), options, 1)
    assert long_body.image.size == (1728, 2292)
    assert black(long_body.image)[-100:].sum() == 0  # bottom margin kept


def test_huge_sender_and_names_are_cut_to_the_line_quickly():
    # The From: display name reaches the header band and the cover page: 100 KB of it
    # took minutes per page (quadratic shortening) and a 150-megapixel text image.
    from faxgate.render import fonts
    from faxgate.render.header import fit_text, stamp

    font = fonts.sans(40)
    started = time.monotonic()
    cut = fit_text("张" * 100_000, font, 1600)
    assert cut.endswith("…") and font.getlength(cut) <= 1600
    assert font.getlength(cut[:-1] + "张…") > 1600  # the longest beginning that fits
    page = render_cover_page(
        CoverInfo("名" * 100_000, "x" * 100_000, "张" * 100_000, when=WHEN), RenderOptions(), 2
    )
    stamp(page, "+86 1  " + "张" * 100_000)
    assert page.image.size == (1728, 2292)
    assert time.monotonic() - started < 3
    assert fit_text("short", font, 1600) == "short"
    for text in ("张三 <zhang@example.cn> " * 8, "W" * 300, "a\u200bb" * 900):
        cut = fit_text(text, font, 700)
        assert font.getlength(cut) <= 700 and text.startswith(cut[:-1])


def test_documents_in_order_with_sources():
    labelled = render_with_sources(
        [
            Document(docs.raster_pdf(pages=2), "first.pdf"),
            Document(docs.image_bytes("PNG"), "second.png"),
            Document("第三".encode(), "third.txt"),
        ],
        RenderOptions(workers=1),
    )
    assert [s for s, _ in labelled] == ["first.pdf", "first.pdf", "second.png", "third.txt"]


def test_options_from_config():
    from faxgate import config

    cfg = config.Config()
    options = RenderOptions.from_config(cfg, sender="a@example.com", when=WHEN)
    assert options.max_pages == cfg.limits.max_pages
    assert options.header is not None and options.header.station_id == cfg.fax.station_id
    assert options.cover is None  # render.cover_page is off by default
    assert "Page 2/5" in options.header.text(2, 5)
