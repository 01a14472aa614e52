"""Stopping child processes the way the demo, the tests and the tools need it."""

from __future__ import annotations

import subprocess


def terminate(process: subprocess.Popen | None, timeout: float) -> int | None:
    """SIGTERM ``process``, give it ``timeout`` seconds to finish cleanly (faxd
    ends its call, the line records it), then SIGKILL. Returns the exit code, or
    None when there was no process."""
    if process is None:
        return None
    if process.poll() is None:
        process.terminate()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()
