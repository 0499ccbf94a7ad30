"""One contract for S7/S9's watermark port (``labels:{last_backfill_ts}``, ``bt:{last_run_ts}``): memory, a
single Redis and the 6-node cluster answer the same; the mark only moves forward."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from chimera.ports.research_marks import MemoryMarks, RedisMarks
from chimera.streams import keys
from chimera.streams.redis import connect
from tests.conftest import _flush as flush


@pytest.fixture(params=["memory", "single", "cluster"])
def marks(request):
    if request.param == "memory":
        yield MemoryMarks()
        return
    server = request.getfixturevalue("redis_server" if request.param == "single" else "redis_cluster")
    r = connect(server.url)
    flush(r)
    yield RedisMarks(r)
    r.close()


def test_forward_only(marks):
    assert marks.get("h12") is None
    assert marks.set_max("h12", 100) is True
    assert marks.set_max("h12", 50) is False and marks.get("h12") == 100
    assert marks.set_max("h12", 101) is True and marks.get("h12") == 101
    assert marks.get("h24") is None


def test_concurrent_writers_keep_the_maximum(marks):
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda v: marks.set_max("h36", v), range(500)))
    assert marks.get("h36") == 499


def test_redis_key_is_the_spec_name(marks):
    if isinstance(marks, RedisMarks):
        marks.set_max("h12", 7)
        assert marks.r.hget(keys.LABELS_LAST_BACKFILL, "h12") in (b"7", "7")
