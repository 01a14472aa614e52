"""The fax spool: the durable hand-over from the milter to faxd.

A job is accepted at SMTP time only once it is on disk here; the spool, not
the store, is the truth about which jobs exist.

Format version 1
================

Layout under the spool directory (``[spool] directory``)::

    tmp/<id>/          a job being written by submit(); never read by faxd
    incoming/<id>/     submitted, waiting for faxd
    active/<id>/       claimed by a faxd worker (claim() renames it here)
    done/<id>/         finished, every recipient reached
    failed/<id>/       finished, at least one recipient failed for good
    dedupe/<key>       duplicate-submission markers (see below)

Each job directory holds two files:

``message.eml``
    The mail exactly as the milter saw it: header fields as received (CRLF line
    ends) followed by the body. Attachments are re-read from it by part index.
``job.json``
    UTF-8 JSON object with these keys:

    - ``version`` (int): format version, ``1``; readers reject newer versions.
    - ``id`` (str): ``YYYYMMDDTHHMMSSffffffZ-<8 hex>``, the UTC submit time
      plus randomness, so ids are unique and sort by submission time.
    - ``message`` (str): file name of the raw message, ``"message.eml"``.
    - ``sender`` (str): the registered sender's e-mail address (lower case).
    - ``from_header`` (str): the From: header as decoded.
    - ``auth`` (object): ``login`` (SMTP AUTH name or null), ``client_addr``,
      ``authentication_results`` (list of trusted headers that were used).
    - ``recipients`` (list): ``faxgate.grammar.Recipient.to_dict()`` objects in
      Subject order.
    - ``subject`` (str): the decoded Subject.
    - ``message_id`` (str), ``queue_id`` (str, Postfix queue id), ``created``
      (ISO 8601 UTC), ``priority`` ("high", "normal" or "low").
    - ``documents`` (list): ``{"filename", "kind", "format", "part", "size"}``
      in attachment order; ``part`` is the index of the MIME part in
      ``email.message.walk()`` order of the parsed ``message.eml``;
      ``filename`` is display text only, never a path.
    - ``body_text`` (str): the mail's text, for the cover page comment.

faxd adds (see ``faxgate.faxd.daemon``) ``state.json``, the queue state it
rewrites atomically after every change, and ``pages.tif``, the pages rendered
once (TIFF-F), to each job directory it claims, and keeps both when it moves
the job to ``done/`` or ``failed/``; at the top of the spool ``control/``
(admin requests: cancel, retry, hold, release), ``faxd.lock`` (held with
flock while faxd runs) and ``faxd-status.json`` (what the modems are doing).

Atomicity: submit() writes both files into ``tmp/<id>/``, fsyncs them and the
directory, claims the dedupe marker, renames the directory into ``incoming/``
and fsyncs ``incoming/`` (then ``dedupe/``). A crash leaves either nothing
visible or a complete job; stray ``tmp/`` entries are garbage. Four fsyncs in
all, the fewest that make the job durable on any POSIX file system.

Duplicates: a client that times out after DATA resends the same message. The
marker ``dedupe/<sha256(sender NUL message-id)>`` is a symbolic link whose
target is the id of the first job (spools written before held a small file
with the id; both are read); a second submission returns that id without
creating a job. symlink(2) fails if the name exists, so two concurrent
submissions cannot both win, and the id needs no file data of its own to fsync;
the loser waits (up to 10 s) while the winner's job is still in ``tmp/``. A
marker whose job exists in no state directory and is not being written (the
submitter failed or crashed) is stale and is taken over. ``dedupe/`` is fsynced
after the job is: a power cut between the two can at worst lose the marker of a
job that is safe, so a resent message would become a second job.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import secrets
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from faxgate.durable import fsync_dir, write_new
from faxgate.errors import TemporaryError

FORMAT_VERSION = 1
MESSAGE_FILE = "message.eml"
JOB_FILE = "job.json"
STATES = ("incoming", "active", "done", "failed")
_DIRS = ("tmp", *STATES, "dedupe")


class SpoolError(TemporaryError):
    """The spool cannot be written or read now (disk full, permissions, ...)."""


def new_job_id(now: datetime | None = None) -> str:
    """A unique id that sorts by submission time."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%S%f}Z-{secrets.token_hex(4)}"


def dedupe_key(sender: str, message_id: str) -> str:
    return hashlib.sha256(f"{sender.lower()}\0{message_id.strip()}".encode()).hexdigest()


def ensure_layout(spool_dir: str | os.PathLike[str]) -> Path:
    """Create the state directories if needed; SpoolError if that is impossible."""
    root = Path(spool_dir)
    try:
        for name in _DIRS:
            (root / name).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SpoolError(f"spool {root}: cannot create directories: {exc}") from exc
    return root


def find_job(spool_dir: str | os.PathLike[str], job_id: str) -> Path | None:
    """The directory of job ``job_id`` in whichever state it is, or None."""
    root = Path(spool_dir)
    if not job_id or "/" in job_id or job_id.startswith("."):
        return None
    for state in STATES:
        candidate = root / state / job_id
        if candidate.is_dir():
            return candidate
    return None


#: A staging directory older than this belongs to a submitter that crashed.
STALE_STAGING_SECONDS = 600.0
#: How long a duplicate waits for a concurrent first submission to finish.
CONCURRENT_WAIT_SECONDS = 10.0


def _first_submission_done(root: Path, job_id: str) -> bool:
    """Whether job ``job_id``, named by a dedupe marker, exists or will exist.

    A concurrent submitter may hold the marker while still writing its job in
    ``tmp/``: wait for it. A marker whose job is neither spooled nor being
    written (the submitter failed or crashed) is stale: False.
    """
    deadline = time.monotonic() + CONCURRENT_WAIT_SECONDS
    while True:
        if find_job(root, job_id) is not None:
            return True
        try:
            age = time.time() - (root / "tmp" / job_id).stat().st_mtime
        except FileNotFoundError:
            return find_job(root, job_id) is not None  # it may have been renamed just now
        if age > STALE_STAGING_SECONDS:
            return False
        if time.monotonic() > deadline:
            raise SpoolError(f"spool {root}: job {job_id} is still being written")
        time.sleep(0.01)


def _marker_job_id(marker: Path) -> str:
    """The job id a dedupe marker names (a symlink's target, or an older marker file)."""
    try:
        return os.readlink(marker)
    except OSError as exc:
        if exc.errno != errno.EINVAL:  # EINVAL: a regular file, as older spools wrote
            raise
    return marker.read_text(encoding="ascii").strip()


def _claim_marker(root: Path, key: str, job_id: str) -> str | None:
    """Create the dedupe marker for ``job_id``; return the id of an existing job instead."""
    marker = root / "dedupe" / key
    for _attempt in range(3):
        try:
            os.symlink(job_id, marker)
            return None
        except FileExistsError:
            try:
                existing = _marker_job_id(marker)
            except FileNotFoundError:
                continue
            if existing == job_id or _first_submission_done(root, existing):
                return existing
            temp = marker.with_name(f".{key}.{job_id}")
            os.symlink(job_id, temp)
            os.replace(temp, marker)  # stale marker: take it over
            return None
    raise SpoolError(f"spool {root}: dedupe marker {key} keeps changing")


def _release_marker(root: Path, key: str, job_id: str) -> None:
    """Remove our marker after a failed submission, so a retry is not taken as a duplicate."""
    marker = root / "dedupe" / key
    with contextlib.suppress(OSError):
        if _marker_job_id(marker) == job_id:
            marker.unlink()


def submit(spool_dir: str | os.PathLike[str], job: dict[str, Any], raw_message: bytes) -> str:
    """Write a job durably into ``incoming/`` and return its id.

    ``job`` holds the job.json keys except ``version``, ``id`` and ``message``
    (filled in here; a given ``id`` is kept). If ``job`` has a ``message_id``
    that this sender already submitted, no job is created and the first job's id
    is returned. Raises SpoolError when the spool cannot be written.
    """
    root = ensure_layout(spool_dir)
    job_id = str(job.get("id") or new_job_id())
    document = {**job, "version": FORMAT_VERSION, "id": job_id, "message": MESSAGE_FILE}
    staging = root / "tmp" / job_id
    sender, message_id = str(job.get("sender") or ""), str(job.get("message_id") or "")
    key = dedupe_key(sender, message_id) if sender and message_id.strip() else None
    claimed = renamed = False
    try:
        staging.mkdir()
        write_new(staging / MESSAGE_FILE, raw_message)
        encoded = json.dumps(document, ensure_ascii=False, indent=1, sort_keys=True)
        write_new(staging / JOB_FILE, encoded.encode("utf-8"))
        fsync_dir(staging)
        if key is not None:
            existing = _claim_marker(root, key, job_id)
            if existing is not None:
                shutil.rmtree(staging, ignore_errors=True)
                return existing
            claimed = True
        os.rename(staging, root / "incoming" / job_id)
        renamed = True
        fsync_dir(root / "incoming")
        if claimed:
            fsync_dir(root / "dedupe")
    except (OSError, SpoolError) as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if claimed and not renamed and key is not None:
            _release_marker(root, key, job_id)
        if isinstance(exc, SpoolError):
            raise
        reason = "disk full" if exc.errno in (errno.ENOSPC, errno.EDQUOT) else exc.strerror
        raise SpoolError(f"spool {root}: cannot write job {job_id}: {reason}") from exc
    return job_id


def list_jobs(spool_dir: str | os.PathLike[str], state: str = "incoming") -> list[str]:
    """Job ids in ``state``, oldest first (ids sort by submission time)."""
    if state not in STATES:
        raise ValueError(f"unknown spool state {state!r} (known: {', '.join(STATES)})")
    directory = Path(spool_dir) / state
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise SpoolError(f"spool {directory}: cannot list: {exc}") from exc
    return sorted(n for n in names if not n.startswith("."))


def read_job(job_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The job.json of a job directory; SpoolError if unreadable or too new."""
    path = Path(job_dir) / JOB_FILE
    try:
        job = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SpoolError(f"spool job {path}: unreadable: {exc}") from exc
    if not isinstance(job, dict) or job.get("version") != FORMAT_VERSION:
        version = job.get("version") if isinstance(job, dict) else None
        raise SpoolError(f"spool job {path}: unsupported format version {version!r}")
    return job


def read_message(job_dir: str | os.PathLike[str]) -> bytes:
    """The raw message of a job directory."""
    return (Path(job_dir) / MESSAGE_FILE).read_bytes()


def move(spool_dir: str | os.PathLike[str], job_id: str, source: str, target: str) -> Path | None:
    """Rename job ``job_id`` from state ``source`` to ``target``.

    Returns the new directory, or None if the job is not in ``source`` (another
    worker moved it first: rename is the lock).
    """
    for state in (source, target):
        if state not in STATES:
            raise ValueError(f"unknown spool state {state!r}")
    root = Path(spool_dir)
    destination = root / target / job_id
    try:
        os.rename(root / source / job_id, destination)
        fsync_dir(root / target)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise SpoolError(f"spool {root}: cannot move {job_id} to {target}: {exc}") from exc
    return destination


def claim(spool_dir: str | os.PathLike[str], job_id: str) -> Path | None:
    """Take an incoming job for processing (incoming/ → active/); None if already taken."""
    return move(spool_dir, job_id, "incoming", "active")
