"""Every declared index exists on a new SQLite collection and serves the queries the handlers make
(a full scan per S6 pass made a backtest slow down with its own history)."""

from __future__ import annotations

import pytest

from chimera.store import open_store
from chimera.store.collections import INDEXES, POSITIONS


@pytest.mark.parametrize(("coll", "fields"), [(c, f) for c, fs in INDEXES.items() for f in fs])
def test_a_declared_index_serves_its_equality_query(coll, fields):
    store = open_store("sqlite://:memory:")
    store.upsert(coll, "k1", {f: "x" for f in fields})
    plan = store.explain(coll, {f: "x" for f in fields})
    assert f"USING INDEX ix_{coll}_{'_'.join(fields)}" in plan, plan


def test_open_positions_query_does_not_scan():
    store = open_store("sqlite://:memory:")
    store.upsert(POSITIONS, "p1", {"state": "ACTIVE", "symbol": "BTCUSDT"})
    plan = store.explain(POSITIONS, {"state": ("in", ["ACTIVE", "PENDING_CLOSING"])})
    assert "SCAN" not in plan and "USING INDEX" in plan, plan
