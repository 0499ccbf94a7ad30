"""Notifier chaos: a local receiver (aiohttp on loopback) speaking Standard Webhooks and the Telegram
Bot API fails 30% of sends (500s and 429s with retry_after) while the notifier process is SIGKILLed
mid-send (the receiver kills it after accepting a message, before replying). Nothing is lost and
every duplicate the receiver sees is accounted for by an attempt the notifier logged as ``lost``."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import signal
import threading
import time
from collections import defaultdict

from aiohttp import web

from chimera.handlers.notifier.channels import sign
from chimera.schemas.observability import Notify
from chimera.store import open_store
from chimera.store.collections import NOTIFICATIONS
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.workers.clock import WallClock
from chimera.workers.config import activate
from chimera.workers.scheduler_role import run_scheduler
from tests.support.polling import wait_until
from tests.support.redis_servers import free_port
from tests.support.workers import spawn

SECRET = "whsec_" + base64.b64encode(b"chimera-test-secret-0123456789ab").decode()
TOKEN = "123:TEST"
EVENTS = 25
KILL_EVERY = 7  # every 7th accepted message: the notifier is killed before the reply leaves
RETRY_AFTER_S = 1


class Receiver:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.log: list[dict] = []  # every request: kind, id, attempt, at, status, sig_ok
        self.accepted = 0
        self.kills = 0
        self.kill_pid: int | None = None
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.started = threading.Event()

    def _serve(self) -> None:
        asyncio.set_event_loop(self.loop)
        app = web.Application()
        app.router.add_post("/hook", self.hook)
        app.router.add_post(f"/bot{TOKEN}/sendMessage", self.telegram)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        self.loop.run_until_complete(web.TCPSite(runner, "127.0.0.1", self.port).start())
        self.started.set()
        self.loop.run_forever()

    def start(self) -> Receiver:
        self.thread.start()
        self.started.wait(10)
        return self

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _decide(self, rec: dict) -> str:
        with self.lock:
            p = self.rng.random()
            verdict = "500" if p < 0.15 else "429" if p < 0.30 else "ok"
            if verdict == "ok":
                self.accepted += 1
                if self.accepted % KILL_EVERY == 0 and self.kill_pid:
                    verdict = "kill"
            rec["status"] = verdict
            self.log.append(rec)
            return verdict

    async def _answer(self, verdict: str, ok_body: dict, too_many: web.Response) -> web.Response:
        if verdict == "kill":
            with self.lock:
                pid, self.kills = self.kill_pid, self.kills + 1
            os.kill(pid, signal.SIGKILL)  # accepted, but the sender never learns it
            await asyncio.sleep(0.2)
            return web.json_response(ok_body)
        if verdict == "500":
            return web.Response(status=500, text="receiver is having a bad day")
        if verdict == "429":
            return too_many
        return web.json_response(ok_body)

    async def hook(self, request: web.Request) -> web.Response:
        body = await request.read()
        h = request.headers
        sig_ok = h.get("webhook-signature") == sign(SECRET, h["webhook-id"], int(h["webhook-timestamp"]), body)
        rec = {"kind": "webhook", "id": h["webhook-id"], "attempt": int(h["webhook-attempt"]), "sig_ok": sig_ok,
               "at": time.monotonic(), "event": json.loads(body)["data"]["event_id"]}
        if not sig_ok:
            rec["status"] = "bad-signature"
            with self.lock:
                self.log.append(rec)
            return web.Response(status=400, text="bad signature")
        return await self._answer(self._decide(rec), {"received": True},
                                  web.Response(status=429, headers={"Retry-After": str(RETRY_AFTER_S)}))

    async def telegram(self, request: web.Request) -> web.Response:
        doc = await request.json()
        event = doc["text"].split()[0]
        rec = {"kind": "telegram", "id": f"{event}:tg", "attempt": None, "sig_ok": True, "at": time.monotonic(),
               "event": event, "chat_id": doc["chat_id"]}
        too_many = web.json_response({"ok": False, "error_code": 429, "description": "Too Many Requests",
                                      "parameters": {"retry_after": RETRY_AFTER_S}}, status=429)
        return await self._answer(self._decide(rec), {"ok": True, "result": {"message_id": 1}}, too_many)


def test_notifier_survives_failures_and_sigkill_mid_send(r, settings):
    receiver = Receiver(seed=17).start()
    store = open_store(settings.store_url)
    activate(store, "notify-test", 1, {"notifier": {
        "channels": {
            "hook": {"type": "webhook", "url": f"http://127.0.0.1:{receiver.port}/hook", "secret_env": "T_HOOK_SECRET"},
            "tg": {"type": "telegram", "chat_id": "42", "token_env": "T_TG_TOKEN",
                   "base_url": f"http://127.0.0.1:{receiver.port}"}},
        "retry": {"max_attempts": 25, "base_ms": 50, "max_ms": 400, "timeout_s": 3}}})
    env = {"T_HOOK_SECRET": SECRET, "T_TG_TOKEN": TOKEN, "CHIMERA_MAX_ATTEMPTS": "100", "CHIMERA_LOCK_TTL_MS": "1500"}
    stop = threading.Event()
    sched = threading.Thread(target=run_scheduler, args=(r, WallClock(), "sched-notify", stop), daemon=True)
    sched.start()
    procs: list = []

    def supervise() -> None:  # restart the notifier whenever it dies, under the same consumer name
        while not stop.is_set():
            if not procs or procs[-1].poll() is not None:
                procs.append(spawn("chimera.handlers.notifier.role:SPEC", "notifier-chaos", settings, **env))
                receiver.kill_pid = procs[-1].pid
            time.sleep(0.05)

    sup = threading.Thread(target=supervise, daemon=True)
    sup.start()
    prod = Producer(r, WallClock())
    pairs = [(f"evt-{i}", ch) for i in range(EVENTS) for ch in ("hook", "tg")]
    try:
        for event, ch in pairs:
            prod.publish(keys.NOTIFY_OUTBOX, Notify(event_id=event, channel=ch, text=f"{event} something happened",
                                                    level="ERROR"), idempotency_key=f"{event}:{ch}")
        for event, ch in pairs[::5]:  # the same (event, channel) published again: must not send again
            prod.publish(keys.NOTIFY_OUTBOX, Notify(event_id=event, channel=ch, text=f"{event} something happened",
                                                    level="ERROR"), idempotency_key=f"{event}:{ch}:again")

        def states():
            return [(store.get(NOTIFICATIONS, f"{e}:{c}") or {}).get("state") for e, c in pairs]

        wait_until(lambda: all(s == "SENT" for s in states()), 180, interval=0.2,
                   message="every notification SENT")
    finally:
        stop.set()
        sup.join(5)
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                p.wait(10)
        sched.join(5)
        receiver.stop()

    log = receiver.log
    assert all(rec["sig_ok"] for rec in log), "every webhook carried a valid Standard Webhooks signature"
    assert receiver.kills >= 3, f"the chaos must have killed the notifier mid-send (kills: {receiver.kills})"
    failed = sum(1 for rec in log if rec["status"] in ("500", "429"))
    assert 0.15 < failed / len(log) < 0.45, f"receiver failure share {failed}/{len(log)}"

    by_id: dict[str, list[dict]] = defaultdict(list)
    for rec in log:
        by_id[rec["id"]].append(rec)
    duplicates = lost_total = 0
    for event, ch in pairs:
        key = f"{event}:{ch}"
        doc = store.get(NOTIFICATIONS, key)
        attempts = doc["log"]
        ok = [a for a in attempts if a["outcome"] == "ok"]
        lost = [a for a in attempts if a["outcome"] == "lost"]
        lost_total += len(lost)
        assert len(ok) == 1 and doc["attempts"] == len(attempts), (key, attempts)
        recs = by_id[key]
        accepted = [x for x in recs if x["status"] in ("ok", "kill")]
        assert accepted, f"{key}: the receiver never accepted it (lost)"
        duplicates += len(accepted) - 1
        # Every acceptance the notifier did not learn of is an attempt it logged as lost.
        assert len(accepted) - 1 <= len(lost), (key, accepted, attempts)
        assert sum(1 for x in accepted if x["status"] == "kill") == len(accepted) - 1, (key, accepted)
        if ch == "hook":
            assert {x["attempt"] for x in accepted} <= {a["attempt"] for a in ok + lost}, (key, accepted, attempts)
        # 429: the next attempt came no sooner than retry_after.
        for a, b in zip(recs, recs[1:], strict=False):
            if a["status"] == "429":
                assert b["at"] - a["at"] >= RETRY_AFTER_S - 0.05, (key, a, b)
    # Every send the notifier logged reached the receiver, and the only sends it could not account
    # for are the ones killed mid-send: one lost attempt and one duplicate per SIGKILL.
    assert len(log) == sum(store.get(NOTIFICATIONS, f"{e}:{c}")["attempts"] for e, c in pairs)
    assert lost_total == receiver.kills and duplicates == receiver.kills
    print(f"\nnotifier chaos: {len(pairs)} notifications, {len(log)} sends, {failed} failed by the receiver, "
          f"{receiver.kills} SIGKILLs mid-send, {lost_total} attempts logged lost, {duplicates} duplicates "
          f"at the receiver (each one a lost reply)")

