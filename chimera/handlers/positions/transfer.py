"""Auto-transfer (spec B8 step 1): keep free futures margin above ``positions.min_free_fut``.

On a tick, with ``min_free_fut`` > 0: free margin = the venue's ``availableBalance`` of USDT
(``/fapi/v3/balance`` through the adapter: the number the venue checks new orders against);
``need = max(0, min_free_fut − free_fut)``. A positive need writes ``treasury_transfers/<transfer_id>``
in state PENDING (asset USDT, direction MAIN_UMFUTURE, ``amount`` = ``need``) with
``transfer_id = s6-topup-USDT-<window>``, ``window = now // positions.transfer_window_ms`` (default
300000): one request per window however many ticks run in it. It waits there for S12's approval;
with ``positions.auto_approve_transfers`` the tick also sends the ``TransferRequest`` to S1's
``treasury:{commands}`` (S1's document state machine makes a repeat harmless), while the document
is still PENDING. Once a window has a document the venue is not asked again in that window.
"""

from __future__ import annotations

from decimal import Decimal

from loguru import logger

from chimera.handlers.common import venue
from chimera.handlers.positions.common import param
from chimera.handlers.treasury.transfer import COLL
from chimera.schemas.messages import TransferRequest
from chimera.streams import keys
from chimera.streams.producer import Emit
from chimera.venues.binance.adapter import VenueError
from chimera.workers.handler import Context

ASSET = "USDT"
DIRECTION = "MAIN_UMFUTURE"


def transfer_id(ctx: Context) -> str:
    window = ctx.now_ms() // max(param(ctx, "transfer_window_ms", 300_000), 1)
    return f"s6-topup-{ASSET}-{window}"


def check(ctx: Context) -> list[Emit]:
    floor = param(ctx, "min_free_fut", Decimal(0))
    if floor <= 0:
        return []
    tid = transfer_id(ctx)
    doc = ctx.store.get(COLL, tid)
    if doc is None:
        try:
            free = venue(ctx).fut.available_balance(ASSET)
        except VenueError as exc:
            logger.warning("auto-transfer: free futures margin unavailable ({}); next tick tries again", exc)
            return []
        need = max(Decimal(0), floor - free)
        if need == 0:
            return []
        now = ctx.now_ms()
        ctx.store.insert_if_absent(COLL, tid, {
            "transfer_id": tid, "asset": ASSET, "amount": str(need), "need": str(need), "direction": DIRECTION,
            "free_fut": str(free), "min_free_fut": str(floor), "state": "PENDING", "attempts": 0,
            "requested_by": "s6", "reason_requested": f"free futures margin {free} below min_free_fut {floor}",
            "created_at": now, "updated_at": now})
        doc = ctx.store.get(COLL, tid)
    if doc["state"] != "PENDING" or not param(ctx, "auto_approve_transfers", False):
        return []
    req = TransferRequest(transfer_id=tid, asset=doc["asset"], amount=Decimal(doc["amount"]),
                          direction=doc["direction"], requested_by="s6", reason="auto-approved top-up")
    return [Emit(keys.TREASURY_COMMANDS, req, tid)]
