"""Error types a user can act on.

Every error the platform raises on bad input is an :class:`MvpError`; the CLI prints its message
(no traceback) and exits with status 2. Messages name the file, the field and a fix.
"""

from __future__ import annotations


class MvpError(Exception):
    """Base class of the platform's own errors: bad input, not a bug."""

    exit_code = 2


class SpecError(MvpError):
    """The YAML spec is malformed or asks for something impossible."""


class DataError(MvpError):
    """A data set is missing, malformed or too small for what the spec asks."""


class ModelError(MvpError):
    """A model cannot be found, loaded or used as asked."""


class TrackingError(MvpError):
    """The MLflow store cannot be reached or written."""


def root_cause(exc: BaseException) -> str:
    """The user-facing message of an error, also one raised inside a Ray worker (its ``cause``)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, BaseException):
        return f"{type(cause).__name__}: {cause}"
    text = str(exc).strip().splitlines()
    return text[-1] if text else type(exc).__name__
