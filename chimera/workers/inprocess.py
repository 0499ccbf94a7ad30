"""The in-process runtime: the same handlers and route tables over an in-memory bus (ARCHITECTURE §5).

Deterministic: one thread, a FIFO of (stream, envelope), entry ids derived from a counter, time
from a ManualClock that follows event time. Timers a handler returns (``Emit(..., due_ms=...)``)
sit in a heap ordered by (due_ms, seq); before an entry whose event time is t is delivered, every
timer due at or before t fires first, with the clock set to its due time. A timer's name
(``Emit.timer_name``) replaces or cancels it, as in the Redis due-queue.

A backtest driver moves time itself: ``publish`` a data point, ``run()`` (delivers what is queued
and the timers due before it), ``advance_to(t)`` between data points (fires what falls due up to t),
and ``drain_timers()`` at the end. It powers backtests, dry-runs, feature recompute and fast tests;
parity with the Redis runtime is tested.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable

from chimera.errors import FatalError, PermanentError
from chimera.ports.wiring import Ports, memory_ports
from chimera.schemas.envelope import Envelope, Message, decode, encode
from chimera.streams.producer import CancelTimer, Emit, envelope_for
from chimera.workers.clock import ManualClock
from chimera.workers.config import ActiveConfig, load_active
from chimera.workers.handler import Context, HandlerSpec
from chimera.workers.logctx import bind_entry, unbind


class InProcessRuntime:
    def __init__(self, specs: Iterable[HandlerSpec], *, store, settings=None, clock=None, objects=None,
                 services: dict | None = None, follow_event_time: bool = True, max_attempts: int = 3,
                 ports: Ports | None = None) -> None:
        self.specs = list(specs)
        self.store = store
        self.settings = settings
        self.objects = objects
        self.clock = clock or ManualClock()
        self.services = services or {}
        # In-memory ports on this runtime's clock, built once: their state lives as long as the run.
        self.ports = ports or memory_ports(self.clock, settings)
        self.follow_event_time = follow_event_time
        self.max_attempts = max_attempts
        self.queue: deque[tuple[str, Envelope]] = deque()
        self.log: dict[str, list[Envelope]] = {}  # every stream's entries, like XRANGE
        self.dead: list[tuple[str, Envelope | None, str]] = []
        self._seen: dict[str, set[str]] = {s.role: set() for s in self.specs}
        self._routes: dict[str, list[HandlerSpec]] = {}
        self._seq = 0
        # Timers: heap of (due_ms, seq, name, stream, env); a name is armed iff _armed[name] is its seq
        # (a replaced or cancelled timer stays in the heap and is skipped when it surfaces).
        self._timers: list[tuple[int, int, str, str, Envelope]] = []
        self._armed: dict[str, int] = {}
        self._timer_seq = 0
        self._fences: dict[str, int] = {}  # lock scope -> fencing token, as Redis's INCR would give
        self._contexts: dict[str, tuple[Context, dict]] = {}  # role -> (unfenced context, its arguments)
        self.config: ActiveConfig = load_active(store)
        for spec in self.specs:
            for stream in spec.streams(settings):
                self._routes.setdefault(stream, []).append(spec)

    # --- the bus ----------------------------------------------------------------------------------

    def _record(self, stream: str, env: Envelope) -> Envelope:
        self._seq += 1
        # Round-trip through the wire codec so the in-process path sees exactly what Redis would.
        entry = decode(encode(env), entry_id=f"{env.event_time}-{self._seq}", stream=stream)
        self.log.setdefault(stream, []).append(entry)
        return entry

    def _append(self, stream: str, env: Envelope) -> None:
        entry = self._record(stream, env)
        if stream in self._routes:
            self.queue.append((stream, entry))

    def publish(self, stream: str, payload: Message, idempotency_key: str, account_id: str = "main",
                event_time: int | None = None) -> None:
        t = event_time if event_time is not None else self.clock.now_ms()
        self._append(stream, envelope_for(Emit(stream, payload, idempotency_key, account_id, t), parent=None, now_ms=t))

    # --- driving time -----------------------------------------------------------------------------

    def run(self, max_steps: int | None = None, *, until_ms: int | None = None) -> int:
        """Deliver until the bus is empty (timers fire when an entry's event time reaches them).

        With ``until_ms``, also fire every timer due at or before it and leave the clock there.
        Returns the number of deliveries (a fired timer counts as one).
        """
        steps = 0
        while max_steps is None or steps < max_steps:
            if self.queue:
                head = self.queue[0][1]
                if self._fire_next(head.event_time if self.follow_event_time else self.clock.now_ms()):
                    steps += 1
                    continue
                stream, env = self.queue.popleft()
                if self.follow_event_time and isinstance(self.clock, ManualClock):
                    self.clock.set(env.event_time)
                self._deliver_all(stream, env)
                steps += 1
            elif self._fire_next(self.clock.now_ms() if until_ms is None else max(until_ms, self.clock.now_ms())):
                steps += 1  # due already (or by until_ms): fire it
            else:
                if until_ms is not None and isinstance(self.clock, ManualClock):
                    self.clock.set(until_ms)
                break
        return steps

    def advance_to(self, t_ms: int) -> int:
        """Move event time to ``t_ms``: deliver what is queued and fire every timer due by then."""
        return self.run(until_ms=t_ms)

    def drain_timers(self, max_fires: int = 100_000) -> int:
        """Fire every armed timer in due order (the end of a backtest). A timer that keeps re-arming
        itself (a periodic tick) would never end: past ``max_fires`` this raises, naming it."""
        fired = 0
        while (nxt := self.next_timer()) is not None:
            if fired >= max_fires:
                raise FatalError(f"drain_timers: still firing after {max_fires} timers (next: {nxt[1]} at {nxt[0]}); "
                                 "a periodic timer re-arms itself: use advance_to(t) instead")
            fired += self.run(until_ms=nxt[0])
        return fired

    def next_timer(self) -> tuple[int, str] | None:
        """(due_ms, name) of the earliest armed timer, or None."""
        self._drop_dead_timers()
        return (self._timers[0][0], self._timers[0][2]) if self._timers else None

    def armed_timers(self) -> dict[str, int]:
        """name -> due_ms of every armed timer."""
        return {name: due for due, seq, name, _s, _e in self._timers if self._armed.get(name) == seq}

    def _drop_dead_timers(self) -> None:
        while self._timers and self._armed.get(self._timers[0][2]) != self._timers[0][1]:
            heapq.heappop(self._timers)

    def _fire_next(self, t_ms: int) -> bool:
        self._drop_dead_timers()
        if not self._timers or self._timers[0][0] > t_ms:
            return False
        due, _seq, name, stream, env = heapq.heappop(self._timers)
        del self._armed[name]
        if isinstance(self.clock, ManualClock):
            self.clock.set(due)
        entry = self._record(stream, env)  # on its stream now, like the scheduler's XADD
        self._deliver_all(stream, entry)
        return True

    # --- one entry --------------------------------------------------------------------------------

    def _deliver_all(self, stream: str, env: Envelope) -> None:
        for spec in self._routes.get(stream, ()):
            self._deliver(spec, env)

    def _context(self, spec: HandlerSpec, fence: int) -> Context:
        # As in the Redis runtime, unfenced entries share one context per role and config snapshot, and a
        # fenced one is built from the same arguments: a context per delivery was ~5 % of a backtest.
        held = self._contexts.get(spec.role)
        if held is None or held[0].config is not self.config:
            kw = dict(clock=self.clock, store=self.store, config=self.config, objects=self.objects, redis=None,
                      settings=self.settings, role=spec.role, consumer="inprocess", services=self.services,
                      **self.ports.as_kwargs())
            held = self._contexts[spec.role] = (Context(**kw), kw)
        return held[0] if fence == 0 else Context(**held[1], fence=fence)

    def _deliver(self, spec: HandlerSpec, env: Envelope) -> None:
        idem = spec.idempotency(env) if spec.idempotency else None
        if idem and idem in self._seen[spec.role]:
            return
        scope = spec.lock(env) if spec.lock else None
        fence = 0
        if scope:  # one thread: never busy, but the handler gets a fencing token like on Redis
            fence = self._fences[scope] = self._fences.get(scope, 0) + 1
        ctx = self._context(spec, fence)
        for attempt in range(1, self.max_attempts + 1):
            try:
                token = bind_entry(spec.role, env)
                try:
                    outputs = list(spec.handle(env, ctx) or ())
                finally:
                    unbind(token)
                break
            except FatalError:
                raise
            except PermanentError as exc:  # an unrouted type too: dead letter with the reason
                self.dead.append((env.stream, env, f"permanent: {exc}"))
                return
            except Exception as exc:  # RetryableError or a bug: same policy as Redis, retry then dead-letter
                if attempt == self.max_attempts:
                    self.dead.append((env.stream, env, f"{type(exc).__name__}: {exc}"))
                    return
        self._apply(outputs, parent=env, config_rev=ctx.config.rev)
        if idem:
            self._seen[spec.role].add(idem)

    def _apply(self, outputs: list[Emit | CancelTimer], *, parent: Envelope, config_rev: int) -> None:
        now = self.clock.now_ms()
        for out in outputs:
            if isinstance(out, CancelTimer):
                self._armed.pop(out.timer_key, None)
            elif out.due_ms is None:
                self._append(out.stream, envelope_for(out, parent=parent, now_ms=now, config_rev=config_rev))
            else:
                self._timer_seq += 1
                name = out.timer_name
                self._armed[name] = self._timer_seq  # replaces an earlier timer of that name
                heapq.heappush(self._timers, (out.due_ms, self._timer_seq, name, out.stream,
                                              envelope_for(out, parent=parent, now_ms=now, config_rev=config_rev)))

    def entries(self, stream: str) -> list[Envelope]:
        return list(self.log.get(stream, []))
