"""``faxgate jobs list|show``: the outbox, one job with recipients and events."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from faxgate.cli import main
from faxgate.store import Store

FAXGATE = Path(sys.executable).parent / "faxgate"


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "faxgate.toml"
    path.write_text(f'[store]\npath = "{tmp_path / "faxgate.db"}"\n', encoding="utf-8")
    return path


@pytest.fixture
def store(cfg: Path) -> Store:
    with Store(cfg.parent / "faxgate.db") as st:
        yield st


def run(cfg: Path, capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    try:
        code = main(["--config", str(cfg), *argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def add_job(st: Store, job_id: str, sender: str, created: float, **fields: object) -> None:
    st.record_job(
        {
            "id": job_id,
            "sender": sender,
            "subject": fields.pop("subject", "86-755-83235170/金恒科技|张三; AF90000098"),
            "message_id": f"<{job_id}@example.com>",
            "queue_id": "4QID" + job_id[-1],
            "created": created,
            "documents": ["报价单.pdf", "scan.png"],
            "recipients": [
                {"country": "86", "area": "755", "number": "83235170", "network": None,
                 "name1": "金恒科技", "name2": "张三", "dial": "83235170", "e164": "+8675583235170"},
                {"country": None, "area": None, "number": None, "network": "AF90000098",
                 "name1": None, "name2": None, "dial": None, "e164": None},
            ],
        }
    )  # fmt: skip
    if fields:
        st.update_job(job_id, **fields)


def test_list_outbox_filters(cfg: Path, store: Store, capsys: pytest.CaptureFixture[str]) -> None:
    add_job(store, "job-1", "alice@example.com", 1000.0, state="done")
    add_job(store, "job-2", "bob@example.com", 2000.0)
    add_job(store, "job-3", "Alice@Example.com", 3000.0, state="failed")
    code, out, _ = run(cfg, capsys, "jobs", "list", "--sender", "ALICE@example.com", "--json")
    assert code == 0
    listed = json.loads(out)
    assert [j["id"] for j in listed] == ["job-3", "job-1"]
    assert listed[0]["recipients"][1]["network"] == "AF90000098"
    assert datetime.fromisoformat(listed[0]["created"]).timestamp() == 3000.0
    code, out, _ = run(cfg, capsys, "jobs", "list", "--state", "failed", "--json")
    assert [j["id"] for j in json.loads(out)] == ["job-3"]
    code, out, _ = run(cfg, capsys, "jobs", "list", "--limit", "1", "--json")
    assert [j["id"] for j in json.loads(out)] == ["job-3"]
    code, out, _ = run(cfg, capsys, "jobs", "list")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "ID", "CREATED", "SENDER", "STATE", "SENT", "PAGES", "RECEIPT", "SUBJECT"
    ]  # fmt: skip
    assert [line.split()[0] for line in lines[2:5]] == ["job-3", "job-2", "job-1"]
    assert "0/2" in lines[2] and lines[-1] == "3 job(s)"
    code, out, _ = run(cfg, capsys, "jobs", "list", "--sender", "nobody@example.com")
    assert code == 0 and out.splitlines()[-1] == "0 job(s)"


def test_show_job_with_recipients_and_events(
    cfg: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    add_job(store, "job-1", "alice@example.com", 1000.0, state="partial", pages_total=2)
    store.add_event("accepted", "2 recipients", job_id="job-1", queue_id="4QID1")
    store.add_event("dialing", "83235170", job_id="job-1", recipient_idx=0)
    store.update_recipient(
        "job-1", 0, state="failed", dials=3, tries=1, pages_confirmed=1, pages_total=2,
        last_reason="no_answer", last_error="no answer after 60 s",
    )  # fmt: skip
    store.update_recipient("job-1", 1, state="sent", route="network", pages_total=2,
                           pages_confirmed=2)  # fmt: skip
    store.add_event("failed", "no_answer", job_id="job-1", recipient_idx=0)
    store.add_event("accepted", "another job", job_id="job-2")

    code, out, _ = run(cfg, capsys, "jobs", "show", "job-1")
    assert code == 0
    assert "subject     86-755-83235170/金恒科技|张三; AF90000098" in out
    assert "documents   报价单.pdf, scan.png" in out
    recipients = out.split("recipients:\n", 1)[1].split("\n\nevents:", 1)[0].splitlines()
    assert recipients[0].split()[:3] == ["RCPT", "NAME", "NUMBER"]
    assert "86-755-83235170" in recipients[2] and "金恒科技|张三" in recipients[2]
    assert "1/2" in recipients[2] and "no_answer: no answer after 60 s" in recipients[2]
    assert "AF90000098" in recipients[3] and "network" in recipients[3] and "2/2" in recipients[3]
    events = out.split("events:\n", 1)[1].splitlines()
    assert [line.split()[2] for line in events[2:]] == ["accepted", "dialing", "failed"]
    assert "another job" not in out

    code, out, _ = run(cfg, capsys, "jobs", "show", "job-1", "--json")
    shown = json.loads(out)
    assert shown["id"] == "job-1" and shown["state"] == "partial"
    assert [r["state"] for r in shown["recipients"]] == ["failed", "sent"]
    assert [e["kind"] for e in shown["events"]] == ["accepted", "dialing", "failed"]
    assert "T" in shown["events"][0]["time"]


def test_hostile_subject_cannot_drive_the_terminal(
    cfg: Path, store: Store, capsys: pytest.CaptureFixture[str]
) -> None:
    add_job(store, "job-1", "eve@example.com", 1000.0, subject="\x1b]0;pwned\x07\x1b[2J 1234")
    for argv in (("jobs", "list"), ("jobs", "show", "job-1")):
        code, out, _ = run(cfg, capsys, *argv)
        assert code == 0 and "\x1b" not in out and "\x07" not in out


def test_exit_codes_of_the_real_command(cfg: Path, store: Store) -> None:
    add_job(store, "job-1", "alice@example.com", 1000.0)

    def faxgate(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(FAXGATE), "--config", str(cfg), *argv], capture_output=True, text=True, timeout=60
        )

    ok = faxgate("jobs", "show", "job-1", "--json")
    assert ok.returncode == 0 and json.loads(ok.stdout)["id"] == "job-1"
    missing = faxgate("jobs", "show", "job-404")
    assert missing.returncode == 1 and "no job job-404" in missing.stderr
    bad_state = faxgate("jobs", "list", "--state", "lost")
    assert bad_state.returncode == 2 and "invalid choice" in bad_state.stderr
    bad_sender = faxgate("jobs", "list", "--sender", "not an address")
    assert bad_sender.returncode == 2 and "not a valid e-mail address" in bad_sender.stderr
