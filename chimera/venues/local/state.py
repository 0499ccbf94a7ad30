"""Durable venue state: accounts, orders, positions, ledgers, listen keys and the replay cursor."""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from decimal import Decimal
from pathlib import Path

from .engine.model import Account, Income, Order, Position, Trade

ORDER_DEC = {"orig_qty", "price", "stop_price", "executed_qty", "cum_quote", "reserved"}
TRADE_DEC = {"price", "qty", "quote_qty", "commission", "realized_pnl"}
POS_DEC = {"amt", "entry_price", "isolated_margin"}


def _enc(obj):
    if isinstance(obj, Decimal):
        return str(obj)
    if dataclasses.is_dataclass(obj):
        return {f.name: _enc(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {str(k): _enc(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_enc(v) for v in obj]
    return obj


def _dec(d: dict, keys: set) -> dict:
    return {k: (Decimal(v) if k in keys else v) for k, v in d.items()}


def snapshot(engine, clock, listen_keys: dict) -> dict:
    return {
        "version": 1,
        "clock": {"time_ms": clock.time_ms, "processed": clock.processed},
        "counters": engine.counters,
        "accounts": [_enc(a) for a in engine.accounts.values()],
        "orders": [_enc(o) for o in engine.orders.values()],
        "order_lists": _enc(engine.order_lists),
        "trades": [_enc(t) for t in engine.trades],
        "income": [_enc(i) for i in engine.income],
        "transfers": _enc(engine.transfers),
        "funding_log": engine.funding_log,
        "liquidations": engine.liquidations,
        "listen_keys": listen_keys,
    }


def save(path: str | Path, data: dict) -> None:
    """Atomic write: a crash leaves either the old or the new file, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, separators=(",", ":"))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load(path: str | Path) -> dict | None:
    path = Path(path)
    if not path.exists():
        return None
    return json.loads(path.read_text())


def restore(engine, data: dict) -> None:
    engine.counters.update(data["counters"])
    engine.accounts.clear()
    for a in data["accounts"]:
        acc = Account(name=a["name"], api_key=a["api_key"], api_secret=a["api_secret"],
                      spot={k: [Decimal(v[0]), Decimal(v[1])] for k, v in a["spot"].items()},
                      futures_wallet={k: Decimal(v) for k, v in a["futures_wallet"].items()},
                      positions={k: Position(**_dec(p, POS_DEC)) for k, p in a["positions"].items()},
                      leverage={k: int(v) for k, v in a["leverage"].items()})
        engine.accounts[acc.name] = acc
    engine.by_key = {a.api_key: a.name for a in engine.accounts.values()}
    engine.orders.clear()
    engine.open_by_symbol.clear()
    for o in data["orders"]:
        order = Order(**_dec(o, ORDER_DEC))
        engine.orders[order.order_id] = order
        if order.is_open:
            engine._index(order)
    engine.order_lists = {int(k): v for k, v in data["order_lists"].items()}
    engine.trades = [Trade(**_dec(t, TRADE_DEC)) for t in data["trades"]]
    engine.income = [Income(**_dec(i, {"income"})) for i in data["income"]]
    engine.transfers = data["transfers"]
    engine.funding_log = data["funding_log"]
    engine.liquidations = data["liquidations"]
