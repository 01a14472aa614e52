"""Waiting for and stopping child processes the way the demo, the tests and
the tools need it."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any


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


def wait_until(
    predicate: Callable[[], Any],
    timeout: float,
    what: str,
    error: type[Exception] = TimeoutError,
    interval: float = 0.05,
) -> Any:
    """Poll ``predicate`` until it returns something true, and return that; raise
    ``error`` naming ``what`` if ``timeout`` seconds pass first."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise error(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)
