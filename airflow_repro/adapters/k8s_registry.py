"""Resolve an image tag to its digest through the registry HTTP API v2 (the opt-in ``resolve_tag``).

``HEAD /v2/<repository>/manifests/<tag>`` answers with the manifest's digest in the
``Docker-Content-Digest`` header. The ``Accept`` header lists the multi-platform index types first,
so the digest is the one ``docker buildx imagetools inspect`` and ``crane digest`` print, which
every node resolves to its own platform. Registries that want a token (Docker Hub, GHCR, most
others) answer 401 with ``WWW-Authenticate: Bearer realm=...,service=...,scope=...``; an
anonymous (or basic-auth) token is fetched from that realm and the request repeated.
"""

from __future__ import annotations

import re

import httpx

from airflow_repro.core.images import ImageRef, check_digest
from airflow_repro.errors import RegistryError, ReproUserError

MANIFEST_TYPES = (
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
)
_DOCKER_HUB_API = "registry-1.docker.io"
_CHALLENGE_RE = re.compile(r'(\w+)="([^"]*)"')


def registry_url(ref: ImageRef) -> str:
    """Base URL of the registry's API: https, except for a registry on this machine."""
    host = _DOCKER_HUB_API if ref.registry == "docker.io" else ref.registry
    local = host.split(":")[0] in ("localhost", "127.0.0.1", "[::1]")
    return f"{'http' if local else 'https'}://{host}"


def resolve_digest(
    ref: ImageRef,
    *,
    client: httpx.Client | None = None,
    auth: tuple[str, str] | None = None,
    timeout: float = 15.0,
) -> ImageRef:
    """``ref`` with the digest its tag names now; the tag is kept beside it (recorded as resolved from)."""
    if ref.is_pinned:
        return ref
    owned = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=True)
    try:
        url = f"{registry_url(ref)}/v2/{ref.repository}/manifests/{ref.tag or 'latest'}"
        headers = {"Accept": ", ".join(MANIFEST_TYPES)}
        response = http.head(url, headers=headers)
        if response.status_code == 401:
            token = _bearer_token(http, response, auth)
            response = http.head(url, headers={**headers, "Authorization": f"Bearer {token}"})
        if response.status_code == 404:
            raise ReproUserError(
                f"image {ref} not found in its registry: check the repository and tag (HEAD {url} answered 404)"
            )
        if response.status_code != 200:
            raise RegistryError(f"registry answered {response.status_code} to HEAD {url}: {response.text[:200]}")
        digest = response.headers.get("Docker-Content-Digest")
        if not digest:
            raise RegistryError(f"registry sent no Docker-Content-Digest header for {ref}; pin the digest by hand")
        check_digest(digest, image=str(ref))
        return ref.with_digest(digest)
    except httpx.HTTPError as exc:
        raise RegistryError(f"could not reach the registry of {ref}: {exc}") from exc
    finally:
        if owned:
            http.close()


def _bearer_token(http: httpx.Client, challenge: httpx.Response, auth: tuple[str, str] | None) -> str:
    header = challenge.headers.get("WWW-Authenticate", "")
    if not header.lower().startswith("bearer "):
        raise RegistryError(
            f"registry wants {header.split(' ')[0] or 'an unknown'} authentication; only Bearer is supported"
        )
    params = dict(_CHALLENGE_RE.findall(header))
    realm = params.pop("realm", None)
    if not realm:
        raise RegistryError(f"registry's Bearer challenge has no realm: {header}")
    response = http.get(realm, params=params, auth=auth)
    if response.status_code != 200:
        raise RegistryError(f"registry token endpoint {realm} answered {response.status_code}")
    body = response.json()
    token = body.get("token") or body.get("access_token")
    if not token:
        raise RegistryError(f"registry token endpoint {realm} sent no token")
    return str(token)


__all__ = ["MANIFEST_TYPES", "RegistryError", "registry_url", "resolve_digest"]
