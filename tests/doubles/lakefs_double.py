"""An in-process HTTP double of lakeFS, validated against lakeFS's own OpenAPI spec.

No lakeFS server can be had on these machines, so the adapter is tested through the real SDK
against this double. It implements the routes the adapter uses with lakeFS's semantics: commit ids
are 64-hex hashes of the commit, branches have a staging area read through the branch ref, tags,
two-dot diffs, squash merges with three-way conflict detection, object user metadata, and errors
shaped ``{"message": ...}`` with lakeFS's status codes (404, 409, 410 for collected data, 401).

Behaviour follows the lakeFS server's source (treeverse/lakeFS v1.84; the facts and their line numbers
are in ``shared/notes/lakefs-server-behaviour.md``), not only its spec:

* every merge commit's metadata gets ``.lakefs.merge.strategy`` (``graveler.go`` Merge), squash too;
* a merge is "no changes" only when the source's tree equals the merge base's
  (``committed/manager.go`` Merge): re-merging a squash-merged branch lands a second, empty commit;
* ``statObject`` is metadata only and never answers 410 (``entry.Expired`` is always false); a GET of
  collected data answers 410 "No data";
* a branch and a tag may not share a name (409 "conflict found"); a storage namespace holding a
  repository, even a deleted one, is refused with 400 "storage namespace already in use";
* a failed pre-commit/pre-merge hook answers 412 naming the hook; a merge conflict's 409 body is
  ``{"reference": ""}`` with no ``message``; deleting the default branch, writing to a protected
  branch or a read-only repository answer 403; object paths over 1024 bytes 400; a repository being
  deleted 410;
* hidden branches are listed only with ``show_hidden=true``.

Every request received and every response sent is validated against ``swagger.yml`` (OpenAPI 3.0)
with openapi-core; a failure is recorded in :attr:`LakeFSDouble.violations` (the fixture fails the
test on any) and the request is answered 500 so the adapter cannot silently rely on it.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

API = "/api/v1"
ACCESS_KEY_ID = "AKIAIOSFOLQUICKSTART"  # lakeFS quickstart dev keys: test-only, not secrets
SECRET_ACCESS_KEY = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
COMMIT_ID_RE = re.compile(r"^[0-9a-f]{64}$")


# --------------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------------


@dataclass
class Entry:
    path: str
    physical_address: str
    checksum: str
    size: int
    mtime: int
    metadata: dict[str, str]
    content_type: str = "application/octet-stream"

    def stats(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "path_type": "object",
            "physical_address": self.physical_address,
            "checksum": self.checksum,
            "size_bytes": self.size,
            "mtime": self.mtime,
            "metadata": dict(self.metadata),
            "content_type": self.content_type,
        }


@dataclass
class CommitRecord:
    id: str
    parents: list[str]
    committer: str
    message: str
    creation_date: int
    metadata: dict[str, str]
    tree: dict[str, Entry]
    meta_range_id: str

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "parents": list(self.parents),
            "committer": self.committer,
            "message": self.message,
            "creation_date": self.creation_date,
            "meta_range_id": self.meta_range_id,
            "metadata": dict(self.metadata),
            "generation": 1,
            "version": 1,
        }


@dataclass
class Branch:
    head: str
    staging: dict[str, Entry | None] = field(default_factory=dict)  # None: a tombstone
    hidden: bool = False


@dataclass
class Repo:
    id: str
    storage_namespace: str
    default_branch: str
    creation_date: int
    read_only: bool = False
    deleting: bool = False  # lakeFS's "repository in deletion" state: every request answers 410
    protected: list[str] = field(default_factory=list)  # branch protection patterns (fnmatch)
    commits: dict[str, CommitRecord] = field(default_factory=dict)
    branches: dict[str, Branch] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "creation_date": self.creation_date,
            "default_branch": self.default_branch,
            "storage_namespace": self.storage_namespace,
            "read_only": self.read_only,
        }


class LakeFSError(Exception):
    def __init__(self, status: int, message: str, body: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.body = body if body is not None else {"message": message}


MAX_PATH_LENGTH = 1024  # pkg/catalog/validate.go MaxPathLength (bytes)
MERGE_STRATEGY_KEY = ".lakefs.merge.strategy"  # pkg/graveler/graveler.go MergeStrategyMetadataKey


def _tree_id(tree: dict[str, Entry]) -> str:
    return hashlib.sha256(json.dumps(sorted((p, e.checksum) for p, e in tree.items())).encode()).hexdigest()


def _paged(items: list[Any], request: Request, key: Callable[[Any], str]) -> dict[str, Any]:
    after = request.query_params.get("after", "")
    amount = int(request.query_params.get("amount", "100"))
    amount = 1000 if amount < 0 else min(amount, 1000)
    rest = [i for i in items if key(i) > after]
    page = rest[:amount]
    has_more = len(rest) > amount
    return {
        "pagination": {
            "has_more": has_more,
            "next_offset": key(page[-1]) if has_more else "",
            "results": len(page),
            "max_per_page": 1000,
        },
        "results": page,
    }


# --------------------------------------------------------------------------------------------
# The double
# --------------------------------------------------------------------------------------------


class LakeFSDouble:
    """lakeFS semantics in memory; ``app`` is the Starlette app, ``serve()`` runs it in a thread."""

    def __init__(self, spec_path: Path | None) -> None:
        self.repos: dict[str, Repo] = {}
        self.blobs: dict[str, bytes] = {}
        self.gone: set[str] = set()  # physical addresses whose data "GC" deleted
        # Storage namespaces that hold a repository's ``_lakefs/dummy``: kept after the repository
        # is deleted, as lakeFS leaves the data in place.
        self.namespaces: set[str] = set()
        # Hooks (lakeFS actions) that fail: event ("pre-commit", "pre-merge") -> the action's error.
        self.failing_hooks: dict[str, str] = {}
        # Repositories another creator is half-way through making (namespace claimed, catalog entry
        # not yet written): name -> (the repository, requests to go before it appears).
        self._racing: dict[str, tuple[Repo, int]] = {}
        self._hook_runs = 0
        self.violations: list[str] = []
        self.requests: list[tuple[str, str]] = []
        # Injected faults: (where, status, message); ``where`` is a regular expression searched in
        # "<METHOD> <path>" (a plain path substring such as "/merge/" works too). ``fail_next`` answers
        # instead of handling the request; ``lose_answer`` handles it, then answers with the error (a
        # lost response).
        self.fail_next: list[tuple[Any, ...]] = []  # (where, status, message[, body])
        self.lose_answer: list[tuple[Any, ...]] = []
        self.lock = threading.Lock()
        self._openapi = None
        if spec_path is not None:
            from openapi_core import OpenAPI

            self._openapi = OpenAPI.from_file_path(str(spec_path))
        self.app = Starlette(routes=self._routes())
        self.url = ""
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._clock = int(time.time())

    # ---- test controls -----------------------------------------------------------------------

    def reset(self) -> None:
        """Forget every repository (between tests sharing one server)."""
        with self.lock:
            self.repos.clear()
            self.blobs.clear()
            self.gone.clear()
            self.namespaces.clear()
            self.failing_hooks.clear()
            self._racing.clear()
            self.violations.clear()
            self.requests.clear()
            self.fail_next.clear()
            self.lose_answer.clear()

    def collect_garbage(self, repository: str, ref: str, path: str) -> None:
        """Delete the data behind ``path`` at ``ref`` like lakeFS GC: reads then answer 410."""
        with self.lock:
            repo = self.repos[repository]
            entry = self._read_tree(repo, ref)[path]
            self.gone.add(entry.physical_address)

    def race_repository_creation(self, name: str, storage_namespace: str, *, appears_after: int = 1) -> None:
        """Another creator of ``name`` got as far as claiming ``storage_namespace``: its repository
        appears after ``appears_after`` more requests (the window on a real server between
        ``ensureStorageNamespace`` and the catalog entry, in which a second creator gets 400)."""
        with self.lock:
            repo = Repo(id=name, storage_namespace=storage_namespace, default_branch="main", creation_date=self._clock)
            initial = self._new_commit(repo, [], {}, "Repository created", {})
            repo.branches["main"] = Branch(head=initial.id)
            self.namespaces.add(storage_namespace)
            self._racing[name] = (repo, appears_after)

    def start_deleting(self, repository: str) -> None:
        """Put ``repository`` in lakeFS's "in deletion" state: every request on it answers 410."""
        with self.lock:
            self.repos[repository].deleting = True

    def _advance_races(self) -> None:
        for name, (repo, remaining) in list(self._racing.items()):
            if remaining <= 1:
                del self._racing[name]
                self.repos.setdefault(name, repo)
            else:
                self._racing[name] = (repo, remaining - 1)

    # ---- serving -----------------------------------------------------------------------------

    def serve(self) -> str:
        import uvicorn

        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        config = uvicorn.Config(self.app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="lakefs-double", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the lakeFS double did not start within 10 s")
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
            assert self._thread is not None
            self._thread.join(10)

    # ---- HTTP plumbing -----------------------------------------------------------------------

    def _routes(self) -> list[Route]:
        r = f"{API}/repositories/{{repository}}"
        table: list[tuple[str, str, Callable[..., Any]]] = [
            (f"{API}/healthcheck", "GET", self.healthcheck),
            (f"{API}/repositories", "GET", self.list_repositories),
            (f"{API}/repositories", "POST", self.create_repository),
            (r, "GET", self.get_repository),
            (r, "DELETE", self.delete_repository),
            (f"{r}/branches", "GET", self.list_branches),
            (f"{r}/branches", "POST", self.create_branch),
            (f"{r}/branches/{{branch}}", "GET", self.get_branch),
            (f"{r}/branches/{{branch}}", "DELETE", self.delete_branch),
            (f"{r}/branches/{{branch}}/commits", "POST", self.commit),
            (f"{r}/branches/{{branch}}/objects", "POST", self.upload_object),
            (f"{r}/branches/{{branch}}/objects", "DELETE", self.delete_object),
            (f"{r}/commits/{{commitId}}", "GET", self.get_commit),
            (f"{r}/refs/{{ref}}/commits", "GET", self.log_commits),
            (f"{r}/refs/{{ref}}/objects", "GET", self.get_object),
            (f"{r}/refs/{{ref}}/objects/stat", "GET", self.stat_object),
            (f"{r}/refs/{{ref}}/objects/ls", "GET", self.list_objects),
            (f"{r}/refs/{{leftRef}}/diff/{{rightRef}}", "GET", self.diff_refs),
            (f"{r}/refs/{{sourceRef}}/merge/{{destinationBranch}}", "POST", self.merge),
            (f"{r}/tags", "GET", self.list_tags),
            (f"{r}/tags", "POST", self.create_tag),
            (f"{r}/tags/{{tag}}", "GET", self.get_tag),
        ]
        return [Route(path, self._endpoint(handler), methods=[method]) for path, method, handler in table]

    def _endpoint(self, handler: Callable[..., Any]) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            body = await request.body()
            self.requests.append((request.method, request.url.path))
            self._validate_request(request, body)
            try:
                if not self._authorized(request):
                    raise LakeFSError(401, "error authenticating request")
                if fault := self._take_fault(self.fail_next, request):
                    raise LakeFSError(*fault)
                with self.lock:
                    try:
                        response = handler(request, body)
                    finally:
                        self._advance_races()
                if fault := self._take_fault(self.lose_answer, request):
                    raise LakeFSError(*fault)
            except LakeFSError as exc:
                response = _json(exc.status, exc.body)
            return self._validate_response(request, body, response)

        return endpoint

    @staticmethod
    def _take_fault(faults: list[tuple[Any, ...]], request: Request) -> tuple[Any, ...] | None:
        """``(status, message[, body])`` of the first fault whose pattern matches the request."""
        target = f"{request.method} {request.url.path}"
        for index, (where, *answer) in enumerate(faults):
            if re.search(where, target):
                del faults[index]
                return tuple(answer)
        return None

    @staticmethod
    def _authorized(request: Request) -> bool:
        expected = base64.b64encode(f"{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}".encode()).decode()
        return request.headers.get("authorization") == f"Basic {expected}"

    def _mock_request(self, request: Request, body: bytes) -> Any:
        from openapi_core.testing import MockRequest
        from werkzeug.datastructures import MultiDict

        content_type = request.headers.get("content-type", "application/json").split(";")[0]
        req = MockRequest(
            f"{request.url.scheme}://{request.url.netloc}",
            request.method,
            request.url.path,
            headers=dict(request.headers),
            data=body,
            content_type=content_type,
        )
        req.parameters.query = MultiDict(list(request.query_params.multi_items()))  # type: ignore[assignment]
        return req

    def _validate_request(self, request: Request, body: bytes) -> None:
        if self._openapi is None:
            return
        try:
            self._openapi.validate_request(self._mock_request(request, body))
        except Exception as exc:  # noqa: BLE001 - openapi-core raises a family of errors; each is a violation
            self.violations.append(f"request {request.method} {request.url.path}?{request.url.query}: {_explain(exc)}")

    def _validate_response(self, request: Request, body: bytes, response: Response) -> Response:
        if self._openapi is None:
            return response
        if response.media_type == "application/octet-stream" and not response.body:
            return response  # an empty object's content: openapi-core calls an empty body "missing data"
        from openapi_core.testing import MockResponse

        content_type = (response.media_type or "application/json").split(";")[0]
        mock = MockResponse(
            bytes(response.body),
            status_code=response.status_code,
            headers=dict(response.headers),
            content_type=content_type,
        )
        try:
            self._openapi.validate_response(self._mock_request(request, body), mock)
        except Exception as exc:  # noqa: BLE001 - as above, for responses
            self.violations.append(
                f"response {response.status_code} to {request.method} {request.url.path}: {_explain(exc)}"
            )
            return _json(500, {"message": "the double's response violates swagger.yml"})
        return response

    # ---- lookups -----------------------------------------------------------------------------

    def _repo(self, request: Request) -> Repo:
        name = request.path_params["repository"]
        repo = self.repos.get(name)
        if repo is None:
            raise LakeFSError(404, f"repository not found: {name}")
        if repo.deleting:
            raise LakeFSError(410, "repository in deletion")
        return repo

    def _writable(self, repo: Repo, branch: str, action: str = "write") -> None:
        """403 as graveler answers a write to a read-only repository or a protected branch."""
        if repo.read_only:
            raise LakeFSError(403, "read-only repository")
        if any(fnmatch.fnmatchcase(branch, pattern) for pattern in repo.protected):
            raise LakeFSError(403, f"cannot {action} to protected branch")

    def _run_hook(self, event: str, branch: str) -> None:
        """A failing lakeFS action aborts the operation with 412 (``actions.ErrActionFailed``)."""
        if event not in self.failing_hooks:
            return
        self._hook_runs += 1
        run_id = f"{self._clock:x}{self._hook_runs:04d}"
        raise LakeFSError(
            412,
            f"update branch {branch}: {event} hook aborted, run id '{run_id}': 1 error occurred:\n\t* hook run id "
            f"'{run_id}_0000' failed on action 'checks' hook 'validate': action failed: {self.failing_hooks[event]}\n\n",
        )

    @staticmethod
    def _path(request: Request) -> str:
        path = request.query_params["path"]
        if len(path.encode()) > MAX_PATH_LENGTH:
            raise LakeFSError(
                400, f"path: invalid value: {len(path.encode())} is above maximum length ({MAX_PATH_LENGTH})"
            )
        return path

    def _branch(self, repo: Repo, name: str) -> Branch:
        if not re.fullmatch(r"\w[-\w]*", name):
            raise LakeFSError(400, f"branch/ref: invalid value: validation error: {name}")
        branch = repo.branches.get(name)
        if branch is None:
            raise LakeFSError(404, f"branch not found: {name}")
        return branch

    @staticmethod
    def _resolve(repo: Repo, ref: str) -> str:
        """lakeFS's order: full commit id, branch, tag, then a commit-id prefix."""
        if COMMIT_ID_RE.match(ref) and ref in repo.commits:
            return ref
        if ref in repo.branches:
            return repo.branches[ref].head
        if ref in repo.tags:
            return repo.tags[ref]
        matches = [c for c in repo.commits if re.fullmatch(r"[0-9a-f]{6,63}", ref) and c.startswith(ref)]
        if len(matches) == 1:
            return matches[0]
        raise LakeFSError(404, f"ref {ref}: not found")

    def _read_tree(self, repo: Repo, ref: str) -> dict[str, Entry]:
        """A branch reads through its staging area; any other ref reads its commit."""
        tree = dict(repo.commits[self._resolve(repo, ref)].tree)
        if ref in repo.branches and not COMMIT_ID_RE.match(ref):
            for path, entry in repo.branches[ref].staging.items():
                if entry is None:
                    tree.pop(path, None)
                else:
                    tree[path] = entry
        return tree

    def _entry(self, repo: Repo, ref: str, path: str) -> Entry:
        """The entry only: metadata outlives garbage collection (``Expired`` is never set)."""
        entry = self._read_tree(repo, ref).get(path)
        if entry is None:
            raise LakeFSError(404, f"{path}: not found")
        return entry

    def _new_commit(
        self, repo: Repo, parents: list[str], tree: dict[str, Entry], message: str, metadata: dict[str, str]
    ) -> CommitRecord:
        self._clock += 1
        meta_range = _tree_id(tree)
        identity = json.dumps(["admin", message, meta_range, self._clock, sorted(metadata.items()), parents])
        record = CommitRecord(
            id=hashlib.sha256(identity.encode()).hexdigest(),
            parents=parents,
            committer="admin",
            message=message,
            creation_date=self._clock,
            metadata=metadata,
            tree=tree,
            meta_range_id=meta_range,
        )
        repo.commits[record.id] = record
        return record

    # ---- handlers: server and repositories ---------------------------------------------------

    def healthcheck(self, request: Request, body: bytes) -> Response:
        return Response(status_code=204)

    def list_repositories(self, request: Request, body: bytes) -> Response:
        repos = sorted(self.repos.values(), key=lambda r: r.id)
        return _json(200, _paged([r.body() for r in repos], request, lambda r: r["id"]))

    def create_repository(self, request: Request, body: bytes) -> Response:
        data = json.loads(body)
        name = data["name"]
        if name in self.repos:
            raise LakeFSError(409, "error creating repository: not unique")
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]{2,62}", name):
            raise LakeFSError(400, f"repository: invalid value: validation error: {name}")
        namespace = data["storage_namespace"]
        if namespace in self.namespaces and not data.get("read_only"):  # ensureStorageNamespace found _lakefs/dummy
            raise LakeFSError(
                400,
                f"failed to create repository: found lakeFS objects in the storage (:{namespace}) "
                "key(_lakefs/dummy): storage namespace already in use",
            )
        self._clock += 1
        repo = Repo(
            id=name,
            storage_namespace=namespace,
            default_branch=data.get("default_branch", "main"),
            creation_date=self._clock,
            read_only=bool(data.get("read_only")),
        )
        initial = self._new_commit(repo, [], {}, "Repository created", {})
        repo.branches[repo.default_branch] = Branch(head=initial.id)
        self.namespaces.add(namespace)
        self.repos[name] = repo
        return _json(201, repo.body())

    def delete_repository(self, request: Request, body: bytes) -> Response:
        """Deletes the repository; its storage namespace stays in use (lakeFS leaves the data)."""
        del self.repos[self._repo(request).id]
        return Response(status_code=204)

    def get_repository(self, request: Request, body: bytes) -> Response:
        return _json(200, self._repo(request).body())

    # ---- handlers: branches, tags, commits ---------------------------------------------------

    def list_branches(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        show_hidden = request.query_params.get("show_hidden") in ("true", "True")
        prefix = request.query_params.get("prefix", "")
        refs = [
            {"id": n, "commit_id": b.head}
            for n, b in sorted(repo.branches.items())
            if n.startswith(prefix) and (show_hidden or not b.hidden)
        ]
        return _json(200, _paged(refs, request, lambda r: r["id"]))

    def create_branch(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        data = json.loads(body)
        name = data["name"]
        if not re.fullmatch(r"\w[-\w]*", name):
            raise LakeFSError(400, f"branch: invalid value: validation error: {name}")
        if name in repo.tags:  # catalog.go CreateBranch: no branch named like a tag
            raise LakeFSError(409, f"tag ID {name}: conflict found")
        if name in repo.branches:
            raise LakeFSError(409, "branch already exists: not unique")
        commit_id = self._resolve(repo, data["source"])
        repo.branches[name] = Branch(head=commit_id, hidden=bool(data.get("hidden")))
        return Response(commit_id, status_code=201, media_type="text/html")

    def get_branch(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        name = request.path_params["branch"]
        return _json(200, {"id": name, "commit_id": self._branch(repo, name).head})

    def delete_branch(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        name = request.path_params["branch"]
        self._branch(repo, name)
        if name == repo.default_branch:
            raise LakeFSError(403, "cannot delete repository default branch")
        if repo.read_only:
            raise LakeFSError(403, "read-only repository")
        del repo.branches[name]
        return Response(status_code=204)

    def commit(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        name = request.path_params["branch"]
        branch = self._branch(repo, name)
        self._writable(repo, name, "commit")
        data = json.loads(body)
        if not branch.staging and not data.get("allow_empty"):
            raise LakeFSError(400, "commit: no changes")
        self._run_hook("pre-commit", name)
        tree = self._read_tree(repo, name)
        record = self._new_commit(repo, [branch.head], tree, data["message"], dict(data.get("metadata") or {}))
        branch.head, branch.staging = record.id, {}
        return _json(201, record.body())

    def get_commit(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        return _json(200, repo.commits[self._resolve(repo, request.path_params["commitId"])].body())

    def log_commits(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        chain, next_id = [], self._resolve(repo, request.path_params["ref"])
        while next_id is not None:  # first parents only (all the adapter asks for)
            record = repo.commits[next_id]
            chain.append(record.body())
            next_id = record.parents[0] if record.parents else None
        order = {c["id"]: f"{i:012d}" for i, c in enumerate(chain)}
        after = request.query_params.get("after", "")
        rest = chain[int(order[after]) + 1 :] if after in order else chain
        amount = min(int(request.query_params.get("amount", "100")), 1000)
        page, has_more = rest[:amount], len(rest) > amount
        return _json(
            200,
            {
                "pagination": {
                    "has_more": has_more,
                    "next_offset": page[-1]["id"] if has_more else "",
                    "results": len(page),
                    "max_per_page": 1000,
                },
                "results": page,
            },
        )

    def list_tags(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        refs = [{"id": t, "commit_id": c} for t, c in sorted(repo.tags.items())]
        return _json(200, _paged(refs, request, lambda r: r["id"]))

    def create_tag(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        data = json.loads(body)
        if data["id"] in repo.branches:  # catalog.go CreateTag: no tag named like a branch
            raise LakeFSError(409, f"branch name {data['id']}: conflict found")
        if data["id"] in repo.tags:
            raise LakeFSError(409, "tag already exists: not unique")
        repo.tags[data["id"]] = commit_id = self._resolve(repo, data["ref"])
        return _json(201, {"id": data["id"], "commit_id": commit_id})

    def get_tag(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        tag = request.path_params["tag"]
        if tag not in repo.tags:
            raise LakeFSError(404, f"tag not found: {tag}")
        return _json(200, {"id": tag, "commit_id": repo.tags[tag]})

    # ---- handlers: objects -------------------------------------------------------------------

    def upload_object(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        branch = self._branch(repo, request.path_params["branch"])
        path = self._path(request)
        self._writable(repo, request.path_params["branch"])
        address = f"{repo.storage_namespace}/data/{hashlib.sha256(f'{path}{time.time_ns()}'.encode()).hexdigest()}"
        self.blobs[address] = body
        self._clock += 1
        metadata = {k[len("x-lakefs-meta-") :]: v for k, v in request.headers.items() if k.startswith("x-lakefs-meta-")}
        entry = Entry(
            path=path,
            physical_address=address,
            checksum=hashlib.md5(body).hexdigest(),
            size=len(body),
            mtime=self._clock,
            metadata=metadata,
            content_type=request.headers.get("content-type", "application/octet-stream"),
        )
        branch.staging[path] = entry
        return _json(201, entry.stats())

    def delete_object(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        name = request.path_params["branch"]
        branch = self._branch(repo, name)
        path = self._path(request)
        self._writable(repo, name)
        if path not in self._read_tree(repo, name):
            raise LakeFSError(404, f"{path}: not found")
        if path in repo.commits[branch.head].tree:
            branch.staging[path] = None
        else:
            branch.staging.pop(path, None)
        return Response(status_code=204)

    def stat_object(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        return _json(200, self._entry(repo, request.path_params["ref"], self._path(request)).stats())

    def list_objects(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        prefix = request.query_params.get("prefix", "")
        tree = self._read_tree(repo, request.path_params["ref"])
        stats = [e.stats() for p, e in sorted(tree.items()) if p.startswith(prefix)]
        return _json(200, _paged(stats, request, lambda s: s["path"]))

    def get_object(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        entry = self._entry(repo, request.path_params["ref"], self._path(request))
        headers = {"ETag": f'"{entry.checksum}"', "Last-Modified": "Thu, 01 Jan 1970 00:00:00 GMT"}
        match = re.fullmatch(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        if match is not None and int(match.group(1)) >= entry.size:  # the range is checked before the data
            return Response(
                json.dumps({"message": "Requested Range Not Satisfiable"}),
                status_code=416,
                media_type="application/json",
                headers={"Content-Range": f"bytes */{entry.size}"},
            )
        if entry.physical_address in self.gone:  # block.ErrDataNotFound
            raise LakeFSError(410, "No data")
        data = self.blobs[entry.physical_address]
        if match is None:
            return Response(data, status_code=200, media_type="application/octet-stream", headers=headers)
        start = int(match.group(1))
        end = min(int(match.group(2)) if match.group(2) else len(data) - 1, len(data) - 1)
        # swagger.yml declares Content-Range as '^bytes=((\d*-\d*,? ?)+)$' (no total size), while a
        # real server sends RFC 9110's 'bytes a-b/size'. The double follows the spec; the SDK copes
        # with both (without the size it reads until lakeFS answers 416).
        headers["Content-Range"] = f"bytes={start}-{end}"
        return Response(data[start : end + 1], status_code=206, media_type="application/octet-stream", headers=headers)

    # ---- handlers: diff and merge ------------------------------------------------------------

    def diff_refs(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        if request.query_params.get("type", "three_dot") != "two_dot":
            raise LakeFSError(400, "the double implements two_dot diffs only")
        left = repo.commits[self._resolve(repo, request.path_params["leftRef"])].tree
        right = repo.commits[self._resolve(repo, request.path_params["rightRef"])].tree
        prefix = request.query_params.get("prefix", "")
        diffs = []
        for path in sorted(p for p in left.keys() | right.keys() if p.startswith(prefix)):
            before, after = left.get(path), right.get(path)
            if before is None:
                kind = "added"
            elif after is None:
                kind = "removed"
            elif before.checksum != after.checksum:
                kind = "changed"
            else:
                continue
            size = (after or before).size  # type: ignore[union-attr]
            diffs.append({"type": kind, "path": path, "path_type": "object", "size_bytes": size})
        return _json(200, _paged(diffs, request, lambda d: d["path"]))

    def merge(self, request: Request, body: bytes) -> Response:
        repo = self._repo(request)
        dest_name = request.path_params["destinationBranch"]
        dest = self._branch(repo, dest_name)
        if repo.read_only:
            raise LakeFSError(403, "read-only repository")
        if dest.staging:
            raise LakeFSError(400, f"update branch {dest_name}: uncommitted changes (dirty branch)")
        source = self._resolve(repo, request.path_params["sourceRef"])
        data = json.loads(body) if body else {}
        base = self._merge_base(repo, source, dest.head)
        base_tree, source_tree = repo.commits[base].meta_range_id, repo.commits[source].meta_range_id
        if source_tree == base_tree and not (data.get("allow_empty") or data.get("force")):
            raise LakeFSError(400, f"update branch {dest_name}: no changes")  # only the source is compared
        tree = self._three_way(repo.commits[base].tree, repo.commits[source].tree, repo.commits[dest.head].tree)
        parents = [dest.head] if data.get("squash_merge") else [dest.head, source]
        message = data.get("message") or f"Merge '{request.path_params['sourceRef']}' into '{dest_name}'"
        strategy = {"dest-wins": "dest-wins", "source-wins": "source-wins"}.get(data.get("strategy") or "", "default")
        metadata = {**(data.get("metadata") or {}), MERGE_STRATEGY_KEY: strategy}
        self._run_hook("pre-merge", dest_name)
        record = self._new_commit(repo, parents, tree, message, metadata)
        dest.head = record.id
        return _json(200, {"reference": record.id})

    @staticmethod
    def _ancestors(repo: Repo, commit_id: str) -> list[str]:
        seen, queue = [], [commit_id]
        while queue:
            current = queue.pop(0)
            if current not in seen:
                seen.append(current)
                queue.extend(repo.commits[current].parents)
        return seen

    def _merge_base(self, repo: Repo, left: str, right: str) -> str:
        right_side = set(self._ancestors(repo, right))
        return next(c for c in self._ancestors(repo, left) if c in right_side)

    @staticmethod
    def _three_way(base: dict[str, Entry], source: dict[str, Entry], dest: dict[str, Entry]) -> dict[str, Entry]:
        def key(entry: Entry | None) -> str | None:
            return entry.checksum if entry else None

        merged = dict(dest)
        for path in base.keys() | source.keys():
            if key(source.get(path)) == key(base.get(path)):
                continue  # unchanged on the source side
            if key(dest.get(path)) not in (key(base.get(path)), key(source.get(path))):
                # MergeIntoBranch writes a MergeResult with an empty reference, not an Error
                raise LakeFSError(409, "conflict found", body={"reference": ""})
            if path in source:
                merged[path] = source[path]
            else:
                merged.pop(path, None)
        return merged


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def _explain(exc: Exception) -> str:
    details = [str(exc)]
    for attr in ("schema_errors", "errors"):
        details.extend(str(e) for e in getattr(exc, attr, None) or [])
    cause = exc.__cause__
    if cause is not None:
        details.append(str(cause))
        details.extend(str(e) for e in getattr(cause, "schema_errors", None) or [])
    return "; ".join(details)
