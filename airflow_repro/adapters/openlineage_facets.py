"""OpenLineage adapter: airflow-repro's custom facets, dataset naming, and builders.

Imported only when OpenLineage is active (lazily, by :mod:`airflow_repro.airflow.lineage`); this
is the one module that imports the OpenLineage client. It translates what the recorder knows
(manifest, resolved inputs, commit, tracked run) into OpenLineage objects and decides nothing.

Dataset naming (OpenLineage has no convention for either store, so this is ours):

* **lakeFS**: namespace ``lakefs://<host>:<port>`` (the lakeFS server; ``http(s)://`` endpoint
  URLs and their ``/api/v1`` path are normalized to it), name ``<repository>/<path>``.
* **embedded store**: namespace ``repro+file://<host><store root>`` (the store's folder on that
  machine: two stores never share a namespace), name ``<repository>/<path>``. The host is the one
  written in ``[repro] store_uri`` (``file://host/folder``) or else this machine's host name.

The commit id is never part of the name: it is the ``version`` facet (``datasetVersion``) of the
dataset, so one dataset has many versions, as lakeFS's commits are versions of the same object.
The ``repro_object`` facet adds the object's content hash and ref, so a consumer can tell that an
object read at a later commit of the same branch is the version an earlier task wrote.

Custom facets (``_schemaURL``: the versioned JSON Schema shipped in ``airflow_repro/schemas/
openlineage``; ``_producer``: :data:`PRODUCER`): ``repro_manifest`` (ReproManifestRunFacet),
``repro_replay`` (ReproReplayRunFacet), ``repro_object`` (ReproObjectDatasetFacet).
"""

from __future__ import annotations

import json
import math
import socket
from collections.abc import Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote, urlsplit

import attr
from openlineage.client.event_v2 import InputDataset, OutputDataset  # noqa: TID253 - the OpenLineage adapter
from openlineage.client.facet_v2 import (  # noqa: TID253 - the OpenLineage adapter
    DatasetFacet,
    RunFacet,
    dataset_version_dataset,
    datasource_dataset,
    execution_parameters_run,
    input_statistics_input_dataset,
    output_statistics_output_dataset,
    source_code_job,
    source_code_location_job,
)
from openlineage.client.utils import RedactMixin  # noqa: TID253 - the OpenLineage adapter

from airflow_repro import __version__
from airflow_repro.core.lineage_query import (
    MANIFEST_FACET,
    MANIFEST_FACET_CLASS,
    OBJECT_FACET,
    OBJECT_FACET_CLASS,
    REPLAY_FACET,
    REPLAY_FACET_CLASS,
    facet_schema_url,
)
from airflow_repro.core.manifest import (
    CodeVersion,
    DataInput,
    DataOutput,
    EnvironmentPin,
    Parameters,
    ReplayInfo,
    Resources,
)

#: ``_producer`` of our facets: this project at the released version.
PRODUCER = f"https://github.com/airflow-repro/airflow-repro/tree/v{__version__}"
LAKEFS_DEFAULT_PORTS = {"http": 80, "https": 443}
MAX_PARAMETER_CHARS = 2000

__all__ = [
    "MANIFEST_FACET",
    "OBJECT_FACET",
    "PRODUCER",
    "REPLAY_FACET",
    "ReproManifestRunFacet",
    "ReproObjectDatasetFacet",
    "ReproReplayRunFacet",
    "dataset_name",
    "execution_parameters_facet",
    "input_dataset",
    "manifest_run_facet",
    "output_dataset",
    "replay_run_facet",
    "source_code_facet",
    "source_code_location_facet",
    "store_namespace",
]


# -- naming --------------------------------------------------------------------------------------
def store_namespace(store_uri: str, *, hostname: str | None = None) -> str:
    """The dataset namespace of a versioned store, from ``[repro] store_uri``.

    ``lakefs://host:port`` and ``http(s)://host:port[/api/v1]`` (a lakeFS endpoint) give
    ``lakefs://host:port``; ``file:///folder``, ``file://host/folder`` or a bare absolute folder give
    ``repro+file://<host>/folder``.
    """
    parts = urlsplit(store_uri)
    scheme = parts.scheme.lower()
    if scheme in ("lakefs", "http", "https"):
        if not parts.hostname:
            raise ValueError(f"store URI {store_uri!r} names no lakeFS host")
        port = parts.port or LAKEFS_DEFAULT_PORTS.get(scheme)
        return f"lakefs://{parts.hostname.lower()}" + (f":{port}" if port else "")
    if scheme in ("", "file"):
        folder = parts.path if scheme == "file" else store_uri
        if not folder.startswith("/"):
            raise ValueError(f"store URI {store_uri!r} is not an absolute folder")
        host = (parts.netloc if scheme == "file" else "") or hostname or socket.gethostname() or "localhost"
        return f"repro+file://{host.lower()}{quote(str(PurePosixPath(folder)), safe='/')}"
    raise ValueError(f"store URI {store_uri!r}: no OpenLineage naming for scheme {scheme!r}")


def dataset_name(repository: str, path: str) -> str:
    """``<repository>/<path>`` (a declared folder loses its trailing ``/``)."""
    return f"{repository}/{path.rstrip('/')}"


# -- custom facets -------------------------------------------------------------------------------
@attr.define
class ManifestTask(RedactMixin):
    dagId: str  # noqa: N815
    runId: str  # noqa: N815
    taskId: str  # noqa: N815
    mapIndex: int  # noqa: N815
    tryNumber: int  # noqa: N815
    _skip_redact = ["dagId", "runId", "taskId"]


@attr.define
class ManifestCode(RedactMixin):
    sourceHash: str  # noqa: N815
    moduleHash: str | None = None  # noqa: N815
    callable: str | None = None
    bundleName: str | None = None  # noqa: N815
    bundleVersion: str | None = None  # noqa: N815
    dagFile: str | None = None  # noqa: N815
    _skip_redact = ["sourceHash", "moduleHash", "callable", "bundleVersion"]


@attr.define
class ManifestEnvironment(RedactMixin):
    kind: str
    digest: str
    image: str | None = None
    lockfile: str | None = None
    python: str | None = None
    distributions: int | None = None
    _skip_redact = ["kind", "digest", "image"]


@attr.define
class ManifestResources(RedactMixin):
    cpu: float | None = None
    memory: str | None = None
    gpu: int | None = None
    accelerator: str | None = None


@attr.define
class ManifestMlflow(RedactMixin):
    runId: str  # noqa: N815
    experimentId: str | None = None  # noqa: N815
    trackingUri: str | None = None  # noqa: N815
    _skip_redact = ["runId", "experimentId"]


@attr.define
class ReproManifestRunFacet(RunFacet):
    """``repro_manifest``: the manifest digest and the pins of a recorded task attempt."""

    task: ManifestTask
    code: ManifestCode
    environment: ManifestEnvironment
    repository: str
    branch: str
    manifestDigest: str | None = None  # noqa: N815
    manifestPath: str | None = None  # noqa: N815
    manifestSchemaVersion: str | None = None  # noqa: N815
    commitId: str | None = None  # noqa: N815
    reusedCommit: bool | None = None  # noqa: N815
    seed: int | None = None
    resources: ManifestResources | None = None
    mlflow: ManifestMlflow | None = None
    _additional_skip_redact = ["manifestDigest", "commitId", "repository", "branch"]

    @staticmethod
    def _get_schema() -> str:
        return facet_schema_url(MANIFEST_FACET_CLASS)


@attr.define
class OriginalJob(RedactMixin):
    namespace: str
    name: str


@attr.define
class OriginalRun(RedactMixin):
    runId: str  # noqa: N815
    job: OriginalJob


@attr.define
class ObjectVerdict(RedactMixin):
    """One output whose bytes differ, as the content comparison found it (bounded: see the schema)."""

    path: str
    verdict: str
    format: str | None = None
    summary: str | None = None
    maxAbsDeviation: float | str | None = None  # noqa: N815
    maxRelDeviation: float | str | None = None  # noqa: N815
    absTol: float | None = None  # noqa: N815
    relTol: float | None = None  # noqa: N815
    _additional_skip_redact = ["path", "verdict", "format"]


@attr.define
class LikelyCause(RedactMixin):
    kind: str
    detail: str
    _additional_skip_redact = ["kind"]


#: Bounds of a verdict event's explanation (the schema's maxItems / maxLength).
FACET_MAX_OBJECTS = 20
FACET_MAX_CAUSES = 12
FACET_MAX_TEXT = 500


@attr.define
class ReproReplayRunFacet(RunFacet):
    """``repro_replay``: the run this run replays and, once verified, the verdict (and, on a
    task's verdict event, the objects compared by content and the likely causes)."""

    ofRunId: str  # noqa: N815
    mode: str
    planDigest: str  # noqa: N815
    originalManifestDigest: str | None = None  # noqa: N815
    originalRun: OriginalRun | None = None  # noqa: N815
    verdict: str | None = None
    taskStatus: str | None = None  # noqa: N815
    verifiedAt: str | None = None  # noqa: N815
    objects: list[ObjectVerdict] | None = None
    likelyCauses: list[LikelyCause] | None = None  # noqa: N815
    _additional_skip_redact = ["ofRunId", "mode", "planDigest", "originalManifestDigest"]

    @staticmethod
    def _get_schema() -> str:
        return facet_schema_url(REPLAY_FACET_CLASS)


@attr.define
class ReproObjectDatasetFacet(DatasetFacet):
    """``repro_object``: the object's content hash, and the ref it was read from or committed on."""

    contentHash: str  # noqa: N815
    size: int | None = None
    ref: str | None = None
    _additional_skip_redact = ["contentHash", "ref"]

    @staticmethod
    def _get_schema() -> str:
        return facet_schema_url(OBJECT_FACET_CLASS)


# -- builders ------------------------------------------------------------------------------------
def _datasource(namespace: str) -> datasource_dataset.DatasourceDatasetFacet:
    return datasource_dataset.DatasourceDatasetFacet(name=namespace, uri=namespace, producer=PRODUCER)


def _dataset_facets(
    namespace: str, commit_id: str | None, content_hash: str | None, size: int | None, ref: str | None
) -> dict[str, Any]:
    facets: dict[str, Any] = {"dataSource": _datasource(namespace)}
    if commit_id:
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(
            datasetVersion=commit_id, producer=PRODUCER
        )
    if content_hash:
        facets[OBJECT_FACET] = ReproObjectDatasetFacet(contentHash=content_hash, size=size, ref=ref, producer=PRODUCER)
    return facets


def input_dataset(
    namespace: str,
    repository: str,
    path: str,
    *,
    commit_id: str | None = None,
    content_hash: str | None = None,
    size: int | None = None,
    ref: str | None = None,
) -> InputDataset:
    """An input; ``commit_id`` (its ``version``) and content once the input is resolved."""
    input_facets: dict[str, Any] = {}
    if size is not None:
        input_facets["inputStatistics"] = input_statistics_input_dataset.InputStatisticsInputDatasetFacet(
            size=size, fileCount=1, producer=PRODUCER
        )
    return InputDataset(
        namespace=namespace,
        name=dataset_name(repository, path),
        facets=_dataset_facets(namespace, commit_id, content_hash, size, ref),
        inputFacets=input_facets,
    )


def resolved_input(namespace: str, pinned: DataInput) -> InputDataset:
    return input_dataset(
        namespace,
        pinned.repository,
        pinned.path,
        commit_id=pinned.commit_id,
        content_hash=pinned.content_hash,
        size=pinned.size,
        ref=pinned.ref,
    )


def output_dataset(
    namespace: str,
    repository: str,
    path: str,
    *,
    commit_id: str | None = None,
    content_hash: str | None = None,
    size: int | None = None,
    ref: str | None = None,
) -> OutputDataset:
    """An output; ``commit_id`` (its ``version``) is the commit that holds it with the manifest."""
    output_facets: dict[str, Any] = {}
    if size is not None:
        output_facets["outputStatistics"] = output_statistics_output_dataset.OutputStatisticsOutputDatasetFacet(
            size=size, fileCount=1, producer=PRODUCER
        )
    return OutputDataset(
        namespace=namespace,
        name=dataset_name(repository, path),
        facets=_dataset_facets(namespace, commit_id, content_hash, size, ref),
        outputFacets=output_facets,
    )


def committed_output(namespace: str, repository: str, branch: str, output: DataOutput, commit_id: str) -> OutputDataset:
    return output_dataset(
        namespace,
        repository,
        output.path,
        commit_id=commit_id,
        content_hash=output.content_hash,
        size=output.size,
        ref=branch,
    )


def manifest_run_facet(
    *,
    identity: Any,
    code: CodeVersion,
    environment: EnvironmentPin,
    repository: str,
    branch: str,
    seed: int | None,
    resources: Resources | None,
    mlflow_run: Any = None,
    manifest: Any = None,
    manifest_path: str | None = None,
    commit_id: str | None = None,
    reused_commit: bool | None = None,
) -> ReproManifestRunFacet:
    """The ``repro_manifest`` facet; ``manifest``/``commit_id`` once the attempt is recorded.

    ``identity`` is a manifest ``AirflowIdentity``; ``mlflow_run`` anything with ``run_id``,
    ``experiment_id`` and ``tracking_uri`` (a ``TrackerRun`` or a manifest's ``Tracking``).
    """
    mlflow = None
    run_id = getattr(mlflow_run, "run_id", None) or getattr(mlflow_run, "mlflow_run_id", None)
    if run_id:
        mlflow = ManifestMlflow(
            runId=run_id,
            experimentId=getattr(mlflow_run, "experiment_id", None)
            or getattr(mlflow_run, "mlflow_experiment_id", None),
            trackingUri=getattr(mlflow_run, "tracking_uri", None) or getattr(mlflow_run, "mlflow_tracking_uri", None),
        )
    return ReproManifestRunFacet(
        task=ManifestTask(
            dagId=identity.dag_id,
            runId=identity.run_id,
            taskId=identity.task_id,
            mapIndex=identity.map_index,
            tryNumber=identity.try_number,
        ),
        code=ManifestCode(
            sourceHash=code.source_hash,
            moduleHash=code.module_hash,
            callable=code.callable,
            bundleName=code.bundle_name,
            bundleVersion=code.bundle_version,
            dagFile=code.dag_file,
        ),
        environment=ManifestEnvironment(
            kind=environment.kind,
            digest=environment.digest,
            image=environment.image,
            lockfile=environment.lockfile,
            python=environment.python,
            distributions=environment.distributions,
        ),
        repository=repository,
        branch=branch,
        manifestDigest=manifest.digest if manifest is not None else None,
        manifestPath=manifest_path,
        manifestSchemaVersion=manifest.schema_version if manifest is not None else None,
        commitId=commit_id,
        reusedCommit=reused_commit,
        seed=seed,
        resources=ManifestResources(
            cpu=resources.cpu, memory=resources.memory, gpu=resources.gpu, accelerator=resources.accelerator
        )
        if resources is not None
        else None,
        mlflow=mlflow,
        producer=PRODUCER,
    )


def replay_run_facet(
    replay: ReplayInfo,
    *,
    original_run: tuple[str, str, str] | None = None,
    verdict: str | None = None,
    task_status: str | None = None,
    verified_at: str | None = None,
    task: Any = None,
) -> ReproReplayRunFacet:
    """The ``repro_replay`` facet; ``original_run`` is ``(run id, job namespace, job name)``;
    ``task``: the task's ``TaskVerification``, whose explanation it carries (bounded)."""
    original = None
    if original_run is not None:
        run_id, namespace, name = original_run
        original = OriginalRun(runId=run_id, job=OriginalJob(namespace=namespace, name=name))
    return ReproReplayRunFacet(
        ofRunId=replay.of_run_id,
        mode=replay.mode,
        planDigest=replay.plan_digest,
        originalManifestDigest=replay.original_manifest_digest,
        originalRun=original,
        verdict=verdict,
        taskStatus=task_status,
        verifiedAt=verified_at,
        objects=_object_verdicts(task) if task is not None else None,
        likelyCauses=_likely_causes(task) if task is not None else None,
        producer=PRODUCER,
    )


def _object_verdicts(task: Any) -> list[ObjectVerdict] | None:
    verdicts = []
    for difference in task.objects[:FACET_MAX_OBJECTS]:
        comparison = difference.comparison
        if comparison is None:
            verdicts.append(ObjectVerdict(path=difference.path, verdict="differs", summary=difference.change))
            continue
        verdicts.append(
            ObjectVerdict(
                path=difference.path,
                verdict=comparison.verdict,
                format=comparison.format,
                summary=_cut(comparison.summary),
                maxAbsDeviation=_number(comparison.max_abs_deviation),
                maxRelDeviation=_number(comparison.max_rel_deviation),
                absTol=comparison.tolerance.abs_tol,
                relTol=comparison.tolerance.rel_tol,
            )
        )
    return verdicts or None


def _likely_causes(task: Any) -> list[LikelyCause] | None:
    causes = [LikelyCause(kind=c.kind, detail=_cut(c.detail)) for c in task.likely_causes[:FACET_MAX_CAUSES]]
    return causes or None


def _number(value: float | None) -> float | str | None:
    """JSON has no Infinity or NaN: they are sent as strings, as in the verification report."""
    if value is None or math.isfinite(value):
        return value
    return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")


def _cut(text: str) -> str:
    return text if len(text) <= FACET_MAX_TEXT else text[: FACET_MAX_TEXT - 1] + "…"


def execution_parameters_facet(
    parameters: Parameters, replay: ReplayInfo | None = None
) -> execution_parameters_run.ExecutionParametersRunFacet:
    """Seed, task params and DAG-run conf (values as JSON text); secrets appear by name only."""
    items: list[execution_parameters_run.ExecutionParameter] = []

    def add(key: str, value: Any, name: str | None = None, description: str | None = None) -> None:
        text = value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)
        if len(text) > MAX_PARAMETER_CHARS:
            text = text[: MAX_PARAMETER_CHARS - 3] + "..."
        items.append(
            execution_parameters_run.ExecutionParameter(key=key, name=name, description=description, value=text)
        )

    if parameters.seed is not None:
        add("seed", str(parameters.seed), "Random seed", "The seed the task was given (recorded in the manifest).")
    for prefix, values, what in (
        ("param", parameters.task_params, "Task param"),
        ("conf", parameters.dag_run_conf, "DAG-run conf entry"),
    ):
        for key in sorted(values):
            add(f"{prefix}.{key}", values[key], f"{what} {key}")
    if parameters.secret_names:
        add(
            "secret_names",
            ",".join(parameters.secret_names),
            "Secret names",
            "Names of the secrets the task used; values are never recorded.",
        )
    if replay is not None:
        add("replay.of_run_id", replay.of_run_id, "Replay of", "Airflow run id of the replayed DAG run.")
        add("replay.mode", replay.mode, "Replay mode")
    return execution_parameters_run.ExecutionParametersRunFacet(parameters=items, producer=PRODUCER)


def source_code_location_facet(
    code: CodeVersion, *, dag_file_path: str | None, repo_url: str | None = None, hostname: str | None = None
) -> source_code_location_job.SourceCodeLocationJobFacet | None:
    """Where the task's code lives, at the version that ran.

    A git DAG bundle (a version and a repository URL) gives ``type: git`` with the commit sha. Any
    other bundle gives ``type: file``: the DAG file's ``file://`` URL, with the sha256 of the file
    (the manifest's module hash) as its version. ``None`` when neither is known.
    """
    if code.bundle_version and repo_url:
        web = _web_url(repo_url)
        path = code.dag_file
        url = f"{web}/blob/{code.bundle_version}/{path}" if web and path else (web or _uri_or_none(repo_url))
        if url:
            return source_code_location_job.SourceCodeLocationJobFacet(
                type="git", url=url, repoUrl=repo_url, path=path, version=code.bundle_version, producer=PRODUCER
            )
    if dag_file_path and dag_file_path.startswith("/"):
        host = hostname or socket.gethostname() or "localhost"
        return source_code_location_job.SourceCodeLocationJobFacet(
            type="file",
            url=f"file://{host.lower()}{quote(dag_file_path, safe='/')}",
            path=code.dag_file,
            version=code.module_hash or code.source_hash,
            producer=PRODUCER,
        )
    return None


def source_code_facet(source: str) -> source_code_job.SourceCodeJobFacet:
    return source_code_job.SourceCodeJobFacet(language="python", sourceCode=source, producer=PRODUCER)


def _web_url(repo_url: str) -> str | None:
    """``https://host/org/repo`` for http(s) and scp-like (``git@host:org/repo.git``) remotes."""
    url = repo_url.strip()
    if url.startswith(("http://", "https://")):
        parts = urlsplit(url)
        path = parts.path.removesuffix(".git").rstrip("/")
        return f"{parts.scheme}://{parts.hostname}{path}" if parts.hostname else None
    if "@" in url and ":" in url.split("@", 1)[1] and "://" not in url:
        host, path = url.split("@", 1)[1].split(":", 1)
        return f"https://{host}/{path.removesuffix('.git').strip('/')}"
    return None


def _uri_or_none(value: str) -> str | None:
    return value if urlsplit(value).scheme else None


def facet_dict(facet: Any) -> Mapping[str, Any]:
    """A facet as the JSON it is sent as (nulls dropped), for tests and logs."""
    from openlineage.client.serde import Serde

    return Serde.to_dict(facet)
