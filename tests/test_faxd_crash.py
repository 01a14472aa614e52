"""faxd crash safety: ``faxgate faxd`` as a real process, killed with SIGKILL
mid-call and at random moments, then restarted. Nothing is lost, confirmed
pages are never sent twice, and the sender gets exactly one receipt."""

from __future__ import annotations

import contextlib
import importlib.util
import os
import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from PIL import ImageChops

from faxgate import config
from faxgate.faxd import daemon as faxd
from faxgate.faxd import spool
from faxgate.faxd.tifff import read_tiff_f
from faxgate.simline import LineOptions, read_sidecars

_spec = importlib.util.spec_from_file_location(
    "faxd_e2e", Path(__file__).with_name("test_faxd_e2e.py")
)
e2e = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(e2e)  # the shared helpers: config, submit, SMTP capture
env = e2e.env

FIVE_PAGES = "\f".join(f"Page {n}\n" + "text line\n" * 30 for n in range(1, 6))


class FaxdProcess:
    def __init__(self, cfg_path: Path, log: Path) -> None:
        self.log = log.open("a")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "faxgate.cli", "--config", str(cfg_path), "faxd"],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        assert ready, "faxd did not start"
        assert self.proc.stdout.readline().startswith("READY faxd")

    def kill(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            assert self.proc.wait(60) == 0
        self.log.close()


def wait_or_show_log(env, predicate, timeout: float, what: str):
    """``wait_until``, but a timeout shows what faxd logged."""
    try:
        return e2e.wait_until(predicate, timeout, what)
    except AssertionError as exc:
        log = (env.tmp / "faxd.log").read_text(errors="replace")
        raise AssertionError(f"{exc}\n--- faxd.log (tail) ---\n{log[-6000:]}") from None


def active_state(cfg: config.Config, job_id: str):
    job_dir = Path(cfg.spool.directory) / "active" / job_id
    try:
        return faxd.read_state(job_dir)
    except ValueError:
        return None  # caught between the temp file and the rename? never: rename is atomic


def received_images(far: Path) -> list:
    images = []
    for call in sorted(read_sidecars(far), key=lambda c: c.call):
        images.extend(call.images())
    return images


def same_image(a, b) -> bool:
    return (
        a.size == b.size and ImageChops.difference(a.convert("L"), b.convert("L")).getbbox() is None
    )


def test_sigkill_mid_call_resumes_at_first_unconfirmed_page(env) -> None:
    devices, _ = env.line(["modem0"], LineOptions(pacing=12))
    capture = env.smtp()
    cfg_path = e2e.write_config(env.tmp, devices, env.smtp_port)
    cfg = config.load(cfg_path)
    job_id = e2e.submit(cfg, "12345678/Crash Test", text=FIVE_PAGES)
    first = FaxdProcess(cfg_path, env.tmp / "faxd.log")
    try:
        state = e2e.wait_until(
            lambda: (s := active_state(cfg, job_id)) and s.recipients[0].pages_confirmed >= 2 and s,
            90,
            "two pages confirmed",
        )
    finally:
        first.kill()
    confirmed = faxd.read_state(Path(cfg.spool.directory) / "active" / job_id).recipients[0]
    assert confirmed.state == "dialing" and confirmed.pages_confirmed < 5, state
    # The kill closed the port: like a modem on DTR drop, the line hangs up and the
    # far end records the cut call.
    e2e.wait_until(lambda: len(read_sidecars(env.tmp / "far")) == 1, 10, "the cut call recorded")

    second = FaxdProcess(cfg_path, env.tmp / "faxd.log")
    try:
        wait_or_show_log(env, lambda: capture.parsed("alice@example.com"), 90, "the receipt")
        wait_or_show_log(
            env,
            lambda: spool.find_job(cfg.spool.directory, job_id).parent.name == "done",
            10,
            "the job moved to done/",
        )
    finally:
        second.stop()
    calls = sorted(read_sidecars(env.tmp / "far"), key=lambda c: c.call)
    assert [c.pages for c in calls] == [confirmed.pages_confirmed, 5 - confirmed.pages_confirmed]
    assert calls[-1].ok
    sent = read_tiff_f(Path(cfg.spool.directory) / "done" / job_id / faxd.PAGES_FILE)
    got = received_images(env.tmp / "far")
    assert len(got) == len(sent) == 5
    assert all(same_image(a, b.image) for a, b in zip(got, sent, strict=True))
    body = e2e.check_receipt_basics(e2e.receipt_for(capture, job_id), job_id)
    assert "5 of 5" in body and "Attempts:      2" in body


def test_sigkill_at_random_moments_loses_nothing(env) -> None:
    seed = int(os.environ.get("FAXD_CRASH_SEED", time.time_ns() % 100_000))
    rng = random.Random(seed)
    devices, _ = env.line(["modemA", "modemB"], LineOptions(pacing=15))
    capture = env.smtp()
    cfg_path = e2e.write_config(env.tmp, devices, env.smtp_port)
    cfg = config.load(cfg_path)
    jobs = [
        e2e.submit(cfg, "12345678/A;22222222/B"),
        e2e.submit(cfg, "33333333/C"),
        e2e.submit(cfg, "44444444/D;55555555/E", text=FIVE_PAGES),
    ]
    kills = 0
    for _ in range(5):
        proc = FaxdProcess(cfg_path, env.tmp / "faxd.log")
        time.sleep(rng.uniform(0.1, 3.0))  # the crash point: deliberately random
        proc.kill()  # its ports close: the lines hang up any call, as modems on DTR drop
        kills += 1
    final = FaxdProcess(cfg_path, env.tmp / "faxd.log")
    try:
        wait_or_show_log(
            env,
            lambda: all(spool.find_job(cfg.spool.directory, j).parent.name == "done" for j in jobs),
            180,
            f"every job done (seed {seed})",
        )
    finally:
        final.stop()
    for job_id in jobs:
        e2e.receipt_for(capture, job_id)  # exactly one each
    expected = {"12345678": 3, "22222222": 3, "33333333": 3, "44444444": 5, "55555555": 5}
    received: dict[str, int] = {}
    for call in read_sidecars(env.tmp / "far"):
        number = call.json["dialled"][-8:]
        received[number] = received.get(number, 0) + call.pages
    for number, total in expected.items():
        # A page the far end took while faxd died before reading its MCF is the one
        # page that can arrive twice: at most once per kill. Confirmed pages never.
        assert total <= received[number] <= total + kills, (seed, number, received)


def test_receipt_intent_survives_a_crash_with_the_same_message_id(env) -> None:
    devices, _ = env.line(["modem0"], LineOptions(pacing=25))
    cfg_path = e2e.write_config(env.tmp, devices, env.smtp_port)
    cfg = config.load(cfg_path)
    job_id = e2e.submit(cfg, "12345678/Receipt")
    first = FaxdProcess(cfg_path, env.tmp / "faxd.log")
    try:
        state = e2e.wait_until(
            lambda: (s := active_state(cfg, job_id)) and s.receipt.state == "sending" and s,
            60,
            "the receipt to be marked sending (SMTP is down)",
        )
    finally:
        first.kill()
    capture = env.smtp()
    second = FaxdProcess(cfg_path, env.tmp / "faxd.log")
    try:
        wait_or_show_log(env, lambda: capture.parsed("alice@example.com"), 30, "the receipt")
        e2e.wait_until(
            lambda: spool.find_job(cfg.spool.directory, job_id).parent.name == "done", 10, "done"
        )
    finally:
        second.stop()
    receipt = e2e.receipt_for(capture, job_id)
    assert receipt["Message-ID"] == state.receipt.message_id
    assert len(read_sidecars(env.tmp / "far")) == 1, "the fax itself was not sent again"


def test_sigterm_finishes_the_call_in_progress(env) -> None:
    devices, _ = env.line(["modem0"], LineOptions(pacing=12))
    capture = env.smtp()
    cfg_path = e2e.write_config(env.tmp, devices, env.smtp_port)
    cfg = config.load(cfg_path)
    job_id = e2e.submit(cfg, "12345678/Graceful", text=FIVE_PAGES)
    proc = FaxdProcess(cfg_path, env.tmp / "faxd.log")
    wait_or_show_log(
        env,
        lambda: (s := active_state(cfg, job_id)) and s.recipients[0].pages_confirmed >= 1,
        60,
        "the first page confirmed",
    )
    proc.stop()  # SIGTERM; asserts exit status 0
    (call,) = read_sidecars(env.tmp / "far")
    assert call.ok and call.pages == 5, "the call was cut instead of finished"
    assert "stopping: call on" in (env.tmp / "faxd.log").read_text()
    job_dir = spool.find_job(cfg.spool.directory, job_id)
    assert faxd.read_state(job_dir).recipients[0].state == "sent"
    again = FaxdProcess(cfg_path, env.tmp / "faxd.log")
    try:
        wait_or_show_log(env, lambda: capture.parsed("alice@example.com"), 30, "the receipt")
    finally:
        again.stop()
    assert "5 of 5" in e2e.check_receipt_basics(e2e.receipt_for(capture, job_id), job_id)


def test_sigterm_beyond_the_grace_time_ends_the_call_at_a_page_boundary(env) -> None:
    devices, _ = env.line(["modem0"], LineOptions(pacing=12))
    capture = env.smtp()
    cfg_path = e2e.write_config(env.tmp, devices, env.smtp_port, stop_grace_seconds=0.0)
    cfg = config.load(cfg_path)
    job_id = e2e.submit(cfg, "12345678/Stop Early", text=FIVE_PAGES)
    proc = FaxdProcess(cfg_path, env.tmp / "faxd.log")
    wait_or_show_log(
        env,
        lambda: (s := active_state(cfg, job_id)) and s.recipients[0].pages_confirmed >= 1,
        60,
        "the first page confirmed",
    )
    proc.stop()  # SIGTERM; asserts exit status 0
    assert "ends after page" in (env.tmp / "faxd.log").read_text()
    (call,) = read_sidecars(env.tmp / "far")
    rec = active_state(cfg, job_id).recipients[0]
    assert 1 <= call.pages == rec.pages_confirmed < 5, (call.pages, rec)
    assert call.result == "ok", "the call was cut mid-page instead of ended with EOP/DCN"
    assert (rec.state, rec.dials, rec.tries) == ("pending", 1, 0)  # no try charged
    assert rec.last_call_reason == "interrupted"
    again = FaxdProcess(cfg_path, env.tmp / "faxd.log")
    try:
        wait_or_show_log(env, lambda: capture.parsed("alice@example.com"), 60, "the receipt")
    finally:
        again.stop()
    calls = sorted(read_sidecars(env.tmp / "far"), key=lambda c: c.call)
    assert [c.pages for c in calls] == [rec.pages_confirmed, 5 - rec.pages_confirmed]
    body = e2e.check_receipt_basics(e2e.receipt_for(capture, job_id), job_id)
    assert "5 of 5" in body and "Attempts:      2" in body


def fake_soffice(env, body: str) -> str:
    """A LibreOffice stand-in: the render child runs it for an RTF attachment."""
    script = env.tmp / "soffice"
    script.write_text("#!/bin/sh\n" + body)
    script.chmod(0o755)
    return f'[render]\nsoffice = "{script}"'


def test_a_renderer_crash_fails_the_job_with_a_receipt_and_faxd_goes_on(env) -> None:
    # The converter kills the render process as a segfault in PDFium or a codec would.
    capture = env.smtp()
    sections = fake_soffice(env, "kill -SEGV $PPID\n")
    cfg_path = e2e.write_config(env.tmp, [], env.smtp_port, sections=sections)
    cfg = config.load(cfg_path)
    poisoned = e2e.submit(cfg, "12345678/Poison", attachment=("note.rtf", b"{\\rtf1 hello}"))
    proc = FaxdProcess(cfg_path, env.tmp / "faxd.log")
    try:
        wait_or_show_log(env, lambda: capture.parsed("alice@example.com"), 60, "the receipt")
        receipt = e2e.receipt_for(capture, poisoned)
        assert receipt["Subject"].startswith("Fax NOT sent")
        body = receipt.get_body(("plain",)).get_content()
        assert "(render_failed)" in body
        assert "note.rtf: the renderer crashed (signal SIGSEGV)" in body
        assert e2e.job_state(cfg, poisoned) == "failed"
        following = e2e.submit(cfg, "22222222/Next")
        state = wait_or_show_log(
            env,
            lambda: (s := active_state(cfg, following)) and s.rendered and s,
            60,
            "the next job rendered",
        )
        assert state.pages_total == 3 and not state.render_error
        assert proc.proc.poll() is None, "faxd died"
    finally:
        proc.stop()  # SIGTERM; asserts exit status 0
    assert len(capture.parsed("alice@example.com")) == 1  # one receipt, no re-render loop


def _kill_groups(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)


def test_an_isolated_render_cut_by_the_stop_is_redone_at_the_next_start(env) -> None:
    """``systemctl stop`` (KillMode=mixed) signals faxd, which exits after the grace
    time; systemd then kills the render process left over. The job is unharmed."""
    attempts = env.tmp / "attempts"
    sections = fake_soffice(env, f"echo $PPID $$ >> {attempts}\nexec sleep 120\n")
    cfg_path = e2e.write_config(
        env.tmp, [], env.smtp_port, sections=sections, stop_grace_seconds=0.0
    )
    cfg = config.load(cfg_path)
    job_id = e2e.submit(cfg, "12345678/Again", attachment=("note.rtf", b"{\\rtf1 hello}"))
    started: list[int] = []

    def conversions() -> list[str]:
        return attempts.read_text().splitlines() if attempts.exists() else []

    try:
        for run in (1, 2):
            proc = FaxdProcess(cfg_path, env.tmp / "faxd.log")
            try:
                wait_or_show_log(env, lambda n=run: len(conversions()) == n, 60, f"render {run}")
            finally:
                proc.stop()  # SIGTERM to faxd alone; asserts exit status 0
            started = [int(pid) for line in conversions() for pid in line.split()]
            _kill_groups(started)  # what systemd does to what is left in the unit
            state = active_state(cfg, job_id)
            assert not state.rendered and state.recipients[0].state == "pending"
    finally:
        _kill_groups(started)
