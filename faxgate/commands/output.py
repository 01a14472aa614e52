"""Output helpers shared by the admin commands: aligned, CJK-width-aware tables
for people (control characters from hostile input never reach the terminal),
``--json`` for scripts with times as ISO 8601, and the store the ``--config``
option names."""

from __future__ import annotations

import argparse
import json
import unicodedata
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from faxgate.store import Store

# Keys of to_dict() output holding UNIX times; shown as ISO 8601 in CLI output.
TIME_KEYS = frozenset(
    {"created", "updated", "time", "receipt_sent_at", "next_try", "added", "applied"}
)


def open_store(args: argparse.Namespace) -> Store:
    """The store named by the configuration given with ``--config``."""
    from faxgate import config
    from faxgate.store import Store

    return Store.open(config.load(args.config))


def iso_time(value: float | None) -> str | None:
    if value is None:
        return None
    return datetime.fromtimestamp(value).astimezone().isoformat(timespec="seconds")


def table_time(value: float | None) -> str:
    if value is None:
        return "-"
    return datetime.fromtimestamp(value).strftime("%Y-%m-%d %H:%M:%S")


def json_ready(data: Any) -> Any:
    """``to_dict()`` output with UNIX times turned into ISO 8601 strings."""
    if isinstance(data, dict):
        return {
            key: iso_time(value)
            if key in TIME_KEYS and isinstance(value, int | float)
            else json_ready(value)
            for key, value in data.items()
        }
    if isinstance(data, list | tuple):
        return [json_ready(item) for item in data]
    return data


def print_json(data: Any) -> None:
    print(json.dumps(json_ready(data), ensure_ascii=False, indent=2))


def display_width(text: str) -> int:
    """Terminal columns: CJK wide and full-width characters take two."""
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def clip(text: str, width: int) -> str:
    """Shorten ``text`` to at most ``width`` columns, marking the cut with '…'."""
    if display_width(text) <= width:
        return text
    out, used = [], 0
    for ch in text:
        w = display_width(ch)
        if used + w > width - 1:
            break
        out.append(ch)
        used += w
    return "".join(out) + "…"


def cell(value: Any) -> str:
    """One table cell; control characters from hostile input never reach the terminal."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    text = str(value)
    return "".join("?" if unicodedata.category(ch) in ("Cc", "Cf") else ch for ch in text)


def render_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Columns aligned by display width, a dashed rule under the header."""
    grid = [list(headers)] + [[cell(v) for v in row] for row in rows]
    widths = [max(display_width(r[i]) for r in grid) for i in range(len(headers))]
    lines = []
    for n, row in enumerate(grid):
        padded = [text + " " * (widths[i] - display_width(text)) for i, text in enumerate(row)]
        lines.append("  ".join(padded).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_fields(pairs: Sequence[tuple[str, Any]]) -> str:
    """``key  value`` lines, keys aligned, for one object."""
    width = max(display_width(key) for key, _ in pairs)
    return "\n".join(f"{key.ljust(width)}  {cell(value)}".rstrip() for key, value in pairs)


def json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts")
