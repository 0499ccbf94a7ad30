"""The books' identity of a live account (``chimera books``, ``chimera.ops.books``), read from the local venue
through the official SDK (``/fapi/v1/income``, ``/fapi/v1/userTrades``) after S4/S6 workers opened a
position, funding settled on it and it was closed (the scenario of ``test_backtest_books_live``). The
venue engine's own ``wallet_history`` and trade list are the truth the figures are compared with; then
the store is tampered with (a fee off by 1e-8, a fill deleted) and the check must fail.
"""

from __future__ import annotations

import dataclasses
from decimal import Decimal

import pytest
from typer.testing import CliRunner

from chimera.ops.books import live_books
from chimera.ops.cli import app
from chimera.store.collections import FILLS, POSITIONS
from tests.integration.test_backtest_books_live import (
    test_positions_carry_the_venues_fees_pnl_and_funding_and_the_books_balance as open_fund_and_close,
)
from tests.integration.test_backtest_books_live import venue_trades
from tests.integration.test_router_b1 import env  # noqa: F401 - fixture
from tests.support.futures_venue import btc_futures_venue
from tests.support.redis_servers import free_port


@pytest.fixture
def venue(tmp_path):
    with btc_futures_venue(tmp_path) as v:
        yield v


def _cli(s, *args: str):
    environ = {"CHIMERA_VENUE": "paper", "CHIMERA_VENUE_URL": s.venue_url, "CHIMERA_STORE_URL": s.store_url,
               "CHIMERA_OBJECTS_URL": s.objects_url, "CHIMERA_ACCOUNTS_FILE": ""}
    return CliRunner().invoke(app, ["books", *args], env=environ)


def _by_id(checks: list[dict]) -> dict:
    return {c["id"]: c for c in checks}


def test_live_books_hold_on_the_venue_and_fail_when_the_store_is_tampered(r, env, venue):  # noqa: F811
    s, store = env
    open_fund_and_close(r, env, venue)  # its own asserts: the engine's identity holds, fills = trades
    wallet = venue.call(lambda: venue.server.engine.wallet_history("main"))
    trades = venue_trades(venue)
    assert wallet["funding"] < 0 and wallet["realized_pnl"] != 0 and len(trades) >= 2

    checks = _by_id(live_books(s, store, "main"))
    assert all(c["ok"] for c in checks.values()), checks
    change = wallet["wallet_change"] - wallet["transfers"]
    assert Decimal(checks["store_identity"]["expected"]) == change
    assert Decimal(checks["store_identity"]["actual"]) == change
    assert Decimal(checks["venue_identity"]["actual"]) == wallet["realized_pnl"] - wallet["commission"] + wallet["funding"]
    assert checks["fills_one_to_one"]["expected"] == checks["fills_one_to_one"]["actual"] == str(len(trades))

    out = _cli(s)
    assert out.exit_code == 0, out.output
    lines = out.output.splitlines()
    assert len(lines) == 3 and all(line.startswith("✓ main ") for line in lines), out.output
    assert f"expected {change}, actual {change}" in out.output

    # A fee off by 1e-8 USDT on the store's position: the identity fails (to 1e-8, not roughly).
    pos = store.query(POSITIONS, {})[0]
    store.upsert(POSITIONS, pos["_key"], {**pos, "fees": str(Decimal(pos["fees"]) + Decimal("0.00000001"))})
    checks = _by_id(live_books(s, store, "main"))
    assert not checks["store_identity"]["ok"] and checks["venue_identity"]["ok"] and checks["fills_one_to_one"]["ok"]
    assert Decimal(checks["store_identity"]["actual"]) == change - Decimal("0.00000001")
    out = _cli(s)
    assert out.exit_code == 1 and "✗ main store_identity" in out.output, out.output
    store.upsert(POSITIONS, pos["_key"], pos)

    # A fill deleted: the one-to-one check names the missing trade.
    fill = store.query(FILLS, {})[0]
    store.delete(FILLS, fill["_key"])
    checks = _by_id(live_books(s, store, "main"))
    assert not checks["fills_one_to_one"]["ok"] and checks["store_identity"]["ok"]
    assert checks["fills_one_to_one"]["actual"] == str(len(trades) - 1)
    assert fill["_key"] in checks["fills_one_to_one"]["detail"]


def test_books_cli_says_why_when_the_venue_cannot_be_reached(settings):
    s = dataclasses.replace(settings, venue_url=f"http://127.0.0.1:{free_port()}")
    out = _cli(s)
    assert out.exit_code == 2, out.output
    assert "cannot read main's books at the venue (paper, http://127.0.0.1:" in out.output
    assert "no answer (is it running? CHIMERA_VENUE_URL)" in out.output
    assert "Traceback" not in out.output
