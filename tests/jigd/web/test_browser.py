"""The web station view in a real browser: Debian's chromium driven by Playwright (no browser
download), against the demo's daemon and simulator as real processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, Page, async_playwright

from jigd.demo.workdir import DemoOptions
from tests.jigd.web.station import (
    CHROMIUM_ARGS,
    OUTPUT,
    WebStation,
    chromium,
    short_dir,
    web_station,
)

pytestmark = pytest.mark.slow

LATENCY_BOUND_S = 1.0
CHANGES_MEASURED = 8

# Records every tile's state change with the browser's wall clock (Date.now(), ms).
RECORD_CHANGES = """() => {
  window.__changes = [];
  new MutationObserver((records) => {
    for (const r of records) {
      const t = r.target;
      if (t.dataset && t.dataset.rig) {
        window.__changes.push([t.dataset.rig + ":" + t.dataset.slot, t.dataset.state, Date.now()]);
      }
    }
  }).observe(document.getElementById("rigs"),
             {subtree: true, attributes: true, attributeFilter: ["data-state"]});
}"""

GOOD_MANIFEST = b"guid,manufacturer,model\r\n00-DB-77-00-00-00-00-01,1086,57310102\r\n"
BAD_MANIFEST = (
    b"guid,model,manufacturer\n"
    b"00-DB-77-00-00-00-00-ZZ,57310102,1086\n"
    b"00-DB-77-00-00-00-00-02,5731,1086\n"
    b"00-DB-77-00-00-00-00-03,57310102,1086\n"
    b"00-DB-77-00-00-00-00-03,57310102,1086\n"
)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = chromium()
    async with async_playwright() as p:
        launched = await p.chromium.launch(
            executable_path=str(path), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
async def station() -> AsyncIterator[WebStation]:
    with short_dir() as tmp:
        options = DemoOptions(hubs=80, rigs=2, faults="light", seed=21, workdir=Path(tmp) / "d")
        async with web_station(options) as running:
            yield running


async def _page(browser: Browser, station: WebStation, path: str = "/") -> Page:
    context = await browser.new_context(viewport={"width": 1366, "height": 768})
    page = await context.new_page()
    errors: list[str] = []
    # Script errors and CSP violations; a refused request (403, 400) is the test's own doing.
    page.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and "Failed to load resource" not in m.text
            else None
        ),
    )
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors  # type: ignore[attr-defined]
    await page.goto(station.url + path)
    return page


async def _api_changes(station: WebStation, until: float) -> list[tuple[str, str, float, float]]:
    """Slot state changes as the control API reports them: (slot, state, seen at, previous
    state seen at), wall-clock seconds."""
    last: dict[str, tuple[str, float]] = {}
    changes = []
    while time.time() < until:
        status = await station.client.request("GET", "/v1/status")
        now = time.time()
        for rig in status["rigs"]:
            for slot in rig["slots"]:
                key = f"{slot['rig']}:{slot['slot']}"
                if key in last and last[key][0] != slot["state"]:
                    changes.append((key, slot["state"], now, last[key][1]))
                if key not in last or last[key][0] != slot["state"]:
                    last[key] = (slot["state"], now)
        await asyncio.sleep(0.05)
    return changes


def _latencies(
    api_changes: list[tuple[str, str, float, float]], dom: list[list[Any]]
) -> list[float]:
    """For each change the API reported, when the tile first showed it after the slot's
    previous state was seen, minus when the API reported it (negative: the page was first)."""
    found = []
    for key, state, seen, previous in api_changes:
        shown = [t / 1000 for k, s, t in dom if k == key and s == state and t / 1000 >= previous]
        found.append(min(shown) - seen if shown else float("inf"))
    return found


async def test_station_page_shows_every_slot_and_follows_the_daemon(
    browser: Browser, station: WebStation
) -> None:
    page = await _page(browser, station)
    await page.wait_for_selector("#link[data-live='yes']")
    tiles = page.locator(".tile[data-state]")
    await page.wait_for_selector("#slot-2-8[data-state]")
    assert await tiles.count() == 16
    for rig in (1, 2):
        card = page.locator(f"#rig-{rig}")
        await page.wait_for_selector(f"#rig-{rig}[data-up='yes']")  # its controller answers
        assert await card.locator(".rig-state").text_content() == "up"
        # Colour is never the only cue: the state is written as a word too. Both are read in
        # one step in the page, since the daemon may change a tile between two reads.
        shown = await card.locator(".tile[data-slot]").evaluate_all(
            "nodes => nodes.map(n => [n.dataset.slot, n.dataset.state,"
            " n.querySelector('.state').textContent])"
        )
        assert [int(slot) for slot, _, _ in shown] == list(range(1, 9))
        for slot, state, word in shown:
            assert word == state, f"rig {rig} slot {slot}"
    await page.evaluate(RECORD_CHANGES)
    api_changes = await _api_changes(station, time.time() + 12)
    await asyncio.sleep(LATENCY_BOUND_S + 0.2)  # the page's last changes arrive
    dom = await page.evaluate("window.__changes")
    latencies = _latencies(api_changes, dom)
    assert len(latencies) >= CHANGES_MEASURED, api_changes
    late = [(c, lat) for c, lat in zip(api_changes, latencies, strict=True) if lat > 1.0]
    assert not late, f"tiles later than {LATENCY_BOUND_S} s after the control API: {late}"
    print(
        f"\n{len(latencies)} slot changes; tile shown after the control API saw the change: "
        f"max {max(latencies):.3f} s, median {sorted(latencies)[len(latencies) // 2]:.3f} s"
    )
    # The party is shown as the text it is, never as markup.
    party = page.locator(".batchpanel .booking").first
    assert "PARTY-<b>A</b>" in (await party.text_content() or "")
    OUTPUT.mkdir(parents=True, exist_ok=True)
    await page.wait_for_selector(".tile[data-state='busy']")
    await page.screenshot(path=str(OUTPUT / "station.png"))
    assert page.errors == []  # type: ignore[attr-defined]
    # The batch page: GUIDs by outcome, report links, the party as text.
    batch = await _page(browser, station, f"/batches/{station.batch}")
    await batch.wait_for_selector("#groups section")
    groups = await batch.locator("#groups section").evaluate_all(
        "nodes => nodes.map(n => n.dataset.group)"
    )
    assert set(groups) <= {
        "failed",
        "in_progress",
        "interrupted",
        "pending",
        "reflashed",
        "already_current",
    }
    href = await batch.locator("#dl-results").get_attribute("href")
    assert href == f"/api/v1/batches/{station.batch}/report/results.csv"
    assert "PARTY-<b>A</b>" in (await batch.locator("#summary").text_content() or "")
    await batch.fill("#filter", "no such guid")
    assert await batch.locator("#groups tbody tr:not([hidden])").count() == 0
    await batch.fill("#filter", "")
    await batch.screenshot(path=str(OUTPUT / "batch.png"), full_page=False)
    assert batch.errors == []  # type: ignore[attr-defined]


async def test_import_needs_the_token_and_shows_every_error_by_line(
    browser: Browser, station: WebStation
) -> None:
    page = await _page(browser, station)
    await page.wait_for_selector("#login")
    # Without logging in: refused with HTTP 403, and the page says how to log in.
    await _import(page, "good.csv", GOOD_MANIFEST)
    notice = page.locator("#notice")
    await notice.wait_for(state="visible")
    text = await notice.text_content() or ""
    assert "HTTP 403" in text
    assert "log in" in text
    assert "token" in text
    # A wrong token is refused; the right one opens a session.
    await page.fill("#login input[name='token']", "not the token")
    await page.click("#login button")
    await page.locator("#notice", has_text="wrong token").wait_for()
    await page.fill("#login input[name='token']", station.token)
    await page.click("#login button")
    await page.wait_for_selector("body[data-session='yes']")
    # A bad manifest: every problem, by line.
    await _import(page, "bad.csv", BAD_MANIFEST)
    problems = page.locator("#import-result .problems li")
    await problems.first.wait_for()
    lines = await problems.all_text_contents()
    assert len(lines) == 3, lines
    assert [line.split(":")[1] for line in lines] == ["2", "3", "5"]
    # Not UTF-8: a clear error, never a 500.
    await _import(page, "latin1.csv", b"guid\r\n00-DB-12-34-56-78-90-A0 \xa3\r\n")
    await page.locator("#import-result", has_text="UTF-8").wait_for()
    # A good one: the new batch is shown, with a link to its page.
    await _import(page, "good.csv", GOOD_MANIFEST)
    link = page.locator("#import-result[data-kind='ok'] a")
    await link.wait_for()
    new_batch = await link.text_content()
    assert new_batch is not None
    assert new_batch != station.batch
    await page.wait_for_selector(f".batchpanel[data-batch='{new_batch}']")
    # Close it from its page.
    await link.click()
    await page.wait_for_selector("#summary .status")
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.click("#close")
    await page.wait_for_selector("#summary .s-closed")
    assert page.errors == [], page.errors  # type: ignore[attr-defined]


async def _import(page: Page, name: str, data: bytes) -> None:
    await page.set_input_files(
        "#import input[name='manifest']", {"name": name, "mimeType": "text/csv", "buffer": data}
    )
    await page.fill("#import input[name='booking']", "WO-BROWSER")
    await page.fill("#import input[name='party']", "PARTY-B")
    await page.click("#import button[type='submit']")
