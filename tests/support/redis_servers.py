"""Start real redis-server processes for tests: one standalone, or a 6-node cluster."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from chimera.ops import loopback


def free_port(cluster_bus: bool = False) -> int:
    """A free loopback port below the ephemeral range; for cluster nodes port+10000 (the bus) too."""
    return loopback.free_port(10_000 if cluster_bus else 0)


def _wait_ping(port: int, deadline_s: float = 10.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"redis-server on {port} did not answer PING")


def require_redis_server() -> str:
    path = shutil.which("redis-server")
    if not path:
        raise RuntimeError("redis-server is not installed: run ./scripts/test.sh (it installs it) or apt-get install redis-server")
    return path


class RedisServer:
    def __init__(self, port: int | None = None, extra: list[str] | None = None, workdir: str | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(workdir or tempfile.mkdtemp(prefix="chimera-redis-"))
        self.dir.mkdir(parents=True, exist_ok=True)
        args = [require_redis_server(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--dir", str(self.dir), "--protected-mode", "no"]
        self.proc = subprocess.Popen(args + (extra or []), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_ping(self.port)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


class RedisCluster:
    """3 masters + 3 replicas on loopback, created with ``redis-cli --cluster create``."""

    def __init__(self) -> None:
        base = Path(tempfile.mkdtemp(prefix="chimera-cluster-"))
        self.nodes = []
        for i in range(6):
            port = free_port(cluster_bus=True)
            self.nodes.append(RedisServer(port, ["--cluster-enabled", "yes", "--cluster-config-file",
                                                 f"nodes-{port}.conf", "--cluster-node-timeout", "2000"],
                                          workdir=str(base / str(i))))
        cli = shutil.which("redis-cli")
        subprocess.run([cli, "--cluster", "create", *[f"127.0.0.1:{n.port}" for n in self.nodes],
                        "--cluster-replicas", "1", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        self.wait_ok()

    def wait_ok(self, deadline_s: float = 30.0) -> None:
        import redis

        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            ok = 0
            for n in self.nodes:
                if n.proc.poll() is not None:
                    continue
                try:
                    info = redis.Redis(port=n.port).cluster("info")
                    state = info.get("cluster_state") if isinstance(info, dict) else None
                    if state is None:
                        state = "ok" if b"cluster_state:ok" in info else "fail"
                    if state in ("ok", b"ok"):
                        ok += 1
                except Exception:
                    pass
            if ok == sum(1 for n in self.nodes if n.proc.poll() is None):
                return
            time.sleep(0.1)
        raise RuntimeError("redis cluster did not reach cluster_state:ok")

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}/0"

    def masters(self) -> list[RedisServer]:
        import redis

        out = []
        for n in self.nodes:
            if n.proc.poll() is None and redis.Redis(port=n.port).info("replication")["role"] == "master":
                out.append(n)
        return out

    def kill_master(self, spare_port: int | None = None, deadline_s: float = 30.0) -> tuple[RedisServer, RedisServer]:
        """SIGKILL a master (not the one on ``spare_port``, e.g. the node clients bootstrap from) and wait
        until one of its replicas is promoted and every live node reports cluster_state:ok again.
        Returns (killed master, promoted replica)."""
        import redis

        victim = next(m for m in self.masters() if m.port != spare_port)
        info = redis.Redis(port=victim.port).info("replication")
        replica_ports = {int(v["port"]) for k, v in info.items() if k.startswith("slave") and isinstance(v, dict)}
        replicas = [n for n in self.nodes if n.port in replica_ports]
        if not replicas:
            raise RuntimeError(f"master {victim.port} has no replica to fail over to")
        victim.kill()
        end = time.monotonic() + deadline_s
        while time.monotonic() < end:
            promoted = [n for n in replicas if redis.Redis(port=n.port).info("replication")["role"] == "master"]
            if promoted:
                self.wait_ok(max(1.0, end - time.monotonic()))
                return victim, promoted[0]
            time.sleep(0.1)
        raise RuntimeError(f"no replica of {victim.port} was promoted within {deadline_s}s")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()
