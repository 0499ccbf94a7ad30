"""Read-copy-update hot reload of the active config bundle.

``config_active`` (document ``active``) names the bundle and rev; ``config_bundles`` holds the
bundle body under ``<bundle_id>:<rev>``. Every worker keeps one immutable ``ActiveConfig`` and
swaps the reference when ``cfg:events`` announces a new rev; an entry in flight keeps the
snapshot it started with (it is captured into its context), so it finishes on the old config.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from types import MappingProxyType
from typing import Any

from loguru import logger

from chimera.errors import PermanentError
from chimera.schemas.envelope import decode
from chimera.schemas.messages import ConfigActivated
from chimera.streams import keys

_ABSENT = object()
_IMMUTABLE = frozenset({bool, int, float, str, Decimal})  # param results safe to hand out twice


@dataclass(frozen=True)
class ActiveConfig:
    bundle_id: str = "default"
    rev: int = 0
    bundle: MappingProxyType = field(default_factory=lambda: MappingProxyType({}))
    # Values that depend on the bundle alone, worked out once per snapshot (the bundle never changes under
    # it): a backtest read ~40 parameters per bar, each a string join, two lookups and a parse.
    _memo: dict = field(default_factory=dict, init=False, compare=False, repr=False)

    def get(self, key: str, default: Any = None) -> Any:
        return self.bundle.get(key, default)

    def derived(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()``, once for this snapshot (an error is raised again on the next call, not kept)."""
        try:
            return self._memo[key]
        except KeyError:
            value = self._memo[key] = build()
            return value

    def param(self, section: str, name: str, default: Any) -> Any:
        """``<section>.<name>`` (a flat key, else ``{section: {name: ...}}``) parsed as ``default``'s type.

        Booleans accept "true"/"false" strings (``bool("false")`` would be true); a value that does not
        parse is a PermanentError naming the key, so a bad bundle dead-letters with the reason.
        """
        kind = type(default)
        if kind not in _IMMUTABLE:  # a list or dict the caller may change: parsed afresh each time
            return self._param(section, name, default)
        value = self.derived(("param", section, name, kind), lambda: self._param(section, name, _ABSENT, kind))
        return default if value is _ABSENT else value

    def _param(self, section: str, name: str, default: Any, kind: type | None = None) -> Any:
        kind = kind or type(default)
        v = self.bundle.get(f"{section}.{name}")
        nested = self.bundle.get(section)
        if v is None and isinstance(nested, Mapping):
            v = nested.get(name)
        if v is None:
            return default
        try:
            if issubclass(kind, bool):
                return v.strip().lower() in ("1", "true", "yes") if isinstance(v, str) else bool(v)
            if issubclass(kind, Decimal):
                return Decimal(str(v))
            return kind(v)
        except (ValueError, TypeError, ArithmeticError) as exc:
            raise PermanentError(f"bundle {section}.{name}={v!r}: expected {kind.__name__}") from exc


def load_active(store) -> ActiveConfig:
    active = store.get("config_active", "active")
    if not active:
        return ActiveConfig()
    body = store.get("config_bundles", f"{active['bundle_id']}:{active['rev']}") or {}
    body = {k: v for k, v in body.items() if k != "_key"}
    return ActiveConfig(active["bundle_id"], int(active["rev"]), MappingProxyType(body.get("body", body)))


def activate(store, bundle_id: str, rev: int, body: dict) -> None:
    """Write a bundle and make it active (S10's promote does this, then publishes cfg:events)."""
    store.upsert("config_bundles", f"{bundle_id}:{rev}", {"bundle_id": bundle_id, "rev": rev, "body": body})
    store.upsert("config_active", "active", {"bundle_id": bundle_id, "rev": rev})


class ConfigHolder:
    def __init__(self, store, initial: ActiveConfig | None = None) -> None:
        self.store = store
        self.current = initial or load_active(store)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def apply(self, event: ConfigActivated) -> bool:
        # Only the announcement of what we already run is skipped: a rollback (or S10's last ramp step)
        # activates a LOWER rev of the same bundle, and config_active is the truth either way.
        if event.rev == self.current.rev and event.bundle_id == self.current.bundle_id:
            return False
        return self.refresh()

    def refresh(self) -> bool:
        """Run what config_active names now, if that is not what runs."""
        fresh = load_active(self.store)
        if fresh.rev != self.current.rev or fresh.bundle_id != self.current.bundle_id:
            self.current = fresh  # one reference swap: readers see old or new, never a mix
            logger.info("config hot-reloaded: {} rev {}", fresh.bundle_id, fresh.rev)
            return True
        return False

    def watch(self, r) -> None:
        """Follow cfg:events (plain XREAD: every worker must see every announcement).

        The watch starts after the stream's last entry as it is *now*, and config_active is read again
        once that id is known. Starting at ``$`` in the thread lost an activation announced between the
        holder's first load and the thread's first read: that worker ran the old rev until the next
        announcement (CI run 19: an S3 replica stayed on inc:1 through the canary; run 22: a canary with
        no order of its rev). Now such an activation is in the store by the re-read or after the id.
        """
        try:
            newest = r.xrevrange(keys.CFG_EVENTS, count=1)
            start = newest[0][0] if newest else "0-0"
        except Exception as exc:  # from the start then: old announcements only re-read the store
            logger.warning("cfg watcher: {}", exc)
            start = "0-0"
        self.refresh()

        def loop() -> None:
            last = start
            while not self._stop.is_set():
                try:
                    resp = r.xread({keys.CFG_EVENTS: last}, block=200, count=10)
                except Exception as exc:  # Redis restarting: keep the current config, retry
                    logger.warning("cfg watcher: {}", exc)
                    self._stop.wait(0.5)
                    continue
                for _stream, entries in resp or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        try:
                            env = decode(fields)
                            if isinstance(env.payload, ConfigActivated):
                                self.apply(env.payload)
                        except Exception as exc:
                            logger.warning("cfg watcher: bad entry {}: {}", entry_id, exc)

        self._thread = threading.Thread(target=loop, name="cfg-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
