"""``chimera up --data SPEC... [--from --to] [--speed N|max]``: the demo on the user's own history, in event time.

Checked before anything starts (a refusal names the option and says how to fix it, exit 2, nothing
started or written): the data specs, gaps and the period by the backtest's own loader
(``chimera/backtest/data.py``: ``sample``, Binance Vision zips, freqtrade json/feather, the venue's
``kind:futures:SYMBOL:path``), ``--speed``, and that ``--data-dir`` does not hold the state of a replay
of other data (the venue would resume someone else's history).

Then the stack runs in **event time** (ARCHITECTURE §4):

* the venue replays exactly the selected bars and paces itself on the pipeline (``--pace-redis``:
  one market minute at a time, or up to the next armed timer, each once the streams are drained);
* it publishes its replay time on ``replay:{clock}``, and every worker runs with
  ``CHIMERA_CLOCK=follow`` (``workers/clock.py``), so maker windows, TWAP slices and management
  ticks last market time, and the scheduler fires timers by the venue's clock;
* S1 subscribes to the data's symbols (``CHIMERA_SYMBOLS``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import typer

from chimera.errors import FatalError

MARKER = "replay.json"  # in --data-dir: which data and period its stored state replays


@dataclass
class ReplayPlan:
    speed: float  # for the venue: x real time, -1 = "max" (as fast as the pipeline drains)
    venue_args: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    symbols: list[str] = field(default_factory=list)


def parse_speed(text: str) -> float:
    if str(text).strip().lower() == "max":
        return -1.0
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise FatalError(f"--speed {text!r}: use a number above 0 (times real time, e.g. 60 or 720) or 'max' "
                         "(as fast as the pipeline keeps up)")
    return value


def _spec_text(spec) -> str:
    text = f"{spec.kind}:{spec.market}:{spec.symbol}:{Path(spec.path).resolve()}"
    return f"{text}:{spec.interval}" if spec.kind.endswith("klines") else text


def plan(data: list[str], from_text: str | None, to_text: str | None, speed_text: str, data_dir: str) -> ReplayPlan:
    """What ``up`` must start for these options; FatalError (naming the option) when they are wrong."""
    speed = parse_speed(speed_text)
    if not data:
        if from_text or to_text:
            raise FatalError("--from/--to select a period of --data; give the data too, e.g. --data sample "
                             "--from 2025-07-06 --to 2025-07-07")
        return ReplayPlan(speed=speed)
    from chimera.backtest.data import DataError, load

    try:
        ds = load(list(data), from_text, to_text)
    except DataError as exc:
        raise FatalError(str(exc)) from None
    first = ds.feed.peek()
    start, end = first.time, ds.feed.events[-1].time
    marker = {"data": [_spec_text(s) for s in ds.specs], "data_hash": ds.data_hash, "from": from_text or "",
              "to": to_text or ""}
    root = Path(data_dir).resolve()
    stored = root / MARKER
    if stored.exists():
        if json.loads(stored.read_text()) != marker:
            raise FatalError(f"--data-dir {data_dir} holds a replay of other data or another period "
                             f"({stored}); use another --data-dir (or delete this one to start over)")
    elif (root / "venue-state.json").exists():
        raise FatalError(f"--data-dir {data_dir} holds the state of another run (venue-state.json); use another "
                         "--data-dir for a replay of your data (or delete this one to start over)")
    root.mkdir(parents=True, exist_ok=True)
    stored.write_text(json.dumps(marker, indent=1))
    args = [arg for text in marker["data"] for arg in ("--data", text)]
    # Paced on the pipeline; the first step waits for S1 (the workers start after the venue).
    args += ["--start-ms", str(start), "--end-ms", str(end), "--pace-redis", "env", "--pace-start-wait-s", "120"]
    env = {"CHIMERA_CLOCK": "follow", "CHIMERA_SYMBOLS": ",".join(ds.symbols)}
    return ReplayPlan(speed=speed, venue_args=args, env=env, symbols=list(ds.symbols))


def replay_backtest_command(
    bundle: Annotated[str, typer.Option("--bundle", help="strategy bundle JSON file")],
    data: Annotated[list[str], typer.Option("--data", help="as `chimera backtest --data`; repeat per file")],
    from_: Annotated[str | None, typer.Option("--from", help="start, UTC: 2025-07-01[T12:00] or epoch ms")] = None,
    to: Annotated[str | None, typer.Option("--to", help="end (exclusive), same forms")] = None,
    report: Annotated[str | None, typer.Option("--report", help="also write the HTML report to this path")] = None,
) -> None:
    """The backtest through Redis: real S2/S3/S4/S6 workers and the venue server in event time (needs an
    empty Redis: CHIMERA_REDIS_URL); writes the same run, trades and report as `chimera backtest`."""
    from chimera.backtest.bundle import BundleError
    from chimera.backtest.cli import _fail, _progress, print_summary
    from chimera.backtest.data import DataError
    from chimera.backtest.redis_replay import replay_backtest
    from chimera.backtest.service import save
    from chimera.ops.bootstrap import setup_logging, stores_from
    from chimera.ops.settings import load_settings

    try:
        settings = load_settings()
        setup_logging(settings.log_level)  # the workers run in this process
        store, objects = stores_from(settings)
        result = replay_backtest(bundle, data, from_, to, settings=settings, progress=_progress())
    except (BundleError, DataError, FatalError) as exc:
        _fail(str(exc))
    save(result, store, objects, report)
    print_summary(result.run)
    typer.echo(f"report: {settings.objects_url}/{result.run['report_key']}" + (f" and {report}" if report else ""))
