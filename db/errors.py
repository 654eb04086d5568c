"""The storage layer's own exceptions: callers never see raw SQLAlchemy or sqlite3 errors."""

from __future__ import annotations


class StorageError(RuntimeError):
    """Any database failure, with a message a user can act on."""


class DatabaseLockedError(StorageError):
    """The database stayed locked past the busy timeout (another writer held it)."""


class SchemaTooNewError(StorageError):
    """The file was written by a newer GLO: refuse rather than corrupt it."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        super().__init__(
            f"database {path} has schema version {found}, but this GLO supports only up to version "
            f"{supported}; upgrade GLO to open it"
        )
        self.found = found
        self.supported = supported


class NotFoundError(StorageError):
    """A run, candidate or job id that is not in the database."""


class IllegalTransitionError(StorageError):
    """A job state change that the state machine forbids (a scheduler bug, never ignored)."""
