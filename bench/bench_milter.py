"""What does the fax milter cost Postfix? Same Postfix, with and without it.

One private Postfix (faxgate.postfix_instance) with two smtpd listeners: one
with the milter (run as ``faxgate milter`` in a subprocess, as in production)
and one without. Both relay to an aiosmtpd sink in this process. The mix is
90 % ordinary mail (a few KB) and 10 % fax mail with a 500 KB PDF from a
registered sender. Messages go through both listeners interleaved, in rounds,
so machine noise hits both sides alike; each message is its own SMTP
connection (the worst case for the milter: connect and negotiate every time).

Reported: ordinary-mail throughput ratio (with / without milter, concurrent
clients) and p50/p99 of the end-of-DATA latency on both sides and the added
latency, for ordinary and for fax mail (fax mail with the milter is spooled
with fsync before Postfix answers; without it, it is merely relayed).

Run as root from the repository root::

    .venv/bin/python bench/bench_milter.py [--messages 1000] [--clients 4] [--unix]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import smtplib
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from aiosmtpd.controller import Controller
from PIL import Image

from faxgate.faxd import spool
from faxgate.postfix_instance import (
    MilterProcess,
    PostfixInstance,
    free_port,
    wait_for_port,
    wait_for_unix_socket,
)
from faxgate.store import Store

FAX = "fax@fax.example.com"
ALICE = "alice@example.com"

#: The cheapest possible pymilter milter with the same negotiation for ordinary
#: mail (no reply to MAIL/RCPT, ACCEPT at DATA): the floor set by libmilter and
#: Postfix's milter protocol, against which faxgate's own cost is visible.
EMPTY_MILTER = """
import sys, Milter
class Empty(Milter.Base):
    @Milter.noreply
    def envfrom(self, f, *a): return Milter.CONTINUE
    @Milter.noreply
    def envrcpt(self, t, *a): return Milter.CONTINUE
    def data(self): return Milter.ACCEPT
Milter.factory = Empty
Milter.runmilter("empty", sys.argv[1], 240)
"""


class Sink:
    def __init__(self) -> None:
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        with self.lock:
            self.count += 1
        return "250 OK"


def big_pdf(min_bytes: int = 500_000) -> bytes:
    side = 600
    while True:
        image = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
        buf = io.BytesIO()
        image.save(buf, "PDF", quality=95)
        if len(buf.getvalue()) >= min_bytes:
            return buf.getvalue()
        side += 40


def ordinary_mail(index: int) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"user{index % 50}@example.org"
    msg["To"] = "bob@example.net"
    msg["Subject"] = f"Meeting notes {index}"
    msg["Message-ID"] = make_msgid(domain="example.org")
    msg.set_content(("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 60 + "\n") * 2)
    return msg.as_bytes()


def fax_mail(pdf: bytes) -> bytes:
    msg = EmailMessage()
    msg["From"] = ALICE
    msg["To"] = FAX
    msg["Subject"] = "86-755-83235170/Benchmark"
    msg["Message-ID"] = make_msgid(domain="example.com")
    msg.set_content("Please fax.\n")
    msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="big.pdf")
    return msg.as_bytes()


def send(port: int, sender: str, rcpt: str, raw: bytes) -> float:
    """One SMTP transaction on a new connection; seconds until the end-of-DATA reply."""
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("bench.example.org")
        client.sendmail(sender, [rcpt], raw)
    return time.perf_counter() - start


def send_batch(port: int, mails: list[bytes]) -> None:
    """Several messages over one SMTP connection (RSET between them, as MTAs do)."""
    with smtplib.SMTP("127.0.0.1", port, timeout=60) as client:
        client.ehlo("bench.example.org")
        for raw in mails:
            client.sendmail("user@example.org", ["bob@example.net"], raw)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def throughput(port: int, mails: list[bytes], clients: int, per_connection: int) -> float:
    """Seconds to send ``mails`` with ``clients`` concurrent connections."""
    batches = [mails[i : i + per_connection] for i in range(0, len(mails), per_connection)]
    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(lambda batch: send_batch(port, batch), batches))
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000, help="messages per side")
    parser.add_argument("--clients", type=int, default=4, help="concurrent SMTP clients")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds")
    parser.add_argument(
        "--per-connection",
        type=int,
        default=1,
        help="ordinary messages per SMTP connection in the throughput phase",
    )
    parser.add_argument(
        "--unix",
        action="store_true",
        help="both milters on Unix sockets instead of inet:127.0.0.1 (as deploy/postfix allows)",
    )
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_milter: run as root (it starts a private Postfix)", file=sys.stderr)
        return 2

    base = Path(tempfile.mkdtemp(prefix="faxgate-bench-"))
    base.chmod(0o755)
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port())
    controller.start()
    spool_dir = base / "spool"
    config = base / "faxgate.toml"
    config.write_text(
        f'[store]\npath = "{base / "faxgate.db"}"\n'
        f'[spool]\ndirectory = "{spool_dir}"\n'
        f'[milter]\nfax_addresses = ["{FAX}"]\n'
        "[limits]\njobs_per_day = 0\n"
    )
    store = Store(base / "faxgate.db")
    store.add_sender(ALICE, "Bench")
    plain_port, empty_port, empty_milter_port = free_port(), free_port(), free_port()
    if args.unix:
        milter = MilterProcess(config, None, base / "milter.log", unix_socket=base / "faxgate.sock")
        empty_socket = f"unix:{base / 'empty.sock'}"
        empty_address = empty_socket
    else:
        milter = MilterProcess(config, free_port(), base / "milter.log")
        empty_socket = f"inet:{empty_milter_port}@127.0.0.1"
        empty_address = f"inet:127.0.0.1:{empty_milter_port}"
    mta = PostfixInstance(
        base / "postfix",
        free_port(),
        relay=("127.0.0.1", controller.port),
        milter=milter.postfix_address,
        extra_listeners={
            plain_port: {"smtpd_milters": ""},
            empty_port: {"smtpd_milters": empty_address},
        },
        settings={"default_process_limit": "200"},
    )
    empty = subprocess.Popen(
        [sys.executable, "-c", EMPTY_MILTER, empty_socket],
        cwd=base,
        # A Unix socket Postfix's smtpd (user postfix) may use, as MilterProcess sets up.
        group="postfix" if args.unix else None,
        umask=0o007 if args.unix else -1,
    )
    try:
        milter.start()
        if args.unix:
            wait_for_unix_socket(base / "empty.sock")
        else:
            wait_for_port(empty_milter_port)
        mta.start()
        ports = {"plain": plain_port, "empty": empty_port, "faxgate": mta.smtp_port}
        return run(args, mta, ports, spool_dir, milter, empty.pid)
    finally:
        mta.stop()
        milter.stop()
        empty.terminate()
        empty.wait()
        controller.stop()
        store.close()
        if os.environ.get("BENCH_KEEP"):
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)


def run(
    args: argparse.Namespace,
    mta: PostfixInstance,
    ports: dict[str, int],
    spool_dir: Path,
    milter: MilterProcess,
    empty_pid: int,
) -> int:
    pdf = big_pdf()
    per_round = max(1, args.messages // args.rounds)
    fax_every = 10  # 10 % fax mail
    latency: dict[tuple[str, str], list[float]] = {
        (kind, side): [] for kind in ("ordinary", "fax") for side in ("faxgate", "plain")
    }
    elapsed: dict[str, list[float]] = {side: [] for side in ports}
    milter_cpu = {"faxgate": 0.0, "empty": 0.0}
    pids = {"faxgate": milter.process.pid if milter.process else 0, "empty": empty_pid}
    # Warm up every path (process spawn, milter imports, first spool write).
    for port in ports.values():
        send(port, "user@example.org", "bob@example.net", ordinary_mail(0))
    for side in ("faxgate", "plain"):
        send(ports[side], ALICE, FAX, fax_mail(pdf))
    warm_jobs = len(spool.list_jobs(spool_dir))

    for round_no in range(args.rounds):
        # Latency, one message at a time, alternating sides message by message.
        for index in range(per_round):
            is_fax = index % fax_every == 0
            kind = "fax" if is_fax else "ordinary"
            sender, rcpt = (ALICE, FAX) if is_fax else ("user@example.org", "bob@example.net")
            order = ["faxgate", "plain"] if index % 2 else ["plain", "faxgate"]
            for side in order:
                # A fresh Message-ID for every fax: no duplicate shortcut.
                raw = fax_mail(pdf) if is_fax else ordinary_mail(index)
                latency[(kind, side)].append(send(ports[side], sender, rcpt, raw))
        # Throughput of ordinary mail with concurrent clients, every side in turn
        # (rotating which goes first), letting Postfix drain its queue in between.
        mails = [ordinary_mail(i) for i in range(per_round)]
        sides = list(ports)
        sides = sides[round_no % len(sides) :] + sides[: round_no % len(sides)]
        for side in sides:
            mta.wait_queue_empty(timeout=120)
            cpu_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
            elapsed[side].append(throughput(ports[side], mails, args.clients, args.per_connection))
            if side in pids:
                milter_cpu[side] += cpu_seconds(pids[side]) - cpu_before[side]
    mta.wait_queue_empty(timeout=120)

    spooled = len(spool.list_jobs(spool_dir)) - warm_jobs
    expected = len(latency[("fax", "faxgate")])
    total = per_round * args.rounds
    print(
        f"faxgate milter benchmark: {total} messages per side "
        f"({100 // fax_every} % fax with a {len(pdf) // 1000} KB PDF), "
        f"{args.rounds} interleaved rounds"
    )
    print(f"fax jobs spooled: {spooled} of {expected}")
    print("load average (1, 5, 15 min) at the end: {:.1f} {:.1f} {:.1f}".format(*os.getloadavg()))
    print(
        f"\nordinary mail throughput, {args.clients} concurrent clients, "
        f"{args.per_connection} message(s) per SMTP connection, "
        f"milters on {'Unix' if args.unix else 'inet'} sockets"
    )
    print(f"  {'listener':32} {'msgs/s':>8} {'vs none':>8} {'round ratios (median, min-max)':>32}")
    labels = {
        "plain": "no milter",
        "empty": "empty pymilter milter (floor)",
        "faxgate": "faxgate milter",
    }
    base_rate = total / sum(elapsed["plain"])
    for side, label in labels.items():
        rate = total / sum(elapsed[side])
        ratios = [p / s for p, s in zip(elapsed["plain"], elapsed[side], strict=True)]
        spread = (
            f"{statistics.median(ratios):.3f} ({min(ratios):.2f}-{max(ratios):.2f})"
            if side != "plain"
            else ""
        )
        print(f"  {label:32} {rate:8.1f} {rate / base_rate:7.3f}x {spread:>32}")
    faxgate_vs_floor = sum(elapsed["empty"]) / sum(elapsed["faxgate"])
    print(f"  faxgate vs empty milter: {faxgate_vs_floor:.3f}x   (target vs none: >= 0.95x)")
    print(
        "  milter process CPU per ordinary message: "
        f"faxgate {milter_cpu['faxgate'] / total * 1e3:.2f} ms, "
        f"empty {milter_cpu['empty'] / total * 1e3:.2f} ms"
    )
    print("\nend-of-DATA latency per message, ms      p50      p99")
    for kind in ("ordinary", "fax"):
        plain, milter_side = latency[(kind, "plain")], latency[(kind, "faxgate")]
        for label, values in (("without milter", plain), ("with milter", milter_side)):
            print(
                f"  {kind:8} {label:15} {percentile(values, 0.5) * 1e3:12.1f} "
                f"{percentile(values, 0.99) * 1e3:8.1f}"
            )
        added50 = (percentile(milter_side, 0.5) - percentile(plain, 0.5)) * 1e3
        added99 = (percentile(milter_side, 0.99) - percentile(plain, 0.99)) * 1e3
        print(f"  {kind:8} {'added':15} {added50:12.1f} {added99:8.1f}")
    fax_p99 = percentile(latency[("fax", "faxgate")], 0.99) * 1e3
    print(f"\nfax mail accepted and spooled: p99 {fax_p99:.1f} ms (target <= 100 ms)")
    inside = [float(ms) for ms in re.findall(r"spooled in (\d+) ms", milter.log_text())]
    if inside:
        print(
            f"  of which inside the milter (MIME parse, sniff, spool with fsync, store): "
            f"p50 {percentile(inside, 0.5):.0f} ms, p99 {percentile(inside, 0.99):.0f} ms, "
            f"min {min(inside):.0f} ms"
        )
    return 0 if spooled == expected else 1


if __name__ == "__main__":
    sys.exit(main())
