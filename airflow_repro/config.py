"""Settings of airflow-repro: one table of options, one typed object, resolved at call time.

:data:`OPTIONS` is the only place an option is declared: its help, its default (a literal, or
computed from options resolved before it), how its value is checked, and whether it is a secret.
From it come :class:`ReproSettings` (a field per non-sensitive option, checked against the table
when this module is imported), the resolution below, and the ``[repro]`` section the provider
registers with Airflow (:func:`airflow_repro.airflow.provider_info.config_section`).

Resolution of each option, in table order: its value in Airflow's ``[repro]`` section
(``airflow.cfg``, or the ``AIRFLOW__REPRO__<OPTION>`` environment variable, which Airflow reads
first), else its fallback in another section (``airflow_ui_url``: ``[api] base_url``), else its
default. :meth:`ReproSettings.from_airflow_conf` reads through Airflow's config (what every
component and the ``airflow-repro`` CLI use); :meth:`ReproSettings.from_env` reads the same
variables without Airflow (tests, processes without Airflow's config). Nothing is read at import.

Sensitive options (:data:`SENSITIVE_OPTIONS`) are in the table, so Airflow knows them (and allows
their ``_cmd``/``_secret`` variants and hides them), but never in :class:`ReproSettings`: it holds
names of credentials (connection ids) only, never a secret.

The settings of a stack ``airflow-repro standalone`` started (its Airflow home, metadata DB,
``[repro]`` home, MLflow server, OpenLineage transport) are in its settings file; the CLI reads it
where ``AIRFLOW_HOME`` is not set, by the rule of :func:`find_stack_settings`, and never overrides
a variable that is set (:func:`apply_stack_settings`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlparse

from airflow_repro.core.naming import validate_branch_name, validate_repository_name
from airflow_repro.errors import ConfigError, InvalidNameError

SECTION = "repro"

#: Where ``@repro_task`` tasks run.
ExecutionMode = Literal["local", "kubernetes"]
EXECUTION_MODES: tuple[str, ...] = get_args(ExecutionMode)
#: How a pod reads its inputs and hands over its outputs (docs/kubernetes.md, "Moving data").
K8sTransport = Literal["shared-volume", "presigned", "auto", "lakefs-secret"]
K8S_TRANSPORTS: tuple[str, ...] = get_args(K8sTransport)

STORE_SCHEMES = ("file", "lakefs")
NAMESPACE_SCHEMES = ("local", "s3", "gs", "azure", "https", "http", "mem")
#: Airflow's own rule for connection ids (letters, digits, '_', '-', '.', '~' ... kept simple here).
_CONN_ID_RE = re.compile(r"^[A-Za-z0-9_.~-]{1,250}\Z")

#: ``(section, option) -> raw value``, ``None`` (or ``""``) where it is not set.
Getter = Callable[[str, str], "str | None"]
#: ``(option, raw value) -> the field's value``; raises :class:`ConfigError` naming the fix.
Parser = Callable[[str, str], Any]
#: ``(options resolved so far, environment) -> the default``.
Deriver = Callable[[Mapping[str, Any], Mapping[str, str]], str]


def env_var(option: str) -> str:
    """The environment variable of ``[repro] <option>`` (Airflow's ``AIRFLOW__<SECTION>__<OPTION>``)."""
    return f"AIRFLOW__{SECTION.upper()}__{option.upper()}"


# -- checks: each takes the option's name and its raw value, returns the field's value ------------
def _text(option: str, value: str) -> str:
    return value


def _absolute(option: str, value: str) -> Path:
    path = Path(value).expanduser()
    if not path.is_absolute():
        raise ConfigError(
            f"[repro] {option} must be an absolute path, got {value!r} (set {env_var(option)}=/absolute/path)"
        )
    return path


def _redacted(uri: str) -> str:
    """``uri`` for an error message: any ``user:password@`` replaced by ``***@``."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return uri
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rsplit("@", 1)[1]
    return f"{scheme}://{authority}{slash}{tail}"


def _tracking_uri(option: str, uri: str) -> str:
    scheme = urlparse(uri).scheme
    if scheme not in ("http", "https", "sqlite", "file"):
        raise ConfigError(
            f"[repro] {option} {_redacted(uri)!r} is not a tracking URI MLflow accepts here: use "
            f"http(s)://host:port or sqlite:////absolute/path.db (set {env_var(option)})"
        )
    return uri


def _store_uri(option: str, uri: str) -> str:
    parsed = urlparse(uri)
    if parsed.scheme == "" and Path(uri).is_absolute():
        return uri  # a bare absolute folder: the embedded store
    if parsed.scheme not in STORE_SCHEMES:
        raise ConfigError(
            f"[repro] {option} {_redacted(uri)!r} names no store airflow-repro knows: use file:///absolute/folder for "
            f"the embedded store or lakefs:// for lakeFS (set {env_var(option)})"
        )
    if parsed.scheme == "file" and not Path(parsed.path).is_absolute():
        raise ConfigError(f"[repro] {option} {_redacted(uri)!r} must name an absolute folder: file:///absolute/folder")
    if parsed.scheme == "lakefs":
        if "@" in parsed.netloc:
            raise ConfigError(
                f"[repro] {option} contains credentials (user:password@): write lakefs:// (or "
                "lakefs://<airflow_conn_id>) and set the access key id and secret access key as login and password "
                f"of that Airflow connection, never in the URI (set {env_var(option)})"
            )
        if parsed.path not in ("", "/") or parsed.query:
            raise ConfigError(
                f"[repro] {option} {uri!r}: write lakefs:// (or lakefs://<airflow_conn_id>) and keep the endpoint "
                "and credentials in that Airflow connection, never in the URI"
            )
        if parsed.netloc:
            _conn_id(option, parsed.netloc)
    return uri


def _conn_id(option: str, value: str) -> str:
    if not _CONN_ID_RE.match(value):
        raise ConfigError(
            f"[repro] {option} {value!r} is not a valid Airflow connection id: use letters, digits, '_', '-' or '.' "
            f"(set {env_var(option)})"
        )
    return value


def _storage_namespace(option: str, value: str) -> str:
    parsed = urlparse(value)
    if parsed.scheme not in NAMESPACE_SCHEMES or not parsed.netloc and not parsed.path.strip("/"):
        raise ConfigError(
            f"[repro] {option} {value!r} is not a lakeFS storage namespace: use local://<folder> "
            "(local blockstore), s3://bucket/prefix, gs://bucket/prefix or https://<account>.blob.core.windows.net/"
            f"<container>/<prefix> (set {env_var(option)})"
        )
    return value.rstrip("/")


def _ui_url(option: str, value: str) -> str:
    if urlparse(value).scheme not in ("http", "https") or not urlparse(value).netloc:
        raise ConfigError(
            f"[repro] {option} {value!r} must be the http(s) address of the Airflow UI, e.g. "
            f"http://localhost:8080 (set {env_var(option)})"
        )
    return value.rstrip("/")


def _browser_url(option: str, value: str) -> str | None:
    if value.strip().lower() == "none":
        return None
    parsed = urlparse(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or "@" in parsed.netloc:
        raise ConfigError(
            f"[repro] {option} {_redacted(value)!r} must be an http(s) address a browser can open, without "
            f"credentials, e.g. https://mlflow.example.com, or 'none' (set {env_var(option)})"
        )
    return value.rstrip("/")


def _name(validate: Callable[[str], str]) -> Parser:
    def check(option: str, value: str) -> str:
        try:
            return validate(value)
        except InvalidNameError as exc:
            raise ConfigError(f"[repro] setting is invalid: {exc}") from exc

    return check


def _execution(option: str, value: str) -> str:
    mode = value.strip().lower()
    if mode not in EXECUTION_MODES:
        raise ConfigError(
            f"[repro] {option} {value!r} is not one of {EXECUTION_MODES}: set [repro] {option} "
            f"({env_var(option)}) to 'local' or 'kubernetes', or give the task execution="
        )
    return mode


def _k8s_transport(option: str, value: str) -> str:
    transport = value.strip().lower()
    if transport not in K8S_TRANSPORTS:
        raise ConfigError(
            f"[repro] {option} {value!r} is not one of {K8S_TRANSPORTS}: 'shared-volume' (a ReadWriteMany "
            "claim, [repro] k8s_work_volume_claim), 'presigned' (the pod transfers through presigned URLs; "
            "lakeFS on S3, GCS or Azure), 'auto' (presigned where lakeFS can presign, else the shared volume) or "
            f"'lakefs-secret' (lakeFS credentials in the pod from [repro] k8s_lakefs_secret); set {env_var(option)}"
        )
    return transport


def _seconds(option: str, value: str) -> int:
    try:
        seconds = int(value.strip())
    except ValueError:
        seconds = -1
    if seconds < 0:
        raise ConfigError(
            f"[repro] {option} {value!r} must be a whole number of seconds >= 0, e.g. 600 (set {env_var(option)})"
        )
    return seconds


# -- computed defaults and fallbacks ---------------------------------------------------------------
def _under_home(name: str, *, scheme: str = "") -> Deriver:
    def derive(resolved: Mapping[str, Any], env: Mapping[str, str]) -> str:
        return f"{scheme}{resolved['home'] / name}"

    return derive


def _default_home(resolved: Mapping[str, Any], env: Mapping[str, str]) -> str:
    return str(Path(env.get("AIRFLOW_HOME") or Path.home() / "airflow") / "repro")


def _browser_tracking_uri(resolved: Mapping[str, Any], env: Mapping[str, str]) -> str:
    """The tracking URI when it is a server's http(s) address, without any ``user:password@``."""
    parsed = urlparse(str(resolved["mlflow_tracking_uri"]))
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        return ""  # sqlite or file: no UI to link to
    return parsed._replace(netloc=parsed.netloc.rsplit("@", 1)[-1]).geturl()


def _api_base_url(get: Getter) -> str | None:
    """Airflow's own UI address, when it is a full URL (``[api] base_url`` may be a bare path)."""
    base = get("api", "base_url") or ""
    return base if urlparse(base).scheme in ("http", "https") else None


# -- the table ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Option:
    """One ``[repro]`` option.

    :param default: the literal default (also the default Airflow's config registers), or
        ``None`` where the option is unset by default or its default is computed (``derive``).
    :param shown: how a computed default is described to users (``<home>/work``).
    :param derive: computes the default from the options resolved before this one.
    :param fallback: reads another section's option when this one is unset.
    :param check: turns the raw value into the field's value, or raises :class:`ConfigError`.
    :param sensitive: a secret: Airflow allows ``_cmd``/``_secret`` and hides it; never a field
        of :class:`ReproSettings`, never resolved by it (its reader asks Airflow's config).
    """

    name: str
    help: str
    default: str | None = None
    shown: str | None = None
    derive: Deriver | None = None
    fallback: Callable[[Getter], str | None] | None = None
    check: Parser = _text
    sensitive: bool = False

    @property
    def env_var(self) -> str:
        return env_var(self.name)

    @property
    def described_default(self) -> str:
        """The default as the documentation states it."""
        return self.shown or self.default or "unset"

    def resolve(self, get: Getter, resolved: Mapping[str, Any], env: Mapping[str, str]) -> Any:
        """This option's value: set, else its fallback, else its default; ``None`` if none of them."""
        raw = get(SECTION, self.name) or (self.fallback(get) if self.fallback else None)
        if not raw:
            raw = self.derive(resolved, env) if self.derive else self.default
        return self.check(self.name, raw) if raw else None


#: Every ``[repro]`` option, in the order they are resolved and documented.
OPTIONS: dict[str, Option] = {
    option.name: option
    for option in (
        Option(
            "home",
            "Folder of the embedded store, MLflow DB and task workspaces.",
            shown="$AIRFLOW_HOME/repro",
            derive=_default_home,
            check=_absolute,
        ),
        Option(
            "store_uri",
            "Versioned data store: file:///abs/folder for the embedded store; lakefs:// for lakeFS through the "
            "Airflow connection named by lakefs_conn_id, or lakefs://<conn_id> to name the connection here.",
            shown="file://<home>/store",
            derive=_under_home("store", scheme="file://"),
            check=_store_uri,
        ),
        Option(
            "lakefs_conn_id",
            "Airflow connection (type lakefs) with the lakeFS endpoint as host, the access key id as login and "
            "the secret access key as password. Outside Airflow, LAKEFS_ENDPOINT, LAKEFS_ACCESS_KEY_ID and "
            "LAKEFS_SECRET_ACCESS_KEY are used when the connection does not exist.",
            default="lakefs_default",
            check=_conn_id,
        ),
        Option(
            "lakefs_storage_namespace",
            "Where lakeFS repositories created by airflow-repro keep their data: <namespace>/<repository> "
            "(local://... for lakeFS's local blockstore, s3://bucket/prefix, gs://..., https://<account>.blob...).",
            default="local://repro",
            check=_storage_namespace,
        ),
        Option(
            "lakefs_ui_url",
            "Address of the lakeFS UI as a browser reaches it: commit ids in the Airflow UI's Reproducibility "
            "tab link there when the store is lakeFS (unset: no links).",
            check=_browser_url,
        ),
        Option(
            "airflow_ui_url",
            "Base URL of the Airflow UI, for the lakeFS UI button on each commit that links back to the Airflow run.",
            shown="[api] base_url",
            fallback=_api_base_url,
            check=_ui_url,
        ),
        Option(
            "mlflow_conn_id",
            "Airflow connection (type mlflow) whose host/port give the MLflow tracking server; when set it "
            "replaces mlflow_tracking_uri.",
            check=_conn_id,
        ),
        Option(
            "repository",
            "Repository that tasks write their outputs to unless they name one.",
            default="repro",
            check=_name(validate_repository_name),
        ),
        Option(
            "default_branch",
            "Branch that run branches are created from.",
            default="main",
            check=_name(validate_branch_name),
        ),
        Option(
            "mlflow_tracking_uri",
            "MLflow tracking URI: http(s)://host:port for a tracking server (fast: tasks never import "
            "mlflow), or sqlite:////abs/path.db (tasks import mlflow, a few seconds each).",
            shown="sqlite:///<home>/mlflow.db",
            derive=_under_home("mlflow.db", scheme="sqlite:///"),
            check=_tracking_uri,
        ),
        Option(
            "mlflow_ui_url",
            "Address of the MLflow UI as a browser reaches it, for the MLflow run links of the Reproducibility "
            "tab; 'none' for no links (e.g. an address only the cluster resolves).",
            shown="mlflow_tracking_uri when it is http(s), without credentials",
            derive=_browser_tracking_uri,
            check=_browser_url,
        ),
        Option(
            "execution",
            "Where @repro_task tasks run: local (a process on the worker, in a pinned environment) or "
            "kubernetes (a pod from the task's image pinned by digest). Read when the DAG is parsed.",
            default="local",
            check=_execution,
        ),
        Option(
            "k8s_work_volume_claim",
            "PersistentVolumeClaim (ReadWriteMany) mounted at work_dir on the workers and in task pods, "
            "through which pods hand their outputs to the worker that records them.",
        ),
        Option(
            "k8s_transport",
            "How task pods read their inputs and hand over their outputs: shared-volume (the claim "
            "k8s_work_volume_claim), presigned (presigned lakeFS URLs in a per-attempt Secret; no volume, no "
            "credential in the pod), auto (presigned where lakeFS's storage can presign, else shared-volume) or "
            "lakefs-secret (the pod reads and writes through lakeFS with the credentials of k8s_lakefs_secret).",
            default="shared-volume",
            check=_k8s_transport,
        ),
        Option(
            "k8s_lakefs_secret",
            "Kubernetes Secret, in the pods' namespace, with LAKEFS_ENDPOINT, LAKEFS_ACCESS_KEY_ID and "
            "LAKEFS_SECRET_ACCESS_KEY, given to pods as variables when k8s_transport = lakefs-secret.",
        ),
        Option(
            "k8s_presign_min_expiry",
            "Seconds a presigned URL must stay valid when its pod is created (start-up, GPU node scale-up and "
            "run time); a task whose URLs expire sooner is refused before its pod.",
            default="600",
            check=_seconds,
        ),
        Option(
            "secret_digest_key",
            "Key of the HMAC that stands for each secret in what is recorded (params, conf), so a replay can "
            "check a secret is unchanged without storing it. Set the same value on every component "
            "(workers, API server, CLI); sensitive: use AIRFLOW__REPRO__SECRET_DIGEST_KEY_SECRET or _CMD.",
            shown="a key file <home>/secret_digest.key, created on first use",
            sensitive=True,
        ),
        Option(
            "venv_cache",
            "Where virtualenvs built from task lockfiles are cached.",
            shown="<home>/venvs",
            derive=_under_home("venvs"),
            check=_absolute,
        ),
        Option(
            "work_dir",
            "Scratch space of running task attempts (inputs, staged outputs).",
            shown="<home>/work",
            derive=_under_home("work"),
            check=_absolute,
        ),
    )
}

#: Options whose values are secrets (Airflow then allows ``_cmd``/``_secret`` variants and hides them).
SENSITIVE_OPTIONS = frozenset(name for name, option in OPTIONS.items() if option.sensitive)


def _default(name: str) -> Any:
    """The field default of ``[repro] <name>``: its literal default from the table, else ``None``."""
    return OPTIONS[name].default


@dataclass(frozen=True, kw_only=True)
class ReproSettings:
    """The ``[repro]`` settings: a field per non-sensitive option of :data:`OPTIONS`.

    Build it with :meth:`from_airflow_conf` (or :meth:`from_env`), which check every value;
    constructing it directly checks nothing. Names of credentials (connection ids) only: never a
    secret.
    """

    home: Path
    store_uri: str
    lakefs_conn_id: str = _default("lakefs_conn_id")
    lakefs_storage_namespace: str = _default("lakefs_storage_namespace")
    lakefs_ui_url: str | None = _default("lakefs_ui_url")
    airflow_ui_url: str | None = _default("airflow_ui_url")
    mlflow_conn_id: str | None = _default("mlflow_conn_id")
    repository: str = _default("repository")
    default_branch: str = _default("default_branch")
    mlflow_tracking_uri: str
    mlflow_ui_url: str | None = _default("mlflow_ui_url")
    execution: ExecutionMode = _default("execution")
    k8s_work_volume_claim: str | None = _default("k8s_work_volume_claim")
    k8s_transport: K8sTransport = _default("k8s_transport")
    k8s_lakefs_secret: str | None = _default("k8s_lakefs_secret")
    k8s_presign_min_expiry: int
    venv_cache: Path
    work_dir: Path

    @property
    def store_kind(self) -> str:
        """``"local"`` (embedded store) or ``"lakefs"``."""
        return "lakefs" if urlparse(self.store_uri).scheme == "lakefs" else "local"

    @property
    def store_root(self) -> Path:
        """Root folder of the embedded store (``file://`` store URIs only)."""
        parsed = urlparse(self.store_uri)
        if parsed.scheme not in ("", "file"):
            raise ConfigError(
                f"[repro] store_uri {self.store_uri!r} is not an embedded store, so it has no folder; "
                "use file:///absolute/folder for the embedded store"
            )
        return Path(parsed.path if parsed.scheme == "file" else self.store_uri)

    @property
    def store_conn_id(self) -> str:
        """The Airflow connection of the lakeFS store: ``lakefs://<conn_id>``, else ``lakefs_conn_id``."""
        return urlparse(self.store_uri).netloc or self.lakefs_conn_id

    @classmethod
    def from_airflow_conf(cls, overrides: Mapping[str, str | None] | None = None) -> ReproSettings:
        """The settings as Airflow's config gives them (``airflow.cfg``, ``AIRFLOW__REPRO__*``).

        ``overrides``: option -> value used instead of Airflow's (``None`` or ``""``: not
        overridden), e.g. the CLI's ``--home``; options computed from an overridden one follow it.
        """
        return cls.resolve(_overridden(_airflow_getter(), overrides), os.environ)

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, overrides: Mapping[str, str | None] | None = None
    ) -> ReproSettings:
        """The settings from ``AIRFLOW__<SECTION>__<OPTION>`` variables alone, without Airflow
        (``airflow.cfg`` is not read): tests and processes where Airflow is not configured."""
        env = os.environ if environ is None else environ

        def get(section: str, option: str) -> str | None:
            return env.get(f"AIRFLOW__{section.upper()}__{option.upper()}") or None

        return cls.resolve(_overridden(get, overrides), env)

    @classmethod
    def resolve(cls, get: Getter, env: Mapping[str, str]) -> ReproSettings:
        """Every non-sensitive option of :data:`OPTIONS`, in table order, through ``get``."""
        resolved: dict[str, Any] = {}
        for name, option in OPTIONS.items():
            if not option.sensitive:
                resolved[name] = option.resolve(get, resolved, env)
        return cls(**resolved)


def airflow_option(name: str) -> Any:
    """One ``[repro]`` option from Airflow's config, resolved and checked as in :class:`ReproSettings`.

    For code that needs that option alone where a problem in another option must not stop it
    (``execution`` when a DAG is parsed, ``k8s_work_volume_claim`` before a pod starts). An
    option whose default is computed from others is resolved with all of them.
    """
    option = OPTIONS[name]
    if option.sensitive:
        raise ValueError(f"[repro] {name} is sensitive: it is never resolved into settings")
    if option.derive is not None:
        return getattr(ReproSettings.from_airflow_conf(), name)
    return option.resolve(_airflow_getter(), {}, os.environ)


def _airflow_getter() -> Getter:
    """Reads Airflow's config: ``AIRFLOW__<SECTION>__<OPTION>`` first, then ``airflow.cfg``, then
    the defaults Airflow registered (for ``[repro]``: the table's literal defaults)."""
    from airflow.configuration import conf

    def get(section: str, option: str) -> str | None:
        return conf.get(section, option, fallback=None) or None

    return get


def _overridden(get: Getter, overrides: Mapping[str, str | None] | None) -> Getter:
    given = {name: value for name, value in (overrides or {}).items() if value}
    unknown = sorted(set(given) - {name for name, option in OPTIONS.items() if not option.sensitive})
    if unknown:
        raise ValueError(f"no such [repro] option to override: {', '.join(unknown)}")
    if not given:
        return get

    def get_overridden(section: str, option: str) -> str | None:
        if section == SECTION and option in given:
            return given[option]
        return get(section, option)

    return get_overridden


# -- the settings file of an ``airflow-repro standalone`` stack -------------------------------------
#: Names a stack's settings file (or the home folder holding it), for the CLI outside that folder.
STACK_ENV_VAR = "AIRFLOW_REPRO_STACK"
#: ``airflow-repro standalone``'s default home, in the folder it is started from.
STACK_HOME = ".airflow-repro"
STACK_FILE = "stack.json"
STACK_KIND = "airflow-repro/stack"


def find_stack_settings(environ: Mapping[str, str], cwd: Path) -> Path | None:
    """The stack settings file the CLI reads, by one rule:

    1. ``AIRFLOW_HOME`` is set: none (that Airflow is the user's; nothing is looked up);
    2. else ``$AIRFLOW_REPRO_STACK``: that file, or ``stack.json`` in that folder (an error if absent);
    3. else ``./.airflow-repro/stack.json`` in the current folder, if it exists;
    4. else none: Airflow's own defaults (``~/airflow``).
    """
    if environ.get("AIRFLOW_HOME"):
        return None
    named = environ.get(STACK_ENV_VAR)
    if named:
        path = Path(named).expanduser().absolute()
        if path.is_dir():
            path = path / STACK_FILE
        if not path.is_file():
            raise ConfigError(
                f"{STACK_ENV_VAR}={named}: there is no stack settings file there; name the {STACK_FILE} that "
                f"'airflow-repro standalone' wrote in its home (or that home), or unset {STACK_ENV_VAR}"
            )
        return path
    candidate = cwd / STACK_HOME / STACK_FILE
    return candidate if candidate.is_file() else None


def read_stack_settings(path: Path) -> dict[str, str]:
    """The variables a stack's settings file sets (``{"kind": STACK_KIND, "env": {...}, ...}``)."""
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read the stack settings file {path}: {exc}; start the stack again") from None
    if (
        not isinstance(document, dict)
        or document.get("kind") != STACK_KIND
        or not isinstance(document.get("env"), dict)
    ):
        raise ConfigError(f"{path} is not a settings file of 'airflow-repro standalone' (kind {STACK_KIND!r})")
    env = document["env"]
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ConfigError(f"{path}: 'env' must map variable names to strings; start the stack again")
    return dict(env)


def apply_stack_settings(environ: MutableMapping[str, str] | None = None, cwd: Path | None = None) -> Path | None:
    """Set the variables of the stack settings file :func:`find_stack_settings` finds, each only
    where it is not set already; returns that file (``None``: none applies)."""
    env = os.environ if environ is None else environ
    if cwd is None:
        try:
            cwd = Path.cwd()
        except OSError:  # the current folder was removed
            return None
    path = find_stack_settings(env, cwd)
    if path is None:
        return None
    for name, value in read_stack_settings(path).items():
        env.setdefault(name, value)
    return path


def _check_fields_match_options() -> None:
    """The table and the settings object must not drift apart (checked once, at import)."""
    expected = [name for name, option in OPTIONS.items() if not option.sensitive]
    actual = [f.name for f in fields(ReproSettings)]
    if actual != expected:
        raise RuntimeError(f"ReproSettings fields {actual} do not match the non-sensitive OPTIONS {expected}")


_check_fields_match_options()
