"""The environment record: distributions and their sources, diffs, restorability, the fingerprint."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_repro.core.environment import clear_caches, environment_record, fingerprint_pin
from airflow_repro.core.environment_record import (
    Distribution,
    DistributionSource,
    EnvironmentRecord,
    diff_environments,
    requirements_text,
    restore_problems,
    source_from_direct_url,
    strip_credentials,
)
from airflow_repro.errors import ManifestError
from airflow_repro.probes import installed_distribution_sources
from tests.support.wheels import install_unpacked, make_wheel

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SHA = "ab" * 32


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A site-packages folder that is the only one on ``sys.path`` (the standard library stays)."""
    folder = tmp_path / "site-packages"
    folder.mkdir()
    stdlib = [p for p in sys.path if p.startswith(sys.base_prefix) and "site-packages" not in p]
    monkeypatch.setattr(sys, "path", [str(folder), *stdlib])
    clear_caches()
    yield folder
    clear_caches()  # the next test sees the real environment again


def add_distribution(site: Path, name: str, version: str, direct_url: dict[str, Any] | bytes | None = None) -> Path:
    """A ``.dist-info`` folder as an installer leaves it; ``direct_url`` as dict (JSON) or raw bytes."""
    dist_info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    if direct_url is not None:
        data = direct_url if isinstance(direct_url, bytes) else json.dumps(direct_url).encode()
        (dist_info / "direct_url.json").write_bytes(data)
    return dist_info


def record_of(*distributions: Distribution, python: str = "CPython 3.11.7") -> EnvironmentRecord:
    return EnvironmentRecord(
        python=python,
        python_version=python.split()[1],
        platform="linux",
        machine="x86_64",
        distributions=list(distributions),
    )


def sources(record: EnvironmentRecord) -> dict[str, DistributionSource]:
    return {d.name: d.source for d in record.distributions}


# -- reading the installed environment -----------------------------------------------------------------
def test_versions_come_from_dist_info_folders_and_index_installs_serialize_small(site: Path) -> None:
    add_distribution(site, "numpy", "2.4.6")
    add_distribution(site, "scikit_learn", "1.5.0")
    (site / "legacy-0.9-py3.11.egg-info").mkdir()

    record = environment_record()

    assert [(d.name, d.version) for d in record.distributions] == [
        ("legacy", "0.9"),
        ("numpy", "2.4.6"),
        ("scikit-learn", "1.5.0"),
    ]
    assert all(d.source == DistributionSource(kind="index") for d in record.distributions)
    assert b'{"name":"numpy","version":"2.4.6"}' in record.canonical_json()
    assert record.python_version in record.python


def test_the_first_entry_on_sys_path_wins(site: Path, tmp_path: Path) -> None:
    later = tmp_path / "later"
    later.mkdir()
    add_distribution(site, "numpy", "2.4.6")
    add_distribution(later, "numpy", "1.26.0", {"url": "file:///x", "dir_info": {}})
    sys.path.append(str(later))
    clear_caches()

    assert installed_distribution_sources() == (("numpy", "2.4.6", None),)


def test_airflow_repro_is_never_recorded(site: Path) -> None:
    add_distribution(site, "airflow_repro", "0.1.0", {"url": "file:///work/main", "dir_info": {"editable": True}})
    add_distribution(site, "numpy", "2.4.6")

    assert [d.name for d in environment_record().distributions] == ["numpy"]


def test_editable_and_local_directory_installs(site: Path) -> None:
    add_distribution(site, "mypkg", "0.3", {"url": "file:///src/mypkg", "dir_info": {"editable": True}})
    add_distribution(site, "otherpkg", "1.0", {"url": "file:///src/otherpkg", "dir_info": {}})

    found = sources(environment_record())

    assert found["mypkg"] == DistributionSource(kind="editable", url="file:///src/mypkg")
    assert found["otherpkg"] == DistributionSource(kind="local", url="file:///src/otherpkg")


def test_archive_urls_lose_their_credentials_and_keep_their_hash(site: Path) -> None:
    url = "https://deploy:s3cret-pass@pkgs.example.com/packages/foo-1.0-py3-none-any.whl"
    add_distribution(site, "foo", "1.0", {"url": url, "archive_info": {"hashes": {"sha256": SHA}}})
    add_distribution(site, "bar", "2.0", {"url": "file:///wheels/bar-2.0.whl", "archive_info": {}})

    record = environment_record()

    assert sources(record)["foo"] == DistributionSource(
        kind="url", url="https://pkgs.example.com/packages/foo-1.0-py3-none-any.whl", archive_hash=f"sha256={SHA}"
    )
    assert sources(record)["bar"].kind == "local"
    assert b"s3cret" not in record.canonical_json()
    assert b"deploy" not in record.canonical_json()


def test_vcs_installs_record_the_commit(site: Path) -> None:
    add_distribution(
        site,
        "gitpkg",
        "0.1",
        {
            "url": "https://ghp_token123@github.com/org/gitpkg.git",
            "vcs_info": {"vcs": "git", "commit_id": COMMIT, "requested_revision": "main"},
        },
    )

    record = environment_record()

    assert sources(record)["gitpkg"] == DistributionSource(
        kind="vcs", url="git+https://github.com/org/gitpkg.git", commit_id=COMMIT, requested_revision="main"
    )
    assert b"ghp_token123" not in record.canonical_json()
    assert requirements_text(record) == f"gitpkg @ git+https://github.com/org/gitpkg.git@{COMMIT}\n"


@pytest.mark.parametrize(
    "data", [b"{not json", b"[1, 2]", b"", b"\xff\xfe{}"], ids=["broken", "list", "empty", "binary"]
)
def test_an_unreadable_direct_url_reads_as_an_index_install(site: Path, data: bytes) -> None:
    add_distribution(site, "numpy", "2.4.6", data)

    assert installed_distribution_sources() == (("numpy", "2.4.6", None),)
    assert environment_record().distributions == [Distribution(name="numpy", version="2.4.6")]


def test_wheels_installed_unpacked_are_found(site: Path, tmp_path: Path) -> None:
    wheel = make_wheel(tmp_path / "wheels", "reprotiny", "1.0", {"reprotiny/__init__.py": 'VERSION = "1.0"\n'})
    install_unpacked(wheel, site)

    assert [(d.name, d.version) for d in environment_record().distributions] == [("reprotiny", "1.0")]


# -- sources, credentials, requirements ---------------------------------------------------------------
@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://user:pw@host.example/simple/x.whl", "https://host.example/simple/x.whl"),
        ("https://token@host.example/x.whl", "https://host.example/x.whl"),
        ("git+https://user:p@ss@github.com/o/r.git", "git+https://github.com/o/r.git"),
        ("https://host.example/x.whl?user=a@b", "https://host.example/x.whl?user=a@b"),
        ("ssh://git@github.com/o/r.git", "ssh://git@github.com/o/r.git"),
        ("https://${USER}:${TOKEN}@host.example/x.whl", "https://${USER}:${TOKEN}@host.example/x.whl"),
        ("file:///src/pkg", "file:///src/pkg"),
    ],
)
def test_strip_credentials(url: str, expected: str) -> None:
    assert strip_credentials(url) == expected


def test_source_from_direct_url_reads_the_older_single_hash_field() -> None:
    source = source_from_direct_url({"url": "https://h/x.whl", "archive_info": {"hash": f"sha256={SHA}"}})
    assert source == DistributionSource(kind="url", url="https://h/x.whl", archive_hash=f"sha256={SHA}")


def test_requirements_text_pins_each_source_and_leaves_out_airflow_repro() -> None:
    record = record_of(
        Distribution(name="numpy", version="2.4.6"),
        Distribution(
            name="foo",
            version="1.0",
            source=DistributionSource(kind="url", url="https://h/foo-1.0.whl", archive_hash=f"sha256={SHA}"),
        ),
        Distribution(name="airflow-repro", version="0.1.0"),
    )

    assert requirements_text(record) == f"foo @ https://h/foo-1.0.whl#sha256={SHA}\nnumpy==2.4.6\n"


def test_restore_problems_name_editable_and_local_installs_and_skip_airflow_repro() -> None:
    record = record_of(
        Distribution(name="mypkg", version="0.3", source=DistributionSource(kind="editable", url="file:///src/mypkg")),
        Distribution(name="bar", version="2.0", source=DistributionSource(kind="local", url="file:///w/bar-2.0.whl")),
        Distribution(name="numpy", version="2.4.6"),
        Distribution(
            name="gitpkg",
            version="0.1",
            source=DistributionSource(kind="vcs", url="git+https://github.com/o/r.git", commit_id=COMMIT),
        ),
        Distribution(
            name="airflow-repro", version="0.1.0", source=DistributionSource(kind="editable", url="file:///work")
        ),
    )

    problems = restore_problems(record)

    assert problems == [
        "bar 2.0 was installed from the local path file:///w/bar-2.0.whl: a replay cannot rebuild it; "
        "install it from an index or a VCS URL",
        "mypkg 0.3 is an editable install from file:///src/mypkg: a replay cannot rebuild it; "
        "install it from an index or a VCS URL",
    ]


# -- diffs --------------------------------------------------------------------------------------------
def test_diff_environments_says_what_changed_python_first() -> None:
    recorded = record_of(
        Distribution(name="numpy", version="2.4.6"),
        Distribution(name="bar", version="2.0"),
        Distribution(name="same", version="1.0"),
        Distribution(name="mypkg", version="0.3"),
    )
    current = record_of(
        Distribution(name="numpy", version="2.5.0"),
        Distribution(name="foo", version="1.0"),
        Distribution(name="same", version="1.0"),
        Distribution(name="mypkg", version="0.3", source=DistributionSource(kind="editable", url="file:///src/mypkg")),
        python="CPython 3.12.1",
    )

    changes = diff_environments(recorded, current)

    assert [c.text for c in changes] == [
        "python CPython 3.11.7 -> CPython 3.12.1",
        "- bar 2.0",
        "+ foo 1.0",
        "mypkg 0.3 -> 0.3 editable from file:///src/mypkg",
        "numpy 2.4.6 -> 2.5.0",
    ]
    assert [c.kind for c in changes] == ["python", "removed", "added", "changed", "changed"]
    assert diff_environments(recorded, recorded) == []


def test_diff_environments_reports_the_platform() -> None:
    recorded = record_of()
    current = recorded.model_copy(update={"machine": "aarch64"})

    assert [c.text for c in diff_environments(recorded, current)] == ["platform linux/x86_64 -> linux/aarch64"]


# -- the fingerprint and the canonical form ------------------------------------------------------------
def test_the_fingerprint_is_the_record_digest_and_follows_versions(site: Path) -> None:
    dist_info = add_distribution(site, "numpy", "2.4.6")
    add_distribution(site, "pandas", "2.2.0")
    recorded = environment_record()
    before = fingerprint_pin()
    assert (before.kind, before.digest, before.distributions) == ("fingerprint", recorded.digest, 2)

    dist_info.rename(site / "numpy-2.5.0.dist-info")
    clear_caches()

    after = fingerprint_pin()
    assert after.digest == environment_record().digest != before.digest
    assert [c.text for c in diff_environments(recorded, environment_record())] == ["numpy 2.4.6 -> 2.5.0"]


def test_canonical_json_does_not_depend_on_the_order_of_distributions() -> None:
    numpy, pandas = Distribution(name="numpy", version="2.4.6"), Distribution(name="Pandas", version="2.2.0")

    first, second = record_of(numpy, pandas), record_of(pandas, numpy)

    assert first.canonical_json() == second.canonical_json()
    assert first.digest == second.digest
    assert first.digest.startswith("sha256:") and len(first.digest) == len("sha256:") + 64
    assert EnvironmentRecord.from_json(first.canonical_json()) == first
    assert json.loads(first.canonical_json())["distributions"][1] == {"name": "pandas", "version": "2.2.0"}


@pytest.mark.parametrize(
    "data",
    [
        b"{not json",
        b"{}",
        b'{"kind":"something-else","schema_version":"1.0","python":"CPython 3.11.7","python_version":"3.11.7",'
        b'"platform":"linux","machine":"x86_64","distributions":[]}',
        b'{"kind":"airflow-repro/environment","schema_version":"1.0","python":"CPython 3.11.7",'
        b'"python_version":"3.11.7","platform":"linux","machine":"x86_64",'
        b'"distributions":[{"name":"numpy","version":"1"},{"name":"numpy","version":"2"}]}',
        b'{"kind":"airflow-repro/environment","schema_version":"1.0","python":"CPython 3.11.7",'
        b'"python_version":"3.11.7","platform":"linux","machine":"x86_64",'
        b'"distributions":[{"name":"numpy","version":"1","source":{"kind":"ftp"}}]}',
    ],
    ids=["not-json", "empty", "wrong-kind", "duplicate", "unknown-source"],
)
def test_malformed_records_raise_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError, match="not a valid environment record"):
        EnvironmentRecord.from_json(data)
