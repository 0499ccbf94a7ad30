"""The web UI in a real browser (Debian's chromium via Playwright) against the gateway on real Redis.

Each flow asserts what a person sees and what landed in the source of truth (Redis keys, streams,
the store).
"""

from __future__ import annotations

import json
import time
import uuid
from decimal import Decimal
from pathlib import Path

import httpx
from playwright.sync_api import expect

from chimera.schemas.envelope import decode
from chimera.schemas.messages import DeadLetter, VenueReport
from chimera.schemas.strategy import decode_kill_switch
from chimera.store.collections import ALERTS, APPROVALS, POSITIONS, SIGNALS
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.workers.clock import WallClock
from tests.support.gateway import PASSWORD

DOCS_IMG = Path(__file__).resolve().parents[2] / "docs" / "img"


def uid() -> str:
    return uuid.uuid4().hex[:10]


def entries(r, stream):
    return [decode(f) for _, f in r.xrange(stream)]


def test_login_lands_on_the_dashboard(open_as):
    page = open_as("viewer")
    expect(page.locator("#who")).to_have_text("viewer (viewer)")
    expect(page.locator("h1")).to_have_text("Dashboard")
    expect(page.locator("#card-health")).to_be_visible()


def test_wrong_password_stays_on_login_with_an_error(browser, ui_server):
    page = browser.new_page()
    page.goto(f"{ui_server.base}/ui/login")
    page.fill("input[name=username]", "trader")
    page.fill("input[name=password]", "not-the-password")
    page.click("button[type=submit]")
    expect(page.locator(".flash.error")).to_contain_text("wrong password")
    assert page.url.endswith("/ui/login")
    page.close()


def test_signed_out_visitor_is_sent_to_login(browser, ui_server):
    page = browser.new_page()
    page.goto(f"{ui_server.base}/ui/positions")
    assert page.url.endswith("/ui/login")
    page.close()


def test_rbac_refusal_viewer_cannot_open_the_dlq(open_as, ui_server):
    page = open_as("viewer")
    resp = page.goto(f"{ui_server.base}/ui/dlq")
    assert resp.status == 403
    expect(page.locator("h1")).to_have_text("Not allowed")
    expect(page.locator(".flash.error")).to_contain_text("FORBIDDEN")


def test_rbac_refusal_viewer_cannot_pull_the_kill_switch(open_as, ui_server):
    ui_server.r.delete(keys.KILL_SWITCH)
    page = open_as("viewer")
    page.select_option("#form-killswitch select[name=mode]", "HALT_NEW")
    page.fill("#form-killswitch input[name=reason]", "viewer tries")
    page.click("#form-killswitch button")
    expect(page.locator("#flash .flash.error")).to_contain_text("FORBIDDEN")
    assert ui_server.r.get(keys.KILL_SWITCH) is None


def test_a_live_refresh_keeps_what_the_user_typed_into_a_form(open_as, ui_server):
    risk = open_as("risk")
    risk.select_option("#form-killswitch select[name=mode]", "OFF")
    risk.fill("#form-killswitch input[name=reason]", "half typed")
    risk.evaluate("""() => new Promise(done => {
        document.body.addEventListener("htmx:afterSettle", () => done(), {once: true});
        htmx.trigger(document.body, "refresh");
    })""")
    expect(risk.locator("#form-killswitch input[name=reason]")).to_have_value("half typed")
    expect(risk.locator("#form-killswitch select[name=mode]")).to_have_value("OFF")


def test_flip_the_kill_switch_then_lift_it_with_a_second_person(open_as, ui_server):
    r = ui_server.r
    r.delete(keys.KILL_SWITCH)
    risk = open_as("risk")
    risk.select_option("#form-killswitch select[name=mode]", "HALT_NEW")
    risk.fill("#form-killswitch input[name=reason]", "ui drill")
    risk.fill("#form-killswitch input[name=ttl_s]", "600")
    risk.click("#form-killswitch button")
    expect(risk.locator("#flash")).to_contain_text("HALT_NEW set")
    ks = decode_kill_switch(r.get(keys.KILL_SWITCH))
    assert (ks.mode, ks.set_by, ks.reason) == ("HALT_NEW", "risk", "ui drill")
    expect(risk.locator("#card-killswitch")).to_contain_text("HALT_NEW by risk")  # the page refreshed itself
    # Lift: stored, not applied.
    risk.select_option("#form-killswitch select[name=mode]", "OFF")
    risk.fill("#form-killswitch input[name=reason]", "drill over")
    risk.click("#form-killswitch button")
    expect(risk.locator("#flash")).to_contain_text("waits for a second person")
    assert r.get(keys.KILL_SWITCH) is not None
    [ap] = [a for a in ui_server.store.query(APPROVALS, {"kind": "KILL_SWITCH_LIFT", "status": "PENDING"})]
    # The requester sees no approve button on their own request.
    risk.goto(f"{ui_server.base}/ui/approvals")
    expect(risk.locator(f"#row-{ap['approval_id']} button")).to_have_count(0)
    admin = open_as("admin", "/ui/approvals")
    admin.click(f"#row-{ap['approval_id']} button:has-text('approve')")
    expect(admin.locator("#flash")).to_contain_text("EXECUTED")
    assert r.get(keys.KILL_SWITCH) is None
    ops = [e.payload for e in entries(r, keys.OPS_EVENTS) if e.payload.kind.startswith("KILL_SWITCH")]
    assert [(o.kind, o.actor) for o in ops[-2:]] == [("KILL_SWITCH_SET", "risk"), ("KILL_SWITCH_CLEARED", "admin")]


def test_transfer_requested_by_one_and_approved_by_a_second_user(open_as, ui_server):
    r = ui_server.r
    before = r.xlen(keys.TREASURY_COMMANDS)
    risk = open_as("risk", "/ui/approvals")
    risk.fill("#form-transfer input[name=amount]", "42.5")
    risk.select_option("#form-transfer select[name=direction]", "UMFUTURE_MAIN")
    risk.fill("#form-transfer input[name=reason]", "ui test")
    risk.click("#form-transfer button")
    expect(risk.locator("#flash")).to_contain_text("waits for a second person")
    assert r.xlen(keys.TREASURY_COMMANDS) == before
    aid = risk.locator("#flash").inner_text().split("approval ")[1].split(" ")[0]
    expect(risk.locator(f"#row-{aid}")).to_contain_text("PENDING")  # the inbox refreshed itself
    risk2 = open_as("risk2", "/ui/approvals")
    risk2.click(f"#row-{aid} button:has-text('approve')")
    expect(risk2.locator("#flash")).to_contain_text("EXECUTED")
    expect(risk2.locator(f"#row-{aid}")).to_contain_text("risk2")
    [env] = entries(r, keys.TREASURY_COMMANDS)[before:]
    assert (env.payload.amount, env.payload.direction, env.payload.requested_by) == (
        Decimal("42.5"), "UMFUTURE_MAIN", "risk")


def test_rejected_transfer_never_reaches_s1(open_as, ui_server):
    r = ui_server.r
    before = r.xlen(keys.TREASURY_COMMANDS)
    risk = open_as("risk", "/ui/approvals")
    risk.fill("#form-transfer input[name=amount]", "7")
    risk.click("#form-transfer button")
    expect(risk.locator("#flash")).to_contain_text("waits")
    aid = risk.locator("#flash").inner_text().split("approval ")[1].split(" ")[0]
    admin = open_as("admin", "/ui/approvals")
    admin.click(f"#row-{aid} button:has-text('reject')")
    expect(admin.locator("#flash")).to_contain_text("REJECTED")
    assert ui_server.store.get(APPROVALS, aid)["status"] == "REJECTED" and r.xlen(keys.TREASURY_COMMANDS) == before


def test_a_fill_appears_on_an_open_page_within_one_second(open_as, ui_server):
    page = open_as("trader", "/ui/orders")
    page.wait_for_function("document.body.dataset.live === 'open'")
    cid = f"c-{uid()}"
    report = VenueReport(market="FUT", symbol="BTCUSDT", client_order_id=cid, venue_order_id="991", side="BUY",
                         order_type="MARKET", exec_type="TRADE", order_status="FILLED", qty=Decimal("0.010"),
                         cum_qty=Decimal("0.010"), last_qty=Decimal("0.010"), last_price=Decimal("61234.5"),
                         trade_id=77, ts=1_700_000_000_000)
    t0 = time.monotonic()
    Producer(ui_server.r, WallClock()).publish(keys.VENUE_REPORTS, report, idempotency_key=f"rep-{cid}",
                                               account_id="sub1")
    row = page.locator("#fills tr", has_text=cid)
    expect(row).to_have_count(1, timeout=1000)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, elapsed
    expect(row).to_contain_text("61234.5")
    expect(row).to_contain_text("sub1")


def test_sse_resumes_from_last_event_id(ui_server):
    r = ui_server.r
    with httpx.Client(base_url=ui_server.base, timeout=10) as c:
        tok = c.post("/v1/auth/login", json={"username": "viewer", "password": PASSWORD}).json()["access_token"]
        c.cookies.set("chimera_session", tok)
        prod = Producer(r, WallClock())
        ids = []
        for i in range(3):
            rep = VenueReport(market="FUT", symbol="ETHUSDT", client_order_id=f"resume-{i}", venue_order_id=str(i),
                              side="SELL", order_type="MARKET", exec_type="TRADE", order_status="FILLED",
                              qty=Decimal(1), last_qty=Decimal(1), last_price=Decimal(3000 + i), ts=i)
            ids.append(prod.publish(keys.VENUE_REPORTS, rep, idempotency_key=f"resume-{uid()}"))
        got = []
        with c.stream("GET", "/ui/events", params={"topic": "fills"}, headers={"Last-Event-ID": ids[0]}) as resp:
            assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
            for line in resp.iter_lines():
                if line.startswith("id:"):
                    got.append(line[3:].strip())
                if line.startswith("data:") and "resume-2" in line:
                    break
        assert got == ids[1:]  # after the one it had: exactly the two it missed


def test_positions_show_stop_take_profit_and_distance_to_liquidation(open_as, ui_server):
    pid = f"pos-{uid()}"
    ui_server.store.upsert(POSITIONS, pid, {
        "pos_id": pid, "symbol": "ETHUSDT", "side": "BUY", "state": "ACTIVE", "qty": "0.5", "entry_price": "3000",
        "mark": "3100", "stop": {"price": "2940"}, "take_profit": {"price": "3300"}, "liq_price": "2500",
        "liq_dist": "0.19354", "account_id": "main"})
    page = open_as("viewer", "/ui/positions")
    row = page.locator(f"#row-{pid}")
    for text in ("ETHUSDT", "2940", "3300", "2500", "19.35%"):
        expect(row).to_contain_text(text)


def test_signals_show_the_decision_and_its_reasons(open_as, ui_server):
    sid = f"sig-{uid()}"
    ui_server.store.upsert(SIGNALS, sid, {"signal_id": sid, "symbol": "BTCUSDT", "t0": 5,
                                          "decision": {"action": "skip", "side": "BUY",
                                                       "reason": "KILL_SWITCH_HALT_NEW"}})
    page = open_as("viewer", "/ui/signals")
    row = page.locator("#signals tr", has_text=sid)
    expect(row).to_contain_text("skip")
    expect(row).to_contain_text("KILL_SWITCH_HALT_NEW")


def test_accounts_show_stream_status(open_as, ui_server):
    ui_server.r.hset(keys.s1_stream_status("main"), mapping={"ws_status": "CONNECTED", "last_connected_at": "9"})
    ui_server.r.hset(keys.s1_stream_status_market("main", "perp"), mapping={"ws_status": "CONNECTED"})
    page = open_as("viewer", "/ui/accounts")
    row = page.locator("#accounts tr", has_text="main")
    expect(row).to_contain_text("CONNECTED")
    expect(row).to_contain_text("perp: CONNECTED")


def test_alerts_page_lists_alerts(open_as, ui_server):
    code = f"TEST_{uid()}"
    ui_server.store.upsert(ALERTS, code, {"level": "ERROR", "code": code, "message": "venue unreachable",
                                          "status": "OPEN", "ts": 1})
    page = open_as("viewer", "/ui/alerts")
    expect(page.locator("#alerts tr", has_text=code)).to_contain_text("venue unreachable")


def test_admin_requeues_a_dead_letter(open_as, ui_server):
    r = ui_server.r
    target = f"test:{{dlq}}:{uid()}"
    letter = DeadLetter(stream=target, group="cg:test", entry_id="1-0", fields={"k": b"v"}, reason="boom",
                        attempts=5)
    dl_id = Producer(r, WallClock()).publish(keys.DEAD_LETTER, letter, idempotency_key=f"dl-{uid()}")
    page = open_as("admin", "/ui/dlq")
    page.click(f"#row-{dl_id.replace('-', '_')} button:has-text('requeue')")
    expect(page.locator("#flash")).to_contain_text("requeued as")
    assert r.xlen(target) == 1 and not r.xrange(keys.DEAD_LETTER, min=dl_id, max=dl_id)


def test_unbuilt_pages_say_so(open_as, ui_server):
    page = open_as("viewer", "/ui/bundles")
    expect(page.locator(".note")).to_contain_text("Not built yet")
    for path, service in (("/ui/backtests", "S9"), ("/ui/experiments", "/v1/experiments/run"), ("/ui/autopsy", "S8")):
        page.goto(f"{ui_server.base}{path}")
        expect(page.locator(".note")).to_contain_text(service)


def test_csrf_a_cookie_session_without_the_token_is_refused(open_as, ui_server):
    page = open_as("admin")
    # Same cookies as the page, but a cross-site form cannot add the X-CSRF-Token header.
    resp = page.request.post(f"{ui_server.base}/ui/kill-switch",
                             form={"mode": "FLATTEN", "reason": "csrf", "ttl_s": "60"})
    assert resp.status == 403 and "CSRF_FAILED" in resp.text()
    resp = page.request.post(f"{ui_server.base}/v1/kill-switch",
                             data=json.dumps({"mode": "FLATTEN", "reason": "csrf"}),
                             headers={"content-type": "application/json"})
    assert resp.status == 403 and "CSRF_FAILED" in resp.text()
    assert ui_server.r.get(keys.KILL_SWITCH) is None or decode_kill_switch(
        ui_server.r.get(keys.KILL_SWITCH)).reason != "csrf"


def test_logout_ends_the_session(open_as, ui_server):
    page = open_as("trader")
    cookie = [c for c in page.context.cookies() if c["name"] == "chimera_session"][0]["value"]
    page.click("nav button:has-text('log out')")
    page.wait_for_url(f"{ui_server.base}/ui/login")
    resp = httpx.get(f"{ui_server.base}/v1/auth/me", headers={"Authorization": f"Bearer {cookie}"})
    assert resp.status_code == 401 and resp.json()["error"] == "TOKEN_REVOKED"


def test_dashboard_figures_and_screenshot(open_as, ui_server):
    r, store = ui_server.r, ui_server.store
    r.set(keys.HEALTH_STATE, "GREEN")
    for p in store.query(POSITIONS):  # the dashboard sums every position: start from none
        store.delete(POSITIONS, p["_key"])
    now = int(time.time() * 1000)
    store.upsert(POSITIONS, "shot-open", {"pos_id": "shot-open", "symbol": "BTCUSDT", "side": "BUY", "state": "ACTIVE",
                                          "qty": "0.002", "entry_price": "60000", "mark": "61000"})
    store.upsert(POSITIONS, "shot-closed", {"pos_id": "shot-closed", "symbol": "ETHUSDT", "side": "SELL",
                                            "state": "CLOSED", "qty": "0", "realized_pnl": "12.40", "fees": "0.40",
                                            "closed_at": now})
    page = open_as("admin")
    expect(page.locator("#card-health")).to_contain_text("GREEN")
    expect(page.locator("#card-exposure")).to_contain_text("122.00")  # 0.002 x 61000 (mark)
    expect(page.locator("#card-pnl")).to_contain_text("12.00")  # 12.40 realized - 0.40 fees, closed today
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(DOCS_IMG / "dashboard.png"), full_page=True)
    assert (DOCS_IMG / "dashboard.png").stat().st_size > 10_000
