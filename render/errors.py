"""Errors raised while sniffing and rendering documents.

Every error names the file and the reason, because the sender reads the message
in a bounce or a receipt and must know which attachment to fix.
"""

from __future__ import annotations

from faxgate.errors import PermanentError, TemporaryError


class UnsupportedDocument(PermanentError):
    """The file is of a kind that cannot be faxed (or is not what it claims)."""

    def __init__(self, filename: str | None, reason: str) -> None:
        self.filename = filename or "attachment"
        self.reason = reason
        super().__init__(f"{self.filename}: {reason}")

    def __reduce__(self) -> tuple:
        return (type(self), (self.filename, self.reason))


class EncryptedDocument(UnsupportedDocument):
    """The file is password protected; we cannot open it without the password."""


class RenderError(PermanentError):
    """The file looked supported but could not be turned into pages."""

    def __init__(self, filename: str | None, reason: str) -> None:
        self.filename = filename or "attachment"
        self.reason = reason
        super().__init__(f"{self.filename}: {reason}")

    def __reduce__(self) -> tuple:  # errors cross process boundaries (forked renderers)
        return (type(self), (self.filename, self.reason))


class CorruptDocument(RenderError):
    """The file is damaged or malformed."""


class DocumentTooLarge(RenderError):
    """An image or page would decode to more pixels than allowed (decompression bomb)."""


class PageLimitExceeded(RenderError):
    """The job has more pages than the configured limit."""


class ConversionTimeout(RenderError):
    """LibreOffice did not finish in time and was killed; the same file would hang again."""


class ConverterUnavailable(TemporaryError):
    """LibreOffice is not installed or could not start: an admin problem, retry later."""
