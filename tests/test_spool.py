"""The spool: atomic submit, dedupe, claim by rename, errors as SpoolError."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest

from faxgate.faxd import spool
from faxgate.faxd.spool import SpoolError


def _job(message_id: str = "<m1@example.com>", sender: str = "alice@example.com") -> dict:
    return {"sender": sender, "message_id": message_id, "subject": "86-755-1234567"}


def test_submit_writes_complete_job_into_incoming(tmp_path: Path) -> None:
    raw = b"Subject: x\r\n\r\nbody\r\n"
    job_id = spool.submit(tmp_path, _job(), raw)
    job_dir = tmp_path / "incoming" / job_id
    assert sorted(p.name for p in job_dir.iterdir()) == ["job.json", "message.eml"]
    assert (job_dir / "message.eml").read_bytes() == raw
    job = json.loads((job_dir / "job.json").read_text())
    assert job["version"] == spool.FORMAT_VERSION
    assert job["id"] == job_id
    assert job["message"] == "message.eml"
    assert job["sender"] == "alice@example.com"
    assert list((tmp_path / "tmp").iterdir()) == []
    assert spool.read_job(job_dir) == job
    assert spool.read_message(job_dir) == raw


def test_ids_are_unique_and_sort_by_time(tmp_path: Path) -> None:
    ids = [spool.submit(tmp_path, _job(message_id=f"<{i}@x>"), b"x") for i in range(20)]
    assert len(set(ids)) == 20
    assert spool.list_jobs(tmp_path) == sorted(ids)
    assert ids == sorted(ids)


def test_duplicate_message_id_from_same_sender_is_one_job(tmp_path: Path) -> None:
    first = spool.submit(tmp_path, _job(), b"one")
    again = spool.submit(tmp_path, _job(message_id=" <m1@example.com> "), b"two")
    assert again == first
    assert spool.list_jobs(tmp_path) == [first]
    # Another sender with the same Message-ID is a different job.
    other = spool.submit(tmp_path, _job(sender="bob@example.com"), b"three")
    assert other != first
    # Still a duplicate after faxd moved the first job along.
    assert spool.claim(tmp_path, first) is not None
    assert spool.submit(tmp_path, _job(), b"four") == first
    assert list((tmp_path / "tmp").iterdir()) == []


def test_concurrent_duplicates_create_one_job(tmp_path: Path) -> None:
    results: list[str] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(spool.submit(tmp_path, _job(), b"same"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1
    assert spool.list_jobs(tmp_path) == results[:1]


@pytest.mark.parametrize("old_style", [False, True])
def test_stale_dedupe_marker_is_taken_over(tmp_path: Path, old_style: bool) -> None:
    spool.ensure_layout(tmp_path)
    key = spool.dedupe_key("alice@example.com", "<m1@example.com>")
    marker = tmp_path / "dedupe" / key
    if old_style:  # a marker file holding the id, as spools written before have
        marker.write_text("20000101T000000000000Z-deadbeef")
    else:
        os.symlink("20000101T000000000000Z-deadbeef", marker)
    job_id = spool.submit(tmp_path, _job(), b"x")
    assert spool.list_jobs(tmp_path) == [job_id]
    assert os.readlink(marker) == job_id
    assert sorted(p.name for p in (tmp_path / "dedupe").iterdir()) == [key]


def test_old_style_marker_of_a_live_job_still_deduplicates(tmp_path: Path) -> None:
    first = spool.submit(tmp_path, _job(), b"one")
    marker = tmp_path / "dedupe" / spool.dedupe_key("alice@example.com", "<m1@example.com>")
    marker.unlink()
    marker.write_text(first + "\n")
    assert spool.submit(tmp_path, _job(), b"two") == first
    assert spool.list_jobs(tmp_path) == [first]


def test_job_is_durable_before_submit_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """File data and the job directory are fsynced before the rename into incoming/,
    incoming/ after it; the dedupe marker needs only its directory fsynced."""
    calls: list[str] = []
    real_fsync, real_rename = os.fsync, os.rename

    def fsync(fd: int) -> None:
        calls.append("fsync " + os.readlink(f"/proc/self/fd/{fd}").removeprefix(str(tmp_path)))
        real_fsync(fd)

    def rename(src: os.PathLike[str], dst: os.PathLike[str]) -> None:
        calls.append("rename")
        real_rename(src, dst)

    spool.ensure_layout(tmp_path)
    monkeypatch.setattr(spool.os, "fsync", fsync)
    monkeypatch.setattr(spool.os, "rename", rename)
    job_id = spool.submit(tmp_path, _job(), b"raw")
    staging = f"/tmp/{job_id}"
    assert calls == [
        f"fsync {staging}/message.eml",
        f"fsync {staging}/job.json",
        f"fsync {staging}",
        "rename",
        "fsync /incoming",
        "fsync /dedupe",
    ]


def test_without_message_id_no_dedupe(tmp_path: Path) -> None:
    a = spool.submit(tmp_path, _job(message_id=""), b"x")
    b = spool.submit(tmp_path, _job(message_id=""), b"x")
    assert a != b


def test_claim_is_exclusive_and_move_between_states(tmp_path: Path) -> None:
    job_id = spool.submit(tmp_path, _job(), b"x")
    active = spool.claim(tmp_path, job_id)
    assert active == tmp_path / "active" / job_id
    assert spool.claim(tmp_path, job_id) is None
    assert spool.find_job(tmp_path, job_id) == active
    done = spool.move(tmp_path, job_id, "active", "done")
    assert done is not None and (done / "job.json").exists()
    assert spool.list_jobs(tmp_path, "done") == [job_id]
    with pytest.raises(ValueError):
        spool.list_jobs(tmp_path, "bogus")


def test_unwritable_spool_raises_spool_error_and_is_temporary(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("a regular file, so nothing can be created below it, even by root")
    with pytest.raises(SpoolError) as info:
        spool.submit(blocker / "spool", _job(), b"x")
    assert not info.value.permanent


def test_newer_format_version_is_refused(tmp_path: Path) -> None:
    job_id = spool.submit(tmp_path, _job(), b"x")
    job_dir = tmp_path / "incoming" / job_id
    data = json.loads((job_dir / "job.json").read_text())
    data["version"] = spool.FORMAT_VERSION + 1
    (job_dir / "job.json").write_text(json.dumps(data))
    with pytest.raises(SpoolError, match="version"):
        spool.read_job(job_dir)
