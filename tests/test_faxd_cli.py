"""``faxgate directory`` and ``faxgate status`` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from faxgate.cli import main


@pytest.fixture
def cfg_path(tmp_path: Path) -> str:
    path = tmp_path / "faxgate.toml"
    path.write_text(
        f'[store]\npath = "{tmp_path}/db.sqlite"\n[spool]\ndirectory = "{tmp_path}/spool"\n'
        '[fax]\nmodems = ["/dev/ttyACM0"]\n',
        encoding="utf-8",
    )
    return str(path)


def run(capsys, cfg_path: str, *argv: str) -> tuple[int, str, str]:
    code = main(["--config", cfg_path, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_directory_add_list_remove(capsys, cfg_path: str) -> None:
    code, out, _ = run(
        capsys, cfg_path, "directory", "add", "af90000098", "分公司", "In@Branch.example"
    )
    assert code == 0 and "AF90000098" in out
    code, _, err = run(capsys, cfg_path, "directory", "add", "AF90000098", "X", "x@example.com")
    assert code == 2 and "already in the directory" in err
    assert (
        run(capsys, cfg_path, "directory", "add", "AF90000098", "X", "x@y.example", "--replace")[0]
        == 0
    )
    code, out, _ = run(capsys, cfg_path, "directory", "list", "--json")
    (entry,) = json.loads(out)
    assert (entry["network"], entry["name"], entry["email"]) == ("AF90000098", "X", "x@y.example")
    code, out, _ = run(capsys, cfg_path, "directory", "list")
    assert "AF90000098" in out and "1 entry" in out
    assert run(capsys, cfg_path, "directory", "remove", "AF90000098")[0] == 0
    code, _, err = run(capsys, cfg_path, "directory", "remove", "AF90000098")
    assert code == 1 and "not in the directory" in err


def test_directory_refuses_the_gateways_own_fax_address(capsys, cfg_path: str) -> None:
    with open(cfg_path, "a", encoding="utf-8") as toml:
        toml.write('[milter]\nfax_addresses = ["fax@fax.example.com"]\n')
    code, _, err = run(capsys, cfg_path, "directory", "add", "AF1", "Loop", "<FAX@fax.example.com>")
    assert code == 2 and "is a fax address of this gateway" in err
    assert run(capsys, cfg_path, "directory", "list", "--json")[1].strip() == "[]"


def test_status_when_faxd_is_not_running(capsys, cfg_path: str) -> None:
    code, out, _ = run(capsys, cfg_path, "status")
    assert code == 1
    assert "NOT running" in out and "/dev/ttyACM0" in out and "stopped" in out
    code, out, _ = run(capsys, cfg_path, "status", "--json")
    status = json.loads(out)
    assert status["faxd"]["running"] is False
    assert status["spool"] == {"incoming": 0, "active": 0, "done": 0, "failed": 0}
