"""``MetricEvent`` on ``metrics:events:<name>`` → ``metrics_timeseries``, downsampled to one document
per (name, labels, minute): count, sum, min, max, last.

A bucket is updated read-modify-write under the route's lock (one series at a time across
replicas). The runtime's done-marker is written after the handler, so a worker killed in between
would count the entry twice on redelivery: the bucket keeps the idempotency keys it has counted
(the last ``SEEN_KEPT``) and skips one it has seen.
"""

from __future__ import annotations

from chimera.schemas.envelope import Envelope
from chimera.schemas.messages import MetricEvent
from chimera.store.collections import METRICS_TIMESERIES
from chimera.workers.handler import Context

BUCKET_MS = 60_000
SEEN_KEPT = 64


def series_id(name: str, labels: dict[str, str]) -> str:
    return name + "|" + ",".join(f"{k}={labels[k]}" for k in sorted(labels))


def bucket_key(name: str, labels: dict[str, str], bucket_ms: int) -> str:
    return f"{series_id(name, labels)}|{bucket_ms}"


def lock_scope(env: Envelope) -> str:
    p: MetricEvent = env.payload
    return f"s11:series:{series_id(p.name, p.labels)}"


def on_metric(env: Envelope, ctx: Context) -> list:
    p: MetricEvent = env.payload
    ts = p.ts or env.event_time or ctx.now_ms()
    start = ts - ts % BUCKET_MS
    key = bucket_key(p.name, p.labels, start)
    doc = ctx.store.get(METRICS_TIMESERIES, key)
    seen = list((doc or {}).get("seen") or [])
    if env.idempotency_key in seen:
        return []
    v = float(p.value)
    if doc is None:
        doc = {"name": p.name, "labels": dict(p.labels), "series": series_id(p.name, p.labels), "bucket_ms": start,
               "count": 0, "sum": 0.0, "min": v, "max": v, "last": v, "last_ts": ts}
    doc.pop("_key", None)
    doc.update(count=doc["count"] + 1, sum=doc["sum"] + v, min=min(doc["min"], v), max=max(doc["max"], v))
    if ts >= doc["last_ts"]:
        doc.update(last=v, last_ts=ts)
    doc["seen"] = (seen + [env.idempotency_key])[-SEEN_KEPT:]
    ctx.store.upsert(METRICS_TIMESERIES, key, doc)
    return []


def latest(store, name: str, since_ms: int, agg: str = "max") -> float | None:
    """The ``agg`` (max|last) of a metric over every series' buckets since ``since_ms``."""
    docs = store.query(METRICS_TIMESERIES, {"name": name, "bucket_ms": (">=", since_ms - since_ms % BUCKET_MS)})
    if not docs:
        return None
    if agg == "last":
        return float(max(docs, key=lambda d: d["last_ts"])["last"])
    return max(float(d["max"]) for d in docs)
