"""Rendering in a child process: a decoder that crashes or hangs on a hostile
file (PDFium, image codecs and LibreOffice are C/C++ code fed by strangers)
fails that job with a clear error instead of taking the fax daemon down or
blocking it, and a poisoned job cannot crash-loop the daemon.

The parent sends the documents and options to ``python -m
faxgate.render.isolated`` (pickle: parent to child only); the child answers
in a plain format it cannot use to run code in the parent: a JSON header and
the pages' packed bits.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import struct
import subprocess
import sys
from collections.abc import Sequence

import numpy as np
from PIL import Image

from faxgate.faxd.page import FaxPage
from faxgate.render import Document, RenderOptions, render_with_sources
from faxgate.render import errors as render_errors


def render_isolated(
    inputs: Sequence[Document], options: RenderOptions, timeout: float = 600.0
) -> list[tuple[str, FaxPage]]:
    """:func:`faxgate.render.render_with_sources` in a child process, killed
    (with any LibreOffice it started) after ``timeout`` seconds."""
    names = ", ".join(document.filename for document in inputs) or "documents"
    process = subprocess.Popen(
        [sys.executable, "-m", "faxgate.render.isolated"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        output, errors = process.communicate(pickle.dumps((list(inputs), options)), timeout=timeout)
    except subprocess.TimeoutExpired:
        raise render_errors.ConversionTimeout(
            names, f"rendering did not finish within {timeout:g} seconds"
        ) from None
    finally:
        _kill_tree(process.pid)
        process.communicate()
    if process.returncode != 0 or len(output) < 4:
        how = (
            f"signal {signal.Signals(-process.returncode).name}"
            if process.returncode < 0
            else f"exit status {process.returncode}"
        )
        detail = errors.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise render_errors.RenderError(names, f"the renderer crashed ({how}) {detail[0]}".strip())
    return _decode(output, names)


def _kill_tree(pid: int) -> None:
    """Kill the renderer's process group and the groups of all its descendants
    (LibreOffice runs in a session of its own so its timeout can kill it)."""
    groups = {pid} | {_group_of(child) for child in _descendants(pid)}
    groups.discard(None)
    for group in groups:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(group, signal.SIGKILL)


def _group_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except ProcessLookupError:
        return None


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry))
    found, pending = [], [pid]
    while pending:
        for child in parents.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _decode(output: bytes, names: str) -> list[tuple[str, FaxPage]]:
    (length,) = struct.unpack_from(">I", output)
    header = json.loads(output[4 : 4 + length])
    if "error" in header:
        raise render_errors.error_from_record(header["error"], names)
    pages = []
    offset = 4 + length
    for entry in header["pages"]:
        width, height = int(entry["width"]), int(entry["height"])
        size = (width + 7) // 8 * height
        packed = np.frombuffer(output, dtype=np.uint8, count=size, offset=offset)
        offset += size
        white = np.unpackbits(packed.reshape(height, -1), axis=1, count=width).astype(bool)
        image = Image.frombuffer("1", (width, height), white, "raw", "1;8", 0, 1)
        pages.append((str(entry["source"]), FaxPage(image, entry["resolution"])))
    return pages


def _serve() -> int:
    """Child side: documents in on stdin, header and packed pages out on stdout."""
    result = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints from libraries must not corrupt the answer
    inputs, options = pickle.loads(sys.stdin.buffer.read())
    try:
        labelled = render_with_sources(inputs, options)
    except Exception as exc:  # noqa: BLE001 - every failure is reported to the parent
        _answer(result, {"error": render_errors.error_record(exc)}, [])
        return 0
    header = {
        "pages": [
            {
                "source": source,
                "resolution": page.resolution,
                "width": page.image.width,
                "height": page.image.height,
            }
            for source, page in labelled
        ]
    }
    bodies = [np.packbits(np.asarray(page.image), axis=1).tobytes() for _, page in labelled]
    _answer(result, header, bodies)
    return 0


def _answer(result, header: dict, bodies: list[bytes]) -> None:
    encoded = json.dumps(header).encode()
    result.write(struct.pack(">I", len(encoded)) + encoded)
    for body in bodies:
        result.write(body)
    result.flush()


if __name__ == "__main__":
    sys.exit(_serve())
