"""Presigned transfers: a task pod reads and writes lakeFS's object store itself, with no credential.

The worker keeps every lakeFS credential and still makes the one atomic commit of outputs and
manifest. For one task attempt (:class:`PresignedTransfers`):

1. :meth:`~PresignedTransfers.open`: a hidden transaction branch ``repro_tx_<uuid>`` from the run
   branch's head; per pinned input a presigned GET (``statObject`` with ``presign=true`` at its
   commit id); per declared output a presigned upload (``getPhysicalAddress`` with
   ``presign=true`` on the transaction branch, whose signed address binds repository, branch and
   path). What the pod gets is a :class:`~airflow_repro.runtime.PresignedTransfer`;
2. the pod downloads, runs the task and ``PUT`` s each output (see :mod:`airflow_repro.runtime`);
3. :meth:`~PresignedTransfers.link`: ``linkPhysicalAddress`` per output (lakeFS takes size and
   checksum from the client, so the worker then streams each object back through lakeFS and checks
   its size and ETag, and records its BLAKE3 hash in the object's user metadata);
4. :meth:`~PresignedTransfers.commit`: the manifest is written on the same transaction branch,
   committed and squash-merged as any commit of :class:`LakeFSStore`; or
   :meth:`~PresignedTransfers.discard` on any failure: nothing is merged, the branch is deleted (its
   uploads become uncommitted garbage for lakeFS GC).

Limits are checked before the pod starts: the storage must presign (``GET /config``
``pre_sign_support``; lakeFS's local blockstore cannot), and the URLs must outlive the pod's
start-up and run (:meth:`OpenTransfer.check_expiry`).
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import quote

from airflow_repro.adapters.lakefs_store import CONTENT_HASH_META, LakeFSStore, translate_errors
from airflow_repro.core.hashing import format_content_hash, new_hasher
from airflow_repro.core.manifest import DataInput
from airflow_repro.core.ports import Commit, StagedObject, VersionedDataStore
from airflow_repro.errors import (
    ConfigError,
    NotFoundError,
    OutputError,
    ReproUserError,
    StoreCorruption,
    TransferError,
)
from airflow_repro.runtime import LAKEFS_API, PresignedTransfer, PresignedURL

#: The largest object one presigned PUT may carry, per blockstore (S3: 5 GiB; Azure Put Blob: 5000 MiB).
SINGLE_UPLOAD_LIMITS = {"s3": 5 * 1024**3, "azure": 5000 * 1024**2, "gs": 5 * 1024**4}
#: Headers a presigned upload needs besides ``Content-Length`` (lakefs.object, WriteableObject).
UPLOAD_HEADERS = {"azure": {"x-ms-blob-type": "BlockBlob"}}
READ_CHUNK = 8 * 1024 * 1024
_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")


@dataclass(frozen=True)
class PresignSupport:
    """Whether the storage of a repository can presign, as lakeFS's ``GET /config`` says."""

    blockstore_type: str
    pre_sign_support: bool
    storage_id: str = ""

    def explain(self, repository: str) -> str:
        where = f" (storage {self.storage_id!r})" if self.storage_id else ""
        return (
            f"lakeFS cannot presign for repository {repository!r}: its blockstore{where} is "
            f"{self.blockstore_type!r}, and lakeFS presigns on S3, GCS and Azure only (the local blockstore of "
            "the compose stack cannot; neither can a blockstore with disable_pre_signed). Use [repro] "
            "k8s_transport = shared-volume (with k8s_work_volume_claim), or 'auto' to fall back to it, or back "
            "lakeFS with S3-compatible storage (e.g. MinIO)"
        )


@dataclass(frozen=True)
class OpenTransfer:
    """One attempt's transfer as the worker holds it: the transaction branch and what the pod gets."""

    repository: str
    branch: str  # the run branch the outputs land on
    tx: str  # the hidden transaction branch the uploads are linked on
    base: str  # the run branch's head when ``tx`` was made
    pod: PresignedTransfer = field(repr=False)  # what the pod's Secret holds (bearer credentials: never logged)
    staging: Mapping[str, str] = field(repr=False)  # output path -> the signed physical address lakeFS links
    pod_uploads_to_lakefs: bool = False  # lakefs-secret: the pod uploads through lakeFS itself, unlinked

    @property
    def urls(self) -> list[str]:
        """Every URL the pod gets (for Airflow's secret masker)."""
        grants = [*self.pod.inputs.values(), *self.pod.outputs.values()]
        return [grant.url for grant in grants]

    @property
    def expires_at(self) -> int | None:
        """When the first of the URLs expires (``None``: lakeFS did not say)."""
        stamps = [g.expires_at for g in (*self.pod.inputs.values(), *self.pod.outputs.values()) if g.expires_at]
        return min(stamps) if stamps else None

    def check_expiry(self, task_id: str, required_s: int, now: float) -> None:
        """``ConfigError`` when the URLs expire within ``required_s`` (the pod might not reach them)."""
        expires = self.expires_at
        if expires is None or expires - now >= required_s:
            return
        raise ConfigError(
            f"task {task_id}: the presigned URLs lakeFS issued expire in {int(expires - now)} s, sooner than the "
            f"{required_s} s the pod may need to start and run ([repro] k8s_presign_min_expiry, or the task's "
            "execution_timeout if longer): raise the lakeFS blockstore's pre_signed_expiry (default 15 min; "
            "temporary STS credentials cut it shorter), lower [repro] k8s_presign_min_expiry if your pods start "
            "and finish sooner, or use [repro] k8s_transport = shared-volume. Nothing was started"
        )


class PresignedTransfers:
    """Opens, links and lands the presigned transfers of task attempts on one :class:`LakeFSStore`."""

    def __init__(self, store: LakeFSStore, *, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self._clock = clock

    def _errors(self, what: str, **kwargs: Any) -> Any:
        return translate_errors(what, endpoint=self.store.endpoint, **kwargs)

    # ---- before the pod ----------------------------------------------------------------------
    def support(self, repository: str) -> PresignSupport:
        """The presign support of ``repository``'s storage (multi-storage servers list each one)."""
        api = self.store.client.sdk_client
        with self._errors("reading lakeFS's storage configuration (GET /config)"):
            config = api.config_api.get_config()
        try:
            with self._errors(f"reading repository {repository!r}"):
                storage_id = getattr(api.repositories_api.get_repository(repository), "storage_id", None) or ""
        except NotFoundError:  # not created yet: it will be, in the default storage
            storage_id = ""
        storages = list(config.storage_config_list or [])
        chosen = next((s for s in storages if (s.blockstore_id or "") == storage_id), None)
        chosen = chosen or config.storage_config
        if chosen is None:
            return PresignSupport(blockstore_type="unknown", pre_sign_support=False, storage_id=storage_id)
        return PresignSupport(chosen.blockstore_type, bool(chosen.pre_sign_support), storage_id)

    def open(
        self,
        repository: str,
        branch: str,
        inputs: Sequence[DataInput],
        outputs: Sequence[str],
        *,
        support: PresignSupport | None = None,
    ) -> OpenTransfer:
        """The transaction branch and a presigned URL per input and output (see the module doc);
        ``support``: what :meth:`support` already said of ``repository`` (else it is asked)."""
        support = support or self.support(repository)
        if not support.pre_sign_support:
            raise ConfigError(support.explain(repository))
        tx, base = self.store.open_transaction(repository, branch)
        try:
            gets = {pinned.name: self._presigned_get(pinned) for pinned in inputs}
            staging, puts = {}, {}
            for path in outputs:
                staging[path], puts[path] = self._presigned_put(repository, tx, path, support.blockstore_type)
        except BaseException:
            self.store.delete_transaction(repository, tx)
            raise
        pod = PresignedTransfer(
            inputs=gets,
            outputs=puts,
            max_upload_bytes=SINGLE_UPLOAD_LIMITS.get(support.blockstore_type),
            issued_at=int(self._clock()),
        )
        return OpenTransfer(repository, branch, tx, base, pod, staging)

    def open_for_pod_credentials(
        self, repository: str, branch: str, inputs: Sequence[DataInput], outputs: Sequence[str]
    ) -> OpenTransfer:
        """The transaction branch, and lakeFS API paths (no URL credential) for a pod that holds
        lakeFS credentials of its own: it reads the inputs at their commits and uploads the
        outputs onto the transaction branch, where the worker checks them and commits."""
        tx, base = self.store.open_transaction(repository, branch)

        def api_path(repo: str, where: str, path: str) -> str:
            return f"{LAKEFS_API}/repositories/{quote(repo, safe='')}/{where}/objects?path={quote(path, safe='')}"

        gets = {
            pinned.name: PresignedURL(
                url=api_path(pinned.repository, f"refs/{pinned.commit_id}", pinned.path), size=pinned.size
            )
            for pinned in inputs
        }
        puts = {path: PresignedURL(url=api_path(repository, f"branches/{tx}", path)) for path in outputs}
        pod = PresignedTransfer(inputs=gets, outputs=puts, issued_at=int(self._clock()))
        return OpenTransfer(repository, branch, tx, base, pod, {path: "" for path in outputs}, True)

    def _presigned_get(self, pinned: DataInput) -> PresignedURL:
        what = f"presigning input {pinned.name!r} ({pinned.path} at {pinned.commit_id} in {pinned.repository!r})"
        with self._errors(what):
            stats = self.store.client.sdk_client.objects_api.stat_object(
                pinned.repository, pinned.commit_id, pinned.path, presign=True
            )
        if not str(stats.physical_address).startswith(("https://", "http://")):
            raise ConfigError(f"{what}: lakeFS answered with no presigned URL; is presign disabled on its blockstore?")
        return PresignedURL(url=stats.physical_address, expires_at=stats.physical_address_expiry, size=pinned.size)

    def _presigned_put(self, repository: str, tx: str, path: str, blockstore: str) -> tuple[str, PresignedURL]:
        with self._errors(f"presigning the upload of output {path!r} in {repository!r}"):
            location = self.store.client.sdk_client.staging_api.get_physical_address(repository, tx, path, presign=True)
        if not location.presigned_url:
            raise ConfigError(
                f"presigning the upload of output {path!r}: lakeFS answered with no presigned URL; "
                "is presign disabled on its blockstore?"
            )
        grant = PresignedURL(
            url=location.presigned_url,
            expires_at=location.presigned_url_expiry or None,
            headers=UPLOAD_HEADERS.get(blockstore, {}),
        )
        return str(location.physical_address), grant

    # ---- after the pod -----------------------------------------------------------------------
    def link(
        self, opened: OpenTransfer, uploads: Mapping[str, tuple[int, str]], *, task_id: str
    ) -> dict[str, StagedObject]:
        """Link every declared output the pod uploaded on the transaction branch, and check each one
        by streaming it back (size, ETag); path -> its content hash and size, as the manifest records."""
        declared = sorted(opened.staging)
        missing = [path for path in declared if path not in uploads]
        if missing:
            raise OutputError(
                f"task {task_id} declared outputs it did not write: {missing}; write them with "
                "runtime.current().output_path(...) or remove them from outputs=[...]"
            )
        undeclared = sorted(set(uploads) - set(declared))
        if undeclared:
            raise OutputError(f"task {task_id}: its pod reports uploads of undeclared outputs {undeclared}")
        linked = {}
        for path in declared:
            size, etag = uploads[path]
            if not opened.pod_uploads_to_lakefs:  # the pod uploaded to the object store: link it first
                self._link(opened, path, size, etag, metadata={})
            content_hash = self._verify(opened, path, size, etag, task_id)
            if not opened.pod_uploads_to_lakefs:  # (an address lakeFS signed can be linked again)
                self._link(opened, path, size, etag, metadata={CONTENT_HASH_META: content_hash})
            linked[path] = StagedObject(content_hash, size)
        return linked

    def _link(self, opened: OpenTransfer, path: str, size: int, etag: str, metadata: Mapping[str, str]) -> None:
        import lakefs_sdk

        body = lakefs_sdk.StagingMetadata(
            staging=lakefs_sdk.StagingLocation(physical_address=opened.staging[path]),
            checksum=etag or "-",
            size_bytes=size,
            user_metadata=dict(metadata),
            content_type="application/octet-stream",
        )
        with self._errors(f"linking the uploaded output {path!r} on {opened.tx!r} of {opened.repository!r}"):
            self.store.client.sdk_client.staging_api.link_physical_address(opened.repository, opened.tx, path, body)

    def _verify(self, opened: OpenTransfer, path: str, size: int, etag: str, task_id: str) -> str:
        """Stream the linked object back: its size must be what the pod reported (lakeFS trusts the
        client's), and a single-part ETag its MD5. Returns its BLAKE3 content hash."""
        hasher, md5, read = new_hasher(), hashlib.md5(usedforsecurity=False), 0
        with self._reader(opened, path) as source:
            while chunk := source.read(READ_CHUNK):
                hasher.update(chunk)
                md5.update(chunk)
                read += len(chunk)
        what = f"task {task_id}: output {path!r} as uploaded by its pod"
        if read != size:
            raise TransferError(f"{what} holds {read} bytes, but the pod reported {size}; nothing is committed, retry")
        if _MD5_ETAG.match(etag.lower()) and md5.hexdigest() != etag.lower():
            raise StoreCorruption(f"{what}: its content does not match the ETag the object store gave the pod")
        return format_content_hash(hasher.hexdigest())

    @contextmanager
    def _reader(self, opened: OpenTransfer, path: str) -> Iterator[Any]:
        import lakefs

        what = f"reading back output {path!r} on {opened.tx!r} of {opened.repository!r}"
        obj = lakefs.StoredObject(opened.repository, opened.tx, path, client=self.store.client)
        with self._errors(what), obj.reader(mode="rb", pre_sign=False) as source:
            yield source

    def commit(
        self, opened: OpenTransfer, changes: Mapping[str, StagedObject | None], *, message: str, metadata: Any
    ) -> Commit:
        """Write ``changes`` (the manifest, staged with the store) beside the linked outputs, commit on
        the transaction branch and squash-merge it into the run branch; the branch is deleted."""
        return self.store.commit_on_transaction(
            opened.repository, opened.branch, opened.tx, opened.base, changes, message=message, metadata=metadata
        )

    def discard(self, opened: OpenTransfer) -> None:
        """Nothing lands: the transaction branch is deleted (its uploads become lakeFS GC's garbage)."""
        self.store.delete_transaction(opened.repository, opened.tx)


class TransferCommitStore:
    """The store as the recorder sees it for one presigned attempt: every call goes to the
    :class:`LakeFSStore`, except the commit of this attempt's outputs on the run branch, which
    lands through the attempt's transaction branch, where the pod's uploads are already linked."""

    def __init__(self, transfers: PresignedTransfers, opened: OpenTransfer, linked: Mapping[str, StagedObject]) -> None:
        self._transfers = transfers
        self._opened = opened
        self._linked = dict(linked)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transfers.store, name)

    def as_port(self) -> VersionedDataStore:
        return cast(VersionedDataStore, self)

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
        opened = self._opened
        if (repository, branch) != (opened.repository, opened.branch):
            return self._transfers.store.commit(
                repository, branch, changes, message=message, metadata=metadata, allow_empty=allow_empty
            )
        local = {path: staged for path, staged in changes.items() if path not in self._linked}
        for path, staged in self._linked.items():
            if changes.get(path) != staged:
                raise ReproUserError(
                    f"the commit of {branch!r} lists output {path!r} as {changes.get(path)}, but the pod uploaded "
                    f"{staged}: nothing is committed"
                )
        return self._transfers.commit(opened, local, message=message, metadata=metadata)


__all__ = [
    "SINGLE_UPLOAD_LIMITS",
    "OpenTransfer",
    "PresignSupport",
    "PresignedTransfers",
    "TransferCommitStore",
]
