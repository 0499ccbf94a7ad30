"""S8: write the autopsy of one trade (``trade_id`` = the position id).

On ``PositionChanged`` EXIT (and STAGNATED, once S6 publishes it), on ``RequestAutopsy`` (gateway), and
on its own timer: a trade that just closed has no +1h markouts and no 36h counterfactual yet, so the
first autopsy arms ``s8.redo:<trade_id>`` for when those bars exist and the report is rewritten then.
Writes ``autopsy_reports/<trade_id>`` and ``autopsy/<trade_id>.html`` in the object store (same inputs →
same bytes), ``strategy_events`` AUTOPSY_DONE (one per distinct report), metric ``s8.autopsy_latency``
(clock ms from the close to the report).
"""

from __future__ import annotations

import hashlib
from decimal import Decimal

from chimera.errors import PermanentError
from chimera.handlers.autopsy import analysis as an
from chimera.handlers.autopsy.render import MAX_BYTES, render
from chimera.schemas.documents.research import AutopsyReport, to_doc
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import MetricEvent, PositionChanged, RequestAutopsy, TimerFired
from chimera.store.collections import (
    AUTOPSY_REPORTS,
    FILLS,
    FUNDING_RECORDS,
    POSITIONS,
    SIGNALS,
    STRATEGY_EVENTS,
)
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context

REDO = "s8.redo"
HTML_KEY = "autopsy/{trade_id}.html"
METRIC = "s8.autopsy_latency"
PEERS_MAX = 500  # most recent closed trades per symbol compared against
HOUR = 3_600_000
TRIGGERS = {"EXIT": "EXIT", "STAGNATED": "STAGNATED"}


def on_position_event(env: Envelope, ctx: Context) -> list[Emit]:
    p: PositionChanged = env.payload
    trigger = TRIGGERS.get(p.kind)
    return autopsy(ctx, p.pos_id, trigger) if trigger else []


def on_request(env: Envelope, ctx: Context) -> list[Emit]:
    return autopsy(ctx, env.payload.trade_id, "REQUEST")


def on_timer(env: Envelope, ctx: Context) -> list[Emit]:
    p: TimerFired = env.payload
    if p.name != REDO:
        raise PermanentError(f"s8 has no timer named {p.name!r}")
    return autopsy(ctx, p.ref, "REDO")


def _fees(ctx: Context) -> dict[str, Decimal]:
    cfg = (ctx.config.bundle.get("labels") if ctx.config is not None else None) or {}
    return {"taker": an.D(cfg.get("taker_fee", "0.0005")), "maker": an.D(cfg.get("maker_fee", "0.0002"))}


def _sizing(ctx: Context) -> dict:
    s = (ctx.config.bundle.get("strategy") if ctx.config is not None else None) or {}
    return s.get("sizing") or {}


def _peer_groups(ctx: Context, pos: dict, bundle_id: str, funding: list[dict]) -> dict[str, list[Decimal]]:
    others = [p for p in ctx.store.query(POSITIONS, {"symbol": pos["symbol"], "state": "CLOSED"}, order_by="closed_at",
                                          desc=True, limit=PEERS_MAX) if p["_key"] != pos["_key"]]
    groups: dict[str, list[Decimal]] = {"symbol": [], "regime": [], "bundle": []}
    for p in others:
        fills = ctx.store.query(FILLS, {"pos_id": p["_key"]})
        if not fills:
            continue
        roi = an.net_of(p, fills, funding)["roi"]
        if roi is None:
            continue
        groups["symbol"].append(roi)
        if p.get("regime", "") == pos.get("regime", ""):
            groups["regime"].append(roi)
        sig = ctx.store.get(SIGNALS, p.get("signal_id") or "") or {}
        if (sig.get("decision") or {}).get("bundle_id", "") == bundle_id:
            groups["bundle"].append(roi)
    return groups


def build(ctx: Context, trade_id: str, trigger: str) -> tuple[dict, str] | None:
    """(report document, html) or None when the position never filled."""
    pos = ctx.store.get(POSITIONS, trade_id)
    if pos is None:
        raise PermanentError(f"no position {trade_id!r} (trade_id is the pos_id)")
    pos = {**pos, "pos_id": pos.get("pos_id") or trade_id}
    fills = ctx.store.query(FILLS, {"pos_id": trade_id})
    if not fills:
        return None
    sym = pos["symbol"]
    signal = ctx.store.get(SIGNALS, pos.get("signal_id") or "") or {}
    funding = ctx.store.query(FUNDING_RECORDS, {"symbol": sym})
    money = an.net_of(pos, fills, funding)
    t0 = money["opened_at"]
    end = max(money["closed_at"] + HOUR, t0 + 36 * HOUR) + 2 * an.BAR_MS
    if pos.get("state") != "CLOSED":  # STAGNATED or asked for while open: valued at the last close by now
        end = max(end, ctx.now_ms() + 2 * an.BAR_MS)
    bars = an.Bars(list(ctx.venues.klines(sym, t0 - 5 * an.BAR_MS, end)))
    if pos.get("state") != "CLOSED":
        money = an.net_of(pos, fills, funding, mark=bars.mid_at(ctx.now_ms()))
        money["closed_at"] = ctx.now_ms()
    tca = an.tca(pos, fills, signal, money)
    money["mid_at_send"] = tca["mid_at_send"]
    marks = an.markouts(pos, money, bars)
    bundle_id = (signal.get("decision") or {}).get("bundle_id", "")
    peers = an.peers(money, _peer_groups(ctx, pos, bundle_id, funding))
    cf = an.counterfactuals(pos, money, signal, bars, _sizing(ctx), _fees(ctx))
    curve = an.roe_curve(pos, money, bars)
    rep = {
        "trade_id": trade_id, "symbol": sym, "side": pos["side"], "trigger": trigger, "opened_at": t0,
        "closed_at": money["closed_at"], "close_reason": pos.get("close_reason", ""),
        "net_pnl": an._f(money["net"]), "roi_net": an._f(money["roi"]), "fees": an._f(money["fees"]),
        "funding": an._f(money["funding"]), "roe_curve": [(t, round(v, 8)) for t, v in curve], "tca": tca,
        "markouts": marks, "peers": peers, "counterfactuals": cf, "risk": an.risk(curve, an.D(pos.get("leverage") or 1)),
        "signal_id": signal.get("signal_id", ""), "bundle_id": bundle_id, "regime": pos.get("regime", ""),
    }
    rep["tldr"] = an.tldr(pos, money, tca, marks, peers, cf)
    return rep, render(rep)


def autopsy(ctx: Context, trade_id: str, trigger: str) -> list[Emit]:
    built = build(ctx, trade_id, trigger)
    if built is None:
        return []
    rep, page = built
    data = page.encode()
    if len(data) > MAX_BYTES:
        raise PermanentError(f"autopsy {trade_id}: report is {len(data)} bytes, over the {MAX_BYTES} cap")
    if ctx.objects is None:
        raise PermanentError("s8 needs an object store (CHIMERA_OBJECTS_URL)")
    sha = hashlib.sha256(data).hexdigest()
    key = HTML_KEY.format(trade_id=trade_id)
    ctx.objects.put(key, data, "text/html; charset=utf-8")
    doc = AutopsyReport(trade_id=trade_id, symbol=rep["symbol"], side=rep["side"], trigger=trigger,
                        opened_at=rep["opened_at"], closed_at=rep["closed_at"], net_pnl=an.D(rep["net_pnl"]),
                        roi_net=an.D(rep["roi_net"]) if rep["roi_net"] is not None else None,
                        roe_curve=rep["roe_curve"], tca=rep["tca"], markouts=rep["markouts"], peers=rep["peers"],
                        counterfactuals=rep["counterfactuals"], tldr=rep["tldr"], html_key=key, html_sha256=sha,
                        html_bytes=len(data))
    ctx.store.upsert(AUTOPSY_REPORTS, trade_id, to_doc(doc))
    now = ctx.now_ms()
    ctx.store.insert_if_absent(STRATEGY_EVENTS, f"autopsy:{trade_id}:{sha[:16]}", {
        "kind": "AUTOPSY_DONE", "at": now, "trade_id": trade_id, "trigger": trigger, "html_key": key, "sha256": sha})
    latency = float(max(0, now - rep["closed_at"]))
    out = [Emit(keys.metrics_stream(METRIC), MetricEvent(name=METRIC, value=latency, labels={"symbol": rep["symbol"]},
                                                         ts=now), f"{METRIC}:{trade_id}:{sha[:16]}")]
    redo_at = max(rep["closed_at"] + HOUR, rep["opened_at"] + 36 * HOUR) + 2 * an.BAR_MS
    if trigger != "REDO" and now < redo_at:  # the later bars complete the markouts and counterfactuals
        out.append(Emit(keys.AUTOPSY_COMMANDS, TimerFired(name=REDO, ref=trade_id, due_ms=redo_at),
                        f"{REDO}:{trade_id}", due_ms=redo_at, timer_key=f"{REDO}:{trade_id}"))
    return out


def request_autopsy(trade_id: str, request_id: str, requested_by: str = "") -> tuple[str, RequestAutopsy, str]:
    """What ``POST /v1/autopsy/{trade_id}`` XADDs: (stream, payload, idempotency key)."""
    if not trade_id or "/" in trade_id:
        raise PermanentError(f"trade_id {trade_id!r} is not a position id")
    return keys.AUTOPSY_COMMANDS, RequestAutopsy(trade_id=trade_id, requested_by=requested_by), f"autopsy:{trade_id}:{request_id}"


def get_autopsy(store, objects, trade_id: str) -> tuple[dict | None, bytes | None]:
    """What ``GET /v1/autopsy/{trade_id}`` answers: the report document and its HTML (None, None: not yet)."""
    doc = store.get(AUTOPSY_REPORTS, trade_id)
    if doc is None:
        return None, None
    try:
        return doc, objects.get(doc["html_key"])
    except KeyError:
        return doc, None
