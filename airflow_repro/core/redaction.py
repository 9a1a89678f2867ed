"""Secrets in recorded values: replaced by a marker carrying a keyed digest, never stored.

Params, DAG-run conf and call arguments are recorded in manifests, commits, MLflow and lineage.
Values under a sensitive key (Airflow's own rule: the key, lowercased with non-word runs turned
into ``_``, contains one of the sensitive field names), URLs with credentials, and values the
caller knows to be secrets become ``airflow-repro:redacted:hmac-sha256:<hex>``. The HMAC is keyed
by a deployment secret, so the same value always gives the same marker (a replay can check that a
secret is unchanged) while the marker says nothing about the value to whoever reads the record.

Pure: the Airflow shell supplies the sensitive names and the key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from airflow_repro.core.manifest import canonical_json
from airflow_repro.errors import ReproError

REDACTED_PREFIX = "airflow-repro:redacted:hmac-sha256:"
_MARKER = re.compile(r"^airflow-repro:redacted:hmac-sha256:[0-9a-f]{64}$")
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")

#: Airflow's DEFAULT_SENSITIVE_FIELDS (secrets masker), for callers that cannot import Airflow.
AIRFLOW_DEFAULT_SENSITIVE_FIELDS = frozenset(
    {
        "access_key",
        "access_token",
        "api_key",
        "apikey",
        "auth_header",
        "authorization",
        "bearer",
        "connection_string",
        "dsn",
        "passphrase",
        "passwd",
        "password",
        "private_key",
        "proxy",
        "proxy_password",
        "proxies",
        "secret",
        "service_account",
        "service_key",
        "token",
        "keyfile_dict",
        "webhook_url",
    }
)


def is_redacted(value: Any) -> bool:
    return isinstance(value, str) and _MARKER.match(value) is not None


@dataclass(frozen=True)
class Redactor:
    """Replaces secrets in JSON values by markers; the same value and key give the same marker."""

    key: bytes = field(repr=False)
    sensitive_fields: frozenset[str] = AIRFLOW_DEFAULT_SENSITIVE_FIELDS
    #: values known to be secrets by other means (e.g. registered with Airflow's secrets masker).
    is_secret_value: Callable[[str], bool] = field(default=lambda _value: False, repr=False, compare=False)
    #: told of every value redacted (e.g. Airflow's ``mask_secret``, so task logs and the lineage
    #: events Airflow itself sends hide it too).
    on_redact: Callable[[Any], None] = field(default=lambda _value: None, repr=False, compare=False)

    def is_sensitive_key(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        normalized = re.sub(r"\W+", "_", name.strip().lower())
        return any(s in normalized for s in self.sensitive_fields)

    def marker(self, value: Any) -> str:
        if is_redacted(value):  # already a marker (e.g. a recorded conf replayed): keep it
            return str(value)
        try:
            body = value.encode("utf-8") if isinstance(value, str) else canonical_json(value)
        except ReproError:  # not JSON (the recorder refuses it later); the marker still hides it
            body = repr(value).encode("utf-8", "replace")
        return REDACTED_PREFIX + hmac.new(self.key, body, hashlib.sha256).hexdigest()

    def redact(self, value: Any) -> Any:
        """A copy of ``value`` with every secret replaced by its marker."""
        if isinstance(value, Mapping):
            return {
                k: self._hidden(v) if self.is_sensitive_key(k) and v not in (None, "") else self.redact(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self.redact(v) for v in value]
        if isinstance(value, str) and (self._url_has_secret(value) or self.is_secret_value(value)):
            return self._hidden(value)
        return value

    def _hidden(self, value: Any) -> str:
        if not is_redacted(value):
            self.on_redact(value)
        return self.marker(value)

    def _url_has_secret(self, text: str) -> bool:
        if not _URL.match(text):
            return False
        try:
            parts = urlsplit(text)
            password = parts.password
        except ValueError:
            return True  # unparseable URL: say nothing of it
        if password:
            return True
        return any(self.is_sensitive_key(name) and value for name, value in parse_qsl(parts.query))


def redacted_paths(value: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], str]]:
    """Where ``value`` holds markers: (path of keys, marker) pairs, depth first, sorted keys."""
    if isinstance(value, Mapping):
        for key in sorted(value, key=str):
            yield from redacted_paths(value[key], (*prefix, str(key)))
    elif is_redacted(value):
        yield prefix, value


def dotted(path: tuple[str, ...]) -> str:
    return ".".join(path)


def with_value_at(conf: Mapping[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    """A copy of ``conf`` with the entry at ``path`` replaced."""
    copy = dict(conf)
    head, *rest = path
    copy[head] = value if not rest else with_value_at(conf[head], tuple(rest), value)
    return copy


__all__ = [
    "AIRFLOW_DEFAULT_SENSITIVE_FIELDS",
    "REDACTED_PREFIX",
    "Redactor",
    "dotted",
    "is_redacted",
    "redacted_paths",
    "with_value_at",
]
