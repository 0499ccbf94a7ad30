"""The Redis Streams consumer-group runtime: one worker loop for every role (ARCHITECTURE §2).

Two loops over one per-entry pipeline (``pipeline.py``) and one per-batch commit (``flush.py``):

* shared roles: every replica reads the group's new entries; a failing entry stays pending and
  comes back through XAUTOCLAIM;
* ordered roles (``spec.ordered``) consume only streams whose lease they hold and retry a failing
  entry in place, so a stream's entries are handled strictly in order.

Entries read with ``>`` are first deliveries; entries read from the PEL (own pending after a
restart, XAUTOCLAIM) are redeliveries: the loop says which, the pipeline does not guess.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable

from loguru import logger
from redis.exceptions import ResponseError

from chimera.ports.wiring import redis_ports
from chimera.streams import keys
from chimera.streams.redis import TRANSIENT, is_cluster, is_transient, keyslot, retry_redis
from chimera.workers.config import ConfigHolder
from chimera.workers.crashguard import CrashGuard
from chimera.workers.flush import Commit
from chimera.workers.handler import Context, HandlerSpec
from chimera.workers.leases import LeaseManager
from chimera.workers.locks import Idempotency
from chimera.workers.metrics import METRICS
from chimera.workers.pipeline import EntryPipeline, Outcome, _s, dead_letter
from chimera.workers.slots import SlotReaders

__all__ = ["Outcome", "Worker", "dead_letter", "ensure_group"]


@retry_redis
def ensure_group(r, stream: str, group: str, start: str = "0") -> None:
    try:
        r.xgroup_create(stream, group, id=start, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


def _raw_reader(r):
    """A client on ``r``'s connections whose XREADGROUP replies stay flat ``[k, v, k, v]`` lists.

    redis-py turns every entry into a dict; the runtime only needs the envelope field, so it skips
    that per-entry work (``pipeline.field_dict`` builds the dict when a dead letter needs it).
    """
    import redis

    reader = redis.Redis(connection_pool=r.connection_pool)
    reader.set_response_callback("XREADGROUP", lambda resp, **_: resp)
    return reader


class Worker:
    def __init__(self, spec: HandlerSpec, r, *, settings, store, clock, consumer: str,
                 objects=None, services: dict | None = None, streams: list[str] | None = None,
                 config: ConfigHolder | None = None, count: int = 128) -> None:
        self.spec = spec
        self.r = r
        self.settings = settings
        self.store = store
        self.objects = objects
        self.clock = clock
        self.consumer = consumer
        self.services = services or {}
        self.ports = redis_ports(r, settings)  # ctx.risk / ctx.features / ctx.venues, once per worker
        self.group = keys.group(spec.role)
        self.streams = streams if streams is not None else spec.streams(settings)
        self.config = config or ConfigHolder(store)
        self.count = count
        self.idem = Idempotency(r, self.group, settings.idem_ttl_s)
        self.stop_event = threading.Event()
        self.crash_guard = CrashGuard(r, self.group, consumer)
        self._cluster = is_cluster(r)
        self._reader = None if self._cluster else _raw_reader(r)
        self._slots = SlotReaders(self._xreadgroup, self.stop_event)  # threads only once streams span slots
        self._slots_join_s = settings.block_ms / 1000 + 1.0  # a reader's read ends within block_ms
        self._shared_groups = self._slot_groups(self.streams)  # fixed for the worker's life: not per read
        self.commit = Commit(self._reader or r, self.group, self.idem, self.crash_guard)
        self.pipeline = EntryPipeline(spec, r, settings=settings, group=self.group, consumer=consumer,
                                      commit=self.commit, crash_guard=self.crash_guard, context=self._context)
        self.leases = (
            LeaseManager(r, spec.role, consumer, self.streams, settings.lease_ttl_ms) if spec.ordered else None
        )
        self._m_done = METRICS.processed.labels(role=spec.role, outcome=Outcome.DONE)
        self._m_time = METRICS.handle_seconds.labels(role=spec.role)
        self._last_claim = 0.0
        self._last_beat = 0.0
        self._ctx: Context | None = None

    @property
    def processed(self) -> int:
        return self.pipeline.processed

    # --- lifecycle -------------------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        def on_term(signum, _frame):
            logger.info("signal {}: finishing the entry in hand, then exiting", signum)
            self.stop_event.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)

    def stop(self) -> None:
        self.stop_event.set()

    def run(self) -> None:
        for stream in self.streams:
            ensure_group(self.r, stream, self.group)
        self.config.watch(self.r)
        if self.spec.on_start is not None:
            self._start_hook()
        logger.info("worker {} ({}) consuming {} stream(s)", self.consumer, self.spec.role, len(self.streams))
        try:
            if self.spec.ordered:
                self._run_ordered()
            else:
                self._run_shared()
        finally:
            self.config.stop()
            self._slots.close(self._slots_join_s)
            if self.leases:
                self.leases.release_all()
            logger.info("worker {} stopped after {} entries", self.consumer, self.processed)

    def _start_hook(self) -> None:
        ctx = self._context()
        self.commit.stage(self.spec.on_start(ctx) or (), parent=None, now_ms=ctx.clock.now_ms(),
                          config_rev=ctx.config.rev)
        self.commit.flush()

    # --- shared-group mode -------------------------------------------------------------------

    def _run_shared(self) -> None:
        # Own pending entries first: what this consumer had read but not acked before a restart.
        self._drain_own_pending(self.streams)
        got: list = []
        while not self.stop_event.is_set():
            self._maybe_claim(self.streams)
            if not got:
                got = self._read_new()
            # On one node the next read rides in the batch's commit pipeline: one round trip per batch.
            got = self._run_batch(got, redelivered=False, read_next=self._reader is not None)

    def _run_batch(self, got: list[tuple[str, str, dict]], *, redelivered: bool, read_next: bool = False) -> list:
        """Handle one read batch and commit it; with ``read_next``, returns the next batch read in the commit."""
        if not got:
            return []
        started = time.perf_counter()
        done_before = self.processed
        process, stopping = self.pipeline.process, self.stop_event.is_set
        each = self.spec.commit_each
        try:
            for stream, entry_id, fields, env in self.pipeline.decode_batch(got):
                n = self._attempts(stream, entry_id) if redelivered else 1
                process(stream, entry_id, fields, env, n, redelivered=redelivered)
                if stopping():
                    break
                if each:
                    self.commit.flush()
        finally:
            read = self._read_command(dict.fromkeys(self.streams, ">"), None) \
                if read_next and not self.stop_event.is_set() else None
            reply = self.commit.flush(read)
            # Metrics per batch, not per entry: prometheus calls cost more than a no-op handler.
            done = self.processed - done_before
            if done:
                self._m_done.inc(done)
                self._m_time.observe((time.perf_counter() - started) / len(got))
        if read is None:
            return []
        if isinstance(reply, Exception):
            return self._read_failed(reply, self.streams)
        return self._parse_read(reply)

    def _slot_groups(self, streams: list[str]) -> list[list[str]]:
        if not self._cluster:
            return [streams]
        groups: dict[int, list[str]] = {}
        for s in streams:
            groups.setdefault(keyslot(s), []).append(s)
        return list(groups.values())

    def _read_command(self, streams: dict[str, str], block: int | None) -> list:
        args = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", self.count]
        if block is not None:
            args += ["BLOCK", block]
        return [*args, "STREAMS", *streams, *streams.values()]

    def _read_failed(self, exc: Exception, streams) -> list:
        if isinstance(exc, ResponseError) and "NOGROUP" in str(exc):
            for s in streams:  # stream deleted or flushed under us: recreate and go on
                ensure_group(self.r, s, self.group)
            return []
        if is_transient(exc):
            logger.warning("redis unavailable ({!r}); retrying", exc)
            self.stop_event.wait(0.2)
            return []
        raise exc

    def _xreadgroup(self, streams: dict[str, str], block: int | None) -> list[tuple[str, str, dict | list]]:
        try:
            if self._reader is not None:
                resp = self._reader.execute_command(*self._read_command(streams, block))
            else:
                resp = self.r.xreadgroup(self.group, self.consumer, streams, count=self.count, block=block)
        except Exception as exc:
            if isinstance(exc, ResponseError) or is_transient(exc):
                return self._read_failed(exc, streams)
            raise
        return self._parse_read(resp)

    def _parse_read(self, resp) -> list[tuple[str, str, dict | list]]:
        out = []
        # redis-py returns a list of [stream, entries] for RESP2 and a dict for RESP3.
        items = resp.items() if isinstance(resp, dict) else (resp or [])
        for stream, entries in items:
            if entries and isinstance(entries[0], list) and len(entries) == 1 and not isinstance(entries[0][0], bytes):
                entries = entries[0]
            stream = _s(stream)
            out.extend((stream, _s(entry_id), fields) for entry_id, fields in entries)
        return out

    def _read_new(self) -> list[tuple[str, str, dict]]:
        return self._read_groups(self._shared_groups, self.settings.block_ms)

    def _read_groups(self, groups: list[list[str]], block_ms: int) -> list[tuple[str, str, dict]]:
        """New entries of every group, blocking up to ``block_ms``: on one slot in this thread, over
        several through one blocking reader thread per slot (``slots.py``: polling them cost an idle
        worker a fifth of a core)."""
        if len(groups) == 1:
            return self._xreadgroup(dict.fromkeys(groups[0], ">"), block_ms)
        return self._slots.read(groups, block_ms)

    def _drain_own_pending(self, streams: list[str]) -> None:
        cursors = {s: "0" for s in streams}
        while cursors and not self.stop_event.is_set():
            got = []
            for g in self._slot_groups(list(cursors)):
                got.extend(self._xreadgroup({s: cursors[s] for s in g}, None))
            if not got:
                return
            seen = set()
            live = []
            for stream, entry_id, fields in got:
                cursors[stream] = entry_id
                seen.add(stream)
                if fields:
                    live.append((stream, entry_id, fields))
                else:  # deleted/trimmed entry still in the PEL
                    retry_redis(self.r.xack)(stream, self.group, entry_id)
            self._run_batch(live, redelivered=True)
            cursors = {s: c for s, c in cursors.items() if s in seen}

    def _maybe_claim(self, streams: Iterable[str], min_idle: int | None = None, force: bool = False) -> None:
        interval = max(self.settings.claim_idle_ms / 2000, 0.05)
        if not force and time.monotonic() - self._last_claim < interval:
            return
        self._last_claim = time.monotonic()
        for stream in streams:
            start = "0-0"
            while not self.stop_event.is_set():
                try:
                    res = self.r.xautoclaim(
                        stream, self.group, self.consumer,
                        min_idle_time=self.settings.claim_idle_ms if min_idle is None else min_idle,
                        start_id=start, count=self.count,
                    )
                except TRANSIENT:
                    return
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        ensure_group(self.r, stream, self.group)
                        break
                    raise
                start, claimed = _s(res[0]), res[1]
                deleted = res[2] if len(res) > 2 else []
                for entry_id in deleted:  # claimed ids whose entries were trimmed away
                    retry_redis(self.r.xack)(stream, self.group, entry_id)
                self._run_batch([(stream, _s(i), f) for i, f in claimed], redelivered=True)
                if start in ("0-0", "0"):
                    break

    @retry_redis
    def _attempts(self, stream: str, entry_id: str) -> int:
        info = self.r.xpending_range(stream, self.group, min=entry_id, max=entry_id, count=1)
        return int(info[0]["times_delivered"]) if info else 1

    # --- ordered (leased) mode -----------------------------------------------------------------

    def _beat(self) -> set[str]:
        assert self.leases is not None
        if time.monotonic() - self._last_beat >= self.settings.lease_ttl_ms / 3000:
            self._last_beat = time.monotonic()
            try:
                self.leases.heartbeat()
                excess = self.leases.excess()
                if excess:
                    # A reader thread may hold entries of these streams: handle them before the lease goes.
                    self._run_batch_in_order(self._slots.settle(self._slots_join_s), redelivered=False)
                for stream in excess:
                    self.leases.release(stream)
            except TRANSIENT as exc:
                logger.warning("lease heartbeat failed: {}", exc)
        return set(self.leases.owned)

    def _run_ordered(self) -> None:
        assert self.leases is not None
        while not self.stop_event.is_set():
            owned = sorted(self._beat())
            for stream in self.leases.take_new():
                # Taking a stream over: the old owner's unacked entries come first, in id order.
                self._claim_all_in_order(stream)
            if not owned:
                self.stop_event.wait(min(0.2, self.settings.lease_ttl_ms / 5000))
                continue
            block = min(self.settings.block_ms, max(self.settings.lease_ttl_ms // 4, 10))
            # Entries of a stream whose lease moved while they were read are skipped by the batch
            # (still_owns) and stay pending for the new owner, which claims them in order.
            self._run_batch_in_order(self._read_groups(self._slot_groups(owned), block), redelivered=False)

    def _claim_all_in_order(self, stream: str) -> None:
        entries: list[tuple[str, str, dict]] = []
        start = "0-0"
        while True:
            res = self.r.xautoclaim(stream, self.group, self.consumer, min_idle_time=0, start_id=start, count=500)
            start = _s(res[0])
            entries.extend((stream, _s(i), f) for i, f in res[1])
            if start in ("0-0", "0"):
                break
        entries.sort(key=lambda e: tuple(int(x) for x in e[1].split("-")))
        self._run_batch_in_order(entries, redelivered=True)

    def _run_batch_in_order(self, got: list[tuple[str, str, dict]], *, redelivered: bool) -> None:
        """Like ``_run_batch``, but a failing entry is retried in place before its stream moves on."""
        if not got:
            return
        decoded = self.pipeline.decode_batch(got)
        blocked: set[str] = set()  # streams that must not move past a stuck entry in this batch
        done_before = self.processed
        try:
            for stream, entry_id, fields, env in decoded:
                if stream in blocked or not self.leases.still_owns(stream):
                    blocked.add(stream)  # lost the lease mid-batch: the new owner claims these
                    continue
                n = self._attempts(stream, entry_id) if redelivered else 1
                if self.pipeline.process(stream, entry_id, fields, env, n, redelivered=redelivered) == Outcome.RETRY:
                    self._commit()  # commit what is done before waiting
                    if not self._retry_in_place(stream, entry_id, fields, n, env):
                        blocked.add(stream)
                if self.stop_event.is_set():
                    break
        finally:
            self._commit()
            if self.processed > done_before:
                self._m_done.inc(self.processed - done_before)

    def _commit(self) -> None:
        """Ordered mode: the handler's end-of-batch writes, then the batch's emits and acks.

        If ``end_batch`` fails, nothing is acked: the entries stay pending for the next owner.
        """
        if self.spec.end_batch is not None and self.commit.acks:
            try:
                self.spec.end_batch(self._context())
            except BaseException:
                self.commit.clear()
                raise
        self.commit.flush()

    def _retry_in_place(self, stream: str, entry_id: str, fields: dict, attempts: int, env) -> bool:
        delay = 0.01
        while not self.stop_event.is_set():
            self.stop_event.wait(delay)
            delay = min(delay * 2, 1.0)
            if self.leases and not self.leases.still_owns(stream):
                return False
            attempts += 1
            try:
                # Handled before (and failed): its failure count must be cleared on success.
                outcome = self.pipeline.process(stream, entry_id, fields, env, attempts, redelivered=True)
            finally:
                self._commit()
            if outcome != Outcome.RETRY:
                return True
        return False

    # --- one entry ----------------------------------------------------------------------------

    def _context(self, fence: int = 0) -> Context:
        config = self.config.current
        # Unfenced entries share one context per config snapshot: building it cost more than a no-op entry.
        if fence == 0 and self._ctx is not None and self._ctx.config is config:
            return self._ctx
        ctx = Context(
            clock=self.clock, store=self.store, config=config, objects=self.objects, redis=self.r,
            settings=self.settings, role=self.spec.role, consumer=self.consumer, fence=fence, services=self.services,
            **self.ports.as_kwargs(),
        )
        if fence == 0:
            self._ctx = ctx
        return ctx
