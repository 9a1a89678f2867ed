"""Pieces of a task's pod, as Kubernetes API dicts (camelCase), built by pure functions.

``ReproKubernetesPodOperator`` hands these to KubernetesPodOperator's own arguments (resources,
node selector, tolerations) and adds the per-attempt pins (environment, labels, annotations) to
the pod it builds. Kept free of the ``kubernetes`` package so they are tested as plain dicts;
:func:`to_model` turns a dict into the client's model where KPO wants one (imported lazily).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from airflow_repro.core.gpus import GPU_RESOURCE, PRODUCT_LABEL
from airflow_repro.core.manifest import AirflowIdentity, Resources
from airflow_repro.core.resources import quantity_text
from airflow_repro.task_formats import TERMINATION_MESSAGE_PATH, PodEnv

LABEL_PREFIX = "airflow-repro.dev"
MANAGED_BY = {"app.kubernetes.io/managed-by": "airflow-repro"}
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
WORK_VOLUME = "airflow-repro-work"
_LABEL_VALUE_RE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_LABEL_MAX = 63


# -- resources and GPU scheduling (known at DAG parse time) ------------------------------------------
def resource_requirements(resources: Resources) -> dict[str, dict[str, str]] | None:
    """``resources:`` of the task's container. GPUs are an extended resource: Kubernetes needs them
    in ``limits`` (a request, if given, must equal the limit), so both carry the count."""
    requests: dict[str, str] = {}
    limits: dict[str, str] = {}
    if resources.cpu is not None:
        requests["cpu"] = quantity_text(resources.cpu)
    if resources.cpu_limit is not None:
        limits["cpu"] = quantity_text(resources.cpu_limit)
    if resources.memory is not None:
        requests["memory"] = resources.memory
    if resources.memory_limit is not None:
        limits["memory"] = resources.memory_limit
    if resources.gpu:
        gpu_resource = resources.gpu_resource or GPU_RESOURCE
        requests[gpu_resource] = limits[gpu_resource] = str(resources.gpu)
    if not requests and not limits:
        return None
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def gpu_node_selector(resources: Resources) -> dict[str, str]:
    """Nodes whose GPU-feature-discovery label names the requested model."""
    return {PRODUCT_LABEL: resources.gpu_product} if resources.gpu and resources.gpu_product else {}


def gpu_tolerations(resources: Resources) -> list[dict[str, str]]:
    """GPU nodes are commonly tainted ``nvidia.com/gpu:NoSchedule`` so that only GPU pods land there."""
    return [dict(GPU_TOLERATION)] if resources.gpu else []


# -- identity of the pod (labels: selectable, <= 63 chars; annotations: the full values) -------------
def label_value(text: str) -> str:
    """A valid label value for ``text``: kept if valid, else sanitized and suffixed with a short hash
    so that different long values stay different."""
    if len(text) <= _LABEL_MAX and _LABEL_VALUE_RE.match(text):
        return text
    digest = hashlib.sha256(text.encode()).hexdigest()[:8]
    body = re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[: _LABEL_MAX - len(digest) - 1]
    body = re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", body)
    return f"{body}-{digest}" if body else digest


def pod_labels(identity: AirflowIdentity) -> dict[str, str]:
    labels = {
        f"{LABEL_PREFIX}/dag-id": identity.dag_id,
        f"{LABEL_PREFIX}/run-id": identity.run_id,
        f"{LABEL_PREFIX}/task-id": identity.task_id,
        f"{LABEL_PREFIX}/try-number": str(identity.try_number),
    }
    if identity.map_index >= 0:
        labels[f"{LABEL_PREFIX}/map-index"] = str(identity.map_index)
    return {**MANAGED_BY, **{key: label_value(value) for key, value in labels.items()}}


@dataclass(frozen=True)
class PodPins:
    """Everything the pod of one task attempt is pinned to, from the prepared record."""

    identity: AirflowIdentity
    env: PodEnv  # what the runtime in the pod reads (AIRFLOW_REPRO_*)
    manifest_path: str
    environment_digest: str

    @property
    def repository(self) -> str:
        return self.env.output_repository or ""

    @property
    def branch(self) -> str:
        return self.env.output_branch or ""


def pod_annotations(pins: PodPins, *, image: str, resolved_from_tag: str | None = None) -> dict[str, str]:
    """Full, untruncated values: where the manifest will be, and what the pod was pinned to."""
    ident = pins.identity
    annotations = {
        f"{LABEL_PREFIX}/dag-id": ident.dag_id,
        f"{LABEL_PREFIX}/run-id": ident.run_id,
        f"{LABEL_PREFIX}/task-id": ident.task_id,
        f"{LABEL_PREFIX}/try-number": str(ident.try_number),
        f"{LABEL_PREFIX}/map-index": str(ident.map_index),
        f"{LABEL_PREFIX}/repository": pins.repository,
        f"{LABEL_PREFIX}/branch": pins.branch,
        f"{LABEL_PREFIX}/manifest": f"{pins.repository}/{pins.branch}/{pins.manifest_path}",
        f"{LABEL_PREFIX}/image": image,
        f"{LABEL_PREFIX}/input-commits": json.dumps(
            {name: pinned.commit_id for name, pinned in sorted(pins.env.inputs.items())}, sort_keys=True
        ),
    }
    if pins.env.mlflow_run_id:
        annotations[f"{LABEL_PREFIX}/mlflow-run-id"] = pins.env.mlflow_run_id
    if resolved_from_tag:
        annotations[f"{LABEL_PREFIX}/resolved-from-tag"] = resolved_from_tag
    return annotations


def pin_env(pins: PodPins) -> list[dict[str, str]]:
    """The ``AIRFLOW_REPRO_*`` variables ``airflow_repro.runtime`` reads in the pod (values are pins,
    never secrets), plus MLflow's own variables so ``mlflow.start_run()`` joins the task's run."""
    values: dict[str, str | None] = {
        **pins.env.to_env(),
        "MLFLOW_RUN_ID": pins.env.mlflow_run_id,
        "MLFLOW_TRACKING_URI": pins.env.mlflow_tracking_uri,
        "PYTHONHASHSEED": "0",
    }
    return [{"name": name, "value": value} for name, value in values.items() if value is not None]


def work_volume(claim_name: str, mount_path: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The worker's ``[repro] work_dir`` mounted at the same path in the pod: inputs are read there,
    outputs handed over there (``file://`` transport)."""
    volume = {"name": WORK_VOLUME, "persistentVolumeClaim": {"claimName": claim_name}}
    mount = {"name": WORK_VOLUME, "mountPath": mount_path}
    return volume, mount


# -- the presigned transport: a per-attempt Secret file and pod-local scratch, no shared volume -------
TRANSFER_VOLUME = "airflow-repro-transfer"
TRANSFER_MOUNT = "/var/run/airflow-repro/transfer"
TRANSFER_KEY = "transfer.json"
TRANSFER_FILE = f"{TRANSFER_MOUNT}/{TRANSFER_KEY}"
SCRATCH_VOLUME = "airflow-repro-scratch"
SCRATCH_MOUNT = "/var/run/airflow-repro/scratch"  # an emptyDir: works with a read-only root file system


def pod_input_path(name: str, store_path: str) -> str:
    """Where the runtime in the pod downloads input ``name`` (pod-local, on the scratch volume)."""
    return f"{SCRATCH_MOUNT}/inputs/{name}/{store_path.rsplit('/', 1)[-1]}"


def transfer_secret_name(tx_branch: str) -> str:
    """The Secret of one attempt, named after its lakeFS transaction branch (unique per attempt)."""
    return "airflow-repro-" + re.sub(r"[^a-z0-9-]", "-", tx_branch.lower())


def transfer_secret(name: str, identity: AirflowIdentity, transfer_json: str) -> dict[str, Any]:
    """The attempt's presigned URLs as a Secret (mounted as a file, never in env or annotations),
    labelled so that a janitor can find the ones a killed worker left behind."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"name": name, "labels": {**pod_labels(identity), f"{LABEL_PREFIX}/transfer": "presigned"}},
        "stringData": {TRANSFER_KEY: transfer_json},
    }


def transfer_volumes(secret_name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The Secret's file (read-only, owner-readable) and the pod-local scratch folder."""
    volumes: list[dict[str, Any]] = [
        {"name": TRANSFER_VOLUME, "secret": {"secretName": secret_name, "defaultMode": 0o400}},
        {"name": SCRATCH_VOLUME, "emptyDir": {}},
    ]
    mounts: list[dict[str, Any]] = [
        {"name": TRANSFER_VOLUME, "mountPath": TRANSFER_MOUNT, "readOnly": True},
        {"name": SCRATCH_VOLUME, "mountPath": SCRATCH_MOUNT},
    ]
    return volumes, mounts


def secret_ref_names(secrets: Iterable[Any], env_from: Iterable[Any] = ()) -> list[str]:
    """``secret/key`` names of the Kubernetes secrets a pod gets; what the manifest records of them."""
    names = []
    for secret in secrets:  # airflow.providers.cncf.kubernetes.secret.Secret
        key = getattr(secret, "key", None)
        names.append(f"{secret.secret}/{key}" if key else f"{secret.secret}")
    for source in env_from:  # V1EnvFromSource
        ref = getattr(source, "secret_ref", None)
        if ref is not None and getattr(ref, "name", None):
            names.append(ref.name)
    return sorted(set(names))


def to_model(data: Any, model: str) -> Any:
    """A Kubernetes API dict as the client's model (``"V1Toleration"``, ``"list[V1EnvVar]"``...)."""
    from kubernetes.client import ApiClient

    class _Response:
        def __init__(self, body: Any) -> None:
            self.data = json.dumps(body)

    return ApiClient().deserialize(_Response(data), model)


__all__ = [
    "SCRATCH_MOUNT",
    "TERMINATION_MESSAGE_PATH",
    "TRANSFER_FILE",
    "PodPins",
    "gpu_node_selector",
    "gpu_tolerations",
    "label_value",
    "pod_input_path",
    "pin_env",
    "pod_annotations",
    "pod_labels",
    "resource_requirements",
    "secret_ref_names",
    "to_model",
    "transfer_secret",
    "transfer_secret_name",
    "transfer_volumes",
    "work_volume",
]
