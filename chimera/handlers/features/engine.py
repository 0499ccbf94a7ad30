"""Per-symbol streaming feature engine for S2, with data-quality flags.

The engine owns one ``FeatureState`` (cached in Redis ``feat:{cache}:<symbol>`` as JSON via
``state_to_bytes``) and is fed closed bars of the symbol, closed bars of the correlation
reference (BTC), book snapshots and funding updates, in any interleaving. Replayed or
out-of-order bars are ignored, so at-least-once delivery cannot double-count.

Pure: time comes in with the events and as ``as_of`` arguments, never from the wall.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from enum import StrEnum

import msgspec

from chimera.handlers.features.indicators import (
    AtrState,
    Level,
    annualize,
    atr_update,
    depth_notional,
    pearson,
    sample_std,
    spread_mid,
)

STATE_VERSION = 1
MAX_SMA_WINDOW = 10_000


class DQ(StrEnum):
    WARMING_UP = "warming_up"
    STALE_INPUT = "stale_input"
    GAP = "gap"
    OUTLIER = "outlier"


class Bar(msgspec.Struct, frozen=True):
    open_time: int  # epoch ms
    open: float
    high: float
    low: float
    close: float
    volume: float = 0.0


class FeatureConfig(msgspec.Struct, frozen=True, kw_only=True):
    bar_ms: int = 60_000
    atr_period: int = 14
    rv_windows: tuple[int, ...] = (15, 60, 240)
    rho_window: int = 60
    outlier_k: float = 8.0
    outlier_window: int = 60
    depth_levels: int = 10
    bar_stale_ms: int = 120_000
    book_stale_ms: int = 10_000
    predicted_stale_ms: int = 60_000
    funding_stale_ms: int = 8 * 3_600_000 + 15 * 60_000
    # Simple moving averages of the close over the last n bars (``sma_<n>``); none by default.
    sma_windows: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        bad = [w for w in self.sma_windows if isinstance(w, bool) or not 2 <= w <= MAX_SMA_WINDOW]
        if bad:
            raise ValueError(f"sma_windows {bad}: each must be an integer in [2, {MAX_SMA_WINDOW}]")


class FeatureState(msgspec.Struct, kw_only=True):
    v: int = STATE_VERSION
    symbol: str
    config: FeatureConfig
    atr: AtrState
    last_open: int | None = None
    last_close: float | None = None
    rets: list[float] = msgspec.field(default_factory=list)  # newest last
    last_gap_open: int | None = None  # first bar after a hole
    last_outlier_open: int | None = None
    own_ret: dict[int, float] = msgspec.field(default_factory=dict)  # by bar open time, for rho
    ref_ret: dict[int, float] = msgspec.field(default_factory=dict)
    ref_last_open: int | None = None
    ref_last_close: float | None = None
    ref_last_gap_open: int | None = None
    book_ts: int | None = None
    mid: float | None = None
    spread_bp: float | None = None
    depth_bid: float | None = None
    depth_ask: float | None = None
    depth_imbalance: float | None = None
    funding_rate: float | None = None
    funding_rate_ts: int | None = None
    funding_predicted: float | None = None
    funding_predicted_ts: int | None = None
    next_funding_time: int | None = None
    depth_seen: bool = False  # book features come from S1's depth levels; bookTicker no longer overrides
    closes: list[float] = msgspec.field(default_factory=list)  # the last max(sma_windows) closes, newest last
    bar_values: dict[str, float | None] = msgspec.field(default_factory=dict)  # last bar's bar features


class FeatureSnapshot(msgspec.Struct, frozen=True, kw_only=True):
    symbol: str
    open_time: int | None  # open time of the last bar folded in
    t0: int  # as-of time the values describe
    features: dict[str, float | None]
    flags: dict[str, list[str]]  # only features with at least one flag
    # The bar features (atr, rv, rho, sma) as they were at the previous bar's close: what the rules'
    # ``crosses_above`` / ``crosses_below`` compare with. Empty on the first bar.
    prev: dict[str, float | None] = {}


def state_to_bytes(state: FeatureState) -> bytes:
    return msgspec.json.encode(state)


def state_from_bytes(data: bytes) -> FeatureState:
    state = msgspec.json.decode(data, type=FeatureState)
    if state.v != STATE_VERSION:
        raise ValueError(f"feature state version {state.v}, expected {STATE_VERSION}")
    return state


def new_state(symbol: str, config: FeatureConfig | None = None) -> FeatureState:
    config = config or FeatureConfig()
    return FeatureState(symbol=symbol, config=config, atr=AtrState(period=config.atr_period))


def _check_bar(open_time: int, *prices: float) -> None:
    if not all(p > 0 and p != float("inf") for p in prices):  # also rejects NaN
        raise ValueError(f"bar {open_time}: prices must be finite and positive: {prices}")


class FeatureEngine:
    def __init__(self, state: FeatureState) -> None:
        self.state = state
        self.cfg = state.config
        self._rets_gen = 0  # bumped whenever state.rets changes
        self._std_memo: dict[int, tuple[int, float | None]] = {}  # window -> (rets_gen, stdev)

    @classmethod
    def new(cls, symbol: str, config: FeatureConfig | None = None) -> FeatureEngine:
        return cls(new_state(symbol, config))

    @classmethod
    def from_bytes(cls, data: bytes, config: FeatureConfig | None = None) -> FeatureEngine:
        """Resume from a cached state; a config change means the cache is not comparable."""
        state = state_from_bytes(data)
        if config is not None and state.config != config:
            raise ValueError("cached feature state was built with another config")
        return cls(state)

    def to_bytes(self) -> bytes:
        return state_to_bytes(self.state)

    # ------------------------------------------------------------- inputs

    def on_bar(self, bar: Bar) -> FeatureSnapshot | None:
        """Fold one closed bar in; returns the snapshot at its close, or None for a replay."""
        s, cfg = self.state, self.cfg
        if s.last_open is not None and bar.open_time <= s.last_open:
            return None
        _check_bar(bar.open_time, bar.open, bar.high, bar.low, bar.close)
        if s.last_open is not None and bar.open_time - s.last_open > cfg.bar_ms:
            s.last_gap_open = bar.open_time
        elif s.last_close is not None:
            # A return across a hole is not a 1-bar return: it is left out, not stretched.
            r = _log_return(bar.close, s.last_close)
            sd = self._std(cfg.outlier_window)  # of the returns before this one
            if sd is not None and abs(r) > cfg.outlier_k * sd:
                s.last_outlier_open = bar.open_time
            s.rets.append(r)
            del s.rets[:-max((*cfg.rv_windows, cfg.outlier_window))]
            self._rets_gen += 1
            s.own_ret[bar.open_time] = r
        atr_update(s.atr, bar.high, bar.low, bar.close)
        s.last_open, s.last_close = bar.open_time, bar.close
        if cfg.sma_windows:
            s.closes.append(bar.close)
            del s.closes[:-max(cfg.sma_windows)]
        self._prune()
        snap = self.snapshot(bar.open_time + cfg.bar_ms)
        prev, s.bar_values = s.bar_values, {k: snap.features[k] for k in self._bar_names()}
        return msgspec.structs.replace(snap, prev=prev)

    def _bar_names(self) -> tuple[str, ...]:
        cfg = self.cfg
        return ("atr", "atr_pct", *(f"rv_{w}{a}" for w in cfg.rv_windows for a in ("", "_ann")), "rho",
                *(f"sma_{w}" for w in cfg.sma_windows))

    def on_reference_bar(self, open_time: int, close: float) -> bool:
        """Closed bar of the correlation reference (BTC); False for a replay."""
        s = self.state
        if s.ref_last_open is not None and open_time <= s.ref_last_open:
            return False
        _check_bar(open_time, close)
        if s.ref_last_open is not None and open_time - s.ref_last_open > self.cfg.bar_ms:
            s.ref_last_gap_open = open_time
        elif s.ref_last_close is not None:
            s.ref_ret[open_time] = _log_return(close, s.ref_last_close)
        s.ref_last_open, s.ref_last_close = open_time, close
        self._prune()
        return True

    def on_book(self, ts: int, bids: Iterable[Level], asks: Iterable[Level]) -> None:
        """Top of book + levels (best first or not; they are sorted). Older than held: ignored."""
        s = self.state
        if s.book_ts is not None and ts < s.book_ts:
            return
        bids, asks = list(bids), list(asks)
        if not bids or not asks:
            raise ValueError("book needs at least one bid and one ask level")
        best_bid = max(float(p) for p, _ in bids)
        best_ask = min(float(p) for p, _ in asks)
        s.spread_bp, s.mid = spread_mid(best_bid, best_ask)
        s.depth_bid, s.depth_ask, s.depth_imbalance = depth_notional(bids, asks, self.cfg.depth_levels)
        s.book_ts = ts

    def on_funding(self, ts: int, *, rate: float | None = None, predicted: float | None = None,
                   next_funding_time: int | None = None) -> None:
        """``rate``: last settled rate; ``predicted``: markPrice ``r`` (estimate for the next
        settlement); ``next_funding_time``: markPrice ``T``."""
        s = self.state
        if rate is not None and (s.funding_rate_ts is None or ts >= s.funding_rate_ts):
            s.funding_rate, s.funding_rate_ts = float(rate), ts
        if predicted is not None and (s.funding_predicted_ts is None or ts >= s.funding_predicted_ts):
            s.funding_predicted, s.funding_predicted_ts = float(predicted), ts
            if next_funding_time is not None:
                s.next_funding_time = next_funding_time

    def _prune(self) -> None:
        s, cfg = self.state, self.cfg
        newest = max(x for x in (s.last_open, s.ref_last_open, 0) if x is not None)
        # Keep a second window of slack so either side may lag the other by a window.
        floor = newest - 2 * cfg.rho_window * cfg.bar_ms
        for d in (s.own_ret, s.ref_ret):
            # Keys arrive in increasing open time (older bars are refused), so the oldest come first.
            while d:
                oldest = next(iter(d))
                if oldest > floor:
                    break
                del d[oldest]

    def _std(self, w: int) -> float | None:
        """Sample stdev of the last w returns; the previous bar's rv_60 is the next bar's outlier test."""
        hit = self._std_memo.get(w)
        if hit is not None and hit[0] == self._rets_gen:
            return hit[1]
        rets = self.state.rets
        value = sample_std(rets[-w:]) if len(rets) >= w else None
        self._std_memo[w] = (self._rets_gen, value)
        return value

    # ------------------------------------------------------------- output

    def snapshot(self, as_of: int) -> FeatureSnapshot:
        s, cfg = self.state, self.cfg
        values: dict[str, float | None] = {}
        flags: dict[str, list[str]] = {}

        def put(name: str, value: float | None, dq: list[DQ | None]) -> None:
            values[name] = value
            got = {d for d in dq if d is not None}
            if value is None:
                got.add(DQ.WARMING_UP)
            if got:
                flags[name] = sorted(map(str, got))

        bar_stale = None if s.last_open is None else \
            _stale(s.last_open + cfg.bar_ms, as_of, cfg.bar_stale_ms)
        atr = s.atr.atr
        dq = [bar_stale, *self._window_flags(cfg.atr_period, (s.last_gap_open,))]
        put("atr", atr, dq)
        put("atr_pct", None if atr is None else atr / s.last_close, dq)
        for w in cfg.rv_windows:
            rv = self._std(w)
            dq = [bar_stale, *self._window_flags(w, (s.last_gap_open,))]
            put(f"rv_{w}", rv, dq)
            put(f"rv_{w}_ann", annualize(rv, cfg.bar_ms), dq)
        ref_lagging = s.last_open is not None and (s.ref_last_open is None or s.ref_last_open < s.last_open)
        put("rho", self._rho(), [DQ.STALE_INPUT if ref_lagging else bar_stale,
                                 *self._window_flags(cfg.rho_window, (s.last_gap_open, s.ref_last_gap_open))])
        for w in cfg.sma_windows:
            # Over the last w bars received (a hole is flagged, not bridged): backtesting.py's and
            # pandas' rolling mean over rows. fsum: the correctly rounded sum, whatever the order.
            sma = math.fsum(s.closes[-w:]) / w if len(s.closes) >= w else None
            put(f"sma_{w}", sma, [bar_stale, *self._window_flags(w, (s.last_gap_open,))])

        book_stale = _stale(s.book_ts, as_of, cfg.book_stale_ms)
        for name in ("mid", "spread_bp", "depth_bid", "depth_ask", "depth_imbalance"):
            put(name, getattr(s, name), [book_stale])

        put("funding_rate", s.funding_rate, [_stale(s.funding_rate_ts, as_of, cfg.funding_stale_ms)])
        pred_stale = _stale(s.funding_predicted_ts, as_of, cfg.predicted_stale_ms)
        put("funding_predicted", s.funding_predicted, [pred_stale])
        mins = None
        if s.next_funding_time is not None and s.next_funding_time >= as_of:
            mins = (s.next_funding_time - as_of) / 60_000
        put("minutes_to_funding", mins, [pred_stale])
        return FeatureSnapshot(symbol=s.symbol, open_time=s.last_open, t0=as_of, features=values,
                               flags=flags)

    def _window_flags(self, window: int, gaps: tuple[int | None, ...]) -> list[DQ | None]:
        # A flag holds while the offending bar is inside the feature's window of bars.
        s = self.state
        if s.last_open is None:
            return []
        lo = s.last_open - window * self.cfg.bar_ms
        gap = any(g is not None and g > lo for g in gaps)
        out = s.last_outlier_open is not None and s.last_outlier_open > lo
        return [DQ.GAP if gap else None, DQ.OUTLIER if out else None]

    def _rho(self) -> float | None:
        s, cfg = self.state, self.cfg
        if s.last_open is None:
            return None
        keys = [s.last_open - i * cfg.bar_ms for i in range(cfg.rho_window - 1, -1, -1)]
        pairs = [(s.own_ret[k], s.ref_ret[k]) for k in keys if k in s.own_ret and k in s.ref_ret]
        if len(pairs) < cfg.rho_window:
            return None
        return pearson([p[0] for p in pairs], [p[1] for p in pairs])


def _stale(ts: int | None, as_of: int, limit: int) -> DQ | None:
    return DQ.STALE_INPUT if ts is not None and as_of - ts > limit else None


def _log_return(close: float, prev: float) -> float:
    return math.log(close / prev)
