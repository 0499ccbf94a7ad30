"""The autopsy as one self-contained HTML page: inline CSS and SVG, no script, no external request.
Same report in, same bytes out (sorted keys, fixed number formats, no timestamps of rendering)."""

from __future__ import annotations

import html
from datetime import UTC, datetime

MAX_BYTES = 300_000
STYLE = ("body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#1b1f24;max-width:1000px}"
         "h1{font-size:20px}h2{font-size:16px;margin-top:24px}table{border-collapse:collapse}"
         "td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:right}th{background:#f6f8fa}"
         "td:first-child,th:first-child{text-align:left}.tldr{background:#f6f8fa;padding:10px;border-left:4px solid #0969da}")


def _ts(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if ms else "-"


def _e(x) -> str:
    return html.escape("-" if x is None else str(x))


def _table(rows: list[tuple], head: tuple) -> str:
    h = "".join(f"<th>{_e(c)}</th>" for c in head)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{h}</tr>{body}</table>"


def svg_curve(curve: list[tuple[int, float]], w: int = 900, h: int = 240) -> str:
    if len(curve) < 2:
        return "<p>no curve (fewer than two points)</p>"
    # Thin long curves to at most 1500 points so a multi-day trade stays well under the size cap.
    step = max(1, len(curve) // 1500)
    pts = curve[::step] if curve[-1] in curve[::step] else [*curve[::step], curve[-1]]
    t0, t1 = pts[0][0], pts[-1][0]
    lo, hi = min(0.0, *(v for _, v in pts)), max(0.0, *(v for _, v in pts))
    span_t, span_v = (t1 - t0) or 1, (hi - lo) or 1.0
    pad = 40
    x = lambda t: pad + (t - t0) / span_t * (w - 2 * pad)  # noqa: E731
    y = lambda v: pad / 2 + (hi - v) / span_v * (h - pad)  # noqa: E731
    path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in pts)
    zero = y(0.0)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img" '
            f'aria-label="ROE curve"><rect width="{w}" height="{h}" fill="#fff"/>'
            f'<line x1="{pad}" x2="{w - pad}" y1="{zero:.1f}" y2="{zero:.1f}" stroke="#8c959f" stroke-dasharray="4"/>'
            f'<polyline fill="none" stroke="#0969da" stroke-width="1.5" points="{path}"/>'
            f'<text x="4" y="14" font-size="11">{hi * 100:+.2f}%</text>'
            f'<text x="4" y="{h - 22}" font-size="11">{lo * 100:+.2f}%</text>'
            f'<text x="{pad}" y="{h - 6}" font-size="11">{_e(_ts(t0))}</text>'
            f'<text x="{w - pad}" y="{h - 6}" font-size="11" text-anchor="end">{_e(_ts(t1))}</text></svg>')


def render(r: dict) -> str:
    t = r["tca"]
    sf = t.get("shortfall_usdt") or {}
    summary = [("symbol", r["symbol"]), ("side", r["side"]), ("opened", _ts(r["opened_at"])),
               ("closed", _ts(r["closed_at"])), ("close reason", r.get("close_reason")), ("net PnL (USDT)", r["net_pnl"]),
               ("ROI net (of notional)", r["roi_net"]), ("fees (USDT)", r["fees"]), ("funding (USDT)", r["funding"]),
               ("Sharpe, per-minute returns annualised over 365 days", r["risk"].get("sharpe_365")),
               ("Sortino, same basis", r["risk"].get("sortino_365")),
               ("max drawdown of the position's value", r["risk"].get("max_drawdown")),
               ("minutes held", r["risk"].get("minutes"))]
    tca_rows = [(k, t.get(k)) for k in ("decision_mid", "mid_at_send", "entry_vwap", "exit_vwap", "slippage_vs_decision_bp",
                                        "slippage_vs_send_bp", "exit_slippage_vs_send_bp", "maker_share", "taker_share")]
    sf_rows = [(k, sf.get(k)) for k in ("delay", "spread_impact", "fees", "funding")] + [("total", t.get("shortfall_total_usdt"))]
    mk = r["markouts"]
    mk_rows = [(leg, *(mk[leg].get(n) for n in ("1m", "5m", "30m", "1h"))) for leg in ("entry", "exit")]
    peer_rows = [(k, v["n"], v["percentile"], v["median_roi"]) for k, v in sorted(r["peers"].items())]
    cf_rows = sorted(r["counterfactuals"].items())
    parts = [
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
        f"<title>Autopsy {_e(r['trade_id'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>Trade autopsy: {_e(r['trade_id'])}</h1>",
        f"<p class=\"tldr\">{_e(r['tldr'])}</p>",
        "<h2>Summary</h2>", _table(summary, ("", "value")),
        "<h2>ROE over the trade's life</h2>", svg_curve([tuple(p) for p in r["roe_curve"]]),
        "<h2>Transaction costs</h2>", _table(tca_rows, ("", "value")),
        "<h2>Implementation shortfall (USDT, cost positive)</h2>", _table(sf_rows, ("part", "USDT")),
        "<h2>Markouts (bp, positive = in the trade's favour)</h2>", _table(mk_rows, ("leg", "+1m", "+5m", "+30m", "+1h")),
        "<h2>Peers (closed trades)</h2>", _table(peer_rows, ("group", "n", "percentile of ROI", "median ROI")),
        "<h2>Counterfactuals (ROI net of notional)</h2>", _table(cf_rows, ("what if", "ROI")),
        f"<p>signal {_e(r.get('signal_id'))}, bundle {_e(r.get('bundle_id'))}, regime {_e(r.get('regime'))}</p>",
        "</body></html>\n",
    ]
    return "".join(parts)
