"""``SubmitOrder``: take the intent in once, answer a repeat with the stored result, pick the policy.

The intent is persisted in ``order_intents`` (key ``intent_id``) before anything else. Every delivery
of the same command reads where the intent stands and continues from there (each policy module is
re-entrant by phase), so redeliveries, crashes and duplicates converge on one set of orders at the
venue; a command for an intent already finished re-emits its stored result. New non-reducing intents
are refused under a kill switch, and a futures entry first gets its leverage and margin type at the
venue (``toolkit.ensure_venue_setup``).
"""

from __future__ import annotations

from collections.abc import Callable

from chimera.errors import NotYetImplemented, PermanentError
from chimera.handlers.common import account_of, kill_mode
from chimera.handlers.router import maker, market, spot, twap
from chimera.handlers.router import toolkit as tk
from chimera.schemas.documents.orders import IntentDoc, to_doc
from chimera.schemas.envelope import Envelope
from chimera.workers.handler import Context

S = tk.S
Policy = Callable[[Envelope, Context, IntentDoc], tk.Out]
POLICIES: dict[str, Policy] = {
    "MARKET": market.run_market,
    "LIMIT": market.run_limit,
    "STOP": market.run_stop,
    "MakerThenTaker": maker.run,
    "TWAP": twap.run,
}
SPOT_PROTECTED = ("OCO", "GUARD")


def on_submit(env: Envelope, ctx: Context) -> tk.Out:
    oi = env.payload.intent
    account = account_of(env, oi.account_id)
    ctx.venues.get(account)  # an unknown or disabled account is refused before anything is stored
    ctx.store.insert_if_absent(tk.INTENTS, oi.intent_id, to_doc(IntentDoc.new(oi, ctx.now_ms(), account)))
    intent = tk.load_intent(ctx, oi.intent_id)
    if intent.account_id != account:  # the same intent id came before for another account
        raise PermanentError(f"intent {oi.intent_id} belongs to account {intent.account_id!r}, not {account!r}")
    if intent.phase == "DONE":  # seen before: the same answer again, no new order
        out: tk.Out = [tk.emit_result(intent.result)]
        if intent.market == "SPOT" and intent.exec_policy in SPOT_PROTECTED:
            out += spot.rearm(ctx, intent)
        return out
    if intent.phase == "NEW":
        refusal = _refusal(env, ctx, intent)
        if refusal:
            return tk.finish(ctx, intent, tk.result_for(intent, "*", S.REJECTED.value, reason=refusal))
    return _policy(intent)(env, ctx, intent)


def _refusal(env: Envelope, ctx: Context, intent: IntentDoc) -> str | None:
    mode = kill_mode(ctx, intent.account_id)
    if mode and not intent.reducing:
        return f"KILL_SWITCH:{mode}"
    return tk.ensure_venue_setup(ctx, intent)


def _policy(intent: IntentDoc) -> Policy:
    policy = intent.exec_policy
    if intent.market == "SPOT" and policy in SPOT_PROTECTED:
        return spot.run
    if policy == "MakerThenTaker" and intent.purpose == "FLATTEN":  # a flatten does not wait for a maker fill
        return market.run_market
    if policy in POLICIES:
        return POLICIES[policy]
    raise NotYetImplemented(f"exec_policy {policy} for {intent.market} is not implemented in S4 yet")
