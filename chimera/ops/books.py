"""The books' identity of a running account, read from the venue the way Binance allows (issue 12 item 5).

The venue is the truth and is read through the official SDK only (``GET /fapi/v1/income``,
``GET /fapi/v1/userTrades``), so the same check runs on the paper venue, testnet and live:

* ``venue_identity``: the wallet change (Σ income other than transfers) = Σ realized PnL − Σ commission
  of the venue's trades + Σ FUNDING_FEE income (the venue's trades and its wallet agree);
* ``fills_one_to_one``: the store's FUT fills of the account = the venue's trades, by ``FUT:<symbol>:<id>``;
* ``store_identity``: the wallet change = Σ over the store's FUT positions of the account of
  realized PnL − fees + funding, to 1e-8 USDT.

Window: from ``since_ms``, or by default one week before the account's first stored fill (a trade the
store missed just before it is still found), to the venue's server time; read in 7-day windows (Binance's
limit for userTrades) and pages of 1000 rows. With ``since_ms`` only the positions holding a trade of the
window count. Assumes fees in USDT (BNB fee discounts would put COMMISSION rows in BNB: reported in the
detail, not summed).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from decimal import Decimal

from chimera.backtest.identity import ZERO, dec, money_row, one_to_one_row, positions_net
from chimera.errors import FatalError
from chimera.store.collections import FILLS, POSITIONS

WINDOW_MS = 7 * 24 * 3600 * 1000  # Binance's longest userTrades window
LOOKBACK_MS = WINDOW_MS
PAGE = 1000
QUOTE = "USDT"


def is_transfer(kind: str) -> bool:
    """Money moved in or out (TRANSFER, INTERNAL_TRANSFER, COIN_SWAP_*...), not earned or paid by trading."""
    return "TRANSFER" in kind or kind.startswith("COIN_SWAP")


def _paged(fetch: Callable[[int, int], list[dict]], start: int, end: int, key: Callable[[dict], object]) -> list[dict]:
    """Every row in [start, end]: 7-day windows, each read in pages from the last row's time on."""
    rows: dict[object, dict] = {}
    a = start
    while a <= end:
        b = min(a + WINDOW_MS - 1, end)
        lo = a
        while True:
            page = fetch(lo, b)
            for row in page:
                rows.setdefault(key(row), row)
            if len(page) < PAGE:
                break
            last = max(int(row["time"]) for row in page)
            if last <= lo:  # a full page inside one millisecond: paging by time cannot get past it
                raise FatalError(f"more than {PAGE} venue rows at {lo} ms; pass --since after it")
            lo = last
        a = b + 1
    return sorted(rows.values(), key=lambda row: int(row["time"]))


def _store_side(store, account_id: str) -> tuple[dict[str, dict], list[dict]]:
    """The account's FUT fills by ``FUT:<symbol>:<trade id>`` (non-main keys carry an account prefix) and
    its FUT positions."""
    fills = {}
    for f in store.query(FILLS, {}):
        if f.get("account_id", "main") != account_id:
            continue
        key = f["_key"].removeprefix(f"{account_id}:") if account_id != "main" else f["_key"]
        if key.startswith("FUT:"):
            fills[key] = f
    positions = [p for p in store.query(POSITIONS, {})
                 if p.get("account_id", "main") == account_id and p.get("market", "FUT") == "FUT"]
    return fills, positions


def live_books(settings, store, account_id: str = "main", since_ms: int | None = None, *,
               timeout_ms: int = 5000, venue=None) -> list[dict]:
    """The identity rows (``results.checks``' shape) of one account; venue errors -> ``FatalError`` with why."""
    from chimera.venues.binance.adapter import VenueError, VenueUnknown, venue_from_settings

    fills, positions = _store_side(store, account_id)
    where = f"the venue ({settings.venue}, {settings.venue_url if settings.venue == 'paper' else 'Binance'})"
    try:
        fut = (venue or venue_from_settings(settings, account_id, timeout_ms)).fut
        end = fut.server_time()
        first = min((int(f.get("ts") or 0) for f in fills.values()), default=None)
        start = since_ms if since_ms is not None else max(0, (first if first is not None else end) - LOOKBACK_MS)
        symbols = sorted({k.split(":")[1] for k in fills} | {p["symbol"] for p in positions if p.get("symbol")})
        income = _paged(lambda a, b: fut.income(a, b, PAGE), start, end,
                        lambda i: (i.get("incomeType"), i.get("tranId"), i.get("tradeId"), i.get("symbol"), i.get("time")))
        trades = [t for s in symbols for t in _paged(lambda a, b, s=s: fut.trades_between(s, a, b, PAGE), start, end,
                                                     lambda t: t["id"])]
    except VenueUnknown as exc:  # a read: "outcome unknown" (the adapter's word for writes) means no answer
        hint = " (is it running? CHIMERA_VENUE_URL)" if settings.venue == "paper" else ""
        raise FatalError(f"cannot read {account_id}'s books at {where}: no answer{hint}: "
                         f"{str(exc).removeprefix('outcome unknown: ')}") from None
    except VenueError as exc:
        raise FatalError(f"cannot read {account_id}'s books at {where}: {exc}") from None
    except FatalError as exc:
        raise FatalError(f"cannot read {account_id}'s books at {where}: {exc}") from None
    if since_ms is not None:
        fills = {k: f for k, f in fills.items() if int(f.get("ts") or 0) >= since_ms}
        window = {f"{t['symbol']}:{t['id']}" for t in trades}
        positions = [p for p in positions if window & set(p.get("booked_trades") or ())]
    return rows(income, trades, fills, positions)


def rows(income: list[dict], trades: list[dict], fills: dict[str, dict], positions: list[dict]) -> list[dict]:
    """The checks from what was read (the venue's income and trades, the store's fills and positions)."""
    by_kind: dict[str, Decimal] = {}
    other_assets = []
    for i in income:
        if i.get("asset", QUOTE) != QUOTE:
            other_assets.append(f"{i['incomeType']} {i['income']} {i['asset']}")
            continue
        by_kind[i["incomeType"]] = by_kind.get(i["incomeType"], ZERO) + dec(i["income"])
    change = sum((v for k, v in by_kind.items() if not is_transfer(k)), ZERO)
    kinds = ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items()))
    if other_assets:
        kinds += f"; not in {QUOTE} (not summed): {', '.join(other_assets[:5])}"
    realized = sum((dec(t.get("realizedPnl")) for t in trades), ZERO)
    commission = sum((dec(t.get("commission")) for t in trades if t.get("commissionAsset", QUOTE) == QUOTE), ZERO)
    funding = by_kind.get("FUNDING_FEE", ZERO)
    store = (f"store: realized {_sum(positions, 'realized_pnl')}, fees {_sum(positions, 'fees')}, "
             f"funding {_sum(positions, 'funding')} over {len(positions)} positions")
    return [
        money_row("venue_identity", "venue wallet change = Σ realized − Σ fees (venue trades) + Σ funding (income)",
                  change, realized - commission + funding, f"income by kind: {kinds or 'none'}"),
        one_to_one_row("fills_one_to_one", "store fills = venue trades, one to one (FUT:<symbol>:<trade id>)",
                       (f"FUT:{t['symbol']}:{t['id']}" for t in trades), fills),
        money_row("store_identity", "venue wallet change = Σ over the store's positions (realized − fees + funding)",
                  change, positions_net(positions), store),
    ]


def _sum(docs: Iterable[dict], field: str) -> Decimal:
    return sum((dec(d.get(field)) for d in docs), ZERO)


def ok(checks: list[dict]) -> bool:
    return all(c["ok"] for c in checks)


def lines(account_id: str, checks: list[dict]) -> list[str]:
    """One line per check: ✓/✗, what, expected and actual (the detail under a failed one)."""
    out = []
    for c in checks:
        out.append(f"{'✓' if c['ok'] else '✗'} {account_id} {c['id']}: {c['check']}: expected {c['expected']}, "
                   f"actual {c['actual']}")
        if not c["ok"] and c.get("detail"):
            out.append(f"    {c['detail']}")
    return out


def bounded(settings, store_url: str, accounts: Iterable[str], timeout_s: float) -> tuple[bool | None, list[str]]:
    """Every account's identity within ``timeout_s`` (chimera up's shutdown): (all hold, lines), or
    (None, why) when it could not finish; never raises."""
    result: list = []

    def run() -> None:
        from chimera.store import open_store

        out, good = [], True
        try:
            store = open_store(store_url)
            try:
                for acc in accounts:
                    checks = live_books(settings, store, acc, timeout_ms=int(timeout_s * 1000))
                    good = good and ok(checks)
                    out += lines(acc, checks)
            finally:
                store.close()
            result.append((good, out))
        except Exception as exc:  # noqa: BLE001 - reported as a line: a shutdown never fails on it
            result.append((None, [*out, f"books: not checked ({exc})"]))

    worker = threading.Thread(target=run, name="books", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not result:
        return None, [f"books: not checked within {timeout_s:.1f} s (venue or store slow); "
                      "run `chimera books` while the stack is up"]
    return result[0]
