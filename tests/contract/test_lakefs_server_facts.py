"""What the lakeFS server does where the adapter depends on it, asserted through the raw SDK on the
double and, when ``LAKEFS_ENDPOINT`` & co. are set, on a real server: the double is only evidence
while it answers as the server does (facts from treeverse/lakeFS v1.84, shared/notes/lakefs-server-behaviour.md)."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import lakefs
import lakefs_sdk
import pytest
from lakefs_sdk.exceptions import ApiException

from airflow_repro.adapters.lakefs_store import LakeFSConnection
from tests.support.stores import LIVE_ENV, double_store


@dataclass
class Server:
    client: lakefs.Client
    repo: str
    namespace: str

    @property
    def api(self) -> lakefs_sdk.LakeFSClient:
        return self.client.sdk_client


@pytest.fixture(params=["lakefs-double", pytest.param("lakefs-live", marks=pytest.mark.live)])
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    repo = f"sf-{uuid.uuid4().hex[:10]}"
    if request.param == "lakefs-double":
        client = double_store(request.getfixturevalue("lakefs_double")).client
        namespace = f"local://facts/{repo}"
    else:
        missing = [name for name in LIVE_ENV if not os.environ.get(name)]
        if missing:
            pytest.skip(f"live lakeFS facts need {', '.join(missing)} (set them to run against a real server)")
        client = LakeFSConnection(*(os.environ[name] for name in LIVE_ENV)).client()
        base = os.environ.get("LAKEFS_STORAGE_NAMESPACE", "local://repro-contract")
        namespace = f"{base}/{uuid.uuid4().hex[:8]}/{repo}"
    client.sdk_client.repositories_api.create_repository(
        lakefs_sdk.RepositoryCreation(name=repo, storage_namespace=namespace, default_branch="main")
    )
    yield Server(client, repo, namespace)
    with contextlib.suppress(Exception):  # best effort: some tests delete it themselves
        client.sdk_client.repositories_api.delete_repository(repo)


def status_of(call: object) -> tuple[int, str]:
    """The status and body of the ``ApiException`` that ``call()`` raises."""
    with pytest.raises(ApiException) as caught:
        call()  # type: ignore[operator]
    return caught.value.status, caught.value.body or ""


def write_and_commit(server: Server, branch: str, path: str, data: bytes) -> str:
    lakefs.Branch(server.repo, branch, client=server.client).object(path).upload(data, pre_sign=False)
    return server.api.commits_api.commit(server.repo, branch, lakefs_sdk.CommitCreation(message=path)).id


def new_branch(server: Server, name: str, *, hidden: bool = False) -> None:
    body = lakefs_sdk.BranchCreation(name=name, source="main", hidden=hidden or None)
    server.api.branches_api.create_branch(server.repo, body)


def test_every_merge_commit_gets_the_strategy_key_squash_too(server: Server) -> None:
    new_branch(server, "work")
    write_and_commit(server, "work", "a", b"1")
    merge = lakefs_sdk.Merge(squash_merge=True, metadata={"k": "v"})
    landed = server.api.refs_api.merge_into_branch(server.repo, "work", "main", merge).reference
    metadata = server.api.commits_api.get_commit(server.repo, landed).metadata
    assert metadata == {"k": "v", ".lakefs.merge.strategy": "default"}


def test_a_squash_merged_branch_lands_again_and_an_unchanged_one_has_no_changes(server: Server) -> None:
    new_branch(server, "work")
    write_and_commit(server, "work", "a", b"1")
    squash = lakefs_sdk.Merge(squash_merge=True)
    first = server.api.refs_api.merge_into_branch(server.repo, "work", "main", squash).reference
    second = server.api.refs_api.merge_into_branch(server.repo, "work", "main", squash).reference
    assert server.api.commits_api.get_commit(server.repo, second).parents == [first]
    new_branch(server, "idle")
    status, body = status_of(
        lambda: server.api.refs_api.merge_into_branch(server.repo, "idle", "main", lakefs_sdk.Merge())
    )
    assert status == 400 and "no changes" in body


def test_a_merge_conflict_answers_409_without_a_message(server: Server) -> None:
    new_branch(server, "left")
    write_and_commit(server, "left", "a", b"left")
    write_and_commit(server, "main", "a", b"main")
    status, body = status_of(
        lambda: server.api.refs_api.merge_into_branch(server.repo, "left", "main", lakefs_sdk.Merge())
    )
    assert status == 409 and "message" not in body


def test_a_branch_and_a_tag_cannot_share_a_name_either_way(server: Server) -> None:
    server.api.tags_api.create_tag(server.repo, lakefs_sdk.TagCreation(id="release", ref="main"))
    status, body = status_of(lambda: new_branch(server, "release"))
    assert status == 409 and "conflict found" in body
    new_branch(server, "feature")
    status, body = status_of(
        lambda: server.api.tags_api.create_tag(server.repo, lakefs_sdk.TagCreation(id="feature", ref="main"))
    )
    assert status == 409 and "conflict found" in body


def test_a_used_storage_namespace_is_refused_with_400(server: Server) -> None:
    server.api.repositories_api.delete_repository(server.repo)
    again = lakefs_sdk.RepositoryCreation(name=server.repo, storage_namespace=server.namespace)
    status, body = status_of(lambda: server.api.repositories_api.create_repository(again))
    assert status == 400 and "storage namespace already in use" in body


def test_the_default_branch_cannot_be_deleted_403(server: Server) -> None:
    status, _ = status_of(lambda: server.api.branches_api.delete_branch(server.repo, "main"))
    assert status == 403


def test_object_paths_over_1024_bytes_are_400(server: Server) -> None:
    status, body = status_of(lambda: server.api.objects_api.stat_object(server.repo, "main", "p" * 1025))
    assert status == 400 and "1024" in body


def test_hidden_branches_are_listed_only_when_asked(server: Server) -> None:
    new_branch(server, "tx_hidden", hidden=True)
    listed = [r.id for r in server.api.branches_api.list_branches(server.repo).results]
    shown = [r.id for r in server.api.branches_api.list_branches(server.repo, show_hidden=True).results]
    assert "tx_hidden" not in listed and "tx_hidden" in shown
