"""The risk port: kill switch, health, regime, and the margin budget and concurrency reservation.

S3's guards read it and reserve through it; S5, S6 and the gateway use the same port. Handlers
reach it as ``ctx.risk`` (``state_for(ctx)``), never through Redis directly.

``RedisState`` is production (and works on a Redis Cluster: every budget key carries the
``{budget}`` tag, so the reserve and release scripts touch one slot; the regime state and its rev
share ``{regime}``). ``MemoryState`` serves the in-process runtime, backtests and dry-runs, with the
same semantics on the runtime's clock: reserve and release are idempotent per ``pos_id``, so an
at-least-once redelivery never books margin twice or frees it twice.

Accounts (ARCHITECTURE §11): every budget is per account. Reservations, margin in use, the open
count and the per-symbol concurrency of one account live under that account's own hash tag
(``keys.risk_budget_tag``), so one account can never use another's room and each script still
touches one slot. The kill switch exists globally (blocks every account) and per account (blocks
that account only); ``effective_kill_switch(account_id)`` is the stricter of the two, which is what
S3, S4 and S6 obey. Every method's ``account_id`` defaults to ``main``.

S6's add-ons grow a reservation (``increase``, idempotent per add id): the reservation then holds
the entry's margin plus every add's, and the one release on close gives all of it back. An add on a
position S3 never reserved (adopted, or opened by hand) books its margin without taking a position
slot, so the budget still bounds it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Protocol

import msgspec

from chimera.schemas.strategy import KILL_MODES, KillSwitchState, RegimeState, decode_kill_switch
from chimera.streams import keys

MICRO = Decimal("1000000")
OK = "OK"
BUDGET_EXHAUSTED = "BUDGET_EXHAUSTED"


def to_micro(usdt: Decimal) -> int:
    return int((Decimal(usdt) * MICRO).to_integral_value())


def from_micro(micro: int) -> Decimal:
    return Decimal(micro) / MICRO


@dataclass(frozen=True)
class Limits:
    budget_usdt: Decimal
    max_per_symbol: int
    max_open: int


@dataclass(frozen=True)
class Usage:
    in_use_usdt: Decimal
    open_positions: int
    per_symbol: int


def stricter(a: KillSwitchState | None, b: KillSwitchState | None) -> KillSwitchState | None:
    """The switch that forbids more (FLATTEN > REDUCE_ONLY > HALT_NEW); ``a`` on a tie."""
    if a is None or b is None:
        return a or b
    return b if KILL_MODES.index(b.mode) > KILL_MODES.index(a.mode) else a


class RiskState(Protocol):
    def kill_switch(self, account_id: str | None = None) -> KillSwitchState | None:
        """The global switch (``account_id`` None) or that account's own switch, as set."""

    def effective_kill_switch(self, account_id: str = "main") -> KillSwitchState | None:
        """What binds ``account_id``: the stricter of the global switch and its own."""

    def set_kill_switch(self, state: KillSwitchState, ttl_ms: int, account_id: str | None = None) -> None: ...
    def clear_kill_switch(self, account_id: str | None = None) -> bool: ...

    def health(self) -> str | None:
        """GREEN / YELLOW / RED, or None when nobody reported (S3 treats that as GREEN)."""

    def set_health(self, level: str, ttl_ms: int) -> None: ...

    def regime(self) -> str | None:
        """FROZEN / NORMAL / EXTREME, or None when the daily regime expired or never ran."""

    def regime_state(self) -> RegimeState | None: ...

    def set_regime(self, state: RegimeState, ttl_ms: int) -> RegimeState:
        """Write the regime for ``ttl_ms``; returns it with the next ``rev`` (one per write)."""

    def reserve(self, pos_id: str, symbol: str, margin: Decimal, limits: Limits, account_id: str = "main") -> str:
        """``OK`` or the blocking reason: MAX_OPEN_POSITIONS, CONCURRENCY, RISK_BUDGET (limits per account)."""

    def increase(self, pos_id: str, symbol: str, add_id: str, margin: Decimal, budget_usdt: Decimal,
                 account_id: str = "main") -> str:
        """Book an add's extra margin on ``pos_id``: ``OK`` (also when ``add_id`` was booked before)
        or ``BUDGET_EXHAUSTED``, in which case nothing is booked."""

    def release(self, pos_id: str, symbol: str, account_id: str = "main") -> bool:
        """True if this call freed the reservation (entry and adds); False if it was already free."""

    def usage(self, symbol: str, account_id: str = "main") -> Usage: ...

    def open_count(self, account_id: str = "main") -> int:
        """Positions holding a slot in ``account_id``'s budget (S3's max-open guards)."""


def parse_level(raw: bytes | str | None, *names: str) -> str | None:
    """A level written either as a bare word or as JSON ``{"state"|"level": ...}``."""
    if raw is None:
        return None
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    text = text.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except ValueError:
            return None
        for name in names:
            if isinstance(doc.get(name), str):
                return doc[name].upper()
        return None
    return text.upper() or None


# A reservation is ``symbol|micro|slot|add_ids``: ``slot`` 1 when it holds a position slot (S3's
# reserve), 0 when only adds booked it; ``add_ids`` the comma-separated adds booked.
_PARSE = """
local function parse(v)
  local sym, micro, slot, ids = string.match(v, '^([^|]*)|([^|]*)|([^|]*)|(.*)$')
  return sym, tonumber(micro), slot, ids
end
"""

# KEYS: inuse, reservations, concurrency(symbol), open ; ARGV: pos_id, symbol, micro, budget, max_sym, max_open
_RESERVE = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return 'OK' end
local inuse = tonumber(redis.call('GET', KEYS[1]) or '0')
local conc = tonumber(redis.call('GET', KEYS[3]) or '0')
local open = tonumber(redis.call('GET', KEYS[4]) or '0')
if open + 1 > tonumber(ARGV[6]) then return 'MAX_OPEN_POSITIONS' end
if conc + 1 > tonumber(ARGV[5]) then return 'CONCURRENCY' end
if inuse + tonumber(ARGV[3]) > tonumber(ARGV[4]) then return 'RISK_BUDGET' end
redis.call('INCRBY', KEYS[1], ARGV[3])
redis.call('INCR', KEYS[3])
redis.call('INCR', KEYS[4])
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '|' .. ARGV[3] .. '|1|')
return 'OK'
"""

# KEYS: inuse, reservations ; ARGV: pos_id, symbol, add_id, micro, budget
_INCREASE = _PARSE + """
local v = redis.call('HGET', KEYS[2], ARGV[1])
local sym, micro, slot, ids = ARGV[2], 0, '0', ''
if v then
  sym, micro, slot, ids = parse(v)
  if sym ~= ARGV[2] then return 'WRONG_SYMBOL' end
  if string.find(',' .. ids .. ',', ',' .. ARGV[3] .. ',', 1, true) then return 'OK' end
end
local inuse = tonumber(redis.call('GET', KEYS[1]) or '0')
if inuse + tonumber(ARGV[4]) > tonumber(ARGV[5]) then return 'BUDGET_EXHAUSTED' end
redis.call('INCRBY', KEYS[1], ARGV[4])
if ids ~= '' then ids = ids .. ',' end
redis.call('HSET', KEYS[2], ARGV[1], sym .. '|' .. (micro + tonumber(ARGV[4])) .. '|' .. slot .. '|' .. ids .. ARGV[3])
return 'OK'
"""

# KEYS: inuse, reservations, concurrency(symbol), open ; ARGV: pos_id, symbol
_RELEASE = _PARSE + """
local v = redis.call('HGET', KEYS[2], ARGV[1])
if not v then return 0 end
local sym, micro, slot = parse(v)
if sym ~= ARGV[2] then return -1 end
redis.call('DECRBY', KEYS[1], micro)
if slot == '1' then
  redis.call('DECR', KEYS[3])
  redis.call('DECR', KEYS[4])
end
redis.call('HDEL', KEYS[2], ARGV[1])
return 1
"""


# KEYS: state, rev (one {regime} slot) ; ARGV: the state's JSON without its opening brace and
# without rev, ttl_ms. The rev is spliced in here so the increment and the write are one step.
_SET_REGIME = """
local rev = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], '{"rev":' .. rev .. ',' .. ARGV[1], 'PX', ARGV[2])
return rev
"""


def _regime_body(state: RegimeState) -> bytes:
    doc = msgspec.to_builtins(state)
    doc.pop("rev", None)
    return msgspec.json.encode(doc)[1:]


def _decode_regime(raw: bytes | str | None) -> RegimeState | None:
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw, type=RegimeState)
    except msgspec.DecodeError:  # a bare word or a hand-written document: the level is what counts
        level = parse_level(raw, "regime", "state")
        return RegimeState(regime=level) if level else None


class WrongSymbol(ValueError):
    pass


def _budget_keys(symbol: str, account_id: str) -> list[str]:
    """One account's keys, one slot (``keys.risk_budget_tag``)."""
    return [keys.risk_budget_inuse(account_id), keys.risk_reservations(account_id),
            keys.risk_concurrency(symbol, account_id), keys.risk_open_positions(account_id)]


def _kill_key(account_id: str | None) -> str:
    return keys.KILL_SWITCH if account_id is None else keys.kill_switch_account(account_id)


def _check_add_id(add_id: str) -> None:
    # The ids are stored in one field, separated by ',' after a '|'-separated head.
    if not add_id or "," in add_id or "|" in add_id:
        raise ValueError(f"add id {add_id!r}: must be non-empty without ',' or '|'")


@dataclass(frozen=True)
class _Held:
    symbol: str
    micro: int
    slot: bool = True
    add_ids: frozenset[str] = frozenset()


class RedisState:
    def __init__(self, r) -> None:
        self.r = r

    def kill_switch(self, account_id: str | None = None) -> KillSwitchState | None:
        return decode_kill_switch(self.r.get(_kill_key(account_id)))

    def effective_kill_switch(self, account_id: str = "main") -> KillSwitchState | None:
        # One MGET: both keys share the {kill_switch} slot.
        both = self.r.mget([keys.KILL_SWITCH, keys.kill_switch_account(account_id)])
        return stricter(decode_kill_switch(both[0]), decode_kill_switch(both[1]))

    def set_kill_switch(self, state: KillSwitchState, ttl_ms: int, account_id: str | None = None) -> None:
        self.r.set(_kill_key(account_id), msgspec.json.encode(state), px=ttl_ms)

    def clear_kill_switch(self, account_id: str | None = None) -> bool:
        return bool(self.r.delete(_kill_key(account_id)))

    def health(self) -> str | None:
        return parse_level(self.r.get(keys.HEALTH_STATE), "level", "state")

    def set_health(self, level: str, ttl_ms: int) -> None:
        self.r.set(keys.HEALTH_STATE, level.upper(), px=ttl_ms)

    def regime(self) -> str | None:
        return parse_level(self.r.get(keys.REGIME_STATE), "regime", "state")

    def regime_state(self) -> RegimeState | None:
        return _decode_regime(self.r.get(keys.REGIME_STATE))

    def set_regime(self, state: RegimeState, ttl_ms: int) -> RegimeState:
        rev = self.r.eval(_SET_REGIME, 2, keys.REGIME_STATE, keys.REGIME_REV, _regime_body(state), int(ttl_ms))
        return msgspec.structs.replace(state, rev=int(rev))

    def reserve(self, pos_id: str, symbol: str, margin: Decimal, limits: Limits, account_id: str = "main") -> str:
        got = self.r.eval(_RESERVE, 4, *_budget_keys(symbol, account_id), pos_id, symbol, to_micro(margin),
                          to_micro(limits.budget_usdt), limits.max_per_symbol, limits.max_open)
        return got.decode() if isinstance(got, bytes) else str(got)

    def increase(self, pos_id: str, symbol: str, add_id: str, margin: Decimal, budget_usdt: Decimal,
                 account_id: str = "main") -> str:
        _check_add_id(add_id)
        got = self.r.eval(_INCREASE, 2, *_budget_keys(symbol, account_id)[:2], pos_id, symbol, add_id,
                          to_micro(margin), to_micro(budget_usdt))
        got = got.decode() if isinstance(got, bytes) else str(got)
        if got == "WRONG_SYMBOL":
            raise WrongSymbol(f"reservation {pos_id} was not made for {symbol}")
        return got

    def release(self, pos_id: str, symbol: str, account_id: str = "main") -> bool:
        got = int(self.r.eval(_RELEASE, 4, *_budget_keys(symbol, account_id), pos_id, symbol))
        if got < 0:
            raise WrongSymbol(f"reservation {pos_id} was not made for {symbol}")
        return got == 1

    def usage(self, symbol: str, account_id: str = "main") -> Usage:
        inuse, _, conc, open_ = self.r.mget(_budget_keys(symbol, account_id))  # one slot: one MGET
        return Usage(from_micro(int(inuse or 0)), int(open_ or 0), int(conc or 0))

    def open_count(self, account_id: str = "main") -> int:
        return int(self.r.get(keys.risk_open_positions(account_id)) or 0)


class MemoryState:
    """Same semantics as RedisState, under one lock. TTLs follow ``now_ms`` (the runtime's clock;
    monotonic by default)."""

    def __init__(self, now_ms: Callable[[], int] | None = None) -> None:
        self._now = now_ms or (lambda: int(time.monotonic() * 1000))
        self._lock = threading.Lock()
        self._kill: dict[str | None, tuple[KillSwitchState, int]] = {}  # None = the global switch
        self._health: tuple[str, int] | None = None
        self._regime: tuple[RegimeState, int] | None = None
        self._regime_rev = 0
        self._reservations: dict[tuple[str, str], _Held] = {}

    def _live(self, held: tuple | None):
        return held[0] if held is not None and held[1] > self._now() else None

    def kill_switch(self, account_id: str | None = None) -> KillSwitchState | None:
        with self._lock:
            return self._live(self._kill.get(account_id))

    def effective_kill_switch(self, account_id: str = "main") -> KillSwitchState | None:
        with self._lock:
            return stricter(self._live(self._kill.get(None)), self._live(self._kill.get(account_id)))

    def set_kill_switch(self, state: KillSwitchState, ttl_ms: int, account_id: str | None = None) -> None:
        with self._lock:
            self._kill[account_id] = (state, self._now() + ttl_ms)

    def clear_kill_switch(self, account_id: str | None = None) -> bool:
        with self._lock:
            return self._live(self._kill.pop(account_id, None)) is not None

    def health(self) -> str | None:
        with self._lock:
            return self._live(self._health)

    def set_health(self, level: str, ttl_ms: int) -> None:
        with self._lock:
            self._health = (level.upper(), self._now() + ttl_ms)

    def regime(self) -> str | None:
        state = self.regime_state()
        return state.regime.upper() if state else None

    def regime_state(self) -> RegimeState | None:
        with self._lock:
            return self._live(self._regime)

    def set_regime(self, state: RegimeState, ttl_ms: int) -> RegimeState:
        with self._lock:
            self._regime_rev += 1
            state = msgspec.structs.replace(state, rev=self._regime_rev)
            self._regime = (state, self._now() + ttl_ms)
            return state

    # Reservations are keyed (account, pos_id), like Redis's one hash per account.

    def reserve(self, pos_id: str, symbol: str, margin: Decimal, limits: Limits, account_id: str = "main") -> str:
        micro = to_micro(margin)
        with self._lock:
            if (account_id, pos_id) in self._reservations:
                return OK
            held = [h for h in self._held(account_id) if h.slot]
            if len(held) + 1 > limits.max_open:
                return "MAX_OPEN_POSITIONS"
            if sum(1 for h in held if h.symbol == symbol) + 1 > limits.max_per_symbol:
                return "CONCURRENCY"
            if self._in_use(account_id) + micro > to_micro(limits.budget_usdt):
                return "RISK_BUDGET"
            self._reservations[(account_id, pos_id)] = _Held(symbol, micro)
            return OK

    def _held(self, account_id: str) -> list[_Held]:
        return [h for (acc, _), h in self._reservations.items() if acc == account_id]

    def _in_use(self, account_id: str) -> int:
        return sum(h.micro for h in self._held(account_id))

    def increase(self, pos_id: str, symbol: str, add_id: str, margin: Decimal, budget_usdt: Decimal,
                 account_id: str = "main") -> str:
        _check_add_id(add_id)
        micro = to_micro(margin)
        with self._lock:
            held = self._reservations.get((account_id, pos_id)) or _Held(symbol, 0, slot=False)
            if held.symbol != symbol:
                raise WrongSymbol(f"reservation {pos_id} was not made for {symbol}")
            if add_id in held.add_ids:
                return OK
            if self._in_use(account_id) + micro > to_micro(budget_usdt):
                return BUDGET_EXHAUSTED
            self._reservations[(account_id, pos_id)] = _Held(symbol, held.micro + micro, held.slot,
                                                             held.add_ids | {add_id})
            return OK

    def release(self, pos_id: str, symbol: str, account_id: str = "main") -> bool:
        with self._lock:
            held = self._reservations.get((account_id, pos_id))
            if held is None:
                return False
            if held.symbol != symbol:
                raise WrongSymbol(f"reservation {pos_id} was not made for {symbol}")
            del self._reservations[(account_id, pos_id)]
            return True

    def usage(self, symbol: str, account_id: str = "main") -> Usage:
        with self._lock:
            held = self._held(account_id)
        slots = [h for h in held if h.slot]
        return Usage(from_micro(sum(h.micro for h in held)), len(slots), sum(1 for h in slots if h.symbol == symbol))

    def open_count(self, account_id: str = "main") -> int:
        with self._lock:
            return sum(1 for h in self._held(account_id) if h.slot)


def state_for(ctx) -> RiskState:
    """The context's risk port (``ctx.risk``): Redis on the Redis runtime, in memory on the
    in-process one (built by the runtime, on its clock)."""
    return ctx.risk
