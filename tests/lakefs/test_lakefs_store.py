"""What only lakeFS has: error translation, UI buttons, retention branches, lost answers, secrets."""

from __future__ import annotations

import re
import socket

import pytest

from airflow_repro.adapters.lakefs_store import AIRFLOW_UI_BUTTON, LakeFSConnection, LakeFSStore
from airflow_repro.core import metadata_keys as keys
from airflow_repro.core.naming import retention_branch_name
from airflow_repro.errors import ConfigError, ObjectGone, ReproUserError, StoreConflict, StoreUnavailable
from tests.doubles.lakefs_double import ACCESS_KEY_ID, SECRET_ACCESS_KEY, LakeFSDouble
from tests.support.stores import double_store

REPO = "ml-data"


@pytest.fixture
def sleeps() -> list[float]:
    """The pauses the store took between merge retries (recorded instead of slept)."""
    return []


@pytest.fixture
def store(lakefs_double: LakeFSDouble, sleeps: list[float]) -> LakeFSStore:
    store = double_store(lakefs_double, sleep=sleeps.append)
    store.create_repository(REPO)
    return store


#: The log listing only (``/refs/<commit id>/commits``), not the commit on a transaction branch.
LOG_REQUEST = r"^GET .*/refs/[0-9a-f]{64}/commits$"


def test_wrong_credentials_say_how_to_fix_them(lakefs_double: LakeFSDouble) -> None:
    wrong = LakeFSStore.from_connection(
        LakeFSConnection(lakefs_double.url, ACCESS_KEY_ID, "not-the-secret"), storage_namespace="local://x"
    )
    with pytest.raises(ConfigError) as caught:
        wrong.list_repositories()
    message = str(caught.value)
    assert "HTTP 401" in message and "refused the credentials" in message
    assert "lakefs_conn_id" in message and "LAKEFS_SECRET_ACCESS_KEY" in message
    assert "not-the-secret" not in message
    assert not caught.value.retryable


def test_collected_data_is_a_clear_replay_error(store: LakeFSStore, lakefs_double: LakeFSDouble) -> None:
    commit = store.commit(REPO, "main", {"a.csv": store.stage_bytes(REPO, b"1,2")}, message="m")
    lakefs_double.collect_garbage(REPO, commit.id, "a.csv")
    with pytest.raises(ObjectGone) as caught, store.open_object(REPO, commit.id, "a.csv") as reader:
        reader.read()
    assert "HTTP 410" in str(caught.value) and "garbage collection" in str(caught.value)
    assert "replay" in str(caught.value) and "repro_keep_" in str(caught.value)


@pytest.mark.parametrize("status", [500, 503, 429])
def test_server_faults_are_retryable_store_unavailable(
    store: LakeFSStore, lakefs_double: LakeFSDouble, status: int
) -> None:
    lakefs_double.fail_next.append(("/branches/main", status, "try later"))
    with pytest.raises(StoreUnavailable, match=f"HTTP {status}") as caught:
        store.resolve_ref(REPO, "main")
    assert caught.value.retryable
    assert store.resolve_ref(REPO, "main")  # the next try works


def test_an_unreachable_server_is_store_unavailable() -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = LakeFSConnection(f"http://127.0.0.1:{port}", ACCESS_KEY_ID, SECRET_ACCESS_KEY).client()
    client.sdk_client.repositories_api.api_client.configuration.retries = 0
    store = LakeFSStore(client, storage_namespace="local://x")
    with pytest.raises(StoreUnavailable, match="cannot be reached") as caught:
        store.list_repositories()
    assert caught.value.retryable


def test_a_concurrent_change_to_the_same_path_is_a_retryable_conflict(
    store: LakeFSStore, lakefs_double: LakeFSDouble, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = double_store(lakefs_double)
    write = store._write_changes

    def write_then_race(repository: str, tx: str, changes: object) -> None:
        write(repository, tx, changes)  # type: ignore[arg-type]
        other.commit(REPO, "main", {"a": other.stage_bytes(REPO, b"theirs")}, message="concurrent")

    monkeypatch.setattr(store, "_write_changes", write_then_race)
    with pytest.raises(StoreConflict, match="retry") as caught:
        store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"ours")}, message="m")
    assert caught.value.retryable and "same paths" in str(caught.value)
    assert [c.message for c in store.log(REPO, "main")] == ["concurrent", "Repository created"]
    assert store.transaction_branches(REPO) == {}


def test_a_commit_whose_answer_was_lost_is_found_not_made_twice(
    store: LakeFSStore, lakefs_double: LakeFSDouble
) -> None:
    base = store.resolve_ref(REPO, "main")
    lakefs_double.lose_answer.append(("/merge/", 503, "gateway timeout"))
    commit = store.commit(
        REPO,
        "main",
        {"a": store.stage_bytes(REPO, b"1")},
        message="task a",
        metadata={keys.MANIFEST_DIGEST: "sha256:" + "1" * 64},
    )
    assert [c.id for c in store.log(REPO, "main")] == [commit.id, base]


def test_a_lost_merge_answer_and_a_failed_lookup_never_make_a_duplicate_commit(
    store: LakeFSStore, lakefs_double: LakeFSDouble
) -> None:
    base = store.resolve_ref(REPO, "main")
    lakefs_double.lose_answer.append(("/merge/", 503, "gateway timeout"))  # the merge lands, its answer is lost
    lakefs_double.fail_next.append((LOG_REQUEST, 503, "unavailable"))  # and the check whether it landed fails
    with pytest.raises(StoreUnavailable, match="duplicate") as caught:
        store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="task a")
    assert caught.value.retryable
    (landed, previous) = store.log(REPO, "main")  # exactly one new commit: the first merge
    assert previous.id == base and landed.message == "task a"
    assert sum("/merge/" in p for _, p in lakefs_double.requests) == 1  # never merged again
    assert set(lakefs_double.repos[REPO].branches) == {"main"}


def test_an_empty_commit_whose_answer_was_lost_is_not_made_twice(
    store: LakeFSStore, lakefs_double: LakeFSDouble
) -> None:
    base = store.resolve_ref(REPO, "main")
    lakefs_double.lose_answer.append(("/merge/", 503, "gateway timeout"))
    commit = store.commit(REPO, "main", {}, message="empty", allow_empty=True)
    assert [c.id for c in store.log(REPO, "main")] == [commit.id, base]


@pytest.mark.parametrize("status", [423, 429, 503])
def test_a_busy_branch_is_retried_with_a_capped_backoff(
    store: LakeFSStore, lakefs_double: LakeFSDouble, sleeps: list[float], status: int
) -> None:
    base = store.resolve_ref(REPO, "main")
    for _ in range(3):
        lakefs_double.fail_next.append(("/merge/", status, "branch is locked"))
    commit = store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m")
    assert [c.id for c in store.log(REPO, "main")] == [commit.id, base]
    assert sleeps == [0.2, 0.4, 0.8]


def test_merge_retries_give_up_after_the_last_attempt(
    store: LakeFSStore, lakefs_double: LakeFSDouble, sleeps: list[float]
) -> None:
    base = store.resolve_ref(REPO, "main")
    for _ in range(10):
        lakefs_double.fail_next.append(("/merge/", 423, "branch is locked"))
    with pytest.raises(StoreUnavailable, match="HTTP 423"):
        store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m")
    assert [c.id for c in store.log(REPO, "main")] == [base]
    assert len(sleeps) == 4 and max(sleeps) <= 2.0


def test_commit_ids_are_full_and_transaction_branches_do_not_remain(
    store: LakeFSStore, lakefs_double: LakeFSDouble
) -> None:
    commit = store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m")
    assert re.fullmatch(r"[0-9a-f]{64}", commit.id)
    assert set(lakefs_double.repos[REPO].branches) == {"main"}


def test_commits_carry_ui_buttons_to_airflow_and_mlflow(lakefs_double: LakeFSDouble) -> None:
    store = double_store(lakefs_double, airflow_ui_url="http://airflow.example:8080/")
    store.create_repository(REPO)
    metadata = {
        keys.LAKEFS_AIRFLOW_DAG_ID: "train",
        keys.LAKEFS_AIRFLOW_RUN_ID: "manual__2026-01-01T00:00:00+00:00",
        keys.AIRFLOW_TASK_ID: "fit",
        keys.LAKEFS_MLFLOW_URL: "http://mlflow:5000/#/experiments/1/runs/abc",
    }
    commit = store.commit(REPO, "main", {"m": store.stage_bytes(REPO, b"x")}, message="m", metadata=metadata)
    assert commit.metadata[AIRFLOW_UI_BUTTON] == (
        "http://airflow.example:8080/dags/train/runs/manual__2026-01-01T00%3A00%3A00%2B00%3A00/tasks/fit"
    )
    assert commit.metadata["::lakefs::MLflow::url[url:ui]"].startswith("http://mlflow:5000/")
    ui_button = re.compile(r"::lakefs::(.*)::url\[ur[il]:ui\]$")  # the lakeFS UI's own pattern
    assert sorted(m.group(1) for k in commit.metadata if (m := ui_button.match(k))) == ["Airflow", "MLflow"]


def test_every_tag_gets_a_retention_branch_that_gc_keeps(store: LakeFSStore, lakefs_double: LakeFSDouble) -> None:
    commit = store.commit(REPO, "main", {"a": store.stage_bytes(REPO, b"1")}, message="m")
    tag = "repro-train_manual__2026-01-01T00-00-00-00-00_0123456789"
    store.create_tag(REPO, tag, commit.id)
    keep = retention_branch_name(tag)
    assert store.retention_branches(REPO) == {keep: commit.id}
    assert lakefs_double.repos[REPO].branches[keep].head == commit.id  # a real branch head: GC keeps its data
    assert keep not in store.list_branches(REPO)  # an implementation detail of tags, like on the local store
    store.create_tag(REPO, tag, commit.id, exist_ok=True)  # idempotent, and heals a missing branch
    assert store.retention_branches(REPO) == {keep: commit.id}


def test_credentials_never_show_in_repr_or_commits(store: LakeFSStore) -> None:
    connection = LakeFSConnection("http://lakefs:8000", ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    assert SECRET_ACCESS_KEY not in repr(connection) and SECRET_ACCESS_KEY not in repr(store)
    commit = store.commit(REPO, "main", {}, message="m", allow_empty=True)
    assert all(SECRET_ACCESS_KEY not in value for value in commit.metadata.values())


def test_objects_written_by_other_tools_are_hashed_on_read(store: LakeFSStore, lakefs_double: LakeFSDouble) -> None:
    import blake3
    import lakefs

    branch = lakefs.Branch(REPO, "main", client=store.client)
    branch.object("external.csv").upload(b"written by lakectl", pre_sign=False)
    branch.commit(message="external write")
    info = store.stat_object(REPO, "main", "external.csv")
    assert info.content_hash == "blake3:" + blake3.blake3(b"written by lakectl").hexdigest()


def test_collected_data_of_other_tools_objects_is_object_gone(store: LakeFSStore, lakefs_double: LakeFSDouble) -> None:
    import lakefs

    branch = lakefs.Branch(REPO, "main", client=store.client)
    branch.object("external.csv").upload(b"written by lakectl", pre_sign=False)
    commit_id = branch.commit(message="external write").get_commit().id
    lakefs_double.collect_garbage(REPO, commit_id, "external.csv")
    with pytest.raises(ObjectGone, match="HTTP 410"):
        store.stat_object(REPO, "main", "external.csv")  # hashing it needs its content, which is gone
    with pytest.raises(ObjectGone):
        store.list_objects(REPO, "main")


@pytest.mark.parametrize(
    "endpoint", ["http://ak:s3cr3t-value@lakefs:8000", "http://s3cr3t-value@lakefs", "ak:s3cr3t-value@lakefs:8000"]
)
def test_an_endpoint_with_credentials_is_refused_without_repeating_them(endpoint: str) -> None:
    with pytest.raises(ConfigError) as caught:
        LakeFSConnection(endpoint, ACCESS_KEY_ID, SECRET_ACCESS_KEY)
    assert "s3cr3t-value" not in str(caught.value) and "login and password" in str(caught.value)


def test_a_caller_supplied_spool_dir_survives_close(lakefs_double: LakeFSDouble, tmp_path) -> None:  # type: ignore[no-untyped-def]
    spool = tmp_path / "spool"
    store = double_store(lakefs_double, spool_dir=spool)
    store.stage_bytes(REPO, b"x")
    store.close()
    assert spool.is_dir()
    own = double_store(lakefs_double)
    own_spool = own._spool
    own.close()
    assert not own_spool.exists()


def test_a_name_lakefs_calls_invalid_is_no_such_ref(store: LakeFSStore, lakefs_double: LakeFSDouble) -> None:
    lakefs_double.fail_next.append(("/branches/feature", 400, "bad request"))  # no 'invalid' in the message
    with pytest.raises(ReproUserError, match="not found"):
        store.resolve_ref(REPO, "feature")


def test_empty_or_invalid_settings_are_refused_before_any_request() -> None:
    with pytest.raises(ConfigError, match="secret is empty"):
        LakeFSConnection("http://lakefs:8000", ACCESS_KEY_ID, "").client()
    with pytest.raises(ReproUserError):
        LakeFSConnection("", ACCESS_KEY_ID, SECRET_ACCESS_KEY).client()


def test_the_double_enforces_lakefs_openapi_spec(lakefs_double: LakeFSDouble) -> None:
    """The double is only as good as its validation: a request the spec forbids is caught."""
    import httpx

    if lakefs_double._openapi is None:
        pytest.skip("../shared/specs/lakefs/swagger.yml is absent: the double runs unvalidated")
    answer = httpx.post(
        f"{lakefs_double.url}/api/v1/repositories",
        json={"name": "no-namespace"},
        auth=(ACCESS_KEY_ID, SECRET_ACCESS_KEY),
    )
    assert answer.status_code != 201 or lakefs_double.violations
    assert any("storage_namespace" in v for v in lakefs_double.violations), lakefs_double.violations
    lakefs_double.violations.clear()  # expected here; every other test must leave none


@pytest.mark.parametrize("tag", ["v1.0", "repro-train_manual__2026-01-01T00-00-00-00-00_971018a1a2", "a~b", "x" * 250])
def test_retention_branch_names_are_valid_and_distinct(tag: str) -> None:
    from airflow_repro.core.naming import validate_branch_name

    name = validate_branch_name(retention_branch_name(tag))
    assert name.startswith("repro_keep_") and name != retention_branch_name(tag + "x")


def test_the_archive_stores_each_object_once_on_lakefs(store: LakeFSStore) -> None:
    """1,000 tasks with the same code and environment: the first archives, the others only stat."""
    from airflow_repro.core.archive import ARCHIVE_BRANCH, ArchiveObject, ensure_archived, load_archived

    store.create_repository("arch", exist_ok=True)
    objects = [ArchiveObject("code", b'{"files":{}}'), ArchiveObject("environment", b'{"distributions":[]}')]
    assert len(ensure_archived(store, "arch", objects, default_branch="main")) == 2
    head = store.list_branches("arch")[ARCHIVE_BRANCH]
    for _ in range(5):
        assert ensure_archived(store, "arch", objects, default_branch="main") == []
    assert store.list_branches("arch")[ARCHIVE_BRANCH] == head
    assert [load_archived(store, "arch", o.kind, o.digest) for o in objects] == [o.data for o in objects]
