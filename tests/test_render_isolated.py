"""faxgate.render.isolated: rendering in a child process, so a crashing or
hanging decoder fails the job instead of the daemon."""

from __future__ import annotations

import time
from pathlib import Path

import docs_factory as docs
import numpy as np
import pytest

from faxgate.render import (
    ConversionTimeout,
    Document,
    EncryptedDocument,
    RenderError,
    RenderOptions,
    render_with_sources,
)
from faxgate.render.isolated import render_isolated


def test_same_pages_as_in_process():
    documents = [
        Document(docs.raster_pdf(pages=2), "two.pdf"),
        Document(docs.chinese_text("big5"), "big5.txt"),
        Document(docs.grey_photo(), "photo.png"),
    ]
    options = RenderOptions(workers=1, resolution="standard")
    isolated = render_isolated(documents, options)
    local = render_with_sources(documents, options)
    assert [s for s, _ in isolated] == ["two.pdf", "two.pdf", "big5.txt", "photo.png"]
    for (_, got), (_, want) in zip(isolated, local, strict=True):
        assert got.resolution == want.resolution == "standard"
        assert got.image.mode == "1"
        assert np.array_equal(np.asarray(got.image), np.asarray(want.image))


def test_errors_come_back_with_their_class_and_file():
    with pytest.raises(EncryptedDocument) as info:
        render_isolated([Document(docs.encrypted_pdf(), "locked.pdf")], RenderOptions())
    assert info.value.filename == "locked.pdf" and "password" in info.value.reason


def _fake_soffice(tmp_path: Path, body: str) -> str:
    script = tmp_path / "soffice"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return str(script)


def test_a_crashing_renderer_is_a_render_error(tmp_path):
    # The converter kills the renderer process as a segfault would.
    soffice = _fake_soffice(tmp_path, "kill -SEGV $PPID\nsleep 5\n")
    with pytest.raises(RenderError, match=r"^note\.rtf: the renderer crashed \(signal SIGSEGV\)"):
        render_isolated([Document(b"{\\rtf1 hello}", "note.rtf")], RenderOptions(soffice=soffice))


def test_a_hanging_renderer_is_killed_with_its_children(tmp_path):
    soffice = _fake_soffice(tmp_path, f"echo $$ > {tmp_path}/pid\nexec sleep 300\n")
    options = RenderOptions(soffice=soffice, office_timeout=600)
    started = time.monotonic()
    with pytest.raises(ConversionTimeout, match="within 3 seconds"):
        render_isolated([Document(b"{\\rtf1 hello}", "slow.rtf")], options, timeout=3)
    assert time.monotonic() - started < 10
    hung = int((tmp_path / "pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(hung) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(hung)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
