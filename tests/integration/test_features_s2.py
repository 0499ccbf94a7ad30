"""S2 over real Redis (standalone + cluster): streamed features equal the in-process recompute,
a killed replica's symbols are taken over with no bar skipped or folded twice, daily regime."""

from __future__ import annotations

import json
import math
import signal
from contextlib import contextmanager
from dataclasses import replace
from decimal import Decimal

import pytest

from chimera.feeds.publish import BatchWriter, kline_key
from chimera.handlers.features.engine import FeatureEngine
from chimera.handlers.features.recompute import recompute
from chimera.handlers.features.regime import DAY_MS, handle_regime
from chimera.handlers.features.role import SPEC
from chimera.handlers.features.toolkit import signal_id
from chimera.ports.features import RedisFeatureState, StoredBar, record_bar
from chimera.ports.venues import Venues
from chimera.schemas.envelope import decode
from chimera.schemas.messages import BookTicker, Kline, TimerFired, Trade
from chimera.store import open_store
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.venues.local.loaders import load_freqtrade_klines
from chimera.venues.local.replay.feed import SAMPLE_DIR
from chimera.workers.clock import ManualClock
from chimera.workers.config import ActiveConfig
from chimera.workers.handler import Context
from chimera.workers.inprocess import InProcessRuntime
from tests.support.polling import group_caught_up, leases_settled, wait_until
from tests.support.workers import ThreadWorker, spawn

SYMS = ("BTCUSDT", "ETHUSDT")


def sample_klines(symbol: str, n: int, skip: int = 0) -> list[Kline]:
    coin = symbol[:-4]
    rows = load_freqtrade_klines(SAMPLE_DIR / f"{coin}_USDT_USDT-1m-futures.feather")[skip:skip + n]
    return [Kline(market="perp", symbol=symbol, interval="1m", open_time=t, close_time=t + 59_999, open=o, high=h,
                  low=lo, close=c, volume=v) for t, o, h, lo, c, v in rows]


def kline_source(data: dict[str, list[Kline]]):
    def load(symbol: str, start: int, end: int) -> list[Kline]:
        return [k for k in data[symbol] if start <= k.open_time < end]
    return load


def publish_bar(r, k: Kline) -> None:
    """A closed bar as S1 writes it: into the bar store, then onto its stream."""
    writer = BatchWriter(r, ManualClock(k.close_time))
    writer.add_closed_bar(k)
    writer.flush()


def publish_minutes(r, data: dict[str, list[Kline]], lo: int, hi: int) -> None:
    for i in range(lo, hi):
        for sym in SYMS:  # the reference first: S1's time alignment
            publish_bar(r, data[sym][i])


def recomputed(data, store, symbol: str, start: int, end: int, settings) -> dict:
    ctx = Context(clock=ManualClock(end), store=store, config=ActiveConfig(), settings=settings,
                  venues=Venues(klines=kline_source(data)))
    return recompute(ctx, symbol, start, end)


def assert_same_features(a: dict, b: dict) -> None:
    assert a["t0"] == b["t0"] and a["flags"] == b["flags"], (a, b)
    for name, va in a["features"].items():
        vb = b["features"][name]
        if va is None or vb is None:
            assert va is vb, (name, va, vb)
        else:
            assert math.isclose(va, vb, rel_tol=1e-12, abs_tol=1e-15), (name, va, vb)


def test_streamed_features_equal_recompute(r, settings, tmp_path):
    n = 320
    data = {s: sample_klines(s, n) for s in SYMS}
    settings = replace(settings, symbols=SYMS)
    with ThreadWorker(SPEC, r, settings, "s2-a") as w:
        publish_minutes(r, data, 0, n)
        store = w.store
        wait_until(lambda: store.count("signals", {"symbol": "ETHUSDT"}) == n and
                   store.count("signals", {"symbol": "BTCUSDT"}) == n, timeout=60, message="all bars featured")
    feats = [decode(f, i.decode(), "") for i, f in r.xrange(keys.feat_stream("ETHUSDT"))]
    assert [e.payload.signal_id for e in feats] == [signal_id("ETHUSDT", k.open_time) for k in data["ETHUSDT"]]
    cached = FeatureEngine.from_bytes(r.get(keys.feat_cache("ETHUSDT")))  # written once per read batch
    assert cached.state.last_open == data["ETHUSDT"][-1].open_time
    assert 1 <= int(r.get(keys.feat_cache_seq("ETHUSDT"))) <= n
    last = feats[-1].payload
    assert last.features["rv_240"] is not None and last.features["rho"] is not None and "rho" not in last.flags

    other = open_store(f"sqlite:///{tmp_path}/recompute.sqlite")
    start, end = data["ETHUSDT"][0].open_time, data["ETHUSDT"][-1].open_time + 60_000
    summary = recomputed(data, other, "ETHUSDT", start, end, settings)
    assert summary["signals_written"] == n
    for k in data["ETHUSDT"]:
        sid = signal_id("ETHUSDT", k.open_time)
        streamed, again = store.get("signals", sid), other.get("signals", sid)
        assert again["features_source"] == "recompute"
        assert_same_features(streamed, again)


def test_recompute_command_backfills_and_records_strategy_event(r, settings, tmp_path):
    from chimera.handlers.features.recompute import handle_recompute
    from chimera.schemas.messages import RecomputeFeatures
    from chimera.streams.producer import Emit, envelope_for

    data = {s: sample_klines(s, 120) for s in SYMS}
    store = open_store(f"sqlite:///{tmp_path}/s.sqlite")
    store.upsert("signals", signal_id("ETHUSDT", data["ETHUSDT"][100].open_time),
                 {"signal_id": signal_id("ETHUSDT", data["ETHUSDT"][100].open_time), "side": "BUY"})
    cmd = RecomputeFeatures(symbol="ETHUSDT", start_ms=data["ETHUSDT"][100].open_time,
                            end_ms=data["ETHUSDT"][110].open_time)
    env = envelope_for(Emit(keys.FEAT_COMMANDS, cmd, "rc-1"), parent=None, now_ms=0)
    ctx = Context(clock=ManualClock(1), store=store, config=ActiveConfig(), settings=settings,
                  venues=Venues(klines=kline_source(data)))
    emits = handle_recompute(env, ctx)
    assert emits[0].payload.kind == "FEATURE_RECOMPUTE"
    docs = store.query("signals", {"symbol": "ETHUSDT"})
    assert len(docs) == 10
    kept = store.get("signals", signal_id("ETHUSDT", data["ETHUSDT"][100].open_time))
    assert kept["side"] == "BUY" and kept["features"]["rv_60"] is not None  # backfilled, S3's field kept
    ev = store.query("strategy_events", {"kind": "FEATURE_RECOMPUTE"})
    assert len(ev) == 1 and ev[0]["signals_written"] == 10


@contextmanager
def two_replicas(settings):
    """Two S2 worker processes; what is still alive is stopped at the end."""
    procs = {name: spawn("chimera.handlers.features.role:SPEC", name, settings, CHIMERA_SYMBOLS=",".join(SYMS))
             for name in ("s2-x", "s2-y")}
    try:
        yield procs
    finally:
        for p in procs.values():
            p.send_signal(signal.SIGTERM)
        for p in procs.values():
            p.wait(20)


def replicas_settled(r, settings, procs: dict) -> None:
    """Both replicas registered and holding their share of S2's leases. Until then a replica that
    started first holds every stream and hands some back when the other joins: a stream has no
    holder between the hand-back and the receiver's next beat, so acting before this is a race."""
    streams = SPEC.streams(replace(settings, symbols=SYMS))
    wait_until(lambda: leases_settled(r, "s2", streams, procs), timeout=30,
               message="both replicas holding their share of the leases")


def kill_owner(r, procs: dict, stream: str) -> str:
    """SIGKILL the replica holding ``stream``'s lease; returns the lease key."""
    lease = keys.lease_key("s2", stream)
    # Polled: under load a late heartbeat can still move a lease (a short window with no holder).
    owner = wait_until(lambda: r.get(lease), timeout=10, message=f"a holder of {lease}")
    victim = procs.pop(owner.decode())
    victim.send_signal(signal.SIGKILL)
    victim.wait(10)
    return lease


def wait_all_featured(store, n: int) -> None:
    for sym in SYMS:
        wait_until(lambda sym=sym: store.count("signals", {"symbol": sym}) == n, timeout=90,
                   message=f"survivor finished {sym}")


@pytest.mark.timeout(180)
def test_killed_replica_symbols_taken_over_no_bar_skipped_or_twice(r, settings, tmp_path):
    n = 260
    data = {s: sample_klines(s, n) for s in SYMS}
    store = open_store(settings.store_url)
    eth = keys.mkt_stream("perp", "ETHUSDT")
    with two_replicas(settings) as procs:
        replicas_settled(r, settings, procs)
        publish_minutes(r, data, 0, 120)
        wait_until(lambda: store.count("signals", {"symbol": "ETHUSDT"}) >= 60, timeout=60, message="ETH progress")
        lease = kill_owner(r, procs, eth)
        publish_minutes(r, data, 120, n)
        wait_all_featured(store, n)
        assert r.get(lease).decode() == next(iter(procs))
    other = open_store(f"sqlite:///{tmp_path}/recompute.sqlite")
    start, end = data["ETHUSDT"][0].open_time, data["ETHUSDT"][-1].open_time + 60_000
    recomputed(data, other, "ETHUSDT", start, end, replace(settings, symbols=SYMS))
    for k in data["ETHUSDT"]:
        sid = signal_id("ETHUSDT", k.open_time)
        assert_same_features(store.get("signals", sid), other.get("signals", sid))
    ids = [decode(f).payload.signal_id for _, f in r.xrange(keys.feat_stream("ETHUSDT"))]
    assert sorted(set(ids)) == sorted(signal_id("ETHUSDT", k.open_time) for k in data["ETHUSDT"])
    cached = FeatureEngine.from_bytes(r.get(keys.feat_cache("ETHUSDT")))
    assert cached.state.last_open == data["ETHUSDT"][-1].open_time  # the survivor's cache holds the last bar


def test_bar_store_reads_are_memoized_and_never_stale(r):
    def store(t: int) -> None:
        record_bar(r, "BTCUSDT", StoredBar(t * 60_000, "1", "1", "1", str(100 + t), "1"))

    def direct(after, upto) -> list:
        return [(t, c) for t, c in ((m, float(100 + m // 60_000)) for m in range(0, 3600_000, 60_000))
                if (after is None or t > after) and t <= upto and r.zcount(keys.mkt_bars("BTCUSDT"), t, t)]

    for t in range(10):
        store(t)
    bars = RedisFeatureState(r)
    assert bars.closes("BTCUSDT", None, 3 * 60_000) == direct(None, 3 * 60_000)
    assert bars.closes("BTCUSDT", 3 * 60_000, 9 * 60_000) == direct(3 * 60_000, 9 * 60_000)
    store(10)  # past what was read: read again
    assert bars.closes("BTCUSDT", 9 * 60_000, 10 * 60_000) == [(600_000, 110.0)]
    assert bars.closes("BTCUSDT", 60_000, 5 * 60_000) == direct(60_000, 5 * 60_000)  # before what it kept
    assert bars.closes("BTCUSDT", 10 * 60_000, 20 * 60_000) == []


def minute_events(k: Kline) -> list[tuple[str, object, str]]:
    """One minute of a symbol as S1 publishes it: book tickers and trades at real prices, then the bar.
    ``(stream, message, idempotency key)``; the last book ticker comes at +40 s, before the last trade."""
    stream = keys.mkt_stream("perp", k.symbol)
    out: list[tuple[str, object, str]] = []
    for i, (dt, price) in enumerate(((10_000, k.open), (20_000, k.high), (40_000, k.low), (50_000, k.close))):
        t = k.open_time + dt
        if i % 2 == 0:
            spread = price * Decimal("0.0001")
            out.append((stream, BookTicker(market="perp", symbol=k.symbol, bid=price - spread, bid_qty=Decimal(i + 1),
                                           ask=price + spread, ask_qty=Decimal(3 - i), mid=price,
                                           spread_bp=2.0, ts=t), f"book:{k.symbol}:{t}"))
        else:
            out.append((stream, Trade(market="perp", symbol=k.symbol, trade_id=t, price=price, qty=k.volume / 4,
                                      buyer_is_maker=i == 3, ts=t), f"trade:{k.symbol}:{t}"))
    out.append((stream, k, kline_key(k)))
    return out


def feed(data: dict[str, list[Kline]], n: int, cut: int) -> tuple[list, list]:
    """Every minute of both symbols in S1's order (BTC's bar before ETH's), split inside ETH's minute
    ``cut``: after its first three events (two book tickers and a trade), before its last trade and bar."""
    before, after = [], []
    for i in range(n):
        for sym in SYMS:
            evs = minute_events(data[sym][i])
            if i < cut or (i == cut and sym == "BTCUSDT"):
                before += evs
            elif i == cut:
                before += evs[:3]
                after += evs[3:]
            else:
                after += evs
    return before, after


def publish_events(r, events: list) -> None:
    producer = Producer(r, ManualClock(0))
    for stream, msg, key in events:
        if isinstance(msg, Kline):
            publish_bar(r, msg)
        else:
            producer.publish(stream, msg, key, event_time=msg.ts)


@pytest.mark.timeout(180)
def test_sigkill_mid_bar_survivor_resumes_from_the_state_cache(r, settings, tmp_path):
    n, cut = 140, 100
    data = {s: sample_klines(s, n) for s in SYMS}
    before, after = feed(data, n, cut)
    store = open_store(settings.store_url)
    eth = keys.mkt_stream("perp", "ETHUSDT")
    with two_replicas(settings) as procs:
        replicas_settled(r, settings, procs)
        publish_events(r, before)
        # The owner has read and acked ETH's stream up to the middle of bar `cut`: its book tickers are
        # folded in, the bar is not, and no later book ticker will come for that bar.
        wait_until(lambda: group_caught_up(r, eth, keys.group("s2")), timeout=60, message="ETH consumed up to mid-bar")
        assert store.count("signals", {"symbol": "ETHUSDT"}) == cut
        cached = FeatureEngine.from_bytes(r.get(keys.feat_cache("ETHUSDT"))).state
        assert cached.last_open == data["ETHUSDT"][cut - 1].open_time
        assert cached.book_ts == data["ETHUSDT"][cut].open_time + 40_000  # the half bar is in the cache
        lease = kill_owner(r, procs, eth)
        publish_events(r, after)
        wait_all_featured(store, n)
        assert r.get(lease).decode() == next(iter(procs))
    # The same events without a kill, through the same handler in one process.
    reference = open_store(f"sqlite:///{tmp_path}/no-kill.sqlite")
    rt = InProcessRuntime([SPEC], store=reference, settings=replace(settings, symbols=SYMS))
    for stream, msg, key in before + after:
        rt.publish(stream, msg, key, event_time=msg.close_time if isinstance(msg, Kline) else msg.ts)
    rt.run()
    for k in data["ETHUSDT"]:
        sid = signal_id("ETHUSDT", k.open_time)
        assert_same_features(store.get("signals", sid), reference.get("signals", sid))
    mid_bar = store.get("signals", signal_id("ETHUSDT", data["ETHUSDT"][cut].open_time))
    # Its book features are the book ticker folded in before the kill (none came after it).
    assert math.isclose(mid_bar["features"]["mid"], float(data["ETHUSDT"][cut].low), rel_tol=1e-12)
    ids = [decode(f).payload.signal_id for _, f in r.xrange(keys.feat_stream("ETHUSDT"))]
    assert ids == [signal_id("ETHUSDT", k.open_time) for k in data["ETHUSDT"]]  # none skipped, none twice


def test_daily_regime_percentile_state_metric_and_next_tick(r, settings, tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/s.sqlite")
    as_of = 1_700_006_700_000 - (1_700_006_700_000 % DAY_MS) + 5 * 60_000
    for d in range(1, 11):  # ten quieter days
        store.upsert("regime_history", f"BTCUSDT:d{d}", {"symbol": "BTCUSDT", "as_of": as_of - d * DAY_MS,
                                                          "rv": 0.1 + 0.01 * d})
    price = Decimal(30000)
    for i in range(1441):  # a volatile day: +-1% per minute
        t = as_of - DAY_MS - 60_000 + i * 60_000
        price = price * (Decimal("1.01") if i % 2 else Decimal("0.99"))
        record_bar(r, "BTCUSDT", StoredBar(t, str(price), str(price), str(price), str(price), "1"))
    clock = ManualClock(as_of + 1500)
    ctx = Context(clock=clock, store=store, config=ActiveConfig(), redis=r, settings=settings)
    from chimera.streams.producer import Emit, envelope_for

    timer = TimerFired(name="s2.regime", due_ms=as_of)
    env = envelope_for(Emit(keys.FEAT_COMMANDS, timer, "t1"), parent=None, now_ms=as_of)
    emits = handle_regime(env, ctx)
    state = json.loads(r.get(keys.REGIME_STATE))
    assert state["regime"] == "EXTREME" and state["pct"] == 1.0 and state["rev"] == 1
    assert state["expires_at"] == as_of + 26 * 3_600_000 and 0 < r.pttl(keys.REGIME_STATE) <= 26 * 3_600_000
    assert emits[0].stream == keys.metrics_stream("s2.regime_latency") and emits[0].payload.value == 1500.0
    assert (emits[1].due_ms, emits[1].timer_key) == (as_of + DAY_MS, keys.REGIME_TIMER)  # the next tick
    handle_regime(env, ctx)  # a redelivery: same day document, a new rev
    assert json.loads(r.get(keys.REGIME_STATE))["rev"] == 2
    assert store.count("regime_history", {"symbol": "BTCUSDT"}) == 11

