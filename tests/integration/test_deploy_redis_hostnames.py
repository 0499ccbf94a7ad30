"""The Redis Cluster shape compose.yaml uses: nodes announce a *hostname* (their compose service name;
here ``localhost``) with ``--cluster-preferred-endpoint-type hostname``, so clients are redirected to
names that survive a container restart, not to container IPs. Chimera's cluster client must follow
those redirects."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

import redis

from chimera.streams.redis import connect
from tests.support.polling import wait_until
from tests.support.redis_servers import RedisServer, free_port


def test_cluster_announcing_hostnames_serves_chimera_clients():
    base = Path(tempfile.mkdtemp(prefix="chimera-hostname-cluster-"))
    nodes = []
    try:
        for i in range(6):
            port = free_port(cluster_bus=True)
            nodes.append(RedisServer(port, ["--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{port}.conf",
                                            "--cluster-node-timeout", "2000", "--cluster-announce-hostname", "localhost",
                                            "--cluster-preferred-endpoint-type", "hostname"], workdir=str(base / str(i))))
        subprocess.run([shutil.which("redis-cli"), "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in nodes],
                        "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        plain = redis.Redis(port=nodes[0].port)
        wait_until(lambda: b"cluster_state:ok" in plain.execute_command("CLUSTER", "INFO"), 30, 0.1, "cluster ok")
        endpoints = {shard[2][0] for shard in plain.execute_command("CLUSTER", "SLOTS")}
        assert endpoints == {b"localhost"}, endpoints  # redirects name hosts, not IPs

        r = connect(f"redis+cluster://localhost:{nodes[0].port}/0")
        for i in range(200):  # keys spread over every master's slots
            r.set(f"hostname-test:{i}", i)
            r.xadd(f"hostname-test:stream:{i % 7}", {"i": i})
        assert [int(r.get(f"hostname-test:{i}")) for i in range(200)] == list(range(200))
        masters = {n.port for n in nodes if redis.Redis(port=n.port).info("replication")["role"] == "master"}
        assert len(masters) == 3
        assert all(redis.Redis(port=p).dbsize() > 0 for p in masters)  # every master got some of them
        r.close()
    finally:
        for n in nodes:
            n.stop()
