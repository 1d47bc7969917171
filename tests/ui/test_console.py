"""The web console (``/ui``) in Debian's headless Chromium, driven by Playwright (never a
downloaded browser: ``python3 dev.py test`` installs the ``chromium`` package when missing).

A person signs in, filters runs, opens a running run and watches it complete live, cancels a
run, retries a failed run from a step, reads metrics and servers; a read-only role sees no
action buttons; the pages work from the keyboard, every control has a label and text meets
WCAG AA contrast. Screenshots of the runs list, a run timeline and the metrics page are saved
under ``test-artifacts/``.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from infraflow.common.streams import KV_IDEMPOTENCY
from infraflow.devtools.stack import Stack
from infraflow.devtools.test_workflows import write_catalog

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
TIMEOUT_MS = 20_000
AUDIT = (Path(__file__).with_name("audit.js")).read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    base = tmp_path_factory.mktemp("ui")
    s = Stack(
        base_dir=base / "stack",
        bmc_systems=2,
        kube=False,
        test_agent=True,
        catalog_extra_file=str(write_catalog(base / "catalog.json")),
        services=("gateway", "orchestrator", "bmc-agent", "projector"),
    )
    s.start()
    try:
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="module")
def api(stack: Stack) -> Iterator[httpx.Client]:
    headers = {"Authorization": f"Bearer {stack.token()}"}
    with httpx.Client(base_url=stack.api_url, headers=headers, timeout=10) as client:
        yield client


def start(api: httpx.Client, type_: str, server: str, script: dict[str, Any] | None = None) -> str:
    body = {"type": type_, "resourceId": server, "input": {"script": script or {}}}
    r = api.post("/v1/workflows/runs", json=body)
    assert r.status_code == 202, r.text
    return str(r.json()["meta"]["workflowId"])


def wait_run(api: httpx.Client, run_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        run: dict[str, Any] = api.get(f"/v1/workflows/runs/{run_id}").json()["data"]
        if run["status"] in ("completed", "failed", "cancelled"):
            return run
        assert time.monotonic() < deadline, run
        time.sleep(0.2)


def kv(stack: Stack, key: str, *, present: bool) -> None:
    async def change() -> None:
        nc = await nats.connect(stack.nats_url)
        try:
            bucket = await nc.jetstream().key_value(KV_IDEMPOTENCY)
            await (bucket.put(key, b"1") if present else bucket.purge(key))
        finally:
            await nc.close()

    # in a thread of its own: Playwright's sync API keeps an event loop running in this one
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, change()).result()


@pytest.fixture(scope="module")
def seeded(stack: Stack, api: httpx.Client) -> dict[str, Any]:
    """Two registered servers, and runs that completed and failed (one retryable later)."""
    assert stack.bmc is not None
    servers, registrations = [], []
    for i, system in enumerate(stack.bmc.systems):
        r = api.post(
            "/v1/servers",
            json={
                "name": f"ui{i}",
                "bmc": {
                    "address": stack.bmc.system_url(system.id),
                    "username": stack.bmc.username,
                    "password": stack.bmc.password,
                },
            },
        )
        assert r.status_code == 202, r.text
        servers.append(r.json()["data"]["resourceId"])
        registrations.append(r.json()["meta"]["workflowId"])
    for run in registrations:
        assert wait_run(api, run)["status"] == "completed"
    flag = "ui.fail"
    kv(stack, flag, present=True)
    runs = {
        "completed": start(api, "test.steps", servers[0]),
        "failed": start(api, "test.steps", servers[0], {"c": {"fail": "DISK", "failWhile": flag}}),
        "saga": start(api, "test.saga", servers[1], {"finish": {"fail": "BOOM"}}),
    }
    for run_id in runs.values():
        wait_run(api, run_id)
    return {"servers": servers, "runs": runs, "flag": flag}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    assert CHROMIUM.exists(), (
        "Debian's chromium is missing: `python3 dev.py test` installs it (as root), "
        "or run `apt-get install -y chromium`"
    )
    with sync_playwright() as playwright:
        b = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield b
        finally:
            b.close()


class Console:
    """A signed-in tab, collecting any script error or failed resource load."""

    def __init__(self, browser: Browser, stack: Stack, token: str) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(TIMEOUT_MS)
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on(
            "console",
            lambda m: self.errors.append(f"console: {m.text}") if m.type == "error" else None,
        )
        self.base = f"{stack.api_url}/ui"
        self.token = token

    def sign_in(self) -> Page:
        page = self.page
        page.goto(self.base)
        page.get_by_label("Bearer token").fill(self.token)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Runs", level=1)).to_be_visible()
        return page

    def open(self, route: str) -> Page:
        self.page.goto(f"{self.base}#/{route}")
        return self.page

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def console(browser: Browser, stack: Stack) -> Iterator[Console]:
    tab = Console(browser, stack, stack.token())
    tab.sign_in()
    yield tab
    errors = tab.errors
    tab.close()
    assert not errors, errors


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / name), full_page=True)


def run_rows(page: Page) -> list[str]:
    return page.locator("#runs-results tbody tr").all_inner_texts()


def test_sign_in_then_filter_runs(browser: Browser, stack: Stack, seeded: dict[str, Any]) -> None:
    tab = Console(browser, stack, "not-a-token")
    page = tab.page
    page.goto(tab.base)
    page.get_by_label("Bearer token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_contain_text("UNAUTHORIZED")
    assert page.evaluate("sessionStorage.getItem('infraflow.token')") is None
    tab.errors.clear()  # the browser logs the refused request itself
    token = stack.token()
    page.get_by_label("Bearer token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Runs", level=1)).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('infraflow.token')") == token
    runs = seeded["runs"]
    for run_id in runs.values():
        expect(page.get_by_role("link", name=run_id)).to_be_visible()

    # status: failed
    page.get_by_label("failed").check()
    page.get_by_role("button", name="Apply filters").click()
    expect(page).to_have_url(re.compile(r"#/runs\?status=failed$"))
    expect(page.locator("#runs-results tbody tr")).to_have_count(2)
    assert all("failed" in row for row in run_rows(page))
    expect(page.get_by_role("link", name=runs["completed"])).to_have_count(0)
    # and a type, a resource and a time window: every filter reaches the API
    page.get_by_label("Workflow type").select_option("test.saga")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.locator("#runs-results tbody tr")).to_have_count(1)
    expect(page.get_by_role("link", name=runs["saga"])).to_be_visible()
    page.get_by_role("button", name="Clear").click()
    # "Clear" re-renders the page: wait for the cleared list before typing into the new form
    expect(page).to_have_url(re.compile(r"#/runs$"))
    expect(page.locator("#runs-results tbody tr")).to_have_count(5)
    page.get_by_label("Resource id").fill(seeded["servers"][0])
    page.get_by_label("Resource type").select_option("server")
    page.get_by_label("Started from").fill("2020-01-01T00:00")
    page.get_by_label("Triggered by").fill("dev-admin")
    page.get_by_role("button", name="Apply filters").click()
    expect(page).to_have_url(re.compile("resourceId="))
    expect(page.locator("#runs-results tbody tr")).to_have_count(3)  # register + 2 runs
    page.get_by_label("Started until").fill("2020-01-02T00:00")
    page.get_by_role("button", name="Apply filters").click()
    expect(page.get_by_text("No run matches these filters.")).to_be_visible()
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("#runs-results tbody tr")).to_have_count(5)
    shot(page, "console-runs.png")
    assert not tab.errors, tab.errors
    tab.close()


def test_watch_a_running_run_complete_live(
    console: Console, api: httpx.Client, seeded: dict[str, Any]
) -> None:
    script = {"c": {"sleep": 1.5, "fail": "FLAKY_LINK", "retryable": True, "failAttempts": 1}}
    run_id = start(api, "test.steps", seeded["servers"][1], script)
    page = console.open(f"runs/{run_id}")
    status = page.locator(".run-status .badge")
    expect(status).to_have_text(re.compile("pending|running"))
    expect(page.get_by_role("button", name="Cancel run")).to_be_visible()
    # no reload from here on: the page follows the run's event stream
    expect(page.locator("#events-heading + table")).to_contain_text("step_failed")
    expect(status).to_have_text("completed", timeout=TIMEOUT_MS)
    expect(page.locator("#events-heading + table")).to_contain_text("run_completed")
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    expect(page.get_by_text("Steps 3 of 3")).to_be_visible()
    timeline = page.locator("svg.timeline")
    expect(timeline.locator("rect.seg.attempt")).to_have_count(4)  # a, b, c twice
    expect(timeline.locator("rect.seg.status-failed")).to_have_count(1)
    expect(timeline.locator("rect.seg.backoff")).to_have_count(1)
    page.get_by_text("Attempts as a table").click()
    expect(page.get_by_role("table", name="Attempts")).to_contain_text("FLAKY_LINK")
    shot(page, "console-run-timeline.png")


def test_cancel_a_run(console: Console, api: httpx.Client, seeded: dict[str, Any]) -> None:
    run_id = start(api, "test.hold", seeded["servers"][1])
    page = console.open(f"runs/{run_id}")
    expect(page.get_by_text("current: hold")).to_be_visible()
    expect(page.get_by_role("button", name="Terminate (no compensation)")).to_be_visible()
    page.get_by_role("button", name="Cancel run").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_be_visible()
    dialog.get_by_label("Reason (optional)").fill("browser test")
    dialog.get_by_role("button", name="Cancel run").click()
    expect(page.locator(".run-status .badge")).to_have_text("cancelled")
    expect(page.get_by_role("table", name="Compensation")).to_contain_text("undo_prepare")
    expect(page.locator("#events-heading + table")).to_contain_text(
        "cancel requested by dev-admin: browser test"
    )
    assert wait_run(api, run_id)["status"] == "cancelled"


def test_retry_a_failed_run_from_a_step(
    console: Console, stack: Stack, api: httpx.Client, seeded: dict[str, Any]
) -> None:
    failed = seeded["runs"]["failed"]
    kv(stack, seeded["flag"], present=False)  # the cause is gone
    page = console.open(f"runs/{failed}")
    expect(page.locator(".run-status .badge")).to_have_text("failed")
    expect(page.get_by_role("heading", name="Error")).to_be_visible()
    expect(page.locator(".error-details")).to_contain_text("DISK")
    page.get_by_label("Retry from").select_option("c")
    page.get_by_role("button", name="Retry run").click()
    expect(page).not_to_have_url(re.compile(re.escape(failed) + "$"))
    expect(page.locator(".run-status .badge")).to_have_text("completed")
    expect(page.get_by_role("link", name=failed)).to_be_visible()  # "Retry of"
    steps = page.get_by_role("table", name="Steps")
    expect(steps.locator("tbody tr")).to_have_count(3)
    expect(steps.locator("tbody tr").nth(0)).to_contain_text("skipped")
    expect(steps.locator("tbody tr").nth(2)).to_contain_text("succeeded")
    new_id = page.url.rsplit("/", 1)[-1]
    run = api.get(f"/v1/workflows/runs/{new_id}").json()["data"]
    assert run["retryOf"] == failed
    assert run["fromStep"] == "c"


def test_metrics_servers_clusters_and_vms(console: Console, seeded: dict[str, Any]) -> None:
    page = console.open("metrics")
    expect(page.get_by_role("heading", name="Metrics", level=1)).to_be_visible()
    per_hour = page.get_by_role("figure", name=re.compile("^Runs per hour by status"))
    expect(per_hour.locator("rect.bar").first).to_be_visible()
    durations = page.get_by_role("figure", name=re.compile("^Duration percentiles per type"))
    expect(durations).to_contain_text("test.steps")
    expect(durations.locator("rect.bar").first).to_be_visible()
    success = page.get_by_role("figure", name=re.compile("^Success rate per type"))
    expect(success.locator("rect.bar").first).to_be_visible()
    expect(page.get_by_role("table", name="Top error codes")).to_contain_text("BOOM")
    shot(page, "console-metrics.png")
    page = console.open("servers")
    table = page.get_by_role("table", name="2 servers")
    for server in seeded["servers"]:
        expect(table).to_contain_text(server)
    expect(table).to_contain_text("registered")
    last = table.locator(".last-run a").first
    expect(last).to_be_visible()
    last.click()
    expect(page.get_by_role("heading", name=re.compile("^Run run_"))).to_be_visible()
    for kind, title in (("clusters", "Clusters"), ("vms", "Virtual machines")):
        page = console.open(kind)
        expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()
        page.get_by_label("Project", exact=True).fill("prj-ui")
        page.get_by_role("button", name=f"Show {kind}").click()
        expect(page).to_have_url(re.compile(f"#/{kind}\\?project=prj-ui$"))
        expect(page.get_by_role("table", name=re.compile("in prj-ui$"))).to_contain_text(
            "No clusters in this project." if kind == "clusters" else "No VMs in this project."
        )


def test_a_read_only_role_gets_no_actions(
    browser: Browser, stack: Stack, seeded: dict[str, Any]
) -> None:
    tab = Console(browser, stack, stack.token("auditor", roles=["support"]))
    tab.sign_in()
    page = tab.open(f"runs/{seeded['runs']['saga']}")
    expect(page.get_by_text("Your role can only read this run.")).to_be_visible()
    expect(page.get_by_role("button", name="Retry run")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel run")).to_have_count(0)
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("Bearer token")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('infraflow.token')") is None
    assert not tab.errors, tab.errors
    tab.close()


def test_keyboard_labels_and_contrast(console: Console, seeded: dict[str, Any]) -> None:
    page = console.open("runs")
    page.reload()  # a fresh document: focus starts at the top
    expect(page.locator("#runs-results tbody tr").first).to_be_visible()
    page.locator("body").focus()
    # the first Tab reaches the skip link, which moves focus to the content
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.id") == "skip-link"
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"
    # a run opens from the keyboard alone
    link = page.get_by_role("link", name=seeded["runs"]["saga"])
    link.focus()
    page.keyboard.press("Enter")
    expect(page.get_by_role("heading", name=f"Run {seeded['runs']['saga']}")).to_be_visible()
    expect(page.locator("svg.timeline")).to_be_visible()
    for route in ("runs", f"runs/{seeded['runs']['saga']}", "metrics", "servers"):
        page = console.open(route)
        page.wait_for_load_state("networkidle")
        page.wait_for_timeout(300)
        problems = page.evaluate(AUDIT)
        assert problems == [], f"{route}: {problems}"
