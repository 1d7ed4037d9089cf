"""The web dashboard end to end: Debian's headless Chromium, driven by Playwright for Python,
against a real all-in-one server, migrating a real disk between two local clouds.

The copy goes through a writer agent (a real ``coriolis-server writer``) with the transfer
bandwidth limit, so that it lasts long enough (about 6 s) for the live view to be seen
moving. Screenshots are kept in tests/artifacts/dashboard/ (ignored by git)."""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from coriolis.harness import RunningServer, local_cloud, start_writer, stop_server

pytestmark = [pytest.mark.e2e, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
# As the machine notes say: without the background-networking flags Chromium keeps trying
# Google's hosts, which this closed network refuses.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts" / "dashboard"
FINAL = {"COMPLETED", "ERROR", "CANCELED", "DEADLOCKED"}
DISK_MIB = 96
LIMIT_MIB = 16  # MiB/s: the 96 MiB disk takes about 6 s


@pytest.fixture(scope="module")
def clouds(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    src, dst = server.cloud_dir("dash-src"), server.cloud_dir("dash-dst")
    local_cloud("init", str(src), "--network", "lan")
    # web: migrated; db: cancelled; app: replicated, then deployed.
    for seed, (name, size) in enumerate((("web", DISK_MIB), ("db", DISK_MIB), ("app", 32))):
        local_cloud("add-instance", str(src), name, "--disk-size", f"{size}M",
                    "--allocated", "1", "--disk-format", "raw", "--network", "lan",
                    "--seed", str(seed))
    local_cloud("init", str(dst), "--network", "prod")
    agent = start_writer(tmp_path_factory.mktemp("dash-agent") / "agent", [dst])
    try:
        server.cli("endpoint", "create", "--name", "dash-src", "--provider", "local",
                   "--connection", json.dumps({"path": str(src)}))
        server.cli("endpoint", "create", "--name", "dash-dst", "--provider", "local",
                   "--connection", json.dumps({"path": str(dst),
                                               "writer": {**agent.details, "mode": "always"}}))
        yield {"src": src, "dst": dst}
    finally:
        stop_server(agent)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Debian's chromium is required (./dev setup installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser: Any, server: RunningServer) -> Iterator[Any]:
    context = browser.new_context(base_url=server.url, viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"JavaScript errors on the dashboard: {errors}"


def log_in(page: Any, server: RunningServer, target: str = "/dashboard") -> None:
    page.goto(target)
    page.get_by_label("User name").fill(server.env["OS_USERNAME"])
    page.get_by_label("Password").fill(server.env["OS_PASSWORD"])
    page.get_by_label("Project").fill(server.env["OS_PROJECT_NAME"])
    page.get_by_role("button", name="Log in").click()


def disk_bars(page: Any) -> list[int]:
    return page.locator("#live progress[data-kind=disk]").evaluate_all(
        "bars => bars.map(b => b.hasAttribute('value') ? Number(b.value) : -1)")


def shown_status(page: Any) -> str:
    return page.locator("#live section.execution").get_attribute("data-status") or ""


def wait_until_ended(page: Any) -> None:
    """Until the live view (updated by the stream, never reloaded) shows a final status."""
    page.wait_for_function(
        "final => final.includes("
        "document.querySelector('#live section.execution')?.dataset.status)",
        arg=sorted(FINAL), timeout=120_000)


def keep(page: Any, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    print(f"dashboard screenshot: {path}")
    return path


def start_migration(page: Any, instance: str) -> None:
    page.get_by_role("link", name="Migrations").click()
    form = page.locator("form[hx-post='/dashboard/data/migrations']")
    if not form.is_visible():  # folded once there are migrations
        page.get_by_text("Start a migration").click()
    form.get_by_label("Source endpoint").select_option(label="dash-src (local)")
    form.get_by_label("Destination endpoint").select_option(label="dash-dst (local)")
    form.get_by_role("textbox", name="Instances").fill(instance)
    form.get_by_label("Source environment").fill('{"snapshot": false}')
    form.get_by_label("Destination environment").fill(
        json.dumps({"transfer_bandwidth_limit_mib": LIMIT_MIB}))
    form.get_by_label("Network map").fill('{"lan": "prod"}')
    form.get_by_label("Skip OS morphing").check()
    form.get_by_label("Replication passes").fill("1")
    form.get_by_role("button", name="Start migration").click()
    page.wait_for_url(re.compile(r"/dashboard/migrations/[0-9a-f-]{36}$"))


def test_login_migration_live_progress_to_completed(
        page: Any, server: RunningServer, clouds: dict) -> None:
    log_in(page, server)
    page.wait_for_url("**/dashboard/migrations")
    assert page.get_by_role("heading", name="Migrations").is_visible()

    start_migration(page, "web")
    # The live view follows the stream without a reload: remember the document, then watch
    # the disk's bar move from below 100 % to 100 % and the status reach COMPLETED.
    page.evaluate("window.__samePage = true")
    seen: list[int] = []
    screenshot = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        bars = disk_bars(page)
        if bars:
            seen.append(bars[0])
        if screenshot is None and bars and 0 <= bars[0] < 100:
            screenshot = keep(page, "running-transfer.png")
        if shown_status(page) in FINAL:
            break
        time.sleep(0.2)
    assert shown_status(page) == "COMPLETED", page.locator("#live").inner_text()
    assert page.evaluate("window.__samePage") is True  # updated in place, never reloaded
    assert screenshot is not None and screenshot.stat().st_size > 0, seen
    assert any(0 <= v < 100 for v in seen) and seen[-1] == 100, seen
    assert seen == sorted(seen), seen  # monotonic, as the copy advances
    text = page.locator("#live").inner_text()
    assert re.search(r"MiB/s · ETA \d+:\d\d", text) is None  # finished: no rate, no ETA
    assert f"{DISK_MIB}.0 MiB of {DISK_MIB}.0 MiB" in text
    assert "REPLICATE_DISKS" in text and "instance web deployed" in text
    keep(page, "completed-transfer.png")
    # The list shows it too.
    page.get_by_role("link", name="Migrations").click()
    assert page.locator("table").get_by_text("COMPLETED").first.is_visible()


def test_cancel_a_running_migration(page: Any, server: RunningServer, clouds: dict) -> None:
    log_in(page, server)
    start_migration(page, "db")
    page.locator("#live progress[data-kind=disk]").first.wait_for(timeout=60_000)
    page.once("dialog", lambda dialog: dialog.accept())  # hx-confirm
    page.locator("#live").get_by_role("button", name="Cancel", exact=True).click()
    wait_until_ended(page)
    assert shown_status(page) == "CANCELED", page.locator("#live").inner_text()


def test_replica_execute_and_deploy(page: Any, server: RunningServer, clouds: dict) -> None:
    replica = server.cli(
        "replica", "create", "--origin-endpoint", "dash-src", "--destination-endpoint",
        "dash-dst", "--instance", "app", "--network-map", '{"lan": "prod"}',
        "--source-environment", '{"snapshot": true}',
        "--destination-environment", json.dumps({"transfer_bandwidth_limit_mib": 16}),
        "-f", "value", "-c", "id").stdout.strip()
    server.cli("replica", "schedule", "create", replica, "-H", "2", "-M", "30")
    log_in(page, server, f"/dashboard/replicas/{replica}")
    page.wait_for_url(f"**/dashboard/replicas/{replica}")
    assert page.get_by_text("30 2 * * *").is_visible()  # the schedule, as cron fields

    page.get_by_role("button", name="Execute replica").click()
    page.wait_for_url(re.compile(rf"/dashboard/replicas/{replica}/executions/[0-9a-f-]{{36}}$"))
    wait_until_ended(page)
    assert shown_status(page) == "COMPLETED", page.locator("#live").inner_text()
    assert disk_bars(page) and disk_bars(page)[-1] == 100

    page.get_by_role("link", name="replica page").click()
    assert page.get_by_role("link", name="Execution 1").is_visible()
    keep(page, "replica.png")
    page.get_by_label("Skip OS morphing").check()
    page.get_by_role("button", name="Deploy replica").click()
    page.wait_for_url(re.compile(r"/dashboard/migrations/[0-9a-f-]{36}$"))
    wait_until_ended(page)
    assert shown_status(page) == "COMPLETED", page.locator("#live").inner_text()
    page.get_by_role("link", name="Replicas").click()
    assert page.get_by_role("link", name=replica[:8]).is_visible()


def test_bad_input_names_the_field(page: Any, server: RunningServer, clouds: dict) -> None:
    log_in(page, server)
    page.wait_for_url("**/dashboard/migrations")
    form = page.locator("form[hx-post='/dashboard/data/migrations']")
    if not form.is_visible():
        page.get_by_text("Start a migration").click()
    form.get_by_role("textbox", name="Instances").fill("web")
    form.get_by_label("Network map").fill('{"lan": ')
    form.get_by_role("button", name="Start migration").click()
    alert = form.get_by_role("alert")
    alert.wait_for()
    assert "network_map: not valid JSON" in alert.inner_text()
    assert page.url.endswith("/dashboard/migrations")  # nothing started, still here


# --- without a browser: what the data routes answer --------------------------------------
@contextlib.contextmanager
def dashboard_client(server: RunningServer) -> Iterator[httpx.Client]:
    """An HTTP client logged in to the dashboard as the openrc's user."""
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=60) as http:
        answer = http.post("/dashboard/login", data={
            "username": server.env["OS_USERNAME"], "password": server.env["OS_PASSWORD"],
            "project": server.env["OS_PROJECT_NAME"]})
        assert answer.status_code == 303, answer.text
        yield http


def read_stream(http: httpx.Client, migration_id: str) -> list[tuple[str, str]]:
    """The (event, data) pairs of a migration's live stream, until its ``done`` event."""
    page = http.get(f"/dashboard/migrations/{migration_id}")
    assert page.status_code == 200, page.text
    url = re.search(r'sse-connect="([^"]+)"', page.text)
    assert url is not None, page.text
    events: list[tuple[str, str]] = []
    with http.stream("GET", url.group(1)) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        event, data = "", []
        for line in stream.iter_lines():
            if line.startswith("event: "):
                event = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])
            elif not line and event:
                events.append((event, "\n".join(data)))
                if event == "done":
                    break
                event, data = "", []
    return events


def disk_values(html: str) -> list[int]:
    return [int(v) for v in re.findall(r'value="(\d+)" data-kind="disk"', html)]


def test_data_routes_need_a_login(server: RunningServer, clouds: dict) -> None:
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=30) as http:
        for method, path in [("GET", "/dashboard/data/migrations"),
                             ("GET", "/dashboard/data/endpoints"),
                             ("GET", "/dashboard/data/replicas"),
                             ("GET", "/dashboard/data/minion-pools"),
                             ("GET", "/dashboard/data/executions/x/stream"),
                             ("POST", "/dashboard/data/migrations"),
                             ("POST", "/dashboard/data/executions/x/cancel")]:
            answer = http.request(method, path, headers={"HX-Request": "true"})
            assert answer.status_code == 401, (method, path, answer.text)
            assert answer.headers["HX-Redirect"] == "/dashboard/login"
            forged = http.request(method, path,
                                  headers={"Cookie": "coriolis_dashboard_token=forged"})
            assert forged.status_code == 401, (method, path)
        # A page sends the browser to the login form instead.
        answer = http.get("/dashboard/endpoints")
        assert answer.status_code == 303
        assert answer.headers["location"] == "/dashboard/login?next=/dashboard/endpoints"

        wrong = http.post("/dashboard/login", data={
            "username": server.env["OS_USERNAME"], "password": "not-the-password",
            "project": server.env["OS_PROJECT_NAME"]})
        assert wrong.status_code == 401 and "wrong" in wrong.text
        assert "not-the-password" not in wrong.text

        good = http.post("/dashboard/login", data={
            "username": server.env["OS_USERNAME"], "password": server.env["OS_PASSWORD"],
            "project": server.env["OS_PROJECT_NAME"], "next": "https://elsewhere.example/"})
        assert good.status_code == 303 and good.headers["location"] == "/dashboard/migrations"
        cookie = good.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/dashboard" in cookie
        listed = http.get("/dashboard/data/endpoints")
        assert listed.status_code == 200 and "dash-src" in listed.text
        # An action without htmx's header (a cross-site form could send the cookie).
        forged_form = http.post("/dashboard/data/migrations", data={"instances": "web"})
        assert forged_form.status_code == 403
        # Logging out revokes the token (the embedded identity's).
        token = http.cookies["coriolis_dashboard_token"]
        assert http.post("/dashboard/logout", headers={"HX-Request": "true"}).status_code == 204
        http.cookies.clear()
        again = http.get("/dashboard/data/endpoints",
                         headers={"Cookie": f"coriolis_dashboard_token={token}"})
        assert again.status_code == 401


def test_front_end_is_served_locally(server: RunningServer) -> None:
    """htmx and its SSE extension come from the server (./dev setup copied them from npm)."""
    with httpx.Client(base_url=server.url, timeout=30) as http:
        page = http.get("/dashboard/login").text
        scripts = re.findall(r'<script src="([^"]+)"', page)
        assert scripts == ["/dashboard/static/vendor/htmx.min.js",
                           "/dashboard/static/vendor/sse.min.js"]
        for src in scripts:
            answer = http.get(src)
            assert answer.status_code == 200 and len(answer.content) > 1000
        assert "http://" not in page and "https://" not in page
