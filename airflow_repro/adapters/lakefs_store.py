"""The versioned data store on lakeFS, through the official ``lakefs`` SDK (on ``lakefs-sdk``).

``LakeFSStore(client, storage_namespace=...)`` implements
:class:`~airflow_repro.core.ports.VersionedDataStore` so that it behaves like the embedded
``LocalStore`` (the contract suite in ``tests/contract/`` runs the same tests on both). How the port
maps onto lakeFS, and why:

* **Content hashes.** The port names content by BLAKE3 (``blake3:<hex>``); lakeFS keeps its own
  checksum (an ETag). Every object written here carries its BLAKE3 hash as lakeFS user metadata
  (``x-lakefs-meta-repro-content-hash``), so ``stat``/``list``/``diff`` answer without reading data.
  Objects written by other tools have no such entry: their hash is computed by reading them once.
* **Staging.** lakeFS stages per branch, the port stages per store. ``stage_file``/``stage_bytes``
  hash the content into a local spool folder; ``commit`` uploads what changed.
* **Commits are isolated.** Parallel tasks of one DAG run commit to the same run branch, and a
  lakeFS commit takes *everything* staged on a branch. So each commit writes on its own short-lived
  branch ``repro_tx_<uuid>`` made from the target's head, commits there, and is squash-merged into
  the target (one parent, the target's head; three-way, so concurrent commits to other paths never
  lose each other). The squash-merge commit carries the message and metadata and is the commit the
  port returns; the transaction branch is deleted afterwards. Its name holds its creation time
  (``repro_tx_<epoch s>_<uuid>``, hidden), and the merge commit's metadata names it
  (``repro.transaction``): a lost merge answer is recovered by that, never by metadata equality (the
  server adds ``.lakefs.merge.strategy``, and would merge the squash-merged branch again as a second,
  empty commit). Branches a killed writer left are swept once they are old enough that no live
  attempt can hold them (:meth:`LakeFSStore.remove_stale_transactions`).
* **Full commit ids only.** Refs are resolved here, in the port's order (full commit id, branch,
  tag), never by lakeFS's prefix matching: a prefix can be shadowed by a branch or tag.
* **Retention.** lakeFS garbage collection keeps the data of branch heads but ignores tags. Every
  tag made here (each closed recorded run has one) therefore also gets a retention branch
  ``repro_keep_<tag>_<hash>`` at the same commit: the tagged commit stays readable for as long as
  that branch exists (see ``docs/lakefs.md``). Data that was collected anyway reads as HTTP 410,
  raised as :class:`~airflow_repro.errors.ObjectGone` with what to do for a replay. lakeFS's
  statObject answers from metadata, which GC keeps, so ``check_available`` reads a byte instead.
* **Errors** from lakeFS are translated at this boundary into the project's error tree
  (:func:`translate_errors`).

Internal branches (``repro_tx_*``, ``repro_keep_*``) are left out of :meth:`LakeFSStore.list_branches`.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import time
import uuid
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote

# One object-path rule for both stores (a relative POSIX path such as ``data/train.csv``).
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.hashing import (
    copy_and_hash,
    format_content_hash,
    hash_bytes,
    is_content_hash,
    new_hasher,
    parse_content_hash,
)
from airflow_repro.core.naming import (
    BRANCH_RE,
    INTERNAL_BRANCH_PREFIXES,
    TAG_RE,
    TRANSACTION_BRANCH_PREFIX,
    is_commit_id,
    retention_branch_name,
    transaction_branch_name,
    validate_branch_name,
    validate_ref,
    validate_repository_name,
    validate_tag_name,
)
from airflow_repro.core.ports import Commit, DiffEntry, ObjectInfo, Repository, StagedObject
from airflow_repro.core.store_rules import checked_name, validate_commit_metadata, validate_object_path
from airflow_repro.errors import (
    AlreadyExistsError,
    ConfigError,
    HookRejected,
    InvalidNameError,
    NotFoundError,
    ObjectGone,
    ObjectNotFound,
    RefNotFound,
    RepositoryNotFound,
    ReproError,
    ReproUserError,
    StoreConflict,
    StoreCorruption,
    StoreUnavailable,
)

if TYPE_CHECKING:
    import lakefs

#: User-metadata key holding an object's BLAKE3 content hash (sent as ``x-lakefs-meta-<key>``).
CONTENT_HASH_META = "repro-content-hash"
#: Commit-metadata key of the lakeFS UI button back to the Airflow run (Syphon convention).
AIRFLOW_UI_BUTTON = keys.LAKEFS_AIRFLOW_URL
_AIRFLOW_DAG_ID = keys.LAKEFS_AIRFLOW_DAG_ID
_AIRFLOW_RUN_ID = keys.LAKEFS_AIRFLOW_RUN_ID
_AIRFLOW_TASK_ID = keys.AIRFLOW_TASK_ID

READ_CHUNK = 8 * 1024 * 1024
PAGE_SIZE = 1000
READ_ONLY = 0o444
#: Merges retried this many times when lakeFS reports the branch busy (a concurrent commit).
MERGE_ATTEMPTS = 5
#: Pause before merge retry ``n`` (1, 2, ...): ``min(MERGE_BACKOFF * 2**(n-1), MERGE_BACKOFF_MAX)`` seconds.
MERGE_BACKOFF = 0.2
MERGE_BACKOFF_MAX = 2.0
#: lakeFS refuses object paths longer than this, in UTF-8 bytes (``pkg/catalog/validate.go``).
MAX_PATH_BYTES = 1024
#: Commit-metadata key naming the transaction a commit was made by: how a lost merge answer is
#: recovered (the server adds its own keys, so a commit never carries exactly the metadata sent).
TRANSACTION_META = "repro.transaction"
#: Metadata keys the lakeFS server adds itself (``.lakefs.merge.strategy``); not part of the port's view.
SERVER_META_PREFIX = ".lakefs."
#: Transaction branches older than this are a killed writer's leftovers (``remove_stale_transactions``).
#: Generous: a pod's presigned uploads wait on their transaction branch for as long as the pod runs.
STALE_TRANSACTION_AGE_S = 7 * 24 * 3600.0
#: How often one store sweeps a repository for stale transaction branches (after its own commits).
SWEEP_INTERVAL_S = 3600.0
#: Tries to see a repository that a concurrent creator is making (lakeFS answered "namespace in use").
CREATE_RACE_ATTEMPTS = 5
_TX_NAME = re.compile(r"^repro_tx_(?P<created>\d{10})_[0-9a-f]{32}$")


# --------------------------------------------------------------------------------------------
# Error translation
# --------------------------------------------------------------------------------------------


def _status_and_message(exc: BaseException) -> tuple[int | None, str]:
    """HTTP status and lakeFS's ``{"message": ...}`` text of an SDK exception."""
    status = getattr(exc, "status_code", None) or getattr(exc, "status", None)
    body = getattr(exc, "body", None)
    message = ""
    if isinstance(body, dict):
        message = str(body.get("message", ""))
    elif isinstance(body, bytes | str):
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        try:
            message = str(json.loads(text).get("message", text))
        except (ValueError, AttributeError):
            message = text
    return (int(status) if status else None), (message or getattr(exc, "reason", "") or str(exc)).strip()


def _http_status(error: BaseException) -> int | None:
    """The HTTP status behind a translated error (its SDK cause), ``None`` when there is none."""
    cause = error.__cause__
    return _status_and_message(cause)[0] if cause is not None else None


def _lakefs_message(error: BaseException) -> str:
    """lakeFS's own message behind a translated error (its SDK cause), ``""`` when there is none."""
    cause = error.__cause__
    return _status_and_message(cause)[1] if cause is not None else ""


def _name_clash(repository: str, name: str, *, existing: str) -> str:
    made = "tag" if existing == "branch" else "branch"
    return (
        f"cannot create {made} {name!r} in repository {repository!r}: a {existing} of that name exists, and "
        f"lakeFS does not let a branch and a tag share a name (HTTP 409 conflict found); choose another {made} name"
    )


def _is_connection_error(exc: BaseException) -> bool:
    import urllib3.exceptions

    return isinstance(exc, urllib3.exceptions.HTTPError | ConnectionError | TimeoutError)


@contextmanager
def translate_errors(
    what: str,
    *,
    endpoint: str = "lakeFS",
    not_found: Callable[[str], ReproError] | None = None,
    conflict: Callable[[str], ReproError] | None = None,
) -> Iterator[None]:
    """Turn lakeFS SDK and connection errors raised inside the block into project errors.

    ``what`` says what was being done (it starts every message); ``not_found``/``conflict`` build
    the error for a 404/409, which only the caller can name precisely (repository, ref, object).
    """
    import lakefs.exceptions
    import lakefs_sdk.exceptions

    try:
        yield
    except ReproError:
        raise
    except (lakefs.exceptions.ServerException, lakefs_sdk.exceptions.ApiException) as exc:
        status, message = _status_and_message(exc)
        raise _error_for_status(status, message, what, endpoint, not_found, conflict) from exc
    except lakefs.exceptions.NoAuthenticationFound as exc:
        raise ConfigError(f"{what}: no lakeFS credentials found; {_CREDENTIALS_FIX}") from exc
    except Exception as exc:
        if _is_connection_error(exc):
            raise StoreUnavailable(
                f"{what}: lakeFS at {endpoint} cannot be reached ({type(exc).__name__}: {exc}); check that "
                "it is running and that the connection's host and port are right, then retry"
            ) from exc
        raise


_CREDENTIALS_FIX = (
    "set the access key id and secret access key as login and password of the Airflow connection named by "
    "[repro] lakefs_conn_id (default 'lakefs_default'), or as LAKEFS_ACCESS_KEY_ID / LAKEFS_SECRET_ACCESS_KEY "
    "with LAKEFS_ENDPOINT"
)


def _error_for_status(
    status: int | None,
    message: str,
    what: str,
    endpoint: str,
    not_found: Callable[[str], ReproError] | None,
    conflict: Callable[[str], ReproError] | None,
) -> ReproError:
    """The project error for a lakeFS answer (``pkg/api/controller.go`` handleApiErrorCallback)."""
    text = f"{what}: {message}" if message else what
    if status == 401:
        return _unauthorized(message, what, endpoint)
    if status == 403:
        return _forbidden(message, what, endpoint)
    if status == 404:
        return (not_found or NotFoundError)(text)
    if status == 409:
        return (conflict or StoreConflict)(text)
    if status == 410:
        return _gone(message, what)
    if status == 412:
        return _precondition_failed(message, what)
    if status == 400:
        return _bad_request(message, text)
    if status is None or status in (423, 429) or status >= 500:  # 423: the branch is locked, busy
        return StoreUnavailable(f"{text} (lakeFS at {endpoint} answered HTTP {status}; retry later)")
    return ReproUserError(f"{text} (lakeFS answered HTTP {status})")


def _unauthorized(message: str, what: str, endpoint: str) -> ReproError:
    # lakeFS answers 401 both for unknown credentials and for a user whose policies lack the action.
    if "insufficient permissions" in message:
        return ConfigError(
            f"{what}: lakeFS at {endpoint} denied the request: the user of the configured access key lacks a "
            f"permission (HTTP 401: {message}); give that user write access to the repository (lakeFS OSS: "
            "add it to the Writers or Admins group), or use the key of a user who has it"
        )
    return ConfigError(
        f"{what}: lakeFS at {endpoint} refused the credentials (HTTP 401: {message}); {_CREDENTIALS_FIX}"
    )


def _forbidden(message: str, what: str, endpoint: str) -> ReproError:
    # 403 is more than credentials: protected branches, read-only repositories, the default branch.
    if "protected branch" in message:
        return ConfigError(
            f"{what}: a lakeFS branch protection rule forbids it (HTTP 403: {message}). airflow-repro writes on "
            "hidden repro_tx_* branches and merges into the run branch: change the repository's branch "
            "protection rules (lakeFS UI: Settings > Branches) so no pattern covers repro_tx_* or run_* branches"
        )
    if "read-only repository" in message:
        return ConfigError(
            f"{what}: the lakeFS repository is read-only (HTTP 403); airflow-repro needs a writable one: set "
            "[repro] repository to a writable repository (or recreate this one without read_only)"
        )
    if "default branch" in message:
        return ReproUserError(
            f"{what}: lakeFS never deletes a repository's default branch (HTTP 403); make another branch the "
            "default first, or keep it"
        )
    if "session expired" in message:
        return ConfigError(f"{what}: the lakeFS session expired (HTTP 403); {_CREDENTIALS_FIX}")
    return ConfigError(
        f"{what}: lakeFS at {endpoint} forbade the request (HTTP 403: {message}): a branch protection rule, a "
        "read-only repository, or lakeFS's own access to its object storage; the message says which"
    )


def _gone(message: str, what: str) -> ReproError:
    if "repository in deletion" in message:
        return RepositoryNotFound(
            f"{what}: the lakeFS repository is being deleted (HTTP 410); wait until the deletion ends, then "
            "create it again (with a new [repro] lakefs_storage_namespace: lakeFS keeps the old data) or set "
            "[repro] repository to another repository"
        )
    return ObjectGone(
        f"{what}: the data is gone from lakeFS (HTTP 410: {message or 'No data'}); it was deleted "
        "by lakeFS garbage collection. A replay cannot read this pinned input in any mode: restore the "
        "data, commit it again and record a new run. Keep recorded runs' retention branches "
        "(repro_keep_*) to prevent this (docs/lakefs.md)"
    )


_HOOK_ABORT = re.compile(r"(?P<event>[\w-]+) hook aborted, run id '(?P<run>[^']*)'")


def _precondition_failed(message: str, what: str) -> ReproError:
    hook = _HOOK_ABORT.search(message)
    if hook is None:  # an If-Match / If-None-Match precondition: something changed meanwhile
        return StoreConflict(f"{what}: {message} (precondition failed: changed concurrently; retry)")
    detail = message[message.find("action failed:") :].strip() if "action failed:" in message else message.strip()
    return HookRejected(
        f"{what}: lakeFS's {hook['event']} hook (a lakeFS action of the repository) failed, so nothing was "
        f"committed (HTTP 412, hook run {hook['run']!r}: {detail}). Retrying as is fails the same way: see "
        f"the run with `lakectl actions runs describe lakefs://<repository> {hook['run']}` or in the lakeFS UI "
        "(Actions tab), then fix what the action checks, or the action (_lakefs_actions/ on the branch)"
    )


def _bad_request(message: str, text: str) -> ReproError:
    if "storage namespace already in use" in message:
        return ConfigError(
            f"{text}: the storage namespace already holds a lakeFS repository's data (a deleted repository "
            "of the same name, or another lakeFS installation) and lakeFS refuses to reuse it; set [repro] "
            "lakefs_storage_namespace to an unused location, or delete the old data there yourself"
        )
    if "above maximum length" in message:
        return InvalidNameError(f"{text}: lakeFS allows object paths of at most {MAX_PATH_BYTES} bytes")
    return ReproUserError(f"{text} (lakeFS rejected the request as invalid)")


# --------------------------------------------------------------------------------------------
# Small pure helpers
# --------------------------------------------------------------------------------------------


def airflow_ui_buttons(metadata: Mapping[str, str], airflow_ui_url: str | None) -> dict[str, str]:
    """Commit metadata plus the lakeFS UI button back to the Airflow run (or task) it names.

    The lakeFS UI renders keys matching ``::lakefs::<label>::url[url:ui]`` as buttons; the MLflow
    button (``::lakefs::MLflow::url[url:ui]``) comes from the recorder with the tracked run's URL.
    """
    meta = dict(metadata)
    dag_id, run_id = meta.get(_AIRFLOW_DAG_ID), meta.get(_AIRFLOW_RUN_ID)
    if airflow_ui_url and dag_id and run_id and AIRFLOW_UI_BUTTON not in meta:
        url = f"{airflow_ui_url.rstrip('/')}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"
        if task_id := meta.get(_AIRFLOW_TASK_ID):
            url += f"/tasks/{quote(task_id, safe='')}"
        meta[AIRFLOW_UI_BUTTON] = url
    return meta


def content_hash_of(user_metadata: Mapping[str, str] | None) -> str | None:
    """The BLAKE3 hash recorded in an object's user metadata, whatever case the server keeps keys in."""
    for key, value in (user_metadata or {}).items():
        if key.lower().endswith(CONTENT_HASH_META) and is_content_hash(value):
            return value
    return None


def _validate_path(path: str) -> str:
    """The port's path rule, plus lakeFS's length limit, checked before anything is sent or written."""
    validate_object_path(path)
    size = len(path.encode())
    if size > MAX_PATH_BYTES:
        raise InvalidNameError(
            f"object path {path[:60]!r}... is {size} bytes long (UTF-8) and lakeFS allows at most "
            f"{MAX_PATH_BYTES}: shorten the output's path (or its folder names)"
        )
    return path


def _caller_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """Commit metadata as given, refusing keys that lakeFS or this adapter set themselves."""
    clean = validate_commit_metadata(metadata)
    reserved = sorted(k for k in clean if k == TRANSACTION_META or k.startswith(SERVER_META_PREFIX))
    if reserved:
        raise ReproUserError(
            f"commit metadata keys {reserved} are reserved (lakeFS sets {SERVER_META_PREFIX}* keys, airflow-repro "
            f"sets {TRANSACTION_META!r}): rename them"
        )
    return clean


def _iso(epoch_seconds: int) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat().replace("+00:00", "Z")


class _VerifyingReader(io.RawIOBase):
    """Streams an object from lakeFS and checks its BLAKE3 hash and size at EOF."""

    def __init__(self, source: Any, expected: ObjectInfo, what: str, translate: Callable[[], Any]) -> None:
        super().__init__()
        self._source = source
        self._expected = expected
        self._what = what
        self._translate = translate
        self._hasher = new_hasher()
        self._size = 0
        self._pending = b""
        self._verified = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            with self._translate():
                self._pending = bytes(self._source.read(READ_CHUNK))
            if self._pending:
                self._hasher.update(self._pending)
                self._size += len(self._pending)
            else:
                self._verify()
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def _verify(self) -> None:
        if self._verified:
            return
        actual = format_content_hash(self._hasher.hexdigest())
        if actual != self._expected.content_hash or self._size != self._expected.size:
            raise StoreCorruption(
                f"{self._what}: content read ({self._size} bytes, {actual}) does not match the recorded "
                f"{self._expected.content_hash} ({self._expected.size} bytes)"
            )
        self._verified = True

    def close(self) -> None:
        if not self.closed:
            with suppress(Exception):
                self._source.close()
        super().close()


def refuse_user_info(url: str, *, what: str) -> None:
    """``ConfigError`` when ``url`` carries ``user:password@``; the message never repeats the URL."""
    if not isinstance(url, str):
        return
    authority = url.split("://", 1)[1] if "://" in url else url
    if "@" in authority.split("/", 1)[0]:
        raise ConfigError(
            f"{what} contains credentials (user:password@ before the host), which would be logged and recorded: "
            "remove them from the URL and keep the access key id and secret as login and password of the "
            "Airflow connection (or LAKEFS_ACCESS_KEY_ID / LAKEFS_SECRET_ACCESS_KEY)"
        )


@dataclass(frozen=True)
class LakeFSConnection:
    """Where lakeFS is and how to log in. ``secret_access_key`` is never logged or recorded."""

    endpoint: str
    access_key_id: str
    secret_access_key: str

    def __post_init__(self) -> None:
        refuse_user_info(self.endpoint, what="the lakeFS endpoint")

    def __repr__(self) -> str:  # keep the secret out of logs and tracebacks
        return f"LakeFSConnection(endpoint={self.endpoint!r}, access_key_id={self.access_key_id!r})"

    def client(self) -> lakefs.Client:
        try:
            import lakefs
        except ImportError as exc:
            raise ConfigError(
                "[repro] store_uri selects lakeFS but the lakeFS SDK is not installed: "
                "pip install 'airflow-repro[lakefs]'"
            ) from exc
        if not self.endpoint:
            raise ConfigError(f"lakeFS endpoint is empty; {_CREDENTIALS_FIX}")
        if not self.access_key_id or not self.secret_access_key:
            raise ConfigError(f"lakeFS at {self.endpoint}: the access key id or secret is empty; {_CREDENTIALS_FIX}")
        # Passing every setting explicitly makes the SDK read no ~/.lakectl.yaml and no environment.
        return lakefs.Client(host=self.endpoint, username=self.access_key_id, password=self.secret_access_key)


# --------------------------------------------------------------------------------------------
# The store
# --------------------------------------------------------------------------------------------


class LakeFSStore:
    """:class:`~airflow_repro.core.ports.VersionedDataStore` on lakeFS (see the module docstring).

    ``storage_namespace`` is where new repositories keep their data: ``<namespace>/<repository>``
    (``local://data`` for lakeFS's local blockstore, ``s3://bucket/prefix`` on S3).
    ``airflow_ui_url`` (optional) adds the lakeFS UI button back to the Airflow run to commits that
    name one. ``spool_dir`` holds staged content until it is committed (a fresh temp folder by default).
    """

    def __init__(
        self,
        client: lakefs.Client,
        *,
        storage_namespace: str,
        airflow_ui_url: str | None = None,
        spool_dir: Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        stale_transaction_age_s: float = STALE_TRANSACTION_AGE_S,
    ) -> None:
        self.client = client
        self._sleep = sleep  # the pause between merge retries (injectable for tests)
        self._clock = clock  # wall-clock seconds: transaction branch names carry their creation time
        self.stale_transaction_age_s = stale_transaction_age_s
        self._swept: dict[str, float] = {}  # repository -> when this store last swept its stale transactions
        self.storage_namespace = storage_namespace.rstrip("/")
        self.airflow_ui_url = airflow_ui_url
        self.endpoint = str(client.config.host)
        refuse_user_info(self.endpoint, what="the lakeFS endpoint")
        self._owns_spool = spool_dir is None
        if spool_dir is None:
            spool_dir = Path(tempfile.mkdtemp(prefix="repro-lakefs-spool-"))
            self._finalizer = weakref.finalize(self, shutil.rmtree, spool_dir, True)
        self._spool = Path(spool_dir)
        self._spool.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_connection(
        cls,
        connection: LakeFSConnection,
        *,
        storage_namespace: str,
        airflow_ui_url: str | None = None,
        spool_dir: Path | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        stale_transaction_age_s: float = STALE_TRANSACTION_AGE_S,
    ) -> LakeFSStore:
        return cls(
            connection.client(),
            storage_namespace=storage_namespace,
            airflow_ui_url=airflow_ui_url,
            spool_dir=spool_dir,
            sleep=sleep,
            clock=clock,
            stale_transaction_age_s=stale_transaction_age_s,
        )

    def __repr__(self) -> str:
        return f"LakeFSStore({self.endpoint!r})"

    def close(self) -> None:
        """Remove the spool of staged content if this store made it (staged objects not yet committed are lost).

        A caller-supplied ``spool_dir`` is the caller's: it is left in place.
        """
        if self._owns_spool:
            shutil.rmtree(self._spool, ignore_errors=True)

    # ---- error helpers -----------------------------------------------------------------------

    def _errors(self, what: str, **kwargs: Any) -> Any:
        return translate_errors(what, endpoint=self.endpoint, **kwargs)

    def _repo_missing(self, repository: str) -> Callable[[str], ReproError]:
        def build(text: str) -> ReproError:
            return RepositoryNotFound(
                f"{text}; repository {repository!r} does not exist on lakeFS at {self.endpoint}: create it with "
                f"create_repository({repository!r}) or check [repro] repository"
            )

        return build

    def _ref_or_repo_missing(
        self, repository: str, ref: str, kind: str = "branch, tag or commit"
    ) -> Callable[[str], ReproError]:
        def build(text: str) -> ReproError:
            self._require_repository(repository)
            return RefNotFound(self._missing_ref_message(repository, ref, kind=kind))

        return build

    def _missing_ref_message(self, repository: str, ref: str, *, kind: str) -> str:
        return (
            f"{kind} {ref!r} not found in repository {repository!r}; see the existing ones "
            f"with list_branches({repository!r}), list_tags({repository!r}) or log({repository!r}, <branch>)"
        )

    def _require_repository(self, repository: str) -> None:
        self.get_repository(repository)

    # ---- repositories ------------------------------------------------------------------------

    def create_repository(self, name: str, *, default_branch: str = "main", exist_ok: bool = False) -> Repository:
        import lakefs

        checked_name(validate_repository_name, name)
        checked_name(validate_branch_name, default_branch)

        def exists(text: str) -> ReproError:
            return AlreadyExistsError(f"repository {name!r} already exists on lakeFS at {self.endpoint}")

        namespace = f"{self.storage_namespace}/{name}"
        try:
            with self._errors(f"creating repository {name!r} in storage namespace {namespace!r}", conflict=exists):
                lakefs.Repository(name, client=self.client).create(
                    storage_namespace=namespace, default_branch=default_branch
                )
        except ConfigError as exc:
            if "storage namespace already in use" not in _lakefs_message(exc):
                raise
            self._await_concurrent_creation(name, exc)  # or raise exc: the namespace is an old one
            if not exist_ok:
                raise exists("") from None
        except AlreadyExistsError:
            if not exist_ok:
                raise
        return self.get_repository(name)

    def _await_concurrent_creation(self, name: str, refused: ConfigError) -> None:
        """Return once repository ``name`` exists; raise ``refused`` if it never appears.

        lakeFS claims a storage namespace (``_lakefs/dummy``) before it writes the repository, so a
        second creator racing the first one (two tasks on a fresh server) is told "storage namespace
        already in use" while the first one's repository is about to appear.
        """
        for attempt in range(CREATE_RACE_ATTEMPTS):
            if attempt:
                self._sleep(min(MERGE_BACKOFF * 2 ** (attempt - 1), MERGE_BACKOFF_MAX))
            try:
                self.get_repository(name)
                return
            except RepositoryNotFound:
                continue
        raise refused

    def get_repository(self, name: str) -> Repository:
        checked_name(validate_repository_name, name)
        with self._errors(f"reading repository {name!r}", not_found=self._repo_missing(name)):
            repo = self.client.sdk_client.repositories_api.get_repository(name)
        return Repository(name=repo.id, default_branch=repo.default_branch, created_at=_iso(repo.creation_date))

    def list_repositories(self) -> list[Repository]:
        with self._errors("listing repositories"):
            repos = list(self._pages(self.client.sdk_client.repositories_api.list_repositories))
        return sorted(
            (Repository(name=r.id, default_branch=r.default_branch, created_at=_iso(r.creation_date)) for r in repos),
            key=lambda r: r.name,
        )

    # ---- refs --------------------------------------------------------------------------------

    def create_branch(self, repository: str, name: str, source_ref: str, *, exist_ok: bool = False) -> str:
        checked_name(validate_branch_name, name)
        return self._create_branch(repository, name, source_ref, exist_ok=exist_ok)

    def _create_branch(
        self, repository: str, name: str, source_ref: str, *, exist_ok: bool, hidden: bool = False
    ) -> str:
        import lakefs_sdk

        checked_name(validate_ref, source_ref)
        commit_id = self.resolve_ref(repository, source_ref)
        body = lakefs_sdk.BranchCreation(name=name, source=commit_id, hidden=hidden or None)
        try:
            with self._errors(
                f"creating branch {name!r} in repository {repository!r}",
                not_found=self._ref_or_repo_missing(repository, source_ref),
                conflict=lambda text: AlreadyExistsError(
                    _name_clash(repository, name, existing="tag")
                    if "conflict found" in text
                    else f"branch {name!r} already exists in repository {repository!r}"
                ),
            ):
                self.client.sdk_client.branches_api.create_branch(repository, body)
        except AlreadyExistsError as exc:
            if not exist_ok or "conflict found" in _lakefs_message(exc):
                raise
            return self._branch_head(repository, name)
        return commit_id

    def list_branches(self, repository: str) -> dict[str, str]:
        return {
            name: head
            for name, head in self._branches(repository).items()
            if not name.startswith(INTERNAL_BRANCH_PREFIXES)
        }

    def _branches(self, repository: str) -> dict[str, str]:
        """Every branch of ``repository``, internal ones included: name -> head commit id, sorted by name."""
        checked_name(validate_repository_name, repository)
        with self._errors(f"listing branches of {repository!r}", not_found=self._repo_missing(repository)):
            refs = list(self._pages(self.client.sdk_client.branches_api.list_branches, repository))
        return {r.id: r.commit_id for r in sorted(refs, key=lambda r: r.id)}

    def create_tag(self, repository: str, tag: str, ref: str, *, exist_ok: bool = False) -> str:
        """Create an immutable tag and its retention branch (GC keeps branch heads, not tags)."""
        import lakefs_sdk

        checked_name(validate_tag_name, tag)
        checked_name(validate_ref, ref)
        commit_id = self.resolve_ref(repository, ref)
        try:
            with self._errors(
                f"creating tag {tag!r} in repository {repository!r}",
                not_found=self._ref_or_repo_missing(repository, ref),
                conflict=lambda text: AlreadyExistsError(
                    _name_clash(repository, tag, existing="branch")
                    if "conflict found" in text
                    else f"tag {tag!r} already exists"
                ),
            ):
                self.client.sdk_client.tags_api.create_tag(repository, lakefs_sdk.TagCreation(id=tag, ref=commit_id))
        except AlreadyExistsError as exc:
            if "conflict found" in _lakefs_message(exc):
                raise
            existing = self._tag_target(repository, tag)
            if not (exist_ok and existing == commit_id):
                raise AlreadyExistsError(
                    f"tag {tag!r} already exists in repository {repository!r} at commit {existing}"
                    + ("" if existing == commit_id else f", not {commit_id}; tags are immutable")
                ) from None
        self._create_branch(repository, retention_branch_name(tag), commit_id, exist_ok=True)
        return commit_id

    def list_tags(self, repository: str) -> dict[str, str]:
        checked_name(validate_repository_name, repository)
        with self._errors(f"listing tags of {repository!r}", not_found=self._repo_missing(repository)):
            refs = list(self._pages(self.client.sdk_client.tags_api.list_tags, repository))
        return {r.id: r.commit_id for r in sorted(refs, key=lambda r: r.id)}

    def resolve_ref(self, repository: str, ref: str) -> str:
        """A full commit id (that exists), else a branch, else a tag -> the full commit id.

        Resolved here rather than by lakeFS, which would also accept commit-id prefixes and ``~``/``^``
        expressions: a recorded pin must name exactly one commit.
        """
        checked_name(validate_repository_name, repository)
        checked_name(validate_ref, ref)
        if is_commit_id(ref) and self._commit_exists(repository, ref):
            return ref
        if BRANCH_RE.match(ref) and (head := self._lookup(repository, ref, "branches")):
            return head
        if TAG_RE.match(ref) and (tagged := self._lookup(repository, ref, "tags")):
            return tagged
        self._require_repository(repository)
        raise RefNotFound(self._missing_ref_message(repository, ref, kind="branch, tag or commit"))

    def _commit_exists(self, repository: str, commit_id: str) -> bool:
        try:
            with self._errors(f"reading commit {commit_id}", not_found=self._repo_missing(repository)):
                self.client.sdk_client.commits_api.get_commit(repository, commit_id)
        except NotFoundError:
            return False
        return True

    def _lookup(self, repository: str, name: str, kind: str) -> str | None:
        api = self.client.sdk_client.branches_api if kind == "branches" else self.client.sdk_client.tags_api
        getter = api.get_branch if kind == "branches" else api.get_tag
        try:
            with self._errors(f"reading {kind[:-1] if kind == 'tags' else 'branch'} {name!r}"):
                return str(getter(repository, name).commit_id)
        except NotFoundError:
            return None
        except ReproUserError as exc:  # 400: lakeFS calls the name invalid for this kind of ref
            if _http_status(exc) == 400:
                return None
            raise

    def _branch_head(self, repository: str, branch: str) -> str:
        head = self._lookup(repository, branch, "branches")
        if head is None:
            self._require_repository(repository)
            raise RefNotFound(self._missing_ref_message(repository, branch, kind="branch"))
        return head

    def _tag_target(self, repository: str, tag: str) -> str:
        target = self._lookup(repository, tag, "tags")
        if target is None:
            raise RefNotFound(self._missing_ref_message(repository, tag, kind="tag"))
        return target

    # ---- staging -----------------------------------------------------------------------------

    def stage_file(self, repository: str, source: Path, *, move: bool = False) -> StagedObject:
        """Hash ``source`` into the spool (renamed in with ``move`` where possible); upload on commit."""
        checked_name(validate_repository_name, repository)
        source = Path(source)
        if not source.exists():
            raise NotFoundError(f"cannot stage {source}: no such file")
        if not source.is_file():
            raise ReproUserError(f"cannot stage {source}: it is not a regular file")
        tmp = self._spool / f"{uuid.uuid4().hex}.tmp"
        with open(tmp, "xb", buffering=0) as out:
            content_hash, size = copy_and_hash(source, out)
        os.replace(tmp, self._spooled(content_hash))
        if move:
            source.unlink()
        return StagedObject(content_hash, size)

    def stage_bytes(self, repository: str, data: bytes) -> StagedObject:
        checked_name(validate_repository_name, repository)
        content_hash = hash_bytes(data)
        final = self._spooled(content_hash)
        if not final.exists():
            tmp = self._spool / f"{uuid.uuid4().hex}.tmp"
            tmp.write_bytes(data)
            os.replace(tmp, final)
        return StagedObject(content_hash, len(data))

    def _spooled(self, content_hash: str) -> Path:
        return self._spool / parse_content_hash(content_hash)

    # ---- committing --------------------------------------------------------------------------

    def commit(
        self,
        repository: str,
        branch: str,
        changes: Mapping[str, StagedObject | None],
        *,
        message: str,
        metadata: Mapping[str, str] | None = None,
        allow_empty: bool = False,
    ) -> Commit:
        """Apply ``changes`` in one commit on ``branch``, isolated on a transaction branch (module doc)."""
        checked_name(validate_repository_name, repository)
        checked_name(validate_branch_name, branch)
        if not isinstance(message, str):
            raise ReproUserError(f"commit message must be a string, got {type(message).__name__}")
        clean_metadata = airflow_ui_buttons(_caller_metadata(metadata), self.airflow_ui_url)
        clean_changes = self._validate_changes(changes)
        head = self._branch_head(repository, branch)
        effective = self._effective_changes(repository, branch, head, clean_changes)
        if not effective and not allow_empty:
            raise ReproUserError(
                f"no changes to commit on branch {branch!r} of repository {repository!r}: "
                "the changes leave every path as it is (pass allow_empty=True to commit anyway)"
            )
        tx = self._new_transaction_name()
        self._create_branch(repository, tx, head, exist_ok=False, hidden=True)
        try:
            self._write_changes(repository, tx, effective)
            landed = self._commit_and_merge(
                repository, branch, tx, head, message, {**clean_metadata, TRANSACTION_META: tx}, changed=bool(effective)
            )
        finally:
            with suppress(ReproError), self._errors(f"deleting transaction branch {tx!r}"):
                self.client.sdk_client.branches_api.delete_branch(repository, tx)
        self._sweep_stale_transactions(repository)
        return landed

    def _new_transaction_name(self) -> str:
        """``repro_tx_<creation time, epoch seconds>_<uuid>``: its age is readable from the name alone."""
        return transaction_branch_name(f"{int(self._clock()):010d}_{uuid.uuid4().hex}")

    def open_transaction(self, repository: str, branch: str) -> tuple[str, str]:
        """A fresh hidden transaction branch from ``branch``'s head, for writers outside this store
        (a pod's presigned uploads, linked later): ``(tx branch, base commit)``. Land it with
        :meth:`commit_on_transaction`, or delete it with :meth:`delete_transaction`."""
        checked_name(validate_branch_name, branch)
        head = self._branch_head(repository, branch)
        tx = self._new_transaction_name()  # its creation time in the name: never swept while young
        self._create_branch(repository, tx, head, exist_ok=False, hidden=True)
        return tx, head

    def commit_on_transaction(
        self,
        repository: str,
        branch: str,
        tx: str,
        base: str,
        changes: Mapping[str, StagedObject | None],
        *,
        message: str,
        metadata: Mapping[str, str] | None = None,
    ) -> Commit:
        """Write ``changes`` (staged with this store) on ``tx``, which may already hold linked
        objects, commit there and squash-merge into ``branch`` as :meth:`commit` does; ``tx`` is
        deleted whatever happens."""
        clean_metadata = airflow_ui_buttons(_caller_metadata(metadata), self.airflow_ui_url)
        try:
            self._write_changes(repository, tx, self._validate_changes(changes))
            # The transaction id in the metadata is how a lost merge answer is recovered (no duplicate).
            return self._commit_and_merge(
                repository, branch, tx, base, message, {**clean_metadata, TRANSACTION_META: tx}, changed=True
            )
        finally:
            self.delete_transaction(repository, tx)

    def delete_transaction(self, repository: str, tx: str) -> None:
        """Delete a transaction branch (gone already is fine); what it staged becomes lakeFS garbage."""
        with suppress(ReproError), self._errors(f"deleting transaction branch {tx!r}"):
            self.client.sdk_client.branches_api.delete_branch(repository, tx)

    def _validate_changes(self, changes: Mapping[str, StagedObject | None]) -> dict[str, StagedObject | None]:
        if not isinstance(changes, Mapping):
            raise ReproUserError(
                f"changes must be a mapping of path to StagedObject or None, got {type(changes).__name__}"
            )
        for path, staged in changes.items():
            _validate_path(path)
            if staged is None:
                continue
            if not isinstance(staged, StagedObject):
                raise ReproUserError(f"change for {path!r} must be a StagedObject (from stage_file) or None")
            spooled = self._spooled(staged.content_hash)
            if not spooled.exists():
                raise ObjectNotFound(
                    f"content {staged.content_hash} for {path!r} was not staged with this store; "
                    "stage the file with stage_file() first"
                )
            if spooled.stat().st_size != staged.size:
                raise ReproUserError(
                    f"staged object for {path!r} says {staged.size} bytes but the staged content has "
                    f"{spooled.stat().st_size}; stage the file again with stage_file()"
                )
        return dict(changes)

    def _effective_changes(
        self, repository: str, branch: str, head: str, changes: Mapping[str, StagedObject | None]
    ) -> dict[str, StagedObject | None]:
        """The changes that alter the tree at ``head``: unchanged content is not uploaded again."""
        effective: dict[str, StagedObject | None] = {}
        for path, staged in changes.items():
            current = self._stat_or_none(repository, head, path)
            if staged is None:
                if current is None:
                    raise ObjectNotFound(
                        f"cannot delete {path!r}: it does not exist on branch {branch!r} of repository {repository!r}"
                    )
                effective[path] = None
            elif current is None or current.content_hash != staged.content_hash:
                effective[path] = staged
        return effective

    def _write_changes(self, repository: str, tx: str, changes: Mapping[str, StagedObject | None]) -> None:
        import lakefs

        for path, staged in sorted(changes.items()):
            what = f"writing {path!r} to repository {repository!r}"
            if staged is None:
                with self._errors(what):
                    self.client.sdk_client.objects_api.delete_object(repository, tx, path)
                continue
            obj = lakefs.WriteableObject(repository, tx, path, client=self.client)
            # pre_sign=False: the direct upload, without probing the server's storage config first.
            writer = obj.writer(mode="wb", pre_sign=False, metadata={CONTENT_HASH_META: staged.content_hash})
            with self._errors(what), open(self._spooled(staged.content_hash), "rb") as source, writer as out:
                shutil.copyfileobj(source, out, READ_CHUNK)

    def _commit_and_merge(
        self,
        repository: str,
        branch: str,
        tx: str,
        base: str,
        message: str,
        metadata: dict[str, str],
        *,
        changed: bool,
    ) -> Commit:
        """Commit on ``tx`` and squash-merge it into ``branch``, retrying when lakeFS is busy or unreachable.

        A merge whose answer was lost may have landed. So every retry first looks for the landed
        commit by the transaction id in its metadata (``TRANSACTION_META``), and gives up with
        ``StoreUnavailable`` when even that lookup fails rather than risk a second commit: lakeFS
        merges a squash-merged branch again as a new, empty commit, since the source is not in the
        destination's history. Nothing else identifies the commit: the server adds its own metadata
        (``.lakefs.merge.strategy``), and an equal message and metadata may be a legitimate other commit.
        """
        import lakefs_sdk

        with self._errors(f"committing on {branch!r} of {repository!r}"):
            self.client.sdk_client.commits_api.commit(
                repository, tx, lakefs_sdk.CommitCreation(message=message, metadata=metadata, allow_empty=True)
            )
        for attempt in range(MERGE_ATTEMPTS):
            if attempt:
                self._sleep(min(MERGE_BACKOFF * 2 ** (attempt - 1), MERGE_BACKOFF_MAX))
                landed = self._find_landed_commit(repository, branch, base, tx)
                if landed is not None:
                    return landed
            merge = lakefs_sdk.Merge(
                message=message, metadata=metadata, allow_empty=not (attempt and changed), squash_merge=True
            )
            try:
                with self._errors(
                    f"merging the commit into branch {branch!r} of {repository!r}",
                    not_found=self._ref_or_repo_missing(repository, branch, kind="branch"),
                    conflict=lambda text: StoreConflict(
                        f"{text}: a concurrent commit changed the same paths of {branch!r}; retry the task"
                    ),
                ):
                    result = self.client.sdk_client.refs_api.merge_into_branch(repository, tx, branch, merge)
                return self.get_commit(repository, result.reference)
            except StoreUnavailable:
                if attempt == MERGE_ATTEMPTS - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _find_landed_commit(self, repository: str, branch: str, base: str, tx: str) -> Commit | None:
        """The commit transaction ``tx`` landed on ``branch`` after ``base`` (the head it started from).

        Found by the transaction id in its metadata, unique to this attempt. A failed lookup raises
        (``StoreUnavailable``): "not found" must mean "not landed", or a retry could commit twice.
        """
        try:
            for raw in self._raw_log(repository, self._branch_head(repository, branch)):
                if raw.id == base:
                    return None
                if (raw.metadata or {}).get(TRANSACTION_META) == tx:
                    return self._to_commit(repository, raw)
        except StoreUnavailable as exc:
            raise StoreUnavailable(
                f"committing on {branch!r} of {repository!r}: the merge's answer was lost and checking whether it "
                f"landed failed too ({exc}); not merging again, to avoid a duplicate commit. Retry the task: "
                f"it finds the changes already on {branch!r} if the merge landed"
            ) from exc
        return None

    # ---- history -----------------------------------------------------------------------------

    def get_commit(self, repository: str, ref: str) -> Commit:
        commit_id = self.resolve_ref(repository, ref)
        with self._errors(f"reading commit {commit_id}", not_found=self._ref_or_repo_missing(repository, ref)):
            raw = self.client.sdk_client.commits_api.get_commit(repository, commit_id)
        return self._to_commit(repository, raw)

    @staticmethod
    def _to_commit(repository: str, raw: Any) -> Commit:
        """The port's view: the caller's metadata, without what lakeFS or this adapter add for themselves."""
        return Commit(
            id=raw.id,
            repository=repository,
            parents=tuple(raw.parents),
            message=raw.message,
            metadata={
                key: value
                for key, value in (raw.metadata or {}).items()
                if key != TRANSACTION_META and not key.startswith(SERVER_META_PREFIX)
            },
            created_at=_iso(raw.creation_date),
            committer=raw.committer,
        )

    def log(self, repository: str, ref: str, *, limit: int | None = None) -> Iterator[Commit]:
        if limit is not None and (not isinstance(limit, int) or limit < 0):
            raise ReproUserError(f"log limit must be a non-negative integer or None, got {limit!r}")
        commit_id = self.resolve_ref(repository, ref)  # fails at the call, not at the first next()
        return self._log_pages(repository, commit_id, limit)

    def _log_pages(self, repository: str, commit_id: str, limit: int | None) -> Iterator[Commit]:
        if limit == 0:
            return
        for count, raw in enumerate(self._raw_log(repository, commit_id), start=1):
            yield self._to_commit(repository, raw)
            if limit is not None and count >= limit:
                return

    def _raw_log(self, repository: str, commit_id: str) -> Iterator[Any]:
        """The SDK's commits along first parents from ``commit_id``, with the metadata lakeFS stores."""
        api = self.client.sdk_client.refs_api
        with self._errors(f"reading the log of {commit_id}"):
            yield from self._pages(api.log_commits, repository, commit_id, first_parent=True)

    # ---- reading data ------------------------------------------------------------------------

    def list_objects(self, repository: str, ref: str, prefix: str = "") -> list[ObjectInfo]:
        commit_id = self.resolve_ref(repository, ref)
        with self._errors(f"listing objects of {repository!r} at {ref!r}"):
            stats = list(
                self._pages(
                    self.client.sdk_client.objects_api.list_objects,
                    repository,
                    commit_id,
                    user_metadata=True,
                    prefix=prefix or None,
                )
            )
        return [
            self._info(repository, commit_id, s) for s in sorted(stats, key=lambda s: s.path) if s.path_type == "object"
        ]

    def stat_object(self, repository: str, ref: str, path: str) -> ObjectInfo:
        _validate_path(path)
        commit_id = self.resolve_ref(repository, ref)
        info = self._stat_or_none(repository, commit_id, path, ref_name=ref)
        if info is None:
            raise ObjectNotFound(
                f"path {path!r} does not exist in repository {repository!r} at ref {ref!r} "
                f"(commit {commit_id}); see list_objects({repository!r}, {ref!r})"
            )
        return info

    def _stat_or_none(
        self, repository: str, commit_id: str, path: str, ref_name: str | None = None
    ) -> ObjectInfo | None:
        what = f"reading {path!r} in repository {repository!r} at {ref_name or commit_id}"
        try:
            with self._errors(what, not_found=ObjectNotFound):
                stats = self.client.sdk_client.objects_api.stat_object(repository, commit_id, path, user_metadata=True)
        except ObjectGone:
            raise
        except ObjectNotFound:
            return None
        return self._info(repository, commit_id, stats)

    def _info(self, repository: str, commit_id: str, stats: Any) -> ObjectInfo:
        recorded = content_hash_of(stats.metadata)
        if recorded is not None:
            return ObjectInfo(stats.path, recorded, int(stats.size_bytes or 0))
        # Written by another tool: no BLAKE3 in its metadata, so hash it by reading it once.
        hasher, size = new_hasher(), 0
        what = f"reading {stats.path!r} in repository {repository!r} at {commit_id} to hash it"
        with (
            self._errors(what, not_found=ObjectNotFound),
            self._raw_reader(repository, commit_id, stats.path) as source,
        ):
            while chunk := source.read(READ_CHUNK):
                hasher.update(chunk)
                size += len(chunk)
        return ObjectInfo(stats.path, format_content_hash(hasher.hexdigest()), size)

    def _raw_reader(self, repository: str, commit_id: str, path: str) -> Any:
        import lakefs

        return lakefs.StoredObject(repository, commit_id, path, client=self.client).reader(mode="rb", pre_sign=False)

    def check_available(self, repository: str, commit_id: str, path: str, content_hash: str) -> None:
        """Read the first byte at the commit: 404 -> ``RefNotFound``/``ObjectNotFound``, 410 -> ``ObjectGone``.

        A read, not a stat: lakeFS's statObject answers from metadata, which garbage collection
        leaves in place, so only reading the data tells whether it is still there.
        """
        _validate_path(path)
        parse_content_hash(content_hash)
        if not is_commit_id(commit_id) or not self._commit_exists(repository, commit_id):
            self._require_repository(repository)
            raise RefNotFound(f"commit {commit_id} does not exist in repository {repository!r}")
        what = f"reading pinned input {path!r} in repository {repository!r} at commit {commit_id}"

        def missing(text: str) -> ReproError:
            return ObjectNotFound(f"path {path!r} does not exist in repository {repository!r} at commit {commit_id}")

        api = self.client.sdk_client.objects_api
        try:
            with self._errors(what, not_found=missing):
                api.get_object(repository, commit_id, path, range="bytes=0-0", presign=False)
        except ReproUserError as exc:
            if _http_status(exc) != 416:  # 416: an empty object has no first byte; read all of it
                raise
            with self._errors(what, not_found=missing):
                api.get_object(repository, commit_id, path, presign=False)

    def open_object(self, repository: str, ref: str, path: str) -> BinaryIO:
        """A binary reader of ``path`` at ``ref``; ``StoreCorruption`` at EOF on a hash mismatch."""
        return self._open_verified(repository, ref, path)[0]

    def _open_verified(self, repository: str, ref: str, path: str) -> tuple[BinaryIO, ObjectInfo]:
        _validate_path(path)
        commit_id = self.resolve_ref(repository, ref)  # read the commit: a branch may move meanwhile
        info = self._stat_or_none(repository, commit_id, path, ref_name=ref)
        if info is None:
            raise ObjectNotFound(
                f"path {path!r} does not exist in repository {repository!r} at ref {ref!r} "
                f"(commit {commit_id}); see list_objects({repository!r}, {ref!r})"
            )
        what = f"object {path!r} of repository {repository!r} at ref {ref!r}"
        reader = _VerifyingReader(
            self._raw_reader(repository, commit_id, path),
            info,
            what,
            lambda: self._errors(f"reading {what}", not_found=ObjectNotFound),
        )
        return io.BufferedReader(reader, buffer_size=READ_CHUNK), info

    def materialize(self, repository: str, ref: str, path: str, destination: Path) -> ObjectInfo:
        """Download the verified content of ``path`` to ``destination`` (read-only)."""
        destination = Path(destination).absolute()
        destination.parent.mkdir(parents=True, exist_ok=True)
        staging = destination.parent / f".{destination.name}.{uuid.uuid4().hex}.repro-tmp"
        reader, info = self._open_verified(repository, ref, path)
        try:
            with reader, open(staging, "xb") as out:
                shutil.copyfileobj(reader, out, READ_CHUNK)
            os.chmod(staging, READ_ONLY)
            os.replace(staging, destination)
        finally:
            with suppress(FileNotFoundError):
                os.unlink(staging)
        return info

    def diff(self, repository: str, left_ref: str, right_ref: str, prefix: str = "") -> list[DiffEntry]:
        """Two-dot diff with content hashes; a path rewritten with identical content is no change."""
        left = self.resolve_ref(repository, left_ref)
        right = self.resolve_ref(repository, right_ref)
        with self._errors(f"diffing {left_ref!r} and {right_ref!r} in {repository!r}"):
            changes = list(
                self._pages(
                    self.client.sdk_client.refs_api.diff_refs,
                    repository,
                    left,
                    right,
                    type="two_dot",
                    prefix=prefix or None,
                )
            )
        entries = []
        for change in sorted(changes, key=lambda c: c.path):
            if change.path_type != "object":
                continue
            before = self._stat_or_none(repository, left, change.path) if change.type != "added" else None
            after = self._stat_or_none(repository, right, change.path) if change.type != "removed" else None
            if before is not None and after is not None:
                if before.content_hash == after.content_hash:
                    continue
                entries.append(DiffEntry(change.path, "changed", before, after))
            elif after is not None:
                entries.append(DiffEntry(change.path, "added", None, after))
            elif before is not None:
                entries.append(DiffEntry(change.path, "removed", before, None))
        return entries

    # ---- leftovers of killed writers ---------------------------------------------------------

    def transaction_branches(self, repository: str) -> dict[str, str]:
        """The hidden ``repro_tx_*`` branches of ``repository`` (lakeFS lists hidden branches only
        when asked with ``show_hidden``): name -> head commit id."""
        checked_name(validate_repository_name, repository)
        api = self.client.sdk_client.branches_api
        with self._errors(f"listing transaction branches of {repository!r}", not_found=self._repo_missing(repository)):
            refs = list(self._pages(api.list_branches, repository, prefix=TRANSACTION_BRANCH_PREFIX, show_hidden=True))
        return {r.id: r.commit_id for r in sorted(refs, key=lambda r: r.id)}

    def remove_stale_transactions(self, repository: str, *, older_than_s: float | None = None) -> list[str]:
        """Delete the transaction branches killed writers left in ``repository``; the names deleted.

        A branch counts as stale only when the creation time in its name is more than
        ``older_than_s`` (default: the store's ``stale_transaction_age_s``) in the past, so a live
        attempt's branch is never touched. Names without a creation time (made by other tools or
        older versions) are left alone. Nothing such a branch holds was ever published.
        """
        max_age = self.stale_transaction_age_s if older_than_s is None else older_than_s
        now = self._clock()
        removed = []
        for name in self.transaction_branches(repository):
            match = _TX_NAME.match(name)
            if match is None or now - int(match["created"]) <= max_age:
                continue
            try:
                with self._errors(f"deleting stale transaction branch {name!r} of {repository!r}"):
                    self.client.sdk_client.branches_api.delete_branch(repository, name)
            except NotFoundError:
                continue  # another sweeper was first
            removed.append(name)
        return removed

    def _sweep_stale_transactions(self, repository: str) -> None:
        """Best effort, at most once per ``SWEEP_INTERVAL_S`` per repository: a failure never fails a commit."""
        now = self._clock()
        if now - self._swept.get(repository, float("-inf")) < SWEEP_INTERVAL_S:
            return
        self._swept[repository] = now
        with suppress(ReproError):
            self.remove_stale_transactions(repository)

    # ---- retention ---------------------------------------------------------------------------

    def retention_branches(self, repository: str) -> dict[str, str]:
        """The branches that keep tagged commits' data safe from lakeFS GC: branch -> commit id."""
        return {
            name: head
            for name, head in self._branches(repository).items()
            if name.startswith(INTERNAL_BRANCH_PREFIXES[1])
        }

    # ---- paging ------------------------------------------------------------------------------

    @staticmethod
    def _pages(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Iterator[Any]:
        """Every result of a lakeFS listing, following ``pagination.next_offset``."""
        after = ""
        while True:
            page = func(*args, after=after or None, amount=PAGE_SIZE, **kwargs)
            yield from page.results
            if not page.pagination.has_more:
                return
            after = page.pagination.next_offset


__all__ = [
    "AIRFLOW_UI_BUTTON",
    "CONTENT_HASH_META",
    "LakeFSConnection",
    "LakeFSStore",
    "airflow_ui_buttons",
    "content_hash_of",
    "translate_errors",
]
