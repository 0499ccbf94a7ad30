"""One read batch's writes, committed in one Redis pipeline (ARCHITECTURE §2.3, §4).

A handler's outputs are staged here while the batch runs: messages to XADD, timers to arm or
disarm in the scheduler's due-queue, done-markers, acks and crash-guard counts to forget. ``flush``
sends them emits and timers first, so neither an ack nor a done-marker lands without the emits and
timers of its entry (one MULTI/EXEC on one node, two steps on a cluster: see ``flush``), nor before
a replica holds them where the node has one (``WAIT``: streams/redis.py, "replication"). Each timer
script touches the ``{due}`` keys only (one cluster slot); the cluster pipeline routes every command
by its own key, so a batch may span slots.
"""

from __future__ import annotations

from collections.abc import Iterable

from chimera.schemas.envelope import Envelope, encode
from chimera.streams import keys
from chimera.streams.producer import DEFAULT_MAXLEN, CancelTimer, Emit, envelope_for
from chimera.streams.redis import check_replica_waits, is_cluster, queue_waits, replicated_nodes, retry_redis
from chimera.workers import scheduler
from chimera.workers.crashguard import CrashGuard
from chimera.workers.locks import Idempotency


class Commit:
    def __init__(self, r, group: str, idem: Idempotency, crash_guard: CrashGuard) -> None:
        self.r = r
        self.cluster = is_cluster(r)
        self.group = group
        self.idem = idem
        self.crash_guard = crash_guard
        self.traces = None  # workers/traces.Traces: the batch's execution traces, written with its acks
        self.clear()

    def clear(self) -> None:
        self.emits: list[tuple[str, dict]] = []
        # ("arm", name, due_ms, stream, fields) | ("disarm", name), in the order the handlers asked.
        self.timers: list[tuple] = []
        self.marks: list[str] = []
        self.acks: dict[str, list[str]] = {}
        self.forget: list[str] = []
        if self.traces is not None:
            self.traces.forget()

    def __bool__(self) -> bool:
        return bool(self.emits or self.timers or self.marks or self.acks or self.forget
                    or (self.traces is not None and self.traces.rows))

    def stage(self, outputs: Iterable[Emit | CancelTimer], *, parent: Envelope | None, now_ms: int,
              config_rev: int) -> None:
        """A handler's return value: emits to publish now, timers to arm, timers to disarm.

        All or nothing: an output that cannot be encoded stages none of the entry's outputs.
        """
        if not outputs:
            return
        emits, timers = [], []
        for out in outputs:
            if isinstance(out, CancelTimer):
                timers.append(("disarm", out.timer_key))
                continue
            fields = encode(envelope_for(out, parent=parent, now_ms=now_ms, config_rev=config_rev))
            if out.due_ms is None:
                emits.append((out.stream, fields))
            else:
                timers.append(("arm", out.timer_name, out.due_ms, out.stream, fields))
        self.emits.extend(emits)
        self.timers.extend(timers)

    def ack(self, stream: str, entry_id: str, *, redelivered: bool) -> None:
        self.acks.setdefault(stream, []).append(entry_id)
        if redelivered:  # only a redelivered entry can have counts or a stale marker to clear
            self.forget.append(f"{stream}/{entry_id}")

    @retry_redis
    def flush(self, read: list | None = None):
        """Write what is staged; with ``read`` (an XREADGROUP command) also read the next batch in the
        same round trip, after the acks. Returns the read's reply (an exception object if it failed).

        An ack or a done-marker must never land without the emits and timers of its entry:
        * one node without a replica: one round trip, the writes and the acks in one MULTI/EXEC. A
          plain pipeline runs every command whatever the one before it answered: past ``maxmemory``
          Redis refuses the XADD and takes the XACK, and the entry was acked with its message lost. A
          command refused inside MULTI discards the whole transaction (EXECABORT), acks included.
        * a cluster, or a node with a replica: the effects first (with the WAIT for the replica, which
          cannot block inside MULTI), the acks only once they are written. A cluster pipeline sends
          each node its share separately: in one round trip an ack could land before a timer armed on
          another node, and a crash in between would lose the timer.
        A retry after a failure re-sends only what was not written (emits again at worst: consumers
        dedupe; timers replace by name).
        """
        if not self and read is None:
            return None
        effects, settles = bool(self.emits or self.timers), bool(self.acks or self.forget or self.marks)
        # The acks wait for a replica to hold the emits and timers (streams/redis.py, "replication").
        replicas = replicated_nodes(self.r, self._written()) if effects and self.acks else {}
        if effects and settles and (self.cluster or replicas):
            pipe = self.r.pipeline(transaction=False)
            self._effects(pipe)
            at = len(pipe)
            self._execute(pipe, (at, queue_waits(pipe, replicas)))
            self.emits, self.timers = [], []
            effects = False
        pipe = self.r.pipeline(transaction=effects and settles)  # only left true on one node
        self._effects(pipe)
        # A done-marker says "this entry's effects are written": it goes after them, like the ack. On a
        # cluster it sits in another slot than the emits; sent beside them it could land while an emit's
        # node failed over, and the worker killed in the retry left a marker over a lost emit (the drill
        # lost a SubmitOrder that way: the redelivered Decide was skipped as done).
        for idem in self.marks:
            self.idem.mark(pipe, idem)
        for stream, ids in self.acks.items():
            pipe.xack(stream, self.group, *ids)
        if self.forget:
            self.crash_guard.forget(pipe, self.forget)
        if self.traces is not None:  # with the acks: a retried flush writes them again, none are lost
            self.traces.write(pipe)
        if read is not None:
            pipe.execute_command(*read)  # no BLOCK: inside MULTI it reads as it would outside
        reply = self._execute(pipe, None, with_read=read is not None)
        self.clear()
        return reply

    def _written(self) -> list[str]:
        return [stream for stream, _ in self.emits] + ([keys.SCHED_DUE] if self.timers else [])

    def _effects(self, pipe) -> None:
        for stream, fields in self.emits:
            pipe.xadd(stream, fields, maxlen=DEFAULT_MAXLEN, approximate=True)
        for op in self.timers:
            if op[0] == "arm":
                scheduler.arm(pipe, *op[1:])
            else:
                scheduler.disarm(pipe, op[1])

    @staticmethod
    def _execute(pipe, waits: tuple[int, list[str]] | None, with_read: bool = False):
        replies = pipe.execute(raise_on_error=False)
        reply = replies.pop() if with_read else None
        for r in replies:
            if isinstance(r, Exception):
                raise r
        if waits:
            at, nodes = waits
            check_replica_waits(nodes, replies[at:at + len(nodes)])
        return reply
