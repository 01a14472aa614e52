"""Office and legacy formats → PDF through LibreOffice headless.

Each conversion runs in its own temporary directory with its own LibreOffice
profile (concurrent soffice processes sharing a profile block each other or
crash), in its own process session so a hung converter is killed with every
child process, and reads an input written under a generated name: the
sender's filename never reaches the file system or the command line.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

from faxgate.render.errors import ConversionTimeout, ConverterUnavailable, CorruptDocument


def convert_to_pdf(
    data: bytes,
    fmt: str,
    filename: str,
    soffice: str = "soffice",
    timeout: float = 120.0,
    tempdir: str | None = None,
) -> bytes:
    """The PDF LibreOffice prints for ``data`` (a file of format ``fmt``, e.g. "docx")."""
    executable = shutil.which(soffice)
    if executable is None:
        raise ConverterUnavailable(f"LibreOffice ({soffice!r}) is not installed")
    with tempfile.TemporaryDirectory(prefix="faxgate-soffice-", dir=tempdir) as work:
        workdir = Path(work)
        source = workdir / f"document.{fmt}"
        source.write_bytes(data)
        outdir = workdir / "out"
        command = [
            executable,
            "--headless",
            "--norestore",
            "--nologo",
            "--nodefault",
            "--nolockcheck",
            f"-env:UserInstallation={(workdir / 'profile').as_uri()}",
            "--convert-to",
            "pdf",
            "--outdir",
            str(outdir),
            str(source),
        ]
        env = dict(os.environ, HOME=str(workdir), TMPDIR=str(workdir))
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            cwd=workdir,
            env=env,
            start_new_session=True,
        )
        try:
            output, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise ConversionTimeout(
                filename, f"LibreOffice did not convert it within {timeout:g} seconds"
            ) from None
        finally:
            _kill_group(process)
        result = outdir / "document.pdf"
        if process.returncode != 0 or not result.is_file() or result.stat().st_size == 0:
            detail = output.decode(errors="replace").strip().splitlines()
            why = next((line for line in detail if "rror" in line), "no output")
            raise CorruptDocument(filename, f"LibreOffice could not read the document ({why})")
        return result.read_bytes()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """Kill soffice and every process it started (they share its session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None or process.stdout and not process.stdout.closed:
        process.communicate()
