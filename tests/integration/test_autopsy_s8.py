"""S8 on real data: the sample backtest's closed trades, autopsied by the real role on the in-process
runtime from the pos:events S6 published. Figures are checked against sources S8 does not compute:
the venue engine's own trades (prices, commissions, maker flags, realized PnL) and funding income,
and the kline file read with pandas (markouts). The HTML goes to the local object store and to MinIO
(moto's S3 server) with the same bytes."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from chimera.backtest.results import round_trips
from chimera.handlers.autopsy.generate import get_autopsy, request_autopsy
from chimera.handlers.autopsy.role import SPEC
from chimera.ports.venues import Venues
from chimera.ports.wiring import memory_ports
from chimera.schemas.messages import PositionChanged
from chimera.store import open_objects
from chimera.store.collections import AUTOPSY_REPORTS, SIGNALS, STRATEGY_EVENTS
from chimera.streams import keys
from chimera.workers.clock import ManualClock
from chimera.workers.inprocess import InProcessRuntime
from tests.contract.test_object_store import moto_server  # noqa: F401, F811 - the store suite's moto S3 server
from tests.integration.research_support import exit_events, frames, kline_source, sample_run

HOUR = 3_600_000
TOL = Decimal("1e-8")


@pytest.fixture(scope="module")
def run():
    return sample_run()


class _Entry:
    def __init__(self, payload: PositionChanged) -> None:
        self.payload = payload


def s8_runtime(store, objects, now_ms: int) -> InProcessRuntime:
    clock = ManualClock(now_ms)
    ports = memory_ports(clock, None, venues=Venues(klines=kline_source))
    return InProcessRuntime([SPEC], store=store, objects=objects, clock=clock, ports=ports, follow_event_time=False)


def mid_at(symbol: str, t: int) -> float:
    """The close of the last 1m bar that closed by ``t``, from the file."""
    df = frames()[symbol]
    return float(df.close[df.open_time == (t // 60_000 - 1) * 60_000].iloc[0])


def test_autopsy_of_every_closed_trade_matches_the_venue_and_the_market_data(run, tmp_path, moto_server):  # noqa: F811
    out, _ = run
    store = out.store
    exits = [_Entry(p) for p in exit_events(out)]
    assert len(exits) >= 5
    now = max(s["t0"] for s in store.query(SIGNALS, {})) + 40 * HOUR
    local = open_objects(f"file://{tmp_path}/objs")
    rt = s8_runtime(store, local, now)
    for e in exits:
        rt.publish(keys.POS_EVENTS, e.payload, f"exit:{e.payload.pos_id}")
    rt.run()
    assert not rt.dead, rt.dead
    trips = {t.pos_id: t for t in round_trips(out)}
    eng = out.exchange.engine
    for e in exits:
        tid = e.payload.pos_id
        doc, page = get_autopsy(store, local, tid)
        assert doc is not None and page is not None
        t = trips[tid]
        # Money: the venue's realized PnL, commissions and funding income of this round trip.
        assert abs(Decimal(doc["net_pnl"]) - t.net_pnl) <= TOL
        assert abs(Decimal(doc["roi_net"]) - t.net_pnl / (t.entry_price * t.qty)) <= TOL
        # TCA against the venue's trades of the entry and the decision S3 recorded.
        venue = [x for x in eng.trades if x.symbol == t.symbol and t.entry_time <= x.time <= t.exit_time]
        entry = [x for x in venue if x.side == ("BUY" if t.side == "LONG" else "SELL")]
        sign = 1 if t.side == "LONG" else -1
        vw = sum(x.price * x.qty for x in entry) / sum(x.qty for x in entry)
        sig = store.get(SIGNALS, store.get("positions", tid)["signal_id"])
        dmid = Decimal(sig["decision"]["price"])
        assert abs(Decimal(doc["tca"]["slippage_vs_decision_bp"]) - sign * (vw - dmid) / dmid * 10_000) <= Decimal("0.0001")
        maker = sum(x.qty for x in venue if x.maker) / sum(x.qty for x in venue)
        assert abs(Decimal(doc["tca"]["maker_share"]) - maker) <= Decimal("0.0001")
        # Markouts from the kline file.
        for name, dt in (("1m", 60_000), ("5m", 300_000), ("30m", 1_800_000), ("1h", 3_600_000)):
            want = sign * (mid_at(t.symbol, t.entry_time + dt) - float(vw)) / float(vw) * 1e4
            assert float(doc["markouts"]["entry"][name]) == pytest.approx(want, abs=1e-4)
            xp = float(t.exit_price)
            want_x = -sign * (mid_at(t.symbol, t.exit_time + dt) - xp) / xp * 1e4
            assert float(doc["markouts"]["exit"][name]) == pytest.approx(want_x, abs=1e-4)
        # Held to the 12h label horizon instead, from the file (taker fee both ways).
        m12 = mid_at(t.symbol, t.entry_time + 12 * HOUR)
        want12 = sign * (m12 - float(vw)) / float(vw) - 0.0005 * (float(vw) + m12) / float(vw)
        assert float(doc["counterfactuals"]["exit_at_12h"]) == pytest.approx(want12, abs=1e-8)
        # Peers: every other closed trade of the symbol.
        assert doc["peers"]["symbol"]["n"] == sum(1 for p, x in trips.items() if x.symbol == t.symbol and p != tid
                                                  and x.status == "CLOSED")
        assert set(doc["counterfactuals"]) >= {"actual", "exit_at_12h", "no_trailing", "stop_1x_atr", "stop_2x_atr",
                                               "maker_only_entry"}
        assert doc["tldr"].startswith(t.symbol) and len(doc["tldr"]) < 600
        # Self-contained: no script, no request of any kind; under the size cap.
        text = page.decode()
        assert len(page) <= 300_000 and "<svg" in text
        assert not re.search(r"<script|<link|<img|<iframe|src=|href=|url\(|@import", text, re.I)
        assert re.findall(r"https?://[^\"' ]+", text) == ["http://www.w3.org/2000/svg"]  # a namespace, not a fetch
    # Metric and audit: one AUTOPSY_DONE per trade.
    assert len(rt.entries(keys.metrics_stream("s8.autopsy_latency"))) == len(exits)
    assert store.count(STRATEGY_EVENTS, {"kind": "AUTOPSY_DONE"}) == len(exits)

    # Same inputs → same bytes: a request rewrites the identical report; MinIO gets the same bytes too.
    tid = exits[0].payload.pos_id
    before = local.get(f"autopsy/{tid}.html")
    minio = open_objects(f"minio://testing:testing@127.0.0.1:{moto_server}/chimera-autopsy")
    rt2 = s8_runtime(store, minio, now)
    stream, msg, key = request_autopsy(tid, "req-1", "test")
    rt2.publish(stream, msg, key)
    rt2.run()
    assert not rt2.dead, rt2.dead
    assert minio.get(f"autopsy/{tid}.html") == before
    assert store.get(AUTOPSY_REPORTS, tid)["html_sha256"] == __import__("hashlib").sha256(before).hexdigest()
    assert store.count(STRATEGY_EVENTS, {"kind": "AUTOPSY_DONE"}) == len(exits)  # same report: no second event

    # An unknown trade is a dead letter naming it; a bad id is refused before anything is sent.
    rt2.publish(*request_autopsy("pos-nope", "r", "t")[:2], "nope")
    rt2.run()
    assert rt2.dead and "no position 'pos-nope'" in rt2.dead[-1][2]
    with pytest.raises(Exception, match="is not a position id"):
        request_autopsy("../x/y", "r")


def test_a_fresh_close_arms_the_redo_timer_for_its_later_bars(run, tmp_path):
    out, _ = run
    e = _Entry(exit_events(out)[0])
    pos = out.store.get("positions", e.payload.pos_id)
    rt = s8_runtime(out.store, open_objects(f"file://{tmp_path}/o"), pos["closed_at"] + 1000)
    rt.publish(keys.POS_EVENTS, e.payload, "fresh")
    rt.run()
    armed = rt.armed_timers()
    assert f"s8.redo:{e.payload.pos_id}" in armed
    assert armed[f"s8.redo:{e.payload.pos_id}"] >= pos["created_at"] + 36 * HOUR


def test_an_open_position_is_valued_at_the_last_close(run, tmp_path):
    """STAGNATED (or a request) on an open position: what is held is valued at the last 1m close by now."""
    out, _ = run
    tid = exit_events(out)[0].pos_id
    pos = out.store.get("positions", tid)
    from chimera.store import open_store
    from chimera.store.collections import FILLS, POSITIONS

    store = open_store("sqlite://:memory:")
    entry = [f for f in out.store.query(FILLS, {"pos_id": tid}) if f["side"] == pos["side"]]
    store.upsert(POSITIONS, tid, {**{k: v for k, v in pos.items() if k != "_key"}, "state": "ACTIVE"})
    for f in entry:
        store.upsert(FILLS, f["_key"], {k: v for k, v in f.items() if k != "_key"})
    store.upsert(SIGNALS, pos["signal_id"], out.store.get(SIGNALS, pos["signal_id"]))
    now = int(entry[-1]["ts"]) + 10 * 60_000 + 5_000
    rt = s8_runtime(store, open_objects(f"file://{tmp_path}/o"), now)
    rt.publish(*request_autopsy(tid, "open", "t"))
    rt.run()
    assert not rt.dead, rt.dead
    doc = store.get(AUTOPSY_REPORTS, tid)
    qty = sum(Decimal(f["qty"]) for f in entry)
    vw = sum(Decimal(f["qty"]) * Decimal(f["price"]) for f in entry) / qty
    mark = Decimal(str(mid_at(pos["symbol"], now)))
    sign = 1 if pos["side"] == "BUY" else -1
    want = sign * (mark - vw) * qty - sum(Decimal(f["fee"]) for f in entry)
    assert abs(Decimal(doc["net_pnl"]) - want) <= TOL and doc["closed_at"] == now
