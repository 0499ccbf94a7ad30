"""Replay paced by the pipeline: the venue advances only when Chimera's streams are drained.

With ``--pace-redis URL`` the venue replays history one step (``--pace-step-ms``, default one
market minute) at a time; before the next step it waits until

* every WebSocket frame of the step has left the venue (no client backlog),
* S1 has published each bar that closed in the step (the newest ``Kline`` on
  ``mkt:events:{perp}:<SYM>`` closes at or after the step's last millisecond), and
* every consumer group of the pipeline's roles (``cg:s2`` … ``cg:s6``) on the pipeline's streams has
  nothing pending and no lag,

so a decision reaches the venue in the market minute it would live, however slow the pipeline is
(issue 12 item 3).

Timers fire in market time too: a step also ends at the earliest armed timer of Chimera's
due-queue (``sched:{due}``): the venue replays the events before its due time, moves its clock to
it, publishes that time (``ClockPublisher``, the workers' ``CHIMERA_CLOCK=follow``), and waits until
the scheduler, following that clock, has fired every timer due by then and the pipeline has
drained what they started. So a 3 s maker window is 3 s of market time, as in the in-process
backtest, where a timer due at or before an event fires before it. A step that does not drain within ``timeout_s`` is let go with a warning and
counted (``pace.timeouts`` in ``GET /chimera/v1/clock``): a role that is not running must not stop
the replay for ever.
"""

from __future__ import annotations

from collections.abc import Iterable

from loguru import logger

from chimera.schemas.envelope import decode
from chimera.schemas.messages import Kline
from chimera.streams import keys

GROUPS = frozenset({"cg:s2", "cg:s3", "cg:s4", "cg:s5", "cg:s6"})
LOOKBACK = 50  # newest entries of a market stream searched for the step's bar


def pipeline_streams(symbols: Iterable[str]) -> list[str]:
    syms = sorted(symbols)
    return ([keys.mkt_stream("perp", s) for s in syms] + [keys.feat_stream(s) for s in syms]
            + [keys.ORD_COMMANDS, keys.ROUTER_TIMERS, keys.VENUE_REPORTS, keys.ORD_RESULTS, keys.POS_COMMANDS])


def resolve_url(url: str) -> str:
    """``env``: Chimera's own Redis (``CHIMERA_REDIS_URL``), as ``chimera up`` passes it before knowing it."""
    if url != "env":
        return url
    import os

    found = os.environ.get("CHIMERA_REDIS_URL", "")
    if not found:
        raise ValueError("--pace-redis env: CHIMERA_REDIS_URL is not set")
    return found


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


class DrainGate:
    def __init__(self, redis_url: str, symbols: Iterable[str], groups: frozenset[str] = GROUPS,
                 timeout_s: float = 30.0) -> None:
        from chimera.streams.redis import connect

        self.r = connect(resolve_url(redis_url))
        self.symbols = sorted(symbols)
        self.streams = pipeline_streams(self.symbols)
        self.groups = groups
        self.timeout_s = timeout_s

    def bar_published(self, symbol: str, step_end_ms: int) -> bool:
        stream = keys.mkt_stream("perp", symbol)
        for eid, fields in self.r.xrevrange(stream, "+", "-", count=LOOKBACK):
            try:
                env = decode(fields, entry_id=_s(eid), stream=stream)
            except Exception:  # noqa: BLE001 - not ours to judge; keep looking
                continue
            if isinstance(env.payload, Kline) and env.payload.close_time >= step_end_ms - 1:
                return True
        return False

    def busy_groups(self) -> list[str]:
        out = []
        for stream in self.streams:
            try:
                groups = self.r.xinfo_groups(stream)
            except Exception:  # noqa: BLE001 - no such stream yet: nothing to wait for
                continue
            for g in groups:
                name = _s(g.get("name", ""))
                if name in self.groups and (int(g.get("pending") or 0) or int(g.get("lag") or 0)):
                    out.append(f"{stream}/{name}")
        return out

    def drained(self, step_end_ms: int, closed: Iterable[str]) -> bool:
        """True once the bars of ``closed`` symbols (closed in the step) are published and consumed."""
        if not all(self.bar_published(s, step_end_ms) for s in sorted(closed) if s in self.symbols):
            return False
        busy = self.busy_groups()
        if busy:
            logger.trace("pace: waiting for {}", busy)
        return not busy

    def next_due(self) -> int | None:
        """Due time of the earliest armed timer of the due-queue, or None."""
        head = self.r.zrange(keys.SCHED_DUE, 0, 0, withscores=True)
        return int(head[0][1]) if head else None

    def timers_fired(self, now_ms: int) -> bool:
        """No timer due at or before ``now_ms`` is still waiting for the scheduler."""
        return not self.r.zrangebyscore(keys.SCHED_DUE, 0, now_ms, start=0, num=1)

    def close(self) -> None:
        try:
            self.r.close()
        except Exception:  # noqa: BLE001
            pass


class ClockPublisher:
    """Writes the venue's replay time to ``replay:{clock}`` for workers with ``CHIMERA_CLOCK=follow``.

    Throttled to one write per ``every_s`` of wall time unless forced (a paced step's end, a manual
    advance, a speed change): between writes a follower extrapolates at xN, or, paced or at "max",
    holds the last value, which is exactly where a paced venue waits.
    """

    def __init__(self, redis_url: str, key: str = keys.REPLAY_CLOCK, every_s: float = 0.02) -> None:
        from chimera.streams.redis import connect

        self.r = connect(resolve_url(redis_url))
        self.key = key
        self.every_s = every_s
        self._last: tuple | None = None
        self._at = 0.0

    def publish(self, time_ms: int, speed: float, *, paced: bool, done: bool, force: bool = False) -> None:
        import json
        import time

        state = (int(time_ms), float(speed), bool(paced), bool(done))
        now = time.monotonic()
        if state == self._last or (not force and now - self._at < self.every_s):
            return
        try:
            self.r.set(self.key, json.dumps({"time_ms": state[0], "speed": "max" if speed < 0 else speed,
                                             "paced": paced, "done": done}))
        except Exception as exc:  # noqa: BLE001 - Redis away: the followers hold their last value
            logger.warning("replay clock not published: {}", exc)
            return
        self._last, self._at = state, now

    def close(self) -> None:
        try:
            self.r.close()
        except Exception:  # noqa: BLE001
            pass
