"""The worker's venue clients, one per account, built on first use from the settings.

Handlers reach them as ``ctx.venues.get(account_id)`` (order and account calls: the ``Venue``
adapter) and ``ctx.venues.wallet(account_id)`` (S1 treasury's wallet transfers). Keys come from the
accounts file; paper trading points both at the local venue. The in-process runtime and tests hand
in ready clients (``clients=`` / ``wallets=``), e.g. the venue engine called in-process.
"""

from __future__ import annotations

import threading
from typing import Any

from chimera.errors import FatalError


class Venues:
    def __init__(self, settings: Any = None, *, clients: dict[str, Any] | None = None,
                 wallets: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self._clients = dict(clients or {})
        self._wallets = dict(wallets or {})
        self._lock = threading.Lock()

    def get(self, account_id: str = "main"):
        """The account's ``Venue`` adapter (futures + spot clients)."""
        with self._lock:
            v = self._clients.get(account_id)
            if v is None:
                from chimera.venues.binance.adapter import venue_from_settings

                v = self._clients[account_id] = venue_from_settings(self._need_settings(), account_id)
            return v

    def wallet(self, account_id: str = "main"):
        """The account's wallet REST client (universal transfers)."""
        with self._lock:
            w = self._wallets.get(account_id)
            if w is None:
                from chimera.venues.accounts import load_accounts
                from chimera.venues.binance import wallet

                settings = self._need_settings()
                acc = next((a for a in load_accounts(settings.accounts_file or None, settings.venue)
                            if a.account_id == account_id and a.enabled), None)
                if acc is None:
                    raise FatalError(f"account {account_id!r} is missing or disabled in the accounts file")
                w = self._wallets[account_id] = wallet.wallet_rest(settings.venue_url, acc.api_key, acc.api_secret)
            return w

    def _need_settings(self):
        if self.settings is None:
            raise FatalError("no venue client was given and no settings to build one from")
        return self.settings
