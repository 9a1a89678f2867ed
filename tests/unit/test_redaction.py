"""Secrets in params, conf and arguments: recorded as keyed markers, never as values."""

from __future__ import annotations

import json

import pytest

from airflow_repro.core.redaction import (
    AIRFLOW_DEFAULT_SENSITIVE_FIELDS,
    Redactor,
    is_redacted,
    redacted_paths,
)
from airflow_repro.core.replay import DriftKind, conf_with_secrets, secret_drift
from airflow_repro.errors import ReproUserError

KEY = b"k" * 32


def test_sensitive_keys_follow_airflows_rule_and_defaults() -> None:
    from airflow.sdk._shared.secrets_masker import DEFAULT_SENSITIVE_FIELDS

    assert frozenset(DEFAULT_SENSITIVE_FIELDS) == AIRFLOW_DEFAULT_SENSITIVE_FIELDS
    redactor = Redactor(key=KEY)
    for name in ("password", "db_password", "API_TOKEN", "api-key", "Private Key", "aws_secret_access_key"):
        assert redactor.is_sensitive_key(name), name
    for name in ("test_size", "n_estimators", "learning_rate", "path"):
        assert not redactor.is_sensitive_key(name), name


def test_values_under_sensitive_keys_nested_and_in_lists_become_markers() -> None:
    conf = {
        "password": "hunter2-secret",
        "db": {"api_token": {"nested": "tok-123456"}, "host": "db.local"},
        "items": [{"secret": "s3cr3t-value"}, 1],
        "size": 0.25,
        "empty_password": "",
    }
    out = Redactor(key=KEY).redact(conf)
    text = json.dumps(out)
    for value in ("hunter2-secret", "tok-123456", "s3cr3t-value"):
        assert value not in text
    assert is_redacted(out["password"]) and is_redacted(out["db"]["api_token"])
    assert out["db"]["host"] == "db.local" and out["size"] == 0.25 and out["items"][1] == 1
    assert out["empty_password"] == "", "an empty value hides nothing"
    assert conf["password"] == "hunter2-secret", "the input is not modified"


def test_urls_with_credentials_and_secret_query_parameters_are_redacted() -> None:
    redactor = Redactor(key=KEY)
    assert is_redacted(redactor.redact("postgresql://user:pa55word@db:5432/x"))
    assert is_redacted(redactor.redact("https://hooks.example.com/x?token=abcdef123"))
    assert redactor.redact("https://example.com/data.csv?version=3") == "https://example.com/data.csv?version=3"
    assert redactor.redact("s3://bucket/key") == "s3://bucket/key"


def test_values_known_to_the_masker_are_redacted_whatever_their_key() -> None:
    redactor = Redactor(key=KEY, is_secret_value=lambda value: value == "conn-pass-9876")
    assert is_redacted(redactor.redact({"anything": "conn-pass-9876"})["anything"])


def test_markers_are_keyed_stable_and_say_nothing_of_the_value() -> None:
    one, other = Redactor(key=KEY), Redactor(key=b"x" * 32)
    assert one.marker("a") == one.marker("a") != one.marker("b")
    assert one.marker("a") != other.marker("a"), "without the key, a marker cannot be checked against guesses"
    assert one.marker(one.marker("a")) == one.marker("a"), "a marker is never redacted twice"
    assert is_redacted(one.marker({"not": "json", "x": object()}))


def test_a_replay_needs_each_secret_again_and_names_how_to_give_it() -> None:
    redactor = Redactor(key=KEY)
    recorded = redactor.redact({"api_token": "old-token", "db": {"password": "pw-value"}, "size": 1})
    assert [p for p, _ in redacted_paths(recorded)] == [("api_token",), ("db", "password")]

    missing = secret_drift(recorded, {})
    assert [(d.kind, d.detail.split("'")[1]) for d in missing] == [
        (DriftKind.SECRET_MISSING, "api_token"),
        (DriftKind.SECRET_MISSING, "db.password"),
    ]
    assert all("--secret" in d.detail and d.blocks("latest-code") for d in missing)

    same = {"api_token": redactor.marker("old-token"), "db.password": redactor.marker("pw-value")}
    assert secret_drift(recorded, same) == []
    (changed,) = secret_drift(recorded, {**same, "api_token": redactor.marker("rotated")})
    assert changed.kind is DriftKind.SECRET_CHANGED and changed.blocks("pinned") and not changed.blocks("latest-code")
    with pytest.raises(ReproUserError, match="not redacted"):
        secret_drift(recorded, {"size": redactor.marker("1")})

    conf = conf_with_secrets(recorded, {"api_token": "old-token", "db.password": "pw-value"})
    assert conf == {"api_token": "old-token", "db": {"password": "pw-value"}, "size": 1}
    assert recorded["db"]["password"] != "pw-value", "the recorded conf is not modified"


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("tok-typed-here", "KEY=env:ENV_VAR"),
        ("api_token=plain-value", "KEY=env:ENV_VAR"),
        ("api_token=env:", "KEY=env:ENV_VAR"),
        ("api_token=env:REPRO_TEST_SURELY_UNSET", "is not set"),
    ],
)
def test_the_cli_takes_secrets_from_where_they_live_never_from_its_arguments(source: str, message: str) -> None:
    from click.testing import CliRunner

    from airflow_repro.cli import EXIT_USER_ERROR, main

    result = CliRunner().invoke(main, ["replay", "dag", "run", "--secret", source])
    assert result.exit_code == EXIT_USER_ERROR and message in result.output
    assert "plain-value" not in result.output and "tok-typed-here" not in result.output


def test_the_cli_reads_a_secret_from_an_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    from airflow_repro.cli import _read_secrets

    monkeypatch.setenv("REPRO_TEST_TOKEN", "from-the-env")
    assert _read_secrets(("db.password=env:REPRO_TEST_TOKEN",)) == {"db.password": "from-the-env"}
