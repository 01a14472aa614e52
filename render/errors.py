"""Errors raised while sniffing and rendering documents.

Every error names the file and the reason, because the sender reads the message
in a bounce or a receipt and must know which attachment to fix.
"""

from __future__ import annotations

from faxgate.errors import ConfigError, FaxgateError, PermanentError, TemporaryError


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


#: Errors that cross process boundaries as plain records (never pickles: the
#: other process handles hostile input and must not be able to run code here).
_RECORDED: dict[str, type[UnsupportedDocument] | type[RenderError]] = {
    cls.__name__: cls
    for cls in (
        UnsupportedDocument,
        EncryptedDocument,
        RenderError,
        CorruptDocument,
        DocumentTooLarge,
        PageLimitExceeded,
        ConversionTimeout,
    )
}


def error_record(exc: BaseException) -> dict[str, str | None]:
    """A JSON-able description of ``exc`` for :func:`error_from_record`."""
    return {
        "type": type(exc).__name__,
        "message": str(exc),
        "filename": getattr(exc, "filename", None),
        "reason": getattr(exc, "reason", None),
    }


def error_from_record(record: dict, filename: str) -> FaxgateError:
    """The error a child process reported; unknown kinds become a RenderError on ``filename``."""
    kind = str(record.get("type"))
    if kind in _RECORDED:
        return _RECORDED[kind](record.get("filename"), str(record.get("reason")))
    if kind == "ConverterUnavailable":
        return ConverterUnavailable(str(record.get("message")))
    if kind == "ConfigError":
        return ConfigError(str(record.get("message")))
    return RenderError(filename, f"rendering failed: {kind}: {record.get('message')}")
