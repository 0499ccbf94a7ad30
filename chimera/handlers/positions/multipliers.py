"""Size and stop-distance multipliers from the market regime and the system health (spec B9).

Regime and health come from the risk port (S2's daily regime, S11's system health): missing regime →
NORMAL, missing health → GREEN. The tables come from the bundle (``positions.regime_mult`` /
``positions.health_mult``: ``{LEVEL: {"size": x, "stop": y}}``); a level not in a table is 1.0.
The size multiplier scales add-ons (0 stops them), the stop multiplier widens or narrows the default
stop distance and the trailing gap between a step's trigger and its locked ROE.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from chimera.errors import PermanentError
from chimera.handlers.positions.common import param, risk
from chimera.workers.handler import Context

DEFAULT_REGIME = {"EXTREME": {"size": 0.5, "stop": 1.5}}
DEFAULT_HEALTH = {"YELLOW": {"size": 0.75}, "ORANGE": {"size": 0.5}, "RED": {"size": 0.0}}
ONE = Decimal(1)


@dataclass(frozen=True)
class Multipliers:
    size: Decimal = ONE
    stop: Decimal = ONE
    regime: str = "NORMAL"
    health: str = "GREEN"


def _row(table: dict, level: str, name: str) -> tuple[Decimal, Decimal]:
    row = table.get(level) or {}
    try:
        size, stop = Decimal(str(row.get("size", 1))), Decimal(str(row.get("stop", 1)))
    except (ArithmeticError, ValueError, AttributeError) as exc:
        raise PermanentError(f"bundle positions.{name}.{level}={row!r}: expected {{size, stop}} numbers") from exc
    if size < 0 or stop <= 0:
        raise PermanentError(f"bundle positions.{name}.{level}: size must be >= 0 and stop > 0")
    return size, stop


def current(ctx: Context) -> Multipliers:
    port = risk(ctx)
    regime, health = (port.regime() or "NORMAL").upper(), (port.health() or "GREEN").upper()
    r_size, r_stop = _row({k.upper(): v for k, v in param(ctx, "regime_mult", DEFAULT_REGIME).items()},
                          regime, "regime_mult")
    h_size, h_stop = _row({k.upper(): v for k, v in param(ctx, "health_mult", DEFAULT_HEALTH).items()},
                          health, "health_mult")
    return Multipliers(size=r_size * h_size, stop=r_stop * h_stop, regime=regime, health=health)
