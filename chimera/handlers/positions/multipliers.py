"""Size and stop-distance multipliers from the market regime and the system health (spec B9).

Regime and health come from the risk port (S2's daily regime, S11's system health): missing regime →
NORMAL, missing health → GREEN. The tables come from the bundle (``positions.regime_mult`` /
``positions.health_mult``: ``{LEVEL: {"size": x, "stop": y}}``); a level not in a table is 1.0.
The size multiplier scales add-ons (0 stops them), the stop multiplier widens or narrows the default
stop distance and the trailing gap between a step's trigger and its locked ROE. When the health grade
an open position was last managed under changes to one with a smaller stop factor, ``tighten`` moves its
stop toward the mark by the ratio of the two factors (ORANGE after GREEN: 3/4 of the distance); a better
grade never loosens a stop, and a replayed pass finds the grade already recorded and moves nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from chimera.errors import PermanentError
from chimera.handlers.positions.common import param, risk
from chimera.schemas.documents.positions import Position, replace
from chimera.venues.binance.adapter import Filters
from chimera.workers.handler import Context

DEFAULT_REGIME = {"EXTREME": {"size": 0.5, "stop": 1.5}}
# B9: a worse grade shrinks add-ons and tightens stops (ORANGE to 3/4 of the distance, RED to half).
DEFAULT_HEALTH = {"YELLOW": {"size": 0.75}, "ORANGE": {"size": 0.5, "stop": 0.75}, "RED": {"size": 0.0, "stop": 0.5}}
ONE = Decimal(1)


@dataclass(frozen=True)
class Multipliers:
    size: Decimal = ONE
    stop: Decimal = ONE
    regime: str = "NORMAL"
    health: str = "GREEN"
    health_stop: Decimal = ONE  # the health grade's own stop factor (S6 tightens open stops by its change)


def _row(table: dict, level: str, name: str) -> tuple[Decimal, Decimal]:
    row = table.get(level) or {}
    try:
        size, stop = Decimal(str(row.get("size", 1))), Decimal(str(row.get("stop", 1)))
    except (ArithmeticError, ValueError, AttributeError) as exc:
        raise PermanentError(f"bundle positions.{name}.{level}={row!r}: expected {{size, stop}} numbers") from exc
    if size < 0 or stop <= 0:
        raise PermanentError(f"bundle positions.{name}.{level}: size must be >= 0 and stop > 0")
    return size, stop


def health_row(ctx: Context, level: str) -> tuple[Decimal, Decimal]:
    """(size, stop) of health grade ``level`` (``positions.health_mult``, else the defaults)."""
    return _row({k.upper(): v for k, v in param(ctx, "health_mult", DEFAULT_HEALTH).items()},
                (level or "GREEN").upper(), "health_mult")


def current(ctx: Context) -> Multipliers:
    port = risk(ctx)
    regime, health = (port.regime() or "NORMAL").upper(), (port.health() or "GREEN").upper()
    # A function of the bundle and the two grades: parsed once per config snapshot, not on every pass.
    return ctx.config.derived(("positions.multipliers", regime, health), lambda: _multipliers(ctx, regime, health))


def _multipliers(ctx: Context, regime: str, health: str) -> Multipliers:
    r_size, r_stop = _row({k.upper(): v for k, v in param(ctx, "regime_mult", DEFAULT_REGIME).items()},
                          regime, "regime_mult")
    h_size, h_stop = health_row(ctx, health)
    return Multipliers(size=r_size * h_size, stop=r_stop * h_stop, regime=regime, health=health, health_stop=h_stop)


def tighten(ctx: Context, pos: Position, mult: Multipliers, f: Filters) -> Position:
    """``pos`` (as it was last managed: ``pos.health`` is that pass's grade) with its stop target moved toward
    ``pos.mark`` when the health grade's stop factor shrank; the order follows in ``stops.reconcile``."""
    before = pos.health or "GREEN"
    if before == mult.health or pos.sl_price is None or pos.mark is None:
        return pos
    ratio = mult.health_stop / health_row(ctx, before)[1]
    d = pos.direction
    gap = (pos.mark - pos.sl_price) * d  # > 0 while the stop is on the protective side of the mark
    if ratio >= 1 or gap <= 0:
        return pos
    price = f.price(pos.mark - d * gap * ratio, pos.side, passive=True)
    return replace(pos, sl_price=price) if d * (price - pos.sl_price) > 0 else pos
