"""Ports for servers the tests and `chimera up` start come from below the ephemeral range (where no
client socket can take them before the server binds) and from the process's own slice."""

from __future__ import annotations

import socket

from chimera.ops import loopback


def _ephemeral_low() -> int:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        return int(f.read().split()[0])


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable(monkeypatch):
    monkeypatch.delenv("CHIMERA_PORT_SLICE", raising=False)
    ports = [loopback.free_port() for _ in range(200)]
    assert len(set(ports)) == 200
    assert all(10_000 <= p < _ephemeral_low() for p in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))


def test_a_cluster_node_port_leaves_its_bus_port_free_and_below_the_range(monkeypatch):
    monkeypatch.delenv("CHIMERA_PORT_SLICE", raising=False)
    for _ in range(20):
        p = loopback.free_port(10_000)
        assert p + 10_000 < _ephemeral_low()
        with socket.socket() as a, socket.socket() as b:
            a.bind(("127.0.0.1", p))
            b.bind(("127.0.0.1", p + 10_000))


def test_each_slice_hands_out_only_its_own_ports(monkeypatch):
    for k in range(3):
        monkeypatch.setenv("CHIMERA_PORT_SLICE", f"{k}/3")
        assert {(loopback.free_port() - 10_000) % 3 for _ in range(30)} == {k}


def test_a_port_someone_listens_on_is_skipped(monkeypatch):
    monkeypatch.setenv("CHIMERA_PORT_SLICE", "0/1")
    first = loopback.free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", first))
        s.listen()
        loopback._cursor[0] -= 1  # the next pick would be `first` again
        assert loopback.free_port() != first
