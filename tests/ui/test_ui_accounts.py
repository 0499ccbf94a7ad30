"""The accounts page in chromium: the live channel's STATE_SNAPSHOT fills it, and each
ACCOUNT_STREAM_STATUS that S1's StatusBoard publishes replaces the account's row while the page is open."""

from __future__ import annotations

import time

from playwright.sync_api import expect

from chimera.feeds.role import StatusBoard
from chimera.streams import keys
from chimera.workers.clock import WallClock


def test_account_stream_status_changes_live_on_an_open_page(open_as, ui_server):
    r = ui_server.r
    board = StatusBoard(r, WallClock())
    board.set("sub1", "CONNECTED", market="user_fut")
    page = open_as("viewer", "/ui/accounts")
    page.wait_for_function("document.body.dataset.live === 'open' && document.body.dataset.snapshot === '2'")
    row = page.locator("#row-acct-sub1")
    expect(row).to_contain_text("user_fut: CONNECTED")
    t0 = time.monotonic()
    board.set("sub1", "DISCONNECTED", "listenKey expired", market="user_fut")
    expect(row).to_contain_text("user_fut: DISCONNECTED", timeout=2000)
    assert time.monotonic() - t0 < 2.0
    expect(row).to_contain_text("user_fut: listenKey expired")
    # What the page shows is what S1 wrote.
    assert r.hget(keys.s1_stream_status("sub1"), "ws_status") == b"DISCONNECTED"
    expect(page.locator("#row-acct-main")).to_have_count(1)  # the other account's row is untouched
    assert page.evaluate("document.body.dataset.accountStatus") == "sub1:user_fut:DISCONNECTED"
