"""``chimera backtest`` as a user runs it: the real handlers over the shipped real data, in event time.

Checked against sources the backtest does not compute: the kline file itself (read here with
pandas: every fill price must lie in its bar's range, widened by at most the documented spread and
impact), a second process (byte-identical documents and report) and the store's documents.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import pandas as pd
import pytest

from chimera.backtest.data import DataError, load
from tests.support.market_data import market_data

REPO = Path(__file__).resolve().parents[2]
BUNDLE = str(REPO / "chimera" / "bundles" / "sample_vol_breakout.json")
SAMPLE = REPO / "chimera" / "venues" / "local" / "data"
WINDOW = ("2025-07-06", "2025-07-07")  # the sample bundle trades ETH and BTC on that day


def chimera(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHIMERA_STORE_URL": f"sqlite:///{tmp}/store.sqlite", "CHIMERA_OBJECTS_URL": f"file://{tmp}/objects"}
    return subprocess.run([sys.executable, "-m", "chimera.ops.cli", *args], env=env, capture_output=True, text=True,
                          timeout=900, cwd=tmp)


def docs(tmp: Path, coll: str) -> list[dict]:
    db = tmp / "store.sqlite"
    if not db.exists():
        return []
    con = sqlite3.connect(db)
    try:
        if not con.execute("select 1 from sqlite_master where name=?", (f"c_{coll}",)).fetchone():
            return []
        return [json.loads(d) for (d,) in con.execute(f"select doc from c_{coll} order by k")]
    finally:
        con.close()


def test_backtest_runs_the_handlers_deterministically_and_writes_run_trades_report(tmp_path):
    runs = [tmp_path / "a", tmp_path / "b"]
    for d in runs:
        d.mkdir()
    args = ("backtest", "--bundle", BUNDLE, "--data", "sample", "--from", WINDOW[0], "--to", WINDOW[1],
            "--report", "report.html")
    with ThreadPoolExecutor(2) as pool:  # two processes: different hash seeds, same bytes expected
        a, b = pool.map(lambda d: chimera(d, *args), runs)
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr

    run_a, run_b = docs(runs[0], "backtest_runs"), docs(runs[1], "backtest_runs")
    assert len(run_a) == 1 and run_a == run_b
    trades_a = docs(runs[0], "backtest_trades")
    assert trades_a == docs(runs[1], "backtest_trades")
    html = (runs[0] / "report.html").read_bytes()
    assert html == (runs[1] / "report.html").read_bytes()
    run = run_a[0]
    assert html == (runs[0] / "objects" / run["report_key"]).read_bytes()

    # The report opens without a network: no script, no external reference; curves are inline SVG.
    text = html.decode()
    assert "<script" not in text and "http://" not in text and "https://" not in text
    assert text.count("<svg") == 3 and "Trades" in text

    k = run["kpis"]
    assert k["trades"] == len(trades_a) >= 2 and k["dead_letters"] == 0 and k["bars"] == 2 * 1440
    checks = {c["id"]: c for c in run["checks"]}
    assert checks["venue_identity"]["ok"] and checks["fills_one_to_one"]["ok"], run["checks"]
    # Σ venue fills' realized − fees + funding = the wallet change = the sum over the round trips.
    net = sum(Decimal(t["net_pnl"]) for t in trades_a if t["status"] == "CLOSED")
    assert Decimal(checks["venue_identity"]["expected"]) == net == Decimal(k["net_pnl_usdt"]), (net, k)
    assert run["bundle_id"] == "sample_vol_breakout" and len(run["data_hash"]) == 64
    assert f"run                    {run['run_id']}" in a.stdout and "books: venue wallet change" in a.stdout

    # Every fill lies inside its 1m bar as the kline file says, widened by the documented synthetic
    # half spread (1 bp, rounded to the tick) and the impact on these small orders (< 1 bp).
    bars = {}
    for sym, coin in (("BTCUSDT", "BTC"), ("ETHUSDT", "ETH")):
        df = pd.read_feather(SAMPLE / f"{coin}_USDT_USDT-1m-futures.feather")
        t = (df["date"].astype("int64") // 1_000_000).tolist()
        bars[sym] = dict(zip(t, zip(df["low"].tolist(), df["high"].tolist(), strict=True), strict=True))
    for tr in trades_a:
        for when, price in ((tr["entry_time"], tr["entry_price"]), (tr["exit_time"], tr["exit_price"])):
            low, high = bars[tr["symbol"]][when // 60_000 * 60_000]
            p = float(Decimal(price))
            assert low * (1 - 0.0003) - 0.1 <= p <= high * (1 + 0.0003) + 0.1, (tr, low, high)
        assert Decimal(tr["fees"]) > 0 and tr["entry_time"] <= tr["exit_time"]

    shown = chimera(runs[0], "report", "--run", run["run_id"], "--html", "again.html")
    # Exit 1 while an identity differs (the store side needs S6's realized PnL, fees and funding).
    assert shown.returncode == (0 if all(c["ok"] for c in run["checks"]) else 1), shown.stderr
    assert ("DIFFERS" in shown.stdout) == (not all(c["ok"] for c in run["checks"]))
    assert (runs[0] / "again.html").read_bytes() == html and "books: venue wallet change" in shown.stdout


def _vision_zip(path: Path, minutes: list[int]) -> None:
    t0 = 1_577_836_800_000  # 2020-01-01
    rows = [f"{t0 + m * 60_000},7195.24,7196.25,7183.14,7186.68,51.6,{t0 + m * 60_000 + 59_999},0,0,0,0,0"
            for m in minutes]
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(path.with_suffix(".csv").name, "\n".join(rows) + "\n")


@pytest.mark.parametrize("case", ["spec", "missing", "gap", "from_to", "bundle_json", "bundle_rule", "no_bars"])
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path, case):
    bundle, data, extra = BUNDLE, ["sample"], []
    if case == "spec":
        (tmp_path / "prices.txt").write_text("1,2,3\n")
        data, expect = ["prices.txt"], ["prices.txt", "cannot tell what this file holds"]
    elif case == "missing":
        data, expect = ["vision_klines:futures:BTCUSDT:nowhere.zip"], ["nowhere.zip does not exist"]
    elif case == "gap":
        _vision_zip(tmp_path / "BTCUSDT-1m-2020-01-01.zip", [0, 1, 3, 4])
        data, expect = ["BTCUSDT-1m-2020-01-01.zip"], ["gap in BTCUSDT 1m bars", "2020-01-01T00:01 is followed by "
                                                       "2020-01-01T00:03", "line 3"]
    elif case == "from_to":
        extra, expect = ["--from", "2025-07-08", "--to", "2025-07-07"], ["--from 2025-07-08 is after --to 2025-07-07"]
    elif case == "bundle_json":
        bundle = str(tmp_path / "b.json")
        Path(bundle).write_text('{"strategy": {\n  "symbols": [BTCUSDT]}}')
        expect = ["b.json", "line 2 column"]
    elif case == "bundle_rule":
        body = json.loads(Path(BUNDLE).read_text())
        body["strategy"]["entry"]["long_when"] = "rv_15 >> 3"
        bundle = str(tmp_path / "b.json")
        Path(bundle).write_text(json.dumps(body))
        expect = ["b.json", "fails lint", "strategy.entry.long_when (line 1 column", "'>>' is not allowed"]
    else:
        extra, expect = ["--from", "2030-01-01"], ["no bars between --from 2030-01-01"]
    out = chimera(tmp_path, "backtest", "--bundle", bundle, *sum((["--data", d] for d in data), []), *extra)
    assert out.returncode == 2, out.stdout + out.stderr
    for fragment in expect:
        assert fragment in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert docs(tmp_path, "backtest_runs") == [] and docs(tmp_path, "backtest_trades") == []
    assert not (tmp_path / "objects" / "backtests").exists()


def test_binance_vision_zips_of_consecutive_days_load_as_one_series():
    days = [str(market_data("binance_vision", "spot", "daily", "klines", "BTCUSDT", "1m", f"BTCUSDT-1m-2020-01-0{d}.zip"))
            for d in (1, 2)]
    ds = load(days)
    assert ds.symbols == ["BTCUSDT"] and ds.bars == 2 * 1440
    assert (ds.start_ms, ds.end_ms) == (1_577_836_800_000, 1_577_836_800_000 + 2 * 86_400_000 - 1)
    with pytest.raises(DataError, match="appears twice"):
        load([days[0], days[0].replace("klines/BTCUSDT", "klines/BTCUSDT/../BTCUSDT")])
