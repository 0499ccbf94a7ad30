"""Blocking reads over streams that hash to several cluster slots.

A cluster's XREADGROUP may only name keys of one hash slot, so a role whose streams live in k slots
cannot block on all of them in one call. The runtime used to poll each slot without blocking, every
few milliseconds: measured on the 6-node test cluster, an idle S2, S3, S4, S6 or S11 worker burnt
15-27 % of a core and the nodes another 14-16 % (0.2 % each on one server, where one blocking read
covers every stream). On a small machine that starves the work that matters.

Here one thread per slot group blocks in its own XREADGROUP; the worker's loop still handles every
entry on its own thread. Reads are granted by the loop: each ``read`` call lets every reader make one
blocking read, issued within ``block_ms`` of the grant (a late thread drops a stale grant). So

* while the loop handles a batch, each slot holds at most the one batch its last grant read (pending
  for this consumer: a restart or XAUTOCLAIM still gets it, a second delivery meets the idempotency
  key as any redelivery does);
* an ordered role's read always ends within ``2 * block_ms`` of the loop's lease check, before the
  lease can expire (``block_ms <= lease_ttl / 4``, heartbeats every ``lease_ttl / 3``), so a new owner's
  takeover claim finds every entry read under the old lease; before giving a lease up the loop calls
  ``settle`` and handles what the readers hold.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

Entries = list[tuple[str, str, dict | list]]
ReadFn = Callable[[dict, int | None], Entries]


class _Reader:
    def __init__(self, owner: SlotReaders, streams: list[str]) -> None:
        self.owner, self.streams = owner, streams
        self.granted_at: float | None = None  # the rest is guarded by owner.cond
        self.busy = False
        self.closed = False
        self.thread = threading.Thread(target=self._loop, daemon=True, name="slot-reader")
        self.thread.start()

    def _loop(self) -> None:
        o = self.owner
        ask = dict.fromkeys(self.streams, ">")
        block_s = o.block_ms / 1000
        while True:
            with o.cond:
                while self.granted_at is None and not (self.closed or o.stop.is_set()):
                    o.cond.wait(0.2)
                if self.closed or o.stop.is_set():
                    return
                granted_at, self.granted_at = self.granted_at, None
                if time.monotonic() - granted_at > block_s:
                    continue  # a grant this thread was too slow to use: the loop grants again
                self.busy = True
            try:
                got: Entries | Exception = o.read_fn(ask, o.block_ms)
            except Exception as exc:  # raised on the loop's thread, as its own read would be
                got = exc
            with o.cond:
                self.busy = False
                if got:
                    o.held.append(got)
                o.cond.notify_all()
            if isinstance(got, Exception):
                return


class SlotReaders:
    """What the worker's loop calls instead of one XREADGROUP when its streams span several slots."""

    def __init__(self, read_fn: ReadFn, stop: threading.Event) -> None:
        self.read_fn, self.stop = read_fn, stop
        self.cond = threading.Condition()
        self.held: list[Entries | Exception] = []
        self.block_ms = 0
        self._groups: list[list[str]] = []
        self._readers: list[_Reader] = []

    def read(self, groups: list[list[str]], block_ms: int) -> Entries:
        """Grant every slot one read and return what has arrived, waiting up to ``block_ms`` for it."""
        if groups != self._groups or block_ms != self.block_ms:
            # Joined before new readers start: no stream is read by two threads, so order holds.
            self.close(block_ms / 1000 + 1.0)
            self._groups, self.block_ms = groups, block_ms
            self._readers = [_Reader(self, g) for g in groups]
        with self.cond:
            now = time.monotonic()
            for rd in self._readers:
                rd.granted_at = now
            self.cond.notify_all()
            self.cond.wait_for(lambda: self.held, timeout=block_ms / 1000)
            return self._take()

    def settle(self, timeout_s: float) -> Entries:
        """No read in flight and none granted; returns what the readers hold (for the loop to handle)."""
        with self.cond:
            for rd in self._readers:
                rd.granted_at = None
            self.cond.wait_for(lambda: not any(rd.busy for rd in self._readers), timeout=timeout_s)
            return self._take()

    def close(self, timeout_s: float) -> None:
        with self.cond:
            for rd in self._readers:
                rd.closed = True
            self.cond.notify_all()
        for rd in self._readers:
            rd.thread.join(timeout_s)
        self._readers, self._groups = [], []

    def _take(self) -> Entries:
        failed = next((g for g in self.held if isinstance(g, Exception)), None)
        if failed is not None:  # what was read beside it stays held for the next call
            self.held.remove(failed)
            raise failed
        held, self.held = self.held, []
        return [e for got in held for e in got]
