"""Running simulated lines as a process: ``faxgate line`` and a handle to start one.

The protocol between the process and whoever started it is one line on
stdout per device, ``READY <device>``, printed once that device's symlink
exists. SIGTERM or SIGINT stops every line; each removes its symlink and
records any call in progress before the process exits 0.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import IO

from faxgate.errors import InputError
from faxgate.processes import terminate
from faxgate.simline.line import LineError, LineOptions, SimulatedLine


def serve(
    devices: Sequence[str],
    outdir: str | Path,
    options: LineOptions,
    stop: threading.Event | None = None,
    out: IO[str] | None = None,
) -> int:
    """Run one line per device until ``stop`` is set (or SIGTERM/SIGINT); 0 if all stayed healthy."""
    out = out or sys.stdout
    names = [Path(device).name for device in devices]
    if len(set(names)) != len(names):
        raise InputError("devices need distinct file names: the name labels each call's files")
    stop = stop or threading.Event()
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    lines: list[SimulatedLine] = []
    try:
        for device in devices:
            line = SimulatedLine(device, outdir, options)
            line.start()
            lines.append(line)
            print(f"READY {device}", file=out, flush=True)
        while not stop.wait(0.2):
            if any(not line.running for line in lines):
                break
    finally:
        failures = []
        for line in lines:
            try:
                line.stop()
            except LineError as exc:
                failures.append(str(exc))
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    for failure in failures:
        print(f"faxgate line: {failure}", file=sys.stderr)
    return 1 if failures else 0


def options_to_args(options: LineOptions) -> list[str]:
    """The ``faxgate line`` arguments that reproduce ``options`` (for subprocesses)."""
    defaults = LineOptions()
    args: list[str] = []
    for item in fields(LineOptions):
        value = getattr(options, item.name)
        if value == getattr(defaults, item.name) and item.name != "pacing":
            continue
        flag = "--" + item.name.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        elif item.name in ("resolutions", "compressions"):
            for entry in value:
                args += [flag[:-1], entry]  # --resolution fine --resolution standard
        elif item.name == "hangup_after_page" and value is None:
            continue
        else:
            args += [flag, str(value)]
    return args


class LineProcess:
    """A ``faxgate line`` child process, started and awaited until every device is READY.

    For tests that want the line outside their own process (as faxd will see
    it in production)::

        with LineProcess(["/tmp/x/modem0"], outdir, LineOptions(pacing=30)) as proc:
            ...  # dial /tmp/x/modem0
    """

    def __init__(
        self,
        devices: Sequence[str | Path],
        outdir: str | Path,
        options: LineOptions | None = None,
        timeout: float = 20,
    ) -> None:
        self.devices = [str(device) for device in devices]
        self.outdir = Path(outdir)
        command = [sys.executable, "-m", "faxgate.cli", "line", "--outdir", str(outdir)]
        for device in self.devices:
            command += ["--device", device]
        self.command = command + options_to_args(options or LineOptions())
        self.timeout = timeout
        self.process: subprocess.Popen[bytes] | None = None
        # stderr goes to a file that lives as long as this handle: a pipe nobody
        # drains would block a chatty child.
        self._stderr: IO[str] = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115
        self._stderr_text = ""

    def start(self) -> None:
        """Start the process and return once it printed READY for every device."""
        self.process = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=self._stderr)
        assert self.process.stdout is not None
        stdout = self.process.stdout.fileno()
        waiting = set(self.devices)
        pending = b""
        deadline = time.monotonic() + self.timeout
        while waiting:
            # Raw reads: a buffered readline() could hold the next READY while
            # select() waits on an empty pipe.
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([stdout], [], [], max(remaining, 0))
            if not ready:
                self.stop()
                raise LineError(f"faxgate line not READY within {self.timeout} s")
            chunk = os.read(stdout, 4096)
            if not chunk:
                code = self.stop()
                raise LineError(f"faxgate line exited {code} before READY: {self.stderr()}")
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                text = line.decode(errors="replace").strip()
                if text.startswith("READY "):
                    waiting.discard(text[len("READY ") :])

    def stderr(self) -> str:
        """What the process wrote to stderr so far (all of it once stopped)."""
        if self._stderr.closed:
            return self._stderr_text
        self._stderr.seek(0)
        return self._stderr.read()

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM the process and wait; returns its exit code."""
        if self.process is None:
            return 0
        try:
            return terminate(self.process, timeout)
        finally:
            if self.process.stdout is not None:
                self.process.stdout.close()
            if not self._stderr.closed:
                self._stderr_text = self.stderr()
                self._stderr.close()

    def __enter__(self) -> LineProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
