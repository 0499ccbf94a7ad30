"""Operations views (seed 000, HedgeStack): per-account execution metrics and the system's health.

``ops_metrics`` reads what already happened, never what a worker believes: S4's documents
(``order_intents``, ``orders``, ``fills``), the streams themselves (command -> result latency from
the Redis entry ids of ``ord:{commands}`` and ``ord:{results}``, consumer-group backlog from
``XINFO GROUPS`` plus the undelivered and pending entries counted by their envelope's account), S4's
execution-metrics port and S1's stream status hashes. ``ops_health`` checks Redis, the store, every
enabled account's streams, the consumer groups' backlog and each role's heartbeat (the idle time of
its freshest consumer in Redis; the scheduler's lease).

Windows are on the gateway's clock: orders whose leg S4 created within the last ``window_sec``,
their fills, and stream entries whose id (Redis time) falls in the window.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from chimera.schemas.envelope import decode
from chimera.store import collections as C
from chimera.streams import keys

# Alert thresholds; override per deployment in settings.extra["ops_alerts"] or, at run time, in the
# active config bundle's "ops_alerts" section (the bundle wins).
DEFAULT_THRESHOLDS: dict[str, float] = {
    "reject_rate": 0.20,  # rejected legs / legs sent, per account
    "slippage_bps_p95": 10.0,  # fills vs the intent's arrival mid, positive = worse
    "latency_ms_p95": 2_000.0,  # command on ord:{commands} -> first result on ord:{results}
    "stream_lag": 1_000.0,  # entries waiting (undelivered + pending) in one consumer group
    "min_orders": 5.0,  # below this many legs the reject rate is not judged
    "heartbeat_stale_s": 30.0,  # a role whose freshest consumer is idle longer is not running
}
# The streams whose backlog means "the pipeline is late" (market data has S1's own status instead).
LAG_STREAMS = (keys.ORD_COMMANDS, keys.ORD_RESULTS, keys.VENUE_REPORTS, keys.POS_COMMANDS, keys.ROUTER_TIMERS,
               keys.STRAT_COMMANDS, keys.RECON_COMMANDS, keys.TREASURY_COMMANDS)
SCAN_CAP = 20_000  # entries read per stream per request: bounds the cost of a huge backlog
OPEN_STATES = ("ACTIVE", "PENDING_CLOSING")


def thresholds(d) -> dict[str, float]:
    from chimera.workers.config import load_active

    out = dict(DEFAULT_THRESHOLDS)
    out.update({k: float(v) for k, v in ((d.settings.extra or {}).get("ops_alerts") or {}).items() if k in out})
    bundle = load_active(d.store).get("ops_alerts") or {}
    out.update({k: float(v) for k, v in bundle.items() if k in out})
    return out


def _s(raw) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _pct(values: list[float], q: int) -> float | None:
    """Nearest-rank percentile (a value that was actually observed)."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, -(-q * len(ordered) // 100) - 1)]


def _dist(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    return {"samples": len(values), "avg": sum(values) / len(values), "p50": _pct(values, 50),
            "p95": _pct(values, 95), "max": max(values)}


def configured_accounts(d) -> list:
    from chimera.venues.accounts import load_accounts

    return load_accounts(d.settings.accounts_file or None, d.settings.venue)


# --- metrics ---------------------------------------------------------------------------------------------


@dataclass
class _Acc:
    """One account's figures over the window (money in Decimal, samples kept for the percentiles)."""

    orders: int = 0
    rejects: int = 0
    fills: int = 0
    qty: Decimal = Decimal(0)
    notional: Decimal = Decimal(0)
    fees: Decimal = Decimal(0)
    slippage: list[float] = field(default_factory=list)
    latency: list[float] = field(default_factory=list)
    lag: int = 0

    def out(self) -> dict[str, Any]:
        return {"orders": self.orders, "rejects": self.rejects,
                "reject_rate": self.rejects / self.orders if self.orders else None,
                "fills": self.fills, "filled_qty": str(self.qty), "notional_usdt": str(self.notional),
                "fees": str(self.fees), "slippage_bps": _dist(self.slippage), "latency_ms": _dist(self.latency),
                "stream_lag": self.lag}

    def add(self, other: _Acc) -> None:
        self.orders += other.orders
        self.rejects += other.rejects
        self.fills += other.fills
        self.qty += other.qty
        self.notional += other.notional
        self.fees += other.fees
        self.slippage += other.slippage
        self.latency += other.latency
        self.lag += other.lag


def _intent_accounts(store, since_ms: int, more: set[str]) -> dict[str, str]:
    out = {x["intent_id"]: x.get("account_id") or "main"
           for x in store.query(C.ORDER_INTENTS, {"created_at": (">=", since_ms)}) if x.get("intent_id")}
    missing = sorted(more - set(out))
    for i in range(0, len(missing), 200):
        for x in store.query(C.ORDER_INTENTS, {"intent_id": ("in", missing[i:i + 200])}):
            out[x["intent_id"]] = x.get("account_id") or "main"
    return out


def _execution(store, since_ms: int, accs: dict[str, _Acc]) -> None:
    legs = store.query(C.ORDERS, {"created_at": (">=", since_ms)})
    owner = _intent_accounts(store, since_ms, {x.get("intent_id", "") for x in legs} - {""})

    def account(doc: dict) -> str:
        return doc.get("account_id") or owner.get(doc.get("intent_id", ""), "main")

    for leg in legs:
        a = accs.setdefault(account(leg), _Acc())
        a.orders += 1
        a.rejects += leg.get("status") == "REJECTED"
    ids = sorted({x["intent_id"] for x in legs if x.get("intent_id")})
    for i in range(0, len(ids), 200):
        for f in store.query(C.FILLS, {"intent_id": ("in", ids[i:i + 200])}):
            a = accs.setdefault(account(f), _Acc())
            qty, price = Decimal(str(f.get("qty") or 0)), Decimal(str(f.get("price") or 0))
            a.fills += 1
            a.qty += qty
            a.notional += qty * price
            a.fees += Decimal(str(f.get("fee") or 0))
            if f.get("slippage_bps") is not None:
                a.slippage.append(float(f["slippage_bps"]))


def _entry_ms(entry_id) -> int:
    return int(_s(entry_id).split("-", 1)[0])


def _latencies(r, since_ms: int, accs: dict[str, _Acc]) -> None:
    """Command -> first result per intent, from the Redis entry ids (one clock: the Redis server's)."""
    first_result: dict[str, tuple[int, str]] = {}
    for eid, fields in r.xrange(keys.ORD_RESULTS, min=f"{since_ms}-0", count=SCAN_CAP):
        try:
            env = decode(fields)
        except Exception:  # noqa: BLE001 - an entry this build cannot read is not a result of ours
            continue
        iid = getattr(env.payload, "intent_id", "")
        if iid and iid not in first_result:
            first_result[iid] = (_entry_ms(eid), env.account_id or "main")
    if not first_result:
        return
    # A command can precede its first result by a maker window or a TWAP: look back a while further.
    look_back = since_ms - 3_600_000
    seen: set[str] = set()
    for eid, fields in r.xrange(keys.ORD_COMMANDS, min=f"{max(0, look_back)}-0", count=SCAN_CAP):
        try:
            env = decode(fields)
        except Exception:  # noqa: BLE001
            continue
        intent = getattr(env.payload, "intent", None)
        iid = getattr(intent, "intent_id", "")
        if iid in first_result and iid not in seen:
            seen.add(iid)
            done_ms, account = first_result[iid]
            accs.setdefault(env.account_id or account, _Acc()).latency.append(float(done_ms - _entry_ms(eid)))


def group_backlog(r) -> list[dict[str, Any]]:
    """Every consumer group on the lag streams with Redis' own figures (XINFO GROUPS)."""
    out = []
    for stream in LAG_STREAMS:
        try:
            groups = r.xinfo_groups(stream)
        except Exception as exc:  # noqa: BLE001 - a stream nobody wrote yet has no groups
            if "no such key" in str(exc).lower():
                continue
            raise
        for g in groups:
            out.append({"stream": stream, "group": _s(g["name"]), "lag": int(g.get("lag") or 0),
                        "pending": int(g.get("pending") or 0), "last_delivered_id": _s(g["last-delivered-id"]),
                        "consumers": int(g.get("consumers") or 0)})
    return out


def _backlog_by_account(r, groups: list[dict[str, Any]], accs: dict[str, _Acc]) -> None:
    """Entries a group has not finished (undelivered after its last-delivered id, or pending), by the
    account their envelope names."""
    for g in groups:
        if not g["lag"] and not g["pending"]:
            continue
        ids: list[tuple[str, dict]] = []
        if g["lag"]:
            ids += r.xrange(g["stream"], min=f"({g['last_delivered_id']}", count=SCAN_CAP)
        if g["pending"]:
            pend = r.xpending_range(g["stream"], g["group"], "-", "+", min(g["pending"], SCAN_CAP))
            pipe = r.pipeline(transaction=False)  # one stream key: one slot on a cluster
            for p in pend:
                pipe.xrange(g["stream"], min=p["message_id"], max=p["message_id"])
            ids += [e for got in pipe.execute() for e in got]
        for _eid, fields in ids:
            try:
                account = decode(fields).account_id or "main"
            except Exception:  # noqa: BLE001 - unreadable entries still wait: count them to main
                account = "main"
            accs.setdefault(account, _Acc()).lag += 1


def ops_metrics(d, account_id: str | None, window_sec: int) -> dict[str, Any]:
    now = d.clock.now_ms()
    since = now - window_sec * 1000
    limits = thresholds(d)
    configured = configured_accounts(d)
    accs: dict[str, _Acc] = {a.account_id: _Acc() for a in configured}
    _execution(d.store, since, accs)
    _latencies(d.r, since, accs)
    groups = group_backlog(d.r)
    _backlog_by_account(d.r, groups, accs)
    status = {a["account_id"]: a for a in accounts_stream_status(d)}
    chosen = sorted(accs) if account_id in (None, "", "all") else [account_id]
    by_account = {}
    total = _Acc()
    for acc in chosen:
        a = accs.get(acc, _Acc())
        total.add(a)
        st = status.get(acc, {})
        by_account[acc] = a.out() | {"ws_status": st.get("ws_status", "UNKNOWN"),
                                     "last_connected_at": st.get("last_connected_at", 0)}
    exec_port = _router_figures(d.r)
    totals = total.out() | {"accounts": len(by_account), "groups": groups, **exec_port}
    alerts = [x for acc, m in by_account.items() for x in _alerts(acc, m, limits)]
    alerts += [{"account_id": None, "code": "PROCESSING_LAG", "metric": "stream_lag", "level": "WARN",
                "value": g["lag"] + g["pending"], "threshold": limits["stream_lag"],
                "message": f"{g['group']} on {g['stream']}: {g['lag']} undelivered + {g['pending']} pending"}
               for g in groups if g["lag"] + g["pending"] > limits["stream_lag"]]
    return {"generated_at": now, "window_sec": window_sec, "account_id": account_id or "all",
            "by_account": by_account, "totals": totals, "alerts": alerts, "thresholds": limits}


def _router_figures(r) -> dict[str, Any]:
    """S4's execution-metrics port (all accounts): maker counters and command -> venue-ack p95."""
    from chimera.ports.exec_metrics import RedisExecMetrics

    port = RedisExecMetrics(r)
    counts = port.counters()
    sent = counts.get("maker_sent_count", 0)
    return {"router_ack_p95_ms": _pct([float(x) for x in port.ack_samples()], 95),
            "maker_sent": sent, "maker_timeouts": counts.get("maker_timeout_count", 0),
            "maker_fill_ratio": counts.get("maker_filled_count", 0) / sent if sent else None}


def _alerts(account: str, m: dict[str, Any], limits: dict[str, float]) -> list[dict[str, Any]]:
    out = []

    def over(code: str, metric: str, value, limit: float, what: str) -> None:
        if value is not None and value > limit:
            out.append({"account_id": account, "code": code, "metric": metric, "level": "WARN", "value": value,
                        "threshold": limit, "message": f"{account}: {what} {value:.4g} > {limit:g}"})

    if m["orders"] >= limits["min_orders"]:
        over("REJECT_RATE_HIGH", "reject_rate", m["reject_rate"], limits["reject_rate"], "reject rate")
    over("SLIPPAGE_HIGH", "slippage_bps.p95", (m["slippage_bps"] or {}).get("p95"), limits["slippage_bps_p95"],
         "slippage p95 (bps)")
    over("LATENCY_HIGH", "latency_ms.p95", (m["latency_ms"] or {}).get("p95"), limits["latency_ms_p95"],
         "command -> result p95 (ms)")
    over("PROCESSING_LAG", "stream_lag", m["stream_lag"], limits["stream_lag"], "entries waiting")
    if m["ws_status"] not in ("CONNECTED", "DISABLED"):
        out.append({"account_id": account, "code": "ACCOUNT_STREAM_DOWN", "metric": "ws_status", "level": "WARN",
                    "value": m["ws_status"], "threshold": "CONNECTED",
                    "message": f"{account}: streams {m['ws_status']}"})
    return out


# --- accounts and positions ------------------------------------------------------------------------------


def _hash(r, key: str) -> dict[str, str]:
    return {_s(k): _s(v) for k, v in (r.hgetall(key) or {}).items()}


def accounts_stream_status(d) -> list[dict[str, Any]]:
    """Each configured account with S1's stream status (seed 000: ws_status, last_error,
    last_connected_at) and the same per market stream S1 runs for it."""
    out = []
    for acc in configured_accounts(d):
        st = _hash(d.r, keys.s1_stream_status(acc.account_id))
        item = {"account_id": acc.account_id, "enabled": acc.enabled,
                "ws_status": st.get("ws_status") or ("DISCONNECTED" if acc.enabled else "DISABLED"),
                "last_error": st.get("last_error", ""),
                "last_connected_at": int(st.get("last_connected_at") or 0),
                "updated_at": int(st.get("updated_at") or 0), "markets": {}}
        if not acc.enabled:
            item["ws_status"] = "DISABLED"
        for market in keys.S1_STATUS_MARKETS:  # only the streams S1 runs for this account have a hash
            ms = _hash(d.r, keys.s1_stream_status_market(acc.account_id, market))
            if ms:
                item["markets"][market] = {"ws_status": ms.get("ws_status", ""), "last_error": ms.get("last_error", ""),
                                           "last_connected_at": int(ms.get("last_connected_at") or 0)}
        out.append(item)
    return out


def aggregate_positions(docs: list[dict]) -> list[dict[str, Any]]:
    """Open positions summed per (market, symbol, side) over accounts: the All view's rows."""
    rows: dict[tuple[str, str, str], dict[str, Any]] = {}
    for p in docs:
        if p.get("state") not in OPEN_STATES:
            continue
        key = (p.get("market") or "FUT", p.get("symbol", ""), p.get("side", ""))
        row = rows.setdefault(key, {"market": key[0], "symbol": key[1], "side": key[2], "qty": Decimal(0),
                                    "cost": Decimal(0), "positions": 0, "accounts": {}})
        qty = Decimal(str(p.get("qty") or 0))
        row["qty"] += qty
        row["cost"] += qty * Decimal(str(p.get("entry_price") or 0))
        row["positions"] += 1
        acc = p.get("account_id") or "main"
        row["accounts"][acc] = str(Decimal(row["accounts"].get(acc, "0")) + qty)
    out = []
    for key in sorted(rows):
        row = rows[key]
        qty, cost = row.pop("qty"), row.pop("cost")
        out.append(row | {"qty": str(qty), "entry_price": str(cost / qty) if qty else None})
    return out


def virtual_rows(store, account_id: str | None, symbol: str | None) -> dict[str, list[dict]]:
    """The strategies' virtual positions (HedgeStack: several strategies share one account) of one
    account or all, and the quantity no strategy explains (UNASSIGNED, what S5 reports)."""
    import msgspec

    from chimera.accounts import views

    rows = views.virtual_positions(store, account_id or views.ALL, symbol=symbol)
    unassigned = [u for u in views.unassigned(store, account_id or views.ALL) if not symbol or u["symbol"] == symbol]
    return {"virtual": msgspec.to_builtins(rows), "unassigned": unassigned}


# --- health --------------------------------------------------------------------------------------------

OK, DEGRADED, FAIL = "OK", "DEGRADED", "FAIL"
_RANK = {OK: 0, DEGRADED: 1, FAIL: 2}
NOT_CONSUMERS = ("s12", "scheduler", "noop", "sqlite-bench")  # the gateway answers; the scheduler has a lease


def _check(name: str, status: str, detail: str, **extra) -> dict[str, Any]:
    return {"name": name, "status": status, "detail": detail, **extra}


def role_groups(r) -> dict[str, list[tuple[str, str]]]:
    """role code -> the (stream, group) pairs Redis holds for it: groups are ``cg:<role>`` (S1's treasury
    worker ``cg:s1-treasury``). Read from Redis, not from the role modules: importing every role (S9's
    statistics stack) would cost the gateway seconds and memory for a health check."""
    from chimera.ops.streams_admin import _scan_streams
    from chimera.workers.registry import ROLES

    codes = [x.code for x in ROLES if x.code not in NOT_CONSUMERS]
    out: dict[str, list[tuple[str, str]]] = {c: [] for c in codes}
    for stream in _scan_streams(r):
        for g in r.xinfo_groups(stream):
            name = _s(g["name"])
            role = name[len("cg:"):] if name.startswith("cg:") else ""
            code = role if role in out else next((c for c in codes if role.startswith(c + "-")), None)
            if code:
                out[code].append((stream, name))
    return out


def _freshest_idle_ms(r, pairs: list[tuple[str, str]]) -> int | None:
    """The smallest consumer idle time (ms since it last read) over the role's groups; None: no consumer."""
    best = None
    for stream, group in pairs:
        try:
            consumers = r.xinfo_consumers(stream, group)
        except Exception as exc:  # noqa: BLE001 - no stream / no group yet: this pair never started
            if "no such key" in str(exc).lower() or "nogroup" in str(exc).lower():
                continue
            raise
        for c in consumers:
            idle = int(c.get("idle") or 0)
            best = idle if best is None else min(best, idle)
    return best


def _heartbeats(d, limits: dict[str, float]) -> list[dict[str, Any]]:
    stale_ms = int(limits["heartbeat_stale_s"] * 1000)
    out = []
    for role, pairs in sorted(role_groups(d.r).items()):
        idle = _freshest_idle_ms(d.r, pairs)
        if idle is None:
            out.append(_check(f"heartbeat:{role}", DEGRADED, f"{role} has no consumer in Redis: never started",
                              idle_ms=None))
        elif idle > stale_ms:
            out.append(_check(f"heartbeat:{role}", DEGRADED, f"{role}'s freshest consumer last read {idle} ms ago "
                              f"(> {stale_ms} ms): not running", idle_ms=idle))
        else:
            out.append(_check(f"heartbeat:{role}", OK, f"{role} read {idle} ms ago", idle_ms=idle))
    ttl = d.r.pttl(keys.SCHED_LEASE)
    owner = d.r.get(keys.SCHED_LEASE)
    out.append(_check("heartbeat:scheduler", OK, f"active scheduler {_s(owner)}", idle_ms=None) if owner and ttl > 0
               else _check("heartbeat:scheduler", DEGRADED, "no active scheduler (lease absent): timers do not fire",
                           idle_ms=None))
    return out


def _account_checks(d) -> list[dict[str, Any]]:
    out = []
    for a in accounts_stream_status(d):
        name = f"account_streams:{a['account_id']}"
        if not a["enabled"]:
            out.append(_check(name, OK, "disabled in the accounts file", ws_status="DISABLED"))
        elif not a["updated_at"] and not a["markets"]:
            out.append(_check(name, DEGRADED, "S1 has not reported this account's streams", ws_status=a["ws_status"]))
        elif a["ws_status"] != "CONNECTED":
            out.append(_check(name, DEGRADED, a["last_error"] or a["ws_status"], ws_status=a["ws_status"],
                              markets={m: v["ws_status"] for m, v in a["markets"].items()}))
        else:
            out.append(_check(name, OK, "connected", ws_status="CONNECTED",
                              markets={m: v["ws_status"] for m, v in a["markets"].items()}))
    return out


def _lag_checks(d, limits: dict[str, float]) -> list[dict[str, Any]]:
    out = []
    for g in group_backlog(d.r):
        waiting = g["lag"] + g["pending"]
        status = DEGRADED if waiting > limits["stream_lag"] else OK
        out.append(_check(f"consumer_lag:{g['group']}:{g['stream']}", status,
                          f"{g['lag']} undelivered + {g['pending']} pending (threshold {limits['stream_lag']:g})",
                          lag=g["lag"], pending=g["pending"]))
    return out


def ops_health(d) -> dict[str, Any]:
    now = d.clock.now_ms()
    checks = []
    try:
        d.r.ping()
        checks.append(_check("redis", OK, "PING answered"))
        redis_ok = True
    except Exception as exc:  # noqa: BLE001 - any failure is the finding
        checks.append(_check("redis", FAIL, f"unreachable: {exc}"))
        redis_ok = False
    try:
        d.store.count(C.ORDERS)
        checks.append(_check("store", OK, "query answered"))
        limits = thresholds(d)
    except Exception as exc:  # noqa: BLE001
        checks.append(_check("store", FAIL, f"unreachable: {exc}"))
        limits = dict(DEFAULT_THRESHOLDS)
    if redis_ok:
        for part in (_account_checks, lambda x: _lag_checks(x, limits), lambda x: _heartbeats(x, limits)):
            try:
                checks += part(d)
            except Exception as exc:  # noqa: BLE001 - Redis went away mid-way: say so, keep the others
                checks.append(_check("redis", FAIL, f"failed during checks: {exc}"))
    status = max((c["status"] for c in checks), key=_RANK.__getitem__)
    started = d.started_at
    return {"status": status, "checks": checks, "started_at": started, "uptime_sec": max(0, (now - started) // 1000),
            "generated_at": now}
