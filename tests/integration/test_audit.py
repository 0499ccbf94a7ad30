"""The hash-chained audit_log: appended by every state-changing request, verified by `chimera audit verify`."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest
from litestar.testing import TestClient

from chimera.gateway import audit
from chimera.schemas.envelope import decode
from chimera.store import open_store
from chimera.store.collections import AUDIT_LOG
from chimera.streams import keys
from tests.conftest import subprocess_env
from tests.support.gateway import bearer, gateway_app


def cli_verify(settings) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "chimera.ops.cli", "audit", "verify"], capture_output=True, text=True,
                          env=subprocess_env(settings), timeout=60)


@pytest.mark.parametrize("redis_url", ["single"], indirect=True)
def test_requests_chain_and_cli_detects_a_tampered_entry(r, settings):
    app, store = gateway_app(settings, r)
    with TestClient(app) as c:
        h = bearer(c, "risk")
        c.post("/v1/kill-switch", json={"mode": "HALT_NEW", "reason": "audit test", "ttl_s": 60}, headers=h)
        c.post("/v1/reconcile", json={"scope": "ALL"}, headers=h)
        c.post("/v1/orders", json={"symbol": "BTCUSDT", "side": "BUY", "qty": "0.001"}, headers=bearer(c, "trader"))
    entries = store.query(AUDIT_LOG, order_by="seq")
    assert [(e["actor"], e["action"], e["detail"]["status"]) for e in entries] == [
        ("risk", "killswitch.set", 201), ("risk", "reconcile.run", 202), ("trader", "orders.write", 202)]
    assert entries[0]["prev"] == audit.GENESIS and entries[1]["prev"] == entries[0]["hash"]
    # The caller's identity is on the ops:events entry the gateway wrote.
    [ev] = [decode(f) for _, f in r.xrange(keys.OPS_EVENTS)]
    assert ev.payload.kind == "KILL_SWITCH_SET" and ev.payload.actor == "risk"
    ok = cli_verify(settings)
    assert ok.returncode == 0 and "3 entries, chain intact" in ok.stdout, ok.stdout + ok.stderr
    # Someone edits entry 2 in the store: verify names it and exits 1.
    doc = store.get(AUDIT_LOG, "000000000002")
    doc["actor"] = "mallory"
    store.upsert(AUDIT_LOG, "000000000002", {k: v for k, v in doc.items() if k != "_key"})
    bad = cli_verify(settings)
    assert bad.returncode == 1 and "entry 2" in bad.stderr and "tampered" in bad.stderr, bad.stderr
    # Deleting an entry is caught too.
    store.delete(AUDIT_LOG, "000000000002")
    assert audit.verify(store) == (False, 1, "entry 2: sequence gap or reorder (found seq 3)")


def test_concurrent_appends_never_fork_the_chain(settings):
    store = open_store(settings.store_url)

    def writer(i):
        s = open_store(settings.store_url)
        for j in range(10):
            audit.append(s, actor=f"w{i}", role="admin", action="test", at_ms=j, detail={"j": j})

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert audit.verify(store) == (True, 40, "")


def test_secret_fields_are_redacted_in_entries(settings):
    store = open_store(settings.store_url)
    e = audit.append(store, actor="a", role="admin", action="x", at_ms=1,
                     detail={"password": "p", "nested": {"api_secret": "s"}, "amount": "5"})
    assert e["detail"] == {"password": "***", "nested": {"api_secret": "***"}, "amount": "5"}
