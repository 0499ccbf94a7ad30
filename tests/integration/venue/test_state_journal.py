"""The venue's state file is a snapshot of what can change plus a journal of what cannot
(``venues/local/state.StateFile``): a restart gives back the same state, a save costs what changed.

Through the official SDK against the venue server: market and limit orders, a cancel, a funding
settlement, an ADL, a liquidation, a transfer and spot trades, then a restart; the whole state (the
old one-document format, ``snapshot``) compared before and after.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chimera.venues.local import state as state_store
from chimera.venues.local.server.app import VenueConfig
from chimera.venues.local.testing import start_venue

from .conftest import book, futures, inject, mark, spot, trade, wallet

T0 = 4_000_000_000_000
SYM = "BTCUSDT"


def _at(t, *events):
    return [{**e, "time": t} for e in events]


def _whole(v) -> dict:
    """The venue's whole state as one document (the format before the journal), read on its loop."""
    srv = v.server
    data = v.call(lambda: state_store.snapshot(srv.engine, srv.clock, srv.listen_keys))
    data.pop("clock")  # the restart re-anchors the replay clock; the cursor is checked on its own
    return json.loads(json.dumps(data))


def _restarted(path: Path) -> dict:
    """The whole state of a venue started on ``path``, then stopped (which saves)."""
    v = start_venue(VenueConfig(data=[], state_file=str(path)))
    try:
        return _whole(v)
    finally:
        v.stop()


def _round_trips(v, n: int, t: int) -> int:
    fut = futures(v)
    for _ in range(n):
        inject(v, *_at(t, trade(SYM, "30000"), book(SYM, "29999.9", "30000.1"), mark(SYM, "30000")))
        fut.new_order(symbol=SYM, side="BUY", type="MARKET", quantity=0.002)
        fut.new_order(symbol=SYM, side="SELL", type="MARKET", quantity=0.002, reduce_only="true")
        t += 1000
    return t


def _busy_day(v) -> None:
    fut = futures(v)
    inject(v, *_at(T0, trade(SYM, "30000"), book(SYM, "29999.9", "30000.1"), mark(SYM, "30000")))
    fut.new_order(symbol=SYM, side="BUY", type="MARKET", quantity=0.01)
    fut.new_order(symbol=SYM, side="SELL", type="LIMIT", time_in_force="GTC", quantity=0.004, price=30010,
                  new_client_order_id="tp")
    fut.new_order(symbol=SYM, side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.001, price=25001,
                  new_client_order_id="gone")
    fut.cancel_order(symbol=SYM, orig_client_order_id="gone")
    inject(v, *_at(T0 + 1000, trade(SYM, "30020")))  # through the take-profit
    inject(v, *_at(T0 + 2000, {"market": "futures", "symbol": SYM, "kind": "funding", "rate": "0.0001"}))
    v.control("/chimera/v1/adl", {"account": "main", "symbol": SYM, "qty": "0.002"})
    wallet(v).user_universal_transfer(type="MAIN_UMFUTURE", asset="USDT", amount=100)
    inject(v, *_at(T0 + 3000, mark(SYM, "28000")))  # liquidation of the rest
    inject(v, *_at(T0 + 3000, trade(SYM, "30000", market="spot"), book(SYM, "29999.9", "30000.1", market="spot")))
    spot(v).new_order(symbol=SYM, side="BUY", type="MARKET", quantity=0.001)
    # Placed after the liquidation (which cancels the symbol's open orders): stays open.
    fut.new_order(symbol=SYM, side="BUY", type="LIMIT", time_in_force="GTC", quantity=0.001, price=25000,
                  new_client_order_id="rest")


def _after_a_busy_day(path: Path) -> dict:
    """A venue on ``path`` through ``_busy_day``, stopped; its whole state before the stop."""
    v = start_venue(VenueConfig(data=[], state_file=str(path)))
    try:
        _busy_day(v)
        return _whole(v)
    finally:
        v.stop()


def test_a_restart_gives_back_the_whole_state_and_a_crash_mid_save_loses_nothing_counted(tmp_path):
    path = tmp_path / "venue-state.json"
    before = _after_a_busy_day(path)
    assert before["trades"] and before["income"] and before["liquidations"] and before["funding_log"]
    assert {o["status"] for o in before["orders"]} >= {"NEW", "FILLED", "CANCELED"}
    snap = json.loads(path.read_text())
    assert snap["version"] == 2 and "trades" not in snap
    assert [o["status"] for o in snap["orders"]] == ["NEW"]  # only the open order in the snapshot

    # A save cut short after its journal append, before its snapshot: a tail the snapshot does not count.
    journal = Path(f"{path}.journal")
    counted = journal.stat().st_size
    with journal.open("a") as fh:
        fh.write(json.dumps(["trade", before["trades"][0] | {"trade_id": 999_999}]) + "\n")
    v = start_venue(VenueConfig(data=[], state_file=str(path)))
    try:
        assert _whole(v) == before
        assert journal.stat().st_size == counted  # cut off on load
        # The ids keep counting from where they were, and what follows is journaled after it.
        fut = futures(v)
        inject(v, *_at(T0 + 4000, trade(SYM, "30000"), book(SYM, "29999.9", "30000.1"), mark(SYM, "30000")))
        fut.new_order(symbol=SYM, side="BUY", type="MARKET", quantity=0.002)
        fut.cancel_order(symbol=SYM, orig_client_order_id="rest")  # the order open since before the restart
        after = _whole(v)
    finally:
        v.stop()
    assert len(after["trades"]) == len(before["trades"]) + 1
    assert not [o for o in after["orders"] if o["status"] == "NEW"]
    assert _restarted(path) == after


def test_a_state_file_of_the_old_format_loads_and_moves_into_the_journal(tmp_path):
    path = tmp_path / "venue-state.json"
    before = _after_a_busy_day(path)
    # Everything in one document, as before the journal (``_whole`` is that document less the clock).
    old = json.loads(path.read_text())
    state_store.save(path, {**before, "clock": old["clock"], "version": 1})
    Path(f"{path}.journal").unlink()
    assert _restarted(path) == before  # its stop saves: now a snapshot and a journal
    assert json.loads(path.read_text())["version"] == 2
    assert _restarted(path) == before


def test_a_save_costs_what_changed_not_what_was_traded(tmp_path):
    path = tmp_path / "venue-state.json"
    journal = Path(f"{path}.journal")
    v = start_venue(VenueConfig(data=[], state_file=str(path)))
    try:
        t = _round_trips(v, 10, T0)
        snap_10, journal_10 = path.stat().st_size, journal.stat().st_size
        _round_trips(v, 30, t)
        snap_40, journal_40 = path.stat().st_size, journal.stat().st_size
    finally:
        v.stop()
    # Four times the trades: the journal grows with them, the snapshot rewritten on each order does not.
    assert journal_40 > 3 * journal_10
    assert snap_40 < snap_10 * 1.1, (snap_10, snap_40)


def test_a_journal_shorter_than_its_snapshot_counts_is_refused_not_padded(tmp_path):
    path = tmp_path / "venue-state.json"
    _after_a_busy_day(path)
    journal = Path(f"{path}.journal")
    with journal.open("r+b") as fh:
        fh.truncate(journal.stat().st_size - 10)  # records the snapshot counts on are gone
    with pytest.raises(ValueError, match="journal was cut or lost"):
        state_store.StateFile(path).load()
    journal.unlink()
    with pytest.raises(ValueError, match="journal was cut or lost"):
        state_store.StateFile(path).load()
