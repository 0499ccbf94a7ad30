"""A pre-warmed parent that forks worker processes: a restart costs a fork, not an interpreter start.

The chaos drill restarts a SIGKILLed worker every few hundred milliseconds. A fresh interpreter
that imports Chimera, the exchange SDKs and their dependencies costs about 0.4 CPU-seconds; on a
small machine that is more than the work under test, and the drill would measure start-up time.
This zygote imports every role once, holds no threads, sockets or open files (so forking it is
safe) and forks one child per request. Each child is an ordinary process (own pid, own session,
own Redis and store connections, its own log file) that a SIGKILL kills like any other.

Protocol: JSON lines on stdin, one answer line each on stdout.
``{"op": "spawn", "name": n, "role": r, "log": path}`` -> ``{"pid": p}``;
``{"op": "reap"}`` -> ``{"exited": {pid: code}}`` (children that ended since the last reap).
End of stdin: the zygote exits (its children are the caller's to stop).
"""

from __future__ import annotations

import importlib
import json
import os
import sys

WARM = ("chimera.ops.cli", "chimera.ops.bootstrap", "chimera.workers.runtime", "chimera.workers.scheduler_role",
        "chimera.venues.binance.adapter", "chimera.venues.binance.market_data", "chimera.venues.binance.user_data",
        "chimera.feeds.user_data", "chimera.feeds.market",
        "binance_sdk_derivatives_trading_usds_futures.derivatives_trading_usds_futures",
        "binance_sdk_spot.spot")


def warm(roles: list[str]) -> None:
    from chimera.workers.registry import load_spec

    for module in WARM:
        try:
            importlib.import_module(module)
        except ImportError:
            pass  # an optional piece: the child imports what it needs itself
    for role in roles:
        load_spec(role)


def _child(name: str, role: str, log: str) -> None:
    try:
        os.setsid()
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        sys.stdin = open(0)  # noqa: SIM115 - the child's stdin for its whole life
        sys.stdout = open(1, "w", buffering=1)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1)  # noqa: SIM115
        from chimera.ops.cli import run_role

        run_role(role, name)
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # noqa: BLE001 - report and leave with a failure code
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(code)


def serve(inp=sys.stdin, out=sys.stdout) -> None:
    exited: dict[int, int] = {}
    for line in inp:
        req = json.loads(line)
        while True:  # reap whatever ended, so no zombie outlives its report
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            exited[pid] = os.waitstatus_to_exitcode(status)
        if req["op"] == "spawn":
            out.flush()
            pid = os.fork()
            if pid == 0:
                _child(req["name"], req["role"], req["log"])
            answer: dict = {"pid": pid}
        elif req["op"] == "reap":
            answer, exited = {"exited": exited}, {}
        else:
            answer = {"error": f"unknown op {req['op']!r}"}
        out.write(json.dumps(answer) + "\n")
        out.flush()


def main() -> None:
    warm(sys.argv[1:])
    sys.stdout.write(json.dumps({"ready": os.getpid()}) + "\n")
    sys.stdout.flush()
    serve()
    # Every answer is flushed and the children are the caller's: skip the interpreter's teardown of the
    # warmed modules (0.6 s idle, over the caller's 10 s on a loaded machine: CI run 34).
    os._exit(0)


if __name__ == "__main__":
    main()
