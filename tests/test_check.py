"""``faxgate check`` against a good setup and against each broken part.

The good setup is real: a simulated line (``faxgate line``) as the modem, an
aiosmtpd server as the SMTP server for receipts, a temporary store and spool.
Each broken variant changes one thing in the configuration; the command must
exit 1 and the failing line must name that check.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from faxgate import config
from faxgate.checks import run_checks
from faxgate.postfix_instance import free_port
from faxgate.simline import LineOptions
from faxgate.simline.process import LineProcess

FAXGATE = Path(sys.executable).with_name("faxgate")


class Sink:
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        return "250 OK"


class Setup:
    def __init__(self, base: Path, modem: Path, smtp_port: int) -> None:
        self.base = base
        self.modem = modem
        self.smtp_port = smtp_port

    def config(self, name: str, **overrides: str) -> Path:
        """A config file; ``overrides`` replace the good values (TOML literals)."""
        values = {
            "store": f'"{self.base / "faxgate.db"}"',
            "spool": f'"{self.base / "spool"}"',
            "modems": f'["{self.modem}"]',
            "smtp_port": str(self.smtp_port),
            "starttls": '"opportunistic"',
            **overrides,
        }
        path = self.base / f"{name}.toml"
        path.write_text(
            f"""
[store]
path = {values["store"]}
[spool]
directory = {values["spool"]}
[milter]
fax_addresses = ["fax@gw.example"]
[fax]
modems = {values["modems"]}
lock_dir = "{self.base}"
[smtp]
host = "127.0.0.1"
port = {values["smtp_port"]}
starttls = {values["starttls"]}
timeout_seconds = 5.0
[receipts]
from_address = "faxgate@gw.example"
""",
            encoding="utf-8",
        )
        return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Any:
    base = tmp_path_factory.mktemp("check")
    smtp = Controller(Sink(), hostname="127.0.0.1", port=free_port())
    smtp.start()
    line = LineProcess([base / "modem0"], base / "far", LineOptions(pacing=10))
    line.start()
    try:
        yield Setup(base, base / "modem0", smtp.port)
    finally:
        line.stop()
        smtp.stop()


def faxgate_check(config_path: Path) -> tuple[int, list[str]]:
    done = subprocess.run(
        [str(FAXGATE), "--config", str(config_path), "check"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=config_path.parent,
    )
    return done.returncode, done.stdout.splitlines()


def check_lines(lines: list[str]) -> dict[str, str]:
    """Check name → its line, for the one-line-per-check part of the output."""
    found = {}
    for line in lines[:-1]:
        status, _, rest = line.partition("  ")
        name = rest.strip().split(": ", 1)[0]
        found[name] = line
        assert status in ("OK", "FAIL"), line
    return found


def test_good_setup_every_line_ok(setup: Setup) -> None:
    code, lines = faxgate_check(setup.config("good"))
    checks = check_lines(lines)
    assert code == 0, lines
    assert set(checks) == {"config", "smtp", "store", "spool", "render", f"modem {setup.modem}"}
    assert all(line.startswith("OK") for line in checks.values()), lines
    assert "Class 1 fax modem" in checks[f"modem {setup.modem}"]
    assert "no STARTTLS offered" in checks["smtp"]
    assert lines[-1] == "6 of 6 checks OK"
    assert not list(setup.base.joinpath("spool").rglob(".faxgate-check-*")), "probe files left"


@pytest.mark.parametrize(
    ("variant", "failing", "reason"),
    [
        ("missing-modem", "modem", "no such device"),
        ("smtp-down", "smtp", "refused"),
        ("unwritable-spool", "spool", "cannot create"),
    ],
)
def test_each_broken_part_fails_that_check(
    setup: Setup, variant: str, failing: str, reason: str
) -> None:
    overrides = {
        "missing-modem": {"modems": f'["{setup.base / "no-such-modem"}"]'},
        "smtp-down": {"smtp_port": str(free_port())},  # nothing listens there
        # Even root cannot create a directory below a regular file.
        "unwritable-spool": {"spool": f'"{setup.base / "a-file" / "spool"}"'},
    }[variant]
    (setup.base / "a-file").write_text("not a directory")
    code, lines = faxgate_check(setup.config(variant, **overrides))
    checks = check_lines(lines)
    assert code == 1, lines
    failed = {name: line for name, line in checks.items() if line.startswith("FAIL")}
    assert len(failed) == 1, lines
    ((name, line),) = failed.items()
    assert name.startswith(failing) and reason in line, line
    assert lines[-1].endswith(f"failed: {name}")


def test_modem_in_use_is_not_probed_and_not_a_failure(setup: Setup) -> None:
    """A UUCP lock held by a live process (a call in progress) is left alone."""
    lock = setup.base / f"LCK..{setup.modem.name}"
    lock.write_text(f"{os.getpid():10d}\n")
    try:
        code, lines = faxgate_check(setup.config("in-use"))
    finally:
        lock.unlink()
    modem_line = check_lines(lines)[f"modem {setup.modem}"]
    assert code == 0, lines
    assert modem_line.startswith("OK") and "in use, not probed" in modem_line
    assert f"process {os.getpid()}" in modem_line


def test_broken_config_file_is_one_failed_line(setup: Setup) -> None:
    path = setup.base / "typo.toml"
    path.write_text("[smtp]\nprot = 25\n", encoding="utf-8")
    code, lines = faxgate_check(path)
    assert code == 1
    assert len(lines) == 1 and lines[0].startswith(f"FAIL  config: {path}: unknown key 'smtp.prot'")


def test_starttls_required_but_not_offered(setup: Setup) -> None:
    cfg = config.load(setup.config("tls", starttls='"required"', modems="[]"))
    results = {r.name: r for r in run_checks(cfg)}
    assert not results["smtp"].ok and "does not offer STARTTLS" in results["smtp"].detail
    assert not results["config"].ok and "[fax] modems is empty" in results["config"].detail
    assert results["store"].ok and results["spool"].ok


EXAMPLE = Path(__file__).resolve().parent.parent / "deploy" / "faxgate.toml.example"


def test_example_config_lists_every_key_with_its_default() -> None:
    """deploy/faxgate.toml.example stays in step with faxgate.config.SECTIONS."""
    text = EXAMPLE.read_text(encoding="utf-8")
    assert config.parse(tomllib.loads(text)) == config.parse({})  # as shipped: all defaults
    uncommented = "\n".join(
        line[1:] if line.startswith("#") and " = " in line and not line.startswith("# ") else line
        for line in text.splitlines()
    )
    data = tomllib.loads(uncommented)
    defaults = config.parse({})
    for name, cls in config.SECTIONS.items():
        for key in dataclasses.fields(cls):
            assert key.name in data.get(name, {}), f"[{name}] {key.name} missing: {key.metadata}"
            value = data[name][key.name]
            assert value == getattr(getattr(defaults, name), key.name), f"[{name}] {key.name}"
    assert config.parse(data) == defaults  # no unknown keys, every value valid


def test_admin_guide_main_cf_lines_are_the_snippet() -> None:
    """The main.cf block in docs/admin-guide.md is deploy/postfix/main.cf.snippet's settings."""
    root = EXAMPLE.parent.parent
    snippet = [
        line
        for line in (root / "deploy" / "postfix" / "main.cf.snippet").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    guide = (root / "docs" / "admin-guide.md").read_text(encoding="utf-8")
    section = guide[guide.index("## Wiring Postfix") :]
    block = section.split("```\n", 2)[1]
    assert block.splitlines() == snippet
