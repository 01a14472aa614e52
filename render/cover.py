"""The optional cover page: recipient (name1, name2 from the Subject), sender,
date, page count and the mail body as the comment, in Noto CJK so Chinese
names and messages print as written."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from PIL import Image, ImageDraw

from faxgate.faxd.page import DOTS_PER_INCH_ACROSS, FaxPage
from faxgate.render import fonts
from faxgate.render.bilevel import to_bilevel
from faxgate.render.geometry import PageGeometry
from faxgate.render.header import fit_text
from faxgate.render.text import paginate

_LEFT = 120
_TITLE_EM = 110
_FIELD_EM = 40
_COMMENT_EM = 36
_COMMENT_PITCH = 44
_COMMENT_COLUMNS = 80
_TRUNCATED = "[…]"


@dataclass(frozen=True)
class CoverInfo:
    """What the cover page shows; ``comment`` is usually the mail body text."""

    name1: str = ""
    name2: str = ""
    sender: str = ""
    station_id: str = ""
    when: datetime = field(default_factory=lambda: datetime.now().astimezone())
    comment: str = ""


def render_cover_page(cover: CoverInfo, geometry: PageGeometry, pages: int) -> FaxPage:
    """One page; ``pages`` is the total page count including this cover."""
    height = round(geometry.height * DOTS_PER_INCH_ACROSS / geometry.lines_per_inch)
    canvas = Image.new("L", (geometry.width, height), 255)
    draw = ImageDraw.Draw(canvas)
    top = round(DOTS_PER_INCH_ACROSS * 0.6)
    draw.text((_LEFT, top), "FAX 传真", font=fonts.sans(_TITLE_EM, bold=True), fill=0)
    top += _TITLE_EM * 3 // 2
    rule = geometry.width - _LEFT
    draw.rectangle((_LEFT, top, rule, top + 5), fill=0)
    top += 40
    rows = [
        ("To 收件人:", cover.name1),
        ("Attn 联系人:", cover.name2),
        ("From 发件人:", cover.sender),
        ("Fax 传真号:", cover.station_id),
        ("Date 日期:", cover.when.strftime("%Y-%m-%d %H:%M")),
        ("Pages 页数:", f"{pages} (incl. cover 含封面)"),
    ]
    label_font = fonts.sans(_FIELD_EM, bold=True)
    value_font = fonts.sans(_FIELD_EM)
    for label, value in rows:
        if not value:
            continue
        draw.text((_LEFT, top), label, font=label_font, fill=0)
        value = fit_text(value, value_font, geometry.width - _LEFT - 330 - _LEFT // 2)
        draw.text((_LEFT + 330, top), value, font=value_font, fill=0)
        top += _FIELD_EM * 8 // 5
    top += 20
    draw.rectangle((_LEFT, top, rule, top + 2), fill=0)
    top += 50
    _draw_comment(draw, cover.comment, top, height - round(DOTS_PER_INCH_ACROSS * 0.6))
    page = canvas.resize((geometry.width, geometry.height), Image.Resampling.BOX)
    return FaxPage(to_bilevel(page), geometry.resolution)  # type: ignore[arg-type]


def _draw_comment(draw: ImageDraw.ImageDraw, comment: str, top: int, bottom: int) -> None:
    """The comment in the monospaced grid, cut with a mark when it does not fit."""
    if not comment.strip():
        return
    capacity = max(1, (bottom - top) // _COMMENT_PITCH)
    rows = [
        row
        for sheet in paginate(comment.replace("\f", "\n"), 10**6, _COMMENT_COLUMNS)
        for row in sheet
    ]
    while rows and not rows[-1].strip():
        rows.pop()
    if len(rows) > capacity:
        rows = rows[: capacity - 1] + [_TRUNCATED]
    font = fonts.mono(_COMMENT_EM)
    for number, row in enumerate(rows):
        draw.text((_LEFT, top + number * _COMMENT_PITCH), row, font=font, fill=0)
