"""CJK-capable fonts for text pages, headers and cover pages.

Chinese senders expect their characters on the page, not empty boxes, so
every font used here comes from Noto CJK (Debian ``fonts-noto-cjk``), looked
up through fontconfig so the face index inside the .ttc is right.
"""

from __future__ import annotations

import functools
import shutil
import subprocess

from PIL import ImageFont

from faxgate.render.errors import ConverterUnavailable

MONO_FAMILY = "Noto Sans Mono CJK SC"
SANS_FAMILY = "Noto Sans CJK SC"


@functools.cache
def _locate(family: str, style: str) -> tuple[str, int]:
    """The font file and face index fontconfig chooses for ``family:style``."""
    fc_match = shutil.which("fc-match")
    if fc_match is None:
        raise ConverterUnavailable("fc-match (fontconfig) is not installed")
    result = subprocess.run(
        [fc_match, "-f", "%{file}\n%{index}\n%{family}", f"{family}:style={style}"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    lines = result.stdout.splitlines()
    if result.returncode != 0 or len(lines) < 3 or family not in lines[2]:
        raise ConverterUnavailable(f"font {family!r} not found; install fonts-noto-cjk")
    return lines[0], int(lines[1] or 0)


@functools.cache
def font(family: str, size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """A cached font of ``size`` pixels (em height)."""
    path, index = _locate(family, "Bold" if bold else "Regular")
    return ImageFont.truetype(path, size, index=index)


def mono(size: int) -> ImageFont.FreeTypeFont:
    """Monospaced: Latin advances half an em, CJK a full em (two columns)."""
    return font(MONO_FAMILY, size)


def sans(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    return font(SANS_FAMILY, size, bold)
