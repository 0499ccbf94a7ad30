"""Binance wallet transfers (MAIN_UMFUTURE / UMFUTURE_MAIN) through the official wallet SDK.

The universal-transfer API takes no client id, so an unanswered request cannot be looked up by
id: ``latest_tran_id`` is read *before* sending, and after a timeout ``find_after`` searches the
history for a transfer of that type, asset and amount with a larger ``tranId``. The treasury
handler holds ``lock:{treasury}:<from>:<to>`` meanwhile, so no other Chimera transfer in that
direction can be mistaken for it (a manual transfer of the very same amount could be: see
docs/connectors.md). SDK retries are off: a POST is never re-sent by the library.
"""

from __future__ import annotations

from decimal import Decimal

from binance_common.errors import BadRequestError, ClientError, ForbiddenError, UnauthorizedError

# Answers that prove the request was refused (nothing moved). Everything else is "unknown".
REFUSED = (BadRequestError, ClientError, ForbiddenError, UnauthorizedError)


def wallet_rest(base_url: str, api_key: str, api_secret: str, timeout_ms: int = 10_000):
    from binance_sdk_wallet.wallet import ConfigurationRestAPI, Wallet

    cfg = ConfigurationRestAPI(api_key=api_key, api_secret=api_secret, base_path=base_url, timeout=timeout_ms,
                               retries=0)
    return Wallet(config_rest_api=cfg).rest_api


def _to_dict(x) -> dict:
    x = getattr(x, "actual_instance", x)
    return x.to_dict() if hasattr(x, "to_dict") else dict(x)


def history(rest, direction: str, size: int = 100) -> list[dict]:
    data = _to_dict(rest.query_user_universal_transfer_history(type=direction, size=size).data())
    return [_to_dict(r) for r in data.get("rows") or []]


def latest_tran_id(rest, direction: str) -> int:
    rows = history(rest, direction, size=1)
    return max((int(r.get("tranId", r.get("tran_id", 0))) for r in rows), default=0)


def transfer(rest, direction: str, asset: str, amount: Decimal) -> int:
    resp = _to_dict(rest.user_universal_transfer(type=direction, asset=asset, amount=float(amount)).data())
    return int(resp.get("tranId", resp.get("tran_id")))


def find_after(rest, direction: str, asset: str, amount: Decimal, after_tran_id: int) -> int | None:
    for r in history(rest, direction):
        tid = int(r.get("tranId", r.get("tran_id", 0)))
        if tid > after_tran_id and r.get("asset") == asset and Decimal(str(r.get("amount"))) == amount:
            return tid
    return None
