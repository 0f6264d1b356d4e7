"""The one error type of the CLI: bad input found before any training, printed as one line with exit status 2."""

from __future__ import annotations

__all__ = ["UsageError"]


class UsageError(ValueError):
    """Bad input found before any training started; the message says what is wrong and how to fix it."""
