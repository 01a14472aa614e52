"""``faxgate demo`` run as a user would run it, twice in the same work directory.

Checks the outcome, not the output's wording: the far end received both faxes
with every page, exactly one receipt reached the demo sender's mailbox, the
job is done in the store, and nothing the demo started is left running. The
second run must start from a clean state (one job, one receipt, two calls).
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from faxgate.demo import EXPECTED_PAGES, SUBJECT
from faxgate.simline import read_sidecars

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not Path("/usr/sbin/postfix").exists(),
    reason="the demo runs a private Postfix, which needs root",
)

FAXGATE = Path(sys.executable).with_name("faxgate")


def faxgate(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(FAXGATE), *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def processes_naming(path: Path) -> list[int]:
    """PIDs whose command line mentions ``path`` (what the demo started there)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if str(path).encode() in (proc / "cmdline").read_bytes():
                found.append(int(proc.name))
        except OSError:
            continue
    return found


def check_outcome(workdir: Path, stdout: str) -> None:
    result = json.loads((workdir / "demo-result.json").read_text())
    job_id = result["job_id"]
    assert result["pages_expected"] == EXPECTED_PAGES == 3

    calls = read_sidecars(workdir / "far-end")
    assert len(calls) == 2, calls
    assert sorted(c.json["dialled"] for c in calls) == ["010666666", "83235170"]
    assert all(c.ok and c.pages == EXPECTED_PAGES for c in calls), calls
    for call in calls:
        assert len(call.images()) == EXPECTED_PAGES
    previews = [Path(p) for fax in result["faxes"] for p in fax["previews"]]
    assert len(previews) == 2 * EXPECTED_PAGES
    for preview in previews:
        with Image.open(preview) as image:
            assert image.format == "PNG" and image.width == 1728

    receipts = sorted((workdir / "mailbox").glob("*.eml"))
    assert len(receipts) == 1, receipts
    receipt = email.message_from_bytes(receipts[0].read_bytes(), policy=email.policy.default)
    assert receipt["X-Faxgate-Job"] == job_id
    assert receipt["To"] == "demo@example.test"
    assert receipt["Subject"] == f"Fax sent: {SUBJECT}"
    assert str(receipts[0]) == result["receipt_path"] and str(receipts[0]) in stdout

    config_path = str(workdir / "faxgate.toml")
    shown = faxgate("--config", config_path, "jobs", "show", "--json", job_id)
    assert shown.returncode == 0, shown.stderr
    job = json.loads(shown.stdout)
    assert job["state"] == "done" and job["receipt_state"] == "sent"
    assert [(r["state"], r["pages_confirmed"]) for r in job["recipients"]] == [
        ("sent", EXPECTED_PAGES),
        ("sent", EXPECTED_PAGES),
    ]
    listed = faxgate("--config", config_path, "jobs", "list", "--json")
    assert [j["id"] for j in json.loads(listed.stdout)] == [job_id], "state of an earlier run"
    assert f"job         {job_id}" in stdout  # the `faxgate jobs show` part of the report
    assert processes_naming(workdir) == [], "the demo left processes running"


def test_demo_twice_in_the_same_workdir(tmp_path: Path) -> None:
    workdir = tmp_path / "demo"
    first_job = None
    for _ in range(2):
        done = subprocess.run(
            [str(FAXGATE), "demo", "--workdir", str(workdir)],
            capture_output=True,
            text=True,
            timeout=200,
            check=False,
        )
        assert done.returncode == 0, f"{done.stdout}\n{done.stderr}"
        check_outcome(workdir, done.stdout)
        job_id = json.loads((workdir / "demo-result.json").read_text())["job_id"]
        assert job_id != first_job
        first_job = job_id


def test_demo_refuses_bad_options(tmp_path: Path) -> None:
    done = faxgate("demo", "--workdir", str(tmp_path), "--pacing", "0")
    assert done.returncode == 2 and "--pacing" in done.stderr
    assert not (tmp_path / "faxgate.toml").exists()
