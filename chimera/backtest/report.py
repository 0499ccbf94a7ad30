"""The backtest report: one self-contained HTML file (inline CSS and SVG, no script, no network).

Deterministic: the same run gives the same bytes (no wall-clock stamp, fixed number formatting).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from decimal import Decimal

from chimera.backtest.results import Summary, Trade
from chimera.backtest.runner import EquityPoint

W, H, PAD = 900, 220, 40
MAX_POINTS = 1500

CSS = """body{font:14px system-ui,sans-serif;margin:24px;color:#222}h1{font-size:20px}h2{font-size:16px;margin-top:28px}
table{border-collapse:collapse}td,th{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}.ok{color:#1a7f37}.bad{color:#c62828;font-weight:bold}
svg{background:#fcfcfc;border:1px solid #ddd}.pos{color:#1a7f37}.neg{color:#c62828}"""


def _iso(t: int) -> str:
    return datetime.fromtimestamp(t / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _e(x) -> str:
    return html.escape(str(x))


def _money(d: Decimal, places: int = 4) -> str:
    return f"{d:,.{places}f}"


def _thin(points: list, limit: int = MAX_POINTS) -> list:
    """At most ~``limit`` points, keeping each bucket's lowest and highest (the drawdown's bottom stays)."""
    if len(points) <= limit:
        return points
    size = -(-len(points) // (limit // 2))
    out = []
    for i in range(0, len(points), size):
        bucket = points[i:i + size]
        lo, hi = min(bucket, key=lambda p: p[1]), max(bucket, key=lambda p: p[1])
        out.extend(sorted({lo, hi}, key=lambda p: p[0]))
    return out if out[-1] == points[-1] else [*out, points[-1]]


def svg_line(points: list[tuple[int, float]], title: str, color: str, fill: str = "") -> str:
    """A polyline over (time, value) with min/max and start/end labels; ``fill`` "top"/"bottom" shades to that edge."""
    if not points:
        return f"<p>{_e(title)}: no data</p>"
    pts = _thin(points)
    t0, t1 = pts[0][0], pts[-1][0]
    lo, hi = min(v for _, v in pts), max(v for _, v in pts)
    span_t, span_v = (t1 - t0) or 1, (hi - lo) or 1.0

    def xy(t: int, v: float) -> str:
        return f"{PAD + (t - t0) / span_t * (W - 2 * PAD):.1f},{H - PAD - (v - lo) / span_v * (H - 2 * PAD):.1f}"

    line = " ".join(xy(t, v) for t, v in pts)
    area = ""
    if fill:
        edge = hi if fill == "top" else lo
        area = (f'<polygon points="{xy(t0, edge)} {line} {xy(t1, edge)}" fill="{color}" fill-opacity="0.15" '
                'stroke="none"/>')
    return (f'<svg width="{W}" height="{H}" viewBox="0 0 {W} {H}" role="img" aria-label="{_e(title)}">'
            f'<text x="{PAD}" y="18" font-size="13">{_e(title)}</text>'
            f'<text x="4" y="{PAD + 4}" font-size="11">{hi + 0.0:,.2f}</text>'
            f'<text x="4" y="{H - PAD + 4}" font-size="11">{lo + 0.0:,.2f}</text>'
            f'<text x="{PAD}" y="{H - 12}" font-size="11">{_e(_iso(t0))}</text>'
            f'<text x="{W - PAD}" y="{H - 12}" font-size="11" text-anchor="end">{_e(_iso(t1))}</text>'
            f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#bbb"/>{area}'
            f'<polyline points="{line}" fill="none" stroke="{color}" stroke-width="1.5"/></svg>')


def _curves(equity: list[EquityPoint]) -> tuple[list, list, list]:
    eq, dd, ex = [], [], []
    peak = None
    for p in equity:
        v = p.wallet + p.unrealized
        peak = v if peak is None or v > peak else peak
        eq.append((p.t, float(v)))
        dd.append((p.t, -float(peak - v)))
        ex.append((p.t, float(p.exposure)))
    return eq, dd, ex


def _kv(rows: list[tuple[str, str]]) -> str:
    return "<table>" + "".join(f'<tr><th class="l">{_e(k)}</th><td>{_e(v)}</td></tr>' for k, v in rows) + "</table>"


def _trades_table(trades: list[Trade]) -> str:
    head = ("#", "symbol", "side", "entry time", "entry", "qty", "exit time", "exit", "reason", "realized",
            "fees", "funding", "net", "status")
    rows = []
    for t in trades:
        cls = "pos" if t.net_pnl > 0 else "neg"
        rows.append("<tr>" + "".join([
            f"<td>{t.n}</td>", f'<td class="l">{_e(t.symbol)}</td>', f'<td class="l">{t.side}</td>',
            f'<td class="l">{_iso(t.entry_time)}</td>', f"<td>{_e(t.entry_price.normalize())}</td>",
            f"<td>{_e(t.qty.normalize())}</td>", f'<td class="l">{_iso(t.exit_time)}</td>',
            f"<td>{_e(t.exit_price.quantize(Decimal('0.0001')).normalize())}</td>", f'<td class="l">{t.exit_reason}</td>',
            f"<td>{_money(t.realized_pnl)}</td>", f"<td>{_money(t.fees)}</td>", f"<td>{_money(t.funding)}</td>",
            f'<td class="{cls}">{_money(t.net_pnl)}</td>', f'<td class="l">{t.status}</td>']) + "</tr>")
    return ("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>" + "".join(rows) + "</table>"
            if rows else "<p>No trades.</p>")


def render(run: dict, summary: Summary, equity: list[EquityPoint]) -> str:
    k = summary.kpis
    eq, dd, ex = _curves(equity)
    checks = "".join(
        f'<tr><td class="l">{_e(c["check"])}</td><td>{_e(c["expected"])}</td><td>{_e(c["actual"])}</td>'
        f'<td class="{"ok" if c["ok"] else "bad"}">{"holds" if c["ok"] else "DIFFERS"}</td></tr>'
        for c in summary.checks)
    by_symbol: dict[str, list[Trade]] = {}
    for t in summary.trades:
        by_symbol.setdefault(t.symbol, []).append(t)
    per_symbol = _kv([(s, f"{len(ts)} trades, net {_money(sum((t.net_pnl for t in ts), Decimal(0)))} USDT, "
                          f"fees {_money(sum((t.fees for t in ts), Decimal(0)))}, "
                          f"funding {_money(sum((t.funding for t in ts), Decimal(0)))}")
                      for s, ts in sorted(by_symbol.items())])
    return "".join([
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Chimera backtest {_e(run['run_id'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Backtest {_e(run['run_id'])}: {_e(run['bundle_id'])} rev {run['bundle_rev']}</h1>",
        f"<p>{_e(_iso(k['start_ms']))} → {_e(_iso(k['end_ms']))} UTC · {k['bars']} bars · symbols "
        f"{_e(', '.join(run['symbols']))} · data sha256 {_e(run['data_hash'][:16])}… · fill model: "
        f"{_e(run['fill_model'])} (docs/fill_model.md)</p>",
        "<h2>Result</h2>", _kv([
            ("net PnL (USDT)", k["net_pnl_usdt"]), ("return", k["return_pct"] + " %"),
            ("max drawdown", f"{k['max_drawdown_usdt']} USDT ({k['max_drawdown_pct']} %)"),
            ("trades (closed / open)", f"{k['trades']} ({k['closed_trades']} / {k['open_trades']})"),
            ("win rate", k["win_rate_pct"] + " %"), ("profit factor", k["profit_factor"] or "n/a"),
            ("realized PnL (USDT)", k["realized_pnl_usdt"]), ("fees (USDT)", k["fees_usdt"]),
            ("funding (USDT)", k["funding_usdt"]), ("time with exposure", k["exposure_time_pct"] + " %"),
            ("largest exposure (USDT notional)", k["max_exposure_usdt"]),
            ("wallet start → end (USDT)", f"{k['start_wallet_usdt']} → {k['end_wallet_usdt']}"),
            ("liquidations", str(k["liquidations"])), ("venue fills", str(k["venue_fills"])),
            ("dead letters", str(k["dead_letters"]))]),
        "<h2>Equity</h2>", svg_line(eq, "equity (wallet + unrealized, USDT)", "#1f6feb"),
        "<h2>Drawdown</h2>", svg_line(dd, "drawdown from peak (USDT)", "#c62828", fill="top"),
        "<h2>Exposure</h2>", svg_line(ex, "open position notional (USDT)", "#8250df", fill="bottom"),
        "<h2>Books</h2><table><tr><th class='l'>identity</th><th>expected</th><th>actual</th><th></th></tr>",
        checks, "</table>",
        "<h2>By symbol</h2>", per_symbol,
        "<h2>Trades</h2>", _trades_table(summary.trades),
        "<p>Fees and funding are the venue's. A trade still open at the end is valued at the last mark "
        "(END_OF_DATA). Chimera backtest report; no network needed to read it.</p></body></html>",
    ])
