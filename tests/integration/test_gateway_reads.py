"""Gateway reads over the stores the services write (real Redis single + the 6-node cluster, SQLite):
``GET /v1/backtests/{run_id}`` and its trades after a real in-process ``chimera backtest`` of the
shipped data saved into the gateway's store; ``/v1/account-snapshots`` and ``/v1/breakers`` after the
risk role's own store function (``snapshots.record``) and breaker step wrote them.

Expected figures come from the documents as written (read straight from the store) and from hand
arithmetic (the drawdown), never from the route under test.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from litestar.testing import TestClient

from chimera.backtest import service as bt
from chimera.risk import breaker, snapshots
from chimera.schemas.documents.account_risk import AccountSnapshot, to_doc
from chimera.store import open_objects
from chimera.store.collections import ACCOUNT_RISK, ACCOUNT_RISK_EVENTS, BACKTEST_RUNS, BACKTEST_TRADES
from tests.integration.test_config_s10_simulate import _bundle as bundle  # S10's own test bundle
from tests.support.gateway import bearer, gateway_app

WINDOW = ("2025-07-07T00:00", "2025-07-07T01:30")


@pytest.fixture(scope="module")
def backtest_result(tmp_path_factory):
    """One real backtest (S2 → S3 → S4 → S6 in-process over 90 real minutes), shared by both Redis modes."""
    path = tmp_path_factory.mktemp("bt") / "cand.json"
    path.write_text(json.dumps(bundle("cand", 0.0008)))
    return bt.backtest(str(path), ["sample"], *WINDOW)


@pytest.fixture
def client(r, settings):
    app, store = gateway_app(settings, r)
    with TestClient(app) as c:
        c.store = store
        c.headers.update(bearer(c, "viewer"))  # read-only routes: the least role must do
        yield c


def test_backtest_run_and_its_trades(client, settings, backtest_result):
    bt.save(backtest_result, client.store, open_objects(settings.objects_url))
    run_id = backtest_result.run["run_id"]
    stored_run = client.store.get(BACKTEST_RUNS, run_id)
    stored_trades = client.store.query(BACKTEST_TRADES, {"run_id": run_id}, order_by="n")
    assert len(stored_trades) == stored_run["kpis"]["trades"] > 1  # the window does trade

    got = client.get(f"/v1/backtests/{run_id}")
    assert got.status_code == 200, got.text
    assert {k: v for k, v in got.json().items() if k != "_key"} == \
        {k: v for k, v in stored_run.items() if k != "_key"}
    assert got.json()["from"] == WINDOW[0] and got.json()["bundle_id"] == "cand"
    listed = client.get("/v1/backtests").json()["items"]
    assert [x["run_id"] for x in listed] == [run_id]

    trades = client.get(f"/v1/backtests/{run_id}/trades")
    assert trades.status_code == 200, trades.text
    body = trades.json()
    assert body["count"] == len(stored_trades) and body["next_after"] is None
    assert [t["n"] for t in body["items"]] == list(range(1, len(stored_trades) + 1))
    assert [(t["symbol"], t["side"], t["entry_price"], t["net_pnl"]) for t in body["items"]] == \
        [(t["symbol"], t["side"], t["entry_price"], t["net_pnl"]) for t in stored_trades]
    # Paging: two at a time, then on from the last n read, gives the same trades once each.
    page1 = client.get(f"/v1/backtests/{run_id}/trades", params={"limit": 2}).json()
    assert [t["n"] for t in page1["items"]] == [1, 2] and page1["next_after"] == 2
    page2 = client.get(f"/v1/backtests/{run_id}/trades", params={"limit": 500, "after": 2}).json()
    assert [t["n"] for t in page2["items"]] == list(range(3, len(stored_trades) + 1))

    for path in ("/v1/backtests/bt-unknown", "/v1/backtests/bt-unknown/trades"):
        resp = client.get(path)
        assert resp.status_code == 404 and resp.json()["error"] == "NOT_FOUND", resp.text
    bad = client.get(f"/v1/backtests/{run_id}/trades", params={"limit": 0})
    assert bad.status_code == 400 and bad.json()["field"] == "limit", bad.text


DAY_MS = 1_751_846_400_000  # 2025-07-07T00:00Z


def snap(account: str, ts: int, equity: str) -> AccountSnapshot:
    e = Decimal(equity)
    return AccountSnapshot(account_id=account, kind="INTERVAL", trade_date=breaker.trade_date(ts), ts=ts, equity=e,
                           wallet=e, unrealized=Decimal(0), initial_margin=Decimal("12.5"), available=e - 12)


def sample_like_the_risk_role(store, account: str, ts: int, equity: str, limits) -> None:
    """What ``handlers/risk/sample.sample`` writes for one equity sample, minus the venue read."""
    from chimera.schemas.documents.account_risk import BreakerDoc, from_doc

    first = snapshots.record(store, snap(account, ts, equity), interval_ms=300_000)
    st = breaker.step(from_doc(store.get(ACCOUNT_RISK, account), BreakerDoc), account, Decimal(equity), ts, limits,
                      first.equity)
    for e in st.events:
        store.insert_if_absent(ACCOUNT_RISK_EVENTS, f"{e.account_id}:{e.trade_date}:{e.kind}", to_doc(e))
    store.upsert(ACCOUNT_RISK, account, to_doc(st.doc))


def test_account_snapshots_and_breakers(client):
    limits = breaker.Thresholds(enabled=True, soft_pct=Decimal(3), hard_pct=Decimal(5), soft_usdt=None,
                                hard_usdt=None)
    store = client.store
    sample_like_the_risk_role(store, "main", DAY_MS + 60_000, "1000", limits)
    sample_like_the_risk_role(store, "main", DAY_MS + 400_000, "960", limits)  # -4 %: past soft (3 %), not hard
    sample_like_the_risk_role(store, "sub1", DAY_MS + 60_000, "500", limits)

    every = client.get("/v1/account-snapshots").json()
    # main: OPEN (first sample), CLOSE (latest), two INTERVAL buckets; sub1: OPEN, CLOSE, INTERVAL.
    assert every["count"] == 7 == len(snapshots.query(store))
    main_day = client.get("/v1/account-snapshots", params={"account_id": "main", "trade_date": "2025-07-07"}).json()
    assert sorted(x["kind"] for x in main_day["items"]) == ["CLOSE", "INTERVAL", "INTERVAL", "OPEN"]
    assert [x["ts"] for x in main_day["items"]] == sorted(x["ts"] for x in main_day["items"])  # oldest first
    [opening] = client.get("/v1/account-snapshots", params={"account_id": "main", "kind": "OPEN"}).json()["items"]
    [close] = client.get("/v1/account-snapshots", params={"account_id": "main", "kind": "CLOSE"}).json()["items"]
    assert Decimal(opening["equity"]) == Decimal("1000") and Decimal(close["equity"]) == Decimal("960")
    assert client.get("/v1/account-snapshots", params={"trade_date": "2025-07-08"}).json()["count"] == 0

    states = client.get("/v1/breakers").json()
    assert [b["account_id"] for b in states["items"]] == ["main", "sub1"]
    main = client.get("/v1/breakers", params={"account_id": "main"}).json()
    [b] = main["items"]
    assert b["level"] == "SOFT" and b["trade_date"] == "2025-07-07"
    assert Decimal(b["drawdown_usdt"]) == Decimal(40) and Decimal(b["drawdown_pct"]) == Decimal(4)  # by hand
    assert [e["kind"] for e in main["events"]] == ["TRIPPED_SOFT"]
    assert client.get("/v1/breakers", params={"account_id": "nobody"}).json() == {"items": [], "count": 0,
                                                                                  "events": []}

    for params, field in (({"trade_date": "07/07/2025"}, "trade_date"), ({"kind": "DAILY"}, "kind"),
                          ({"account_id": "main; drop"}, "account_id")):
        resp = client.get("/v1/account-snapshots", params=params)
        assert resp.status_code == 400 and resp.json().get("field") == field, resp.text
