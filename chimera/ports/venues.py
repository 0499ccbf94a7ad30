"""The worker's venue clients, one per account, built on first use from the settings.

Handlers reach them as ``ctx.venues.get(account_id)`` (order and account calls: the ``Venue``
adapter), ``ctx.venues.wallet(account_id)`` (S1 treasury's wallet transfers) and
``ctx.venues.klines(symbol, start_ms, end_ms)`` (closed futures klines of a period: S2's recompute).
Keys come from the accounts file; paper trading points them at the local venue. The in-process
runtime and tests hand in ready ones (``clients=`` / ``wallets=`` / ``klines=``), e.g. the venue
engine called in-process or a list of recorded klines.

An account the accounts file does not list, or lists disabled, is refused with ``UnknownAccount``
(a ``PermanentError``: the message dead-letters with the reason and the worker goes on). Nothing is
ever sent to another account instead, ``main`` included. A broken accounts file stays Fatal.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from chimera.errors import FatalError, PermanentError, RetryableError

KlineSource = Callable[[str, int, int], list]  # (symbol, start_ms, end_ms) -> [Kline], closed bars only


class UnknownAccount(PermanentError):
    """A message names an account this worker has no (enabled) venue client for."""


class Venues:
    def __init__(self, settings: Any = None, *, clients: dict[str, Any] | None = None,
                 wallets: dict[str, Any] | None = None, klines: KlineSource | None = None) -> None:
        self.settings = settings
        self._clients = dict(clients or {})
        self._wallets = dict(wallets or {})
        self._klines = klines
        self._lock = threading.Lock()

    def get(self, account_id: str = "main"):
        """The account's ``Venue`` adapter (futures + spot clients); ``UnknownAccount`` if it has none."""
        with self._lock:
            v = self._clients.get(account_id)
            if v is None:
                from chimera.venues.binance.adapter import venue_for_account

                v = self._clients[account_id] = venue_for_account(self._need_settings(account_id),
                                                                  self._account(account_id))
            return v

    def wallet(self, account_id: str = "main"):
        """The account's wallet REST client (universal transfers); ``UnknownAccount`` if it has none."""
        with self._lock:
            w = self._wallets.get(account_id)
            if w is None:
                from chimera.venues.binance import wallet

                acc = self._account(account_id)
                w = self._wallets[account_id] = wallet.wallet_rest(self._need_settings(account_id).venue_url,
                                                                   acc.api_key, acc.api_secret)
            return w

    def _account(self, account_id: str):
        """The enabled account from the accounts file, read afresh (only on a client's first use)."""
        from chimera.venues.accounts import find_account

        settings = self._need_settings(account_id)
        acc, why = find_account(settings.accounts_file or None, settings.venue, account_id)
        if acc is None:
            raise UnknownAccount(f"account {account_id!r} {why}: refused, nothing was sent to any account")
        return acc

    def klines(self, symbol: str, start_ms: int, end_ms: int) -> list:
        """Closed futures 1m klines with ``start_ms <= open_time < end_ms`` (public market data)."""
        with self._lock:
            if self._klines is None:
                self._klines = self._rest_klines()
            load = self._klines
        return load(symbol, start_ms, end_ms)

    def _rest_klines(self) -> KlineSource:
        base = getattr(self.settings, "venue_url", "") if self.settings is not None else ""
        if not base:
            raise PermanentError("klines: no kline source was given and no settings.venue_url")
        from chimera.venues.binance.market_data import drop_forming, fetch_klines, futures_rest

        rest = futures_rest(base)

        def load(symbol: str, start: int, end: int) -> list:
            try:
                # The venue's clock (replay time in paper mode) says which bar is still forming.
                now = int(rest.check_server_time().data().server_time)
                return drop_forming(fetch_klines(rest, symbol, start, end), now)
            except Exception as exc:  # network / venue errors: try again later
                raise RetryableError(f"klines {symbol} from {base}: {exc}") from exc

        return load

    def _need_settings(self, account_id: str = "main"):
        if self.settings is None:
            if self._clients or self._wallets:  # handed ready clients (in-process): others are unknown
                raise UnknownAccount(f"account {account_id!r} has no venue client here "
                                     f"(known: {', '.join(sorted({*self._clients, *self._wallets}))})")
            raise FatalError("no venue client was given and no settings to build one from")
        return self.settings
