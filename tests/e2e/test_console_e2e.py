"""End to end in a real browser: ``jcstate server`` as a process, the real agent in a test host,
Debian's chromium driven by Playwright, the way an administrator works in the console.

The administrator is added with ``jcstate admin add`` (the CLI, through the API), signs in
with a password and a TOTP code, finds the device with the filter, opens **Actions → Lock**,
confirms in the dialog that names the device, and watches the command go to ``succeeded``
on the page without reloading it; the test host's ``loginctl`` stand-in records the lock.
An erase with a mistyped hostname is refused and nothing reaches the device.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from harness import jcstate_argv
from test_agent_e2e import AgentInHost, wait_for
from test_commands import install_standins, recorded, sessions

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))

from browser import launched, page_maker, screenshot, sign_in  # noqa: E402
from console_session import PASSWORD, code_for  # noqa: E402

from jcstate.server.api_client import AdminClient  # noqa: E402

GROUP = """\
apiVersion: jcstate/v1
kind: Policy
metadata: {name: ops}
spec:
  groups:
    - {name: operators, gid: 2100}
"""


@pytest.fixture
def new_page() -> Any:
    with launched() as chromium, page_maker(chromium) as make:
        yield make


def test_lock_from_the_actions_menu_reaches_succeeded_on_screen(
    testhost, server_proc, tmp_path, new_page
):
    data = tmp_path / "data"
    token = (data / "admin-token").read_text().strip()
    key = (data / "connect-key").read_text().strip()
    url = server_proc.url
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("JCSTATE_")},
        "JCSTATE_SERVER": url,
        "JCSTATE_TOKEN": token,
    }
    added = subprocess.run(
        [*jcstate_argv(), "admin", "add", "ada", "--role", "administrator", "--password-stdin"],
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
    )
    assert added.returncode == 0, added.stderr

    install_standins(testhost)
    sessions(testhost, graphical=True)  # a desktop session for the lock to lock
    admin = AdminClient(url, token)
    admin.call("POST", "/api/v1/revisions", {"files": {"team.yaml": GROUP}, "message": "ops"})
    agent = AgentInHost(testhost, url, key)
    try:
        agent.start()
        host = testhost.hostname
        page = new_page()

        sign_in(page, url, "ada", "not the password")
        assert page.get_by_role("alert").inner_text() == "Wrong name or password."
        sign_in(page, url, "ada")
        page.get_by_label("Code").fill(code_for(page.locator("code.seed").inner_text()))
        page.get_by_role("button", name="Verify").click()
        page.get_by_role("heading", name="Devices").wait_for()

        def listed() -> bool:
            page.get_by_label("Hostname").fill(host)
            page.get_by_label("Status").select_option("online")
            page.get_by_role("button", name="Filter").click()
            return page.get_by_role("link", name=host, exact=True).count() == 1

        wait_for(listed, 30, step=0.5)
        page.get_by_role("link", name=host, exact=True).click()
        page.get_by_role("heading", name=host, exact=True).wait_for()

        def reported() -> bool:
            page.reload()
            return page.get_by_text("No report yet.").count() == 0

        wait_for(reported, 30, step=0.5)  # the agent converged on the policy and reported
        assert page.get_by_role("cell", name="operators").count() == 1  # the group it created
        assert "Rendered from revision 1" in page.locator("main").inner_text()

        page.get_by_text("Actions", exact=True).click()
        page.get_by_role("link", name="Lock", exact=True).click()
        dialog = page.get_by_role("dialog", name=f"Lock {host}?")
        assert "gets the command when it next connects" in dialog.inner_text()
        screenshot(page, "confirm-lock")
        dialog.get_by_role("button", name="Lock").click()

        page.get_by_role("status").wait_for()  # "Command … queued."
        page.evaluate("window.notReloaded = true")
        state = page.locator("[data-live$='-state']").first
        seen = [state.inner_text()]

        def succeeded() -> bool:
            text = state.inner_text()
            if text != seen[-1]:
                seen.append(text)
            return text == "succeeded"

        wait_for(succeeded, 20, step=0.05)
        assert page.evaluate("window.notReloaded === true")  # updated in place, no reload
        assert seen[0] in ("queued", "delivered", "running") and len(seen) >= 2, seen
        assert recorded(testhost).count("loginctl [lock-sessions]") == 1
        screenshot(page, "device")

        # Erase with the hostname mistyped: refused, nothing queued, nothing wiped
        page.get_by_text("Actions", exact=True).click()
        page.get_by_role("link", name="Erase", exact=True).click()
        dialog = page.get_by_role("dialog", name=f"Erase {host}?")
        dialog.get_by_label("Type the hostname").fill(host + "x")
        screenshot(page, "confirm-erase")
        dialog.get_by_role("button", name="Erase").click()
        assert "does not match" in page.get_by_role("alert").inner_text()
        assert not any(
            line.startswith(("cryptsetup", "wipefs", "blkdiscard")) for line in recorded(testhost)
        )
        assert [c["action"] for c in admin.call("GET", "/api/v1/commands")] == ["lock"]
    finally:
        agent.stop()
        admin.close()
