"""Recorded tasks in Kubernetes pods: ``ReproKubernetesPodOperator`` and ``@repro_task`` in pod mode.

Built on the provider's KubernetesPodOperator (KPO) through its own seams: the constructor's
``container_resources`` / ``node_selector`` / ``tolerations`` carry the validated resource and GPU
requests (so they are in the serialized DAG), :meth:`build_pod_request_obj` adds the per-attempt
pins (environment, labels, annotations, the shared work volume) to the pod KPO builds, and
:meth:`execute` wraps KPO's own around the record path:

1. before the pod: the recorder pins the inputs to commits, makes the run branch, starts the MLflow
   run, and lays out the attempt's workspace under ``[repro] work_dir``;
2. KPO creates the pod and waits for it; the task-side runtime reads its pins from
   ``AIRFLOW_REPRO_*`` variables, writes outputs, hands them over to the workspace (a volume both
   mount) and writes a hardware report as the container's termination message;
3. after the pod: what ran (``imageID``, node, GPU model and driver) goes into the manifest, and the
   recorder commits outputs and manifest in one commit and links MLflow, as for local tasks.

With ``[repro] k8s_transport = presigned`` (or ``transport=``) there is no shared volume: before
the pod the worker opens the attempt's lakeFS transaction with a presigned URL per input and output
(:mod:`airflow_repro.adapters.lakefs_presign`) and puts them in a per-attempt Secret the pod mounts;
after it, the worker links and checks the uploads and commits through that transaction; the
Secret and the transaction branch are deleted in any case.

This module imports the provider (and through it ``kubernetes.client``, ~3 s) at import time, because
the operator subclasses KPO. It is therefore imported only by DAGs that run tasks on Kubernetes:
``airflow_repro.airflow.operators`` (loaded with the plugin in every task process) imports it only
when a ``@repro_task`` is declared in Kubernetes mode; this module never imports ``operators``
(the record path both share is :mod:`airflow_repro.airflow.record`).

What one attempt sets up for its pod (the image it runs, its pins, a replay's recorded hardware)
is a :class:`PodAttempt`, built fresh by each ``execute`` and read by :meth:`build_pod_request_obj`:
a replay's recorded requests stand in for the DAG's own KPO arguments while KPO builds that
attempt's pod, and the arguments are as the DAG declared them again right after.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import time
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.bases.decorator import DecoratedOperator, task_decorator_factory
from airflow.sdk.exceptions import AirflowFailException

from airflow_repro.adapters import k8s_podspec as podspec
from airflow_repro.airflow import record
from airflow_repro.airflow.record import Attempt, ReproTaskMixin, raise_if_final, source_hash
from airflow_repro.core.gpus import resources_from_mapping
from airflow_repro.core.images import ImageRef, digest_of_image_id, require_pinned
from airflow_repro.core.manifest import EnvironmentPin, Hardware, KubernetesPod, Resources, load_task_manifest
from airflow_repro.core.ports import StagedObject
from airflow_repro.core.recorder import PreparedTask, TaskEnvironment, TaskRecorder, manifest_path
from airflow_repro.core.replay import load_plan
from airflow_repro.core.spec import DeclaredOutputs, Input, TaskSpec, declared_outputs
from airflow_repro.errors import ReproUserError
from airflow_repro.task_formats import NO_RETRY_EXIT_CODE, TERMINATION_MESSAGE_PATH, PodEnv, PodReport

if TYPE_CHECKING:
    from airflow_repro.adapters.lakefs_presign import OpenTransfer, PresignedTransfers, PresignSupport

WORK_CLAIM_OPTION = "k8s_work_volume_claim"
TRANSPORT_OPTION = "k8s_transport"
#: Transports without a shared volume: the worker plans each transfer, the pod makes it.
TRANSFER_TRANSPORTS = ("presigned", "lakefs-secret")
#: Bytes of the pod's 4 KiB termination message the presigned transport's upload records may take.
UPLOADS_REPORT_LIMIT = 3000
REATTACH_OPTIONS = ("reattach_on_restart", "durable")


@dataclasses.dataclass(frozen=True)
class PodResources:
    """What a replay's pod requests instead of what the DAG declares now: the recorded requests,
    merged with the DAG's own placement, as KPO's ``container_resources`` / ``node_selector`` /
    ``tolerations`` (client models)."""

    container_resources: Any  # V1ResourceRequirements, or None where nothing was recorded or given
    node_selector: dict[str, str]
    tolerations: list[Any]  # V1Toleration


@dataclasses.dataclass
class PodAttempt(Attempt):
    """A pod task's attempt: the record path's state, plus what this attempt's pod is built with."""

    image: ImageRef | None = None  # what the pod runs: the pinned image, or the digest a tag resolved to
    pins: podspec.PodPins | None = None  # set once the inputs are pinned; the pod is built with them
    pod_resources: PodResources | None = None  # a replay's recorded hardware
    transport: str = "shared-volume"  # how this pod moves data: "shared-volume", "presigned", "lakefs-secret"
    presign_support: tuple[str, PresignSupport] | None = None  # (repository, what lakeFS said of it) at the choice
    transfers: PresignedTransfers | None = None  # presigned: the store's transfers, and this attempt's
    transfer: OpenTransfer | None = dataclasses.field(default=None, repr=False)  # holds the presigned URLs
    transfer_secret: tuple[str, str] | None = None  # (namespace, name) of the Secret holding the URLs
    uploads: dict[str, tuple[int, str]] = dataclasses.field(default_factory=dict)  # what the pod reported
    linked: dict[str, StagedObject] = dataclasses.field(default_factory=dict)  # checked, on the tx branch


class ReproKubernetesPodOperator(ReproTaskMixin, KubernetesPodOperator):
    """Run a container image, pinned by digest, in a pod, with inputs pinned and outputs recorded.

    Takes every KubernetesPodOperator argument, plus:

    :param image: ``registry/repo@sha256:<64 hex>`` (a tag may stand beside the digest). A tag
        alone is refused at DAG parse time unless ``resolve_tag=True``.
    :param resolve_tag: resolve a tag to its digest through the registry when the task starts;
        the pod runs the digest, and the manifest records both.
    :param inputs, outputs, seed, repository: as for ``@repro_task``.
    :param resources: ``{"cpu": "4", "memory": "16Gi", "cpu_limit": ..., "memory_limit": ...,
        "gpu": 1, "accelerator": "h100"}`` (or a constant from ``airflow_repro.core.gpus``);
        validated as Kubernetes would, translated into KPO's ``container_resources``,
        ``node_selector`` and ``tolerations``. A replay requests what the original recorded.
    :param secret_names: names of other secrets the task uses (recorded as names). Kubernetes
        secrets given as KPO ``secrets=[Secret(...)]`` or ``env_from`` are recorded by name too.
    :param work_volume_claim: PersistentVolumeClaim holding ``[repro] work_dir`` (read-write-many),
        mounted at the same path in the pod (default: ``[repro] k8s_work_volume_claim``).
    :param transport: how the pod reads inputs and hands over outputs: ``"shared-volume"``,
        ``"presigned"``, ``"auto"`` or ``"lakefs-secret"`` (default: ``[repro] k8s_transport``;
        docs/kubernetes.md).
    """

    # The image is checked (pinned) when the DAG is parsed, so it is not rendered as a template.
    template_fields: Sequence[str] = tuple(f for f in KubernetesPodOperator.template_fields if f != "image")
    ui_color = "#e8f0fe"

    def __init__(
        self,
        *,
        image: str,
        inputs: Mapping[str, Input] | None = None,
        outputs: DeclaredOutputs = (),
        seed: int | None = None,
        repository: str | None = None,
        resources: Resources | Mapping[str, Any] | None = None,
        secret_names: Collection[str] = (),
        resolve_tag: bool = False,
        work_volume_claim: str | None = None,
        transport: str | None = None,
        **kwargs: Any,
    ) -> None:
        task_id = str(kwargs.get("task_id", "?"))
        image_ref = require_pinned(image, task_id=task_id, resolve_tag=resolve_tag)
        spec_resources = resources_from_mapping(task_id, resources)
        if kwargs.get("deferrable"):
            raise ReproUserError(
                f"task {task_id}: deferrable=True is not supported: the worker records the task after its pod; "
                "drop deferrable= (a deferred pod would finish without its outputs being committed)"
            )
        for option in REATTACH_OPTIONS:
            if kwargs.pop(option, None):
                raise ReproUserError(
                    f"task {task_id}: {option}=True is not supported: each try of a recorded task pins its own "
                    "workspace, input commits and MLflow run, so a retry must never attach to the pod of an "
                    f"earlier try; drop {option}= (a recorded pod task always starts a fresh pod per try)"
                )
        # What the DAG gave KPO itself: a replay merges the recorded requests with these again.
        self.repro_user_pod_args = {
            name: kwargs.get(name) for name in ("container_resources", "node_selector", "tolerations")
        }
        # Never reattach to a pod found by label search or a stored identity: it may be another try's.
        # (KPO derives reattach_on_restart from durable.)
        super().__init__(image=str(image_ref), durable=False, **_kpo_resources(task_id, spec_resources, kwargs))
        self.repro_image = image_ref
        self.repro_resolve_tag = resolve_tag
        self.repro_work_volume_claim = work_volume_claim
        self.repro_transport = transport
        try:
            paths, tolerances = declared_outputs(self.task_id, outputs)
            self.repro_spec = TaskSpec(
                task_id=self.task_id,
                inputs=dict(inputs or {}),
                outputs=paths,
                tolerances=tolerances,
                seed=seed,
                repository=repository,
                resources=spec_resources,
                secret_names=(
                    *secret_names,
                    *(f"k8s:{n}" for n in podspec.secret_ref_names(self.secrets, self.env_from)),
                ),
            )
            if not getattr(self, "_BaseOperator__from_mapped", False):  # mapped: checked per instance
                self.repro_spec.for_map_index(-1)
            self._check_transport_limits()
        except (ReproUserError, ValueError) as exc:
            raise record.naming_the_task(self.task_id, exc) from exc

    # -- execution -----------------------------------------------------------------------------
    def repro_new_attempt(self) -> PodAttempt:
        return PodAttempt()

    def execute(self, context: Any) -> Any:
        attempt = self._attempt(record.start_attempt(self))
        if (reused := record.reuse_if_planned(self, context, attempt)) is not None:
            return reused.return_value  # a replay from a later task: no pod starts
        try:
            attempt.image = self._image_to_run()
        except ReproUserError as exc:  # e.g. the tag does not exist: retrying will not help
            raise AirflowFailException(str(exc)) from exc
        try:
            attempt.transport = self._choose_transport()
        except ReproUserError as exc:  # a setting to change (e.g. a store that cannot presign): no retry
            raise AirflowFailException(str(exc)) from exc
        presigned = attempt.transport in TRANSFER_TRANSPORTS
        if not presigned:
            self._require_work_volume()
        recorder, prepared = record.prepare(self, context, attempt, materialize=not presigned)
        self.remote_pod = None  # KPO sets it to this attempt's pod once the pod has run
        try:
            self._request_recorded_hardware(recorder, prepared)
            if presigned:
                self._open_transfer(recorder, prepared)
            attempt.pins = self._pod_pins(prepared)
            result = super().execute(context)
            prepared.env = self._what_ran(prepared)
            linked = self._link_transfer(prepared) if presigned else None
        except BaseException as exc:
            try:
                recorder.abort(prepared, exc)
            finally:  # even if the tracker is down: the Secret holds live URLs
                self._close_transfer()
            raise_if_final(exc)
            self._raise_if_pod_failed_for_good(exc)
            raise
        try:
            with self._committing_through_transfer(recorder):
                record.finish(self, context, attempt, recorder, prepared, outputs=linked)
        finally:
            self._close_transfer()
        return result

    def _raise_if_pod_failed_for_good(self, exc: BaseException) -> None:
        """The pod's task failed in a way a retry cannot mend (it misused the runtime): its process
        exited with ``NO_RETRY_EXIT_CODE``, or its report says so. Fail the task without retry."""
        status = _container_status(self.remote_pod, self.base_container_name) if self.remote_pod else None
        terminated = status.state.terminated if status is not None and status.state else None
        if terminated is None:
            return
        report = PodReport.from_message(terminated.message)
        reason = report.no_retry if report is not None else None
        if reason is None and terminated.exit_code != NO_RETRY_EXIT_CODE:
            return
        raise AirflowFailException(
            f"task {self.task_id}: its pod failed in a way a retry cannot mend (exit code {terminated.exit_code}"
            f"{': ' + reason if reason else ', the task misused the runtime'}); see the pod's log above"
        ) from exc

    def build_pod_request_obj(self, context: Any = None, *, dry_run: bool = False) -> Any:
        """KPO's pod, plus the attempt's pins (once ``execute`` has prepared them)."""
        attempt = self.repro_attempt if isinstance(self.repro_attempt, PodAttempt) else None
        with self._requesting(attempt.pod_resources if attempt is not None else None):
            pod = super().build_pod_request_obj(context, dry_run=dry_run)
        container = next((c for c in pod.spec.containers if c.name == self.base_container_name), None)
        if container is None:
            raise AirflowFailException(
                f"task {self.task_id}: the pod has no container named {self.base_container_name!r} (the pod "
                "template renames it?): name the task's container base_container_name=, or keep the name "
                f"{self.BASE_CONTAINER_NAME!r} in the template"
            )
        container.termination_message_path = TERMINATION_MESSAGE_PATH
        if attempt is None or attempt.pins is None or attempt.image is None or attempt.settings is None:
            return pod
        pins, image = attempt.pins, attempt.image
        container.image = str(image)
        if attempt.restoration is not None and attempt.restoration.script is not None:
            container.command = ["python", "-c", attempt.restoration.script]  # a pinned replay: the archived script
        container.env = [*(container.env or []), *podspec.to_model(podspec.pin_env(pins), "list[V1EnvVar]")]
        pod.metadata.labels = {**(pod.metadata.labels or {}), **podspec.pod_labels(pins.identity)}
        pod.metadata.annotations = {
            **(pod.metadata.annotations or {}),
            **podspec.pod_annotations(pins, image=str(image), resolved_from_tag=self._resolved_from_tag()),
        }
        if attempt.transfer_secret is not None:
            self._mount_transfer(pod, container, *attempt.transfer_secret)
            return pod
        claim = self._work_volume_claim()
        if claim:
            volume, mount = podspec.work_volume(claim, str(attempt.settings.work_dir))
            pod.spec.volumes = [*(pod.spec.volumes or []), podspec.to_model(volume, "V1Volume")]
            container.volume_mounts = [*(container.volume_mounts or []), podspec.to_model(mount, "V1VolumeMount")]
        return pod

    def _mount_transfer(self, pod: Any, container: Any, namespace: str, secret_name: str) -> None:
        """The attempt's Secret as a read-only file, and pod-local scratch; no shared volume."""
        if pod.metadata.namespace != namespace:
            raise AirflowFailException(
                f"task {self.task_id}: its pod is in namespace {pod.metadata.namespace!r} but the Secret with its "
                f"presigned URLs was made in {namespace!r}: give the task namespace= explicitly"
            )
        volumes, mounts = podspec.transfer_volumes(secret_name)
        pod.spec.volumes = [*(pod.spec.volumes or []), *podspec.to_model(volumes, "list[V1Volume]")]
        container.volume_mounts = [*(container.volume_mounts or []), *podspec.to_model(mounts, "list[V1VolumeMount]")]
        attempt = self._attempt()
        if attempt.transport == "lakefs-secret" and attempt.settings and attempt.settings.k8s_lakefs_secret:
            source = {"secretRef": {"name": attempt.settings.k8s_lakefs_secret}}  # a reference: no value in the spec
            container.env_from = [*(container.env_from or []), podspec.to_model(source, "V1EnvFromSource")]

    @contextlib.contextmanager
    def _requesting(self, resources: PodResources | None) -> Iterator[None]:
        """KPO builds the pod from its own arguments (and merges a pod template under them); a
        replay's recorded hardware stands in for the DAG's for that one build, and only then."""
        if resources is None:
            yield
            return
        declared = (self.container_resources, self.node_selector, self.tolerations)
        self.container_resources = resources.container_resources
        self.node_selector = dict(resources.node_selector)
        self.tolerations = list(resources.tolerations)
        try:
            yield
        finally:
            self.container_resources, self.node_selector, self.tolerations = declared

    def _attempt(self, attempt: Attempt | None = None) -> PodAttempt:
        attempt = self.repro_attempt if attempt is None else attempt
        if not isinstance(attempt, PodAttempt):
            raise RuntimeError(f"task {self.task_id}: no pod attempt is running (execute() starts one)")
        return attempt

    # -- facts for the manifest ----------------------------------------------------------------
    def repro_environment_pin(self) -> EnvironmentPin:
        """The image digest; the Python inside it is filled in from the pod's report."""
        attempt = self.repro_attempt
        image = (attempt.image if isinstance(attempt, PodAttempt) else None) or self.repro_image
        if not image.is_pinned:  # resolve_tag: only known once execute() resolved it
            return EnvironmentPin(kind="image", digest=f"unresolved:{image}", python="unknown", image=str(image))
        return EnvironmentPin(
            kind="image", digest=image.digest or "", python="unknown (read from the pod)", image=str(image)
        )

    def repro_source_hash(self) -> str:
        """The code of an image task: the command it is started with (the image is its environment pin)."""
        command = json.dumps({"cmds": self.cmds, "arguments": self.arguments}, sort_keys=True, default=str)
        return "sha256:" + hashlib.sha256(command.encode()).hexdigest()

    def _image_to_run(self) -> ImageRef:
        if self.repro_image.is_pinned:
            return self.repro_image
        from airflow_repro.adapters.k8s_registry import resolve_digest

        resolved = resolve_digest(self.repro_image)
        self.log.info("airflow-repro resolved image %s to %s", self.repro_image, resolved.digest)
        return resolved

    def _work_volume_claim(self) -> str | None:
        from airflow_repro.config import airflow_option

        return self.repro_work_volume_claim or airflow_option(WORK_CLAIM_OPTION)

    def _require_work_volume(self) -> None:
        """Inputs and outputs travel through the shared work volume: without a claim, fail before the pod."""
        if self._work_volume_claim() or not (self.repro_spec.inputs or self.repro_spec.outputs):
            return
        raise AirflowFailException(
            f"task {self.task_id}: its inputs and outputs travel through the work volume, but no claim is set: "
            f"set [repro] {WORK_CLAIM_OPTION} = <ReadWriteMany claim mounted at [repro] work_dir on the workers> "
            "(AIRFLOW__REPRO__K8S_WORK_VOLUME_CLAIM), or give the task work_volume_claim=<claim name>"
        )

    # -- the transport: shared volume or presigned URLs ------------------------------------------
    def _transport_setting(self) -> str:
        """``transport=``, else ``[repro] k8s_transport`` (checked as the setting is)."""
        from airflow_repro.config import OPTIONS, airflow_option

        if self.repro_transport is None:
            return str(airflow_option(TRANSPORT_OPTION))
        return str(OPTIONS[TRANSPORT_OPTION].check(TRANSPORT_OPTION, self.repro_transport))

    def _check_transport_limits(self) -> None:
        """What the presigned transport cannot carry, refused when the DAG is parsed."""
        mode = self._transport_setting()
        if mode not in TRANSFER_TRANSPORTS:
            return
        folders = [o for o in self.repro_spec.outputs if o.endswith("/")]
        if folders:
            raise ReproUserError(
                f"task {self.task_id}: output folder(s) {folders} cannot travel by the {mode} transport "
                f"([repro] k8s_transport = {mode}): each upload is planned for one path, known before the pod "
                "starts. Declare each file (outputs=['reports/a.csv', ...]), or give the task "
                "transport='shared-volume' (or 'auto')"
            )
        if _uploads_report_bytes(self.repro_spec.outputs) > UPLOADS_REPORT_LIMIT:
            raise ReproUserError(
                f"task {self.task_id}: its {len(self.repro_spec.outputs)} outputs are too many for the {mode} "
                "transport, whose pod reports each upload in its termination message (4 KiB in all): declare "
                "fewer, larger outputs (an archive), or give the task transport='shared-volume'"
            )

    def _choose_transport(self) -> str:
        """``"shared-volume"`` or ``"presigned"`` for this attempt; ``auto`` asks lakeFS (``GET /config``)."""
        mode = self._transport_setting()
        if mode == "shared-volume":
            return mode
        if mode == "lakefs-secret":
            return self._lakefs_secret_transport()
        if mode == "auto" and any(o.endswith("/") for o in self.repro_spec.outputs):
            self.log.info("airflow-repro: task %s has folder outputs; using the shared volume", self.task_id)
            return "shared-volume"
        if mode == "auto" and _uploads_report_bytes(self.repro_spec.outputs) > UPLOADS_REPORT_LIMIT:
            self.log.info(
                "airflow-repro: task %s has too many outputs for the pod's termination message; using the shared "
                "volume",
                self.task_id,
            )
            return "shared-volume"
        problem = self._presign_problem()
        if problem is None:
            return "presigned"
        if mode == "auto":
            self.log.info("airflow-repro: %s; using the shared volume ([repro] k8s_transport = auto)", problem)
            return "shared-volume"
        raise AirflowFailException(f"task {self.task_id}: [repro] k8s_transport = presigned, but {problem}")

    def _lakefs_secret_transport(self) -> str:
        from airflow_repro.config import ReproSettings

        settings = ReproSettings.from_airflow_conf()
        if settings.store_kind != "lakefs":
            raise AirflowFailException(
                f"task {self.task_id}: [repro] k8s_transport = lakefs-secret, but the store is the embedded one "
                "([repro] store_uri): use lakeFS (store_uri = lakefs://<conn_id>) or k8s_transport = shared-volume"
            )
        if not settings.k8s_lakefs_secret:
            raise AirflowFailException(
                f"task {self.task_id}: [repro] k8s_transport = lakefs-secret needs [repro] k8s_lakefs_secret "
                "(AIRFLOW__REPRO__K8S_LAKEFS_SECRET): the name of a Kubernetes Secret in the pod's namespace with "
                "LAKEFS_ENDPOINT, LAKEFS_ACCESS_KEY_ID and LAKEFS_SECRET_ACCESS_KEY"
            )
        return "lakefs-secret"

    def _presign_problem(self) -> str | None:
        """Why the configured store cannot presign for this task (``None``: it can)."""
        from airflow_repro.adapters.lakefs_presign import PresignedTransfers
        from airflow_repro.adapters.lakefs_store import LakeFSStore
        from airflow_repro.backends import build_store
        from airflow_repro.config import ReproSettings

        settings = ReproSettings.from_airflow_conf()
        if settings.store_kind != "lakefs":
            return (
                "the store is the embedded one ([repro] store_uri), which has no object storage to presign: use "
                "lakeFS (store_uri = lakefs://<conn_id>) or [repro] k8s_transport = shared-volume"
            )
        store = build_store(settings)
        assert isinstance(store, LakeFSStore)
        try:
            repository = self.repro_spec.repository or settings.repository
            support = PresignedTransfers(store).support(repository)
        finally:
            store.close()
        self._attempt().presign_support = (repository, support)  # the transfer opens on it: one GET /config
        return None if support.pre_sign_support else support.explain(repository)

    def _open_transfer(self, recorder: TaskRecorder, prepared: PreparedTask) -> None:
        """The attempt's transaction branch and presigned URLs, in a Secret the pod mounts."""
        from airflow_repro.adapters.lakefs_presign import PresignedTransfers
        from airflow_repro.adapters.lakefs_store import LakeFSStore

        attempt = self._attempt()
        if not isinstance(recorder.store, LakeFSStore):
            raise AirflowFailException(f"task {self.task_id}: the presigned transport needs the lakeFS store")
        self._check_outlives_sweep(attempt.transport, recorder.store.stale_transaction_age_s)
        attempt.transfers = transfers = PresignedTransfers(recorder.store)
        plan = (prepared.repository, prepared.branch, prepared.inputs, prepared.spec.outputs)
        if attempt.transport == "lakefs-secret":  # the pod's own credentials; nothing in the plan is secret
            attempt.transfer = opened = transfers.open_for_pod_credentials(*plan)
        else:
            known = attempt.presign_support
            support = known[1] if known is not None and known[0] == prepared.repository else None
            attempt.transfer = opened = transfers.open(*plan, support=support)
            _mask(opened.urls)
            settings = attempt.settings
            timeout = self.execution_timeout.total_seconds() if self.execution_timeout else 0
            required = max(settings.k8s_presign_min_expiry if settings else 0, int(timeout))
            opened.check_expiry(self.task_id, required, time.time())
        namespace = self.namespace or self.hook.get_namespace() or "default"
        name = podspec.transfer_secret_name(opened.tx)
        body = podspec.transfer_secret(name, prepared.env.identity, json.dumps(opened.pod.to_json()))
        self.client.create_namespaced_secret(namespace, body)
        attempt.transfer_secret = (namespace, name)
        self.log.info(
            "airflow-repro: %d input(s) and %d output(s) travel through presigned URLs (Secret %s/%s, lakeFS "
            "transaction %s)",
            len(opened.pod.inputs),
            len(opened.pod.outputs),
            namespace,
            name,
            opened.tx,
        )

    def _check_outlives_sweep(self, transport: str, stale_age_s: float) -> None:
        """The store deletes transaction branches older than ``stale_age_s`` (a killed writer's
        leftovers): a pod may run at most half of that. Refused when ``execution_timeout`` is longer;
        without one, ``presigned`` is bounded by its URLs' expiry, and ``lakefs-secret`` is warned."""
        limit = stale_age_s / 2
        timeout = self.execution_timeout.total_seconds() if self.execution_timeout else None
        if timeout is not None and timeout > limit:
            raise AirflowFailException(
                f"task {self.task_id}: execution_timeout ({timeout / 86400:g} days) is too long for the {transport} "
                f"transport: lakeFS transaction branches older than {stale_age_s / 86400:g} days are swept as "
                f"leftovers, which would delete this attempt's. Set execution_timeout shorter than "
                f"{limit / 86400:g} days, or give the task transport='shared-volume'"
            )
        if timeout is None and transport == "lakefs-secret":
            self.log.warning(
                "airflow-repro: task %s has no execution_timeout; a pod running longer than %g days loses its "
                "lakeFS transaction branch to the stale-transaction sweep: set execution_timeout",
                self.task_id,
                limit / 86400,
            )

    def _link_transfer(self, prepared: PreparedTask) -> dict[str, StagedObject]:
        """Link the pod's uploads on the transaction branch and check them (size, ETag, content hash)."""
        attempt = self._attempt()
        assert attempt.transfers is not None and attempt.transfer is not None
        attempt.linked = attempt.transfers.link(attempt.transfer, attempt.uploads, task_id=prepared.spec.task_id)
        return attempt.linked

    @contextlib.contextmanager
    def _committing_through_transfer(self, recorder: TaskRecorder) -> Iterator[None]:
        """While the recorder commits, the run branch's commit lands through the transaction branch."""
        attempt = self._attempt()
        if attempt.transfers is None or attempt.transfer is None or attempt.prepared is None:
            yield
            return
        from airflow_repro.adapters.lakefs_presign import TransferCommitStore

        store = recorder.store
        recorder.store = TransferCommitStore(attempt.transfers, attempt.transfer, attempt.linked).as_port()
        try:
            yield
        finally:
            recorder.store = store

    def on_kill(self) -> None:
        """The task is killed: the pod goes (KPO), and so do the attempt's Secret and transaction branch."""
        try:
            super().on_kill()
        finally:
            try:
                self._close_transfer()
            except Exception as exc:  # noqa: BLE001 - on_kill must not raise; say what is left
                self.log.warning("airflow-repro: could not clean up the attempt's transfer (%s)", type(exc).__name__)

    def _close_transfer(self) -> None:
        """Delete the attempt's transaction branch (nothing left unmerged) and its Secret. Idempotent:
        each is forgotten once its deletion was tried; the Secret goes even if the branch's deletion fails."""
        attempt = getattr(self, "repro_attempt", None)
        if not isinstance(attempt, PodAttempt):
            return
        transfers, opened = attempt.transfers, attempt.transfer
        attempt.transfer = None
        try:
            if transfers is not None and opened is not None:
                transfers.discard(opened)
        finally:
            self._delete_transfer_secret(attempt)

    def _delete_transfer_secret(self, attempt: PodAttempt) -> None:
        if attempt.transfer_secret is None:
            return
        namespace, name = attempt.transfer_secret
        attempt.transfer_secret = None
        try:
            self.client.delete_namespaced_secret(name, namespace)
        except Exception as exc:  # noqa: BLE001 - the task's outcome stands; say what is left
            if getattr(exc, "status", None) != 404:
                self.log.warning(
                    "airflow-repro: could not delete Secret %s/%s with the attempt's presigned URLs (%s); "
                    "delete it (label airflow-repro.dev/transfer=presigned)",
                    namespace,
                    name,
                    type(exc).__name__,
                )

    def _resolved_from_tag(self) -> str | None:
        return None if self.repro_image.is_pinned else str(self.repro_image)

    def _pod_pins(self, prepared: PreparedTask) -> podspec.PodPins:
        ident = prepared.env.identity
        run = prepared.tracked_run
        env = PodEnv.for_context(
            prepared.context,  # what the recorder laid out: the pins, the materialized inputs
            output_uri=prepared.output_dir.as_uri(),
            output_repository=prepared.repository,
            output_branch=prepared.branch,
            args=tuple(prepared.env.task_args),
            kwargs=dict(prepared.env.task_kwargs),
            mlflow_run_id=run.run_id if run else None,
            mlflow_tracking_uri=run.tracking_uri if run else None,
            report_file=TERMINATION_MESSAGE_PATH,
        )
        if isinstance(self.repro_attempt, PodAttempt) and self.repro_attempt.transport in TRANSFER_TRANSPORTS:
            env = _presigned_pod_env(env)
        return podspec.PodPins(
            identity=ident,
            env=env,
            manifest_path=manifest_path(ident.task_id, ident.map_index),
            environment_digest=prepared.env.environment.digest,
        )

    def _request_recorded_hardware(self, recorder: TaskRecorder, prepared: PreparedTask) -> None:
        """A replay asks for the hardware the original task recorded, whatever the DAG says now."""
        replay = prepared.env.replay
        if replay is None or replay.original_manifest_digest is None:
            return
        ident = prepared.env.identity
        attempt = self._attempt()
        plan = attempt.replay_plan  # the plan the record path checked and used
        if plan is None:
            plan = load_plan(recorder.store, prepared.repository, ident.dag_id, ident.run_id)
        with recorder.store.open_object(
            plan.original_repository, plan.original_ref, manifest_path(ident.task_id, ident.map_index)
        ) as handle:
            original = load_task_manifest(handle.read(), expected_digest=replay.original_manifest_digest)
        if original.resources != prepared.spec.resources:
            self.log.info("airflow-repro replay: requesting the recorded resources %s", original.resources)
        own = dict(self.repro_user_pod_args)
        if podspec.resource_requirements(original.resources) is not None:
            own.pop("container_resources", None)  # the recorded requests win over the DAG's own
        merged = _kpo_resources(self.task_id, original.resources, own)
        attempt.pod_resources = PodResources(
            container_resources=merged.get("container_resources"),  # None when nothing was recorded
            node_selector=merged["node_selector"],
            tolerations=[_toleration(t) for t in merged["tolerations"]],
        )
        prepared.spec = dataclasses.replace(prepared.spec, resources=original.resources)

    def _what_ran(self, prepared: PreparedTask) -> TaskEnvironment:
        """The pod as the cluster reported it, and the hardware the task itself reported."""
        pod: Any = self.remote_pod  # KPO sets it once the pod has run
        status = _container_status(pod, self.base_container_name)
        terminated = status.state.terminated if status is not None and status.state else None
        report = PodReport.from_message(terminated.message if terminated else None)
        leftovers = sorted(str(p.relative_to(prepared.output_dir)) for p in prepared.output_dir.rglob(".*.partial"))
        if leftovers:
            raise ReproUserError(
                f"task {prepared.spec.task_id}: its pod's output handover was interrupted ({', '.join(leftovers)} "
                f"left half-copied in {prepared.output_dir}); nothing is committed, retry the task"
            )
        if report is None and prepared.spec.outputs:
            raise ReproUserError(
                f"task {prepared.spec.task_id}: it declares outputs {list(prepared.spec.outputs)}, but pod "
                f"{pod.metadata.name} left no report that it handed them over: the pod must run its task through "
                "airflow_repro.runtime (runtime.current() or @repro_task), which hands outputs over at exit"
            )
        if report is None:
            self.log.warning(
                "airflow-repro: pod %s left no hardware report (did the task use airflow_repro.runtime?)",
                pod.metadata.name,
            )
            report = PodReport()
        image_id = status.image_id if status is not None else None
        image_digest = digest_of_image_id(image_id)
        requested = self._attempt().image or self.repro_image
        if image_digest and image_digest != requested.digest:
            self.log.warning(
                "airflow-repro: pod %s ran %s, not the requested %s (a platform manifest of the "
                "index?); both are recorded",
                pod.metadata.name,
                image_digest,
                requested.digest,
            )
        if self._attempt().transport in TRANSFER_TRANSPORTS:
            self._attempt().uploads = dict(report.uploads)
        else:
            _check_handed_over(prepared, report.outputs)
        _keep_metrics(prepared, report.metrics)
        env = prepared.env
        python = report.python or "unknown"
        return dataclasses.replace(
            env,
            environment=env.environment.model_copy(update={"python": python}),
            # Airflow's versions are the worker's; Python and the libraries are the image's.
            versions=env.versions.model_copy(update={"python": python, "libraries": dict(report.libraries)}),
            hardware=_hardware(report, pod),
            kubernetes=KubernetesPod(
                namespace=pod.metadata.namespace,
                pod_name=pod.metadata.name,
                node_name=getattr(pod.spec, "node_name", None),
                image=str(requested),
                image_id=image_id,
                image_digest=image_digest,
                resolved_from_tag=self._resolved_from_tag(),
                phase=getattr(pod.status, "phase", None),
                secret_refs=podspec.secret_ref_names(self.secrets, self.env_from),
            ),
        )


class _ReproKubernetesDecoratedOperator(DecoratedOperator, ReproKubernetesPodOperator):
    """``@repro_task`` in Kubernetes mode: the function's source runs in the image via the runtime."""

    custom_operator_name = "@repro_task.kubernetes"
    template_fields: Sequence[str] = (
        "op_args",
        "op_kwargs",
        *(f for f in ReproKubernetesPodOperator.template_fields if f not in ("cmds", "arguments")),
    )
    shallow_copy_attrs: Sequence[str] = ("python_callable",)

    def __init__(
        self, *, python_callable: Callable[..., Any], op_args: Any = None, op_kwargs: Any = None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("name", f"repro-{python_callable.__name__}")
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            cmds=["python", "-c", pod_script(python_callable)],
            **kwargs,
        )

    def repro_source_hash(self) -> str:
        return source_hash(self.python_callable)

    def repro_script(self) -> str:
        return pod_script(self.python_callable)


def pod_script(function: Callable[..., Any]) -> str:
    """What the pod's ``python -c`` runs: the function's own source, then the runtime's launcher
    around it (the program a lockfile virtualenv runs too)."""
    from airflow_repro.adapters.local_venv import launcher_script

    return launcher_script(function)


def repro_kubernetes_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
    """TaskFlow decorator for a recorded task that runs in a pod; see :class:`ReproKubernetesPodOperator`.

    .. code-block:: python

        @repro_task.kubernetes(image="ghcr.io/acme/train@sha256:...", outputs=["models/model.pt"],
                               resources={"gpu": 1, "accelerator": H100_80GB, "memory": "32Gi"})
        def train():
            import torch  # installed in the image, not on the Airflow workers
            ...
    """
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=_ReproKubernetesDecoratedOperator, **kwargs
    )


# -- helpers -------------------------------------------------------------------------------------
def _kpo_resources(task_id: str, resources: Resources, kwargs: Mapping[str, Any]) -> dict[str, Any]:
    """KPO's own arguments for the validated requests, merged with what the DAG gave KPO directly."""
    requirements = podspec.resource_requirements(resources)
    merged = dict(kwargs)
    if requirements is not None:
        if kwargs.get("container_resources") is not None:
            raise ReproUserError(
                f"task {task_id}: give resources={{...}} or KPO's container_resources=, not both "
                "(resources= is what the manifest records and a replay requests)"
            )
        merged["container_resources"] = podspec.to_model(requirements, "V1ResourceRequirements")
    merged["node_selector"] = {**podspec.gpu_node_selector(resources), **(kwargs.get("node_selector") or {})}
    extra = list(kwargs.get("tolerations") or [])
    merged["tolerations"] = [*podspec.to_model(podspec.gpu_tolerations(resources), "list[V1Toleration]"), *extra]
    return merged


def _toleration(value: Any) -> Any:
    from airflow.providers.cncf.kubernetes.backcompat.backwards_compat_converters import convert_toleration

    return convert_toleration(value)


def _container_status(pod: Any, name: str) -> Any:
    statuses = (getattr(pod, "status", None) and pod.status.container_statuses) or []
    return next((s for s in statuses if s.name == name), None)


def _hardware(report: PodReport, pod: Any) -> Hardware:
    return Hardware(
        hostname=report.hostname or pod.metadata.name,
        platform=report.platform or "unknown",
        machine=report.machine or "unknown",
        cpu_count=report.cpu_count,
        memory_bytes=report.memory_bytes,
        gpus=[dict(gpu) for gpu in report.gpus],
    )


def _check_handed_over(prepared: PreparedTask, published: Any) -> None:
    """Outputs the pod handed over but the worker cannot see: the work volume is not shared."""
    if published and not any(p.is_file() for p in prepared.output_dir.rglob("*")):
        raise ReproUserError(
            f"task {prepared.spec.task_id}: its pod handed over {published} output(s) to {prepared.output_dir}, "
            "but the worker finds none there: mount the same ReadWriteMany volume at [repro] work_dir on the "
            f"workers and in the pod ([repro] {WORK_CLAIM_OPTION} = <claim name>, or work_volume_claim=)"
        )


def _presigned_pod_env(env: PodEnv) -> PodEnv:
    """The pins of a pod that moves data through presigned URLs: inputs, outputs and metrics on its
    own scratch volume, the URLs in the Secret file; nothing on a shared volume."""
    inputs = {
        name: dataclasses.replace(pinned, path=Path(podspec.pod_input_path(name, pinned.store_path)))
        for name, pinned in env.inputs.items()
    }
    return dataclasses.replace(
        env,
        inputs=inputs,
        output_uri=None,
        output_dir=f"{podspec.SCRATCH_MOUNT}/outputs",
        metrics_file=f"{podspec.SCRATCH_MOUNT}/metrics.json",
        transfer_file=podspec.TRANSFER_FILE,
    )


def _uploads_report_bytes(outputs: Sequence[str]) -> int:
    """About how much of the pod's report the records of these uploads take (path, size, ETag)."""
    return sum(len(json.dumps(path)) + len(',:[10000000000,"' + "0" * 32 + '"]') for path in outputs)


def _mask(urls: Sequence[str]) -> None:
    """Presigned URLs are bearer credentials: Airflow's masker hides them (and their query) in logs."""
    from urllib.parse import urlsplit

    from airflow.sdk.log import mask_secret

    for url in urls:
        mask_secret(url)
        if query := urlsplit(url).query:
            mask_secret(query)


def _keep_metrics(prepared: PreparedTask, metrics: Mapping[str, float] | None) -> None:
    """Metrics normally arrive in the shared workspace; the report carries them where they did not."""
    if metrics and not prepared.metrics_file.exists():
        Path(prepared.metrics_file).write_text(json.dumps(dict(metrics), sort_keys=True), encoding="utf-8")


__all__ = ["PodAttempt", "PodResources", "ReproKubernetesPodOperator", "pod_script", "repro_kubernetes_task"]
