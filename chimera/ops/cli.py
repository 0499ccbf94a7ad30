"""``chimera`` and ``chimera-worker``: the operator's command line (typer)."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
from typing import Annotated

import typer

from chimera.backtest.cli import register as register_backtest
from chimera.errors import FatalError
from chimera.ops.audit import app as audit_app
from chimera.ops.bootstrap import clock_from, consumer_name, redis_from, setup_logging, stores_from
from chimera.ops.bundles_cli import app as bundles_app
from chimera.ops.experiments_cli import app as experiments_app
from chimera.ops.replay_up import replay_backtest_command
from chimera.ops.settings import load_settings
from chimera.ops.users import app as users_app

app = typer.Typer(help="Chimera: automated trading on Redis-Streams workers.", no_args_is_help=True)
streams_app = typer.Typer(help="Inspect and prepare streams and consumer groups.", no_args_is_help=True)
dlq_app = typer.Typer(help="The dead-letter stream.", no_args_is_help=True)
streams_app.add_typer(dlq_app, name="dlq")
app.add_typer(streams_app, name="streams")
app.add_typer(users_app, name="users")
app.add_typer(audit_app, name="audit")
app.add_typer(bundles_app, name="bundles")
app.add_typer(experiments_app, name="experiments")
register_backtest(app)  # chimera backtest, chimera report (chimera/backtest/cli.py)
app.command("replay-backtest")(replay_backtest_command)  # the same through Redis (backtest/redis_replay.py)

try:  # the local venue ships its own sub-app
    from chimera.venues.local.cli import app as venue_app

    app.add_typer(venue_app, name="venue", help="The local Binance paper venue.")
except ImportError:  # pragma: no cover - only while the venue is not installed
    pass


def _fail(msg: str) -> None:
    typer.secho(f"error: {msg}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def _settings():
    try:
        return load_settings()
    except FatalError as exc:
        _fail(str(exc))


# --- worker ------------------------------------------------------------------------------------


def run_role(role: str, consumer: str | None = None, index: int = 0) -> None:
    from chimera.workers.handler import HandlerSpec
    from chimera.workers.registry import find_role, load_spec
    from chimera.workers.runtime import Worker

    settings = _settings()
    setup_logging(settings.log_level)
    try:
        spec_role = find_role(role)
        spec = None if spec_role.code == "scheduler" else load_spec(role)
        r = redis_from(settings)
        clock = clock_from(settings)
        name = consumer or consumer_name(spec_role.code, settings, index)
        if not isinstance(spec, HandlerSpec):  # the scheduler (None), or a role with its own loop
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            # The gateway (s12) serves its own /metrics and /health on the API port.
            server = None if spec_role.code == "s12" else _serve(settings, spec_role.code, name, r, None,
                                                                 lambda: not stop.is_set())
            try:
                if spec is None:
                    from chimera.workers.scheduler_role import run_scheduler

                    run_scheduler(r, clock, name, stop)
                else:
                    spec(settings, stop)
            finally:
                if server is not None:
                    server.stop()
            return
        store, objects = stores_from(settings)
        worker = Worker(spec, r, settings=settings, store=store, objects=objects, clock=clock, consumer=name)
        worker.install_signal_handlers()
        server = _serve(settings, spec_role.code, name, r, store, lambda: not worker.stop_event.is_set())
        # What start-up loaded lives as long as this process: keep the collector from rescanning it
        # on every full collection (a worker process only; in a test process it would pin garbage).
        gc.freeze()
        try:
            worker.run()
        finally:
            if server is not None:
                server.stop()
    except FatalError as exc:
        _fail(str(exc))


def _serve(settings, role: str, consumer: str, r, store, alive):
    from chimera.ops.serve import serve_worker

    try:
        return serve_worker(settings, role=role, consumer=consumer, r=r, store=store, alive=alive)
    except OSError as exc:
        raise FatalError(f"cannot serve /metrics on {settings.metrics_host}:{settings.metrics_port}: {exc}; "
                         "set CHIMERA_METRICS_PORT to a free port, or 0 to pick one") from None


worker_app = typer.Typer(add_completion=False)


@app.command("worker")
@worker_app.command()
def worker(
    role: Annotated[str, typer.Option("--role", help="s1..s12, scheduler, or an alias such as router")],
    replicas: Annotated[int, typer.Option(help="processes to start; each is one consumer")] = 1,
    consumer: Annotated[str | None, typer.Option(help="consumer name (default: <role>-<host>-<i>)")] = None,
) -> None:
    """Run one role as a consumer-group worker (``--replicas N`` starts N processes)."""
    if replicas < 1:
        _fail("--replicas must be at least 1")
    if replicas == 1:
        run_role(role, consumer)
        return
    base = _settings().metrics_port or 0  # replica i serves on base + i (each on a free port when 0)
    procs = [
        subprocess.Popen([sys.executable, "-m", "chimera.ops.cli", "worker", "--role", role, "--consumer",
                          f"{consumer or role}-{os.getpid()}-{i}"],
                         env={**os.environ, "CHIMERA_METRICS_PORT": str(base + i if base else 0)})
        for i in range(replicas)
    ]

    def forward(signum, _frame):
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = [p.wait() for p in procs]
    raise typer.Exit(max(codes))


# --- replay --------------------------------------------------------------------------------------


def _group_idempotency(group: str):
    """The done-marker function of the role behind ``cg:<role>`` (None: not a built role's group)."""
    from chimera.streams import keys
    from chimera.workers.handler import HandlerSpec
    from chimera.workers.registry import ROLES, load_spec

    for role in ROLES:
        if role.spec_path and keys.group(role.code) == group:
            spec = load_spec(role.code)
            return spec.idempotency if isinstance(spec, HandlerSpec) else None
    return None


@app.command()
def replay(
    stream: Annotated[str, typer.Option("--stream", help="stream key, e.g. ord:{commands}")],
    from_id: Annotated[str, typer.Option("--from-id", help="replay entries strictly after this id")],
    to_id: Annotated[str | None, typer.Option("--to-id", help="last id to include (with --print)")] = None,
    into_group: Annotated[str | None, typer.Option("--into-group", help="rewind this consumer group")] = None,
    print_: Annotated[bool, typer.Option("--print", help="decode and print entries as JSON lines")] = False,
    rehandle: Annotated[bool, typer.Option(help="forget the group's done-markers so entries are handled again")] = True,
) -> None:
    """Replay a stream from an id: print it, or rewind a group so its workers get the entries again."""
    from chimera.streams.replay import print_range, rewind_group

    if bool(into_group) == bool(print_):
        _fail("choose exactly one of --into-group G or --print")
    settings = _settings()
    r = redis_from(settings)
    try:
        if print_:
            for line in print_range(r, stream, from_id, to_id):
                typer.echo(line)
        else:
            if to_id:
                _fail("--to-id works with --print; a rewound group receives every entry after --from-id")
            n = rewind_group(r, stream, into_group, from_id, rehandle=rehandle, idem=_group_idempotency(into_group))
            typer.echo(f"group {into_group} on {stream} rewound to {from_id}: {n} entries will be redelivered")
    except ValueError as exc:
        _fail(str(exc))


# --- streams -------------------------------------------------------------------------------------


@streams_app.command("init")
def streams_init() -> None:
    """Create every role's consumer groups (idempotent)."""
    from chimera.ops.streams_admin import init_groups

    settings = _settings()
    for stream, group in init_groups(redis_from(settings), settings):
        typer.echo(f"{stream}\t{group}")


@streams_app.command("info")
def streams_info() -> None:
    """Length, groups, pending and lag of every Chimera stream."""
    from chimera.ops.streams_admin import stream_info

    settings = _settings()
    for row in stream_info(redis_from(settings)):
        typer.echo("\t".join(str(x) for x in row))


@streams_app.command("pending")
def streams_pending(stream: str, group: str) -> None:
    """Pending entries of a group: id, consumer, idle ms, deliveries."""
    r = redis_from(_settings())
    for p in r.xpending_range(stream, group, min="-", max="+", count=1000):
        typer.echo(f"{p['message_id'].decode()}\t{p['consumer'].decode()}\t{p['time_since_delivered']}\t{p['times_delivered']}")


@dlq_app.command("list")
def dlq_list(count: int = 100) -> None:
    """Dead letters: id, source stream, group, attempts, reason."""
    from chimera.ops.streams_admin import dlq_entries

    for entry_id, letter in dlq_entries(redis_from(_settings()), count):
        typer.echo(f"{entry_id}\t{letter.stream}\t{letter.group}\t{letter.attempts}\t{letter.reason.splitlines()[0]}")


@dlq_app.command("requeue")
def dlq_requeue(entry_id: str) -> None:
    """Put a dead letter's original entry back on its stream (after fixing the cause)."""
    from chimera.ops.streams_admin import dlq_requeue as requeue

    try:
        new_id = requeue(redis_from(_settings()), entry_id)
    except KeyError:
        _fail(f"no dead letter {entry_id}; see `chimera streams dlq list`")
    typer.echo(f"requeued as {new_id}")


# --- up -------------------------------------------------------------------------------------------


@app.command()
def up(
    speed: Annotated[str, typer.Option(help="replay speed of the local venue: x real time, or 'max' (with --data: "
                                            "as fast as the pipeline keeps up)")] = "60",
    api_port: Annotated[int, typer.Option(help="gateway port")] = 8000,
    venue_port: Annotated[int, typer.Option(help="local venue port")] = 8765,
    data_dir: Annotated[str, typer.Option(help="where Redis, the store and the venue keep state")] = "var",
    redis_port: Annotated[int, typer.Option(help="port of the redis-server it starts")] = 6390,
    data: Annotated[list[str] | None, typer.Option("--data", help="replay your own history instead of the sample, "
                                                   "in event time (as `chimera backtest --data`; repeat per file)")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="with --data: start, UTC 2025-07-01[T12:00] or epoch ms")] = None,
    to: Annotated[str | None, typer.Option("--to", help="with --data: end (exclusive), same forms")] = None,
) -> None:
    """Run the local stack: Redis (unless CHIMERA_REDIS_URL is set), the venue and every built role."""
    from chimera.ops.replay_up import plan
    from chimera.ops.up import run_stack

    try:
        p = plan(data or [], from_, to, speed, data_dir)  # checked before anything starts
        code = run_stack(speed=p.speed, api_port=api_port, venue_port=venue_port, data_dir=data_dir,
                         redis_port=redis_port, venue_args=p.venue_args, extra_env=p.env)
    except FatalError as exc:
        _fail(str(exc))
    # Everything is stopped and every file the stack wrote is closed. What is left is the interpreter
    # tearing down the SDKs and the store it imported: 0.5 s idle, 2 s on a loaded machine (measured),
    # time Ctrl-C would wait for nothing.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


# --- books ----------------------------------------------------------------------------------------


@app.command()
def books(
    account: Annotated[str, typer.Option(help="the account (accounts file; paper: main, sub1)")] = "main",
    since: Annotated[int | None, typer.Option(help="epoch ms (venue time); default: a week before the first fill")] = None,
) -> None:
    """The books' identity: venue wallet change = Σ realized − fees + funding over the store's positions; fills = trades."""
    from chimera.ops import books as live

    settings = _settings()
    try:
        store, _objects = stores_from(settings)
        checks = live.live_books(settings, store, account, since)
    except FatalError as exc:
        _fail(str(exc))
    except Exception as exc:  # noqa: BLE001 - the store failing mid-read: say so, no traceback
        _fail(f"cannot read the store {settings.store_url}: {exc}")
    for line in live.lines(account, checks):
        typer.echo(line)
    raise typer.Exit(0 if live.ok(checks) else 1)


# --- drill ----------------------------------------------------------------------------------------


@app.command()
def drill(
    intents: Annotated[int, typer.Option(help="intents pushed through S3 -> S4 -> S6")] = 300,
    accounts: Annotated[int, typer.Option(help="1: main; 2: main and sub1 at once (0 cross-account orders)")] = 1,
    kill_every_ms: Annotated[int, typer.Option(help="SIGKILL a random worker this often (0: never)")] = 300,
    rate: Annotated[float, typer.Option(help="intents pushed per second")] = 20.0,
    redis_url: Annotated[str | None, typer.Option(help="use this (dedicated) Redis instead of starting one")] = None,
    flush: Annotated[bool, typer.Option(help="empty --redis-url first")] = False,
    data_dir: Annotated[str | None, typer.Option(help="store, logs (default: a temporary directory)")] = None,
    error_5xx: Annotated[float, typer.Option(help="share of venue requests answered 503")] = 0.10,
    lost_reply: Annotated[float, typer.Option(help="share of executed venue writes whose reply is lost")] = 0.10,
    ws_drop_every_s: Annotated[float, typer.Option(help="drop every venue WebSocket this often")] = 4.0,
    speed: Annotated[float, typer.Option(help="venue replay speed (x real time)")] = 30.0,
    seed: Annotated[int, typer.Option(help="seed of the kills and the venue's faults")] = 7,
    as_json: Annotated[bool, typer.Option("--json", help="print the figures as JSON")] = False,
) -> None:
    """Chaos drill: workers SIGKILLed at random, a faulty venue; then assert nothing lost, nothing doubled."""
    import json

    from chimera.ops.tools.drill import DrillConfig, run_drill

    if intents < 1 or kill_every_ms < 0 or rate <= 0:
        _fail("--intents and --rate must be positive, --kill-every-ms >= 0")
    if not (0 <= error_5xx < 1 and 0 <= lost_reply < 1):
        _fail("--error-5xx and --lost-reply are shares in [0, 1), e.g. 0.1")
    cfg = DrillConfig(intents=intents, accounts=accounts, kill_every_ms=kill_every_ms, rate_per_s=rate, redis_url=redis_url, flush=flush,
                      data_dir=data_dir, error_5xx=error_5xx, lost_reply=lost_reply, ws_drop_every_s=ws_drop_every_s,
                      speed=speed, seed=seed, progress=None if as_json else (lambda m: typer.echo(m, err=True)))
    try:
        report = run_drill(cfg)
    except FatalError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(report.figures(), indent=2, default=str) if as_json else report.text())
    raise typer.Exit(0 if report.ok else 1)


def main() -> None:
    app()


def worker_main() -> None:
    worker_app()


if __name__ == "__main__":
    app()
