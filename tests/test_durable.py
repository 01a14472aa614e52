from __future__ import annotations

from pathlib import Path

import pytest

from faxgate.durable import fsync_dir, replace_atomically, write_new


def test_replace_atomically_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    replace_atomically(target, b"old")
    replace_atomically(target, b"new" * 100_000)
    assert target.read_bytes() == b"new" * 100_000
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
    assert target.stat().st_mode & 0o777 == 0o640


def test_replace_atomically_failure_keeps_old_content(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    replace_atomically(target, b"old")
    with pytest.raises(TypeError):
        replace_atomically(target, "not bytes")  # type: ignore[arg-type]
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_write_new_refuses_an_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "job.json"
    write_new(target, b"first")
    with pytest.raises(FileExistsError):
        write_new(target, b"second")
    assert target.read_bytes() == b"first"
    fsync_dir(tmp_path)
