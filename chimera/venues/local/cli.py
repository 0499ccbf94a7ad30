"""`chimera venue serve`: run the local Binance venue."""

from __future__ import annotations

from decimal import Decimal

import typer
from aiohttp import web

from .engine import Fees
from .faults import FaultConfig
from .replay import DataSpec
from .replay.feed import sample_specs
from .server.app import VenueConfig, VenueServer

app = typer.Typer(help="Local Binance venue (loopback REST + WebSocket over replayed real data).")


@app.callback()
def main() -> None:
    """Local Binance venue."""


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Bind address (keep it on loopback)."),
    port: int = typer.Option(8765),
    data: list[str] = typer.Option(None, help="kind:market:SYMBOL:path[:interval]; default: the repo sample."),
    symbols: str = typer.Option("", help="Comma list of symbols to keep from exchangeInfo (default all)."),
    speed: str = typer.Option("1", help="Replay speed: 1 real time, N times, 0 paused, 'max' as fast as consumers."),
    start_ms: int = typer.Option(None), end_ms: int = typer.Option(None),
    accounts: str = typer.Option(None, help="Accounts JSON file (api keys, starting balances)."),
    state: str = typer.Option(None, help="State file; orders/positions/balances survive restarts."),
    fill_mode: str = typer.Option("through", help="through | touch"),
    futures_maker: str = typer.Option("0.0002"), futures_taker: str = typer.Option("0.0005"),
    spot_maker: str = typer.Option("0.001"), spot_taker: str = typer.Option("0.001"),
    latency_ms: int = typer.Option(0), error_5xx: float = typer.Option(0.0), error_429: float = typer.Option(0.0),
    lost_reply: float = typer.Option(0.0), ws_drop_every_s: float = typer.Option(0.0), seed: int = typer.Option(7),
    reply_delay_ms: int = typer.Option(0, help="Hold replies to executed POST/PUT/DELETE this long."),
    spot_no_oco: bool = typer.Option(False, help="Spot symbols refuse OCO (ocoAllowed=false)."),
    spot_disable_types: str = typer.Option("", help="Comma list of spot order types to refuse, e.g. "
                                           "STOP_LOSS,STOP_LOSS_LIMIT,TAKE_PROFIT,TAKE_PROFIT_LIMIT."),
    pace_redis: str = typer.Option("", help="Chimera's Redis URL: replay one step at a time, each once the "
                                   "pipeline's streams are drained (event-time paper replay)."),
    pace_step_ms: int = typer.Option(60_000, help="With --pace-redis: market time replayed per step."),
    pace_timeout_s: float = typer.Option(30.0, help="With --pace-redis: go on after waiting this long."),
    pace_start_wait_s: float = typer.Option(0.0, help="With --pace-redis: wait up to this long for a subscriber "
                                            "to the data's 1m klines (S1) before the first step."),
    clock_redis: str = typer.Option("", help="Publish the replay time on this Redis (replay:{clock}) for "
                                    "workers with CHIMERA_CLOCK=follow (implied by --pace-redis)."),
) -> None:
    specs = [DataSpec.parse(d) for d in data] if data else sample_specs()
    cfg = VenueConfig(
        host=host, port=port, data=specs, symbols=[s for s in symbols.split(",") if s] or None,
        speed=-1.0 if speed == "max" else float(speed), accounts_file=accounts, state_file=state,
        fill_mode=fill_mode, start_ms=start_ms, end_ms=end_ms, spot_oco_allowed=not spot_no_oco,
        spot_disabled_order_types=tuple(t for t in spot_disable_types.split(",") if t),
        fees=Fees(Decimal(futures_maker), Decimal(futures_taker), Decimal(spot_maker), Decimal(spot_taker)),
        faults=FaultConfig(latency_ms=latency_ms, error_5xx_share=error_5xx, error_429_share=error_429,
                           lost_reply_share=lost_reply, ws_drop_every_s=ws_drop_every_s, seed=seed,
                           reply_delay_ms=reply_delay_ms),
        pace_redis_url=pace_redis, pace_step_ms=pace_step_ms, pace_timeout_s=pace_timeout_s,
        pace_start_wait_s=pace_start_wait_s, clock_redis_url=clock_redis)
    srv = VenueServer(cfg)
    for name, acc in srv.engine.accounts.items():
        typer.echo(f"account {name}: api_key={acc.api_key}")
    typer.echo(f"REST http://{host}:{port}  futures WS ws://{host}:{port}/futures  spot WS ws://{host}:{port}/spot")
    web.run_app(srv.build_app(), host=host, port=port, print=None)


if __name__ == "__main__":
    app()
