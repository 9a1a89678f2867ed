"""Airflow's side of redaction: its sensitive-key rules, its masker's secrets, and the digest key.

The core :class:`~airflow_repro.core.redaction.Redactor` is pure; this module gives it what only
Airflow knows: the secrets masker's sensitive field names (its defaults plus
``[core] sensitive_var_conn_names``), the values the masker has been told are secrets in this
process (connection passwords and sensitive Variables a task fetched), and the HMAC key.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import secrets
from pathlib import Path

from airflow_repro.config import SECTION, ReproSettings
from airflow_repro.core.redaction import Redactor
from airflow_repro.errors import ConfigError

log = logging.getLogger(__name__)

KEY_FILE = "secret_digest.key"


def build_redactor(settings: ReproSettings) -> Redactor:
    return Redactor(
        key=digest_key(settings),
        sensitive_fields=sensitive_fields(),
        is_secret_value=_masked_by_airflow,
        on_redact=_mask_in_airflow,
    )


def sensitive_fields() -> frozenset[str]:
    from airflow.configuration import conf
    from airflow.sdk._shared.secrets_masker import DEFAULT_SENSITIVE_FIELDS

    extra = conf.get("core", "sensitive_var_conn_names", fallback="") or ""
    return frozenset(DEFAULT_SENSITIVE_FIELDS) | {name.strip().lower() for name in extra.split(",") if name.strip()}


def digest_key(settings: ReproSettings) -> bytes:
    """``[repro] secret_digest_key``, else a key file created in the repro home.

    Not derived from ``[core] fernet_key``: Airflow writes a generated one into ``airflow.cfg``
    the first time its CLI runs, so processes started before and after would disagree."""
    from airflow.configuration import conf

    configured = conf.get(SECTION, "secret_digest_key", fallback=None) or ""
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    return _key_file(settings.home / KEY_FILE)


def _key_file(path: Path) -> bytes:
    try:
        return base64.b64decode(path.read_bytes().strip(), validate=True)
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot read the secret digest key {path.name} in the repro home: {exc}; "
            "remove it or set [repro] secret_digest_key"
        ) from exc
    key = secrets.token_bytes(32)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(base64.b64encode(key))
            out.flush()
            os.fsync(out.fileno())
        os.link(tmp, path)  # atomic, and fails if another process made the key first
    except FileExistsError:
        return _key_file(path)  # theirs is the key
    except OSError as exc:
        raise ConfigError(
            f"cannot create the secret digest key in the repro home: {exc}; set [repro] secret_digest_key"
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return key


def _masked_by_airflow(value: str) -> bool:
    """True for a value Airflow's secrets masker hides in this process (a fetched connection
    password, a sensitive Variable, anything ``mask_secret`` was given)."""
    try:
        from airflow.sdk._shared.secrets_masker import _secrets_masker
    except ImportError:  # pragma: no cover - task SDK layout changed
        return False
    try:
        return _secrets_masker().redact(value) != value
    except Exception:  # the masker is a side check; never fail recording because of it
        log.debug("secrets masker check failed", exc_info=True)
        return False


def _mask_in_airflow(value: object) -> None:
    """Tell Airflow's secrets masker of a value we redacted: the task's log and the lineage events
    Airflow's OpenLineage provider builds (which carry the DAG-run conf) then hide it as well."""
    try:
        from airflow.sdk.log import mask_secret  # also tells the supervisor, which writes the log

        mask_secret(value)  # type: ignore[arg-type]
    except Exception:  # a side channel; never fail recording because of it
        log.debug("could not register a secret with Airflow's masker", exc_info=True)
