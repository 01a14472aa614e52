"""The SQLite store: migrations, senders, jobs, events, directory, many writers at once."""

from __future__ import annotations

import io
import multiprocessing
import re
import shlex
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from faxgate import config, store
from faxgate.errors import InputError, NotFoundError, TemporaryError
from faxgate.store import (
    SCHEMA_VERSION,
    SchemaError,
    SenderExistsError,
    Store,
    StoreBusyError,
)

REPO = Path(__file__).resolve().parent.parent
SQLITE_UTILS = Path(sys.executable).parent / "sqlite-utils"


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "faxgate.db"


@pytest.fixture
def st(db_path: Path) -> Store:
    with Store(db_path) as opened:
        yield opened


def recipient(number: str, **extra: object) -> dict:
    return {
        "country": "86",
        "area": "755",
        "number": number,
        "network": None,
        "name1": "金恒科技",
        "name2": None,
        "dial": number,
        "e164": f"+86755{number}",
        **extra,
    }


def job(job_id: str, sender: str = "alice@example.com", **extra: object) -> dict:
    return {
        "id": job_id,
        "sender": sender,
        "subject": "86-755-83235170/金恒科技",
        "message_id": f"<{job_id}@example.com>",
        "queue_id": "4ABC123",
        "priority": 0,
        "documents": ["报价单.pdf"],
        "recipients": [recipient("83235170")],
        **extra,
    }


# ---- schema and migrations ---------------------------------------------------------


def test_fresh_file_gets_every_migration_and_wal(db_path: Path) -> None:
    Store(db_path).close()
    conn = sqlite3.connect(db_path)
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"senders", "jobs", "recipients", "events", "directory", "schema_migrations"} <= tables
    versions = [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    assert versions == list(range(1, SCHEMA_VERSION + 1))
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_reopen_is_idempotent_and_keeps_data(db_path: Path) -> None:
    with Store(db_path) as first:
        first.add_sender("alice@example.com", "Alice")
    with Store(db_path) as second:
        assert second.schema_version() == SCHEMA_VERSION
        assert second.get_sender("alice@example.com") is not None
    count = sqlite3.connect(db_path).execute("SELECT count(*) FROM schema_migrations")
    assert count.fetchone()[0] == SCHEMA_VERSION


def test_new_migration_applies_on_reopen_and_failed_one_rolls_back(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    Store(db_path).close()

    def broken(db) -> None:
        db.execute("CREATE TABLE half_done (x)")
        raise RuntimeError("migration bug")

    monkeypatch.setattr(store, "MIGRATIONS", (*store.MIGRATIONS, broken))
    monkeypatch.setattr(store, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with pytest.raises(RuntimeError, match="migration bug"):
        Store(db_path)
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0] == 1
    assert conn.execute("SELECT 1 FROM sqlite_master WHERE name='half_done'").fetchone() is None

    def add_notes(db) -> None:
        db.execute("ALTER TABLE jobs ADD COLUMN notes TEXT")

    monkeypatch.setattr(store, "MIGRATIONS", (*store.MIGRATIONS[:-1], add_notes))
    with Store(db_path) as upgraded:
        assert upgraded.schema_version() == SCHEMA_VERSION + 1
    row = conn.execute("SELECT name FROM schema_migrations WHERE version = 2").fetchone()
    assert row == ("add_notes",)


def test_newer_schema_is_refused(db_path: Path) -> None:
    Store(db_path).close()
    conn = sqlite3.connect(db_path)
    conn.execute("INSERT INTO schema_migrations VALUES (?, 'future', 0)", (SCHEMA_VERSION + 5,))
    conn.commit()
    with pytest.raises(SchemaError, match="newer"):
        Store(db_path)


def test_garbage_file_is_a_schema_error(tmp_path: Path) -> None:
    path = tmp_path / "not.db"
    path.write_bytes(b"this is not sqlite, just text " * 200)
    with pytest.raises(SchemaError, match="not a usable SQLite database"):
        Store(path)


def test_unopenable_path_is_temporary(tmp_path: Path) -> None:
    """The milter answers 4xx (mail is retried, nothing lost) while an admin fixes the path."""
    with pytest.raises(store.StoreUnavailableError) as err:
        Store(tmp_path)  # a directory, not a file
    assert isinstance(err.value, TemporaryError) and str(tmp_path) in str(err.value)


def test_any_database_error_reaches_callers_as_a_faxgate_error(st: Store, db_path: Path) -> None:
    """The milter and faxd catch FaxgateError; a raw sqlite3 error must never escape."""
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TABLE events")
    conn.commit()
    with pytest.raises(store.StoreUnavailableError, match="no such table"):
        st.add_event("accepted")
    with pytest.raises(store.StoreUnavailableError, match="no such table"):
        st.events()
    st.add_sender("still@example.com")  # the failed transactions left nothing locked


def test_open_from_config_creates_parent_directory(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "faxgate.db"
    cfg_file = tmp_path / "faxgate.toml"
    cfg_file.write_text(f'[store]\npath = "{path}"\nbusy_timeout = 2.5\n', encoding="utf-8")
    with Store.open(config.load(cfg_file)) as opened:
        assert opened.path == path
        assert opened.timeout == 2.5
    assert path.is_file()


# ---- senders -------------------------------------------------------------------------


def test_email_is_case_insensitive_everywhere(st: Store) -> None:
    added = st.add_sender("  Alice@Example.COM ", "Alice", smtp_login="Alice01")
    assert added.email == "alice@example.com"
    assert st.get_sender("ALICE@example.com") == added
    with pytest.raises(SenderExistsError):
        st.add_sender("alice@EXAMPLE.com")
    assert [s.email for s in st.list_senders()] == ["alice@example.com"]
    assert st.find_sender_by_login("alice01") == added
    assert st.update_sender("ALICE@example.COM", name="A.").name == "A."
    st.record_job(job("j1", sender="ALICE@Example.com"))
    assert [j.id for j in st.list_jobs(sender="alice@example.COM")] == ["j1"]
    assert st.jobs_today("Alice@example.com") == 1


def test_sender_defaults_and_policy_helpers(st: Store) -> None:
    sender = st.add_sender("bob@example.com")
    assert (sender.enabled, sender.can_fax, sender.may_fax) == (True, True, True)
    assert sender.destinations == "domestic" and not sender.allow_premium
    assert sender.allows_destination("local") and sender.allows_destination("domestic")
    assert not sender.allows_destination("international")
    limits = sender.effective_limits(config.LimitsConfig())
    assert limits == store.SenderLimits(max_recipients=50, max_pages=100, jobs_per_day=200)
    tight = st.update_sender("bob@example.com", max_pages=3, jobs_per_day=0, can_fax=False)
    assert tight.effective_limits(config.LimitsConfig()).max_pages == 3
    assert tight.effective_limits(config.LimitsConfig()).jobs_per_day == 0
    assert not tight.may_fax
    assert st.update_sender("bob@example.com", max_pages=None).max_pages is None


@pytest.mark.parametrize(
    "address",
    ["", "alice", "a@@b.com", "a b@example.com", "@example.com", "alice@", "a@exa mple.com",
     "a@-bad.com", "a..b@example.com", "a@example..com", "<a@example.com>", "a@ex_ample.com",
     "a\n@example.com", "a@example.com\r\nBcc: x@y.z"],
)  # fmt: skip
def test_invalid_addresses_are_rejected_without_a_row(st: Store, address: str) -> None:
    with pytest.raises(InputError):
        st.add_sender(address)
    assert st.list_senders() == []


@pytest.mark.parametrize(
    "fields",
    [{"max_pages": 0}, {"max_recipients": -1}, {"jobs_per_day": "5"}, {"max_pages": True},
     {"destinations": "galaxy"}, {"language": "fr"}, {"name": "two\nlines"},
     {"smtp_login": "has space"}, {"enabled": "yes"}],
)  # fmt: skip
def test_bad_fields_never_leave_a_row(st: Store, fields: dict) -> None:
    with pytest.raises(InputError):
        st.add_sender("carol@example.com", **fields)
    assert st.get_sender("carol@example.com") is None
    st.add_sender("carol@example.com", "Carol")
    with pytest.raises(InputError):
        st.update_sender("carol@example.com", **{"can_fax": False, **fields})
    carol = st.get_sender("carol@example.com")
    assert (carol.name, carol.can_fax) == ("Carol", True)


def test_login_belongs_to_one_sender(st: Store) -> None:
    st.add_sender("a@example.com", smtp_login="shared")
    with pytest.raises(InputError, match="already belongs to a@example.com"):
        st.add_sender("b@example.com", smtp_login="SHARED")
    assert st.get_sender("b@example.com") is None
    st.add_sender("b@example.com")
    with pytest.raises(InputError):
        st.update_sender("b@example.com", smtp_login="shared")


def test_missing_senders_are_not_found(st: Store) -> None:
    with pytest.raises(NotFoundError):
        st.update_sender("ghost@example.com", enabled=False)
    with pytest.raises(NotFoundError):
        st.remove_sender("ghost@example.com")
    assert st.get_sender("not an address") is None


def test_remove_keeps_history(st: Store) -> None:
    st.add_sender("alice@example.com")
    st.record_job(job("j1"))
    st.remove_sender("alice@example.com")
    assert st.get_sender("alice@example.com") is None
    assert st.get_job("j1").sender == "alice@example.com"


# ---- CSV import ------------------------------------------------------------------------

CSV_HEADER = (
    "email,name,enabled,can_fax,smtp_login,max_recipients,max_pages,jobs_per_day,"
    "destinations,allow_premium,language\n"
)


def test_csv_import_all_columns(st: Store) -> None:
    text = (
        "\ufeff"
        + CSV_HEADER
        + "Alice@Example.com,Alice 张,yes,yes,alice,5,10,20,international,true,zh\n"
        + '"bob@example.com","Bob, Jr.",no,,,,,,,,\n'
        + "\n"
    )
    assert st.import_senders_csv(io.StringIO(text)) == 2
    alice = st.get_sender("alice@example.com")
    assert (alice.name, alice.smtp_login, alice.max_recipients, alice.max_pages) == (
        "Alice 张",
        "alice",
        5,
        10,
    )
    assert (alice.jobs_per_day, alice.destinations, alice.allow_premium, alice.language) == (
        20,
        "international",
        True,
        "zh",
    )
    bob = st.get_sender("bob@example.com")
    assert (bob.name, bob.enabled, bob.can_fax, bob.destinations) == (
        "Bob, Jr.",
        False,
        True,
        "domestic",
    )


def test_csv_import_updates_existing_and_resets_defaults(st: Store) -> None:
    st.add_sender("alice@example.com", "Alice", max_pages=7, language="zh", enabled=False)
    st.import_senders_csv(
        io.StringIO("email,max_pages,language,name\nalice@example.com,default,default,\n")
    )
    alice = st.get_sender("alice@example.com")
    assert (alice.max_pages, alice.language, alice.name, alice.enabled) == (
        None,
        None,
        "Alice",
        False,
    )


@pytest.mark.parametrize(
    ("row", "where"),
    [
        ("carol@example.com,Carol,maybe", "line 3, column 3 (enabled)"),
        ("not-an-address,Carol,yes", "line 3, column 1 (email)"),
        ("carol@example.com,Carol", "line 3: 2 fields, the header has 3"),
        ("new@example.com,New,yes", "line 4: bob@example.com is already on line 2"),
    ],
)
def test_csv_import_is_all_or_nothing(st: Store, row: str, where: str) -> None:
    st.add_sender("bob@example.com", "Bob")
    text = (
        "email,name,enabled\nbob@example.com,Bob Changed,no\n" + row + "\nbob@example.com,x,yes\n"
    )
    with pytest.raises(InputError) as err:
        st.import_senders_csv(io.StringIO(text), source="people.csv")
    assert str(err.value).startswith("people.csv line ")
    assert where in str(err.value)
    bob = st.get_sender("bob@example.com")
    assert (bob.name, bob.enabled) == ("Bob", True)
    assert [s.email for s in st.list_senders()] == ["bob@example.com"]


def test_csv_import_login_clash_rolls_back_earlier_rows(st: Store) -> None:
    st.add_sender("owner@example.com", smtp_login="taken")
    text = "email,smtp_login\nnew1@example.com,fresh\nnew2@example.com,taken\n"
    with pytest.raises(InputError, match="line 3: SMTP login 'taken' already belongs"):
        st.import_senders_csv(io.StringIO(text))
    assert st.get_sender("new1@example.com") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty file"),
        ("name,enabled\nx,yes\n", "no 'email' column"),
        ("email,colour\na@example.com,red\n", "line 1, column 2: unknown column 'colour'"),
        ("email,name,email\n", "line 1, column 3: 'email' appears twice"),
    ],
)
def test_csv_header_errors(st: Store, text: str, message: str) -> None:
    with pytest.raises(InputError, match=re.escape(message)):
        st.import_senders_csv(io.StringIO(text))


# ---- jobs, recipients, events ------------------------------------------------------------


def test_record_job_round_trip_and_idempotence(st: Store) -> None:
    assert st.record_job(job("j1", created=1000.0, recipients=[recipient("1"), recipient("2")]))
    st.update_job("j1", state="active", pages_total=3)
    st.update_recipient("j1", 0, state="sent", pages_confirmed=3, pages_total=3, dials=1, tries=1)
    again = job("j1", subject="re-sent", recipients=[recipient("1", state="pending")])
    assert st.record_job(again) is False
    got = st.get_job("j1")
    assert (got.subject, got.state, got.pages_total, got.created) == (
        "re-sent",
        "active",
        3,
        1000.0,
    )
    assert got.documents == ("报价单.pdf",)
    assert [r.idx for r in got.recipients] == [0, 1]
    first = got.recipients[0]
    assert (first.state, first.pages_confirmed, first.dials, first.e164) == (
        "sent",
        3,
        1,
        "+867551",
    )
    data = got.to_dict()
    assert data["recipients"][1]["number"] == "2" and data["documents"] == ["报价单.pdf"]


def test_job_updates_validate_and_merge_extra(st: Store) -> None:
    st.record_job(job("j1", extra={"auth": "alice"}))
    st.update_job("j1", extra={"render": {"pages": 2}})
    st.update_job("j1", receipt_state="sent", receipt_sent_at=123.5)
    got = st.get_job("j1")
    assert got.extra == {"auth": "alice", "render": {"pages": 2}}
    assert (got.receipt_state, got.receipt_sent_at) == ("sent", 123.5)
    with pytest.raises(InputError):
        st.update_job("j1", state="exploded")
    with pytest.raises(InputError):
        st.update_job("j1", colour="red")
    with pytest.raises(InputError):
        st.update_recipient("j1", 0, state="sent", route="pigeon")
    assert st.get_job("j1").recipients[0].state == "pending"
    with pytest.raises(NotFoundError):
        st.update_job("nope", state="done")
    with pytest.raises(NotFoundError):
        st.update_recipient("j1", 7, state="sent")


def test_bad_job_records_write_nothing(st: Store) -> None:
    for bad in (
        job("../etc/passwd"),
        job("j2", sender="not an address"),
        job("j3", recipients=[recipient("1"), "oops"]),
        job("j4", recipients=[recipient("1", state="teleported")]),
        job("j5", documents="a.pdf"),
        job("j6", recipients=[recipient("1", idx=0), recipient("2", idx=0)]),
    ):
        with pytest.raises(InputError):
            st.record_job(bad)
    assert st.list_jobs() == []


def test_list_jobs_filters_and_order(st: Store) -> None:
    for n in range(5):
        sender = "alice@example.com" if n % 2 == 0 else "bob@example.com"
        st.record_job(job(f"j{n}", sender=sender, created=1000.0 + n))
    st.update_job("j2", state="done")
    assert [j.id for j in st.list_jobs()] == ["j4", "j3", "j2", "j1", "j0"]
    assert [j.id for j in st.list_jobs(sender="ALICE@example.com")] == ["j4", "j2", "j0"]
    assert [j.id for j in st.list_jobs(state="done")] == ["j2"]
    assert [j.id for j in st.list_jobs(limit=2)] == ["j4", "j3"]
    assert all(len(j.recipients) == 1 for j in st.list_jobs())
    assert st.find_job("alice@example.com", "<j2@example.com>").id == "j2"
    assert st.find_job("bob@example.com", "<j2@example.com>") is None
    with pytest.raises(InputError):
        st.list_jobs(state="lost")


def test_jobs_today_is_a_rolling_24_hours(st: Store) -> None:
    now = 1_800_000_000.0
    for n, age in enumerate((10, 3600, 86_000, 86_500, 200_000)):
        st.record_job(job(f"j{n}", created=now - age))
    assert st.jobs_today("alice@example.com", now=now) == 3
    assert st.jobs_today("bob@example.com", now=now) == 0


def test_events_log(st: Store) -> None:
    st.add_event("rejected", "550 5.7.1 not a registered sender", queue_id="Q1", sender="Eve@X.org")
    st.record_job(job("j1"))
    st.add_event("accepted", "1 recipient", job_id="j1", queue_id="Q2", sender="alice@example.com")
    st.add_event("dialing", "83235170", job_id="j1", recipient_idx=0)
    st.add_event("page_confirmed", "page 1 MCF", job_id="j1", recipient_idx=0)
    assert [e.kind for e in st.events("j1")] == ["accepted", "dialing", "page_confirmed"]
    assert [e.kind for e in st.events("j1", limit=2)] == ["dialing", "page_confirmed"]
    rejected = st.events(kind="rejected")
    assert len(rejected) == 1 and rejected[0].job_id is None
    assert rejected[0].sender == "eve@x.org" and rejected[0].to_dict()["queue_id"] == "Q1"
    assert [e.kind for e in st.events(sender="EVE@x.org")] == ["rejected"]
    with pytest.raises(InputError):
        st.add_event("Bad Kind")
    st.add_event("rejected", "x" * 100_000, sender="y" * 100_000 + "@example.com")
    flood = st.events(kind="rejected")[-1]
    assert len(flood.detail) == 4000 and flood.detail.endswith("…")
    assert len(flood.sender) == 320


def test_transaction_groups_calls(st: Store) -> None:
    with pytest.raises(RuntimeError), st.transaction():
        st.record_job(job("j1"))
        st.add_event("accepted", job_id="j1")
        raise RuntimeError("spool write failed")
    assert st.get_job("j1") is None and st.events() == []
    with st.transaction():
        st.record_job(job("j1"))
        st.add_event("accepted", job_id="j1")
    assert st.get_job("j1") is not None and len(st.events("j1")) == 1


def test_directory(st: Store) -> None:
    entry = st.directory_add("af90000098", "金恒科技", "Fax@Jinheng.example")
    assert (entry.network, entry.email) == ("AF90000098", "fax@jinheng.example")
    assert st.directory_get("AF90000098") == entry
    with pytest.raises(InputError, match="already"):
        st.directory_add("AF90000098", "other", "x@example.com")
    st.directory_add("AF90000098", "other", "x@example.com", replace=True)
    assert st.directory_get("af90000098").name == "other"
    with pytest.raises(InputError):
        st.directory_add("90000098", "no letters", "x@example.com")
    assert [e.network for e in st.directory_list()] == ["AF90000098"]
    st.directory_remove("af90000098")
    assert st.directory_get("AF90000098") is None
    with pytest.raises(NotFoundError):
        st.directory_remove("AF90000098")


# ---- many writers -------------------------------------------------------------------------

WRITES_PER_PROCESS = 200


def _hammer(st: Store, worker: int, barrier, errors) -> None:
    """Child process body: one job + one event per write, reporting any exception."""
    try:
        barrier.wait(timeout=30)
        for n in range(WRITES_PER_PROCESS):
            job_id = f"w{worker}-{n}"
            st.record_job(job(job_id, sender=f"worker{worker}@example.com"))
            st.add_event("accepted", f"write {n}", job_id=job_id, sender=f"worker{worker}@x.org")
    except BaseException as exc:
        errors.put(f"worker {worker}: {type(exc).__name__}: {exc}")
        raise


def test_many_processes_write_at_once(db_path: Path) -> None:
    workers = 4
    # The parent's Store is inherited through fork: children must open their own connections.
    shared = Store(db_path, timeout=20)
    shared.add_sender("parent@example.com")
    ctx = multiprocessing.get_context("fork")
    barrier, errors = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_hammer, args=(shared, w, barrier, errors)) for w in range(workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == []
    assert [proc.exitcode for proc in procs] == [0] * workers
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == workers * WRITES_PER_PROCESS
    assert conn.execute("SELECT count(*) FROM events").fetchone()[0] == workers * WRITES_PER_PROCESS
    for w in range(workers):
        assert len(shared.list_jobs(sender=f"worker{w}@example.com", limit=1000)) == 200
    # The parent's own connection still works after its children came and went.
    assert shared.get_sender("parent@example.com") is not None
    shared.close()


def _first_open(path: Path, worker: int, barrier, errors) -> None:
    try:
        barrier.wait(timeout=30)
        Store(path).add_sender(f"worker{worker}@example.com")
    except BaseException as exc:
        errors.put(f"worker {worker}: {type(exc).__name__}: {exc}")
        raise


def test_processes_racing_to_create_the_file(db_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    barrier, errors = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_first_open, args=(db_path, w, barrier, errors)) for w in range(4)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=60)
    problems = []
    while not errors.empty():
        problems.append(errors.get())
    assert problems == [] and [proc.exitcode for proc in procs] == [0] * 4
    conn = sqlite3.connect(db_path)
    assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] == SCHEMA_VERSION
    assert conn.execute("SELECT count(*) FROM senders").fetchone()[0] == 4


def test_threads_share_one_store_never_one_connection(st: Store) -> None:
    errors: list[str] = []
    in_use: set[int] = set()
    guard = threading.Lock()

    def work(n: int) -> None:
        try:
            for i in range(50):
                with st.transaction() as db:
                    with guard:
                        if id(db.conn) in in_use:
                            errors.append(f"connection shared by two threads ({n}, {i})")
                        in_use.add(id(db.conn))
                    st.add_event("dialing", f"{n}-{i}", job_id=f"t{n}")  # joins the transaction
                    with guard:
                        in_use.discard(id(db.conn))
        except BaseException as exc:
            errors.append(repr(exc))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(st.events(limit=1000)) == 400
    assert all(len(st.events(f"t{n}", limit=100)) == 50 for n in range(8))


def test_thread_churn_reuses_connections(st: Store) -> None:
    """One milter thread per SMTP connection must not leak a connection each."""

    def open_fds() -> int:
        return len(list(Path("/proc/self/fd").iterdir()))

    st.add_event("warm_up")
    before = open_fds()
    for n in range(300):
        thread = threading.Thread(target=st.add_event, args=("accepted", str(n)))
        thread.start()
        thread.join()
    assert open_fds() - before < 6
    assert len(st.events(kind="accepted", limit=1000)) == 300


def test_lock_held_too_long_is_a_temporary_error(db_path: Path) -> None:
    st = Store(db_path, timeout=0.3)
    blocker = sqlite3.connect(db_path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    started = time.monotonic()
    with pytest.raises(StoreBusyError) as err:
        st.add_event("accepted", "blocked")
    assert isinstance(err.value, TemporaryError)
    assert 0.25 < time.monotonic() - started < 5
    assert st.events() == []  # reads are not blocked by the writer (WAL)
    blocker.execute("ROLLBACK")
    st.add_event("accepted", "after")
    assert [e.detail for e in st.events()] == ["after"]
    st.close()
    blocker.close()


def test_close_then_use_again(st: Store) -> None:
    st.add_sender("alice@example.com")
    st.close()
    assert st.get_sender("alice@example.com") is not None


# ---- README examples ------------------------------------------------------------------------


def _readme_examples() -> list[tuple[str, str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("## Reading the store with sqlite-utils", 1)[1].split("\n## ", 1)[0]
    examples = []
    for block in re.findall(r"```console\n(.*?)```", section, re.S):
        command, _, output = block.partition("\n")
        assert command.startswith("$ sqlite-utils "), command
        examples.append((command[2:], output))
    return examples


def test_readme_sqlite_utils_examples_print_what_they_claim(db_path: Path) -> None:
    examples = _readme_examples()
    assert len(examples) >= 2
    with Store(db_path) as st:
        st.record_job(job("20261204-0001", created=1796371200.0))  # 2026-12-04 08:00 UTC
        st.record_job(
            job(
                "20261204-0002",
                subject="10-666666/张三; 20-777777/李四",
                created=1796382000.0,
                recipients=[
                    recipient("666666", area="10", name1="张三", dial="010666666"),
                    recipient("777777", area="20", name1="李四", dial="020777777"),
                ],
            )
        )
        st.record_job(job("20261204-0003", sender="bob@example.com", created=1796385600.0))
        st.update_job("20261204-0001", state="done")
        st.update_recipient("20261204-0001", 0, state="sent", pages_confirmed=2, pages_total=2)
        st.update_job("20261204-0002", state="partial")
        st.update_recipient("20261204-0002", 0, state="sent", pages_confirmed=1, pages_total=1)
        st.update_recipient("20261204-0002", 1, state="failed", dials=12, last_reason="no_answer")
    for command, expected in examples:
        argv = shlex.split(command.replace("/var/lib/faxgate/faxgate.db", str(db_path)))
        result = subprocess.run(
            [str(SQLITE_UTILS), *argv[1:]], capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout == expected, command


def test_a_job_from_the_null_sender_is_recorded(tmp_path: Path) -> None:
    store = Store(tmp_path / "faxgate.db")
    assert store.record_job({"id": "bounce-1", "sender": "", "recipients": []})
    assert store.get_job("bounce-1").sender == ""
    with pytest.raises(InputError):
        store.record_job({"id": "bad-1", "sender": "no-at-sign", "recipients": []})
