"""The dashboard in headless Chromium (Debian's ``chromium``, driven by Playwright) against a
real ``corral serve``: overview figures, recent runs, a run's journal timeline and child tree,
tenant scoping, and the key form. Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, async_playwright, expect

from corral import Corral
from tests.e2e.server import ROOT, create_key, serve

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = ROOT / "test-artifacts"

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            await b.close()


def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / ".gitignore").write_text("*\n")
    return ARTIFACTS


async def submit(client: httpx.AsyncClient, key: str, agent: str, input: object) -> str:
    r = await client.post(
        "/v1/runs",
        json={"agent": agent, "input": input},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert r.status_code == 202, r.text
    return str(r.json()["run_id"])


async def test_the_dashboard_shows_queues_runs_and_a_run_timeline(
    browser: Browser, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    admin, acme, globex, initech = (
        create_key(url, "ops", admin=True),
        create_key(url, "acme"),
        create_key(url, "globex"),
        create_key(url, "initech"),
    )
    async with Corral(url) as app:
        await app.set_tenant("globex", cap=1)
    with serve(url, tmp_path / "serve.log", ["--workers", "1", "--concurrency", "4"]) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            fanout = await submit(client, acme, "fanout", {"n": 3})
            for i in range(6):
                await submit(client, acme, "steps", {"n": 3, "delay": 0.05 * i})
            for i in range(3):
                await submit(client, globex, "echo", {"i": i})
            await submit(client, globex, "fail", "on purpose")
            # a backlog that stays queued: a slow tenant capped at one run in flight
            for _ in range(4):
                await submit(client, globex, "steps", {"n": 40, "delay": 0.1})
            # a schedule a tenant created, then paused
            stored = {"name": "weekly", "agent": "echo", "cron": "0 8 * * 1"}
            headers = {"Authorization": f"Bearer {globex}"}
            made = await client.post("/v1/schedules", json=stored, headers=headers)
            assert made.status_code == 201, made.text
            paused = await client.post("/v1/schedules/weekly/pause", headers=headers)
            assert paused.status_code == 200, paused.text

            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{server.url}/?key={admin}")
            assert "key=" not in page.url  # taken into local storage, out of the address bar
            tenants = page.locator("#tenants tbody tr")
            await expect(tenants).to_have_count(2)
            await expect(tenants.nth(0)).to_contain_text("acme")
            await expect(tenants.nth(1)).to_contain_text("globex")
            # 15 submitted and 3 spawned
            await expect(page.locator("#runs tbody tr")).to_have_count(18)
            await expect(page.locator("#who")).to_have_text("all tenants")
            await expect(page.locator("#runs")).to_contain_text("succeeded")
            await expect(page.locator("#runs")).to_contain_text("failed")
            # the embedded worker, as it reports itself
            await expect(page.locator("#workers tbody tr")).to_have_count(1)
            await expect(page.locator("#workers tbody tr")).to_contain_text("running")
            await expect(page.locator("#workers tbody tr")).to_contain_text("/ 4")
            await expect(page.locator("#workers tbody tr")).to_contain_text("echo, fail")
            schedules = page.locator("#schedules tbody tr")
            await expect(schedules).to_have_count(2)
            await expect(schedules.first).to_contain_text("new-year")
            await expect(schedules.first).to_contain_text("cron '0 0 1 1 *'")
            await expect(schedules.nth(1)).to_contain_text("globex/weekly")
            await expect(schedules.nth(1)).to_contain_text("paused")

            # a run's page: its fields, its journal timeline and its child tree
            await page.locator(f"#runs tbody tr:has(td[title='{fanout}'])").click()
            await expect(page.locator("#run-fields")).to_contain_text("fanout")
            await expect(page.locator("#run-fields")).to_contain_text("succeeded")
            await expect(page.locator("#run-tree li")).to_have_count(3)
            await expect(page.locator("#journal li").first).to_contain_text("submitted")
            await expect(page.locator("#journal")).to_contain_text("spawn")
            await page.screenshot(path=str(artifacts() / "dashboard-run.png"), full_page=True)
            # a child's page links back to its parent
            await page.locator("#run-tree a").first.click()
            await expect(page.locator("#run-fields")).to_contain_text("echo")
            await expect(page.locator(f"#run-fields a[href='#/runs/{fanout}']")).to_have_count(1)

            # back on the overview, runs finishing while the page watches: throughput is
            # computed from successive polls
            await page.click("header h1 a")
            await expect(page.locator("#overview")).to_be_visible()
            for _ in range(40):
                await submit(client, acme, "steps", {"n": 2, "delay": 0.02})
                await asyncio.sleep(0.15)
            await expect(page.locator("#c-rate")).to_have_text(
                re.compile(r"^(?!0\.0/s)\d+\.\d/s$"), timeout=15_000
            )
            await expect(page.locator("#chart polyline")).to_have_count(1)
            await page.screenshot(path=str(artifacts() / "dashboard.png"), full_page=True)
            assert errors == []
            await page.close()

            # a tenant key sees its own tenant only
            page = await browser.new_page()
            await page.goto(f"{server.url}/?key={acme}")
            await expect(page.locator("#tenants tbody tr")).to_have_count(1)
            await expect(page.locator("#who")).to_have_text("tenant acme")
            await expect(page.locator("#runs tbody tr")).to_have_count(25)
            await expect(page.locator("#runs")).not_to_contain_text("globex")
            await expect(page.locator("#schedules-box")).to_be_hidden()  # globex's schedules
            await expect(page.locator("#workers-box")).to_be_hidden()  # admin keys only
            await page.close()

            # a refused key brings up the key form, and a good one gets past it
            page = await browser.new_page()
            await page.goto(f"{server.url}/?key=crl_wrong_key")
            await expect(page.locator("#login")).to_be_visible()
            await expect(page.locator("#login-error")).to_contain_text("refused")
            await page.fill("#key-input", globex)
            await page.click("#login button")
            await expect(page.locator("#who")).to_have_text("tenant globex")
            await page.close()

            # a tenant that has submitted nothing yet is still named as the key's, not taken
            # for "all tenants" (the page used to guess from the rows it was shown)
            page = await browser.new_page()
            await page.goto(f"{server.url}/?key={initech}")
            await expect(page.locator("#who")).to_have_text("tenant initech")
            await expect(page.locator("#tenants")).not_to_contain_text("acme")
            await page.close()


async def wait_for_status(client: httpx.AsyncClient, key: str, run_id: str, status: str) -> None:
    for _ in range(200):
        r = await client.get(f"/v1/runs/{run_id}", headers={"Authorization": f"Bearer {key}"})
        if r.json()["status"] == status:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"run {run_id} never became {status}")


async def test_a_run_page_cancels_and_retries_and_shows_a_refusal(
    browser: Browser, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    admin = create_key(url, "ops", admin=True)
    async with Corral(url) as app:
        await app.set_tenant("globex", cap=1, max_queued=1)
    globex = create_key(url, "globex")
    with serve(url, tmp_path / "serve.log", ["--workers", "1", "--concurrency", "4"]) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            failed = await submit(client, globex, "fail", "on purpose")
            await wait_for_status(client, globex, failed, "failed")
            # the tenant's one slot busy for the whole test, and its one queued place taken
            busy = await submit(client, globex, "steps", {"n": 1000, "delay": 0.05})
            await wait_for_status(client, globex, busy, "running")
            waiting = await submit(client, globex, "steps", {"n": 1})

            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("dialog", lambda dialog: dialog.accept())
            await page.goto(f"{server.url}/?key={admin}#/runs/{failed}")
            await expect(page.locator("#run-fields")).to_contain_text("failed")
            await expect(page.locator("#action-cancel")).to_have_count(0)
            # the retry would put a second run in the tenant's queue: the server refuses it
            await page.click("#action-retry")
            await expect(page.locator("#action-error")).to_contain_text(
                "retry refused: backpressure"
            )
            await expect(page.locator("#run-fields")).to_contain_text("failed")

            # cancelling the queued run makes room
            await page.goto(f"{server.url}/#/runs/{waiting}")
            await expect(page.locator("#run-fields")).to_contain_text("queued")
            await expect(page.locator("#action-retry")).to_have_count(0)
            await page.click("#action-cancel")
            await expect(page.locator("#run-fields")).to_contain_text("cancelled")
            await expect(page.locator("#action-cancel")).to_have_count(0)

            # and the retry goes through: queued again (behind the busy run), its journal kept
            await page.goto(f"{server.url}/#/runs/{failed}")
            await page.click("#action-retry")
            await expect(page.locator("#run-fields")).to_contain_text("queued")
            await expect(page.locator("#journal")).to_contain_text("retried")
            await expect(page.locator("#action-cancel")).to_be_visible()
            await expect(page.locator("#action-error")).to_have_text("")
            await page.screenshot(path=str(artifacts() / "dashboard-actions.png"), full_page=True)
            assert errors == []
            await page.close()


async def test_a_run_page_shows_a_journal_longer_than_one_page(
    browser: Browser, tmp_path: Path
) -> None:
    """The page read one page of the journal per poll (1,000 entries) and stopped polling once
    the run had ended: an ended run of more entries showed its first 1,000 only."""
    url = f"sqlite:///{tmp_path / 'corral.db'}"
    admin = create_key(url, "ops", admin=True)
    with serve(url, tmp_path / "serve.log", ["--workers", "1"]) as server:
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as client:
            run_id = await submit(client, admin, "steps", {"n": 2500})
            await wait_for_status(client, admin, run_id, "succeeded")
            headers = {"Authorization": f"Bearer {admin}"}
            entries, after = 0, 0
            while page := (
                await client.get(f"/v1/runs/{run_id}/journal?after={after}", headers=headers)
            ).json()["entries"]:
                entries, after = entries + len(page), page[-1]["seq"]
            assert entries > 2500

            page = await browser.new_page()
            await page.goto(f"{server.url}/?key={admin}#/runs/{run_id}")
            await expect(page.locator("#conn")).to_have_text("run ended")
            await expect(page.locator("#journal li")).to_have_count(entries)
            await expect(page.locator("#journal li").last).to_contain_text(f"#{entries}")
            await page.close()
