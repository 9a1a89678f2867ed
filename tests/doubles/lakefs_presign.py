"""Presigned transfers for the lakeFS double, and the object store behind them.

Added to a running :class:`~tests.doubles.lakefs_double.LakeFSDouble` by :func:`presign_routes`
(its routes go first, so they answer before the double's own). The lakeFS routes go through the
double's endpoint wrapper, so they are authenticated and validated against swagger.yml like every
other; they copy the server's behaviour (treeverse/lakeFS v1.84, see
``shared/notes/lakefs-server-behaviour.md`` L1-L6):

* ``GET /config``: ``storage_config`` with a switchable ``blockstore_type``; ``pre_sign_support`` is
  true on s3/gs/azure only. On ``local``, a presigned ``getPhysicalAddress`` answers 500 and a
  presigned ``statObject`` 400, as the real controller does.
* ``GET …/staging/backing?presign=true`` (getPhysicalAddress): a fresh physical address that holds
  its creation time, signed like ``catalog.GetAddressWithSignature`` (HMAC-SHA256 over the
  ``{"Repository","Branch","Path","PhysicalAddress"}`` JSON, base64url, after a ``,``), and a
  presigned PUT URL with its expiry.
* ``PUT …/staging/backing`` (linkPhysicalAddress): checks the signature against repository, branch
  and path, and the address's age against lakeFS's 24 h ``LinkAddressTime`` (400 otherwise);
  ``If-None-Match: *`` on an existing path is 412. Size and checksum are taken from the client, as
  lakeFS does.
* ``GET …/objects/stat?presign=true``: ``physical_address`` becomes a presigned GET URL, with
  ``physical_address_expiry``.

The object store (``/_store/…``, outside ``/api/v1``, not in the spec) is S3-like: it honours only
URLs whose HMAC signature matches their method, object and expiry, answers 403 ``AccessDenied:
Request has expired`` after the expiry, refuses (400) any request that also carries an
``Authorization`` header (S3 allows one auth mechanism), needs ``Content-Length`` on PUT and answers
with an MD5 ETag. It counts the requests and bytes it served, so a test can tell that the data did
not travel through the worker.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from tests.doubles.lakefs_double import API, Entry, LakeFSDouble, LakeFSError

SIGNING_KEY = b"double-blockstore-signing-secret"  # blockstore.signing.secret_key (test-only)
STORE_KEY = b"double-object-store-key"  # what the object store signs URLs with (test-only)
LINK_ADDRESS_TIME = 24 * 3600  # lakeFS catalog.LinkAddressTime
PRESIGNING_BLOCKSTORES = ("s3", "gs", "azure")
STORE_PREFIX = "/_store/"


@dataclass
class StoreRequest:
    method: str
    address: str
    status: int
    authorization: bool
    bytes_in: int = 0
    bytes_out: int = 0


@dataclass
class PresignRoutes:
    """The presign behaviour of one double; :meth:`configure` switches it per test."""

    double: LakeFSDouble
    blockstore_type: str = "s3"
    expiry_s: int = 900
    requests: list[StoreRequest] = field(default_factory=list)
    offset_s: float = 0.0  # added to the clock lakeFS and the store read (link window tests)

    def configure(self, *, blockstore_type: str = "s3", expiry_s: int = 900) -> PresignRoutes:
        self.blockstore_type, self.expiry_s, self.offset_s = blockstore_type, expiry_s, 0.0
        self.requests.clear()
        return self

    @property
    def presigns(self) -> bool:
        return self.blockstore_type in PRESIGNING_BLOCKSTORES

    def now(self) -> float:
        return time.time() + self.offset_s

    # ---- signing -----------------------------------------------------------------------------
    @staticmethod
    def address_signature(repository: str, branch: str, path: str, address: str) -> str:
        body = json.dumps({"Repository": repository, "Branch": branch, "Path": path, "PhysicalAddress": address})
        digest = hmac.new(SIGNING_KEY, body.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def presigned_url(self, method: str, address: str) -> tuple[str, int]:
        expires = int(self.now()) + self.expiry_s
        token = base64.urlsafe_b64encode(address.encode()).decode().rstrip("=")
        signature = self._url_signature(method, token, expires)
        return f"{self.double.url}{STORE_PREFIX}{token}?X-Expires={expires}&X-Signature={quote(signature)}", expires

    @staticmethod
    def _url_signature(method: str, token: str, expires: int) -> str:
        return hmac.new(STORE_KEY, f"{method}\n{token}\n{expires}".encode(), hashlib.sha256).hexdigest()

    # ---- lakeFS routes -----------------------------------------------------------------------
    def get_config(self, request: Request, body: bytes) -> Response:
        scheme = {"s3": "s3", "gs": "gs", "azure": "https", "local": "local"}.get(self.blockstore_type, "mem")
        storage = {
            "blockstore_type": self.blockstore_type,
            "blockstore_namespace_example": f"{scheme}://example-bucket/",
            "blockstore_namespace_ValidityRegex": f"^{scheme}://",
            "pre_sign_support": self.presigns,
            "pre_sign_support_ui": self.presigns,
            "import_support": self.presigns,
            "import_validity_regex": f"^{scheme}://",
            "pre_sign_multipart_upload": False,
        }
        return _json(200, {"version_config": {"version": "1.84.0"}, "storage_config": storage})

    def get_physical_address(self, request: Request, body: bytes) -> Response:
        repo = self.double._repo(request)
        branch = request.path_params["branch"]
        self.double._branch(repo, branch)
        path = request.query_params["path"]
        presign = request.query_params.get("presign") in ("true", "True")
        if presign and not self.presigns:  # block/local: ErrOperationNotSupported, surfaced as 500
            raise LakeFSError(500, "operation not supported")
        address = f"{repo.storage_namespace}/data/g{int(self.now()):x}/{uuid.uuid4().hex}"
        location: dict[str, Any] = {
            "physical_address": f"{address},{self.address_signature(repo.id, branch, path, address)}"
        }
        if presign:
            location["presigned_url"], location["presigned_url_expiry"] = self.presigned_url("PUT", address)
        return _json(200, location)

    def link_physical_address(self, request: Request, body: bytes) -> Response:
        repo = self.double._repo(request)
        name = request.path_params["branch"]
        branch = self.double._branch(repo, name)
        path = request.query_params["path"]
        data = json.loads(body)
        signed = data["staging"]["physical_address"]
        address, _, signature = signed.rpartition(",")
        if not address or not hmac.compare_digest(signature, self.address_signature(repo.id, name, path, address)):
            raise LakeFSError(400, "link address invalid signature")
        created = int(address.rsplit("/data/g", 1)[-1].split("/", 1)[0], 16)
        if self.now() - created > LINK_ADDRESS_TIME:
            raise LakeFSError(400, "link address expired")
        if request.headers.get("if-none-match") == "*" and path in self.double._read_tree(repo, name):
            raise LakeFSError(412, "precondition failed: object exists")
        entry = Entry(
            path=path,
            physical_address=address,
            checksum=data["checksum"],
            size=int(data["size_bytes"]),
            mtime=int(self.now()),
            metadata=dict(data.get("user_metadata") or {}),
            content_type=data.get("content_type") or "application/octet-stream",
        )
        branch.staging[path] = entry
        return _json(200, entry.stats())

    def stat_object(self, request: Request, body: bytes) -> Response:
        if request.query_params.get("presign") not in ("true", "True"):
            return self.double.stat_object(request, body)
        if not self.presigns:
            raise LakeFSError(400, "presign is not supported by the storage adapter")
        repo = self.double._repo(request)
        entry = self.double._entry(repo, request.path_params["ref"], request.query_params["path"])
        stats = entry.stats()
        stats["physical_address"], stats["physical_address_expiry"] = self.presigned_url("GET", entry.physical_address)
        return _json(200, stats)

    # ---- the object store --------------------------------------------------------------------
    async def store(self, request: Request) -> Response:
        token = request.path_params["token"]
        address = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        body = await request.body()
        record = StoreRequest(request.method, address, 0, "authorization" in request.headers, bytes_in=len(body))
        self.requests.append(record)
        response = self._store_answer(request, token, address, body)
        record.status = response.status_code
        record.bytes_out = len(response.body) if response.status_code == 200 else 0
        return response

    def _store_answer(self, request: Request, token: str, address: str, body: bytes) -> Response:
        if "authorization" in request.headers:
            return _s3_error(400, "InvalidArgument", "Only one auth mechanism allowed")
        try:
            expires = int(request.query_params["X-Expires"])
            signature = request.query_params["X-Signature"]
        except (KeyError, ValueError):
            return _s3_error(403, "AccessDenied", "Query-string authentication requires X-Expires and X-Signature")
        if not hmac.compare_digest(signature, self._url_signature(request.method, token, expires)):
            return _s3_error(403, "SignatureDoesNotMatch", "The request signature does not match")
        if self.now() > expires:
            return _s3_error(403, "AccessDenied", "Request has expired")
        if request.method == "PUT":
            if "content-length" not in request.headers:
                return _s3_error(411, "MissingContentLength", "You must provide the Content-Length HTTP header")
            with self.double.lock:
                self.double.blobs[address] = body
            return Response(status_code=200, headers={"ETag": f'"{hashlib.md5(body).hexdigest()}"'})
        with self.double.lock:
            data = None if address in self.double.gone else self.double.blobs.get(address)
        if data is None:
            return _s3_error(404, "NoSuchKey", "The specified key does not exist")
        etag = hashlib.md5(data).hexdigest()
        return Response(data, status_code=200, media_type="application/octet-stream", headers={"ETag": f'"{etag}"'})

    # ---- what a test asks --------------------------------------------------------------------
    def uploaded_bytes(self) -> int:
        return sum(r.bytes_in for r in self.requests if r.method == "PUT" and r.status == 200)

    def downloaded_bytes(self) -> int:
        return sum(r.bytes_out for r in self.requests if r.method == "GET")


def presign_routes(double: LakeFSDouble) -> PresignRoutes:
    """The presign routes of ``double``, added on first use (the double may be shared by a session)."""
    existing = getattr(double, "_presign_routes", None)
    if isinstance(existing, PresignRoutes):
        return existing
    routes = PresignRoutes(double)
    repo = f"{API}/repositories/{{repository}}"
    table = [
        (f"{API}/config", "GET", routes.get_config),
        (f"{repo}/branches/{{branch}}/staging/backing", "GET", routes.get_physical_address),
        (f"{repo}/branches/{{branch}}/staging/backing", "PUT", routes.link_physical_address),
        (f"{repo}/refs/{{ref}}/objects/stat", "GET", routes.stat_object),
    ]
    added = [Route(path, double._endpoint(handler), methods=[method]) for path, method, handler in table]
    added.append(Route(STORE_PREFIX + "{token}", routes.store, methods=["GET", "PUT"]))
    double.app.router.routes[0:0] = added
    double._presign_routes = routes  # type: ignore[attr-defined]
    return routes


def _json(status: int, body: Any) -> Response:
    return Response(json.dumps(body), status_code=status, media_type="application/json")


def _s3_error(status: int, code: str, message: str) -> Response:
    body = f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{code}</Code><Message>{message}</Message></Error>"
    return Response(body, status_code=status, media_type="application/xml")
