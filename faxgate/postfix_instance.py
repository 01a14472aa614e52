"""A private Postfix on loopback, for tests, the benchmark and ``faxgate demo``.

The instance has its own ``config_directory``, ``queue_directory`` and
``data_directory`` under one base directory and listens only on 127.0.0.1 at a
chosen port; it never reads or writes ``/etc/postfix`` (only copies
``master.cf`` from there as a template) and never talks to the system Postfix.
Mail for any domain is relayed to ``relay`` (e.g. an aiosmtpd capture server),
so what the milter lets through can be inspected.

Must run as root (Postfix's master drops privileges to ``mail_owner``, which
the Debian package creates as ``postfix`` with group ``postdrop``).

Example::

    with PostfixInstance(base, smtp_port=2525, relay=("127.0.0.1", 2526),
                         milter="inet:127.0.0.1:8899") as mta:
        smtplib.SMTP("127.0.0.1", 2525).sendmail(...)
        mta.wait_queue_empty()
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from faxgate.errors import TemporaryError
from faxgate.processes import terminate

SYSTEM_MASTER_CF = Path("/etc/postfix/master.cf")
POSTFIX = "/usr/sbin/postfix"
POSTCONF = "/usr/sbin/postconf"
POSTQUEUE = "/usr/sbin/postqueue"

#: The milter settings of deploy/postfix/main.cf.snippet (kept equal by a test).
MILTER_SETTINGS: dict[str, str] = {
    "milter_protocol": "6",
    "milter_default_action": "tempfail",
    "milter_mail_macros": "i {auth_authen} {client_addr}",
    "milter_rcpt_macros": "",
    "milter_data_macros": "i",
    "milter_end_of_header_macros": "i",
    "milter_end_of_data_macros": "i",
    "milter_connect_timeout": "10s",
    "milter_command_timeout": "30s",
    "milter_content_timeout": "120s",
}


class PostfixError(TemporaryError):
    """The private Postfix could not be configured, started or stopped."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostfixInstance:
    """One private Postfix: configure, start, wait until ready, flush, stop."""

    def __init__(
        self,
        base_dir: str | os.PathLike[str],
        smtp_port: int,
        relay: tuple[str, int] | None = None,
        milter: str | None = None,
        settings: Mapping[str, str] | None = None,
        extra_listeners: Mapping[int, Mapping[str, str]] | None = None,
    ) -> None:
        """``milter`` is a Postfix milter address (``inet:127.0.0.1:8899`` or
        ``unix:/path``) or None; ``settings`` are extra main.cf parameters that
        override the defaults (e.g. ``{"milter_default_action": "accept"}``).
        ``extra_listeners`` maps more smtpd ports to their ``-o`` overrides, e.g.
        ``{2526: {"smtpd_milters": ""}}`` for a listener without the milter."""
        self.base_dir = Path(base_dir).absolute()
        self.smtp_port = smtp_port
        self.relay = relay
        self.milter = milter
        self.settings = dict(settings or {})
        self.extra_listeners = {p: dict(o) for p, o in (extra_listeners or {}).items()}
        self.config_dir = self.base_dir / "etc"
        self.queue_dir = self.base_dir / "queue"
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "maillog"

    # ---- configuration -------------------------------------------------------

    def main_cf(self) -> dict[str, str]:
        """All main.cf parameters this instance sets."""
        params = {
            "compatibility_level": "3.6",
            "queue_directory": str(self.queue_dir),
            "data_directory": str(self.data_dir),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "inet_interfaces": "loopback-only",
            "inet_protocols": "ipv4",
            "myhostname": "faxgate-test.localdomain",
            "mydestination": "",
            "mynetworks": "127.0.0.0/8",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            "smtpd_authorized_xclient_hosts": "127.0.0.1",
            "smtpd_peername_lookup": "no",
            "smtp_dns_support_level": "disabled",
            "relayhost": f"[{self.relay[0]}]:{self.relay[1]}" if self.relay else "",
            "maillog_file": str(self.log_file),
            "maillog_file_prefixes": str(self.base_dir),
            "biff": "no",
            "append_dot_mydomain": "no",
            "message_size_limit": "52428800",
            # Tests want delivery now, not after the next queue run.
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            "smtp_connect_timeout": "5s",
            "in_flow_delay": "0",
            "smtpd_client_connection_rate_limit": "0",
        }
        if self.milter:
            params.update(MILTER_SETTINGS)
            params["smtpd_milters"] = self.milter
        params.update(self.settings)
        return params

    def master_cf(self) -> str:
        """The system master.cf with chroot off and smtpd on 127.0.0.1:PORT only."""
        out = [f"127.0.0.1:{self.smtp_port} inet n - n - - smtpd"]
        for port, overrides in self.extra_listeners.items():
            out.append(f"127.0.0.1:{port} inet n - n - - smtpd")
            out.extend(f"  -o {key}={value}" for key, value in overrides.items())
        dropping = False
        for line in SYSTEM_MASTER_CF.read_text().splitlines():
            if line[:1].isspace() and line.strip():  # continuation of the service above
                if not dropping:
                    out.append(line)
                continue
            dropping = False
            fields = line.split()
            if line.startswith("#") or len(fields) < 8:
                out.append(line)
            elif fields[1] == "inet":
                dropping = True  # every listener (smtp, submission...) is replaced by ours
            else:
                fields[4] = "n"  # no chroot: the jail would need /etc files copied in
                out.append("  ".join(fields))
        return "\n".join(out) + "\n"

    def configure(self) -> None:
        """Write main.cf (through ``postconf -e``) and master.cf; create directories."""
        for ancestor in self.base_dir.parents:
            if ancestor.exists() and not ancestor.stat().st_mode & 0o001:
                raise PostfixError(
                    f"{ancestor} is not searchable by others, so the postfix user cannot "
                    f"reach {self.base_dir}; use a base directory such as "
                    "tempfile.mkdtemp() under /tmp (pytest's tmp_path is private)"
                )
        for directory in (self.config_dir, self.queue_dir, self.data_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for directory in (self.base_dir, self.config_dir, self.queue_dir):
            directory.chmod(0o755)  # Postfix refuses group/world-writable paths
        shutil.chown(self.data_dir, "postfix")
        (self.config_dir / "main.cf").write_text("# private faxgate Postfix instance\n")
        (self.config_dir / "master.cf").write_text(self.master_cf())
        pairs = [f"{k}={v}" for k, v in self.main_cf().items()]
        self._run([POSTCONF, "-c", str(self.config_dir), "-e", *pairs])
        self._run([POSTFIX, "-c", str(self.config_dir), "check"])

    # ---- life cycle ----------------------------------------------------------

    def start(self, timeout: float = 30.0) -> None:
        """Configure, start the master daemon and wait until SMTP answers."""
        self.configure()
        self._run([POSTFIX, "-c", str(self.config_dir), "start"])
        self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll until every smtpd listener sends its 220 greeting."""
        deadline = time.monotonic() + timeout
        for port in (self.smtp_port, *self.extra_listeners):
            last: Exception | None = None
            while True:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
                        if conn.recv(512).startswith(b"220"):
                            conn.sendall(b"QUIT\r\n")
                            break
                except OSError as exc:
                    last = exc
                if time.monotonic() > deadline:
                    raise PostfixError(f"Postfix on port {port} not ready after {timeout}s: {last}")
                time.sleep(0.05)

    def master_pid(self) -> int | None:
        try:
            return int((self.queue_dir / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def running(self) -> bool:
        pid = self.master_pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the master and wait until it has exited (kill it if it hangs)."""
        pid = self.master_pid()
        if pid is None or not self.running():
            return
        subprocess.run(
            [POSTFIX, "-c", str(self.config_dir), "stop"], capture_output=True, check=False
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def reload(self, **params: str) -> None:
        """Change main.cf parameters of the running instance."""
        self.settings.update(params)
        pairs = [f"{k}={v}" for k, v in params.items()]
        self._run([POSTCONF, "-c", str(self.config_dir), "-e", *pairs])
        self._run([POSTFIX, "-c", str(self.config_dir), "reload"])

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---- queue ---------------------------------------------------------------

    def flush(self) -> None:
        """Try to deliver every deferred message now (``postqueue -f``)."""
        self._run([POSTQUEUE, "-c", str(self.config_dir), "-f"])

    def queue(self) -> list[dict]:
        """The queue as ``postqueue -j`` reports it (one dict per message)."""
        out = self._run([POSTQUEUE, "-c", str(self.config_dir), "-j"])
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def wait_queue_empty(self, timeout: float = 20.0) -> None:
        """Poll until every message has left the queue (flushing deferred ones)."""
        deadline = time.monotonic() + timeout
        flushed = time.monotonic()
        while time.monotonic() < deadline:
            if not self.queue():
                return
            if time.monotonic() - flushed > 1.0:
                self.flush()
                flushed = time.monotonic()
            time.sleep(0.05)
        raise PostfixError(f"Postfix queue not empty after {timeout}s: {self.queue()}")

    def log_text(self) -> str:
        """The instance's mail log (``maillog_file``)."""
        try:
            return self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def _run(self, argv: list[str]) -> str:
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise PostfixError(f"{argv[0]}: {exc}") from exc
        if done.returncode != 0:
            raise PostfixError(
                f"{' '.join(argv[:4])} failed ({done.returncode}): {done.stderr.strip()}"
            )
        return done.stdout


def wait_for_port(port: int, timeout: float = 20.0, host: str = "127.0.0.1") -> None:
    """Poll until something accepts TCP connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=1):
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise PostfixError(f"nothing listens on {host}:{port} after {timeout}s") from exc
            time.sleep(0.05)


def wait_for_unix_socket(path: str | os.PathLike[str], timeout: float = 20.0) -> None:
    """Poll until something accepts connections on the Unix socket ``path``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.connect(os.fspath(path))
                return
        except OSError as exc:
            if time.monotonic() > deadline:
                raise PostfixError(f"nothing listens on {path} after {timeout}s") from exc
            time.sleep(0.05)


class MilterProcess:
    """``faxgate --config CONFIG milter`` in a subprocess, for tests and demos.

    The milter listens on ``inet:PORT@127.0.0.1`` (``port``) or, with
    ``unix_socket``, on that Unix socket, overriding ``[milter] socket``; its log
    goes to ``log_path``. A Unix socket is set up as deploy/postfix advises: the
    milter runs with group ``postfix`` and umask 007, so Postfix's smtpd (user
    ``postfix``) may connect and nobody else. The working directory is the config
    file's folder, never the source tree, whose ``milter/`` folder would shadow
    pymilter's ``milter`` module.
    """

    def __init__(
        self,
        config_path: str | os.PathLike[str],
        port: int | None,
        log_path: str | os.PathLike[str],
        *,
        unix_socket: str | os.PathLike[str] | None = None,
    ) -> None:
        if (port is None) == (unix_socket is None):
            raise ValueError("give either a port or a unix_socket")
        self.config_path = Path(config_path).absolute()
        self.port = port
        self.unix_socket = Path(unix_socket).absolute() if unix_socket is not None else None
        self.log_path = Path(log_path)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket_spec(self) -> str:
        """The ``[milter] socket`` value the milter is started with."""
        if self.unix_socket is not None:
            return f"unix:{self.unix_socket}"
        return f"inet:{self.port}@127.0.0.1"

    @property
    def postfix_address(self) -> str:
        """The address to put into ``smtpd_milters``."""
        if self.unix_socket is not None:
            return f"unix:{self.unix_socket}"
        return f"inet:127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        unix = self.unix_socket is not None
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "faxgate.cli",
                    "--config",
                    str(self.config_path),
                    "-v",
                    "milter",
                    "--socket",
                    self.socket_spec,
                ],
                cwd=self.config_path.parent,
                stdout=log,
                stderr=subprocess.STDOUT,
                group="postfix" if unix else None,
                umask=0o007 if unix else -1,
            )
        try:
            if self.unix_socket is not None:
                wait_for_unix_socket(self.unix_socket, timeout)
            else:
                wait_for_port(self.port or 0, timeout)
        except PostfixError:
            self.stop()
            raise PostfixError(f"milter did not start; log:\n{self.log_text()}") from None

    def stop(self, timeout: float = 10.0) -> None:
        terminate(self.process, timeout)

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def __enter__(self) -> MilterProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
