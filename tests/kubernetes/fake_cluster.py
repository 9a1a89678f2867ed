"""A stand-in for the Kubernetes API at the client boundary: the ``CoreV1Api`` methods that
KubernetesPodOperator's PodManager calls, backed by a fake kubelet that runs the pod's container
as a local process.

Everything above ``CoreV1Api`` is the real thing: the operator builds its real pod, the provider's
PodManager creates it, waits for it, streams its logs and deletes it. The fake kubelet does what a
kubelet would with the pod spec it gets: it resolves ``env`` (including ``secretKeyRef`` and
``envFrom`` secrets from :attr:`FakeCoreV1Api.secrets`), runs ``command + args`` where ``python`` is
an interpreter that sees only the standard library and ``airflow_repro.runtime`` (as in an image
built from images/train-gpu: no Airflow), puts a fake ``nvidia-smi`` on PATH, and reports the
container's exit code, ``imageID`` and termination message in the pod status.

Secrets can be created and deleted through the API (what the presigned transport does per attempt),
and the kubelet mounts ``secret`` and ``emptyDir`` volumes: each mount is a folder under the pod's
root (a Secret's keys as files), and paths under its ``mountPath`` in the container's variables
are mapped there, as the container would see them at the mount path.
"""

from __future__ import annotations

import base64
import copy
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from kubernetes.client import ApiClient
from kubernetes.client import models as k8s
from kubernetes.client.exceptions import ApiException

from airflow_repro import runtime

REPO_ROOT = Path(__file__).resolve().parents[2]
GPU_LINE = "NVIDIA H100 80GB HBM3, 550.54.15, 81559 MiB, GPU-5f3c2a51-0000-4000-8000-000000000001"


class _Response:
    def __init__(self, body: Any) -> None:
        self.data = json.dumps(body)


class _LogStream:
    """What ``read_namespaced_pod_log(..., _preload_content=False)`` returns: an urllib3-like response."""

    def __init__(self, lines: list[str]) -> None:
        self._data = "".join(f"{line}\n" for line in lines).encode()

    def stream(self, amt: Any = None, decode_content: bool = True) -> Any:
        yield self._data

    def __iter__(self) -> Any:
        return iter(self._data.splitlines(keepends=True))

    def release_conn(self) -> None:
        pass

    def close(self) -> None:
        pass


@dataclass
class FakeCoreV1Api:
    workdir: Path
    node_name: str = "gpu-node-1"
    secrets: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    created: list[dict[str, Any]] = field(default_factory=list)  # pod bodies exactly as sent
    deleted: list[str] = field(default_factory=list)
    ran: list[dict[str, Any]] = field(default_factory=list)  # what each container saw
    pods: dict[tuple[str, str], k8s.V1Pod] = field(default_factory=dict)
    api_client: ApiClient = field(default_factory=ApiClient)
    secret_bodies: list[dict[str, Any]] = field(default_factory=list)  # Secrets exactly as created
    secret_events: list[tuple[str, str, str]] = field(default_factory=list)  # (create|delete, namespace, name)
    start_delay_s: float = 0.0  # how long a pod takes to start (image pull, GPU node scale-up)

    # -- the CoreV1Api surface PodManager uses --------------------------------------------------
    def create_namespaced_pod(self, body: dict[str, Any], namespace: str, **_: Any) -> k8s.V1Pod:
        self.created.append(copy.deepcopy(body))
        pod = self.api_client.deserialize(_Response(body), "V1Pod")
        self.pods[(namespace, pod.metadata.name)] = pod
        self._kubelet(pod, body)
        return pod

    def read_namespaced_pod(self, name: str, namespace: str, **_: Any) -> k8s.V1Pod:
        try:
            return self.pods[(namespace, name)]
        except KeyError:
            raise ApiException(status=404, reason="Not Found") from None

    def list_namespaced_pod(self, namespace: str, label_selector: str = "", **_: Any) -> k8s.V1PodList:
        items = [p for (ns, _name), p in self.pods.items() if ns == namespace and _matches(p, label_selector)]
        return k8s.V1PodList(items=items)

    def read_namespaced_pod_log(self, name: str, namespace: str, **_: Any) -> _LogStream:
        pod = self.read_namespaced_pod(name, namespace)
        return _LogStream(getattr(pod, "_fake_logs", []))

    def list_namespaced_event(self, namespace: str, **_: Any) -> k8s.CoreV1EventList:
        return k8s.CoreV1EventList(items=[], metadata=k8s.V1ListMeta())

    def patch_namespaced_pod(self, name: str, namespace: str, body: dict[str, Any], **_: Any) -> k8s.V1Pod:
        pod = self.read_namespaced_pod(name, namespace)
        pod.metadata.labels = {**(pod.metadata.labels or {}), **body.get("metadata", {}).get("labels", {})}
        return pod

    def delete_namespaced_pod(self, name: str, namespace: str, **_: Any) -> None:
        self.deleted.append(name)
        self.pods.pop((namespace, name), None)

    def create_namespaced_secret(self, namespace: str, body: Any, **_: Any) -> k8s.V1Secret:
        raw = body if isinstance(body, dict) else self.api_client.sanitize_for_serialization(body)
        name = raw["metadata"]["name"]
        if (namespace, name) in self.secrets:
            raise ApiException(status=409, reason="AlreadyExists")
        values = {key: base64.b64decode(value).decode() for key, value in (raw.get("data") or {}).items()}
        values.update(raw.get("stringData") or {})
        self.secrets[(namespace, name)] = values
        self.secret_bodies.append(copy.deepcopy(raw))
        self.secret_events.append(("create", namespace, name))
        return k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name, namespace=namespace))

    def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> k8s.V1Secret:
        if (namespace, name) not in self.secrets:
            raise ApiException(status=404, reason="Not Found")
        encoded = {
            key: base64.b64encode(value.encode()).decode() for key, value in self.secrets[(namespace, name)].items()
        }
        return k8s.V1Secret(metadata=k8s.V1ObjectMeta(name=name, namespace=namespace), data=encoded)

    def delete_namespaced_secret(self, name: str, namespace: str, **_: Any) -> None:
        if self.secrets.pop((namespace, name), None) is None:
            raise ApiException(status=404, reason="Not Found")
        self.secret_events.append(("delete", namespace, name))

    # -- the fake kubelet ----------------------------------------------------------------------
    def _kubelet(self, pod: k8s.V1Pod, body: dict[str, Any]) -> None:
        spec = body["spec"]
        container = next(c for c in spec["containers"] if c["name"] == "base")
        root = self.workdir / pod.metadata.name
        root.mkdir(parents=True)
        termination_log = root / "termination-log"
        env = self._container_env(container, pod.metadata.namespace, root)
        env = _mapped(env, self._mount_volumes(spec, container, pod.metadata.namespace, root))
        env["AIRFLOW_REPRO_REPORT_FILE"] = str(termination_log)  # the kubelet mounts it at terminationMessagePath
        argv = list(container.get("command") or []) + list(container.get("args") or [])
        if argv and argv[0] == "python":
            argv = [sys.executable, "-S", *argv[1:]]  # -S: no site-packages, so no Airflow
        time.sleep(self.start_delay_s)
        started = datetime.now(UTC)
        done = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True, timeout=120, check=False)
        self.ran.append(
            {
                "pod": pod.metadata.name,
                "env": env,
                "argv": argv,
                "returncode": done.returncode,
                "stdout": done.stdout,
                "stderr": done.stderr,
            }
        )
        message = termination_log.read_text() if termination_log.exists() else None
        finished = datetime.now(UTC)
        stamp = finished.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        pod._fake_logs = [f"{stamp} {line}" for line in (done.stdout + done.stderr).splitlines()]
        image = container["image"]
        pod.spec.node_name = self.node_name
        pod.status = k8s.V1PodStatus(
            phase="Succeeded" if done.returncode == 0 else "Failed",
            conditions=[k8s.V1PodCondition(type="PodScheduled", status="True")],
            container_statuses=[
                k8s.V1ContainerStatus(
                    name="base",
                    image=image,
                    image_id=_image_id(image),
                    ready=False,
                    restart_count=0,
                    state=k8s.V1ContainerState(
                        terminated=k8s.V1ContainerStateTerminated(
                            exit_code=done.returncode,
                            reason="Completed" if done.returncode == 0 else "Error",
                            message=message,
                            started_at=started,
                            finished_at=finished,
                        )
                    ),
                )
            ],
        )

    def _mount_volumes(
        self, spec: dict[str, Any], container: dict[str, Any], namespace: str, root: Path
    ) -> dict[str, Path]:
        """``secret`` and ``emptyDir`` volumes as folders under the pod's root: mount path -> folder."""
        volumes = {volume["name"]: volume for volume in spec.get("volumes") or []}
        mounted: dict[str, Path] = {}
        for mount in container.get("volumeMounts") or []:
            volume = volumes[mount["name"]]
            folder = root / "mounts" / mount["mountPath"].lstrip("/")
            if "secret" in volume:
                folder.mkdir(parents=True)
                for key, value in self.secrets[(namespace, volume["secret"]["secretName"])].items():
                    (folder / key).write_text(value)
                    (folder / key).chmod(volume["secret"].get("defaultMode", 0o644))
            elif "emptyDir" in volume:
                folder.mkdir(parents=True)
            else:
                continue  # a PersistentVolumeClaim: the fake shares this machine's folders
            mounted[mount["mountPath"]] = folder
        return mounted

    def _container_env(self, container: dict[str, Any], namespace: str, root: Path) -> dict[str, str]:
        env = {
            "PATH": f"{_fake_gpu_tools(root)}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(root),
            "LANG": "C.UTF-8",
            "PYTHONPATH": str(_runtime_only(root)),
        }
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                env.update(self.secrets[(namespace, source["secretRef"]["name"])])
        for var in container.get("env") or []:
            if "value" in var:
                env[var["name"]] = var["value"]
            elif "secretKeyRef" in var.get("valueFrom", {}):
                ref = var["valueFrom"]["secretKeyRef"]
                env[var["name"]] = self.secrets[(namespace, ref["name"])][ref["key"]]
        return env


def _mapped(env: dict[str, str], mounted: dict[str, Path]) -> dict[str, str]:
    """The container's variables with paths under a mount path pointing at that mount's folder."""
    for mount_path, folder in sorted(mounted.items(), key=lambda item: -len(item[0])):
        env = {name: value.replace(mount_path, str(folder)) for name, value in env.items()}
    return env


def _image_id(image: str) -> str:
    """As containerd reports it: the repository and the digest, without the tag."""
    name, _, digest = image.partition("@")
    repository = name.rsplit(":", 1)[0] if ":" in name.rsplit("/", 1)[-1] else name
    return f"{repository}@{digest}"


def _runtime_only(root: Path) -> Path:
    """What images/train-gpu installs: the runtime's files of the airflow_repro package, nothing else."""
    return runtime.install_runtime(root / "site")


def _fake_gpu_tools(root: Path) -> Path:
    tools = root / "bin"
    tools.mkdir()
    smi = tools / "nvidia-smi"
    smi.write_text(f"#!/bin/sh\necho '{GPU_LINE}'\n")
    smi.chmod(0o755)
    return tools


def _matches(pod: k8s.V1Pod, selector: str) -> bool:
    labels = pod.metadata.labels or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if term.startswith("!"):
            if term[1:] in labels:
                return False
        elif "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value:
                return False
        elif term not in labels:
            return False
    return True
