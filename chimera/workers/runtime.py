"""The Redis Streams consumer-group runtime: one loop for every role (ARCHITECTURE §2).

Per entry: decode (unknown type/version → dead letter + ack) → idempotency (already done → ack)
→ TTL lock for the spec's scope (busy → leave pending) → crash-loop guard on a redelivery
(``crashguard.py``) → ``handle``. Per read batch: one pipeline of XADD emits, done-marks, XACKs.

Ack policy, explicitly:
* success: ack after the emits are written (a crash before the ack re-emits; consumers dedupe);
* ``RetryableError``, an unexpected exception, or a busy lock: no ack. The entry stays pending
  and comes back through XAUTOCLAIM after ``claim_idle_ms`` (on any replica) until it has failed
  ``max_attempts`` times (a busy lock is not a failure), then it is dead-lettered with the last reason;
* ``PermanentError`` or an undecodable entry: dead letter + ack at once;
* ``FatalError``: the worker stops (it cannot run at all).

Ordered roles (``spec.ordered``) consume only streams whose lease they hold and retry a failing
entry in place, so a stream's entries are handled strictly in order.
"""

from __future__ import annotations

import signal
import threading
import time
import traceback
from collections.abc import Iterable

import msgspec
from loguru import logger
from redis.exceptions import ResponseError

from chimera.errors import FatalError, PermanentError, RetryableError
from chimera.schemas.envelope import Envelope, UnknownMessageType, decode, encode
from chimera.schemas.messages import DeadLetter
from chimera.streams import keys
from chimera.streams.producer import DEFAULT_MAXLEN, Emit, envelope_for
from chimera.streams.redis import TRANSIENT, is_cluster, keyslot, retry_redis
from chimera.workers.config import ConfigHolder
from chimera.workers.crashguard import CrashGuard
from chimera.workers.handler import Context, HandlerSpec
from chimera.workers.leases import LeaseManager
from chimera.workers.locks import Idempotency, Lock
from chimera.workers.metrics import METRICS


class Outcome:
    DONE, DUPLICATE, RETRY, DEAD = "done", "duplicate", "retry", "dead"


@retry_redis
def ensure_group(r, stream: str, group: str, start: str = "0") -> None:
    try:
        r.xgroup_create(stream, group, id=start, mkstream=True)
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


@retry_redis
def dead_letter(r, *, stream: str, group: str, entry_id: str, fields: dict, reason: str,
                attempts: int, consumer: str, now_ms: int) -> None:
    letter = DeadLetter(
        stream=stream, group=group, entry_id=entry_id,
        fields={(k.decode() if isinstance(k, bytes) else k): (v if isinstance(v, bytes) else str(v).encode())
                for k, v in fields.items()},
        reason=reason[:4000], attempts=attempts, consumer=consumer, failed_at=now_ms,
    )
    env = envelope_for(Emit(keys.DEAD_LETTER, letter, f"{stream}/{group}/{entry_id}"), parent=None, now_ms=now_ms)
    r.xadd(keys.DEAD_LETTER, encode(env), maxlen=DEFAULT_MAXLEN, approximate=True)
    METRICS.dead_letters.labels(group=group).inc()


def _s(x) -> str:
    return x.decode() if isinstance(x, bytes) else x


def _decode(stream: str, entry_id: str, fields: dict) -> Envelope | Exception:
    try:
        return decode(fields, entry_id, stream)
    except (UnknownMessageType, msgspec.DecodeError, msgspec.ValidationError) as exc:
        return exc


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
        self.group = keys.group(spec.role)
        self.streams = streams if streams is not None else spec.streams(settings)
        self.config = config or ConfigHolder(store)
        self.count = count
        self.idem = Idempotency(r, self.group, settings.idem_ttl_s)
        self.stop_event = threading.Event()
        self.crash_guard = CrashGuard(r, self.group, consumer)
        self.leases = (
            LeaseManager(r, spec.role, consumer, self.streams, settings.lease_ttl_ms) if spec.ordered else None
        )
        self._cluster = is_cluster(r)
        # Commit batching: a read batch's emits, done-marks and acks go out in one pipeline.
        self._emits: list[tuple[str, dict]] = []
        self._marks: list[str] = []
        self._acks: dict[str, list[str]] = {}
        self._seen: set[str] = set()
        self._forget: list[str] = []
        self._redelivered = False
        self._m_done = METRICS.processed.labels(role=spec.role, outcome=Outcome.DONE)
        self._m_dup = METRICS.processed.labels(role=spec.role, outcome=Outcome.DUPLICATE)
        self._m_retry = METRICS.processed.labels(role=spec.role, outcome=Outcome.RETRY)
        self._m_time = METRICS.handle_seconds.labels(role=spec.role)
        self._last_claim = 0.0
        self._last_beat = 0.0
        self.processed = 0

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
            if self.leases:
                self.leases.release_all()
            logger.info("worker {} stopped after {} entries", self.consumer, self.processed)

    def _start_hook(self) -> None:
        ctx = self._context()
        now = self.clock.now_ms()
        for emit in self.spec.on_start(ctx) or ():
            self._emits.append((emit.stream, encode(envelope_for(emit, parent=None, now_ms=now,
                                                                 config_rev=ctx.config.rev))))
        self._flush()

    # --- shared-group mode -------------------------------------------------------------------

    def _run_shared(self) -> None:
        # Own pending entries first: what this consumer had read but not acked before a restart.
        self._drain_own_pending(self.streams)
        while not self.stop_event.is_set():
            self._maybe_claim(self.streams)
            self._run_batch(self._read_new(self.streams))

    def _run_batch(self, got: list[tuple[str, str, dict]], attempts: int | None = 1) -> None:
        if not got:
            return
        started = time.perf_counter()
        done_before = self.processed
        decoded = self._decode_batch(got)
        try:
            for stream, entry_id, fields, env in decoded:
                n = attempts if attempts is not None else self._attempts(stream, entry_id)
                self._process(stream, entry_id, fields, n, env)
                if self.stop_event.is_set():
                    break
        finally:
            self._flush()
            # Metrics per batch, not per entry: prometheus calls cost more than a no-op handler.
            done = self.processed - done_before
            if done:
                self._m_done.inc(done)
                self._m_time.observe((time.perf_counter() - started) / len(got))

    def _decode_batch(self, got: list[tuple[str, str, dict]]) -> list[tuple[str, str, dict, Envelope | Exception]]:
        """Each entry with its envelope (or why it cannot be decoded); the batch's done-markers prefetched."""
        decoded = [(stream, entry_id, fields, _decode(stream, entry_id, fields)) for stream, entry_id, fields in got]
        self._prefetch_seen([env for *_, env in decoded if isinstance(env, Envelope)])
        return decoded

    def _prefetch_seen(self, envs: list[Envelope]) -> None:
        """One round trip for the whole batch instead of one EXISTS per entry."""
        self._seen = set()
        if not self.spec.idempotency or not envs:
            return
        idems = [i for i in (self.spec.idempotency(env) for env in envs) if i]  # "" = no marker: skip
        self._seen = {idem for idem, hit in zip(idems, self._exists(idems), strict=True) if hit}

    @retry_redis  # a failover must not kill the worker (found by the chaos drill on the cluster)
    def _exists(self, idems: list[str]) -> list:
        pipe = self.r.pipeline(transaction=False)
        for idem in idems:
            pipe.exists(self.idem.key(idem))
        return pipe.execute()

    @retry_redis
    def _flush(self) -> None:
        if not (self._emits or self._marks or self._acks or self._forget):
            return
        pipe = self.r.pipeline(transaction=False)
        for stream, fields in self._emits:
            pipe.xadd(stream, fields, maxlen=DEFAULT_MAXLEN, approximate=True)
        for idem in self._marks:
            self.idem.mark(pipe, idem)
        for stream, ids in self._acks.items():
            pipe.xack(stream, self.group, *ids)
        if self._forget:
            self.crash_guard.forget(pipe, self._forget)
        pipe.execute()
        self._emits, self._marks, self._acks, self._forget = [], [], {}, []

    def _slot_groups(self, streams: list[str]) -> list[list[str]]:
        if not self._cluster:
            return [streams]
        groups: dict[int, list[str]] = {}
        for s in streams:
            groups.setdefault(keyslot(s), []).append(s)
        return list(groups.values())

    def _xreadgroup(self, streams: dict[str, str], block: int | None) -> list[tuple[str, str, dict]]:
        try:
            resp = self.r.xreadgroup(self.group, self.consumer, streams, count=self.count, block=block)
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # stream deleted or flushed under us: recreate and go on
                for s in streams:
                    ensure_group(self.r, s, self.group)
                return []
            raise
        except TRANSIENT as exc:
            logger.warning("redis unavailable ({}); retrying", exc)
            self.stop_event.wait(0.2)
            return []
        out = []
        # redis-py returns a list of [stream, entries] for RESP2 and a dict for RESP3.
        items = resp.items() if isinstance(resp, dict) else (resp or [])
        for stream, entries in items:
            if entries and isinstance(entries[0], list) and len(entries) == 1 and not isinstance(entries[0][0], bytes):
                entries = entries[0]
            for entry_id, fields in entries:
                out.append((_s(stream), _s(entry_id), fields))
        return out

    def _read_new(self, streams: list[str]) -> list[tuple[str, str, dict]]:
        groups = self._slot_groups(streams)
        block = self.settings.block_ms if len(groups) == 1 else None
        out: list[tuple[str, str, dict]] = []
        for g in groups:
            out.extend(self._xreadgroup({s: ">" for s in g}, block))
        if not out and len(groups) > 1:
            self.stop_event.wait(0.005)  # non-blocking reads over several slots: don't spin
        return out

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
            self._run_batch(live, attempts=None)
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
                self._run_batch([(stream, _s(i), f) for i, f in claimed], attempts=None)
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
                for stream in self.leases.excess():
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
            groups = self._slot_groups(owned)
            for g in groups:
                block = min(self.settings.block_ms, max(self.settings.lease_ttl_ms // 4, 10))
                self._run_batch_in_order(self._xreadgroup({s: ">" for s in g}, block if len(groups) == 1 else None))
                if self.stop_event.is_set():
                    return
            if len(groups) > 1:
                self.stop_event.wait(0.002)

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
        self._run_batch_in_order(entries, attempts=None)

    def _run_batch_in_order(self, got: list[tuple[str, str, dict]], attempts: int | None = 1) -> None:
        """Like ``_run_batch``, but a failing entry is retried in place before its stream moves on."""
        if not got:
            return
        decoded = self._decode_batch(got)
        blocked: set[str] = set()  # streams that must not move past a stuck entry in this batch
        done_before = self.processed
        try:
            for stream, entry_id, fields, env in decoded:
                if stream in blocked or not self.leases.still_owns(stream):
                    blocked.add(stream)  # lost the lease mid-batch: the new owner claims these
                    continue
                n = attempts if attempts is not None else self._attempts(stream, entry_id)
                if self._process(stream, entry_id, fields, n, env) == Outcome.RETRY:
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
        if self.spec.end_batch is not None and self._acks:
            try:
                self.spec.end_batch(self._context())
            except BaseException:
                self._emits, self._marks, self._acks, self._forget = [], [], {}, []
                raise
        self._flush()

    def _retry_in_place(self, stream: str, entry_id: str, fields: dict, attempts: int, env) -> bool:
        delay = 0.01
        while not self.stop_event.is_set():
            self.stop_event.wait(delay)
            delay = min(delay * 2, 1.0)
            if self.leases and not self.leases.still_owns(stream):
                return False
            attempts += 1
            try:
                outcome = self._process(stream, entry_id, fields, attempts, env)
            finally:
                self._commit()
            if outcome != Outcome.RETRY:
                return True
        return False

    # --- one entry ----------------------------------------------------------------------------

    def _dead(self, stream, entry_id, fields, reason, attempts) -> str:
        dead_letter(self.r, stream=stream, group=self.group, entry_id=entry_id, fields=fields, reason=reason,
                    attempts=attempts, consumer=self.consumer, now_ms=self.clock.now_ms())
        # Acked at once, not with the batch: a worker killed before its batch commits must not
        # dead-letter the same entry again on its next start.
        retry_redis(self.r.xack)(stream, self.group, entry_id)
        self._ack(stream, entry_id)
        logger.warning("dead-lettered {} {} after {} attempt(s): {}", stream, entry_id, attempts, reason[:200])
        return Outcome.DEAD

    def _ack(self, stream: str, entry_id: str) -> None:
        self._acks.setdefault(stream, []).append(entry_id)
        if self._redelivered:  # only a redelivered entry can have counts or a stale marker to clear
            self._forget.append(f"{stream}/{entry_id}")

    def _process(self, stream: str, entry_id: str, fields: dict, attempts: int, env: Envelope | Exception) -> str:
        self._redelivered = attempts > 1
        if isinstance(env, Exception):
            return self._dead(stream, entry_id, fields, f"undecodable: {env}", attempts)
        idem = self.spec.idempotency(env) if self.spec.idempotency else None
        if idem and idem in self._seen:
            self._ack(stream, entry_id)
            self._m_dup.inc()
            return Outcome.DUPLICATE
        lock = None
        scope = self.spec.lock(env) if self.spec.lock else None
        if scope:
            lock = Lock(self.r, scope, self.settings.lock_ttl_ms, owner=f"{self.consumer}:{entry_id}")
            if not lock.acquire(wait_ms=200):
                return Outcome.RETRY  # busy: stays pending, comes back after claim_idle
        ctx = self._context(lock.fence if lock else 0)
        ref = f"{stream}/{entry_id}" if attempts > 1 else None  # crash-loop guard (crashguard.py)
        try:
            if ref and (crashes := self.crash_guard.take(ref, ctx.clock.now_ms())) >= self.settings.max_attempts:
                # Handler failures are counted separately (_retry).
                return self._dead(stream, entry_id, fields, f"the worker died {crashes} times while "
                                  f"handling it ({attempts} deliveries)", attempts)
            emits = list(self.spec.handle(env, ctx) or ())
        except FatalError:
            raise
        except PermanentError as exc:
            return self._dead(stream, entry_id, fields, f"permanent: {exc}", attempts)
        except RetryableError as exc:
            return self._retry(stream, entry_id, fields, attempts, f"retryable: {exc}")
        except Exception as exc:  # a bug or a library error nobody translated: retry, then dead-letter
            reason = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=8)}"
            return self._retry(stream, entry_id, fields, attempts, reason)
        finally:
            if ref:
                self.crash_guard.release(ref)
            if lock is not None:
                lock.release()
        now = ctx.clock.now_ms()
        for emit in emits:
            self._emits.append((emit.stream, encode(envelope_for(emit, parent=env, now_ms=now, config_rev=ctx.config.rev))))
        if idem:
            self._marks.append(idem)
        self._ack(stream, entry_id)
        self.processed += 1
        return Outcome.DONE

    def _context(self, fence: int = 0) -> Context:
        return Context(
            clock=self.clock, store=self.store, config=self.config.current, objects=self.objects, redis=self.r,
            settings=self.settings, role=self.spec.role, consumer=self.consumer, fence=fence, services=self.services,
        )

    def _retry(self, stream, entry_id, fields, attempts, reason) -> str:
        failures = self.crash_guard.count_failure(f"{stream}/{entry_id}")
        if failures >= self.settings.max_attempts:
            return self._dead(stream, entry_id, fields, reason, failures)
        logger.warning("entry {} {} failed (attempt {}): {}", stream, entry_id, attempts, reason.splitlines()[0])
        self._m_retry.inc()
        return Outcome.RETRY
