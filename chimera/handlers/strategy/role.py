"""Role s3, the strategy engine: one consumer group over the feature streams, ``Decide`` commands
and S4's results, so ``chimera-worker --role s3`` runs all of S3.

Decisions (``engine.py``): a ``FeaturesComputed`` or a ``Decide`` → guards, rules, model gate,
sizing, reservation, intent. S4's ``OrderResult`` → ``lifecycle.py`` (the audit of S3's entries).
Idempotency is the decision's own (``signals.decision`` is recorded before anything is published),
so the runtime's done-marker only saves the work of a redelivery.
"""

from __future__ import annotations

from chimera.handlers.strategy.engine import Signal, decide
from chimera.handlers.strategy.lifecycle import on_order_result
from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import Decide, FeaturesComputed, OrderResult
from chimera.store.collections import SIGNALS
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.workers.handler import Context, HandlerSpec, Route


def on_features(env: Envelope, ctx: Context) -> list[Emit]:
    msg: FeaturesComputed = env.payload
    return decide(Signal(msg.signal_id, msg.symbol, msg.t0, dict(msg.features), prev=dict(msg.prev)), ctx)


def on_decide(env: Envelope, ctx: Context) -> list[Emit]:
    msg: Decide = env.payload
    doc = ctx.store.get(SIGNALS, msg.signal_id) or {}
    return decide(Signal(msg.signal_id, msg.symbol, int(doc.get("t0") or ctx.now_ms()),
                         dict(doc.get("features") or {}), side=msg.side, prev=dict(doc.get("prev") or {}),
                         account_id=msg.account_id or _tagged(env)), ctx)


def _tagged(env: Envelope) -> str:
    # A Decide names its account in the payload or its envelope; a plain main envelope leaves it to
    # the bundle (strategy.account_id), since main is every envelope's default.
    return "" if (env.account_id or "main") == "main" else env.account_id


def on_result(env: Envelope, ctx: Context) -> list[Emit]:
    return on_order_result(ctx.store, ctx.risk, env.payload, now_ms=ctx.now_ms(), cause=env.idempotency_key)


def streams(settings) -> list[str]:
    symbols = getattr(settings, "symbols", ()) or ()
    return [*(keys.feat_stream(s) for s in symbols), keys.STRAT_COMMANDS, keys.ORD_RESULTS]


SPEC = HandlerSpec(
    role="s3",
    routes={
        FeaturesComputed: Route(on_features),
        Decide: Route(on_decide),
        OrderResult: Route(on_result),
    },
    streams=streams,
    description="S3 strategy engine: guards, rules, model gate, intents, the audit of its entries",
)
