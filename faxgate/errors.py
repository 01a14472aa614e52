"""Error classes shared by every part of faxgate.

Each error says where it arises whether it is permanent (retrying cannot help:
reject, fail, exit 2) or temporary (retry later: 4xx, requeue). Callers
translate, they never guess.
"""

from __future__ import annotations


class FaxgateError(Exception):
    """Base class; ``permanent`` tells whether a retry could succeed."""

    permanent: bool = True


class PermanentError(FaxgateError):
    permanent = True


class TemporaryError(FaxgateError):
    permanent = False


class ConfigError(PermanentError):
    """The configuration file is missing, unreadable or invalid."""


class InputError(PermanentError):
    """Bad input from a user or an admin (CLI exit code 2)."""


class NotFoundError(PermanentError):
    """A named object (sender, job, network number) does not exist (CLI exit 1)."""
