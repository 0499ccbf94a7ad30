"""Exit (and reverse) on the opposite signal: the bundle options ``strategy.exit_on_opposite`` and
``strategy.reverse`` (both false by default).

With ``exit_on_opposite``, a signal for one side while a position of the other side is open on the symbol
closes that position: S3 sends S4 a reduce-only MARKET ``EXIT`` intent for it (``<pos_id>:opp``, the same
intent however often the decision is repeated), and S6 books the result as it books any exit. The decision
is recorded as a skip with reason ``EXIT_OPPOSITE``: nothing is opened while the old side still holds the
symbol's budget. With ``reverse`` as well, S3 also arms a ``Decide`` timer for the signal's side
(signal ``<signal_id>:rev``, same features): it fires once the exit went through (in event time: before
the next market event, at the same instant), and decides the entry as any signal, so the new position
is sized, reserved and protected as usual. While the old position is still open the timer is armed
again a second later, for at most ``REVERSE_WAIT_MS`` after the signal; then the entry is decided anyway
(and normally refused by the budget).

This is backtesting.py's ``position.close(); self.buy()`` on a crossover (``docs/backtest.md``).
"""

from __future__ import annotations

from chimera.errors import PermanentError
from chimera.handlers.strategy.bundle import strategy_config
from chimera.handlers.strategy.dsl import time_fields
from chimera.handlers.strategy.dsl_expr import PREV
from chimera.handlers.strategy.lifecycle import exit_command
from chimera.risk.state import state_for
from chimera.schemas.messages import Decide, Decision
from chimera.store.collections import POSITIONS, SIGNALS
from chimera.streams import keys
from chimera.streams.producer import Emit

REV_SUFFIX = ":rev"
REVERSE_WAIT_MS = 60_000
RETRY_MS = 1_000
_OPPOSITE = {"BUY": "SELL", "SELL": "BUY"}
_SIDE = {"LONG": "BUY", "SHORT": "SELL", "BUY": "BUY", "SELL": "SELL"}


def options(raw: dict) -> tuple[bool, bool]:
    """(exit_on_opposite, reverse) from the bundle's strategy section; ``reverse`` implies the exit."""
    out = []
    for name in ("exit_on_opposite", "reverse"):
        v = raw.get(name, False)
        if not isinstance(v, bool):
            raise PermanentError(f"strategy.{name} must be true or false, not {v!r}")
        out.append(v)
    return out[0] or out[1], out[1]


def exit_opposite(sig, ctx) -> list[Emit] | None:
    """The exit (and the reverse entry's timer) when ``sig`` is against an open position; None otherwise,
    and the signal is decided as usual."""
    cfg = strategy_config(ctx.config)
    if cfg is None:
        return None
    on, rev = options(cfg.raw)
    if not on or (cfg.symbols is not None and sig.symbol not in cfg.symbols):
        return None
    side = _side(cfg, sig, ctx)
    if side is None:
        return None
    held = [d for d in ctx.store.query(POSITIONS, {"symbol": sig.symbol, "side": _OPPOSITE[side], "state": "ACTIVE"},
                                       order_by="created_at") if d.get("market", "FUT") == "FUT"]
    if not held:
        return None
    again = sig.signal_id.endswith(REV_SUFFIX)
    if again and ctx.now_ms() - sig.as_of > REVERSE_WAIT_MS:
        return None  # the old side never went: decide the entry anyway (the budget says no)
    out = [exit_command(d, "opp", signal_id=sig.signal_id, event_time=sig.as_of) for d in held]
    if again:
        return out + [_decide_timer(sig.signal_id, sig.symbol, side, ctx.now_ms() + RETRY_MS)]
    # Recorded as engine.decide records a decision: a redelivered signal finds it and re-sends nothing new.
    ctx.store.insert_if_absent(SIGNALS, sig.signal_id, {"signal_id": sig.signal_id, "symbol": sig.symbol,
                                                        "t0": sig.as_of, "features": sig.features})
    ctx.store.update_if(SIGNALS, sig.signal_id, {
        "decision": {"action": "skip", "side": side, "reason": "EXIT_OPPOSITE", "as_of": sig.as_of,
                     "config_rev": cfg.rev, "bundle_id": cfg.bundle_id,
                     "exits": [f"{d['_key']}:opp" for d in held]}, "intent": None, "config_rev": cfg.rev}, {})
    out.insert(0, Emit(keys.SIG_EVENTS, Decision(signal_id=sig.signal_id, symbol=sig.symbol, action="skip", side=side,
                                                 reason="EXIT_OPPOSITE"), f"decision:{sig.signal_id}",
                       event_time=sig.as_of))
    if rev:
        sid = sig.signal_id + REV_SUFFIX
        ctx.store.insert_if_absent(SIGNALS, sid, {"signal_id": sid, "symbol": sig.symbol, "t0": sig.as_of,
                                                  "features": sig.features, "prev": sig.prev or {}})
        # One ms on: the exit goes through first (in a backtest at the same market price, before the next event).
        out.append(_decide_timer(sid, sig.symbol, side, max(ctx.now_ms(), sig.as_of) + 1))
    return out


def _side(cfg, sig, ctx) -> str | None:
    if sig.side:
        return _SIDE.get(sig.side.upper())
    regime = state_for(ctx).regime() or ""
    context = {**sig.features, **time_fields(sig.as_of), "regime": regime or None, PREV: sig.prev or {}}
    for rule, side in ((cfg.long_when, "BUY"), (cfg.short_when, "SELL")):
        if rule is not None and rule.evaluate(context).fired:
            return side
    return None


def _decide_timer(signal_id: str, symbol: str, side: str, due_ms: int) -> Emit:
    return Emit(keys.STRAT_COMMANDS, Decide(signal_id=signal_id, symbol=symbol, side=side),
                f"decide:{signal_id}:{due_ms}", due_ms=due_ms, timer_key=f"reverse:{signal_id}")
