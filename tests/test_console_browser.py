"""The console in a real browser: Chromium (Debian's package) driven by Playwright, against
`ivrkit serve` running under uvicorn.

Without Chromium these tests skip, except under CI=true, where they fail: CI installs it
(.ci/run), so a missing browser there is a broken set-up, not a reason to pass.
With IVRKIT_UPDATE_SCREENSHOTS=1 the run also writes the README's docs/console-*.png.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from flows.support_line import SupportLine
from tests.driver import TOKEN, signed_headers
from tests.test_serve_cli import IVRKIT, ROOT, free_port

CHROMIUM = os.environ.get("IVRKIT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
CONSOLE_TOKEN = "browser-test-console-token-0123456789"
DOCS = ROOT / "docs"


def _require_browser() -> Any:
    missing = None
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        missing = f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing = missing or "playwright is not installed (pip install -e '.[dev]')"
        sync_playwright = None
    if missing:
        if os.environ.get("CI") == "true":
            pytest.fail(f"browser tests cannot run in CI: {missing}")
        pytest.skip(missing)
    return sync_playwright


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    env = {
        **os.environ,
        "TWILIO_AUTH_TOKEN": TOKEN,
        "IVRKIT_CONSOLE_TOKEN": CONSOLE_TOKEN,
        "IVRKIT_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'console.db'}",
    }
    process = subprocess.Popen(
        [*IVRKIT, "serve", "flows/", "--port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    else:
        process.kill()
        pytest.fail(f"server did not start: {process.communicate()[0]}")
    try:
        yield base
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0]
        assert "Traceback" not in output, output


@pytest.fixture
def browser() -> Iterator[Any]:
    sync_playwright = _require_browser()
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def shot(page: Any, name: str, tmp_path: Path) -> None:
    """A screenshot: always in the test's folder; in docs/ when asked to update them."""
    page.screenshot(path=str(tmp_path / f"console-{name}.png"), full_page=True)
    if os.environ.get("IVRKIT_UPDATE_SCREENSHOTS") == "1":
        DOCS.mkdir(exist_ok=True)
        page.screenshot(path=str(DOCS / f"console-{name}.png"), full_page=True)


def place_webhook_call(base: str, number: str) -> str:
    sid = "CA" + secrets.token_hex(16)
    url = f"{base}/voice/support_line"
    params = {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": number,
              "To": "+15005550006", "CallStatus": "ringing", "Direction": "inbound",
              "ApiVersion": "2010-04-01", "Caller": number, "Called": "+15005550006"}
    answer = httpx.post(url, data=params, headers=signed_headers(url, params))
    assert answer.status_code == 200, answer.text
    return sid


def post_signed(url: str, params: dict[str, str]) -> ET.Element | None:
    answer = httpx.post(url, data=params, headers=signed_headers(url, params))
    assert answer.status_code in (200, 204), answer.text
    return ET.fromstring(answer.text) if answer.text.strip() else None


def walk_to_voicemail(base: str, number: str, *, hang_up_at_menu: bool = False) -> None:
    """A webhook call through the menu to voicemail (or hung up at the menu)."""
    sid = place_webhook_call(base, number)  # the first webhook; a retry replays its answer
    base_params = {"CallSid": sid, "AccountSid": "AC" + "0" * 32, "From": number,
                   "To": "+15005550006", "CallStatus": "in-progress"}
    status = f"{base}/voice/support_line/status"
    if not hang_up_at_menu:
        root = post_signed(f"{base}/voice/support_line", {**base_params, "CallStatus": "ringing"})
        assert root is not None
        gather = root.find(".//Gather")
        assert gather is not None
        root = post_signed(gather.attrib["action"], {**base_params, "Digits": "3"})
        assert root is not None
        record = root.find(".//Record")
        assert record is not None
        post_signed(record.attrib["action"], {**base_params, "RecordingDuration": "7",
                                             "RecordingUrl": "https://api.twilio.com/rec/RE1",
                                             "RecordingSid": "RE" + "2" * 32, "Digits": "#"})
    post_signed(status, {**base_params, "CallStatus": "completed", "CallDuration": "30"})


def test_a_signed_out_visitor_sees_nothing(server, browser):
    page = browser.new_page()
    page.goto(f"{server}/console/")
    assert page.url.endswith("/console/login")
    assert page.get_by_label("Console token or password").is_visible()
    assert "support_line" not in page.content()
    for path in ("/console/calls", "/console/api/calls", "/console/dialpad"):
        answer = page.request.get(f"{server}{path}")
        assert answer.status == 401, path
        assert "support_line" not in answer.text()
    page.get_by_label("Console token or password").fill("wrong")
    page.get_by_role("button", name="Sign in").click()
    assert page.get_by_role("alert").inner_text() == "Wrong token or password."
    assert "support_line" not in page.content()


def test_sign_in_traffic_map_dialpad_to_voicemail_and_the_call_list(server, browser, tmp_path):
    context = browser.new_context(viewport={"width": 1100, "height": 800})
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    webhook_sid = place_webhook_call(server, "+14155550123")

    # sign in with the keyboard alone: the field has the focus, Tab reaches the button
    page.goto(f"{server}/console/login")
    assert page.evaluate("document.activeElement.id") == "secret"
    page.keyboard.type(CONSOLE_TOKEN)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Sign in"
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/console/$"))
    page.keyboard.press("Tab")  # on every page, the first stop skips the navigation
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    assert page.get_by_role("link", name="support_line").is_visible()
    shot(page, "flows", tmp_path)

    # the flow's traffic map
    page.get_by_role("link", name="support_line").click()
    page.wait_for_selector("svg.traffic")
    # Graphviz's drawing (CI) or the console's own: either way, every state with its counts
    assert page.locator("svg.traffic g.node").count() == len(SupportLine.states())
    drawing = page.locator("svg.traffic").inner_html()
    assert "welcome: 1 reached" in drawing
    assert "5550111" not in page.content()  # the number sales dials is masked too
    shot(page, "traffic", tmp_path)

    # the dialpad: a call through the menu to voicemail
    page.get_by_role("link", name="Dialpad").click()
    page.get_by_label("Flow").select_option("support_line")
    page.get_by_role("button", name="Call").click()
    heard = page.locator("#heard")
    heard.get_by_text("Thanks for calling Acme.").wait_for()
    page.get_by_role("button", name="Key 3").click()
    heard.get_by_text("You pressed 3").wait_for()
    heard.get_by_text("Please leave a message after the beep.", exact=False).wait_for()
    page.get_by_label("Speak for (seconds)").fill("8")
    page.get_by_role("button", name="Record").click()
    page.get_by_text("Call ended (completed)").wait_for()
    assert heard.get_by_text("Thank you, we will call you back.").is_visible()
    shot(page, "dialpad", tmp_path)
    simulated_sid = page.locator("#call-link").get_attribute("href").rsplit("/", 1)[1]

    # the call list: the simulated call, marked; the webhook call with its number masked
    page.goto(f"{server}/console/calls")
    row = page.locator(f'tr[data-sid="{simulated_sid}"]')
    assert "simulated" in row.inner_text()
    assert "4155550123" not in page.content()
    assert "+1415*****23" in page.locator(f'tr[data-sid="{webhook_sid}"]').inner_text()
    page.get_by_label("Last digits").fill("23")
    page.get_by_role("button", name="Filter").click()
    assert page.locator("#calls tbody tr").count() == 1
    # live: a new call appears without a reload
    page.goto(f"{server}/console/calls")
    page.get_by_text("Live updates: on").wait_for()
    live_sid = place_webhook_call(server, "+14155550177")
    page.locator(f'tr[data-sid="{live_sid}"]').wait_for(timeout=15000)
    shot(page, "calls", tmp_path)

    # the simulated call's timeline
    page.locator(f'tr[data-sid="{simulated_sid}"] a').click()
    timeline = page.locator("ol.timeline")
    timeline.get_by_text("Pressed: 3").wait_for()
    assert timeline.get_by_text("recording seconds: 8").is_visible()
    assert "Thank you, we will call you back." in timeline.inner_text()
    shot(page, "call", tmp_path)
    # the traffic map again, with more calls on it (the README's picture)
    for number in ("+14155550101", "+14155550102", "+14155550103"):
        walk_to_voicemail(server, number)
    walk_to_voicemail(server, "+14155550104", hang_up_at_menu=True)
    page.goto(f"{server}/console/flows/support_line")
    assert "main_menu: 7 reached, 1 hung up (14%)" in page.locator("svg.traffic").inner_html()
    shot(page, "traffic", tmp_path)
    page.goto(f"{server}/console/")
    shot(page, "flows", tmp_path)
    assert errors == []  # no CSP violation, no script error
    context.close()


def test_the_dialpad_fits_a_phone_screen(server, browser, tmp_path):
    context = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True)
    page = context.new_page()
    page.goto(f"{server}/console/login")
    page.get_by_label("Console token or password").fill(CONSOLE_TOKEN)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(re.compile(r"/console/$"))
    page.goto(f"{server}/console/dialpad")
    page.get_by_label("Flow").select_option("support_line")
    page.get_by_role("button", name="Call").click()
    page.get_by_role("button", name="Key 1").wait_for()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390
    page.get_by_label("Keys").fill("2")
    page.get_by_label("Keys").press("Enter")
    page.locator("#heard").get_by_text("You pressed 2").wait_for()
    shot(page, "phone", tmp_path)
    page.get_by_role("button", name="Hang up").click()
    page.locator("#call-state").get_by_text("Call ended").wait_for()
    context.close()
