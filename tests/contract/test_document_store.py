"""One contract for every DocumentStore backend."""

from __future__ import annotations

import threading
import uuid

import pytest

from chimera.store import open_store
from tests.contract.backends import arango_url_or_skip_reason


@pytest.fixture(params=["sqlite-file", "sqlite-memory", "arangodb"])
def store(request, tmp_path):
    if request.param == "sqlite-file":
        s = open_store(f"sqlite:///{tmp_path}/c.sqlite")
    elif request.param == "sqlite-memory":
        s = open_store("sqlite://:memory:")
    else:
        url, reason = arango_url_or_skip_reason()
        if url is None:
            pytest.skip(reason)
        if url == "docker":
            from testcontainers.arangodb import ArangoDbContainer

            container = ArangoDbContainer("arangodb:3.11").with_env("ARANGO_NO_AUTH", "1")
            container.start()
            request.addfinalizer(container.stop)
            url = f"arangodb://root:@{container.get_container_host_ip()}:{container.get_exposed_port(8529)}/chimera_test"
        s = open_store(url)
    yield s
    s.close()


def coll() -> str:
    return "t_" + uuid.uuid4().hex[:10]


def test_get_missing_is_none(store):
    assert store.get(coll(), "nope") is None


def test_insert_if_absent_keeps_the_first(store):
    c = coll()
    assert store.insert_if_absent(c, "k", {"v": 1})
    assert not store.insert_if_absent(c, "k", {"v": 2})
    assert store.get(c, "k") == {"_key": "k", "v": 1}


def test_upsert_replaces(store):
    c = coll()
    store.upsert(c, "k", {"v": 1, "old": True})
    store.upsert(c, "k", {"v": 2})
    assert store.get(c, "k") == {"_key": "k", "v": 2}


def test_update_if_is_compare_and_set(store):
    c = coll()
    store.upsert(c, "o1", {"state": "NEW", "version": 1, "qty": "1.5"})
    assert store.update_if(c, "o1", {"state": "FILLED", "version": 2}, {"state": "NEW", "version": 1})
    assert not store.update_if(c, "o1", {"state": "CANCELED"}, {"state": "NEW"})
    assert not store.update_if(c, "missing", {"state": "X"}, {"state": "NEW"})
    assert store.get(c, "o1") == {"_key": "o1", "state": "FILLED", "version": 2, "qty": "1.5"}


def test_update_if_under_contention_admits_exactly_one(store, request):
    if "sqlite-memory" in request.node.name:
        pytest.skip("shared-cache :memory: serialises differently; the file backend covers threads")
    c = coll()
    store.upsert(c, "p", {"state": "PENDING_ENTRY"})
    wins = []

    def race(i):
        if store.update_if(c, "p", {"state": "ACTIVE", "winner": i}, {"state": "PENDING_ENTRY"}):
            wins.append(i)

    threads = [threading.Thread(target=race, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert store.get(c, "p")["winner"] == wins[0]


def test_put_fenced_refuses_older_tokens(store):
    c = coll()
    assert store.put_fenced(c, "p", {"w": "a"}, 5)
    assert store.put_fenced(c, "p", {"w": "b"}, 7)
    assert not store.put_fenced(c, "p", {"w": "late"}, 6)
    assert store.put_fenced(c, "p", {"w": "c"}, 7)  # same holder writing again
    assert store.get(c, "p")["w"] == "c"


def test_query_filters_order_and_limit(store):
    c = coll()
    store.ensure_index(c, ["symbol", "t0"])
    for i in range(10):
        store.upsert(c, f"s{i}", {"symbol": "BTCUSDT" if i % 2 else "ETHUSDT", "t0": i, "state": "A" if i < 5 else "B"})
    btc = store.query(c, {"symbol": "BTCUSDT"}, order_by="t0")
    assert [d["t0"] for d in btc] == [1, 3, 5, 7, 9]
    assert [d["t0"] for d in store.query(c, {"t0": (">=", 7)}, order_by="t0", desc=True)] == [9, 8, 7]
    assert [d["_key"] for d in store.query(c, {"state": ("in", ["B"]), "symbol": "ETHUSDT"}, order_by="t0")] == ["s6", "s8"]
    assert len(store.query(c, {}, order_by="t0", limit=3)) == 3
    assert store.count(c, {"state": "A"}) == 5
    assert store.count(c, {"state": ("!=", "A")}) == 5
    assert store.query(c, {"missing": None}) and store.count(c, {"t0": ("<", 0)}) == 0


def test_delete(store):
    c = coll()
    store.upsert(c, "k", {"v": 1})
    assert store.delete(c, "k") and store.get(c, "k") is None and not store.delete(c, "k")


def test_bad_names_are_refused(store):
    with pytest.raises(ValueError, match="invalid"):
        store.query(coll(), {"a; DROP TABLE": 1})
    with pytest.raises(ValueError, match="operator"):
        store.query(coll(), {"a": ("LIKE", 1)})


def test_sqlite_index_is_used(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/i.sqlite")
    s.upsert("signals", "a", {"symbol": "BTCUSDT"})
    s.ensure_index("signals", ["symbol"])
    assert "ix_signals_symbol" in s.explain("signals", {"symbol": "BTCUSDT"})
