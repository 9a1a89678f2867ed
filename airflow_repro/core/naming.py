"""Names for repositories, branches, tags and refs, following lakeFS's rules.

The embedded store enforces the same rules as lakeFS so a DAG that works locally works against
lakeFS too: repositories ``^[a-z0-9][a-z0-9-]{2,62}$``, branches ``^\\w[-\\w]*$`` (no ``/ . : +``),
tags like git refs without ``/``. Commit ids are always the full 64 hex characters.
"""

from __future__ import annotations

import hashlib
import re

from airflow_repro.errors import InvalidNameError

REPOSITORY_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}\Z")
BRANCH_RE = re.compile(r"^\w[-\w]*\Z", re.ASCII)
TAG_RE = re.compile(r"^[\w][-\w.~]*\Z", re.ASCII)
COMMIT_ID_RE = re.compile(r"^[0-9a-f]{64}\Z")
MAX_REF_LENGTH = 255


def validate_repository_name(name: str) -> str:
    if not isinstance(name, str) or not REPOSITORY_RE.match(name):
        raise InvalidNameError(
            f"invalid repository name {name!r}: use 3-63 characters, lower-case letters, digits "
            "and '-', starting with a letter or digit (e.g. 'ml-data')"
        )
    return name


def validate_branch_name(name: str) -> str:
    if not isinstance(name, str) or not BRANCH_RE.match(name) or len(name) > MAX_REF_LENGTH:
        raise InvalidNameError(
            f"invalid branch name {name!r}: use letters, digits, '_' and '-' only, starting with "
            "a letter, digit or '_' (no '/', '.', ':' or '+'; lakeFS rule ^\\w[-\\w]*$)"
        )
    return name


def validate_tag_name(name: str) -> str:
    bad = (
        not isinstance(name, str)
        or not TAG_RE.match(name)
        or ".." in name
        or name.endswith((".", ".lock"))
        or len(name) > MAX_REF_LENGTH
    )
    if bad:
        raise InvalidNameError(
            f"invalid tag name {name!r}: use letters, digits, '_', '-', '.' and '~' only, "
            "starting with a letter, digit or '_', without '..' and not ending in '.' or '.lock'"
        )
    return name


def is_commit_id(ref: str) -> bool:
    return bool(COMMIT_ID_RE.match(ref))


def validate_ref(ref: str) -> str:
    """A ref is a branch, a tag or a full commit id; reject what can be none of them."""
    well_formed = isinstance(ref, str) and (is_commit_id(ref) or BRANCH_RE.match(ref) or TAG_RE.match(ref))
    if well_formed and ".." not in ref and len(ref) <= MAX_REF_LENGTH:
        return ref
    raise InvalidNameError(f"malformed ref {ref!r}: give a branch name, a tag name or a full 64-hex commit id")


def _slug(text: str, max_len: int) -> str:
    slug = re.sub(r"[^\w-]+", "-", text, flags=re.ASCII).strip("-_")
    return slug[:max_len].strip("-_") or "x"


def run_branch_name(dag_id: str, run_id: str) -> str:
    """The branch a DAG run writes to: readable, valid for lakeFS, unique per (dag_id, run_id).

    Airflow run ids hold ``:``, ``+`` and ``.`` which lakeFS forbids, and two run ids may slug to
    the same text, so a short hash of the exact pair keeps the name unique.
    """
    digest = hashlib.sha256(f"{dag_id}\x00{run_id}".encode()).hexdigest()[:10]
    return f"run_{_slug(dag_id, 60)}_{_slug(run_id, 80)}_{digest}"


def run_tag_name(dag_id: str, run_id: str) -> str:
    """The immutable name of a finished DAG run's final commit."""
    return "repro-" + run_branch_name(dag_id, run_id)[len("run_") :]


#: Branches the lakeFS adapter makes for itself (left out of branch listings): per-commit
#: transaction branches and the retention branches that keep tagged commits' data from lakeFS GC.
TRANSACTION_BRANCH_PREFIX = "repro_tx_"
RETENTION_BRANCH_PREFIX = "repro_keep_"
INTERNAL_BRANCH_PREFIXES = (TRANSACTION_BRANCH_PREFIX, RETENTION_BRANCH_PREFIX)


def transaction_branch_name(token: str) -> str:
    """A short-lived branch one commit is prepared on (``token``: a unique hex string)."""
    return validate_branch_name(TRANSACTION_BRANCH_PREFIX + _slug(token, 64))


def retention_branch_name(tag: str) -> str:
    """The branch that keeps a tagged commit's data safe from lakeFS garbage collection.

    lakeFS GC keeps what branch heads reference but ignores tags; tag names may hold ``.`` and
    ``~``, which branches forbid, so the name is a slug plus a short hash of the exact tag.
    """
    digest = hashlib.sha256(tag.encode()).hexdigest()[:10]
    return RETENTION_BRANCH_PREFIX + f"{_slug(tag, 120)}_{digest}"
