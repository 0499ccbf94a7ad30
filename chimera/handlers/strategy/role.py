"""Role s3: one consumer group over the feature streams, Decide commands and S4's results.

Decisions (FeaturesComputed, Decide) and the position lifecycle (OrderResult) share the role so
``chimera-worker --role s3`` runs all of S3; the handler dispatches on the payload type.
"""

from __future__ import annotations

from chimera.errors import PermanentError
from chimera.handlers.strategy.engine import SIGNALS, Signal, decide
from chimera.handlers.strategy.lifecycle import on_order_result
from chimera.risk.state import state_for
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import Decide, FeaturesComputed, OrderResult
from chimera.streams import keys
from chimera.workers.handler import HandlerSpec


def handle(env: Envelope, ctx) -> list:
    msg = env.payload
    if isinstance(msg, FeaturesComputed):
        return decide(Signal(msg.signal_id, msg.symbol, msg.t0, dict(msg.features)), ctx)
    if isinstance(msg, Decide):
        doc = ctx.store.get(SIGNALS, msg.signal_id) or {}
        return decide(Signal(msg.signal_id, msg.symbol, int(doc.get("t0") or ctx.now_ms()),
                             dict(doc.get("features") or {}), side=msg.side), ctx)
    if isinstance(msg, OrderResult):
        return on_order_result(ctx.store, state_for(ctx), msg, now_ms=ctx.now_ms(), cause=env.idempotency_key)
    raise PermanentError(f"s3 does not handle {env.type}")


def streams(settings) -> list[str]:
    symbols = getattr(settings, "symbols", ()) or ()
    return [*(keys.feat_stream(s) for s in symbols), keys.STRAT_COMMANDS, keys.ORD_RESULTS]


SPEC = HandlerSpec(role="s3", handle=handle, streams=streams,
                   description="S3 strategy engine: guards, rules, model gate, intents, position lifecycle")
