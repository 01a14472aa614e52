"""``faxgate senders``: exit codes 0/1/2, tables for people, JSON for scripts."""

from __future__ import annotations

import io
import json
import re
import sqlite3
from pathlib import Path

import pytest

from faxgate.cli import main
from faxgate.commands.output import display_width, render_table
from faxgate.store import Store


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "faxgate.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "db" / "faxgate.db"}"\n', encoding="utf-8")
    return path


def run(cfg: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["--config", str(cfg), *argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def sender_rows(cfg: Path) -> list[tuple]:
    db = cfg.parent / "db" / "faxgate.db"
    return sqlite3.connect(db).execute("SELECT * FROM senders ORDER BY email").fetchall()


def test_add_show_list_as_json(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        cfg, capsys, "senders", "add", "Alice@Example.com", "--name", "张三",
        "--login", "alice", "--max-pages", "20", "--jobs-per-day", "5",
        "--destinations", "international", "--allow-premium", "--language", "zh", "--json",
    )  # fmt: skip
    assert code == 0
    added = json.loads(out)
    assert added["email"] == "alice@example.com" and added["name"] == "张三"
    assert (added["max_pages"], added["jobs_per_day"], added["max_recipients"]) == (20, 5, None)
    assert (added["destinations"], added["allow_premium"], added["language"]) == (
        "international",
        True,
        "zh",
    )
    assert added["created"].startswith("20") and "T" in added["created"]  # ISO 8601
    code, out, _ = run(cfg, capsys, "senders", "show", "ALICE@example.COM", "--json")
    assert code == 0 and json.loads(out) == added
    run(cfg, capsys, "senders", "add", "bob@example.com", "--disabled", "--no-fax")
    code, out, _ = run(cfg, capsys, "senders", "list", "--json")
    listed = json.loads(out)
    assert [s["email"] for s in listed] == ["alice@example.com", "bob@example.com"]
    assert (listed[1]["enabled"], listed[1]["can_fax"]) == (False, False)


def test_list_table_is_aligned_with_cjk_names(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(cfg, capsys, "senders", "add", "alice@example.com", "--name", "金恒科技 张三")
    run(cfg, capsys, "senders", "add", "bob@example.com", "--name", "Bob", "--max-pages", "9")
    code, out, _ = run(cfg, capsys, "senders", "list")
    assert code == 0
    header, rule, alice, bob = out.splitlines()[:4]
    assert "alice@example.com" in alice and "-/9/-" in bob
    enabled_col = display_width(header[: header.index("ENABLED")])
    for line in (alice, bob):
        before_yes = line[: line.index("yes")]
        assert display_width(before_yes) == enabled_col, line


def test_render_table_pads_by_display_width_and_strips_control_chars() -> None:
    table = render_table(("A", "B"), [("宽字", "x"), ("abcd", "\x1b[31mred")])
    lines = table.splitlines()
    assert [display_width(line[: line.rindex(" ") + 1]) for line in lines[2:]] == [6, 6]
    assert "\x1b" not in table and "?[31mred" in table


@pytest.mark.parametrize(
    "argv",
    [
        ("senders", "add", "not-an-address"),
        ("senders", "add", "a@example.com", "--max-pages", "0"),
        ("senders", "add", "a@example.com", "--name", "two\nlines"),
        ("senders", "add", "a@example.com", "--login", "with space"),
    ],
)
def test_bad_input_exits_2_without_a_row(
    cfg: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    code, out, err = run(cfg, capsys, *argv)
    assert code == 2
    assert err.startswith("faxgate: ") and out == ""
    assert sender_rows(cfg) == []


@pytest.mark.parametrize(
    "argv",
    [
        ("senders", "add", "a@example.com", "--max-pages", "ten"),
        ("senders", "add", "a@example.com", "--destinations", "mars"),
        ("senders", "add"),
        ("senders", "frobnicate"),
    ],
)
def test_usage_errors_exit_2(
    cfg: Path, capsys: pytest.CaptureFixture[str], argv: tuple[str, ...]
) -> None:
    code, _, err = run(cfg, capsys, *argv)
    assert code == 2 and "usage:" in err


def test_duplicate_add_exits_2_and_keeps_the_first(
    cfg: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(cfg, capsys, "senders", "add", "a@example.com", "--name", "First")[0] == 0
    code, _, err = run(cfg, capsys, "senders", "add", "A@EXAMPLE.COM", "--name", "Second")
    assert code == 2 and "already exists" in err
    assert [row[:2] for row in sender_rows(cfg)] == [("a@example.com", "First")]


def test_not_found_exits_1(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for action in ("show", "enable", "disable", "remove"):
        code, _, err = run(cfg, capsys, "senders", action, "ghost@example.com")
        assert code == 1, action
        assert "no sender ghost@example.com" in err


def test_enable_disable_set_remove(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(cfg, capsys, "senders", "add", "a@example.com", "--max-pages", "5", "--login", "a")
    assert run(cfg, capsys, "senders", "disable", "a@example.com")[0] == 0
    store = Store(cfg.parent / "db" / "faxgate.db")
    assert store.get_sender("a@example.com").enabled is False
    assert run(cfg, capsys, "senders", "enable", "A@example.com")[0] == 0
    assert store.get_sender("a@example.com").enabled is True
    code, out, _ = run(
        cfg, capsys, "senders", "set", "a@example.com", "--max-pages", "default",
        "--max-recipients", "3", "--no-login", "--no-fax", "--language", "en", "--json",
    )  # fmt: skip
    assert code == 0
    changed = json.loads(out)
    assert (changed["max_pages"], changed["max_recipients"], changed["smtp_login"]) == (
        None,
        3,
        None,
    )
    assert (changed["can_fax"], changed["language"], changed["enabled"]) == (False, "en", True)
    code, _, _ = run(cfg, capsys, "senders", "set", "a@example.com", "--max-recipients", "-4")
    assert code == 2
    assert store.get_sender("a@example.com").max_recipients == 3
    code, out, _ = run(cfg, capsys, "senders", "remove", "a@example.com")
    assert code == 0 and "removed sender a@example.com" in out
    assert store.get_sender("a@example.com") is None


def test_import_from_csv(cfg: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    good = tmp_path / "senders.csv"
    good.write_text(
        "\ufeffemail,name,enabled,can_fax,smtp_login,max_recipients,max_pages,jobs_per_day,"
        "destinations,allow_premium,language\n"
        "alice@example.com,Alice 张,yes,yes,alice,5,10,20,local,no,zh\n"
        "bob@example.com,Bob,no,,,,,,,,\n",
        encoding="utf-8",
    )
    code, out, _ = run(cfg, capsys, "senders", "import", str(good))
    assert code == 0 and "imported 2 sender(s)" in out
    code, out, _ = run(cfg, capsys, "senders", "show", "alice@example.com", "--json")
    assert json.loads(out)["destinations"] == "local"

    before = sender_rows(cfg)
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "email,name,max_pages\ncarol@example.com,Carol,3\nbob@example.com,Bob,lots\n",
        encoding="utf-8",
    )
    code, _, err = run(cfg, capsys, "senders", "import", str(bad))
    assert code == 2
    assert f"{bad} line 3, column 3 (max_pages)" in err
    assert sender_rows(cfg) == before

    code, _, err = run(cfg, capsys, "senders", "import", str(tmp_path / "missing.csv"))
    assert code == 2 and "cannot read" in err

    gbk = tmp_path / "gbk.csv"
    gbk.write_bytes("email,name\nd@example.com,张三\n".encode("gbk"))
    code, _, err = run(cfg, capsys, "senders", "import", str(gbk))
    assert code == 2 and "UTF-8" in err
    assert sender_rows(cfg) == before


def test_config_error_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(tmp_path / "absent.toml", capsys, "senders", "list")
    assert code == 2 and "not found" in err


def test_show_as_a_table_for_people(cfg: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(cfg, capsys, "senders", "add", "a@example.com", "--name", "张三", "--jobs-per-day", "0")
    code, out, _ = run(cfg, capsys, "senders", "show", "A@example.com")
    assert code == 0
    fields = dict(re.fullmatch(r"(.+?)  +(.*)", line).groups() for line in out.splitlines())
    assert fields["email"] == "a@example.com" and fields["name"] == "张三"
    assert (fields["enabled"], fields["fax permission"], fields["SMTP login"]) == (
        "yes",
        "yes",
        "-",
    )
    assert (fields["max pages"], fields["jobs per day"]) == ("default", "unlimited")
    lines = out.splitlines()
    assert len({len(ln) - len(v) for ln, v in zip(lines, fields.values(), strict=True)}) == 1


def test_import_from_stdin(
    cfg: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("email,name\nx@example.com,X\ny@example.com,Y\n"))
    code, out, _ = run(cfg, capsys, "senders", "import", "-")
    assert code == 0 and "imported 2 sender(s) from -" in out
    assert [row[:2] for row in sender_rows(cfg)] == [("x@example.com", "X"), ("y@example.com", "Y")]


def test_store_that_cannot_be_opened_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Not the admin's input but the system failing: exit 1, the message names the file."""
    cfg = tmp_path / "faxgate.toml"
    cfg.write_text(f'[store]\npath = "{tmp_path}"\n', encoding="utf-8")  # a directory
    code, out, err = run(cfg, capsys, "senders", "list")
    assert code == 1 and out == ""
    assert err.startswith(f"faxgate: {tmp_path}: cannot open the database file")
