"""Accept-to-dial latency of faxd: from a job's rename into the spool to the
``ATD`` the simulated modem receives.

Jobs are submitted one at a time through ``faxgate.faxd.spool.submit`` (as the
milter does); each waits for its call to reach the line before the next is
submitted, after a random pause (up to one rescan interval for the baseline,
so there a job waits half an interval on average), so queueing behind a busy
modem does not count. The far end
answers BUSY (a short call; the busy retry is set far in the future), so a
run of 100 jobs takes about a minute. The same run repeats the measurement
with inotify switched off, i.e. finding jobs only by the periodic rescan, as
a polling daemon does (the original product polled every 5 minutes; the
baseline here polls every ``--poll`` seconds).

Usage (from the repository root)::

    .venv/bin/python bench/bench_faxd.py [--jobs 100] [--baseline-jobs 20] [--poll 5]
"""

from __future__ import annotations

import argparse
import email.message
import email.policy
import random
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

from faxgate import config
from faxgate.faxd import spool
from faxgate.faxd.daemon import FaxDaemon
from faxgate.grammar.subject import parse_subject
from faxgate.simline import LineOptions, read_sidecars
from faxgate.simline.process import LineProcess

TEXT = "Benchmark page\nline two\n"


def write_config(tmp: Path, device: Path, rescan: int) -> config.Config:
    path = tmp / "faxgate.toml"
    path.write_text(
        "\n".join(
            [
                "[store]",
                f'path = "{tmp}/faxgate.db"',
                "[spool]",
                f'directory = "{tmp}/spool"',
                "[fax]",
                f'modems = ["{device}"]',
                'lock_dir = ""',
                "[smtp]",
                "port = 1",  # receipts are not part of this measurement
                "[receipts]",
                "retry_seconds = 3600.0",
                "[faxd]",
                f"rescan_seconds = {rescan}",
                "busy_retry_seconds = 3600.0",
                "kill_time_seconds = 7200.0",
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    return config.load(path)


def submit(cfg: config.Config, n: int) -> str:
    msg = email.message.EmailMessage()
    msg["From"] = "bench@example.com"
    msg["Subject"] = f"{10000000 + n}/Bench"
    msg["Message-ID"] = f"<bench-{n}-{time.time_ns()}@example.com>"
    msg.set_content("bench")
    msg.add_attachment(TEXT.encode(), maintype="text", subtype="plain", filename="b.txt")
    part = next(i for i, p in enumerate(msg.walk()) if p.get_filename() == "b.txt")
    job = {
        "sender": "bench@example.com",
        "from_header": "bench@example.com",
        "auth": {},
        "recipients": [r.to_dict() for r in parse_subject(msg["Subject"], cfg.dialplan)],
        "subject": msg["Subject"],
        "message_id": msg["Message-ID"],
        "queue_id": f"B{n}",
        "created": datetime.now().astimezone().isoformat(),
        "priority": "normal",
        "documents": [
            {"filename": "b.txt", "kind": "text", "format": "text", "part": part, "size": 25}
        ],
        "body_text": "",
    }
    return spool.submit(cfg.spool.directory, job, msg.as_bytes(policy=email.policy.SMTP))


def measure(jobs: int, rescan: int, watch: bool, pacing: float) -> list[float]:
    """Latencies in seconds, one per job."""
    with tempfile.TemporaryDirectory(prefix="bench-faxd-") as name:
        tmp = Path(name)
        device, far = tmp / "modem0", tmp / "far"
        cfg = write_config(tmp, device, rescan)
        daemon = FaxDaemon(cfg, watch=watch)
        ready = threading.Event()
        thread = threading.Thread(target=daemon.run, args=(ready.set,), daemon=True)
        with LineProcess([device], far, LineOptions(pacing=pacing, behaviour="busy")):
            thread.start()
            ready.wait(30)
            latencies = []
            rng = random.Random(1)
            for n in range(jobs):
                # Jobs arrive at random moments relative to the daemon's rescans.
                time.sleep(rng.uniform(0, rescan if not watch else 0.1))
                accepted = time.time()  # submit() returns right after its rename + dir fsync
                submit(cfg, n)
                deadline = time.monotonic() + rescan * 2 + 30
                while len(read_sidecars(far)) <= n:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"job {n} was never dialled")
                    time.sleep(0.005)
                call = sorted(read_sidecars(far), key=lambda c: c.call)[n]
                dialled = datetime.fromisoformat(call.json["started_at"]).timestamp()
                latencies.append(dialled - accepted)
            daemon.stop()
            thread.join(30)
        return latencies


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--baseline-jobs", type=int, default=20)
    parser.add_argument("--poll", type=int, default=5, help="baseline rescan interval (s)")
    parser.add_argument("--pacing", type=float, default=50.0)
    args = parser.parse_args()
    rows = [
        ("faxd (inotify)", measure(args.jobs, 30, True, args.pacing)),
        (
            f"polling every {args.poll} s",
            measure(args.baseline_jobs, args.poll, False, args.pacing),
        ),
    ]
    base_p99 = percentile(rows[0][1], 99)
    print(
        f"{'daemon':24} {'jobs':>5} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8} {'p99 vs faxd':>12}"
    )
    for name, values in rows:
        p50, p99 = percentile(values, 50) * 1000, percentile(values, 99) * 1000
        print(
            f"{name:24} {len(values):5d} {p50:8.0f} {p99:8.0f} {max(values) * 1000:8.0f} "
            f"{percentile(values, 99) / base_p99:11.1f}x"
        )
    print(f"mean faxd latency {statistics.mean(rows[0][1]) * 1000:.0f} ms; target p99 < 1000 ms")
    return 0 if base_p99 < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
