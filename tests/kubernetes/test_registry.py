"""Resolving a tag to a digest (resolve_tag=True) through an in-process double of a registry
that speaks the Docker registry HTTP API v2 with token authentication, as Docker Hub and GHCR do."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from airflow_repro.adapters.k8s_registry import MANIFEST_TYPES, RegistryError, registry_url, resolve_digest
from airflow_repro.core.images import parse_image
from airflow_repro.errors import ReproUserError

INDEX_DIGEST = "sha256:" + "1c" * 32
PLATFORM_DIGEST = "sha256:" + "2d" * 32


class RegistryDouble:
    """``HEAD /v2/<name>/manifests/<ref>`` behind a Bearer token from ``/token`` (anonymous pull)."""

    def __init__(self, tags: dict[tuple[str, str], str]) -> None:
        self.tags = tags
        self.requests: list[httpx.Request] = []

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.url.path == "/token":
            scope = request.url.params.get("scope", "")
            return httpx.Response(200, json={"token": f"tok:{scope}"})
        parts = request.url.path.split("/manifests/")
        name, ref = parts[0].removeprefix("/v2/"), parts[1]
        if request.headers.get("Authorization") != f"Bearer tok:repository:{name}:pull":
            challenge = (
                f'Bearer realm="https://{request.url.host}/token",service="{request.url.host}",'
                f'scope="repository:{name}:pull"'
            )
            return httpx.Response(401, headers={"WWW-Authenticate": challenge})
        if (name, ref) not in self.tags:
            return httpx.Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})
        accept = request.headers.get("Accept", "")
        # A registry serves the index only to clients that accept it; others get one platform's manifest.
        digest = self.tags[(name, ref)] if MANIFEST_TYPES[0] in accept else PLATFORM_DIGEST
        return httpx.Response(200, headers={"Docker-Content-Digest": digest, "Content-Type": MANIFEST_TYPES[0]})


@pytest.fixture
def registry() -> RegistryDouble:
    return RegistryDouble({("acme/train", "v1"): INDEX_DIGEST, ("library/python", "3.11"): INDEX_DIGEST})


def client(registry: RegistryDouble) -> httpx.Client:
    return httpx.Client(transport=httpx.MockTransport(registry.handler))


def test_a_tag_resolves_to_its_index_digest_and_keeps_the_tag(registry: RegistryDouble) -> None:
    resolved = resolve_digest(parse_image("ghcr.io/acme/train:v1"), client=client(registry))
    assert resolved.digest == INDEX_DIGEST and resolved.tag == "v1"
    assert str(resolved) == f"ghcr.io/acme/train:v1@{INDEX_DIGEST}"
    head = [r for r in registry.requests if r.method == "HEAD"][-1]
    assert head.url == "https://ghcr.io/v2/acme/train/manifests/v1"
    assert head.headers["Accept"].split(", ") == list(MANIFEST_TYPES)


def test_docker_hub_names_go_to_its_api_host(registry: RegistryDouble) -> None:
    resolved = resolve_digest(parse_image("python:3.11"), client=client(registry))
    assert resolved.digest == INDEX_DIGEST
    assert registry.requests[0].url.host == "registry-1.docker.io"
    assert registry_url(parse_image("localhost:5000/x:1")) == "http://localhost:5000"


def test_an_unknown_tag_is_a_user_error(registry: RegistryDouble) -> None:
    with pytest.raises(ReproUserError, match="not found in its registry"):
        resolve_digest(parse_image("ghcr.io/acme/train:nope"), client=client(registry))


def test_a_registry_without_digest_header_or_reachable_host_is_an_infra_error() -> None:
    def no_header(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200)

    with pytest.raises(RegistryError, match="Docker-Content-Digest"):
        resolve_digest(
            parse_image("ghcr.io/acme/train:v1"), client=httpx.Client(transport=httpx.MockTransport(no_header))
        )

    def down(request: httpx.Request) -> Any:
        raise httpx.ConnectError("connection refused", request=request)

    with pytest.raises(RegistryError, match="could not reach"):
        resolve_digest(parse_image("ghcr.io/acme/train:v1"), client=httpx.Client(transport=httpx.MockTransport(down)))


def test_a_pinned_image_is_not_looked_up(registry: RegistryDouble) -> None:
    pinned = parse_image(f"ghcr.io/acme/train@{INDEX_DIGEST}")
    assert resolve_digest(pinned, client=client(registry)) is pinned and registry.requests == []
