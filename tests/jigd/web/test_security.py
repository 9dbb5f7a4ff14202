"""Security of the web view against a running daemon: headers on every response, mutations
only with a session from the right origin, the session cookie's flags, downloads, and no secret
(the token, a master key) in any page, answer or the daemon's log."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from jigd.demo.workdir import DemoOptions, Paths, write_config, write_token
from jigd.web.server import SECURITY_HEADERS
from tests.jigd.web.station import WebStation, short_dir, web_station

STATIC = Path(__file__).resolve().parents[3] / "jigd" / "web" / "static"
MANIFEST = b"guid\n00-DB-55-00-00-00-00-01\n"


@pytest.fixture
async def station() -> AsyncIterator[WebStation]:
    with short_dir() as tmp:
        options = DemoOptions(hubs=16, rigs=1, faults="none", seed=4, workdir=Path(tmp) / "d")
        async with web_station(options) as running:
            yield running


def _secure(response: aiohttp.ClientResponse) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, (response.url, name)
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp


def _form(**fields: str | bytes) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in fields.items():
        if isinstance(value, bytes):
            form.add_field(name, value, filename="m.csv", content_type="text/csv")
        else:
            form.add_field(name, value)
    return form


@pytest.mark.slow
async def test_the_view_is_read_only_without_a_session_and_never_shows_a_secret(
    station: WebStation,
) -> None:
    url, batch, token = station.url, station.batch, station.token
    origin = {"Origin": url}
    bodies: list[bytes] = []
    # unsafe: keep cookies of an IP address (127.0.0.1), as a browser does
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:

        async def get(path: str, status: int = 200) -> aiohttp.ClientResponse:
            async with http.get(url + path) as response:
                bodies.append(await response.read())
                assert response.status == status, path
                _secure(response)
                return response

        for path in (
            "/",
            f"/batches/{batch}",
            "/static/app.js",
            "/static/station.js",
            "/static/batch.js",
            "/static/style.css",
            "/api/v1/status",
            "/api/v1/batches",
            f"/api/v1/batches/{batch}",
            f"/api/v1/batches/{batch}/guids",
            f"/api/v1/batches/{batch}/report",
            "/api/v1/session",
        ):
            await get(path)
        await get("/no/such/page", 404)
        await get("/static/../jigd.toml", 404)
        csv = await get(f"/api/v1/batches/{batch}/report/results.csv")
        assert csv.headers["Content-Type"] == "text/csv; charset=utf-8"
        assert csv.headers["Content-Disposition"] == f'attachment; filename="{batch}-results.csv"'
        summary = await get(f"/api/v1/batches/{batch}/report/summary.json")
        assert summary.headers["Content-Type"] == "application/json; charset=utf-8"
        async with http.get(url + "/api/v1/events") as events:
            _secure(events)
            assert events.headers["Content-Type"] == "text/event-stream"
            snapshot = await events.content.readuntil(b"\n\n")
            assert b"event: snapshot" in snapshot
            bodies.append(snapshot)
        # Mutations without a session: 403, saying how to log in; nothing changes.
        async with http.post(
            url + "/api/v1/batches", data=_form(manifest=MANIFEST, booking="W", party="P"),
            headers=origin,
        ) as refused:  # fmt: skip
            _secure(refused)
            assert refused.status == 403
            body = await refused.json()
            assert "log in" in body["error"]
            assert "token" in body["error"]
        async with http.post(url + f"/api/v1/batches/{batch}/close", headers=origin) as refused:
            assert refused.status == 403
        # Log in: not from another origin, not with a wrong token.
        for headers, given in (({"Origin": "http://evil.example"}, token), (origin, "wrong")):
            async with http.post(
                url + "/api/v1/login", data={"token": given}, headers=headers
            ) as response:
                assert response.status == 403
                bodies.append(await response.read())
        async with http.post(url + "/api/v1/login", data={"token": token}, headers=origin) as ok:
            assert ok.status == 200
            cookie = ok.headers["Set-Cookie"]
        assert "HttpOnly" in cookie
        assert "SameSite=Strict" in cookie
        assert "Path=/" in cookie
        assert token not in cookie
        # With the session, but posted from elsewhere or with no Origin (CSRF): refused.
        for headers in ({"Origin": "http://evil.example"}, {}):
            async with http.post(url + f"/api/v1/batches/{batch}/close", headers=headers) as r:
                assert r.status == 403
        async with http.post(
            url + "/api/v1/batches", data=_form(manifest=MANIFEST, booking="W", party="P"),
            headers=origin,
        ) as imported:  # fmt: skip
            assert imported.status == 201
            assert (await imported.json())["guids"] == 1
        async with http.get(url + "/api/v1/session") as session:
            assert await session.json() == {"logged_in": True}
    log = (station.paths.root / "jigd.log").read_bytes()
    keys = tomllib.loads((station.paths.keys / "master-keys.toml").read_text("utf-8"))
    secrets = [token, *keys.values()]
    assert secrets
    for secret in secrets:
        for text in (*bodies, log):
            assert secret.encode() not in text
            assert secret.upper().encode() not in text


def test_pages_have_no_inline_script_style_or_handlers_and_set_text_only() -> None:
    for page in STATIC.glob("*.html"):
        html = page.read_text("utf-8")
        assert re.findall(r"<script(?![^>]*\bsrc=)", html) == [], page
        assert "<style" not in html
        assert not re.search(r"\sstyle=", html), page
        assert not re.search(r"\son[a-z]+=", html), page
    for script in STATIC.glob("*.js"):
        text = script.read_text("utf-8")
        for risky in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert risky not in text, (script, risky)


def test_the_daemon_refuses_a_token_file_others_can_read(tmp_path: Path) -> None:
    with short_dir() as tmp:
        options = DemoOptions(rigs=1, slots=1, workdir=Path(tmp) / "d", web_port=18080)
        paths = Paths(options.workdir)
        paths.root.mkdir()
        config = write_config(options, paths)
        # What the config names, present: the token file is what this test is about.
        config.secrets.master_keys_file.parent.mkdir(parents=True, exist_ok=True)
        config.secrets.master_keys_file.write_text("")
        config.catalog_dir.mkdir(parents=True, exist_ok=True)
        run = [sys.executable, "-m", "jigd.cli", "run", "--config", str(paths.config)]
        for content, mode, says in (
            ("t0ken\n", 0o644, "chmod 600"),
            ("", 0o600, "empty"),
        ):
            paths.web_token.write_text(content)
            paths.web_token.chmod(mode)
            done = subprocess.run(run, capture_output=True, text=True, timeout=60, check=False)
            assert done.returncode == 2, done.stderr
            lines = done.stderr.strip().splitlines()
            assert len(lines) == 1, lines
            assert str(paths.web_token) in lines[0]
            assert says in lines[0]
            assert "t0ken" not in done.stderr
        paths.web_token.unlink()
        write_token(paths.web_token)
        assert paths.web_token.stat().st_mode & 0o777 == 0o600
