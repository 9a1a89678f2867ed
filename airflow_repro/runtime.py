"""Task-side runtime: what code inside a task calls to read pinned inputs and write outputs.

Standard library only, and importable without Airflow: the same calls work in the worker process,
in a task's pinned virtualenv and inside a Kubernetes pod. The recorder writes a context file
before the task starts and points ``AIRFLOW_REPRO_CONTEXT`` at it::

    from airflow_repro import runtime

    ctx = runtime.current()
    frame = pandas.read_csv(ctx.input_path("raw"))       # pinned to a commit id
    frame.to_csv(ctx.output_path("features/train.csv"))  # committed after success
    ctx.log_metric("rows", len(frame))                   # logged to the task's MLflow run
    rng = numpy.random.default_rng(ctx.seed)             # the recorded seed

In a Kubernetes pod there is no context file: the operator puts the pins in ``AIRFLOW_REPRO_*``
environment variables (see :data:`POD_ENV`) and :func:`current` reads them. There, outputs are
written to a pod-local folder and, when the task's process exits, handed to the worker through an
:class:`OutputTransport` (the worker commits them with the manifest): a shared volume, or, where the
worker mounted a :class:`PresignedTransfer` file, presigned URLs (inputs are then downloaded when
:func:`current` is first called, and outputs uploaded at exit); a small JSON report of the
hardware the task saw (GPU model and driver) is written to the pod's termination message, where
the operator reads it back.

The context file, the pod's variables and the pod report are defined once, in
:mod:`airflow_repro.task_formats`; what the process runs on is probed by :mod:`airflow_repro.probes`.
Both are standard library only and ship with this module (:data:`RUNTIME_FILES`), as does
:mod:`airflow_repro.errors`, where :class:`RuntimeContextError` is defined.
"""

from __future__ import annotations

import atexit
import base64
import inspect
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol
from urllib.parse import unquote, urlparse

from airflow_repro import probes
from airflow_repro.errors import OutputError, ReproError, RuntimeContextError, TransferError
from airflow_repro.task_formats import (
    CONTEXT_ENV,
    MAP_INDEX_PLACEHOLDER,
    NO_RETRY_EXIT_CODE,
    POD_ENV,
    REPORT_KIND,
    TASK_ENV,
    TERMINATION_MESSAGE_LIMIT,
    TERMINATION_MESSAGE_PATH,
    CallArguments,
    ContextFile,
    PinnedInput,
    PodEnv,
    PodReport,
)

XCOM_RETURN_FILE = Path("/airflow/xcom/return.json")  # KubernetesPodOperator's XCom sidecar convention
#: The files of the ``airflow_repro`` package a task's own process needs, and all that images and
#: lockfile virtualenvs get of it (standard library only; ``__init__`` imports nothing eagerly).
RUNTIME_FILES = ("__init__.py", "runtime.py", "task_formats.py", "probes.py", "errors.py")

__all__ = [
    "CONTEXT_ENV",
    "NO_RETRY_EXIT_CODE",
    "POD_ENV",
    "REPORT_KIND",
    "RUNTIME_FILES",
    "TERMINATION_MESSAGE_LIMIT",
    "OutputTransport",
    "PinnedInput",
    "PresignedTransfer",
    "PresignedTransport",
    "PodReport",
    "RuntimeContextError",
    "TaskContext",
    "current",
    "hardware_report",
    "install_runtime",
    "is_final_error",
    "run_callable",
    "seed_everything",
    "write_report",
]


@dataclass
class TaskContext:
    """The pins of the running task attempt, and where to write its outputs.

    ``map_index`` is the task instance's map index (``-1`` when the task is not mapped); a mapped
    task's declared outputs are already expanded for it (``shards/{map_index}.csv`` is
    ``shards/3.csv`` for index 3).
    """

    task: str
    seed: int | None
    output_dir: Path
    declared_outputs: tuple[str, ...]
    inputs: dict[str, PinnedInput]
    params: dict[str, Any] = field(default_factory=dict)
    map_index: int = -1
    metrics_file: Path | None = None
    output_repository: str | None = None
    output_branch: str | None = None
    mlflow_run_id: str | None = None
    mlflow_tracking_uri: str | None = None
    _metrics: dict[str, float] = field(default_factory=dict, repr=False)
    _pod: PodEnv | None = field(default=None, repr=False, compare=False)  # the pins, in a pod

    @classmethod
    def from_context_file(cls, context: ContextFile) -> TaskContext:
        """The context of a local task, as the recorder laid it out."""
        return cls(
            task=context.task,
            seed=context.seed,
            output_dir=context.output_dir,
            declared_outputs=tuple(context.declared_outputs),
            inputs=dict(context.inputs),
            params=dict(context.params),
            metrics_file=context.metrics_file,
            map_index=context.map_index,
        )

    @classmethod
    def from_file(cls, path: Path) -> TaskContext:
        """The context in the file ``$AIRFLOW_REPRO_CONTEXT`` names."""
        return cls.from_context_file(ContextFile.read(Path(path)))

    @classmethod
    def from_pod_env(cls, pod: PodEnv) -> TaskContext:
        return cls(
            task=pod.task,
            seed=pod.seed,
            # Pod-local by default; handed over to the worker at exit (see OutputTransport).
            output_dir=Path(pod.output_dir or tempfile.mkdtemp(prefix="airflow-repro-outputs-")),
            declared_outputs=tuple(pod.declared_outputs),
            inputs=dict(pod.inputs),
            params=dict(pod.params),
            map_index=pod.map_index,
            metrics_file=Path(pod.metrics_file) if pod.metrics_file else None,
            output_repository=pod.output_repository,
            output_branch=pod.output_branch,
            mlflow_run_id=pod.mlflow_run_id,
            mlflow_tracking_uri=pod.mlflow_tracking_uri,
            _pod=pod,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TaskContext:
        """The context of a task in a pod, from the ``AIRFLOW_REPRO_*`` variables the operator set."""
        try:
            pod = PodEnv.from_env(os.environ if environ is None else environ)
        except (KeyError, ValueError, TypeError) as exc:
            raise RuntimeContextError(
                f"the AIRFLOW_REPRO_* environment of this pod is incomplete or malformed ({exc!r}); "
                "run it with ReproKubernetesPodOperator, which sets them"
            ) from exc
        return cls.from_pod_env(pod)

    # -- inputs ------------------------------------------------------------------------------
    def input(self, name: str) -> PinnedInput:
        try:
            return self.inputs[name]
        except KeyError:
            declared = ", ".join(sorted(self.inputs)) or "none"
            raise RuntimeContextError(
                f"task {self.task} has no input named {name!r} (declared: {declared}); "
                "declare it in the task's inputs={...}"
            ) from None

    def input_path(self, name: str) -> Path:
        """Local, read-only path of a pinned input."""
        return self.input(name).path

    def open_input(self, name: str, mode: str = "rb", **kwargs: Any) -> IO[Any]:
        if any(flag in mode for flag in "wax+"):
            raise RuntimeContextError(f"inputs are read-only; open {name!r} with mode 'r' or 'rb'")
        return open(self.input_path(name), mode, **kwargs)

    # -- outputs -----------------------------------------------------------------------------
    def output_path(self, path: str) -> Path:
        """Where to write a declared output; parent folders are created. In a mapped task,
        ``{map_index}`` in ``path`` stands for its map index, as in the declared outputs."""
        if self.map_index >= 0:
            path = path.replace(MAP_INDEX_PLACEHOLDER, str(self.map_index))
        relative = PurePosixPath(path)
        if not self._is_declared(relative):
            declared = ", ".join(self.declared_outputs) or "none"
            raise RuntimeContextError(
                f"task {self.task} did not declare output {path!r} (declared: {declared}); "
                "add it to the task's outputs=[...] (a name ending in '/' declares a folder)"
            )
        target = self.output_dir.joinpath(*relative.parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def open_output(self, path: str, mode: str = "wb", **kwargs: Any) -> IO[Any]:
        return open(self.output_path(path), mode, **kwargs)

    def _is_declared(self, path: PurePosixPath) -> bool:
        if path.is_absolute() or ".." in path.parts or not path.parts:
            return False
        text = path.as_posix()
        return any(
            text == declared or (declared.endswith("/") and text.startswith(declared))
            for declared in self.declared_outputs
        )

    # -- metrics -----------------------------------------------------------------------------
    def log_metric(self, name: str, value: float) -> None:
        """Record a metric; it is logged to the task's MLflow run after the task succeeds."""
        self.log_metrics({name: value})

    def log_metrics(self, metrics: dict[str, float]) -> None:
        for name, value in metrics.items():
            self._metrics[str(name)] = float(value)
        if self.metrics_file is not None:
            _write_json_atomically(self.metrics_file, self._metrics)

    @property
    def metrics(self) -> dict[str, float]:
        return dict(self._metrics)


_current: TaskContext | None = None


def current() -> TaskContext:
    """The running task's context: set in-process, read from ``$AIRFLOW_REPRO_CONTEXT``, or, in a
    Kubernetes pod, from the ``AIRFLOW_REPRO_*`` variables (outputs are then handed over at exit)."""
    global _current
    if _current is not None:
        return _current
    path = os.environ.get(CONTEXT_ENV)
    if path:
        _current = TaskContext.from_file(Path(path))
    elif os.environ.get(TASK_ENV):
        _current = TaskContext.from_env()
        _current.output_dir.mkdir(parents=True, exist_ok=True)
        atexit.register(_finish_pod_task, _current)
        sys.excepthook = _noting_no_retry(sys.excepthook)  # the pod's report then says: do not retry
        pod = _current._pod
        if pod is not None and pod.transfer_file:  # presigned transport: fetch the pinned inputs first
            PresignedTransfer.read(Path(pod.transfer_file)).download_inputs(_current.inputs)
    else:
        raise RuntimeContextError(
            "no airflow-repro task context: this code must run inside a task declared with "
            "@repro_task (or with $AIRFLOW_REPRO_CONTEXT pointing at a context file, or in a pod "
            "started by ReproKubernetesPodOperator)"
        )
    return _current


def _activate(context: TaskContext | None) -> None:
    """Set (or clear) the in-process context; used by the lineage hook, not by tasks."""
    global _current
    _current = context


def seed_everything(seed: int | None) -> None:
    """Seed Python's ``random`` and, where already imported, NumPy's and PyTorch's global RNGs."""
    if seed is None:
        return
    random.seed(seed)
    if "numpy" in sys.modules:
        sys.modules["numpy"].random.seed(seed % 2**32)
    if "torch" in sys.modules:
        sys.modules["torch"].manual_seed(seed)


# -- in a Kubernetes pod -------------------------------------------------------------------------
class OutputTransport(Protocol):
    """Hands a finished task's outputs from the pod to the place the worker commits them from."""

    def publish(self, output_dir: Path, declared: tuple[str, ...]) -> int:
        """Make the files under ``output_dir`` available to the worker; return how many."""
        ...


@dataclass(frozen=True)
class SharedVolumeTransport:
    """Outputs copied to a folder on a volume the worker also mounts (``file://`` URIs).

    Files are copied under a temporary name and renamed, so the worker never reads half a file.
    """

    root: Path

    def publish(self, output_dir: Path, declared: tuple[str, ...]) -> int:
        count = 0
        for source in sorted(p for p in output_dir.rglob("*") if p.is_file() and not _is_partial(p)):
            target = self.root / source.relative_to(output_dir)
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.partial")
            shutil.copyfile(source, partial)
            os.replace(partial, target)
            count += 1
        return count


def _is_partial(path: Path) -> bool:
    """A temporary file of an interrupted copy (``.<name>.partial``): never an output."""
    return path.name.startswith(".") and path.name.endswith(".partial")


def transport_for(uri: str) -> OutputTransport:
    """The transport an ``AIRFLOW_REPRO_OUTPUT_URI`` names."""
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return SharedVolumeTransport(Path(unquote(parsed.path)))
    raise RuntimeContextError(
        f"no output transport for {uri!r}: this runtime hands outputs over through a shared volume "
        "(file:///<mount>/...); mount the worker's [repro] work_dir in the pod"
    )


# -- the presigned transport: the pod reads and writes the object store itself, with no credential -----
TRANSFER_KIND = "airflow-repro/presigned-transfer"
TRANSFER_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class PresignedURL:
    """One presigned request: its URL (a bearer credential: never logged) and when it expires."""

    url: str = field(repr=False)
    expires_at: int | None = None  # Unix time; None where the store did not say
    size: int | None = None  # an input's recorded size
    headers: Mapping[str, str] = field(default_factory=dict)  # what the store needs with the request

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "expires_at": self.expires_at, "size": self.size, "headers": dict(self.headers)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PresignedURL:
        return cls(
            url=str(raw["url"]),
            expires_at=raw.get("expires_at"),
            size=raw.get("size"),
            headers=dict(raw.get("headers") or {}),
        )


@dataclass(frozen=True)
class PresignedTransfer:
    """The file the worker mounts into the pod (from a per-attempt Kubernetes Secret): a presigned
    GET per pinned input (name -> URL) and a presigned upload per declared output (path -> URL)."""

    inputs: Mapping[str, PresignedURL]
    outputs: Mapping[str, PresignedURL]
    max_upload_bytes: int | None = None  # the object store's single-request upload limit
    issued_at: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": TRANSFER_KIND,
            "issued_at": self.issued_at,
            "max_upload_bytes": self.max_upload_bytes,
            "inputs": {name: url.to_json() for name, url in sorted(self.inputs.items())},
            "outputs": {path: url.to_json() for path, url in sorted(self.outputs.items())},
        }

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> PresignedTransfer:
        if raw.get("kind") != TRANSFER_KIND:
            raise ValueError(f"not a presigned transfer file (kind {raw.get('kind')!r})")
        return cls(
            inputs={str(k): PresignedURL.from_json(v) for k, v in raw["inputs"].items()},
            outputs={str(k): PresignedURL.from_json(v) for k, v in raw["outputs"].items()},
            max_upload_bytes=raw.get("max_upload_bytes"),
            issued_at=raw.get("issued_at"),
        )

    @classmethod
    def read(cls, path: Path) -> PresignedTransfer:
        try:
            return cls.from_json(json.loads(Path(path).read_text(encoding="utf-8")))
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise RuntimeContextError(
                f"the presigned transfer file {path} ($AIRFLOW_REPRO_TRANSFER_FILE) cannot be read ({exc}); "
                "the worker mounts it from the attempt's Kubernetes Secret: run the pod with "
                "ReproKubernetesPodOperator"
            ) from None

    def download_inputs(self, inputs: Mapping[str, PinnedInput]) -> None:
        """Fetch each pinned input to its pod-local path (read-only), checking its size."""
        for name, pinned in sorted(inputs.items()):
            grant = self.inputs.get(name)
            if grant is None:
                raise RuntimeContextError(f"input {name!r} has no presigned URL in the transfer file")
            what = f"downloading input {name!r} ({pinned.store_path} at {pinned.commit_id[:12]})"
            pinned.path.parent.mkdir(parents=True, exist_ok=True)
            partial = pinned.path.with_name(f".{pinned.path.name}.partial")
            request = _request(grant, "GET")
            size = 0
            with _presigned(request, what, grant) as response, open(partial, "wb") as out:
                while chunk := response.read(TRANSFER_CHUNK):
                    out.write(chunk)
                    size += len(chunk)
            if grant.size is not None and size != grant.size:
                partial.unlink()
                raise TransferError(f"{what}: received {size} bytes, the commit records {grant.size}; retry the task")
            os.chmod(partial, 0o444)
            os.replace(partial, pinned.path)


@dataclass
class PresignedTransport:
    """Uploads each output with one ``PUT`` (``Content-Length``, no credential) to its presigned URL;
    ``uploads`` then holds path -> (size, ETag) for the worker, which links and verifies them."""

    transfer: PresignedTransfer
    uploads: dict[str, tuple[int, str]] = field(default_factory=dict)

    def publish(self, output_dir: Path, declared: tuple[str, ...]) -> int:
        files = sorted(p for p in output_dir.rglob("*") if p.is_file() and not _is_partial(p))
        for source in files:
            path = source.relative_to(output_dir).as_posix()
            grant = self.transfer.outputs.get(path)
            if grant is None:
                raise OutputError(
                    f"output {path!r} has no presigned upload URL: the presigned transport uploads declared "
                    f"files only ({', '.join(sorted(self.transfer.outputs)) or 'none'}); declare it in outputs=[...]"
                )
            size = source.stat().st_size
            limit = self.transfer.max_upload_bytes
            if limit is not None and size > limit:
                raise OutputError(
                    f"output {path!r} is {size} bytes, over the object store's single-upload limit of {limit} "
                    "bytes: write it as several declared outputs under that size, or use the shared-volume "
                    "transport for this task ([repro] k8s_transport = shared-volume)"
                )
            self.uploads[path] = (size, self._put(source, path, size, grant))
        return len(self.uploads)

    @staticmethod
    def _put(source: Path, path: str, size: int, grant: PresignedURL) -> str:
        headers = {"Content-Length": str(size), "Content-Type": "application/octet-stream"}
        with open(source, "rb") as body:
            request = _request(grant, "PUT", data=body, headers=headers)
            with _presigned(request, f"uploading output {path!r}", grant) as response:
                answer = response.read()
                if grant.url.startswith(LAKEFS_API):  # lakeFS answers with the object's stats
                    return str(json.loads(answer).get("checksum", ""))
                return str(response.headers.get("ETag", "")).strip('"')


#: A grant whose URL starts so is a lakeFS API path, sent with the pod's own lakeFS credentials
#: (``[repro] k8s_transport = lakefs-secret``: ``LAKEFS_*`` variables from a Kubernetes Secret).
LAKEFS_API = "lakefs-api:"
LAKEFS_CREDENTIAL_ENV = ("LAKEFS_ENDPOINT", "LAKEFS_ACCESS_KEY_ID", "LAKEFS_SECRET_ACCESS_KEY")


def _request(grant: PresignedURL, method: str, data: Any = None, headers: Mapping[str, str] = {}) -> Any:
    """The HTTP request of a grant: a presigned URL as is (no credential may go with it), or a lakeFS
    API path with the pod's lakeFS credentials (an upload is then lakeFS's ``POST .../objects``)."""
    all_headers = {**headers, **grant.headers}
    if not grant.url.startswith(LAKEFS_API):
        return urllib.request.Request(grant.url, data=data, method=method, headers=all_headers)
    missing = [name for name in LAKEFS_CREDENTIAL_ENV if not os.environ.get(name)]
    if missing:
        raise RuntimeContextError(
            f"the pod has no lakeFS credentials ({', '.join(missing)} unset): [repro] k8s_transport = lakefs-secret "
            "passes them from the Kubernetes Secret [repro] k8s_lakefs_secret names; give that Secret those keys"
        )
    endpoint, key, secret = (os.environ[name] for name in LAKEFS_CREDENTIAL_ENV)
    base = endpoint.rstrip("/").removesuffix("/api/v1")
    token = base64.b64encode(f"{key}:{secret}".encode()).decode()
    all_headers["Authorization"] = f"Basic {token}"
    return urllib.request.Request(
        f"{base}/api/v1{grant.url[len(LAKEFS_API) :]}",
        data=data,
        method="POST" if method == "PUT" else method,
        headers=all_headers,
    )


class _presigned:  # noqa: N801 - used as a context manager, like open()
    """``urlopen`` of a presigned request whose errors name the object, the status and the expiry,
    never the URL (its query string is the credential)."""

    def __init__(self, request: urllib.request.Request, what: str, grant: PresignedURL) -> None:
        self._request, self._what, self._grant = request, what, grant
        self._response: Any = None

    def __enter__(self) -> Any:
        try:
            self._response = urllib.request.urlopen(self._request, timeout=60)
        except urllib.error.HTTPError as exc:
            raise TransferError(self._refused(exc.code, _store_error(exc))) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransferError(
                f"{self._what}: the object store cannot be reached ({type(exc).__name__}: {reason}); the pod "
                "needs egress to the store's presigned endpoint (NetworkPolicy, VPC endpoint); retry the task"
            ) from None
        return self._response

    def __exit__(self, *exc: object) -> None:
        if self._response is not None:
            self._response.close()

    def _refused(self, status: int, detail: str) -> str:
        by = "lakeFS refused the request" if self._grant.url.startswith(LAKEFS_API) else "the object store refused"
        message = f"{self._what}: {by} (HTTP {status}{detail})"
        expires = self._grant.expires_at
        now = int(time.time())
        if expires is not None and now >= expires:
            return (
                f"{message}: its presigned URL expired at {_utc(expires)}, {now - expires} s before this "
                f"request ({_utc(now)} in the pod); the pod started or ran later than the URLs last. Raise "
                "the lakeFS blockstore's pre_signed_expiry and [repro] k8s_presign_min_expiry above the pod's "
                "start-up and run time (GPU node scale-up), or use the shared-volume transport; retry the task"
            )
        return f"{message}; retry the task (it gets fresh URLs)"


def _store_error(exc: urllib.error.HTTPError) -> str:
    """``: <Code>: <Message>`` of an S3-style XML error body (never the request's URL)."""
    try:
        body = exc.read(4096).decode("utf-8", "replace")
    except OSError:
        return ""
    parts = [m.group(1) for tag in ("Code", "Message") if (m := re.search(rf"<{tag}>([^<]{{1,200}})</{tag}>", body))]
    return f": {': '.join(parts)}" if parts else ""


def _utc(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def run_callable(
    function: Callable[..., Any], *, kwargs_file: str | Path | None = None, return_file: str | Path | None = None
) -> Any:
    """Run a decorated task's function as the main program of its own process (a pod, a lockfile
    virtualenv, a restored replay): seeded, given its arguments, its return value written for the worker.

    The arguments are JSON: in ``kwargs_file`` (:class:`~airflow_repro.task_formats.CallArguments`:
    ``{"args": [...], "kwargs": {...}}``, or a plain object of keyword arguments), else (in a pod) in
    ``AIRFLOW_REPRO_ARGS`` and ``AIRFLOW_REPRO_KWARGS``. A ``repro`` parameter gets the context, a
    ``params`` parameter the task's params (where no argument fills them). The return value is
    written as JSON to ``return_file``, else (in a pod, with ``do_xcom_push=True``) where
    KubernetesPodOperator's XCom sidecar reads it.

    A failure a retry cannot mend (the task misused the runtime: a :class:`RuntimeContextError`)
    ends the process with status :data:`NO_RETRY_EXIT_CODE`, after printing its traceback, so the
    worker fails the task without retrying it.
    """
    try:
        return _run_callable(function, kwargs_file, return_file)
    except Exception as exc:
        if not is_final_error(exc):
            raise
        global _no_retry
        _no_retry = f"{type(exc).__name__}: {exc}"
        traceback.print_exc()
        sys.stderr.write(f"airflow-repro: a retry cannot mend this; exiting with status {NO_RETRY_EXIT_CODE}\n")
        sys.stderr.flush()
        raise SystemExit(NO_RETRY_EXIT_CODE) from None


def _run_callable(function: Callable[..., Any], kwargs_file: str | Path | None, return_file: str | Path | None) -> Any:
    ctx = current()
    seed_everything(ctx.seed)
    if kwargs_file is not None:
        arguments = CallArguments.read(Path(kwargs_file))
    elif ctx._pod is not None:
        arguments = CallArguments(args=tuple(ctx._pod.args), kwargs=dict(ctx._pod.kwargs))
    else:
        arguments = CallArguments()
    args, kwargs = list(arguments.args), dict(arguments.kwargs)
    filled = _filled_positionally(function, len(args)) | set(kwargs)
    parameters = inspect.signature(function).parameters
    if "repro" in parameters and "repro" not in filled:
        kwargs["repro"] = ctx
    if "params" in parameters and "params" not in filled:  # the one Airflow context value a pod has
        kwargs["params"] = ctx.params
    result = function(*args, **kwargs)
    target = Path(return_file) if return_file is not None else XCOM_RETURN_FILE
    if return_file is not None or XCOM_RETURN_FILE.parent.is_dir():  # do_xcom_push=True mounts it
        target.write_text(json.dumps(result), encoding="utf-8")
    return result


def _filled_positionally(function: Callable[..., Any], count: int) -> set[str]:
    """The names of the parameters ``count`` positional arguments fill."""
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    names = [p.name for p in inspect.signature(function).parameters.values() if p.kind in positional]
    return set(names[:count])


def is_final_error(exc: BaseException) -> bool:
    """Whether a retry cannot mend ``exc``: an airflow-repro error that is not ``retryable`` (a task
    misusing the runtime, a user error), raised or wrapped (``raise ... from``) by the task."""
    seen: set[int] = set()
    current_exc: BaseException | None = exc
    while current_exc is not None and id(current_exc) not in seen:
        if isinstance(current_exc, ReproError) and not current_exc.retryable:
            return True
        seen.add(id(current_exc))
        current_exc = current_exc.__cause__
    return False


_no_retry: str | None = None  # in a task's own process: the error a retry cannot mend, if it failed so
_task_failed = False  # in a pod: the task's code raised (noted by the excepthook)


def _noting_no_retry(previous: Callable[..., Any]) -> Callable[..., Any]:
    """An excepthook that notes a final error (for the pod's report) before ``previous`` prints it."""

    def hook(kind: type[BaseException], exc: BaseException, tb: Any) -> None:
        global _no_retry, _task_failed
        _task_failed = True  # a failed task's outputs are not uploaded (presigned transport)
        if is_final_error(exc):
            _no_retry = f"{type(exc).__name__}: {exc}"
        previous(kind, exc, tb)

    return hook


def install_runtime(folder: Path) -> Path:
    """Copy the runtime (:data:`RUNTIME_FILES`, nothing else of the package) into
    ``folder/airflow_repro``; return ``folder``, the entry to put on the task's ``sys.path``."""
    package = folder / "airflow_repro"
    package.mkdir(parents=True, exist_ok=True)
    source = Path(__file__).resolve().parent
    for name in RUNTIME_FILES:
        shutil.copyfile(source / name, package / name)
    return folder


def _finish_pod_task(ctx: TaskContext) -> None:
    """At the pod task's exit: hand the outputs over and report the hardware it saw.

    Runs as an ``atexit`` handler, whose exceptions Python prints and ignores (the exit status stays
    0): a failed handover (a full disk) ends the process with status 1 instead, so the pod fails and
    the worker commits nothing.
    """
    try:
        _hand_over(ctx)
    except BaseException as exc:  # noqa: BLE001 - any failure here must fail the pod
        sys.stderr.write(f"airflow-repro: handing the outputs over failed: {type(exc).__name__}: {exc}\n")
        sys.stderr.flush()
        sys.stdout.flush()
        if is_final_error(exc):  # e.g. an output over the single-upload limit: a retry cannot mend it
            pod = ctx._pod if ctx._pod is not None else PodEnv(task=ctx.task)
            failed = PodReport(no_retry=f"{type(exc).__name__}: {exc}")
            write_report(failed, Path(pod.report_file or TERMINATION_MESSAGE_PATH))
            os._exit(NO_RETRY_EXIT_CODE)
        os._exit(1)


def _hand_over(ctx: TaskContext) -> None:
    pod = ctx._pod if ctx._pod is not None else PodEnv(task=ctx.task)
    uploads: dict[str, tuple[int, str]] = {}
    if pod.transfer_file:
        presigned = PresignedTransport(PresignedTransfer.read(Path(pod.transfer_file)))
        published = 0 if _task_failed else presigned.publish(ctx.output_dir, ctx.declared_outputs)
        uploads = dict(presigned.uploads)
    else:
        published = transport_for(pod.output_uri).publish(ctx.output_dir, ctx.declared_outputs) if pod.output_uri else 0
    if pod.output_uri and not pod.output_dir:
        shutil.rmtree(ctx.output_dir, ignore_errors=True)  # the pod-local scratch copy, handed over above
    hardware = hardware_report()
    report = PodReport(
        outputs=published,
        metrics=ctx.metrics,
        no_retry=_no_retry,
        uploads=uploads,
        **{**hardware, "gpus": tuple(hardware["gpus"])},
    )
    write_report(report, Path(pod.report_file or TERMINATION_MESSAGE_PATH))


def write_report(report: PodReport, path: Path) -> None:
    """Write the report where the kubelet reads the termination message, within its 4 KiB."""
    text = report.to_message(TERMINATION_MESSAGE_LIMIT)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:  # outside a pod there is no termination log: not worth failing the task
        sys.stderr.write(f"airflow-repro: could not write the pod report to {path}: {exc}\n")


def hardware_report() -> dict[str, Any]:
    """What this process runs on: the fields of the manifest's ``Hardware``, plus Python's version
    and the key libraries' (see :mod:`airflow_repro.probes`)."""
    host = probes.host()
    return {
        "python": probes.python_version(),
        "hostname": host.hostname,
        "platform": host.platform,
        "machine": host.machine,
        "cpu_count": host.cpu_count,
        "memory_bytes": host.memory_bytes,
        "gpus": host.gpus,
        "libraries": probes.library_versions(),
    }


def _write_json_atomically(path: Path, value: object) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(value, handle, sort_keys=True)
    os.replace(tmp, path)
