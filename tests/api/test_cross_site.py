"""Cross-site requests: the UI's session cookie must not let another page of the same site replay.

The ``_token`` cookie is SameSite=Lax, so a browser sends it with a form POST from any page of the
same site (another port of the host, a sibling subdomain). The API refuses such requests; bearer
clients are unaffected. One test drives Debian's Chromium through Playwright to show it with the
real browser's headers.
"""

from __future__ import annotations

import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from airflow_repro.embedded import free_port
from tests.support.api import API, EXAMPLE_DAG, ApiServer, RecordedRuns, replays, run_count

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
FORM = {"content-type": "application/x-www-form-urlencoded"}


def cookie_client(api: ApiServer, user: str = "admin", **headers: str) -> httpx.Client:
    """A client authenticated as the UI's browser is: by the session cookie alone."""
    client = httpx.Client(base_url=api.url, headers=headers, timeout=60)
    client.cookies.set("_token", api.tokens[user], domain="127.0.0.1")
    return client


@pytest.fixture
def replay_url(api_server: ApiServer, recorded_runs: RecordedRuns) -> str:
    return f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}/replay"


@pytest.fixture
def nothing_replayed(api_server: ApiServer, recorded_runs: RecordedRuns) -> Iterator[None]:
    """Fails the test if it created a run of the example DAG or stored a replay plan."""
    runs, plans = run_count(api_server, EXAMPLE_DAG), replays(api_server, EXAMPLE_DAG, recorded_runs.example)
    yield
    assert run_count(api_server, EXAMPLE_DAG) == runs
    assert replays(api_server, EXAMPLE_DAG, recorded_runs.example) == plans


def assert_refused(response: httpx.Response, why: str) -> None:
    assert response.status_code == 403, response.text
    detail = response.json()["detail"]
    assert detail.startswith("cross-site request refused: ") and why in detail, detail
    assert "Authorization: Bearer" in detail


# -- with an HTTP client -----------------------------------------------------------------------------
@pytest.mark.usefixtures("nothing_replayed")
def test_an_empty_form_post_with_the_cookie_is_refused(
    api_server: ApiServer, recorded_runs: RecordedRuns, replay_url: str
) -> None:
    verification = f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}/verification"
    same_site = {"sec-fetch-site": "same-site", "origin": f"http://127.0.0.1:{free_port()}"}
    with cookie_client(api_server) as browser:
        bare = browser.post(replay_url, headers=FORM, content=b"")  # as curl sends it: no browser headers
        from_sibling = browser.post(replay_url, headers={**FORM, **same_site}, content=b"mode=pinned")
        verify_from_sibling = browser.post(verification, headers={**FORM, **same_site}, content=b"")
        cross_site = browser.post(replay_url, headers={"sec-fetch-site": "cross-site"}, json={"dry_run": False})
        # same origin, but not JSON: the body is required and must be a JSON object
        empty = browser.post(replay_url, headers={**FORM, "sec-fetch-site": "same-origin"}, content=b"")
        form = browser.post(replay_url, headers={**FORM, "sec-fetch-site": "same-origin"}, content=b"mode=pinned")
        text = browser.post(
            replay_url,
            headers={"content-type": "text/plain", "sec-fetch-site": "same-origin"},
            content=b'{"mode": "pinned"}',
        )
    assert_refused(bare, "neither a Sec-Fetch-Site nor an Origin header")
    assert_refused(from_sibling, "Sec-Fetch-Site: same-site")
    assert_refused(verify_from_sibling, "Sec-Fetch-Site: same-site")
    assert_refused(cross_site, "Sec-Fetch-Site: cross-site")
    for response, message in (
        (empty, "a JSON object body is required"),
        (form, "must be a JSON object"),
        (text, "must be a JSON object"),
    ):
        assert response.status_code == 422, response.text
        (error,) = response.json()["detail"]
        assert error["loc"] == ["body"] and message in error["msg"], error


@pytest.mark.usefixtures("nothing_replayed")
def test_the_origin_decides_when_the_browser_sends_no_sec_fetch_site(
    api_server: ApiServer, recorded_runs: RecordedRuns, replay_url: str
) -> None:
    verification = f"{API}/{EXAMPLE_DAG}/runs/{recorded_runs.example}/verification"
    with cookie_client(api_server) as browser:
        foreign = browser.post(replay_url, headers={"origin": "http://evil.example"}, json={})
        other_port = browser.post(replay_url, headers={"origin": f"http://127.0.0.1:{free_port()}"}, json={})
        opaque = browser.post(replay_url, headers={"origin": "null"}, json={})
        # the server's own origin passes the guard: the original run is not a replay (404, not 403)
        own = browser.post(verification, headers={"origin": api_server.url}, json={})
    assert_refused(foreign, "sent from 'http://evil.example'")
    assert_refused(other_port, "which is not this server's origin")
    assert_refused(opaque, "sent from 'null'")
    assert own.status_code == 404 and "is not a replay" in own.json()["detail"], own.text


@pytest.mark.usefixtures("nothing_replayed")
def test_same_origin_json_with_the_cookie_and_bearer_clients_are_served(api_server: ApiServer, replay_url: str) -> None:
    with cookie_client(api_server, **{"sec-fetch-site": "same-origin"}) as browser:
        from_the_ui = browser.post(replay_url, json={"dry_run": True})
    # a bearer token is not an ambient credential: headers a browser would add change nothing
    with api_server.client("admin") as script:
        bearer = script.post(
            replay_url,
            json={"dry_run": True},
            headers={"sec-fetch-site": "cross-site", "origin": "http://evil.example"},
        )
    for response in (from_the_ui, bearer):
        assert response.status_code == 200, response.text
        assert response.json()["triggered"] is False and response.json()["blocked"] is False
    with cookie_client(api_server, "viewer", **{"sec-fetch-site": "same-origin"}) as viewer:
        assert viewer.post(replay_url, json={"dry_run": True}).status_code == 403  # still Airflow's permissions
        assert viewer.get(replay_url.removesuffix("/replay") + "/manifest").status_code == 200  # reads pass


def test_without_credentials_authentication_answers_first(api_server: ApiServer, replay_url: str) -> None:
    with httpx.Client(base_url=api_server.url, timeout=60) as anonymous:
        response = anonymous.post(replay_url, headers={**FORM, "sec-fetch-site": "same-site"}, content=b"")
    assert response.status_code == 401 and response.json() == {"detail": "Not authenticated"}


def test_origins_are_compared_with_explicit_default_ports() -> None:
    from airflow_repro.airflow.api_guards import _origin

    assert (
        _origin("HTTP://Airflow.Example.com")
        == _origin("http://airflow.example.com:80/x/?y")
        == "http://airflow.example.com:80"
    )
    assert _origin("https://a.example") == "https://a.example:443"
    assert _origin("https://a.example") != _origin("http://a.example")
    assert [_origin(v) for v in ("null", "", "file://", "http://h:99999", "ftp://h")] == [None] * 5


# -- in a real browser -------------------------------------------------------------------------------
def chromium_or_skip() -> str:
    found = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
    if found is None:
        message = "Debian's chromium is not installed (apt-get install --no-install-recommends chromium)"
        if os.environ.get("CI"):
            pytest.fail(message + "; CI must run the browser tests")
        pytest.skip(message)
    return found


@pytest.fixture
def attacker_page(api_server: ApiServer, replay_url: str) -> Iterator[str]:
    """A page on another loopback port (same site, other origin) that auto-submits a form to the API."""
    page = (
        f'<!doctype html><title>cat pictures</title><form method="post" action="{api_server.url}{replay_url}">'
        '<input type="hidden" name="mode" value="pinned"></form><script>document.forms[0].submit()</script>'
    )

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.usefixtures("nothing_replayed")
def test_a_form_auto_submitted_by_another_port_is_refused_in_chromium(
    api_server: ApiServer, replay_url: str, attacker_page: str
) -> None:
    executable = chromium_or_skip()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            context = browser.new_context()
            context.add_cookies(
                [
                    {
                        "name": "_token",
                        "value": api_server.tokens["admin"],
                        "domain": "127.0.0.1",
                        "path": "/",
                        "httpOnly": True,
                        "sameSite": "Lax",
                    }
                ]
            )
            page = context.new_page()
            with page.expect_response(lambda r: r.url.endswith(replay_url) and r.request.method == "POST") as info:
                page.goto(attacker_page)
            forged = info.value
            forged_headers, forged_status, forged_body = forged.request.all_headers(), forged.status, forged.json()
            # the same browser, on a page of the server itself, is served (what the UI tab will do)
            page.goto(f"{api_server.url}/repro/openapi.json")
            own = page.evaluate(
                """url => fetch(url, {method: "POST", headers: {"Content-Type": "application/json"},
                                   body: JSON.stringify({dry_run: true})}).then(r => r.status)""",
                replay_url,
            )
        finally:
            browser.close()
    # the cookie went along (the attack is real), from another origin of the same site
    assert "_token=" in forged_headers.get("cookie", "")
    assert forged_headers["sec-fetch-site"] == "same-site" and forged_headers["origin"] == attacker_page.rstrip("/")
    assert forged_status == 403, forged_body
    assert "Sec-Fetch-Site: same-site" in forged_body["detail"]
    assert own == 200
