"""The adapter on lakeFS as the server really behaves (treeverse/lakeFS v1.84 source, reproduced by
the double): server-added merge metadata, re-merges of squash-merged branches, stat vs. GC, name
clashes, used storage namespaces, hooks, 403/410 causes, path limits and hidden leftovers."""

from __future__ import annotations

import threading

import lakefs
import lakefs_sdk
import pytest

from airflow_repro.adapters.lakefs_store import (
    CREATE_RACE_ATTEMPTS,
    STALE_TRANSACTION_AGE_S,
    TRANSACTION_META,
    LakeFSStore,
    translate_errors,
)
from airflow_repro.core import metadata_keys as keys
from airflow_repro.errors import (
    AlreadyExistsError,
    ConfigError,
    HookRejected,
    InvalidNameError,
    ObjectGone,
    RepositoryNotFound,
    ReproUserError,
)
from tests.doubles.lakefs_double import MERGE_STRATEGY_KEY, LakeFSDouble
from tests.support.stores import double_store

REPO = "ml-data"
NOW = 1_800_000_000.0  # the stores' clock in these tests (2027-01-15)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def store(lakefs_double: LakeFSDouble, sleeps: list[float]) -> LakeFSStore:
    store = double_store(lakefs_double, sleep=sleeps.append, clock=lambda: NOW)
    store.create_repository(REPO)
    return store


def sdk(store: LakeFSStore) -> lakefs_sdk.LakeFSClient:
    return store.client.sdk_client


def merges(double: LakeFSDouble) -> int:
    return sum("/merge/" in path for _, path in double.requests)


# ---- merges -------------------------------------------------------------------------------------


def test_the_server_adds_the_merge_strategy_and_the_port_shows_the_callers_metadata(
    store: LakeFSStore, lakefs_double: LakeFSDouble
) -> None:
    commit = store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m", metadata={"k": "v"})
    stored = lakefs_double.repos[REPO].commits[commit.id].metadata
    assert stored[MERGE_STRATEGY_KEY] == "default" and stored[TRANSACTION_META].startswith("repro_tx_")
    assert dict(commit.metadata) == {"k": "v"} == dict(store.get_commit(REPO, commit.id).metadata)


def test_a_squash_merged_branch_merges_again_as_an_empty_commit(store: LakeFSStore) -> None:
    """Why a lost merge answer cannot be retried blindly: the server lands the same change twice."""
    api = sdk(store)
    api.branches_api.create_branch(REPO, lakefs_sdk.BranchCreation(name="work", source="main"))
    lakefs.Branch(REPO, "work", client=store.client).object("a").upload(b"1", pre_sign=False)
    api.commits_api.commit(REPO, "work", lakefs_sdk.CommitCreation(message="w"))
    squash = lakefs_sdk.Merge(squash_merge=True)
    first = api.refs_api.merge_into_branch(REPO, "work", "main", squash).reference
    second = api.refs_api.merge_into_branch(REPO, "work", "main", squash).reference
    assert first != second and store.get_commit(REPO, second).parents == (first,)
    assert store.diff(REPO, first, second) == []
    api.branches_api.create_branch(REPO, lakefs_sdk.BranchCreation(name="idle", source="main"))
    with pytest.raises(lakefs_sdk.exceptions.BadRequestException, match="no changes"):
        api.refs_api.merge_into_branch(REPO, "idle", "main", lakefs_sdk.Merge())  # unchanged since the base


def test_a_lost_merge_answer_is_found_by_its_transaction_among_identical_commits(
    store: LakeFSStore, lakefs_double: LakeFSDouble
) -> None:
    metadata = {keys.MANIFEST_DIGEST: "sha256:" + "1" * 64}
    earlier = store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="task a", metadata=metadata)
    lakefs_double.lose_answer.append(("/merge/", 503, "gateway timeout"))
    commit = store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"2")}, message="task a", metadata=metadata)
    log = store.log(REPO, "main")
    assert [c.id for c in log][:2] == [commit.id, earlier.id] and commit.id != earlier.id
    assert merges(lakefs_double) == 2  # one per commit: the lost one was found, not merged again
    assert store.transaction_branches(REPO) == {}


def test_a_lost_answer_of_an_unchanged_commit_is_not_made_twice(
    store: LakeFSStore, lakefs_double: LakeFSDouble
) -> None:
    base = store.resolve_ref(REPO, "main")
    lakefs_double.lose_answer.append(("/merge/", 503, "gateway timeout"))
    commit = store.commit(REPO, "main", {}, message="marker", allow_empty=True)
    assert [c.id for c in store.log(REPO, "main")] == [commit.id, base]


def test_reserved_metadata_keys_are_refused_before_any_write(store: LakeFSStore, lakefs_double: LakeFSDouble) -> None:
    for key in (TRANSACTION_META, MERGE_STRATEGY_KEY):
        with pytest.raises(ReproUserError, match="reserved"):
            store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m", metadata={key: "x"})
    assert not any(method == "POST" and "/branches" in path for method, path in lakefs_double.requests)


# ---- garbage-collected data ---------------------------------------------------------------------


def test_a_collected_input_still_stats_but_check_available_reads_and_catches_it(
    store: LakeFSStore, lakefs_double: LakeFSDouble
) -> None:
    staged = store.stage_bytes(REPO, b"1,2,3")
    commit = store.commit(REPO, "main", {"in.csv": staged}, message="m")
    lakefs_double.collect_garbage(REPO, commit.id, "in.csv")
    assert store.stat_object(REPO, commit.id, "in.csv").content_hash == staged.content_hash  # metadata survives
    lakefs_double.requests.clear()
    with pytest.raises(ObjectGone, match="in.csv.*garbage collection"):
        store.check_available(REPO, commit.id, "in.csv", staged.content_hash)
    assert any(p.endswith("/objects") for _, p in lakefs_double.requests)  # a GET of the data, not a stat


# ---- names and repositories ---------------------------------------------------------------------


def test_a_deleted_repositorys_storage_namespace_is_a_config_error(store: LakeFSStore, sleeps: list[float]) -> None:
    sdk(store).repositories_api.delete_repository(REPO)
    with pytest.raises(ConfigError) as caught:
        store.create_repository(REPO)
    message = str(caught.value)
    assert "storage namespace already in use" in message and "lakefs_storage_namespace" in message
    assert not caught.value.retryable and len(sleeps) == CREATE_RACE_ATTEMPTS - 1


@pytest.mark.parametrize("appears_after", [1, 3])
def test_a_repository_being_created_concurrently_is_waited_for(
    lakefs_double: LakeFSDouble, sleeps: list[float], appears_after: int
) -> None:
    store = double_store(lakefs_double, sleep=sleeps.append)
    lakefs_double.race_repository_creation("fresh", "local://repro/fresh", appears_after=appears_after)
    assert store.create_repository("fresh", exist_ok=True).name == "fresh"
    assert len(sleeps) == appears_after - 1


def test_a_concurrent_creation_without_exist_ok_says_it_exists(lakefs_double: LakeFSDouble) -> None:
    store = double_store(lakefs_double, sleep=lambda _: None)
    lakefs_double.race_repository_creation("fresh", "local://repro/fresh")
    with pytest.raises(AlreadyExistsError, match="already exists"):
        store.create_repository("fresh")


def test_two_tasks_creating_the_same_repository_both_succeed(lakefs_double: LakeFSDouble) -> None:
    stores = [double_store(lakefs_double, sleep=lambda _: None) for _ in range(4)]
    results: list[object] = []
    start = threading.Barrier(len(stores))

    def create(store: LakeFSStore) -> None:
        start.wait()
        try:
            results.append(store.create_repository("shared", exist_ok=True).name)
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            results.append(exc)

    threads = [threading.Thread(target=create, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == ["shared"] * len(stores)


# ---- hooks, 403 and 410 -------------------------------------------------------------------------


@pytest.mark.parametrize("event", ["pre-commit", "pre-merge"])
def test_a_failed_hook_names_itself_is_not_retried_and_commits_nothing(
    store: LakeFSStore, lakefs_double: LakeFSDouble, sleeps: list[float], event: str
) -> None:
    base = store.resolve_ref(REPO, "main")
    lakefs_double.failing_hooks[event] = "column 'ssn' holds PII"
    with pytest.raises(HookRejected) as caught:
        store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m")
    message = str(caught.value)
    assert f"{event} hook" in message and "column 'ssn' holds PII" in message and "lakectl actions runs" in message
    assert not caught.value.retryable and sleeps == [] and merges(lakefs_double) <= 1
    assert [c.id for c in store.log(REPO, "main")] == [base]
    assert store.transaction_branches(REPO) == {}


def test_a_protected_branch_says_which_rule_not_credentials(store: LakeFSStore, lakefs_double: LakeFSDouble) -> None:
    lakefs_double.repos[REPO].protected.append("repro_tx_*")
    with pytest.raises(ConfigError) as caught:
        store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m")
    message = str(caught.value)
    assert "branch protection rule" in message and "repro_tx_*" in message and "credentials" not in message
    assert store.list_objects(REPO, "main") == [] and store.transaction_branches(REPO) == {}


def test_a_read_only_repository_says_so(store: LakeFSStore, lakefs_double: LakeFSDouble) -> None:
    lakefs_double.repos[REPO].read_only = True
    with pytest.raises(ConfigError, match="read-only") as caught:
        store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m")
    assert "credentials" not in str(caught.value)


def test_deleting_the_default_branch_is_refused_with_the_reason(store: LakeFSStore) -> None:
    with pytest.raises(ReproUserError, match="default branch") as caught, translate_errors("deleting main"):
        sdk(store).branches_api.delete_branch(REPO, "main")
    assert "HTTP 403" in str(caught.value) and not isinstance(caught.value, ConfigError)
    assert "main" in store.list_branches(REPO)


def test_missing_permissions_are_not_called_bad_credentials(store: LakeFSStore, lakefs_double: LakeFSDouble) -> None:
    lakefs_double.fail_next.append(("/branches", 401, "insufficient permissions: fs:CreateBranch denied"))
    with pytest.raises(ConfigError, match="lacks a permission") as caught:
        store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m")
    assert "refused the credentials" not in str(caught.value)


def test_a_repository_being_deleted_is_not_collected_data(store: LakeFSStore, lakefs_double: LakeFSDouble) -> None:
    lakefs_double.start_deleting(REPO)
    with pytest.raises(RepositoryNotFound, match="being deleted") as caught:
        store.resolve_ref(REPO, "main")
    assert not isinstance(caught.value, ObjectGone) and "HTTP 410" in str(caught.value)


# ---- paths --------------------------------------------------------------------------------------


def test_a_path_over_1024_bytes_is_refused_before_anything_is_written(
    store: LakeFSStore, lakefs_double: LakeFSDouble
) -> None:
    long_path = "d/" + "é" * 512  # 1026 bytes, 514 characters
    lakefs_double.requests.clear()
    with pytest.raises(InvalidNameError, match="1026 bytes.*at most 1024"):
        store.commit(REPO, "main", {long_path: store.stage_bytes(REPO, b"1")}, message="m")
    assert lakefs_double.requests == []
    with pytest.raises(InvalidNameError, match="at most 1024"), translate_errors("stat"):
        sdk(store).objects_api.stat_object(REPO, "main", long_path)  # the server's own 400


# ---- hidden transaction branches ----------------------------------------------------------------


def make_transaction(store: LakeFSStore, name: str) -> None:
    body = lakefs_sdk.BranchCreation(name=name, source="main", hidden=True)
    sdk(store).branches_api.create_branch(REPO, body)


def test_hidden_transaction_branches_are_listed_only_when_asked(store: LakeFSStore) -> None:
    name = f"repro_tx_{int(NOW):010d}_{'a' * 32}"
    make_transaction(store, name)
    listed = [r.id for r in sdk(store).branches_api.list_branches(REPO).results]
    assert listed == ["main"]  # what lakectl branch list and the UI show
    assert list(store.transaction_branches(REPO)) == [name]


def test_leftovers_of_killed_writers_are_swept_but_live_attempts_are_not(
    lakefs_double: LakeFSDouble,
) -> None:
    clock = [NOW]
    store = double_store(lakefs_double, clock=lambda: clock[0])
    store.create_repository(REPO)
    stale = f"repro_tx_{int(NOW - STALE_TRANSACTION_AGE_S - 60):010d}_{'a' * 32}"
    live = f"repro_tx_{int(NOW - 600):010d}_{'b' * 32}"  # an attempt still uploading its outputs
    foreign = "repro_tx_" + "c" * 32  # no creation time in the name: never guessed at
    for name in (stale, live, foreign):
        make_transaction(store, name)
    store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m")
    assert sorted(store.transaction_branches(REPO)) == sorted([live, foreign])
    make_transaction(store, stale)
    store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"2")}, message="m2")
    assert stale in store.transaction_branches(REPO)  # swept at most once an interval
    clock[0] = NOW + STALE_TRANSACTION_AGE_S
    assert store.remove_stale_transactions(REPO) == sorted([stale, live])
    assert list(store.transaction_branches(REPO)) == [foreign]


def test_a_failing_sweep_never_fails_the_commit(store: LakeFSStore, lakefs_double: LakeFSDouble) -> None:
    lakefs_double.fail_next.append((r"^GET .*/branches$", 503, "unavailable"))
    commit = store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m")
    assert lakefs_double.fail_next == []  # the sweep ran, and failed
    assert store.resolve_ref(REPO, "main") == commit.id


def test_transaction_branch_names_carry_their_creation_time(store: LakeFSStore, lakefs_double: LakeFSDouble) -> None:
    store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m")
    created = [p for m, p in lakefs_double.requests if m == "DELETE" and "/branches/repro_tx_" in p]
    assert len(created) == 1 and f"repro_tx_{int(NOW):010d}_" in created[0]
