"""Binance USDT-M user data through the official futures SDK: listenKey REST calls, the SDK frame →
plain dict decoding, and the pure normalizers used by S1 (``chimera/handlers/connectors/user_data.py``).

* ``ORDER_TRADE_UPDATE`` → ``VenueReport`` (``normalize_order_update``), with a de-duplication member
  per (order id, trade id) for TRADE executions and per (order id, exec type, status) otherwise.
* ``ACCOUNT_UPDATE`` reason ``FUNDING_FEE`` → the event only says *that* funding settled (the
  balance-change field is not reliable for the fee), so the amounts are read from the income history
  (``funding_income``, ``incomeType=FUNDING_FEE``), one ``funding_records`` document per ``tranId``.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

from chimera.schemas.messages import VenueReport


def D(x: Any) -> Decimal:
    return Decimal(str(x)) if x not in (None, "") else Decimal(0)


def frame_to_dict(msg: Any) -> dict:
    """The SDK hands a oneOf model whose ``e`` discriminator was consumed: recover it from the model name."""
    if isinstance(msg, dict):
        return msg
    inst = getattr(msg, "actual_instance", None)
    if inst is not None:
        name = re.sub(r"(?<!^)(?=[A-Z])", "_", type(inst).__name__).upper()
        d = inst.to_dict()
        d.setdefault("e", name)
        return d
    if hasattr(msg, "to_dict"):
        return msg.to_dict()
    return json.loads(str(msg))


def normalize_order_update(d: dict) -> VenueReport:
    """One ORDER_TRADE_UPDATE frame (``{"e", "E", "T", "o": {...}}``) → VenueReport (Decimal fields)."""
    o = d.get("o") or {}
    return VenueReport(
        market="FUT", symbol=o["s"], client_order_id=o.get("c") or "", venue_order_id=str(o.get("i", "")),
        side=o["S"], order_type=o.get("o") or "", exec_type=o.get("x") or "", order_status=o.get("X") or "",
        qty=D(o.get("q")), price=D(o.get("p")), cum_qty=D(o.get("z")), last_qty=D(o.get("l")),
        last_price=D(o.get("L")), commission=D(o.get("n")), commission_asset=o.get("N") or "",
        trade_id=int(o.get("t") or 0), realized_pnl=D(o.get("rp")), reduce_only=bool(o.get("R")),
        is_maker=bool(o.get("m")), ts=int(o.get("T") or d.get("T") or d.get("E") or 0))


def dedupe_member(rep: VenueReport) -> str:
    """Identity of one report: trades by trade id, other executions by (exec type, status)."""
    if rep.exec_type == "TRADE" and rep.trade_id:
        return f"{rep.venue_order_id}:t:{rep.trade_id}"
    return f"{rep.venue_order_id}:x:{rep.exec_type}:{rep.order_status}"


def is_funding_update(d: dict) -> bool:
    return d.get("e") == "ACCOUNT_UPDATE" and (d.get("a") or {}).get("m") == "FUNDING_FEE"


# --- REST (SDK rest_api) ---------------------------------------------------------------------------


def _data(resp) -> Any:
    data = resp.data() if hasattr(resp, "data") else resp
    if isinstance(data, list):
        return [getattr(x, "actual_instance", x) for x in data]
    return getattr(data, "actual_instance", data)


def _plain(x: Any) -> dict:
    return x.to_dict() if hasattr(x, "to_dict") else dict(x)


def create_listen_key(rest) -> str:
    return _data(rest.start_user_data_stream()).listen_key


def keepalive_listen_key(rest) -> None:
    rest.keepalive_user_data_stream()


def close_listen_key(rest) -> None:
    rest.close_user_data_stream()


def funding_income(rest, start_ms: int, limit: int = 1000) -> list[dict]:
    """FUNDING_FEE income rows from ``start_ms`` (inclusive), oldest first, Binance field names."""
    rows = [_plain(x) for x in _data(rest.get_income_history(income_type="FUNDING_FEE", start_time=start_ms,
                                                              limit=limit))]
    return sorted(rows, key=lambda x: (int(x.get("time") or 0), int(x.get("tranId") or 0)))


def funding_rate_at(rest, symbol: str, funding_time: int) -> Decimal | None:
    """The settled rate of ``symbol`` at ``funding_time`` from the funding-rate history, if the venue has it."""
    try:
        rows = [_plain(x) for x in _data(rest.get_funding_rate_history(
            symbol=symbol, start_time=funding_time - 60_000, end_time=funding_time + 60_000, limit=10))]
    except Exception:  # noqa: BLE001 - the rate is optional on the record
        return None
    best = min(rows, key=lambda x: abs(int(x.get("fundingTime") or 0) - funding_time), default=None)
    return D(best["fundingRate"]) if best and best.get("fundingRate") not in (None, "") else None
