"""The environment record: every distribution installed where a task ran, and how each got there.

A fingerprint's digest alone says *that* an environment changed; the record says *what* changed
(``numpy 2.4.6 -> 2.5.0``) and holds what a replay needs to rebuild it with uv: a name, a version
and a source per distribution, the source read from the ``direct_url.json`` an installer leaves
in a ``.dist-info`` folder (PEP 610). Its digest is the sha256 of its canonical JSON.

Pure: pydantic and the standard library only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from airflow_repro.core.manifest import CanonicalDocument
from airflow_repro.errors import ManifestError
from airflow_repro.probes import normalize_name

__all__ = [
    "ENVIRONMENT_RECORD_KIND",
    "PROVIDED_DISTRIBUTIONS",
    "Distribution",
    "DistributionSource",
    "EnvironmentChange",
    "EnvironmentRecord",
    "diff_environments",
    "distribution_problem",
    "requirements_text",
    "restore_problems",
    "source_from_direct_url",
    "strip_credentials",
]

ENVIRONMENT_RECORD_KIND: Final = "airflow-repro/environment"
ENVIRONMENT_RECORD_SCHEMA: Final = "1.0"
#: Distributions a replay provides itself: never recorded, never a reason to refuse.
PROVIDED_DISTRIBUTIONS: Final = ("airflow-repro",)

SourceKind = Literal["index", "url", "vcs", "editable", "local"]

# ``scheme://userinfo@``: the userinfo is what gets stripped (it stops at the first / ? or #).
_USERINFO_RE = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<userinfo>[^/?#]*)@")
# PEP 610 lets these stay: environment-variable placeholders, and ``git`` (``ssh://git@host/...``).
_HARMLESS_USERINFO_RE = re.compile(r"^(git|\$\{[A-Za-z0-9_-]+\}(:\$\{[A-Za-z0-9_-]+\})?)$")
# A path on this machine: ``file:...``, also behind a VCS prefix (``git+file:///srv/repo``).
_LOCAL_URL_RE = re.compile(r"^([A-Za-z]+\+)?file:")


def _unset(value: Any) -> bool:
    return value is None


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DistributionSource(_Frozen):
    """Where a distribution was installed from; unset fields stay out of the canonical JSON."""

    kind: SourceKind = "index"
    url: str | None = Field(default=None, exclude_if=_unset, description="Without credentials.")
    commit_id: str | None = Field(default=None, exclude_if=_unset, description="The VCS commit installed.")
    requested_revision: str | None = Field(default=None, exclude_if=_unset, description="The VCS revision asked for.")
    archive_hash: str | None = Field(default=None, exclude_if=_unset, description="e.g. sha256=<hex> of the archive.")


INDEX_SOURCE: Final = DistributionSource()


def _is_index(source: DistributionSource) -> bool:
    return source == INDEX_SOURCE


class Distribution(_Frozen):
    """One installed distribution; an index source (the usual case) is left out of the JSON."""

    name: str
    version: str
    source: DistributionSource = Field(default=INDEX_SOURCE, exclude_if=_is_index)

    @field_validator("name")
    @classmethod
    def _normalized(cls, name: str) -> str:
        return normalize_name(name)


class EnvironmentRecord(CanonicalDocument, _Frozen):
    """The interpreter, platform and every distribution of an environment, sorted by name."""

    kind: Literal["airflow-repro/environment"] = ENVIRONMENT_RECORD_KIND
    schema_version: Literal["1.0"] = ENVIRONMENT_RECORD_SCHEMA
    python: str = Field(description="Implementation and version, e.g. 'CPython 3.11.7'.")
    python_version: str = Field(description="e.g. '3.11.7'.")
    platform: str = Field(description="sys.platform, e.g. 'linux'.")
    machine: str = Field(description="platform.machine(), e.g. 'x86_64'.")
    distributions: list[Distribution] = Field(default_factory=list)

    @field_validator("distributions")
    @classmethod
    def _sorted_and_unique(cls, distributions: list[Distribution]) -> list[Distribution]:
        # Sorted here so that the same environment always has the same canonical JSON.
        ordered = sorted(distributions, key=lambda d: d.name)
        names = [d.name for d in ordered]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"distributions listed more than once: {', '.join(duplicates)}")
        return ordered

    @classmethod
    def from_json(cls, data: bytes | str) -> EnvironmentRecord:
        """Parse a stored record; malformed data raises :class:`ManifestError`."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise ManifestError(f"not a valid environment record: {exc}") from exc


def strip_credentials(url: str) -> str:
    """``url`` without the ``user:password@`` (or ``token@``) of its authority.

    The userinfo PEP 610 calls harmless stays: ``git`` (``ssh://git@github.com/...``) and
    ``${VAR}`` placeholders.
    """
    match = _USERINFO_RE.match(url)
    if match is None or _HARMLESS_USERINFO_RE.match(match["userinfo"]):
        return url
    return match["scheme"] + url[match.end() :]


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _archive_hash(archive_info: Mapping[str, Any]) -> str | None:
    hashes = _mapping(archive_info.get("hashes"))
    if hashes and _text(hashes.get("sha256")):
        return f"sha256={hashes['sha256']}"
    return _text(archive_info.get("hash"))  # the older single "<algorithm>=<hex>" field


def _vcs_source(url: str | None, vcs_info: Mapping[str, Any]) -> DistributionSource:
    vcs = _text(vcs_info.get("vcs")) or "git"
    if url is not None and not url.startswith(f"{vcs}+"):
        url = f"{vcs}+{url}"
    return DistributionSource(
        kind="vcs",
        url=url,
        commit_id=_text(vcs_info.get("commit_id")),
        requested_revision=_text(vcs_info.get("requested_revision")),
    )


def source_from_direct_url(data: Mapping[str, Any]) -> DistributionSource:
    """The source a PEP 610 ``direct_url.json`` describes, its URL without credentials.

    Malformed content is read as far as it goes (this runs in every task process, where a broken
    file must not fail the task): whatever cannot be rebuilt shows in :func:`restore_problems`.
    """
    raw_url = _text(data.get("url"))
    url = strip_credentials(raw_url) if raw_url else None
    vcs_info = _mapping(data.get("vcs_info"))
    if vcs_info is not None:
        return _vcs_source(url, vcs_info)
    dir_info = _mapping(data.get("dir_info"))
    if dir_info is not None:
        return DistributionSource(kind="editable" if dir_info.get("editable") is True else "local", url=url)
    archive_info = _mapping(data.get("archive_info")) or {}
    is_local = url is None or _LOCAL_URL_RE.match(url) is not None
    return DistributionSource(kind="local" if is_local else "url", url=url, archive_hash=_archive_hash(archive_info))


def _describe(distribution: Distribution) -> str:
    """``2.4.6`` for an index install; otherwise the version and where it came from."""
    source = distribution.source
    if source.kind == "index":
        return distribution.version
    where = source.url or "an unrecorded location"
    if source.kind == "vcs" and source.commit_id:
        where = f"{where}@{source.commit_id}"
    if source.archive_hash:
        where = f"{where} ({source.archive_hash[:19]})"
    prefix = "editable " if source.kind == "editable" else ""
    return f"{distribution.version} {prefix}from {where}"


class EnvironmentChange(_Frozen):
    """One difference between a recorded environment and the current one."""

    kind: Literal["added", "removed", "changed", "python", "platform"]
    name: str
    recorded: str | None = None
    current: str | None = None

    @property
    def text(self) -> str:
        """``numpy 2.4.6 -> 2.5.0``, ``+ foo 1.0``, ``- bar 2.0``, ``python CPython 3.11.7 -> CPython 3.12.1``."""
        if self.kind == "added":
            return f"+ {self.name} {self.current}"
        if self.kind == "removed":
            return f"- {self.name} {self.recorded}"
        return f"{self.name} {self.recorded} -> {self.current}"


def _interpreter_changes(recorded: EnvironmentRecord, current: EnvironmentRecord) -> list[EnvironmentChange]:
    changes = []
    if (recorded.python, recorded.python_version) != (current.python, current.python_version):
        changes.append(
            EnvironmentChange(kind="python", name="python", recorded=recorded.python, current=current.python)
        )
    recorded_platform = f"{recorded.platform}/{recorded.machine}"
    current_platform = f"{current.platform}/{current.machine}"
    if recorded_platform != current_platform:
        changes.append(
            EnvironmentChange(kind="platform", name="platform", recorded=recorded_platform, current=current_platform)
        )
    return changes


def _distribution_change(name: str, old: Distribution | None, new: Distribution | None) -> EnvironmentChange | None:
    if old is None and new is not None:
        return EnvironmentChange(kind="added", name=name, current=_describe(new))
    if new is None and old is not None:
        return EnvironmentChange(kind="removed", name=name, recorded=_describe(old))
    if old is not None and new is not None and old != new:
        return EnvironmentChange(kind="changed", name=name, recorded=_describe(old), current=_describe(new))
    return None


def diff_environments(recorded: EnvironmentRecord, current: EnvironmentRecord) -> list[EnvironmentChange]:
    """What changed from ``recorded`` to ``current``: the interpreter first, then distributions by name.

    A distribution whose version stayed but whose source changed (index -> editable) is changed too.
    """
    old = {d.name: d for d in recorded.distributions if d.name not in PROVIDED_DISTRIBUTIONS}
    new = {d.name: d for d in current.distributions if d.name not in PROVIDED_DISTRIBUTIONS}
    changes = _interpreter_changes(recorded, current)
    for name in sorted(old.keys() | new.keys()):
        change = _distribution_change(name, old.get(name), new.get(name))
        if change is not None:
            changes.append(change)
    return changes


_REBUILD_HINT = "a replay cannot rebuild it; install it from an index or a VCS URL"


def distribution_problem(distribution: Distribution) -> str | None:
    """Why ``distribution`` cannot be rebuilt elsewhere, or None where it can."""
    source, label = distribution.source, f"{distribution.name} {distribution.version}"
    where = source.url or "an unrecorded location"
    if source.kind == "editable":
        return f"{label} is an editable install from {where}: {_REBUILD_HINT}"
    if source.kind == "local" or _LOCAL_URL_RE.match(where):
        return f"{label} was installed from the local path {where}: {_REBUILD_HINT}"
    if source.kind in ("url", "vcs") and source.url is None:
        return f"{label} was installed from a direct URL that was not recorded: {_REBUILD_HINT}"
    if source.kind == "vcs" and source.commit_id is None:
        return f"{label} was installed from {where} without a recorded commit: a replay cannot pin it"
    return None


def restore_problems(record: EnvironmentRecord) -> list[str]:
    """Why ``record`` cannot be rebuilt, one line per distribution; provided distributions are skipped."""
    problems = (distribution_problem(d) for d in record.distributions if d.name not in PROVIDED_DISTRIBUTIONS)
    return [p for p in problems if p is not None]


def _requirement(distribution: Distribution) -> str:
    source, name = distribution.source, distribution.name
    if source.kind == "index" or source.url is None:
        return f"{name}=={distribution.version}"
    if source.kind == "vcs":
        return f"{name} @ {source.url}@{source.commit_id}" if source.commit_id else f"{name} @ {source.url}"
    fragment = f"#{source.archive_hash}" if source.archive_hash and "#" not in source.url else ""
    return f"{name} @ {source.url}{fragment}"


def requirements_text(record: EnvironmentRecord) -> str:
    """Requirement lines (pip/uv) that rebuild ``record``, without :data:`PROVIDED_DISTRIBUTIONS`.

    ``name==version`` for an index install, ``name @ url[#sha256=...]`` for an archive URL,
    ``name @ git+url@commit`` for VCS. What :func:`restore_problems` reports (editable installs,
    local paths) is written as a direct reference too, which only holds on the machine it names:
    check that first.
    """
    lines = [_requirement(d) for d in record.distributions if d.name not in PROVIDED_DISTRIBUTIONS]
    return "".join(line + "\n" for line in lines)
