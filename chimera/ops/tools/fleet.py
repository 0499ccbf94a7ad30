"""Worker processes forked from a pre-warmed zygote (``forkserver``), killed and restarted on demand.

Used by the chaos drill (random SIGKILLs) and the pipeline benchmark. A restart keeps the consumer
name, so the new process first re-reads the pending entries of the one it replaces.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from chimera.errors import FatalError


@dataclass
class Proc:
    name: str
    role: str
    pid: int
    started: float
    alive: bool = True


class Fleet:
    """The worker processes: forked from a pre-warmed zygote (``forkserver``), SIGKILLed at random,
    restarted under the same consumer name (so a restarted worker first re-reads its own pending)."""

    def __init__(self, env: dict, logs: Path, role_codes: list[str]) -> None:
        self.logs = logs
        self.procs: dict[str, Proc] = {}
        self.kills: Counter = Counter()
        self.crashes: Counter = Counter()
        self._exits: dict[int, int] = {}
        self.zygote = subprocess.Popen([sys.executable, "-m", "chimera.ops.tools.forkserver", *sorted(set(role_codes))],
                                       env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                       stderr=open(logs / "forkserver.log", "ab"))  # noqa: SIM115
        ready = self.zygote.stdout.readline()
        if not ready:
            raise FatalError(f"the worker fork server did not start; see {logs / 'forkserver.log'}")

    def _ask(self, req: dict) -> dict:
        self.zygote.stdin.write(json.dumps(req) + "\n")
        self.zygote.stdin.flush()
        return json.loads(self.zygote.stdout.readline())

    def _reap(self) -> None:
        for pid, code in self._ask({"op": "reap"})["exited"].items():
            self._exits[int(pid)] = code

    def spawn(self, name: str, role: str) -> None:
        pid = self._ask({"op": "spawn", "name": name, "role": role, "log": str(self.logs / f"{name}.log")})["pid"]
        self.procs[name] = Proc(name, role, pid, time.monotonic())

    def _gone(self, p: Proc, timeout_s: float) -> bool:
        end = time.monotonic() + timeout_s
        while p.pid not in self._exits:
            if time.monotonic() > end:
                return False
            time.sleep(0.002)
            self._reap()
        p.alive = False
        return True

    def kill_random(self, rng: random.Random, min_uptime_s: float) -> str | None:
        now = time.monotonic()
        eligible = [p for p in self.procs.values() if p.alive and p.pid not in self._exits
                    and now - p.started >= min_uptime_s]
        if not eligible:
            return None
        victim = rng.choice(sorted(eligible, key=lambda p: p.name))
        os.kill(victim.pid, signal.SIGKILL)
        self._gone(victim, 10)
        self.kills[victim.role] += 1
        self.spawn(victim.name, victim.role)
        return victim.name

    def revive(self) -> None:
        self._reap()
        for p in list(self.procs.values()):
            if p.pid in self._exits:  # died on its own (e.g. its start-up call hit a 5xx)
                self.crashes[p.role] += 1
                self.spawn(p.name, p.role)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.pid not in self._exits:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for p in self.procs.values():
            if not self._gone(p, max(0.1, deadline - time.monotonic())):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGKILL)
                self._gone(p, 5)
        self.zygote.stdin.close()
        try:
            self.zygote.wait(10)
        except subprocess.TimeoutExpired:  # its children are stopped: a stuck zygote must not hide a report
            self.zygote.kill()
            self.zygote.wait(5)
