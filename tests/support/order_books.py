"""Order books rebuilt from the recorded WebSocket streams (ws_streams_depth_trades_bookticker), for
tests that check a local order book level by level."""

from __future__ import annotations

import gzip
import json
from decimal import Decimal
from pathlib import Path

from tests.support.market_data import market_data

RECORDINGS = market_data("ws_streams_depth_trades_bookticker")


def rebuilt_book(path: Path, upto_id: int) -> tuple[dict, dict]:
    """The book at update id ``upto_id``: snapshot, the diffs recorded around it that are newer, then
    every later diff (Binance's procedure, written out here independently of S1 and the venue)."""
    bids: dict[Decimal, Decimal] = {}
    asks: dict[Decimal, Decimal] = {}
    before: list[dict] = []
    last = None

    def put(d: dict) -> None:
        for side, rows in ((bids, d["b"]), (asks, d["a"])):
            for p, q in rows:
                if Decimal(q) == 0:
                    side.pop(Decimal(p), None)
                else:
                    side[Decimal(p)] = Decimal(q)

    with gzip.open(path, "rt") as fh:
        for line in fh:
            msg = json.loads(line.partition(" ")[2])
            if "stream" not in msg:
                last = msg["lastUpdateId"]
                put({"b": msg["bids"], "a": msg["asks"]})
                for d in before:
                    if d["u"] > last:
                        put(d)
                        last = d["u"]
                continue
            if "@depth" not in msg["stream"]:
                continue
            d = msg["data"]
            if last is None:
                before.append(d)
            elif d["u"] > upto_id:
                break
            elif d["u"] > last:
                put(d)
                last = d["u"]
    assert last == upto_id, f"update id {upto_id} is not an event boundary of the recording"
    return bids, asks


def best(side: dict, n: int, reverse: bool) -> list[tuple[Decimal, Decimal]]:
    return sorted(side.items(), reverse=reverse)[:n]
