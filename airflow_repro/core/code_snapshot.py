"""Code snapshots: the DAG file and the bundle modules it imports, archived with each task.

A replay must run a task's code as it ran, even after the DAG file or a helper module it imports
was edited. So the recorder archives a :class:`CodeSnapshot`: the source text of the DAG file and
of every ``.py`` module of the DAG bundle (the *code root*) it imports, transitively, found
statically with :mod:`ast` (nothing is executed), as Metaflow's code package does. The snapshot is
content-addressed by the sha256 of its canonical JSON, so the same files always have the same
digest; a replay compares the archived snapshot with the current one (:func:`changed_files`,
:func:`snapshot_diff`) and, where they differ, runs the archived code
(:mod:`airflow_repro.adapters.code_restore`).

Pure: pydantic and the standard library only, no Airflow.
"""

from __future__ import annotations

import ast
import difflib
import io
import sys
import tokenize
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from airflow_repro.core.manifest import CanonicalDocument
from airflow_repro.errors import ManifestError

CODE_SNAPSHOT_KIND: Final = "airflow-repro/code-snapshot"
CODE_SNAPSHOT_SCHEMA_VERSION: Final = "1.0"
DEFAULT_MAX_FILES: Final = 500
DEFAULT_MAX_BYTES: Final = 20 * 1024 * 1024
DEFAULT_DIFF_LINES: Final = 200

__all__ = [
    "CODE_SNAPSHOT_KIND",
    "CODE_SNAPSHOT_SCHEMA_VERSION",
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_FILES",
    "CodeSnapshot",
    "callable_source_in",
    "changed_files",
    "code_root",
    "scrub_secret_literals",
    "scrub_source",
    "snapshot_code",
    "snapshot_diff",
]

ChangeKind = Literal["added", "removed", "changed"]


class CodeSnapshot(CanonicalDocument, BaseModel):
    """The archived source of a DAG file and of the bundle modules it imports.

    ``files`` maps each file's posix path, relative to the code root, to its source text; the DAG
    file (``dag_file``) is one of them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["airflow-repro/code-snapshot"] = CODE_SNAPSHOT_KIND
    schema_version: Literal["1.0"] = CODE_SNAPSHOT_SCHEMA_VERSION
    dag_file: str
    files: dict[str, str]

    @model_validator(mode="after")
    def _paths_are_safe_and_the_dag_file_is_archived(self) -> CodeSnapshot:
        # Checked on load as well as on creation: a snapshot is later written back to disk.
        for path in self.files:
            _check_relative_path(path)
        if self.dag_file not in self.files:
            raise ValueError(f"the DAG file {self.dag_file!r} is not among the snapshot's files")
        return self

    @classmethod
    def from_json(cls, data: bytes) -> CodeSnapshot:
        """Parse a stored snapshot; malformed data raises :class:`ManifestError`."""
        try:
            return cls.model_validate_json(data)
        except ValidationError as exc:
            raise ManifestError(f"not a valid code snapshot: {exc}") from exc


def _check_relative_path(path: str) -> None:
    pure = PurePosixPath(path)
    if pure.is_absolute() or not pure.parts or any(part in ("..", ".") for part in path.split("/")):
        raise ValueError(f"snapshot path {path!r} must be a relative posix path without '.' or '..'")
    if pure.suffix != ".py":
        raise ValueError(f"snapshot path {path!r} is not a .py file")


# -- the code root ---------------------------------------------------------------------------------
def code_root(dag_file: Path, candidates: Sequence[Path | str | None]) -> Path:
    """The first candidate (the bundle's path, the DAGs folder) that contains the DAG file, else its folder.

    Both are resolved, so the recording worker and the replay planner find the same root for the
    same file.
    """
    resolved = Path(dag_file).resolve()
    for candidate in candidates:
        if candidate is None or str(candidate) == "":
            continue
        folder = Path(candidate).resolve()
        if resolved.is_relative_to(folder):
            return folder
    return resolved.parent


# -- taking a snapshot -----------------------------------------------------------------------------
ModuleName = tuple[str, ...]


def snapshot_code(
    dag_file: Path, root: Path, *, max_files: int = DEFAULT_MAX_FILES, max_bytes: int = DEFAULT_MAX_BYTES
) -> CodeSnapshot:
    """The DAG file and the import closure of its modules inside ``root``, found without running them.

    Followed: ``import a.b``, ``from a import b`` (``b`` may be a submodule), relative imports, and
    ``importlib.import_module("a.b")`` with a literal name, wherever they appear in a file
    (functions, ``try`` and ``if`` blocks included). A module resolves to ``root/a/b/__init__.py``
    or ``root/a/b.py``, and the ``__init__.py`` of each package above it is archived too. Modules
    outside ``root``, standard-library names and symlinks that leave ``root`` are not followed; a
    file that does not parse is archived but not walked.
    """
    walker = _Walker(root=Path(root).resolve(), max_files=max_files, max_bytes=max_bytes)
    dag_path = walker.dag_file_path(Path(dag_file))
    walker.walk(dag_path)
    return CodeSnapshot(dag_file=dag_path, files=walker.files)


@dataclass
class _Walker:
    """Breadth-first walk of the import graph inside one code root."""

    root: Path
    max_files: int
    max_bytes: int
    files: dict[str, str] = field(default_factory=dict)
    total_bytes: int = 0

    def dag_file_path(self, dag_file: Path) -> str:
        """The DAG file's path relative to the root; it must be a ``.py`` file inside it."""
        resolved = dag_file.resolve()
        if not resolved.is_file():
            raise ManifestError(f"cannot snapshot the code of {dag_file}: no such file")
        if resolved.suffix != ".py":
            raise ManifestError(f"cannot snapshot the code of {dag_file}: only .py DAG files can be archived")
        if not resolved.is_relative_to(self.root):
            raise ManifestError(f"cannot snapshot the code of {dag_file}: it is not inside the code root {self.root}")
        return resolved.relative_to(self.root).as_posix()

    def walk(self, start: str) -> None:
        queue = deque([start])
        while queue:
            path = queue.popleft()
            if path in self.files:
                continue
            text = self._read(path)
            tree = _parse(text, path)
            if tree is None:
                continue
            package = PurePosixPath(path).parent.parts
            for module in sorted(set(_imported_modules(tree, package, text))):
                queue.extend(self._module_files(module))

    def _read(self, path: str) -> str:
        data = (self.root / path).resolve().read_bytes()
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ManifestError(
                f"cannot snapshot {self.root / path}: it is not UTF-8 ({exc.reason} at byte {exc.start}); "
                "save it as UTF-8"
            ) from exc
        self.files[path] = text
        self.total_bytes += len(data)
        self._check_limits()
        return text

    def _check_limits(self) -> None:
        if len(self.files) > self.max_files:
            raise ManifestError(
                f"the code snapshot of {self.root} would hold more than {self.max_files} files: keep "
                "vendored or generated modules out of the DAG bundle, or raise max_files"
            )
        if self.total_bytes > self.max_bytes:
            raise ManifestError(
                f"the code snapshot of {self.root} would be larger than {self.max_bytes} bytes: keep large "
                "generated modules out of the DAG bundle, or raise max_bytes"
            )

    def _module_files(self, module: ModuleName) -> list[str]:
        """The files importing ``module`` runs: each package's ``__init__.py``, then the module's own."""
        found: list[str] = []
        for depth in range(1, len(module) + 1):
            prefix = "/".join(module[:depth])
            # A package wins over a module of the same name, as in Python's own path finder.
            package_init = self._inside(prefix + "/__init__.py")
            if package_init is not None:
                found.append(package_init)
                continue
            plain_module = self._inside(prefix + ".py")
            if plain_module is not None:
                found.append(plain_module)
                break  # a plain module has no submodules
            if not self._is_folder(prefix):
                break  # not in the bundle (or not at all)
            # a folder without __init__.py: a namespace package, its submodules may be files
        return found

    def _inside(self, relative: str) -> str | None:
        """``relative`` if it is a file whose real location is inside the root (symlinks are resolved)."""
        candidate = self.root / relative
        if not candidate.is_file():
            return None
        return relative if candidate.resolve().is_relative_to(self.root) else None

    def _is_folder(self, relative: str) -> bool:
        folder = self.root / relative
        return folder.is_dir() and folder.resolve().is_relative_to(self.root)


def _parse(text: str, path: str) -> ast.Module | None:
    """The file's AST, or None where it does not parse (it is still archived, as text)."""
    try:
        return ast.parse(text.removeprefix("\ufeff"), filename=path)
    except (SyntaxError, ValueError, RecursionError):
        return None


def _imported_modules(tree: ast.Module, package: ModuleName, text: str = "") -> Iterator[ModuleName]:
    """Every module name the file may import, absolute; names in ``from m import n`` as ``m.n`` too.

    Imports are statements, so only statements are walked (a fraction of the nodes: this runs in
    every task process) unless the file calls ``import_module``, whose argument is an expression."""
    nodes = ast.walk(tree) if "import_module" in text or not text else _statements(tree.body)
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield from _absolute(alias.name)
        elif isinstance(node, ast.ImportFrom):
            yield from _from_import_modules(node, package)
        elif isinstance(node, ast.Call) and (name := _import_module_literal(node)) is not None:
            yield from _absolute(name)


def _statements(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """Every statement of ``body``, nested ones (in functions, classes, if/try/with/for) too."""
    for node in body:
        yield node
        for field_name in ("body", "orelse", "finalbody", "handlers", "cases"):
            children = getattr(node, field_name, None)
            if isinstance(children, list):
                yield from _statements([c for c in children if isinstance(c, ast.stmt)])
                for child in children:  # except handlers and match cases hold statements in their body
                    if isinstance(child, ast.ExceptHandler | ast.match_case):
                        yield from _statements(child.body)


def _absolute(dotted: str) -> Iterator[ModuleName]:
    """The module of an absolute import, unless the standard library has it."""
    module = _split(dotted)
    if not _is_stdlib(module):
        yield module


def _from_import_modules(node: ast.ImportFrom, package: ModuleName) -> Iterator[ModuleName]:
    base = _from_base(node, package)
    if base is None or (node.level == 0 and _is_stdlib(base)):
        return
    yield base
    for alias in node.names:
        if alias.name != "*":
            yield (*base, alias.name)  # a submodule, when a file of that name exists


def _from_base(node: ast.ImportFrom, package: ModuleName) -> ModuleName | None:
    """The absolute module ``from <base> import ...`` names, or None for an impossible relative import."""
    module = _split(node.module) if node.module else ()
    if node.level == 0:
        return module
    if node.level - 1 >= len(package):
        return None  # beyond the top-level package: Python refuses it too
    return (*package[: len(package) - (node.level - 1)], *module)


def _import_module_literal(node: ast.Call) -> str | None:
    """The name in ``importlib.import_module("a.b")`` / ``import_module("a.b")`` when it is a literal."""
    function = node.func
    name = function.attr if isinstance(function, ast.Attribute) else getattr(function, "id", None)
    if name != "import_module" or not node.args:
        return None
    argument = node.args[0]
    if isinstance(argument, ast.Constant) and isinstance(argument.value, str) and not argument.value.startswith("."):
        return argument.value
    return None


def _split(dotted: str) -> ModuleName:
    return tuple(dotted.split("."))


def _is_stdlib(module: ModuleName) -> bool:
    # The bundle folder comes after the standard library on a worker's sys.path, so a bundle file
    # named like a standard module never runs; archiving it would shadow the real one on restore.
    return bool(module) and module[0] in sys.stdlib_module_names


# -- comparing snapshots ---------------------------------------------------------------------------
def changed_files(recorded: CodeSnapshot, current: CodeSnapshot) -> list[tuple[str, ChangeKind]]:
    """``(path, "added" | "removed" | "changed")`` for each file that differs, sorted by path."""
    changes: list[tuple[str, ChangeKind]] = []
    for path in sorted(recorded.files.keys() | current.files.keys()):
        if path not in recorded.files:
            changes.append((path, "added"))
        elif path not in current.files:
            changes.append((path, "removed"))
        elif recorded.files[path] != current.files[path]:
            changes.append((path, "changed"))
    return changes


def snapshot_diff(recorded: CodeSnapshot, current: CodeSnapshot, *, max_lines: int = DEFAULT_DIFF_LINES) -> str:
    """A unified diff (``a/<path>`` recorded, ``b/<path>`` current) of every changed file, at most
    ``max_lines`` lines, then a line saying how many were left out."""
    lines: list[str] = []
    for path, _ in changed_files(recorded, current):
        lines.extend(_file_diff(path, recorded.files.get(path), current.files.get(path)))
    if len(lines) <= max_lines:
        return "".join(lines)
    left_out = len(lines) - max_lines
    return "".join(lines[:max_lines]) + f"... {left_out} more diff lines left out\n"


def _file_diff(path: str, before: str | None, after: str | None) -> list[str]:
    # An added or removed file is diffed against /dev/null, as git does.
    diff = difflib.unified_diff(
        _lines(before),
        _lines(after),
        fromfile=f"a/{path}" if before is not None else "/dev/null",
        tofile=f"b/{path}" if after is not None else "/dev/null",
    )
    lines: list[str] = []
    for line in diff:
        if line.endswith("\n"):
            lines.append(line)
        else:  # the file's last line has no newline: say so, as git does
            lines.extend([line + "\n", "\\ No newline at end of file\n"])
    return lines


def _lines(text: str | None) -> list[str]:
    return [] if text is None else text.splitlines(keepends=True)


# -- the archived function -------------------------------------------------------------------------
_Definition = ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def callable_source_in(snapshot: CodeSnapshot, qualname: str) -> str:
    """The source of function ``qualname`` in the archived DAG file, decorators removed, dedented.

    ``qualname`` is Python's: ``train``, ``Class.method``, or ``pipeline.<locals>.train`` for a task
    defined inside a ``@dag`` function; ``<locals>`` segments are skipped.
    """
    tree = _parse(snapshot.files[snapshot.dag_file], snapshot.dag_file)
    if tree is None:
        raise ManifestError(f"the archived DAG file {snapshot.dag_file} does not parse")
    node = _find_definition(tree.body, [part for part in qualname.split(".") if part != "<locals>"])
    if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        raise ManifestError(f"the archived DAG file {snapshot.dag_file} has no function {qualname!r}")
    node.decorator_list = []
    return ast.unparse(node) + "\n"


def _find_definition(body: list[ast.stmt], path: list[str]) -> _Definition | None:
    node: _Definition | None = None
    for name in path:
        # The last definition of a name is the one Python keeps.
        matches = [definition for definition in _definitions(body) if definition.name == name]
        if not matches:
            return None
        node = matches[-1]
        body = node.body
    return node


def _definitions(body: list[ast.stmt]) -> Iterator[_Definition]:
    """Functions and classes defined in ``body``, also inside ``with``, ``if`` and ``try`` blocks."""
    for statement in body:
        if isinstance(statement, _Definition):
            yield statement
        elif isinstance(statement, ast.With | ast.AsyncWith):
            yield from _definitions(statement.body)
        elif isinstance(statement, ast.If):
            yield from _definitions(statement.body)
            yield from _definitions(statement.orelse)
        elif isinstance(statement, ast.Try | ast.TryStar):
            for block in (statement.body, *(handler.body for handler in statement.handlers)):
                yield from _definitions(block)
            yield from _definitions(statement.orelse)
            yield from _definitions(statement.finalbody)


# -- secrets in the source ---------------------------------------------------------------------------
def scrub_source(text: str, secret_marker: Callable[[str], str | None]) -> str:
    """``text`` with every plain string literal that ``secret_marker`` maps to a marker replaced by
    that marker's literal (adjacent literals, which Python concatenates, are tried as one value).
    A DAG file that hard-codes a secret (a params default, a URL with a token) must not put it in
    the archive; only values recorded as secrets are known as such. A file that does not tokenize
    is returned as it is."""
    try:
        groups = _string_groups(text)
    except (tokenize.TokenError, SyntaxError):
        return text
    replacements = []
    for group in groups:
        for first, last in ((0, len(group) - 1), *((i, i) for i in range(len(group)))):
            value = _literal_value(group[first : last + 1])
            marker = secret_marker(value) if value is not None else None
            if marker is not None:
                replacements.append((group[first].start, group[last].end, repr(marker)))
                break
    lines = text.splitlines(keepends=True)
    for (start_row, start_col), (end_row, end_col), new in sorted(replacements, reverse=True):
        head = lines[start_row - 1][:start_col]
        tail = lines[end_row - 1][end_col:]
        lines[start_row - 1 : end_row] = [head + new + tail]
    return "".join(lines)


def _string_groups(text: str) -> list[list[tokenize.TokenInfo]]:
    """Runs of STRING tokens with only line breaks or comments between them."""
    groups: list[list[tokenize.TokenInfo]] = []
    current: list[tokenize.TokenInfo] = []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.STRING:
            current.append(token)
        elif token.type not in (tokenize.NL, tokenize.COMMENT) and current:
            groups.append(current)
            current = []
    if current:
        groups.append(current)
    return groups


def _literal_value(tokens: list[tokenize.TokenInfo]) -> str | None:
    try:
        value = ast.literal_eval(" ".join(t.string for t in tokens))
    except (ValueError, SyntaxError):  # f-strings and the like: no single value
        return None
    return value if isinstance(value, str) else None


def scrub_secret_literals(snapshot: CodeSnapshot, secret_marker: Callable[[str], str | None]) -> CodeSnapshot:
    """The snapshot with :func:`scrub_source` applied to every file (itself where nothing changes)."""
    files = {path: scrub_source(text, secret_marker) for path, text in snapshot.files.items()}
    return snapshot if files == snapshot.files else snapshot.model_copy(update={"files": files})
