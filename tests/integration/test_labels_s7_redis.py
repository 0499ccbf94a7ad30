"""S7 and S8 as real workers on Redis (single server and the 6-node cluster): the same handlers as the
in-process tests, fed through the streams, write the same labels and the same autopsy bytes as the
in-process runtime did for the same documents (runtime parity; the figures themselves are checked
against the venue and the kline file in test_labels_s7.py / test_autopsy_s8.py)."""

from __future__ import annotations

import dataclasses
import json

from chimera.handlers.autopsy.role import SPEC as S8
from chimera.handlers.labels.role import SPEC as S7
from chimera.ports.venues import Venues
from chimera.schemas.documents.research import LABEL_COLLECTIONS
from chimera.schemas.messages import BackfillLabels
from chimera.store import open_objects, open_store
from chimera.store.collections import AUTOPSY_REPORTS, FILLS, FUNDING_RECORDS, POSITIONS, SIGNALS
from chimera.streams import keys
from chimera.streams.producer import Producer
from chimera.workers.clock import ManualClock, WallClock
from chimera.workers.config import activate
from chimera.workers.inprocess import InProcessRuntime
from tests.integration.research_support import exit_events, kline_source, sample_run
from tests.support.polling import wait_until
from tests.support.workers import ThreadWorker

COLLS = (SIGNALS, POSITIONS, FILLS, FUNDING_RECORDS)


def _copy(src, dst, traded_syms: set[str], lo: int, hi: int) -> int:
    n = 0
    for d in src.query(SIGNALS, {"t0": (">=", lo)}):
        if d["t0"] < hi and d["symbol"] in traded_syms:
            dst.upsert(SIGNALS, d["_key"], {k: v for k, v in d.items() if k != "_key"})
            n += 1
    for coll in COLLS[1:]:
        for d in src.query(coll, {}):
            dst.upsert(coll, d["_key"], {k: v for k, v in d.items() if k != "_key"})
    return n


def _worker(spec, r, settings, name, store, objects):
    w = ThreadWorker(spec, r, settings, name, store=store)
    w.worker.objects = objects
    w.worker.ports = dataclasses.replace(w.worker.ports, venues=Venues(klines=kline_source))
    return w


def test_s7_and_s8_workers_on_redis_match_the_in_process_runtime(r, settings, tmp_path):
    out, bundle = sample_run()
    exits = exit_events(out)
    first = min(out.store.get(POSITIONS, p.pos_id)["created_at"] for p in exits)
    lo, hi = first - 30 * 60_000, first + 4 * 3_600_000  # a few hours of signals around the first trades
    store = open_store(settings.store_url)
    activate(store, "sample_vol_breakout", 1, bundle)
    n = _copy(out.store, store, {"ETHUSDT", "BTCUSDT"}, lo, hi)
    objects = open_objects(f"file://{tmp_path}/objs")
    prod = Producer(r, WallClock())
    with _worker(S7, r, settings, "s7-t", store, objects), _worker(S8, r, settings, "s8-t", store, objects):
        prod.publish(keys.LABELS_COMMANDS, BackfillLabels(h=12, requested_by="test"), idempotency_key="bf12")
        wait_until(lambda: store.count(LABEL_COLLECTIONS[12]) == n, 120, message=f"{n} labels on Redis")
        for p in exits:
            prod.publish(keys.POS_EVENTS, p, idempotency_key=f"exit:{p.pos_id}")
        wait_until(lambda: store.count(AUTOPSY_REPORTS) == len(exits), 120, message="autopsies on Redis")
        assert r.hget(keys.LABELS_LAST_BACKFILL, "h12") is not None
        assert r.xlen(keys.LABELS_READY) >= 1
    # The in-process runtime over the same documents and clock-independent inputs.
    ref_store = open_store("sqlite://:memory:")
    activate(ref_store, "sample_vol_breakout", 1, bundle)
    _copy(out.store, ref_store, {"ETHUSDT", "BTCUSDT"}, lo, hi)
    ref_objects = open_objects(f"file://{tmp_path}/ref")
    from chimera.ports.wiring import memory_ports

    clock = ManualClock(WallClock().now_ms())
    rt = InProcessRuntime([S7, S8], store=ref_store, objects=ref_objects, clock=clock, follow_event_time=False,
                          ports=memory_ports(clock, None, venues=Venues(klines=kline_source)))
    rt.publish(keys.LABELS_COMMANDS, BackfillLabels(h=12), "bf12")
    for p in exits:
        rt.publish(keys.POS_EVENTS, p, f"exit:{p.pos_id}")
    rt.run()
    dump = lambda s: json.dumps(s.query(LABEL_COLLECTIONS[12], {}, order_by="signal_id"), sort_keys=True)  # noqa: E731
    assert dump(store) == dump(ref_store)
    for p in exits:
        assert objects.get(f"autopsy/{p.pos_id}.html") == ref_objects.get(f"autopsy/{p.pos_id}.html")
