"""S3 decide: L0 guards -> L1 rules -> L2 model -> sizing -> budget reservation -> intent.

One call per signal. The decision is written to ``signals.decision`` before anything is
published; a redelivered signal whose decision is already recorded re-publishes the recorded
decision and intent unchanged (at-least-once delivery, decisions exactly once). Decision time
is the signal's t0 (``Decide``: the clock), so a replay decides exactly as live did.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import replace as replace_signal

import msgspec
from msgspec.structs import replace

from chimera.handlers.strategy import guards, model_gate, reverse
from chimera.handlers.strategy.bundle import StrategyConfig, strategy_config
from chimera.handlers.strategy.dsl import time_fields
from chimera.handlers.strategy.dsl_expr import PREV
from chimera.handlers.strategy.lifecycle import (
    account_block,
    last_stop_loss,
    record_open,
    replace_gate,
    replace_pending,
    rollback,
    same_direction,
)
from chimera.handlers.strategy.sizing import build_intent, entry_price, ids_for, size_entry, symbol_rules
from chimera.risk.state import OK, state_for
from chimera.schemas.envelope import to_builtins
from chimera.schemas.messages import Decision, OrderIntent, SubmitOrder
from chimera.schemas.strategy import DecisionRecord
from chimera.streams import keys
from chimera.streams.producer import Emit

SIGNALS = "signals"
_SIDE = {"LONG": "BUY", "SHORT": "SELL", "BUY": "BUY", "SELL": "SELL"}


@dataclass(frozen=True)
class Signal:
    signal_id: str
    symbol: str
    as_of: int
    features: dict
    side: str | None = None  # forced by a Decide command
    prev: dict | None = None  # S2's bar features at the previous bar (crosses_above / crosses_below)
    account_id: str = ""  # the account to trade ("": the bundle's ``strategy.account_id``, else main)


def account_for(sig: Signal, ctx) -> str:
    """The account S3 decides for: its kill switch, budget and intent are that account's."""
    return sig.account_id or str(ctx.config.param("strategy", "account_id", "main") or "main")


def decide(sig: Signal, ctx) -> list[Emit]:
    sig = replace_signal(sig, account_id=account_for(sig, ctx))
    done = ctx.store.get(SIGNALS, sig.signal_id)
    if done and done.get("decision"):
        return _emits(sig, done["decision"], done.get("intent"))
    if (exits := reverse.exit_opposite(sig, ctx)) is not None:  # bundle option: exit/reverse on the opposite signal
        return exits
    record, intent = _evaluate(sig, ctx)
    if record.action == "skip" and record.side:
        _undo_partial_open(sig, ctx)
    ctx.store.insert_if_absent(SIGNALS, sig.signal_id, {"signal_id": sig.signal_id, "symbol": sig.symbol,
                                                        "t0": sig.as_of, "features": sig.features})
    if (waiting := replace_pending(ctx, sig, record)) is not None:  # close the older position first, retry later
        return waiting
    doc = {"decision": to_builtins(record), "intent": to_builtins(intent) if intent else None,
           "config_rev": record.config_rev}
    ctx.store.update_if(SIGNALS, sig.signal_id, doc, {})
    return _emits(sig, doc["decision"], doc["intent"])


def _undo_partial_open(sig: Signal, ctx) -> None:
    """A crash after reserving but before the decision was recorded, then a skip on redelivery
    (e.g. the kill switch went up in between), would leak the reservation: give it back."""
    pos_id, _ = ids_for(sig.signal_id)
    rollback(ctx.store, state_for(ctx), pos_id, sig.symbol, now_ms=sig.as_of, reason="decision skipped on replay",
             account_id=account_for(sig, ctx))


def _emits(sig: Signal, decision: dict, intent: dict | None) -> list[Emit]:
    d = msgspec.convert(decision, DecisionRecord)
    out = [Emit(keys.SIG_EVENTS, Decision(
        signal_id=sig.signal_id, symbol=sig.symbol, action=d.action, side=d.side, size_mult=d.size_mult,
        tp_mult=d.tp_mult, sl_mult=d.sl_mult, reason=d.reason, model_p=d.model_p, account_id=sig.account_id,
    ), f"decision:{sig.signal_id}", sig.account_id, event_time=sig.as_of)]
    if d.action == "open" and intent:
        order = msgspec.convert(intent, OrderIntent, strict=False)
        # A decision recorded before accounts has no account on its intent: it was main's.
        account = order.account_id or "main"
        out.append(Emit(keys.ORD_COMMANDS, SubmitOrder(intent=order), order.intent_id, account,
                        event_time=sig.as_of))
    return out


def _evaluate(sig: Signal, ctx) -> tuple[DecisionRecord, OrderIntent | None]:
    cfg = strategy_config(ctx.config)
    base = DecisionRecord(action="skip", config_rev=ctx.config.rev, bundle_id=ctx.config.bundle_id, as_of=sig.as_of)
    if cfg is None:
        return replace(base, reason="NO_STRATEGY_CONFIG"), None
    if cfg.symbols is not None and sig.symbol not in cfg.symbols:
        return replace(base, reason="SYMBOL_NOT_CONFIGURED"), None
    risk = state_for(ctx)
    blocked = guards.kill_switch(risk.effective_kill_switch(sig.account_id)) or guards.trading_window(cfg, sig.as_of) \
        or account_block(ctx, sig.account_id, sig.as_of, None)  # daily drawdown breaker, max open per account
    if blocked:
        return replace(base, reason=blocked), None
    why, health_mult, level = guards.health(cfg, risk.health())
    base = replace(base, health=level)
    if why:
        return replace(base, reason=why), None
    regime = risk.regime() or ""
    base = replace(base, regime=regime)
    blocked = guards.regime(cfg, regime) or guards.funding_window(cfg, sig.features)
    if blocked:
        return replace(base, reason=blocked), None

    context = {**sig.features, **time_fields(sig.as_of), "regime": regime or None, PREV: sig.prev or {}}
    side = _side(cfg, sig, context)
    if side is None:
        return replace(base, reason="NO_SIGNAL"), None
    base = replace(base, side=side, market=cfg.sizing.market)
    context["side"] = "LONG" if side == "BUY" else "SHORT"
    if cfg.sizing.market == "SPOT" and side == "SELL":
        return replace(base, reason="SPOT_NO_SHORT"), None

    pos_id, intent_id = ids_for(sig.signal_id)
    blocked = guards.cooldown(cfg, last_stop_loss(ctx.store, sig.symbol), sig.as_of)
    replaces = "" if cfg.stack_same_direction else same_direction(ctx.store, sig.symbol, side, pos_id, sig.account_id)
    if not blocked and replaces and not cfg.priority_replace:
        blocked = "SAME_DIRECTION_OPEN"
    elif not blocked and replaces:  # a higher priority closes the older position first (lifecycle.replace_gate)
        blocked = replace_gate(ctx, replaces, sig.features, sig.as_of)
    if blocked:
        return replace(base, reason=blocked), None

    rules = cfg.rules.evaluate(context)
    base = replace(base, fired=rules.fired, missing=rules.missing, tp_mult=rules.tp_mult, sl_mult=rules.sl_mult)
    if rules.skip_entry:
        return replace(base, reason="RULE_SKIP"), None

    size_mult, notes = rules.size_mult * health_mult, []
    if cfg.model is not None:
        model = model_gate.load_model(ctx.objects, cfg.model.key, cfg.bundle_id, cfg.rev)
        res = model_gate.evaluate(cfg.model, model, sig.features)
        base = replace(base, model_p=res.p, model_status=res.status)
        if res.skip:
            return replace(base, reason="MODEL_LOW_P" if res.status == "ok" else f"MODEL_{res.status.upper()}"), None
        if res.status != "ok":
            notes.append(f"model_{res.status}_fallback")
        size_mult *= res.size_mult
    base = replace(base, size_mult=round(size_mult, 10))
    if size_mult <= 0:
        return replace(base, reason="SIZE_ZERO"), None
    return _size_and_reserve(sig, ctx, cfg, risk, base, pos_id, intent_id, replaces, notes)


def _size_and_reserve(sig, ctx, cfg: StrategyConfig, risk, base: DecisionRecord, pos_id: str, intent_id: str,
                      replaces: str, notes: list[str]) -> tuple[DecisionRecord, OrderIntent | None]:
    rules = symbol_rules(cfg.sizing.market, sig.symbol)
    price, source = entry_price(sig.features)
    if rules is None or price is None:
        return replace(base, reason="NO_FILTERS" if rules is None else "NO_PRICE"), None
    atr = sig.features.get("atr")
    sized = size_entry(cfg.sizing, rules, price=price, size_mult=base.size_mult, side=base.side,
                       atr=atr if isinstance(atr, int | float) else None, tp_mult=base.tp_mult, sl_mult=base.sl_mult)
    base = replace(base, price=str(price), price_source=source)
    if isinstance(sized, str):
        return replace(base, reason=sized), None
    got = risk.reserve(pos_id, sig.symbol, sized.margin, cfg.limits, account_id=sig.account_id)
    if got != OK:
        return replace(base, reason=got), None
    intent = build_intent(intent_id=intent_id, pos_id=pos_id, signal_id=sig.signal_id, symbol=sig.symbol,
                          side=base.side, sizing=cfg.sizing, sized=sized, bundle_id=cfg.bundle_id, config_rev=cfg.rev,
                          account_id=sig.account_id)
    record_open(ctx.store, pos_id=pos_id, signal_id=sig.signal_id, intent_id=intent_id, symbol=sig.symbol,
                  side=base.side, market=cfg.sizing.market, qty=str(sized.qty), margin_usdt=str(sized.margin),
                  now_ms=sig.as_of, config_rev=cfg.rev)
    reason = ";".join(["ok", *notes])
    return replace(base, action="open", reason=reason, qty=str(sized.qty), margin_usdt=str(sized.margin),
                   intent_id=intent_id, pos_id=pos_id, replaces=replaces), intent


def _side(cfg: StrategyConfig, sig: Signal, context: dict) -> str | None:
    if sig.side:
        return _SIDE.get(sig.side.upper())
    for rule, side in ((cfg.long_when, "BUY"), (cfg.short_when, "SELL")):
        if rule is not None and rule.evaluate(context).fired:
            return side
    return None

