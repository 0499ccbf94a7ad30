"""The in-process runtime: the same handlers over an in-memory bus (ARCHITECTURE §5).

Deterministic: one thread, a FIFO of (stream, envelope), entry ids derived from a counter,
time from a ManualClock that follows event time. It powers backtests, dry-runs, feature
recompute and fast tests; parity with the Redis runtime is tested.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from chimera.errors import PermanentError
from chimera.schemas.envelope import Envelope, Message, decode, encode
from chimera.streams.producer import Emit, envelope_for
from chimera.workers.clock import ManualClock
from chimera.workers.config import ActiveConfig, load_active
from chimera.workers.handler import Context, HandlerSpec


class InProcessRuntime:
    def __init__(self, specs: Iterable[HandlerSpec], *, store, settings=None, clock=None, objects=None,
                 services: dict | None = None, follow_event_time: bool = True, max_attempts: int = 3) -> None:
        self.specs = list(specs)
        self.store = store
        self.settings = settings
        self.objects = objects
        self.clock = clock or ManualClock()
        self.services = services or {}
        self.follow_event_time = follow_event_time
        self.max_attempts = max_attempts
        self.queue: deque[tuple[str, Envelope]] = deque()
        self.log: dict[str, list[Envelope]] = {}  # every stream's entries, like XRANGE
        self.dead: list[tuple[str, Envelope | None, str]] = []
        self._seen: dict[str, set[str]] = {s.role: set() for s in self.specs}
        self._routes: dict[str, list[HandlerSpec]] = {}
        self._seq = 0
        self.config: ActiveConfig = load_active(store)
        for spec in self.specs:
            for stream in spec.streams(settings):
                self._routes.setdefault(stream, []).append(spec)

    def _append(self, stream: str, env: Envelope) -> None:
        self._seq += 1
        # Round-trip through the wire codec so the in-process path sees exactly what Redis would.
        fields = encode(env)
        entry = decode(fields, entry_id=f"{env.event_time}-{self._seq}", stream=stream)
        self.log.setdefault(stream, []).append(entry)
        if stream in self._routes:
            self.queue.append((stream, entry))

    def publish(self, stream: str, payload: Message, idempotency_key: str, account_id: str = "main",
                event_time: int | None = None) -> None:
        t = event_time if event_time is not None else self.clock.now_ms()
        self._append(stream, envelope_for(Emit(stream, payload, idempotency_key, account_id, t), parent=None, now_ms=t))

    def run(self, max_steps: int | None = None) -> int:
        """Deliver until the bus is empty. Returns the number of deliveries."""
        steps = 0
        while self.queue and (max_steps is None or steps < max_steps):
            stream, env = self.queue.popleft()
            if self.follow_event_time and isinstance(self.clock, ManualClock):
                self.clock.set(env.event_time)
            for spec in self._routes.get(stream, ()):
                self._deliver(spec, env)
            steps += 1
        return steps

    def _deliver(self, spec: HandlerSpec, env: Envelope) -> None:
        idem = spec.idempotency(env) if spec.idempotency else None
        if idem and idem in self._seen[spec.role]:
            return
        ctx = Context(clock=self.clock, store=self.store, config=self.config, objects=self.objects,
                      redis=None, settings=self.settings, role=spec.role, consumer="inprocess",
                      services=self.services)
        for attempt in range(1, self.max_attempts + 1):
            try:
                emits = list(spec.handle(env, ctx) or ())
                break
            except PermanentError as exc:
                self.dead.append((env.stream, env, f"permanent: {exc}"))
                return
            except Exception as exc:  # RetryableError or a bug: same policy as Redis, retry then dead-letter
                if attempt == self.max_attempts:
                    self.dead.append((env.stream, env, f"{type(exc).__name__}: {exc}"))
                    return
        now = self.clock.now_ms()
        for emit in emits:
            self._append(emit.stream, envelope_for(emit, parent=env, now_ms=now, config_rev=ctx.config.rev))
        if idem:
            self._seen[spec.role].add(idem)

    def entries(self, stream: str) -> list[Envelope]:
        return list(self.log.get(stream, []))
