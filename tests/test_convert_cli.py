"""``faxgate convert``: documents in, one TIFF Class F out, one line per page;
bad input exits 2 naming the file and the reason, leaving nothing behind."""

from __future__ import annotations

import re
from pathlib import Path

import docs_factory as docs
import numpy as np
import pytest
from PIL import Image, ImageSequence

from faxgate.cli import main
from faxgate.faxd.tifff import read_tiff_f
from faxgate.render import Document, RenderOptions, render_documents

LINE = re.compile(
    r"^page (\d+)/(\d+)  (.+)  (standard|fine|superfine)  1728x(\d+)  (mh|mr|mmr)  (\d+) bytes$"
)


@pytest.fixture
def inputs(tmp_path):
    files = {
        "picture.png": docs.image_bytes("PNG"),
        "中文.txt": docs.chinese_text("gbk"),
        "two.pdf": docs.raster_pdf(pages=2),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "empty.toml").write_text("")
    return tmp_path


def run(tmp_path: Path, *args: str) -> int:
    return main(["--config", str(tmp_path / "empty.toml"), "convert", *args])


def test_converts_several_documents_to_one_tiff(inputs, capsys):
    out = inputs / "fax.tif"
    names = ["picture.png", "中文.txt", "two.pdf"]
    code = run(inputs, *(str(inputs / n) for n in names), "-o", str(out), "--no-header")
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [m.group(3) for m in parsed] == ["picture.png", "中文.txt", "two.pdf", "two.pdf"]
    assert {m.group(4) for m in parsed} == {"fine"} and {m.group(6) for m in parsed} == {"mr"}
    pages = read_tiff_f(out)
    assert len(pages) == 4
    assert [int(m.group(7)) for m in parsed] == _strip_sizes(out)
    # What the file holds is exactly what the library rendered.
    expected = render_documents(
        [Document((inputs / n).read_bytes(), n) for n in names], RenderOptions(workers=1)
    )
    for got, want in zip(pages, expected, strict=True):
        assert got.resolution == "fine"
        assert np.array_equal(np.asarray(got.image), np.asarray(want.image))


def _strip_sizes(path: Path) -> list[int]:
    with Image.open(path) as tiff:
        return [sum(frame.tag_v2[279]) for frame in ImageSequence.Iterator(tiff)]


def test_resolution_paper_and_coding_options(inputs, capsys):
    out = inputs / "fax.tif"
    code = run(
        inputs,
        str(inputs / "two.pdf"),
        "-o",
        str(out),
        "--resolution",
        "standard",
        "--paper",
        "letter",
        "--coding",
        "mmr",
    )
    assert code == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    with Image.open(out) as tiff:
        assert tiff.info["compression"] == "group4"
        assert tiff.size == (1728, 1078)
        assert tuple(round(v) for v in tiff.info["dpi"]) == (204, 98)
        assert tiff.n_frames == 2
    assert {p.resolution for p in read_tiff_f(out)} == {"standard"}


def test_cover_page_and_header(inputs, capsys):
    out = inputs / "fax.tif"
    args = [
        "--cover",
        "--to",
        "李四",
        "--attn",
        "采购部",
        "--sender",
        "张三",
        "--comment",
        "请查收",
    ]
    assert run(inputs, str(inputs / "picture.png"), "-o", str(out), *args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("page 1/2  (cover page)  fine")
    first = read_tiff_f(out)[0]
    assert (~np.asarray(first.image))[:31].any()  # header band stamped


@pytest.mark.parametrize(
    ("name", "data", "reason"),
    [
        ("locked.pdf", docs.encrypted_pdf(), "password protected"),
        ("tool.exe", b"MZ\x90\x00\x03\x00\x00\x00" + bytes(300), "executable"),
        ("bomb.png", docs.png_declaring(100_000, 100_000), "pixels"),
        ("cut.png", docs.png(400, 300)[:60], "damaged"),
    ],
)
def test_bad_input_exits_2_and_writes_nothing(inputs, capsys, name, data, reason):
    (inputs / name).write_bytes(data)
    out = inputs / "fax.tif"
    code = run(inputs, str(inputs / "picture.png"), str(inputs / name), "-o", str(out))
    assert code == 2
    err = capsys.readouterr().err
    assert name in err and reason in err
    assert not out.exists()
    assert not [p for p in inputs.iterdir() if p.name.startswith(".fax.tif")]


def test_missing_input_file(inputs, capsys):
    assert run(inputs, str(inputs / "nope.pdf"), "-o", str(inputs / "fax.tif")) == 2
    err = capsys.readouterr().err
    assert "cannot read" in err and "nope.pdf" in err


def test_unwritable_output(inputs, capsys):
    code = run(inputs, str(inputs / "picture.png"), "-o", str(inputs / "no" / "dir" / "f.tif"))
    assert code == 2
    assert "cannot write" in capsys.readouterr().err


def test_windows_write_file_through_libreoffice(inputs, capsys):
    (inputs / "note.wri").write_bytes(docs.write_wri("Hello from Windows Write.\n"))
    out = inputs / "fax.tif"
    assert run(inputs, str(inputs / "note.wri"), "-o", str(out)) == 0
    assert capsys.readouterr().out.startswith("page 1/1  note.wri  fine  1728x2292  mr  ")
    assert (~np.asarray(read_tiff_f(out)[0].image)).sum() > 500
