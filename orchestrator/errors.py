"""The orchestrator's own exceptions, under one root, in a module that imports nothing.

Every error a user can act on is a `GloError`: the CLI prints its message as one line and exits 1
(`orchestrator.cli.runs._errors`), and nothing has to import a heavy module (the scheduler, SQLAlchemy,
TensorFlow) just to recognise one.  Database errors are `db.errors.StorageError` (the db package
does not depend on the orchestrator); workers have their own (`worker.spec.SpecError`).
"""

from __future__ import annotations


class GloError(Exception):
    """An error whose message names the problem for the user; shown without a traceback."""


class ConfigError(GloError, ValueError):
    """A bad config value; the message starts with the dotted key (e.g. `search.ga.population_sz`)."""


class SchedulerError(GloError, RuntimeError):
    """The run cannot go on (e.g. a resumed run that is not resumable)."""


class BackendError(GloError, RuntimeError):
    """The backend cannot do what was asked (a setting or the cluster refused); the message says why."""


class LossArgumentError(GloError, ValueError):
    """A LOSS argument (a name, infix text or RUN/CANDIDATE) that is none of them, or one given twice."""
