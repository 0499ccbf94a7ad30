"""The accounts file: which exchange accounts Chimera trades, each with its own keys.

JSON ``{"accounts": [{"account_id": "main", "api_key": "...", "api_secret": "...", "enabled": true}, ...]}``.
Keys may be given as ``"env:VAR"`` so secrets stay out of the file. In paper mode with no file,
the local venue's deterministic default keys for ``main`` and ``sub1`` are used.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from chimera.errors import FatalError


@dataclass(frozen=True)
class Account:
    account_id: str
    api_key: str
    api_secret: str
    enabled: bool = True


def _secret(value: str, where: str) -> str:
    if value.startswith("env:"):
        var = value[4:]
        if var not in os.environ:
            raise FatalError(f"{where} refers to ${var}, which is not set")
        return os.environ[var]
    return value


def load_accounts(path: str | None, venue: str = "paper") -> list[Account]:
    """All accounts in the file (disabled ones included, flagged); the caller skips disabled ones."""
    if not path:
        if venue != "paper":
            raise FatalError("CHIMERA_ACCOUNTS_FILE is required for testnet/live (see docs: accounts file)")
        from chimera.venues.local.server.app import default_keys

        return [Account(name, *default_keys(name)) for name in ("main", "sub1")]
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise FatalError(f"cannot read accounts file {path}: {exc}") from None
    out, seen = [], set()
    for i, item in enumerate(raw.get("accounts", [])):
        where = f"{path}: accounts[{i}]"
        for field in ("account_id", "api_key", "api_secret"):
            if not isinstance(item.get(field), str) or not item[field]:
                raise FatalError(f"{where}.{field} is missing or not a string")
        if item["account_id"] in seen:
            raise FatalError(f"{where}: duplicate account_id {item['account_id']!r}")
        seen.add(item["account_id"])
        out.append(Account(item["account_id"], _secret(item["api_key"], where), _secret(item["api_secret"], where),
                           bool(item.get("enabled", True))))
    if not any(a.account_id == "main" for a in out):
        raise FatalError(f"{path}: an account with account_id 'main' is required")
    return out


def find_account(path: str | None, venue: str, account_id: str) -> tuple[Account | None, str]:
    """``(account, "")`` when ``account_id`` is listed and enabled, else ``(None, why)``."""
    acc = next((a for a in load_accounts(path, venue) if a.account_id == account_id), None)
    if acc is None:
        return None, f"is not in the accounts file ({path or 'paper defaults: main, sub1'})"
    if not acc.enabled:
        return None, f"is disabled in the accounts file ({path})"
    return acc, ""
