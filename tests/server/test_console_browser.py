"""The console in a real browser (Debian's chromium via Playwright) against a live server:
sign-in, filters, roles, CSRF, inert HTML payloads, sessions, phone width, keyboard only.

Locked, watched and erased devices with a real agent are in tests/e2e/test_console_e2e.py.
"""

from __future__ import annotations

import re
import time

from browser import csrf, screenshot, sign_in, sign_in_as
from console_session import add_admin
from live import live_server


def test_signin_refuses_a_wrong_password_and_administrators_need_totp(sqlite_server, new_page):
    page = new_page()
    add_admin(sqlite_server, "ada", "administrator")
    sign_in(page, sqlite_server.url, "ada", "wrong password!")
    assert page.get_by_role("alert").inner_text() == "Wrong name or password."
    screenshot(page, "signin")
    sign_in(page, sqlite_server.url, "ada")
    page.get_by_role("heading", name="Set up your authenticator").wait_for()
    assert page.get_by_role("img", name="QR code for your authenticator app").is_visible()
    screenshot(page, "totp-enrol")
    page.get_by_label("Code").fill("123456")
    page.get_by_role("button", name="Verify").click()
    assert "Wrong or already used code" in page.get_by_role("alert").inner_text()
    from console_session import code_for

    seed = page.locator("code.seed").inner_text()
    page.get_by_label("Code").fill(code_for(seed))
    page.get_by_role("button", name="Verify").click()
    page.get_by_role("heading", name="Devices").wait_for()
    assert page.get_by_role("link", name="Admins and tokens").is_visible()


def test_filter_sort_and_page_devices(sqlite_server, new_page):
    for i in range(60):
        sqlite_server.device(hostname=f"lab-{i:02d}")
    _, mac = sqlite_server.device(hostname="mac-01", os_name="darwin")
    sqlite_server.ctx.store.set_device(mac, labels={"team": "design"})
    page = new_page()
    sign_in_as(sqlite_server, page, "rita", "read-only")
    assert page.get_by_text("61 devices").is_visible()
    assert page.get_by_role("link", name="Next page").is_visible()
    page.get_by_role("link", name="Next page").click()
    assert page.get_by_text("Page 2 of 2", exact=True).is_visible()
    page.get_by_label("OS", exact=True).select_option("darwin")
    page.get_by_role("button", name="Filter").click()
    assert page.get_by_text("1 device", exact=True).is_visible()
    assert page.get_by_role("link", name="mac-01").is_visible()
    page.get_by_label("OS", exact=True).select_option("")
    page.get_by_label("Label").fill("team=design")
    page.get_by_role("button", name="Filter").click()
    assert page.get_by_role("link", name="mac-01").is_visible()
    page.get_by_label("Label").fill("")
    page.get_by_label("Hostname").fill("lab-5")
    page.get_by_label("Sort").select_option("hostname")
    page.get_by_label("Order").select_option("desc")
    page.get_by_role("button", name="Filter").click()
    names = page.locator("tbody tr td:first-child a").all_inner_texts()
    assert names == [f"lab-5{i}" for i in range(9, -1, -1)]
    screenshot(page, "devices")


def test_read_only_sees_no_actions(sqlite_server, new_page):
    _, device_id = sqlite_server.device(hostname="web1")
    page = new_page()
    sign_in_as(sqlite_server, page, "rita", "read-only")
    page.get_by_role("link", name="web1").click()
    page.get_by_role("heading", name="web1").wait_for()
    assert page.get_by_text("Actions", exact=True).count() == 0
    assert page.get_by_role("link", name="Lock").count() == 0
    assert page.get_by_role("link", name="Admins and tokens").count() == 0


def test_a_manager_cannot_erase_even_by_posting_the_form_by_hand(sqlite_server, new_page):
    _, device_id = sqlite_server.device(hostname="web1")
    page = new_page()
    sign_in_as(sqlite_server, page, "mia", "manager")
    page.goto(f"{sqlite_server.url}/devices/{device_id}")
    page.get_by_text("Actions", exact=True).click()
    assert page.get_by_role("link", name="Lock").is_visible()
    assert page.get_by_role("link", name="Erase").count() == 0  # shown disabled, not a link
    assert page.get_by_text("Erase (administrators only)").is_visible()
    resp = page.request.post(
        f"{sqlite_server.url}/devices/{device_id}/actions/erase",
        form={"csrf": csrf(page), "hostname": "web1"},
    )
    assert resp.status == 403
    assert sqlite_server.ctx.queue.list(device_id) == []


def test_a_request_without_the_csrf_token_is_refused(sqlite_server, new_page):
    _, device_id = sqlite_server.device(hostname="web1")
    page = new_page()
    sign_in_as(sqlite_server, page, "mia", "manager")
    resp = page.request.post(f"{sqlite_server.url}/devices/{device_id}/actions/lock", form={})
    assert resp.status == 403
    assert sqlite_server.ctx.queue.list(device_id) == []


def test_html_and_script_in_hostnames_and_labels_stay_inert_text(sqlite_server, new_page):
    payload = "<img src=x onerror=\"document.title='pwned'\"><script>alert(1)</script>"
    _, device_id = sqlite_server.device(hostname=payload)
    sqlite_server.ctx.store.set_device(device_id, labels={"note": "<b onclick=alert(2)>x</b>"})
    page = new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    sign_in_as(sqlite_server, page, "rita", "read-only")
    link = page.get_by_role("link", name=payload)
    assert link.inner_text() == payload  # shown as the text it is
    assert page.get_by_text("note=<b onclick=alert(2)>x</b>").is_visible()
    link.click()
    page.get_by_role("heading", name=payload).wait_for()
    assert page.locator("main img, main script, main b").count() == 0
    assert dialogs == [] and page.title() != "pwned"


def test_sign_out_and_idle_timeout_end_the_session_cookie(tmp_path, new_page):
    with live_server(f"sqlite:///{tmp_path}/j.db", str(tmp_path), session_idle=2) as srv:
        page = new_page()
        sign_in_as(srv, page, "rita", "read-only")
        cookies = page.context.cookies()
        assert [c["name"] for c in cookies] == ["jcstate"]
        assert cookies[0]["httpOnly"] and cookies[0]["sameSite"] == "Strict"
        page.get_by_role("button", name="Sign out").click()
        page.get_by_role("heading", name="Sign in to jcstate").wait_for()
        replay = new_page()
        replay.context.add_cookies(cookies)
        replay.goto(srv.url + "/devices")
        assert replay.url.startswith(srv.url + "/signin")

        idle = new_page()
        sign_in_as(srv, idle, "otto", "read-only")
        idle.reload()
        assert idle.get_by_role("heading", name="Devices").is_visible()
        time.sleep(2.5)
        idle.reload()
        assert idle.get_by_role("heading", name="Sign in to jcstate").is_visible()


def test_pages_fit_a_phone_screen(sqlite_server, new_page):
    _, device_id = sqlite_server.device(hostname="a-rather-long-hostname.example.internal")
    sqlite_server.ctx.store.set_device(device_id, labels={"team": "platform", "site": "berlin"})
    page = new_page(390, 844)
    sign_in_as(sqlite_server, page, "mia", "manager")
    for path in ("/devices", f"/devices/{device_id}", f"/devices/{device_id}/actions/restart"):
        page.goto(sqlite_server.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow} px wider than the screen"
    screenshot(page, "phone-confirm")


def test_keyboard_alone_locks_a_device(sqlite_server, new_page):
    _, device_id = sqlite_server.device(hostname="web1")
    page = new_page()
    sign_in_as(sqlite_server, page, "mia", "manager")
    page.goto(f"{sqlite_server.url}/devices/{device_id}")

    def tab_to(name: str) -> None:
        for _ in range(60):
            page.keyboard.press("Tab")
            focused = page.evaluate("document.activeElement.textContent.trim()")
            if focused == name:
                return
        raise AssertionError(f"Tab never reached {name}")

    tab_to("Actions")
    page.keyboard.press("Enter")  # opens the menu
    tab_to("Lock")
    page.keyboard.press("Enter")
    page.get_by_role("dialog", name="Lock web1?").wait_for()
    tab_to("Lock")
    page.keyboard.press("Enter")
    page.get_by_role("status").filter(has_text=re.compile("queued")).wait_for()
    [made] = sqlite_server.ctx.queue.list(device_id)
    assert made["action"] == "lock" and made["created_by"] == "admin:mia"


def test_devices_page_shows_a_device_coming_online_without_a_reload(sqlite_server, new_page):
    client, device_id = sqlite_server.device(hostname="web1")
    page = new_page()
    sign_in_as(sqlite_server, page, "rita", "read-only")
    status = page.locator(f"[data-live='dev-{device_id}-state']")
    assert status.inner_text() == "offline"
    page.evaluate("window.notReloaded = true")
    client.work("", 0)  # the device polls: it is seen now
    t0 = time.monotonic()
    from playwright.sync_api import expect

    expect(status).to_have_text("online", timeout=2500)  # within 2 s (one poll a second)
    assert time.monotonic() - t0 < 2.5
    assert page.evaluate("window.notReloaded === true")
    assert page.locator(f"[data-live='dev-{device_id}-seen']").inner_text() != "never"


def test_a_manager_promotes_a_rollout_and_elevates_a_user(sqlite_server, new_page):
    policy = "apiVersion: jcstate/v1\nkind: Policy\nmetadata: {name: team}\nspec:\n  users:\n"
    _, canary = sqlite_server.device(hostname="canary1")
    api = sqlite_server.admin("manager")
    api.call("PUT", f"/api/v1/devices/{canary}/labels", {"labels": {"ring": "0"}})
    api.call("POST", "/api/v1/revisions", {"files": {"t.yaml": policy + "    - {name: al}\n"}})
    staged = {"files": {"t.yaml": policy + "    - {name: bo}\n"}, "canary": "label:ring=0"}
    api.call("POST", "/api/v1/revisions", staged)
    page = new_page()
    sign_in_as(sqlite_server, page, "mia", "manager")
    page.get_by_role("link", name="Rollout").click()
    page.get_by_role("heading", name="Rollout").wait_for()
    assert page.locator("#rollout-state").inner_text() == "canary"
    assert page.get_by_role("link", name="canary1").is_visible()
    page.get_by_role("link", name="Promote…").click()
    page.get_by_role("dialog", name="Promote rollout 1 (revision 2)?").wait_for()
    page.get_by_label("Why").fill("change window")
    page.get_by_role("button", name="Promote").click()
    assert page.get_by_role("status").inner_text() == "Rollout promoted."
    assert page.locator("#rollout-state").inner_text() == "promoted"

    page.get_by_role("link", name="Devices").click()
    page.get_by_role("link", name="canary1").click()
    page.get_by_text("Just-in-time admin", exact=True).click()
    page.get_by_label("User", exact=True).fill("bo")
    page.get_by_role("textbox", name="For (30m, 2h, 1h30m, 1d)").fill("2h")
    page.get_by_label("Reason").fill("INC-4711")
    page.get_by_role("button", name="Elevate").click()
    assert re.search(r"Command \S+ queued\.", page.get_by_role("status").inner_text())
    [made] = sqlite_server.ctx.queue.list(canary)
    assert made["action"] == "elevate" and made["body"]["elevate"]["reason"] == "INC-4711"
