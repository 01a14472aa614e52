"""A simulated phone line: spandsp T.31 modem on a pty wired to a spandsp fax.

``SimulatedLine(device, outdir, LineOptions(...))`` runs one line in a thread;
``wait_for_fax(outdir)`` polls for finished calls; ``faxgate line`` runs lines
as a separate process. See ``faxgate.simline.line`` for the details.
"""

from faxgate.simline.line import (
    LineError,
    LineOptions,
    ReceivedFax,
    SimulatedLine,
    read_sidecars,
    wait_for_fax,
)

__all__ = [
    "LineError",
    "LineOptions",
    "ReceivedFax",
    "SimulatedLine",
    "read_sidecars",
    "wait_for_fax",
]
