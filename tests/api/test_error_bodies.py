"""Every error of the REST API is a JSON body with a message, never a 5xx for bad input, and never
names a folder of the server.

The property-based test sends generated methods, paths, bodies and headers to the real api-server.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_repro.core.naming import run_branch_name
from tests.support.airflow_session import SESSION_HOME
from tests.support.api import API, EXAMPLE_DAG, SMALL_DAG, ApiServer, RecordedRuns

ROUTES = ["manifest", "replay", "replays", "verification"]
# Bounded to keep the suite fast; raise it (REPRO_FUZZ_EXAMPLES=2000) for a deeper search.
FUZZ_EXAMPLES = int(os.environ.get("REPRO_FUZZ_EXAMPLES", "150"))
NON_FINITE = ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"]


def assert_json_error(response: httpx.Response) -> None:
    """An error body: JSON, with a message (a string, or FastAPI's list of ``{"msg": ...}``)."""
    assert response.headers.get("content-type", "").startswith("application/json"), response.text
    detail = response.json()["detail"]
    if isinstance(detail, str):
        assert detail.strip(), response.text
    else:
        assert detail and all(isinstance(e, dict) and str(e["msg"]).strip() for e in detail), response.text
    assert str(SESSION_HOME) not in response.text


# -- NaN, Infinity, 1e999 ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("route", "body"),
    [
        *[("verification", f'{{"abs_tol": {number}}}') for number in NON_FINITE],
        ("verification", '{"abs_tol": 0, "rel_tol": NaN}'),
        ("replay", '{"dry_run": NaN}'),
        ("replay", '{"mode": Infinity}'),
        ("replay", '{"mode": "pinned", "seed": [1e999]}'),
    ],
)
def test_non_finite_numbers_are_422_with_a_clear_message(
    api_server: ApiServer, recorded_runs: RecordedRuns, route: str, body: str
) -> None:
    with api_server.client("admin") as admin:
        response = admin.post(
            f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}/{route}",
            content=body,
            headers={"content-type": "application/json"},
        )
    assert response.status_code == 422, response.text
    assert_json_error(response)
    messages = [e["msg"] for e in response.json()["detail"]]
    assert any("NaN, Infinity and numbers beyond the float range (1e999) are not accepted" in m for m in messages)


# -- server paths --------------------------------------------------------------------------------------
@pytest.fixture
def damaged_run(repro_env: dict[str, str]) -> Iterator[tuple[str, str]]:
    """A run branch whose commit file was damaged on disk (the store then answers 503)."""
    dag_id, run_id = "repro_api_damaged", "manual__damaged"
    repo = Path(repro_env["home"]) / "store" / "repos" / "repro"
    commit_id = "ab" * 32
    made = [repo / "commits" / f"{commit_id}.json", repo / "refs" / "branches" / run_branch_name(dag_id, run_id)]
    made[0].write_text("{}")
    made[1].write_text(commit_id + "\n")
    try:
        yield dag_id, run_id
    finally:
        for path in made:
            path.unlink()


def test_store_errors_name_folders_relative_to_the_repro_home(
    api_server: ApiServer, damaged_run: tuple[str, str]
) -> None:
    dag_id, run_id = damaged_run
    with api_server.client("viewer") as viewer:
        response = viewer.get(f"{API}/{dag_id}/runs/{run_id}/manifest")
    assert response.status_code == 503, response.text
    assert f"<repro home>/store/repos/repro/commits/{'ab' * 32}.json" in response.json()["detail"]
    assert_json_error(response)


def test_public_text_replaces_whole_folder_names_only(repro_env: dict[str, str]) -> None:
    from airflow import settings as airflow_settings

    from airflow_repro.airflow.api_guards import public_text

    home, dags = repro_env["home"], airflow_settings.DAGS_FOLDER
    assert (
        public_text(f"lock file {home}/store/repos/r/.lock; retry")
        == "lock file <repro home>/store/repos/r/.lock; retry"
    )
    assert public_text(f"'{dags}/x.py', line 3") == "'<dags folder>/x.py', line 3"
    assert public_text(f"{home}-old/x and {home}") == f"{home}-old/x and <repro home>"
    assert (
        public_text("POST /repro/api/v1/dags/d/runs/r/verification") == "POST /repro/api/v1/dags/d/runs/r/verification"
    )


# -- any request ---------------------------------------------------------------------------------------
printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24).map(str.strip)
segment = st.one_of(st.sampled_from(["", ".", "..", "%", "a b", "run:1+0", "x" * 300]), st.text(max_size=40))
number = st.sampled_from([math.nan, math.inf, -math.inf, 0.5]) | st.floats() | st.integers()  # JSON's edges often
json_value = st.recursive(
    st.none() | st.booleans() | number | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
body_object = st.fixed_dictionaries(
    {},
    optional={
        "mode": st.sampled_from(["pinned", "latest-code"]) | json_value,
        "dry_run": st.booleans() | json_value,
        "abs_tol": number | json_value,
        "rel_tol": number | json_value,
        "wait": json_value,
    },
)
raw_body = st.one_of(
    st.none(),
    body_object.map(lambda b: json.dumps(b, allow_nan=True).encode()),  # NaN and Infinity literals
    json_value.map(lambda v: json.dumps(v, allow_nan=True).encode()),
    st.sampled_from(NON_FINITE).map(lambda n: f'{{"abs_tol": {n}, "mode": {n}}}'.encode()),
    st.sampled_from([b"", b"{", b'{"mode": "pinned"', b"mode=pinned", b"\xff\xfe", b"9" * 5000]),
    st.binary(min_size=1, max_size=40),
)
# Mostly JSON: without a JSON content type FastAPI does not parse the body as JSON at all.
content_type = (
    st.sampled_from(
        [
            "application/json",
            "application/json",
            "application/json",
            "application/json; charset=latin-1",
            "application/problem+json",
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            None,
        ]
    )
    | printable
)
# Mostly credentials that pass authentication, so that most requests reach validation and the handlers.
credentials = st.sampled_from(
    ["admin", "admin", "admin", "viewer", "none", "bad-token", "cookie-admin", "cookie-viewer"]
)
header_name = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyz-"), min_size=1, max_size=12).filter(
    lambda n: (
        n.strip("-")
        and n
        not in {
            "content-length",
            "transfer-encoding",
            "host",
            "connection",
            "expect",
            "upgrade",
            "te",
            "trailer",
            "keep-alive",
            "content-encoding",
        }
    )
)


ENDPOINTS = [
    ("GET", "manifest"),
    ("POST", "replay"),
    ("GET", "replays"),
    ("GET", "verification"),
    ("POST", "verification"),
]
POSTS = [endpoint for endpoint in ENDPOINTS if endpoint[0] == "POST"]  # drawn twice as often: they take bodies


@st.composite
def requests(draw: st.DrawFn, recorded: RecordedRuns) -> dict[str, Any]:
    """Mostly the real endpoints and the recorded runs (so that bodies reach validation and the
    handlers), sometimes anything."""
    dag_id, run_id = draw(
        st.sampled_from([(EXAMPLE_DAG, recorded.example), (SMALL_DAG, recorded.small)] * 2 + [None])
    ) or (draw(st.sampled_from([EXAMPLE_DAG]) | segment), draw(segment))
    method, route = draw(st.sampled_from([*ENDPOINTS, *POSTS, None])) or (
        draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH"])),
        draw(st.sampled_from(ROUTES) | segment),
    )
    body = draw(raw_body)
    if method == "POST" and route == "replay" and run_id in {recorded.example, recorded.small}:
        body = _never_triggering(body)
    headers = dict(draw(st.dictionaries(header_name, printable, max_size=3)))
    for name, value in (
        ("content-type", draw(content_type)),
        ("sec-fetch-site", draw(st.sampled_from([None, "same-origin", "same-origin", "same-site", "none"]))),
        ("origin", draw(st.none() | st.sampled_from(["null", "http://evil.example"]) | printable)),
    ):
        if value is not None:
            headers[name] = value
    path = f"{API}/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}/{quote(route, safe='')}"
    return {"method": method, "path": path, "body": body, "headers": headers, "credentials": draw(credentials)}


def _never_triggering(body: bytes | None) -> bytes | None:
    """A JSON object body gets ``dry_run: true``: the generated requests plan replays, never trigger them."""
    try:
        value = json.loads(body or b"")
    except ValueError:
        return body
    return json.dumps({**value, "dry_run": True}, allow_nan=True).encode() if isinstance(value, dict) else body


def _send(api: ApiServer, request: dict[str, Any]) -> httpx.Response:
    headers = dict(request["headers"])
    who = request["credentials"]
    if who in api.tokens:
        headers["authorization"] = f"Bearer {api.tokens[who]}"
    elif who == "bad-token":
        headers["authorization"] = "Bearer not-a-jwt"
    elif who.startswith("cookie-"):
        headers["cookie"] = f"_token={api.tokens[who.removeprefix('cookie-')]}"
    with httpx.Client(base_url=api.url, timeout=60) as client:
        return client.request(request["method"], request["path"], content=request["body"], headers=headers)


def test_no_request_gets_a_server_error_and_every_error_is_json(
    api_server: ApiServer, recorded_runs: RecordedRuns
) -> None:
    seen: dict[int, int] = {}
    started = time.monotonic()

    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(request=requests(recorded_runs))
    def check(request: dict[str, Any]) -> None:
        response = _send(api_server, request)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        assert response.status_code < 500, (request, response.status_code, response.text)
        if response.status_code >= 400:
            assert_json_error(response)
        cookie_only = request["credentials"].startswith("cookie-")
        if cookie_only and request["method"] == "POST" and request["headers"].get("sec-fetch-site") != "same-origin":
            assert response.status_code >= 400, (request, response.text)  # only the server's own pages may POST

    check()
    print("statuses of the generated requests:", dict(sorted(seen.items())))  # noqa: T201 - shown with -s
    assert 200 in seen and 403 in seen and 404 in seen and 422 in seen, seen  # the examples reached every layer
    assert time.monotonic() - started < 60 or FUZZ_EXAMPLES > 150
