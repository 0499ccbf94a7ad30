"""Pure matching + accounting engine (no I/O); usable directly by the in-process backtest runtime."""

from .core import Engine, Fees
from .market import FillModel, MarketEvent
from .model import FUTURES, SPOT, Account, Event, Order, VenueError
from .rules import ExchangeInfo

__all__ = ["Account", "Engine", "Event", "ExchangeInfo", "FUTURES", "Fees", "FillModel", "MarketEvent", "Order",
           "SPOT", "VenueError"]
