"""Durable venue state: accounts, orders, positions, ledgers, listen keys and the replay cursor.

``StateFile`` keeps it in two files, so a save costs what changed, not everything traded so far (the
venue saves after every signed write; rewriting every trade each time made a long paper replay
quadratic: ~10 MB of JSON per order after 10,000 trades):

* ``<path>.journal``: append-only JSON lines of what never changes once written: trades, income,
  funding and liquidation records, and finished orders (FILLED, CANCELED, EXPIRED, REJECTED);
* ``<path>``: the rest (accounts and their positions, open orders, order lists, counters, transfers,
  listen keys, the replay cursor), rewritten atomically, and the journal's length at that save.

A save appends to the journal and fsyncs it, then replaces the snapshot: a crash between the two leaves
a journal tail the snapshot does not count, which the next load or save cuts off. Restored orders are
put back in id order (one counter numbers them all), as they were placed. A file of the old format
(everything in ``<path>``) loads as before and the next save moves its records into the journal.
"""

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


def snapshot(engine, clock, listen_keys: dict, open_orders: list | None = None) -> dict:
    """The whole state as one document; with ``open_orders``, what ``StateFile`` keeps beside its
    journal: those orders, not the finished ones nor the append-only lists."""
    journaled = open_orders is not None
    data = {
        "version": 2 if journaled else 1,
        "clock": {"time_ms": clock.time_ms, "processed": clock.processed},
        "counters": engine.counters,
        "accounts": [_enc(a) for a in engine.accounts.values()],
        "orders": [_enc(o) for o in (open_orders if journaled else engine.orders.values())],
        "order_lists": _enc(engine.order_lists),
        "transfers": _enc(engine.transfers),
        "listen_keys": listen_keys,
    }
    if not journaled:
        data |= {"trades": [_enc(t) for t in engine.trades], "income": [_enc(i) for i in engine.income],
                 "funding_log": engine.funding_log, "liquidations": engine.liquidations}
    return data


# snapshot key -> journal record kind, for the append-only lists
_LISTS = {"trades": "trade", "income": "income", "funding_log": "funding", "liquidations": "liq"}


class StateFile:
    """The venue's state at ``path`` and ``path.journal`` (see the module's docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.journal = self.path.with_name(self.path.name + ".journal")
        self.counts = dict.fromkeys(_LISTS, 0)  # records of each list already in the journal
        # Orders not in the journal: those open at the last save, and any numbered past ``last_id``. A
        # save looks at these only, not at every order ever placed.
        self.unjournaled: set[int] = set()
        self.last_id = 0
        self.bytes = 0  # the journal's length the snapshot on disk counts

    def load(self) -> dict | None:
        """The saved state in ``snapshot``'s shape, or None; remembers what the journal holds."""
        data = load(self.path)
        if data is None:
            return None
        if data.get("version", 1) < 2:
            return data  # the old format: everything in one file; the next save journals it
        self.bytes = data["journal"]["bytes"]
        records = {kind: [] for kind in (*_LISTS.values(), "order")}
        have = self.journal.stat().st_size if self.journal.exists() else 0
        if have < self.bytes:
            raise ValueError(f"{self.journal} holds {have} bytes, {self.path} counts {self.bytes}: the journal was "
                             "cut or lost; restore both files from the same backup, or remove both to start afresh")
        if self.bytes:
            with self.journal.open("r+b") as fh:
                fh.truncate(self.bytes)  # a tail a crash left past the last snapshot
                fh.seek(0)
                for line in fh:
                    kind, rec = json.loads(line)
                    records[kind].append(rec)
        for key, kind in _LISTS.items():
            data[key] = records[kind]
            self.counts[key] = len(records[kind])
        self.unjournaled = {o["order_id"] for o in data["orders"]}
        data["orders"] = sorted(records["order"] + data["orders"], key=lambda o: o["order_id"])
        self.last_id = data["orders"][-1]["order_id"] if data["orders"] else 0
        return data

    def save(self, engine, clock, listen_keys: dict) -> None:
        lines = []
        for key, kind in _LISTS.items():
            items = getattr(engine, key)
            lines += [json.dumps([kind, _enc(x)], separators=(",", ":")) for x in items[self.counts[key]:]]
        orders = engine.orders
        new = []
        for order_id in reversed(orders):  # ids count up in placing order: the new ones are last
            if order_id <= self.last_id:
                break
            new.append(order_id)
        looked = sorted(i for i in self.unjournaled.union(new) if i in orders)
        done = [orders[i] for i in looked if not orders[i].is_open]
        still_open = [orders[i] for i in looked if orders[i].is_open]
        lines += [json.dumps(["order", _enc(o)], separators=(",", ":")) for o in done]
        if lines or not self.journal.exists():
            with self.journal.open("ab") as fh:
                fh.truncate(self.bytes)  # nothing past what the snapshot on disk counts
                fh.write(("".join(f"{line}\n" for line in lines)).encode())
                fh.flush()
                os.fsync(fh.fileno())
                size = fh.tell()
        else:
            size = self.bytes
        data = snapshot(engine, clock, listen_keys, open_orders=still_open)
        data["journal"] = {"bytes": size}
        save(self.path, data)
        self.bytes = size
        for key in _LISTS:
            self.counts[key] = len(getattr(engine, key))
        self.unjournaled = {o.order_id for o in still_open}
        self.last_id = new[0] if new else self.last_id  # the newest first


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
