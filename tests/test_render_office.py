"""Office and legacy formats through real LibreOffice: documents written by
LibreOffice itself (doc, docx, odt, rtf, xls, xlsx) and a crafted Windows
Write file; isolation, concurrency, timeouts that kill the whole converter."""

from __future__ import annotations

import concurrent.futures
import io
import time
import zipfile
from pathlib import Path

import docs_factory as docs
import numpy as np
import pypdf
import pytest

from faxgate.render import (
    ConversionTimeout,
    ConverterUnavailable,
    CorruptDocument,
    Document,
    RenderOptions,
    render_with_sources,
)
from faxgate.render.office import convert_to_pdf

FORMATS = ["doc", "docx", "odt", "rtf", "xls", "xlsx", "ods", "ppt", "pptx", "odp", "wri"]


@pytest.fixture(scope="module")
def office():
    return {fmt: path.read_bytes() for fmt, path in docs.office_documents().items()}


@pytest.fixture(scope="module")
def rendered(office):
    """Every format rendered through the public API, two conversions at a time
    (each with its own LibreOffice profile)."""

    def one(fmt: str):
        document = Document(office[fmt], f"../../etc/{fmt}-attack.{fmt}")
        return render_with_sources([document], RenderOptions(workers=1))

    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip(FORMATS, pool.map(one, FORMATS), strict=True))


@pytest.mark.parametrize("fmt", FORMATS)
def test_office_document_becomes_fax_pages(rendered, fmt):
    labelled = rendered[fmt]
    assert len(labelled) >= 1
    for source, page in labelled:
        assert source == f"../../etc/{fmt}-attack.{fmt}"  # reported, never used as a path
        assert page.image.size == (1728, 2292) and page.resolution == "fine"
    first = ~np.asarray(labelled[0][1].image)
    assert first.mean() > 0.0003  # the text is on the page (a blank page is < 0.0001)


def test_long_word_document_has_several_pages(rendered):
    assert len(rendered["doc"]) >= 2  # 40 paragraphs of English and Chinese


def test_chinese_survives_libreoffice(office):
    pdf = convert_to_pdf(office["doc"], "doc", "letter.doc")
    text = pypdf.PdfReader(io.BytesIO(pdf)).pages[0].extract_text()
    assert "传真测试" in text and docs.CHINESE[:8] in text


def test_two_concurrent_conversions_give_identical_results(office):
    with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
        first, second = pool.map(
            lambda _: convert_to_pdf(office["odt"], "odt", "a.odt", timeout=60), range(2)
        )
    pages_a = pypdf.PdfReader(io.BytesIO(first)).pages
    pages_b = pypdf.PdfReader(io.BytesIO(second)).pages
    assert len(pages_a) == len(pages_b) >= 1
    assert pages_a[0].extract_text() == pages_b[0].extract_text()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text.encode() in cmdline and state != "Z":
            found.append(int(entry.name))
    return found


def _wait_until_gone(text: str, seconds: float = 10) -> list[int]:
    deadline = time.monotonic() + seconds
    while (left := _processes_mentioning(text)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return left


def test_timeout_kills_libreoffice_and_its_children(office, tmp_path):
    started = time.monotonic()
    with pytest.raises(ConversionTimeout, match=r"^slow\.docx: .*within 0\.5 seconds"):
        convert_to_pdf(office["docx"], "docx", "slow.docx", timeout=0.5, tempdir=str(tmp_path))
    assert time.monotonic() - started < 5
    assert _wait_until_gone(str(tmp_path)) == []
    assert list(tmp_path.iterdir()) == []  # the work directory is removed


def test_hung_converter_process_group_is_killed(tmp_path):
    # A converter that hangs with a child of its own, as soffice → soffice.bin does.
    fake = tmp_path / "hung-soffice"
    fake.write_text(f"#!/bin/sh\nsleep 300 &\necho $! > {tmp_path}/child.pid\nwait\n")
    fake.chmod(0o755)
    with pytest.raises(ConversionTimeout):
        convert_to_pdf(b"{\\rtf1 x}", "rtf", "x.rtf", soffice=str(fake), timeout=1.0)
    child = int((tmp_path / "child.pid").read_text())
    deadline = time.monotonic() + 10
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_missing_libreoffice_is_a_temporary_error():
    with pytest.raises(ConverterUnavailable) as info:
        convert_to_pdf(b"{\\rtf1 x}", "rtf", "x.rtf", soffice="/nonexistent/soffice")
    assert info.value.permanent is False


def test_document_libreoffice_cannot_read(tmp_path):
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("[Content_Types].xml", "garbage<")
        archive.writestr("word/document.xml", "<<<not xml")
    with pytest.raises(CorruptDocument, match=r"^bad\.docx: LibreOffice could not read"):
        convert_to_pdf(out.getvalue(), "docx", "bad.docx", tempdir=str(tmp_path))
    assert list(tmp_path.iterdir()) == []
