"""Sending through a simulated line with Debian's ``efax``: the independent reference sender.

Used to show the line itself is sound and as the baseline of the line-time
benchmark. Two efax quirks matter here:

* it reads only single-strip TIFF-F (Group 3, min-is-white), so pages are
  converted with ``efix`` from PBM;
* it divides the page's byte count by its wall-clock duration in whole
  seconds, and dies with SIGFPE (exit 5) when a page takes less than one
  second. Keep ``pacing`` low enough that each page's data lasts over a
  wall second (line seconds of page data / pacing > 1).

efax moves each page vertically (a blank header band, trimmed blank rows), so
``page_matches`` compares from the first inked row.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from faxgate.errors import PermanentError

#: efax exit codes (efax(1)).
EXIT_CODES = {
    0: "success",
    1: "busy",
    2: "unrecoverable error",
    3: "invalid modem response",
    4: "no response from modem",
    5: "terminated by signal",
}
_DPI = {"standard": 98, "fine": 196}


class EfaxMissing(PermanentError):
    """efax or efix is not installed (Debian package efax)."""


@dataclass(frozen=True)
class EfaxResult:
    returncode: int
    log: str

    @property
    def outcome(self) -> str:
        return EXIT_CODES.get(self.returncode, f"exit {self.returncode}")


def write_tiff_f(image: Image.Image, path: Path, resolution: str = "fine") -> Path:
    """Write one 1728-wide bilevel page as the single-strip TIFF-F efax reads."""
    if resolution not in _DPI:
        raise ValueError(f"efax sends standard or fine pages, not {resolution!r}")
    pbm = path.with_suffix(".pbm")
    image.convert("1").save(pbm)
    dpi = f"204x{_DPI[resolution]}"
    try:
        with path.open("wb") as out:
            subprocess.run(
                ["efix", "-i", "pbm", "-o", "tiffg3", "-R", dpi, "-r", dpi, str(pbm)],
                stdout=out,
                stderr=subprocess.DEVNULL,
                check=True,
            )
    except FileNotFoundError as exc:
        raise EfaxMissing("efix not found: install the Debian package efax") from exc
    finally:
        pbm.unlink(missing_ok=True)
    return path


def send(
    device: str | Path,
    files: Sequence[Path],
    number: str = "5551234",
    ident: str = "+1 555 0100",
    timeout: float = 120,
) -> EfaxResult:
    """Dial ``number`` with efax on ``device`` and send ``files`` (TIFF-F, one page each)."""
    command = ["efax", "-d", str(device), "-o1", "-l", ident, "-h", "", "-v", "ewin"]
    command += ["-t", number, *map(str, files)]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    except FileNotFoundError as exc:
        raise EfaxMissing("efax not found: install the Debian package efax") from exc
    return EfaxResult(done.returncode, done.stdout + done.stderr)


def _inked_rows(image: Image.Image) -> np.ndarray:
    """Black pixels (True = black) from the first to the last row with any ink."""
    black = ~np.asarray(image.convert("1"), dtype=bool)
    inked = np.flatnonzero(black.any(axis=1))
    return black[inked[0] : inked[-1] + 1] if inked.size else black[:0]


def page_matches(received: Image.Image, sent: Image.Image) -> bool:
    """True when the inked rows of ``received`` equal those of ``sent`` pixel for pixel.

    efax moves a page vertically (its header band, blank-row trimming), so the
    comparison starts at the first row with ink on both sides.
    """
    got, want = _inked_rows(received), _inked_rows(sent)
    return got.shape == want.shape and bool((got == want).all())
