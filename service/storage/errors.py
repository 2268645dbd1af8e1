"""Errors of the index, whichever database holds it."""

from __future__ import annotations


class IndexUnavailableError(OSError):
    """The index cannot be opened or written (corrupt, read-only, disk gone, database
    unreachable). An OSError, so that ``hypoxnode serve`` reports it in one line like any other
    start-up failure and the C-STORE handler answers it with 0xA700."""
