"""HTML attachments → the plain text a reader sees, for the text renderer.

Mail clients attach HTML (saved web pages, exported reports); faxing the
markup itself is unreadable. Rendering HTML through a browser engine would
fetch remote images and run scripts from a hostile sender, so only the text
is kept: paragraphs, line breaks, list items and table cells become lines and
tabs, scripts and styles are dropped, entities decoded.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

#: Elements that start and end on their own line.
_LINES = frozenset(["br", "dd", "div", "dt", "li", "tr", "caption", "figcaption", "summary"])
#: Elements set off by a blank line, like paragraphs.
_PARAGRAPHS = frozenset(
    [
        "address",
        "article",
        "aside",
        "blockquote",
        "details",
        "dl",
        "fieldset",
        "figure",
        "footer",
        "form",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "header",
        "hr",
        "main",
        "nav",
        "ol",
        "p",
        "pre",
        "section",
        "table",
        "ul",
    ]
)
#: Elements whose content is not text for the reader.
_HIDDEN = frozenset(
    ["head", "script", "style", "template", "title", "noscript", "svg", "object", "iframe"]
)
_SPACES = re.compile(r"[ \t\r\n\f\v]+")
#: Break markers while collecting text; a run of them becomes one break.
_LINE, _PARAGRAPH = "\x00", "\x01"
_BREAKS = re.compile("[\x00\x01]+")


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = [_PARAGRAPH]
        self.hidden = 0
        self.pre = 0

    def _break(self, tag: str) -> None:
        self.parts.append(_PARAGRAPH if tag in _PARAGRAPHS else _LINE)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN:
            self.hidden += 1
        elif tag in ("td", "th"):
            if not self.parts[-1].endswith((_LINE, _PARAGRAPH)):
                self.parts.append("\t")
        elif tag in _LINES or tag in _PARAGRAPHS:
            self._break(tag)
            if tag == "li":
                self.parts.append("• ")
            elif tag == "hr":
                self.parts += ["-" * 40, _PARAGRAPH]
            elif tag == "pre":
                self.pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HIDDEN:  # <br/>, <hr/>: no content, so never hidden
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN:
            self.hidden = max(0, self.hidden - 1)
        elif tag in _LINES or tag in _PARAGRAPHS:
            self._break(tag)
            if tag == "pre":
                self.pre = max(0, self.pre - 1)

    def handle_data(self, data: str) -> None:
        if self.hidden or not data:
            return
        if self.pre:
            self.parts.append(data.replace("\n", _LINE))
            return
        data = _SPACES.sub(" ", data)
        if self.parts[-1].endswith((_LINE, _PARAGRAPH, "\t")):
            data = data.lstrip(" ")
        if data:
            self.parts.append(data)


def _join_breaks(match: re.Match[str]) -> str:
    return "\n\n" if _PARAGRAPH in match.group() else "\n"


def html_to_text(markup: str) -> str:
    """The visible text of ``markup``, one line per row or list item, a blank
    line between paragraphs."""
    parser = _TextExtractor()
    parser.feed(markup)
    parser.close()
    text = _BREAKS.sub(_join_breaks, "".join(parser.parts))
    lines = [line.rstrip(" ") for line in text.split("\n")]
    return "\n".join(lines).strip("\n") + "\n"
