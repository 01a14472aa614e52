"""Documents to fax pages: PDF, images, text, Office, header and cover.

:func:`render_documents` turns a job's attachments into bilevel
:class:`~faxgate.faxd.page.FaxPage` objects ready for the T.4 coder;
:func:`faxgate.render.sniff.sniff` identifies an attachment without rendering it
(the milter's early check). Errors are permanent (:class:`UnsupportedDocument`,
:class:`EncryptedDocument`, :class:`RenderError` and its subclasses) and name
the file and the reason, except :class:`ConverterUnavailable` (temporary:
LibreOffice or the fonts are missing). :mod:`faxgate.render.isolated` runs
the same rendering in a child process, for callers that must survive a
decoder crashing or hanging on a hostile file.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from faxgate.faxd.page import LINES_PER_INCH, FaxPage
from faxgate.render import header as _header
from faxgate.render.bilevel import black_share
from faxgate.render.cover import CoverInfo
from faxgate.render.cover import render_cover_page as _render_cover
from faxgate.render.errors import (
    ConversionTimeout,
    ConverterUnavailable,
    CorruptDocument,
    DocumentTooLarge,
    EncryptedDocument,
    PageLimitExceeded,
    RenderError,
    UnsupportedDocument,
)
from faxgate.render.geometry import PAPER_INCHES, PageGeometry
from faxgate.render.header import DEFAULT_TEMPLATE, HeaderInfo
from faxgate.render.sniff import Sniffed, sniff

__all__ = [
    "DEFAULT_TEMPLATE",
    "ConversionTimeout",
    "ConverterUnavailable",
    "CorruptDocument",
    "CoverInfo",
    "Document",
    "DocumentTooLarge",
    "EncryptedDocument",
    "HeaderInfo",
    "PageLimitExceeded",
    "RenderError",
    "RenderOptions",
    "Sniffed",
    "UnsupportedDocument",
    "render_cover_page",
    "render_documents",
    "render_with_sources",
    "sniff",
]

#: A page with fewer black pixels than this share is blank (dust, a lone page number dot).
BLANK_BLACK_SHARE = 1e-4


@dataclass(frozen=True)
class Document:
    """One attachment; ``charset`` is the MIME part's charset parameter (text only)."""

    data: bytes
    filename: str
    charset: str | None = None


@dataclass(frozen=True)
class RenderOptions:
    """How a job is rendered. ``header`` and ``cover`` are None when not wanted;
    ``max_pages`` counts the whole job including the cover page."""

    resolution: str = "fine"
    paper: str = "a4"
    drop_blank_pages: bool = True
    max_pages: int = 100
    header: HeaderInfo | None = None
    cover: CoverInfo | None = None
    office_timeout: float = 120.0
    max_pixels: int = 80_000_000
    soffice: str = "soffice"
    #: Worker processes for long PDFs (used only by single-threaded callers).
    workers: int = min(4, os.cpu_count() or 1)

    def __post_init__(self) -> None:
        if self.resolution not in LINES_PER_INCH:
            raise ValueError(f"unknown resolution {self.resolution!r}")
        if self.paper not in PAPER_INCHES:
            raise ValueError(f"unknown paper size {self.paper!r}")

    @classmethod
    def from_config(
        cls,
        cfg: Any,
        *,
        sender: str = "",
        when: datetime | None = None,
        cover: CoverInfo | None = None,
        **overrides: Any,
    ) -> RenderOptions:
        """Options from a :class:`faxgate.config.Config`: the ``[render]`` section,
        ``limits.max_pages`` and the station id for the header. ``cover`` is used
        only when ``render.cover_page`` is on."""
        render = cfg.render
        header = None
        if render.header:
            header = HeaderInfo(
                station_id=cfg.fax.station_id,
                sender=sender,
                when=when or datetime.now().astimezone(),
                template=render.header_template,
            )
        values: dict[str, Any] = {
            "resolution": render.resolution,
            "paper": render.paper,
            "drop_blank_pages": render.drop_blank_pages,
            "max_pages": cfg.limits.max_pages,
            "header": header,
            "cover": cover if render.cover_page else None,
            "office_timeout": float(render.libreoffice_timeout),
            "max_pixels": render.max_pixels,
            "soffice": render.soffice,
        }
        values.update(overrides)
        return cls(**values)

    @property
    def geometry(self) -> PageGeometry:
        return PageGeometry(self.resolution, self.paper, header=self.header is not None)


#: Source name reported for the cover page by :func:`render_with_sources`.
COVER_SOURCE = "(cover page)"


def render_documents(inputs: Sequence[Document], options: RenderOptions) -> list[FaxPage]:
    """All pages of all documents in order, with the cover first and headers stamped.

    Raises the first document's error: one attachment that cannot be faxed
    fails the job, since a fax with a silently missing document misleads.
    """
    return [page for _, page in render_with_sources(inputs, options)]


def render_with_sources(
    inputs: Sequence[Document], options: RenderOptions
) -> list[tuple[str, FaxPage]]:
    """Like :func:`render_documents`, each page paired with the filename it came from."""
    geometry = options.geometry
    budget = options.max_pages - (1 if options.cover else 0)
    pages: list[FaxPage] = []
    sources: list[str] = []
    for document in inputs:
        remaining = budget - len(pages)
        if remaining <= 0:
            raise PageLimitExceeded(
                document.filename, f"the fax already has {options.max_pages} pages, the limit"
            )
        rendered = _render_one(document, geometry, options, remaining)
        if options.drop_blank_pages:
            rendered = _drop_trailing_blank(rendered)
        pages.extend(rendered)
        sources.extend([document.filename] * len(rendered))
    if options.cover is not None:
        pages.insert(0, _render_cover(options.cover, geometry, len(pages) + 1))
        sources.insert(0, COVER_SOURCE)
    if options.header is not None:
        for number, page in enumerate(pages, start=1):
            _header.stamp(page, options.header.text(number, len(pages)))
    return list(zip(sources, pages, strict=True))


def render_cover_page(cover: CoverInfo, options: RenderOptions, pages: int) -> FaxPage:
    """The cover page alone; ``pages`` is the total count including the cover."""
    return _render_cover(cover, options.geometry, pages)


def _render_one(
    document: Document, geometry: PageGeometry, options: RenderOptions, max_pages: int
) -> list[FaxPage]:
    content_type = f"text/plain; charset={document.charset}" if document.charset else None
    kind = sniff(document.data, document.filename, content_type)
    name = document.filename
    resolution: Any = geometry.resolution
    if kind.kind == "image":
        from faxgate.render.images import render_image

        return render_image(document.data, name, geometry, options.max_pixels, max_pages)
    if kind.kind == "text":
        from faxgate.render.charsets import decode_text
        from faxgate.render.text import render_text

        text = decode_text(document.data, kind.encoding or "utf-8")
        if kind.format == "html":
            from faxgate.render.htmltext import html_to_text

            text = html_to_text(text)
        return [
            FaxPage(image, resolution) for image in render_text(text, name, geometry, max_pages)
        ]
    from faxgate.render.pdf import render_pdf

    data = document.data
    if kind.kind == "office":
        from faxgate.render.office import convert_to_pdf

        data = convert_to_pdf(data, kind.format, name, options.soffice, options.office_timeout)
    images = render_pdf(data, name, geometry, max_pages, options.workers, options.max_pixels)
    return [FaxPage(image, resolution) for image in images]


def _drop_trailing_blank(pages: list[FaxPage]) -> list[FaxPage]:
    """Without blank pages at the end (Word's stray last page); a wholly blank
    document keeps its first page, since the sender did send it."""
    end = len(pages)
    while end > 1 and black_share(pages[end - 1].image) < BLANK_BLACK_SHARE:
        end -= 1
    return pages[:end]
