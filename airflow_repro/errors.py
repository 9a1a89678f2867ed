"""The airflow-repro error tree.

Every error the project raises on purpose derives from :class:`ReproError`, and every one of them
is defined here (standard library only, so the task-side runtime can import it). The tree
separates mistakes a user can fix (bad arguments, unknown refs, unpinned environments) from faults
of the infrastructure (a store, tracker or registry that cannot be reached), which are worth
retrying unless ``retryable`` says otherwise::

    ReproError
    ├── ReproUserError                  the user's input is wrong; retrying will not help
    │   ├── ConfigError                 a setting is missing or invalid
    │   ├── ManifestError               a manifest is malformed or its digest does not match
    │   ├── EnvironmentNotPinnedError   a task has no usable environment pin
    │   ├── ImageNotPinnedError         a task image is named by a mutable tag, or its digest is malformed
    │   ├── ResourceError               a CPU/memory/GPU request Kubernetes would reject
    │   ├── ParamsNotSerializableError  task params / DAG-run conf are not JSON
    │   ├── InvalidNameError            a repository, branch, tag or ref name is malformed
    │   ├── NotFoundError               a repository, branch, tag, commit or path does not exist
    │   │   ├── StoreNotFound           no store at the configured folder (read-only commands never create one)
    │   │   ├── RepositoryNotFound, RefNotFound, ObjectNotFound
    │   │   │   └── ObjectGone          the path is recorded but its data was deleted (GC; HTTP 410)
    │   │   ├── TrackerNotFound         the MLflow run, experiment or artifact does not exist
    │   │   └── ArchiveMissing          the code or environment a replay restores from is not archived
    │   ├── AlreadyExistsError          a repository, branch or tag already exists (and differs)
    │   ├── HookRejected                a lakeFS hook (pre-commit/pre-merge action) refused the commit
    │   ├── OutputError                 a task did not write what it declared, or wrote more
    │   ├── RuntimeContextError         task code misused the runtime (also a ``RuntimeError``)
    │   ├── TaskProcessError            the task's code failed inside its pinned environment
    │   ├── DagParseError               the DAG file cannot be parsed now (import error or timeout)
    │   ├── RunNotFinished              the DAG run is still queued or running
    │   ├── ReplayRefused               a replay cannot hold its pins; ``plan`` says why
    │   ├── TrackerRequestRejected      MLflow refused a request as invalid (HTTP 4xx)
    │   └── InvalidRunRecord            a tag, metric, key or artifact MLflow cannot record as given
    └── ReproInfraError                 infrastructure fault; ``retryable`` says whether to retry
        ├── StoreUnavailable            the data store cannot be reached, written (read-only, full,
        │                               permission denied) or is locked too long
        ├── StoreCorruption             stored content does not match its hash, or a store file is damaged
        │   │                           (not retryable)
        │   └── ArchiveCorrupt          an archived code or environment object does not match its digest
        ├── StoreConflict               a concurrent update won; retry the operation
        ├── TrackerUnavailable          the experiment tracker (MLflow) cannot be reached
        ├── TrackerMisconfigured        the tracker answers but is set up so it cannot serve us
        │                               (not retryable)
        ├── RegistryError               the image registry could not be reached or sent no digest
        └── TransferError               a pod's presigned download or upload failed (expired or refused
                                        URL, object store unreachable); a retry gets fresh URLs

Only the Airflow shell maps errors that are not ``retryable`` to ``AirflowFailException`` (no retry).
"""

from __future__ import annotations

from typing import Any


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


class ImageNotPinnedError(ReproUserError):
    """A task image is named by a mutable tag, or its digest is malformed."""


class ResourceError(ReproUserError):
    """A resource request Kubernetes would reject, or a GPU the project cannot schedule."""


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


class TrackerNotFound(NotFoundError):
    """The run, experiment or artifact asked for does not exist in MLflow."""


class ArchiveMissing(NotFoundError):
    """The archived code snapshot, environment record, lockfile or script a replay would restore
    from is not stored (recorded before archiving existed, or deleted)."""


class AlreadyExistsError(ReproUserError):
    """The repository, branch or tag already exists with different content."""


class HookRejected(ReproUserError):
    """A lakeFS hook (an action on pre-commit, pre-merge, ...) failed, so lakeFS refused the
    operation (HTTP 412). Not a race: the same commit fails the same way until the data or the
    action changes."""


class OutputError(ReproUserError):
    """A task did not write an output it declared, or wrote one it did not declare."""


class RuntimeContextError(ReproUserError, RuntimeError):
    """The task-side context is missing, or a name the task used was not declared.

    Still a ``RuntimeError``, as it was before it joined the tree.
    """


class TaskProcessError(ReproUserError):
    """The task's code failed inside its pinned environment."""


class DagParseError(ReproUserError):
    """The DAG file cannot be parsed now (an import error, or it took longer than the timeout)."""


class RunNotFinished(ReproUserError):
    """The DAG run is still queued or running."""


class ReplayRefused(ReproUserError):
    """The replay cannot hold its pins; ``plan.drift`` says why. Nothing was triggered.

    ``plan`` is the refused :class:`airflow_repro.core.replay.ReplayPlan` (typed loosely: this
    module imports nothing of the project); the message is the plan's ``refusal_message()``.
    """

    def __init__(self, plan: Any) -> None:
        self.plan = plan
        super().__init__(plan.refusal_message())


class TrackerRequestRejected(ReproUserError):
    """MLflow refused a request as invalid (HTTP 4xx); retrying the same request will not help."""

    def __init__(self, message: str, *, status_code: int | None = None, error_code: str = "") -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_code = error_code


class InvalidRunRecord(ReproUserError):
    """A tag, metric, key or JSON artifact cannot be recorded in MLflow as given."""


class ReproInfraError(ReproError):
    """A fault of the infrastructure rather than of the user's input."""

    retryable = True


class StoreUnavailable(ReproInfraError):
    """The versioned data store cannot be reached or written (read-only or full file system,
    permission denied), or its lock cannot be taken in time."""


class StoreCorruption(ReproInfraError):
    """Stored content does not match its recorded hash, or a store file is damaged (the message names it)."""

    retryable = False


class ArchiveCorrupt(StoreCorruption):
    """An archived object's content does not hash to the digest it is stored under."""


class StoreConflict(ReproInfraError):
    """A concurrent update changed a ref first; the operation can be retried."""


class TrackerUnavailable(ReproInfraError):
    """The experiment tracker (MLflow) cannot be reached or refused the request."""


class TrackerMisconfigured(ReproInfraError):
    """The tracker answers but is set up so that it cannot serve us (not an MLflow server, no
    artifact serving): a fault of the deployment, not of the task, and retrying will not help."""

    retryable = False


class RegistryError(ReproInfraError):
    """The image registry could not be reached or did not answer with a digest."""


class TransferError(ReproInfraError):
    """A pod's presigned transfer failed: its URL expired or was refused, or the object store could
    not be reached. Retryable: the next try is given fresh URLs."""
