"""S7 backfill: label every signal whose horizon has passed and has no label for it yet.

Triggered by ``BackfillLabels`` (gateway ``POST /v1/labels/backfill?h=``) and by S7's own timer
(``labels.interval_ms``, one timer key per horizon). Per signal: the position(s) born from it
(``compute.traded``), else the bundle's standard entry at t0 (``compute.counterfactual``). Writes are
upserts keyed ``(signal_id, h)``, so a replay rewrites the same label; ``strategy_events`` gets one
``LABEL_WRITE`` per label (insert-if-absent: append-only, never twice); ``labels:{ready}`` gets what
was written; the watermark ``labels:{last_backfill_ts}`` moves forward only.
"""

from __future__ import annotations

import bisect
from decimal import Decimal

from chimera.errors import PermanentError
from chimera.handlers.labels import compute
from chimera.schemas.documents.research import HORIZONS, LABEL_COLLECTIONS, Label, label_key, to_doc
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import BackfillLabels, LabelsReady, TimerFired
from chimera.store.collections import FILLS, FUNDING_RECORDS, POSITIONS, SIGNALS, STRATEGY_EVENTS
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

TIMER = "s7.backfill"
INTERVAL_MS = 3_600_000
BATCH = 5000  # signals per delivery; the rest continue in a follow-up command
BAR_MS = 60_000
DEFAULT_TAKER_FEE = "0.0005"  # the venue's USDT-M taker rate; a bundle sets labels.taker_fee


def arm(h: int, due_ms: int) -> Emit:
    return Emit(keys.LABELS_COMMANDS, TimerFired(name=TIMER, due_ms=due_ms, data={"h": str(h)}),
                f"{TIMER}:{h}:{due_ms}", due_ms=due_ms, timer_key=f"{TIMER}:{h}")


def interval_ms(ctx: Context) -> int:
    return ctx.config.param("labels", "interval_ms", INTERVAL_MS) if ctx.config is not None else INTERVAL_MS


def on_start(ctx: Context) -> list[Emit]:
    return [arm(h, ctx.now_ms()) for h in HORIZONS]


def on_timer(env: Envelope, ctx: Context) -> list[Emit]:
    p: TimerFired = env.payload
    if p.name != TIMER:
        raise PermanentError(f"s7 has no timer named {p.name!r}")
    h = _horizon(p.data.get("h", ""))
    return [*backfill(ctx, h), arm(h, ctx.now_ms() + interval_ms(ctx))]


def on_command(env: Envelope, ctx: Context) -> list[Emit]:
    return backfill(ctx, _horizon(env.payload.h))


def _horizon(raw) -> int:
    try:
        h = int(raw)
    except (TypeError, ValueError):
        raise PermanentError(f"h must be one of {HORIZONS}, got {raw!r}") from None
    if h not in HORIZONS:
        raise PermanentError(f"h must be one of {HORIZONS}, got {h}")
    return h


class _Bars:
    """1m bars of one symbol over the backfill's span, loaded once (the venue's klines port)."""

    def __init__(self, ctx: Context, symbol: str, start: int, end: int) -> None:
        self.bars = sorted(ctx.venues.klines(symbol, start, end), key=lambda k: k.open_time)
        self.opens = [k.open_time for k in self.bars]

    def between(self, start: int, end: int) -> list:
        return self.bars[bisect.bisect_left(self.opens, start):bisect.bisect_left(self.opens, end)]

    def at(self, open_time: int):
        i = bisect.bisect_left(self.opens, open_time)
        return self.bars[i] if i < len(self.opens) and self.opens[i] == open_time else None

    def close_by(self, end: int) -> Decimal | None:
        """Close of the last bar that ended by ``end`` (and began within its last minute)."""
        i = bisect.bisect_left(self.opens, end - BAR_MS + 1) - 1
        i = min(i + 1, len(self.bars)) - 1
        while i >= 0 and self.bars[i].close_time >= end:
            i -= 1
        if i < 0 or self.bars[i].open_time < end - 2 * BAR_MS:
            return None
        return compute.D(self.bars[i].close)


def _strategy(ctx: Context) -> dict:
    s = ctx.config.bundle.get("strategy") if ctx.config is not None else None
    return s if isinstance(s, dict) else {}


def _sole_side(strategy: dict) -> str:
    entry = strategy.get("entry") or {}
    long_, short = bool(entry.get("long_when")), bool(entry.get("short_when"))
    return "BUY" if long_ and not short else "SELL" if short and not long_ else ""


def backfill(ctx: Context, h: int) -> list[Emit]:
    now = ctx.now_ms()
    span = h * compute.HOUR_MS
    cutoff = now - span
    coll = LABEL_COLLECTIONS[h]
    marks = ctx.marks
    mark = marks.get(f"h{h}")
    # Signals at or before the watermark are labelled unless a bar was missing; look back one horizon.
    lo = -1 if mark is None else mark - span
    # Bounded below by the watermark (one horizon back), so a long history is not re-read every hour.
    candidates = [s for s in ctx.store.query(SIGNALS, {"t0": (">", lo)}, order_by="t0")
                  if int(s.get("t0") or 0) <= cutoff]
    done = {d["_key"] for d in ctx.store.query(coll, {"t0": (">", lo)})} if candidates else set()
    todo = [s for s in candidates if label_key(s["signal_id"], h) not in done][:BATCH]
    if not todo:
        marks.set_max(f"h{h}", cutoff)
        return []
    strategy = _strategy(ctx)
    sizing = strategy.get("sizing") or {}
    labels_cfg = (ctx.config.bundle.get("labels") if ctx.config is not None else None) or {}
    positive = compute.D(labels_cfg.get("positive_roi", "0"))
    negative = compute.D(labels_cfg.get("negative_roi", "0"))
    taker = compute.D(labels_cfg.get("taker_fee", DEFAULT_TAKER_FEE))
    sole = _sole_side(strategy)
    bars: dict[str, _Bars] = {}
    t_lo, t_hi = int(todo[0]["t0"]), int(todo[-1]["t0"])
    written: list[str] = []
    funding_cache: dict[str, list[dict]] = {}
    for sig in todo:
        sym, sid = sig["symbol"], sig["signal_id"]
        if sym not in bars:
            bars[sym] = _Bars(ctx, sym, t_lo - 2 * BAR_MS, t_hi + span)
        decision = sig.get("decision") or {}
        label = _label(ctx, sig, decision, h, bars[sym], funding_cache, sizing, sole, taker)
        if label is None:
            continue
        cls, name = compute.classify(label.roi_net, positive, negative)
        doc = to_doc(_with(label, label=cls, label_class=name, bundle_id=decision.get("bundle_id", ""),
                           config_rev=int(sig.get("config_rev") or 0)))
        key = label_key(sid, h)
        ctx.store.upsert(coll, key, doc)
        ctx.store.insert_if_absent(STRATEGY_EVENTS, f"label:{key}", {
            "kind": "LABEL_WRITE", "at": now, "signal_id": sid, "h": h, "symbol": sym, "label_kind": label.kind,
            "roi_net": doc["roi_net"], "label": cls})
        written.append(sid)
    marks.set_max(f"h{h}", min(cutoff, t_hi) if len(todo) == BATCH else cutoff)
    out: list[Emit] = []
    if written:
        out.append(Emit(keys.LABELS_READY, LabelsReady(h=h, count=len(written), up_to_ms=t_hi, signal_ids=written),
                        f"labels:{h}:{written[0]}:{written[-1]}:{len(written)}"))
    if len(todo) == BATCH:  # more to do: continue in the next delivery, not in one long handler call
        out.append(Emit(keys.LABELS_COMMANDS, BackfillLabels(h=h, requested_by="s7"), f"s7.more:{h}:{t_hi}"))
    return out


def _with(doc: Label, **changes) -> Label:
    import msgspec

    return msgspec.structs.replace(doc, **changes)


def _label(ctx: Context, sig: dict, decision: dict, h: int, bars: _Bars, funding_cache: dict, sizing: dict,
           sole: str, taker: Decimal) -> Label | None:
    sym, t0, sid = sig["symbol"], int(sig["t0"]), sig["signal_id"]
    end = t0 + h * compute.HOUR_MS
    base = Label(signal_id=sid, h=h, symbol=sym, t0=t0)
    if decision.get("action") == "open":
        positions = ctx.store.query(POSITIONS, {"signal_id": sid})
        if positions:
            fills = [f for p in positions for f in ctx.store.query(FILLS, {"pos_id": p.get("pos_id") or p["_key"]})]
            if sym not in funding_cache:
                funding_cache[sym] = ctx.store.query(FUNDING_RECORDS, {"symbol": sym})
            mark = bars.close_by(end)
            got = compute.traded(positions, fills, funding_cache[sym], end, {sym: mark} if mark is not None else {})
            if got is not None:
                return _from(base, got, kind="TRADED", side=positions[0].get("side", ""))
            if any(f for f in fills if int(f.get("ts") or 0) <= end):
                return None  # held at the horizon but its bar is not there yet: next backfill
    side = decision.get("side") or sole
    if not side:
        return _with(base, kind="NO_DIRECTION", label_class="NONE")
    entry_bar = bars.at(int(sig.get("open_time", t0 - BAR_MS)))
    feats = sig.get("features") or {}
    atr = feats.get("atr")
    path = bars.between(t0, end)
    if atr is None:  # S2 still warming up: the bundle's stop and take-profit have no distance
        return _with(base, kind="UNDEFINED", side=side, label_class="NONE")
    if entry_bar is None or not path or path[-1].close_time < end - 1:
        return None  # the market data of the window is not complete yet
    sl = compute.D(sizing.get("sl_atr", "1.5")) * compute.D(decision.get("sl_mult", 1.0))
    tp = compute.D(sizing.get("tp_atr", "3.0")) * compute.D(decision.get("tp_mult", 1.0))
    got = compute.counterfactual(side, compute.D(entry_bar.close), compute.D(atr), sl, tp, path, taker)
    return None if got is None else _from(base, got, kind="COUNTERFACTUAL", side=side)


def _from(base: Label, o: compute.Outcome, *, kind: str, side: str) -> Label:
    return _with(base, kind=kind, side=side, roi_net=o.roi_net, net_pnl=o.net_pnl, realized_pnl=o.realized,
                 unrealized_pnl=o.unrealized, fees=o.fees, funding=o.funding, notional=o.notional,
                 entry_price=o.entry_price, exit_price=o.exit_price, exit_reason=o.exit_reason,
                 exit_time=o.exit_time, pos_ids=o.pos_ids)
