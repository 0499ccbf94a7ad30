"""S6 -> S8 on the in-process runtime: a position whose ROE stays inside the bundle's band is announced
STAGNATED by S6's management pass, and S8 writes its autopsy (trigger STAGNATED, held quantity valued at the
last 1m close of the shipped BTC sample, which is what the klines port serves)."""

from __future__ import annotations

from chimera.handlers.autopsy.role import SPEC as S8
from chimera.handlers.positions.role import SPEC as S6
from chimera.handlers.router.role import SPEC as S4
from chimera.ops.settings import Settings
from chimera.ports.venues import Venues
from chimera.ports.wiring import memory_ports
from chimera.schemas.messages import PositionChanged
from chimera.store import open_objects
from chimera.store.collections import AUTOPSY_REPORTS
from chimera.streams import keys
from chimera.workers.inprocess import InProcessRuntime
from tests.integration.research_support import kline_source
from tests.unit.test_positions_inprocess import SYM, Chain


def test_a_stagnating_position_gets_its_autopsy(tmp_path):
    c = Chain({}, autopsy={"stagnation_band": 0.01, "stagnation_ms": 5000})
    s = Settings(symbols=(SYM,))
    c.ports = memory_ports(c.clock, s, venues=Venues(s, clients={"main": c.exchange.venue("main")},
                                                     klines=kline_source))
    objects = open_objects(f"file://{tmp_path}/objects")
    c.rt = InProcessRuntime([S4, S6, S8], store=c.store, objects=objects, settings=s, clock=c.clock, ports=c.ports)
    c.clock.set(c.clock.now_ms() + 3_600_000)  # an hour into the sample: closed bars exist before now
    c.market("50000")
    c.open_long("sa-1", sl="49000")
    assert c.store.get(AUTOPSY_REPORTS, "sa-1") is None
    for _ in range(6):  # 6 s with |ROE| < 1 %
        c.market("50010")
    [ev] = [e.payload for e in c.rt.entries(keys.POS_EVENTS)
            if isinstance(e.payload, PositionChanged) and e.payload.kind == "STAGNATED"]
    doc = c.store.get(AUTOPSY_REPORTS, "sa-1")
    assert ev.pos_id == "sa-1" and doc is not None and doc["trigger"] == "STAGNATED"
    assert objects.get(doc["html_key"]).startswith(b"<!DOCTYPE html") or b"<html" in objects.get(doc["html_key"])[:200]
    assert c.position("sa-1").state == "ACTIVE"  # an autopsy of a live trade does not touch it
