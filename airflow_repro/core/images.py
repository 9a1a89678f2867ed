"""Container image references, and the rule that a task's image is pinned by digest.

A tag (``:latest``, ``:v1``) can be moved to other content at any time, so a manifest that records
only a tag does not say what ran. A task image is therefore named by digest::

    registry.example.com/team/train@sha256:<64 hex>          # pinned
    registry.example.com/team/train:v1@sha256:<64 hex>       # pinned; the tag is informative

Pure: parsing and validation only. Resolving a tag to its digest through the registry is the
adapter ``airflow_repro.adapters.k8s_registry``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from airflow_repro.errors import ImageNotPinnedError

DEFAULT_REGISTRY = "docker.io"
DIGEST_ALGORITHM = "sha256"

# The grammar of github.com/distribution/reference (reference.go), restricted to sha256 digests.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[0-9a-fA-F:]+\])(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_REFERENCE_RE = re.compile(
    rf"^(?:(?P<domain>{_DOMAIN})/)?(?P<path>{_COMPONENT}(?:/{_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[^\s]+))?$"
)
_SHA256_RE = re.compile(r"^sha256:[0-9a-f]{64}$")

PIN_HINT = (
    "pin it by digest: run 'docker buildx imagetools inspect {image}' (or 'crane digest {image}') and use "
    "'{name}@sha256:<digest>' (a tag may stay beside it: '{name}:<tag>@sha256:<digest>'); or pass "
    "resolve_tag=True to resolve the tag through the registry when the task runs (both are recorded)"
)


@dataclass(frozen=True)
class ImageRef:
    """A parsed image reference. ``registry`` is explicit (``docker.io`` when none was written)."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """``registry/repository`` without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def is_pinned(self) -> bool:
        return self.digest is not None

    @property
    def reference(self) -> str:
        """Tag or digest, as the registry API names a manifest (the digest wins)."""
        return self.digest or self.tag or "latest"

    def with_digest(self, digest: str) -> ImageRef:
        check_digest(digest, image=str(self))
        return ImageRef(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += f":{self.tag}"
        if self.digest:
            text += f"@{self.digest}"
        return text


def parse_image(image: str) -> ImageRef:
    """Parse an image reference (pinned or not); raise :class:`ImageNotPinnedError` if malformed."""
    if not isinstance(image, str) or not image.strip():
        raise ImageNotPinnedError(f"image must be a reference like 'registry/repo@sha256:<64 hex>', got {image!r}")
    match = _REFERENCE_RE.match(image.strip())
    if match is None:
        raise ImageNotPinnedError(
            f"image {image!r} is not a valid image reference; write it as "
            "'registry.example.com/team/repo@sha256:<64 hex>' (lowercase repository path)"
        )
    domain, path = match["domain"], match["path"]
    # As docker does: the first component is a registry only if it looks like a host.
    if domain is not None and not ("." in domain or ":" in domain or domain == "localhost" or domain.startswith("[")):
        domain, path = None, f"{domain}/{path}"
    if domain is None:
        domain = DEFAULT_REGISTRY
        if "/" not in path:
            path = f"library/{path}"
    digest = match["digest"]
    if digest is not None:
        check_digest(digest, image=image)
    return ImageRef(registry=domain, repository=path, tag=match["tag"], digest=digest)


def check_digest(digest: str, *, image: str) -> str:
    if not _SHA256_RE.match(digest):
        raise ImageNotPinnedError(
            f"image {image!r} has a malformed digest {digest!r}: a digest is 'sha256:' followed by exactly "
            "64 lowercase hex characters, as 'crane digest <image>' prints it"
        )
    return digest


def require_pinned(image: str, *, task_id: str, resolve_tag: bool = False) -> ImageRef:
    """The image of task ``task_id``, refused unless it is pinned by digest (or ``resolve_tag``)."""
    try:
        ref = parse_image(image)
    except ImageNotPinnedError as exc:
        raise ImageNotPinnedError(f"task {task_id}: {exc}") from exc
    if not ref.is_pinned and not resolve_tag:
        raise ImageNotPinnedError(
            f"task {task_id}: image {image!r} is a mutable tag, so the manifest could not say what ran; "
            + PIN_HINT.format(image=str(ref), name=ref.name)
        )
    return ref


def digest_of_image_id(image_id: str | None) -> str | None:
    """The ``sha256:...`` digest in a container status ``imageID`` (``docker-pullable://repo@sha256:...``)."""
    if not image_id:
        return None
    match = re.search(r"sha256:[0-9a-f]{64}", image_id)
    return match.group(0) if match else None


__all__ = [
    "DEFAULT_REGISTRY",
    "ImageNotPinnedError",
    "ImageRef",
    "check_digest",
    "digest_of_image_id",
    "parse_image",
    "require_pinned",
]
