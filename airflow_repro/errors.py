"""The airflow-repro error tree.

Every error the project raises on purpose derives from :class:`ReproError`. The tree separates
mistakes a user can fix (bad arguments, unknown refs, unpinned environments) from faults of the
infrastructure (a store or tracker that cannot be reached), which are worth retrying::

    ReproError
    ├── ReproUserError                  the user's input is wrong; retrying will not help
    │   ├── ConfigError                 a setting is missing or invalid
    │   ├── ManifestError               a manifest is malformed or its digest does not match
    │   ├── EnvironmentNotPinnedError   a task has no usable environment pin
    │   ├── ParamsNotSerializableError  task params / DAG-run conf are not JSON
    │   ├── InvalidNameError            a repository, branch, tag or ref name is malformed
    │   ├── NotFoundError               a repository, branch, tag, commit or path does not exist
    │   │   ├── StoreNotFound           no store at the configured folder (read-only commands never create one)
    │   │   ├── RepositoryNotFound, RefNotFound, ObjectNotFound
    │   │   └── ObjectGone             the path is recorded but its data was deleted (GC; HTTP 410)
    │   ├── AlreadyExistsError          a repository, branch or tag already exists (and differs)
    │   └── OutputError                 a task did not write what it declared, or wrote more
    └── ReproInfraError                 infrastructure fault; ``retryable`` says whether to retry
        ├── StoreUnavailable            the data store cannot be reached, written (read-only, full,
        │                               permission denied) or is locked too long
        ├── StoreCorruption             stored content does not match its hash, or a store file is damaged
        ├── StoreConflict               a concurrent update won; retry the operation
        └── TrackerUnavailable          the experiment tracker (MLflow) cannot be reached

Only the Airflow shell maps user errors to ``AirflowFailException`` (no retry).
"""

from __future__ import annotations


class ReproError(Exception):
    """Root of all errors raised by airflow-repro."""

    retryable: bool = False


class ReproUserError(ReproError):
    """The input is wrong; the message says what to fix. Never retryable."""


class ConfigError(ReproUserError):
    """A setting is missing or invalid."""


class ManifestError(ReproUserError):
    """A manifest is malformed, or its digest does not match its content."""


class EnvironmentNotPinnedError(ReproUserError):
    """A task's environment cannot be pinned (e.g. its lockfile is missing)."""


class ParamsNotSerializableError(ReproUserError):
    """Task params or DAG-run conf cannot be recorded as JSON."""


class InvalidNameError(ReproUserError):
    """A repository, branch, tag or ref name is malformed."""


class NotFoundError(ReproUserError):
    """Something the user named does not exist."""


class StoreNotFound(NotFoundError):
    """No store exists at the configured folder; commands that only read never create one."""


class RepositoryNotFound(NotFoundError):
    """The repository does not exist."""


class RefNotFound(NotFoundError):
    """The branch, tag or commit does not exist."""


class ObjectNotFound(NotFoundError):
    """The path does not exist at the given ref."""


class ObjectGone(ObjectNotFound):
    """The path is in the commit, but its data was deleted (garbage collection; lakeFS answers 410)."""


class AlreadyExistsError(ReproUserError):
    """The repository, branch or tag already exists with different content."""


class OutputError(ReproUserError):
    """A task did not write an output it declared, or wrote one it did not declare."""


class ReproInfraError(ReproError):
    """A fault of the infrastructure rather than of the user's input."""

    retryable = True


class StoreUnavailable(ReproInfraError):
    """The versioned data store cannot be reached or written (read-only or full file system,
    permission denied), or its lock cannot be taken in time."""


class StoreCorruption(ReproInfraError):
    """Stored content does not match its recorded hash, or a store file is damaged (the message names it)."""

    retryable = False


class StoreConflict(ReproInfraError):
    """A concurrent update changed a ref first; the operation can be retried."""


class TrackerUnavailable(ReproInfraError):
    """The experiment tracker (MLflow) cannot be reached or refused the request."""
