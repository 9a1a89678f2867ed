"""Code snapshots: the DAG file's import closure inside the bundle, its digest, diff and functions."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from airflow_repro.core.code_snapshot import (
    CodeSnapshot,
    callable_source_in,
    changed_files,
    code_root,
    snapshot_code,
    snapshot_diff,
)
from airflow_repro.errors import ManifestError

DAG = """\
import json
import os.path

import helpers
import pkg.sub.thing_mod
from pkg import mod
from pkg.sub import thing
from nspkg import leaf

try:
    import optional_helper
except ImportError:
    optional_helper = None


def train(x):
    from lazy import later

    return helpers.double(later(x))


def pipeline():
    @decorate
    def train(x):
        return x + 1

    return train


class Model:
    def fit(self):
        return 1


with open(os.devnull) as dag:

    def in_with():
        return 2
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    _write(
        root,
        {
            "mydag.py": DAG,
            "helpers.py": "def double(x):\n    return 2 * x\n",
            "optional_helper.py": "X = 1\n",
            "lazy.py": "def later(x):\n    return x\n",
            "pkg/__init__.py": "",
            "pkg/mod.py": "from .rel import value\n",
            "pkg/rel.py": "value = 1\n",
            "pkg/sub/__init__.py": "from . import thing\n",
            "pkg/sub/thing.py": "from ..mod import value as v\n",
            "pkg/sub/thing_mod.py": "import broken\n",
            "broken.py": "def oops(:\n",
            "nspkg/leaf.py": "LEAF = 1\n",
            "unused.py": "import helpers\n",
            "pkg/unused_sub.py": "",
            "json.py": "SHADOW = True\n",
        },
    )
    return root


def test_the_closure_holds_every_imported_bundle_module_and_nothing_else(bundle: Path) -> None:
    snapshot = snapshot_code(bundle / "mydag.py", bundle)
    assert snapshot.dag_file == "mydag.py"
    assert sorted(snapshot.files) == [
        "broken.py",  # archived, though it does not parse
        "helpers.py",
        "lazy.py",  # imported inside a function
        "mydag.py",
        "nspkg/leaf.py",  # a namespace package's module
        "optional_helper.py",  # imported inside try
        "pkg/__init__.py",
        "pkg/mod.py",  # from pkg import mod: a submodule file
        "pkg/rel.py",  # from .rel import value, relative to pkg
        "pkg/sub/__init__.py",
        "pkg/sub/thing.py",
        "pkg/sub/thing_mod.py",
    ]
    assert snapshot.files["helpers.py"] == "def double(x):\n    return 2 * x\n"


def test_a_dag_file_in_a_subfolder_keeps_its_path_and_imports_resolve_against_the_root(tmp_path: Path) -> None:
    _write(tmp_path, {"team/dag.py": "import common.util\n", "common/util.py": "", "team/common.py": ""})
    snapshot = snapshot_code(tmp_path / "team" / "dag.py", tmp_path)
    assert sorted(snapshot.files) == ["common/util.py", "team/dag.py"]


def test_a_symlink_out_of_the_root_is_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _write(outside, {"secret.py": "TOKEN = 1\n", "pkg/__init__.py": "", "pkg/m.py": ""})
    root = tmp_path / "root"
    _write(root, {"dag.py": "import secret\nimport linked.m\nimport inner\n", "real/inner.py": "X = 1\n"})
    (root / "secret.py").symlink_to(outside / "secret.py")
    (root / "linked").symlink_to(outside / "pkg", target_is_directory=True)
    (root / "inner.py").symlink_to(root / "real" / "inner.py")  # inside the root: followed
    snapshot = snapshot_code(root / "dag.py", root)
    assert snapshot.files == {"dag.py": "import secret\nimport linked.m\nimport inner\n", "inner.py": "X = 1\n"}


def test_a_dag_file_outside_the_root_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, {"a/dag.py": "", "b/x.py": ""})
    with pytest.raises(ManifestError, match="not inside the code root"):
        snapshot_code(tmp_path / "a" / "dag.py", tmp_path / "b")


def test_the_digest_is_stable_and_follows_a_helpers_content(bundle: Path) -> None:
    first = snapshot_code(bundle / "mydag.py", bundle)
    assert snapshot_code(bundle / "mydag.py", bundle).digest == first.digest
    assert first.digest.startswith("sha256:") and len(first.digest) == len("sha256:") + 64
    assert CodeSnapshot.from_json(first.canonical_json()) == first
    (bundle / "unused.py").write_text("changed = True\n")  # not imported: no change
    assert snapshot_code(bundle / "mydag.py", bundle).digest == first.digest
    (bundle / "helpers.py").write_text("def double(x):\n    return x + x\n")
    assert snapshot_code(bundle / "mydag.py", bundle).digest != first.digest


def test_the_digest_does_not_depend_on_the_order_of_files() -> None:
    one = CodeSnapshot(dag_file="d.py", files={"d.py": "", "a.py": "x"})
    other = CodeSnapshot(dag_file="d.py", files={"a.py": "x", "d.py": ""})
    assert one.digest == other.digest
    assert one.canonical_json().startswith(b'{"dag_file":"d.py","files":{"a.py":"x","d.py":""}')


def _snapshot(**files: str) -> CodeSnapshot:
    return CodeSnapshot(dag_file="dag.py", files={"dag.py": "import helpers\n", **files})


def test_changed_files_lists_added_removed_and_changed() -> None:
    recorded = _snapshot(**{"helpers.py": "a\n", "gone.py": ""})
    current = _snapshot(**{"helpers.py": "b\n", "new.py": ""})
    assert changed_files(recorded, current) == [("gone.py", "removed"), ("helpers.py", "changed"), ("new.py", "added")]
    assert changed_files(recorded, recorded) == []


def test_the_diff_shows_the_changed_line_of_a_helper() -> None:
    recorded = _snapshot(**{"helpers.py": "def double(x):\n    return 2 * x\n"})
    current = _snapshot(**{"helpers.py": "def double(x):\n    return 3 * x\n"})
    diff = snapshot_diff(recorded, current)
    assert "--- a/helpers.py\n+++ b/helpers.py\n" in diff
    assert "-    return 2 * x\n+    return 3 * x\n" in diff
    assert snapshot_diff(recorded, recorded) == ""


def test_the_diff_of_added_files_and_files_without_a_final_newline() -> None:
    diff = snapshot_diff(_snapshot(), _snapshot(**{"new.py": "x = 1"}))
    assert diff == "--- /dev/null\n+++ b/new.py\n@@ -0,0 +1 @@\n+x = 1\n\\ No newline at end of file\n"


def test_the_diff_is_truncated_with_a_note_of_what_was_left_out() -> None:
    recorded = _snapshot(**{"helpers.py": "".join(f"line {i}\n" for i in range(100))})
    current = _snapshot(**{"helpers.py": "".join(f"LINE {i}\n" for i in range(100))})
    full = snapshot_diff(recorded, current, max_lines=10_000).splitlines()
    short = snapshot_diff(recorded, current, max_lines=10).splitlines()
    assert short[:10] == full[:10]
    assert short[10:] == [f"... {len(full) - 10} more diff lines left out"]


def test_callable_source_in_finds_functions_along_the_qualname(bundle: Path) -> None:
    snapshot = snapshot_code(bundle / "mydag.py", bundle)
    assert callable_source_in(snapshot, "train").startswith("def train(x):\n    from lazy import later\n")
    nested = callable_source_in(snapshot, "pipeline.<locals>.train")
    assert nested == "def train(x):\n    return x + 1\n"  # decorator removed, dedented
    assert callable_source_in(snapshot, "Model.fit") == "def fit(self):\n    return 1\n"
    assert callable_source_in(snapshot, "in_with") == "def in_with():\n    return 2\n"


@pytest.mark.parametrize("qualname", ["missing", "pipeline.<locals>.missing", "Model"])
def test_callable_source_in_reports_a_missing_function(bundle: Path, qualname: str) -> None:
    snapshot = snapshot_code(bundle / "mydag.py", bundle)
    with pytest.raises(ManifestError, match=f"the archived DAG file mydag.py has no function '{qualname}'"):
        callable_source_in(snapshot, qualname)


def test_the_last_definition_of_a_name_wins() -> None:
    snapshot = CodeSnapshot(dag_file="d.py", files={"d.py": "def f():\n    return 1\ndef f():\n    return 2\n"})
    assert callable_source_in(snapshot, "f") == "def f():\n    return 2\n"


def test_code_root_picks_the_first_candidate_that_holds_the_dag_file(tmp_path: Path) -> None:
    _write(tmp_path, {"bundle/dags/d.py": ""})
    dag = tmp_path / "bundle" / "dags" / "d.py"
    other = tmp_path / "other"
    assert code_root(dag, [None, "", other, tmp_path / "bundle", tmp_path]) == (tmp_path / "bundle").resolve()
    assert code_root(dag, [str(tmp_path / "bundle" / "dags")]) == (tmp_path / "bundle" / "dags").resolve()
    assert code_root(dag, [other, None]) == dag.resolve().parent


@pytest.mark.parametrize(
    "data",
    [
        b"not json",
        b'{"kind":"airflow-repro/code-snapshot","schema_version":"1.0","dag_file":"d.py"}',
        b'{"kind":"other","schema_version":"1.0","dag_file":"d.py","files":{"d.py":""}}',
        b'{"kind":"airflow-repro/code-snapshot","schema_version":"1.0","dag_file":"d.py","files":{"x.py":""}}',
        b'{"kind":"airflow-repro/code-snapshot","schema_version":"1.0","dag_file":"d.py","files":{"d.py":"","../e.py":""}}',
        b'{"kind":"airflow-repro/code-snapshot","schema_version":"1.0","dag_file":"d.py","files":{"d.py":""},"x":1}',
    ],
)
def test_malformed_json_is_a_manifest_error(data: bytes) -> None:
    with pytest.raises(ManifestError, match="not a valid code snapshot"):
        CodeSnapshot.from_json(data)


def test_a_file_that_is_not_utf8_is_a_manifest_error_naming_it(tmp_path: Path) -> None:
    _write(tmp_path, {"dag.py": "import latin\n"})
    (tmp_path / "latin.py").write_bytes("NAME = 'é'\n".encode("latin-1"))
    with pytest.raises(ManifestError, match=r"latin\.py: it is not UTF-8"):
        snapshot_code(tmp_path / "dag.py", tmp_path)


def test_the_limits_say_how_to_fix_them(bundle: Path) -> None:
    with pytest.raises(ManifestError, match="more than 3 files.*raise max_files"):
        snapshot_code(bundle / "mydag.py", bundle, max_files=3)
    with pytest.raises(ManifestError, match="larger than 100 bytes.*raise max_bytes"):
        snapshot_code(bundle / "mydag.py", bundle, max_bytes=100)


def test_scrub_source_replaces_exactly_the_literals_recorded_as_secrets() -> None:
    from airflow_repro.core.code_snapshot import scrub_source

    secrets = {"S3CRET": "M1", "https://h/x?token=TOK": "M2"}
    source = (
        'params = {"db_password": "S3CRET", "other": "S3CRET-not"}\n'
        'url = ("https://h/x?token="  # split over two lines\n'
        '       "TOK")\n'
        'label = f"{params}"\n'
        "def f():\n"
        "    return 'S3CRET'\n"
    )
    scrubbed = scrub_source(source, secrets.get)
    assert 'S3CRET"' not in scrubbed and "'S3CRET'" not in scrubbed and "TOK" not in scrubbed
    assert '"S3CRET-not"' in scrubbed and 'f"{params}"' in scrubbed, "other literals are left as they are"
    assert scrubbed.count("'M1'") == 2 and "url = ('M2')" in scrubbed
    compile(scrubbed, "<scrubbed>", "exec")  # still Python
    assert scrub_source("def broken(:\n  'S3CRET'", secrets.get).startswith("def broken")
