"""The CLI under bad input and broken surroundings: a clear message and exit 2 (user) or 3
(infrastructure), never a traceback, never exit 1 (which means "differs") for an error."""

from __future__ import annotations

import errno
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_repro.adapters.local_store import LocalStore
from airflow_repro.cli import main
from airflow_repro.core.replay import plan_replay, save_plan
from airflow_repro.core.runs import load_run
from airflow_repro.core.verify import save_report, verify_replay
from airflow_repro.errors import NotFoundError
from tests.support.recording import DAG, REPO, RUN, record

REPLAY = f"replay__1__of__{RUN}"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env)


def assert_clean_failure(result: Result, code: int, *words: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    for word in words:
        assert word in result.output


# ---- examples ------------------------------------------------------------------------------------


def test_home_on_a_file_or_in_proc_is_a_user_error(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    for home in (str(a_file), "/proc"):
        for command in (["show", DAG, RUN], ["fsck"], ["gc"], ["diff", DAG, RUN, RUN]):
            assert_clean_failure(run(*command, "--home", home), 2, home)


def test_schema_out_where_nothing_can_be_written(tmp_path):
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    assert_clean_failure(run("schema", "--out", str(a_file / "sub")), 2, "cannot write the schemas")
    assert_clean_failure(run("schema", "--out", "/proc/schemas"), 2, "cannot write the schemas")


def test_lineage_sources_that_are_not_events(tmp_path, monkeypatch):
    binary = tmp_path / "events.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    assert_clean_failure(run("lineage", "datasets", str(binary)), 2, "not a text file")
    for url in ("http://", "http://[::1", "http://\x00x", "http:///path"):
        assert_clean_failure(run("lineage", "datasets", url), 2, "URL")
    assert_clean_failure(run("lineage", "datasets", "~no-such-user-here/x"), 2, "home directory")
    assert_clean_failure(run("lineage", "datasets", "http://127.0.0.1:9", "--header", "X: \u00e9"), 2, "--header")
    readable = tmp_path / "ok.jsonl"
    readable.write_text("{}\n")
    monkeypatch.setattr(
        Path,
        "read_text",
        lambda *a, **k: (_ for _ in ()).throw(PermissionError(errno.EACCES, "Permission denied", str(readable))),
    )
    assert_clean_failure(run("lineage", "datasets", str(readable)), 2, "Permission denied")


@pytest.mark.parametrize("timeout", ["nan", "inf", "-inf", "1e309", "-1", "0", "1e300", "soon"])
def test_timeouts_that_would_hang_or_overflow_are_refused(timeout):
    assert_clean_failure(run("replay", DAG, RUN, "--wait", "--timeout", timeout), 2, "--timeout")
    assert_clean_failure(run("lineage", "datasets", "http://127.0.0.1:9", "--timeout", timeout), 2, "--timeout")


def test_a_store_fault_exits_3_naming_the_fix(tmp_path, monkeypatch):
    store = LocalStore(tmp_path / "store")
    store.create_repository(REPO)
    store.stage_bytes(REPO, b"garbage")

    def read_only(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "unlink", read_only)
    result = run("gc", "--delete", "--grace", "0s", "--home", str(tmp_path))
    assert_clean_failure(result, 3, "read-only file system", "writable")


def test_an_unexpected_error_is_one_line_and_exit_3(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("airflow_repro.core.manifest.json_schemas", broken)
    assert_clean_failure(run("schema"), 3, "ZeroDivisionError", "a bug", "AIRFLOW_REPRO_DEBUG")


# ---- every command, generated arguments ----------------------------------------------------------


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A store with a run and its verified replay, files of every kind, and the CLI's backends
    pointed at that store (``replay``/``verify`` need Airflow otherwise)."""
    from airflow_repro.airflow import replay as service
    from airflow_repro.config import ReproSettings

    root = tmp_path_factory.mktemp("cli-fuzz")
    home = root / "home"
    store = LocalStore(home / "store")
    record(store, home, RUN, {"model.bin": b"weights"})
    original = load_run(store, DAG, RUN)
    save_plan(store, plan_replay(original, {}, store, mode="latest-code", replay_run_id=REPLAY), default_branch="main")
    record(store, home, REPLAY, {"model.bin": b"other weights"})
    save_report(store, REPO, verify_replay(original, load_run(store, DAG, REPLAY)))
    (root / "binary.jsonl").write_bytes(bytes(range(256)))
    (root / "events.jsonl").write_text(
        json.dumps({"eventType": "COMPLETE", "run": {"runId": "r"}, "job": {"namespace": "n", "name": "j"}}) + "\n"
    )
    (root / "a-file").write_text("x")

    patch = pytest.MonkeyPatch()
    backends = service.Backends(settings=ReproSettings.from_env({"AIRFLOW__REPRO__HOME": str(home)}), store=store)
    patch.setattr("airflow_repro.cli._backends", lambda: backends)
    patch.setattr(service, "dag_run_state", lambda dag_id, run_id: None)
    patch.setattr(service, "_tracker_or_none", lambda backends: None)
    patch.setattr("airflow_repro.airflow.lineage.emit_verdict", lambda *args: 0)

    def no_such_dag(backends, dag_id, *args, **kwargs):
        raise NotFoundError(f"DAG {dag_id!r} is not known to Airflow")

    patch.setattr(service, "plan", no_such_dag)
    yield {"root": str(root), "home": str(home)}
    patch.undo()


def _strategies(world: dict[str, str]) -> st.SearchStrategy[list[str]]:
    root = world["root"]
    words = st.one_of(st.sampled_from([DAG, RUN, REPLAY, "nope", "", "-", "..", "a/b", "\x00"]), st.text(max_size=12))
    numbers = st.one_of(
        st.sampled_from(["nan", "inf", "-inf", "1e309", "-1", "0", "0.05", "30", "1e6", "x", ""]),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
    )
    durations = st.one_of(numbers, st.sampled_from(["0s", "90s", "30m", "1h", "2d", "1w", "-1h", "1e400d"]))
    homes = st.sampled_from(
        [world["home"], world["home"], f"{root}/missing", f"{root}/a-file", "/proc", "", "\x00", "~nobody-x/h"]
    )
    sources = st.sampled_from(
        [
            f"{root}/events.jsonl",
            f"{root}/binary.jsonl",
            root,
            f"{root}/missing",
            "/dev/null",
            "http://",
            "http://[::1",
            "http://127.0.0.1:9/x",
            "ftp://x",
            "http://h:99999",
            "~x/y",
        ]
    )
    outs = st.sampled_from([f"{root}/schemas", f"{root}/a-file", f"{root}/a-file/sub", "/proc/schemas", "/dev/null"])

    def options(**choices: st.SearchStrategy[str]) -> st.SearchStrategy[list[str]]:
        return st.lists(st.sampled_from(sorted(choices)), max_size=4).flatmap(
            lambda names: st.tuples(*(choices[n].map(lambda v, n=n: [n, v]) for n in names)).map(
                lambda pairs: [token for pair in pairs for token in pair]
            )
        )

    def flags(*names: str) -> st.SearchStrategy[list[str]]:
        return st.lists(st.sampled_from(names), max_size=len(names), unique=True)

    def command(
        name: list[str],
        positional: st.SearchStrategy[list[str]],
        opts: st.SearchStrategy[list[str]],
        fl: st.SearchStrategy[list[str]],
    ) -> st.SearchStrategy[list[str]]:
        return st.tuples(positional, opts, fl).map(lambda t: [*name, *t[0], *t[1], *t[2]])

    def runs(*known: list[str], arity: int) -> st.SearchStrategy[list[str]]:
        """Mostly real runs (so the success and "differs" paths run too), else anything, or too few."""
        return st.one_of(
            st.sampled_from(known), st.lists(words, min_size=arity, max_size=arity), st.lists(words, max_size=arity - 1)
        )

    two, three = runs([DAG, RUN], [DAG, REPLAY], arity=2), runs([DAG, RUN, REPLAY], [DAG, RUN, RUN], arity=3)
    lineage_opts = options(**{"--namespace": words, "--version": words, "--header": words, "--timeout": numbers})
    no_args = st.just([])
    return st.one_of(
        command(["show"], two, options(**{"--home": homes}), flags("--json")),
        command(["diff"], three, options(**{"--home": homes}), flags("--json")),
        command(["fsck"], no_args, options(**{"--home": homes, "--repository": words}), flags("--json")),
        command(["gc"], no_args, options(**{"--home": homes, "--grace": durations}), flags("--json", "--delete")),
        command(["schema"], no_args, options(**{"--out": outs}), no_args),
        command(
            ["verify"],
            runs([DAG, REPLAY], [DAG, RUN], arity=2),
            options(**{"--abs-tol": numbers, "--rel-tol": numbers}),
            flags("--stored", "--deep", "--json"),
        ),
        command(
            ["replay"],
            two,
            options(**{"--mode": st.one_of(st.sampled_from(["pinned", "latest-code"]), words), "--timeout": numbers}),
            flags("--wait", "--verify", "--json"),
        ),
        command(["lineage", "datasets"], sources.map(lambda s: [s]), lineage_opts, flags("--json")),
        command(["lineage", "produced-by"], st.tuples(sources, words).map(list), lineage_opts, flags("--json")),
        command(["lineage", "readers"], st.tuples(sources, words).map(list), lineage_opts, flags("--json")),
    )


#: Where exit 1 is allowed, and what the output then says: a difference, damage, a failed replay.
_DIFFERS = {
    "verify": ("DIFFERS", '"verdict": "differs"'),
    "diff": (": output ", ": only in ", '"change": ', '"field": '),
    "fsck": ("problem",),
    "replay": ("ended",),
}


def test_every_command_exits_with_a_documented_code_and_no_traceback(world):
    env = {"AIRFLOW__REPRO__HOME": world["home"], "AIRFLOW_REPRO_DEBUG": ""}

    @settings(
        max_examples=1000,
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(args=_strategies(world))
    def check(args: list[str]) -> None:
        result = CliRunner().invoke(main, args, env=env)
        assert result.exit_code in (0, 1, 2, 3), (args, result.exit_code, result.output)
        assert "Traceback" not in result.output, (args, result.output)
        assert result.exception is None or isinstance(result.exception, SystemExit), (args, repr(result.exception))
        if result.exit_code == 1:
            assert args[0] in _DIFFERS, (args, result.output)
            assert any(word in result.output for word in _DIFFERS[args[0]]), (args, result.output)

    check()
