"""The accounts page in chromium: the live channel's STATE_SNAPSHOT fills it, and each
ACCOUNT_STREAM_STATUS that S1's StatusBoard publishes replaces the account's row while the page is open."""

from __future__ import annotations

import time
from decimal import Decimal

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


def test_positions_page_shows_the_all_view_and_virtual_positions(open_as, ui_server):
    from chimera.accounts import role as vpos
    from chimera.accounts import virtual as vp

    store = ui_server.store
    for pid, acc, qty, entry in (("ui-all-1", "main", "2", "0.50"), ("ui-all-2", "sub1", "6", "0.54")):
        store.upsert("positions", pid, {"pos_id": pid, "account_id": acc, "symbol": "XRPUSDT", "side": "BUY",
                                        "qty": qty, "entry_price": entry, "state": "ACTIVE", "market": "FUT"})
    vpos.change(store, "sub1", "XRPUSDT", lambda b: vp.book_fill(
        b, trade_id="901", strategy="breakout", side="BUY", qty=Decimal("6"), price=Decimal("0.54"))[0])
    page = open_as("viewer", "/ui/positions")
    row = page.locator("#row-all-FUT-XRPUSDT-BUY")
    expect(row).to_contain_text("8")  # 2 + 6
    expect(row).to_contain_text("0.53")  # (2 * 0.50 + 6 * 0.54) / 8
    expect(row).to_contain_text("main: 2, sub1: 6")
    virtual = page.locator("#virtual tr", has_text="breakout")
    expect(virtual).to_contain_text("sub1")
    expect(virtual).to_contain_text("XRPUSDT")


def test_ops_page_shows_health_checks_and_per_account_figures(open_as, ui_server):
    store, r = ui_server.store, ui_server.r
    now = WallClock().now_ms()
    store.upsert("order_intents", "ui-ops-1", {"intent_id": "ui-ops-1", "account_id": "sub1", "created_at": now})
    store.upsert("orders", "ui-ops-1:mkt", {"intent_id": "ui-ops-1", "leg": "mkt", "status": "REJECTED",
                                            "created_at": now})
    StatusBoard(r, WallClock()).set("main", "CONNECTED", market="perp")
    page = open_as("viewer", "/ui/ops")
    expect(page.locator("#card-ops-status")).to_contain_text("DEGRADED")  # no worker runs in this test
    sub1 = page.locator("#row-ops-sub1 td")
    expect(sub1.nth(2)).to_have_text("1")  # orders
    expect(sub1.nth(3)).to_have_text("1")  # rejects
    expect(page.locator("#row-check-redis")).to_contain_text("OK")
    expect(page.locator("#row-check-heartbeat-s4")).to_contain_text("DEGRADED")
    expect(page.locator("#ops-checks")).to_contain_text("account_streams:main")


def test_ops_page_refreshes_when_an_account_stream_changes(open_as, ui_server):
    board = StatusBoard(ui_server.r, WallClock())
    board.set("sub1", "CONNECTED", market="user_fut")
    page = open_as("viewer", "/ui/ops")
    page.wait_for_function("document.body.dataset.live === 'open'")
    sub1 = page.locator("#row-ops-sub1 td").nth(1)
    expect(sub1).to_have_text("CONNECTED")
    board.set("sub1", "DISCONNECTED", "socket closed", market="user_fut")
    expect(sub1).to_have_text("DISCONNECTED", timeout=3000)
