"""``chimera experiments run``: bundle variants through the in-process backtest, walked forward with S9's
statistics. Checked against what the experiment does not compute itself: a separate ``chimera backtest`` of
a variant file the test writes by hand, the backtest's own KPIs (the period returns must compound to its net
return), and each fold's choice recomputed here from the stored returns (Sharpe by hand)."""

from __future__ import annotations

import json
import math
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from chimera.backtest.service import backtest
from chimera.handlers.experiments.bundles import Windows, period_returns, run_experiment, save
from chimera.store import open_store
from chimera.store.collections import EXPERIMENTS, HYPOTHESES

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "chimera" / "bundles" / "sample_vol_breakout.json"
BTC = str(REPO / "chimera" / "venues" / "local" / "data" / "BTC_USDT_USDT-1m-futures.feather")
WINDOW = ("2025-07-06", "2025-07-08")
RULES = ["rv_15 > rv_60 and atr_pct > 0.0005", "rv_15 > rv_60 and atr_pct > 0.0007"]
VARY = "strategy.entry.long_when=" + ",".join(json.dumps(r) for r in RULES)
WIN = Windows(train_h=12, test_h=6, horizon_h=1, period_min=15)


@pytest.fixture(scope="module")
def doc():
    return run_experiment(str(BUNDLE), [VARY], [BTC], *WINDOW, windows=WIN, reps=200)


def test_each_variant_is_the_backtest_of_that_bundle(doc, tmp_path):
    body = json.loads(BUNDLE.read_text())
    body["strategy"]["entry"]["long_when"] = RULES[0]
    path = tmp_path / "variant.json"
    path.write_text(json.dumps(body))
    alone = backtest(str(path), [BTC], *WINDOW).summary.kpis
    variants = {v["variant"]: v for v in doc["variants"]}
    mine = variants[f"strategy.entry.long_when={json.dumps(RULES[0])}"]["backtest_kpis"]
    assert (mine["net_pnl_usdt"], mine["trades"], mine["fees_usdt"]) == (alone["net_pnl_usdt"], alone["trades"],
                                                                         alone["fees_usdt"])
    base = variants["base"]["backtest_kpis"]
    assert base["trades"] != mine["trades"]  # the looser rule really trades differently
    for v in doc["variants"]:  # the period returns compound to the backtest's own net return
        k = v["backtest_kpis"]
        want = float(k["end_equity_usdt"]) / float(k["start_wallet_usdt"]) - 1
        assert math.isclose(float(np.prod(1 + np.asarray(v["period_returns"])) - 1), want, abs_tol=1e-12)


def sharpe(r: np.ndarray) -> float:
    if r.size < 2 or r.std(ddof=1) == 0:
        return -math.inf
    return r.mean() / r.std(ddof=1)


def test_walk_forward_purges_by_the_horizon_and_chooses_on_train(doc):
    starts = np.asarray(doc["period_starts"])
    series = {v["variant"]: np.asarray(v["period_returns"]) for v in doc["variants"]}
    folds = doc["folds"]
    assert len(folds) == 5  # 48 h of bars: train 12 h + test 6 h, a fold every 6 h
    for f in folds:
        assert f["test_start"] - f["train_end"] == 3_600_000 and f["test_end"] - f["test_start"] == 6 * 3_600_000
    [res] = doc["results"]
    assert res["trials"] == len(RULES) * len(folds) == doc["trials"]
    for f, chosen in zip(folds, res["chosen"], strict=True):
        train = (starts >= f["train_start"]) & (starts < f["train_end"])
        scores = [sharpe(series[f"strategy.entry.long_when={json.dumps(rule)}"][train]) for rule in RULES]
        assert chosen == {"strategy.entry.long_when": RULES[int(np.argmax(scores))]}
    n_test = sum(int(((starts >= f["test_start"]) & (starts < f["test_end"])).sum()) for f in folds)
    assert res["kpis"]["n"] == doc["incumbent"]["kpis"]["n"] == n_test
    assert res["verdict"] in ("CONFIRMED", "REJECTED") and res["reasons"]
    if res["verdict"] == "CONFIRMED":
        assert res["q"] <= 0.05 and res["dsr"] >= 0.95


def test_saved_documents(doc):
    store = open_store("sqlite://:memory:")
    save(doc, store, now_ms=1)
    got = store.get(EXPERIMENTS, doc["experiment_id"])
    assert got["results"] == doc["results"] and got["kind"] == "bundle"
    [h] = store.query(HYPOTHESES, {"family": doc["family"]})
    assert (h["status"], h["grid"]) == (doc["results"][0]["verdict"], {"strategy.entry.long_when": RULES})


def test_period_returns_by_hand():
    pts = [(0, 100.0), (60_000, 101.0), (120_000, 99.0), (180_000, 99.0)]
    t, r = period_returns(pts, 0, 240_000, 120_000)  # periods [0,2m) and [2m,4m)
    assert t.tolist() == [0, 120_000]
    assert np.allclose(r, [99 / 100 - 1, 0.0])


def cli(tmp: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CHIMERA_STORE_URL": f"sqlite:///{tmp}/store.sqlite", "CHIMERA_OBJECTS_URL": f"file://{tmp}/o"}
    return subprocess.run([sys.executable, "-m", "chimera.ops.cli", "experiments", "run", "--bundle", str(BUNDLE),
                           "--data", BTC, "--from", WINDOW[0], "--to", WINDOW[1], *args], env=env,
                          capture_output=True, text=True, timeout=600, cwd=tmp)


@pytest.mark.parametrize(("vary", "says"), [
    ("strategy.sizng.tp_atr=1,2", "the bundle has no object 'strategy.sizng'"),
    ("strategy.sizing.tp_atr", "expected key=v1,v2"),
    ('strategy.entry.long_when="rv_15 >>> 1"', "S3 refuses the variant"),
])
def test_bad_input_is_refused_before_anything_runs(tmp_path, vary, says):
    p = cli(tmp_path, "--vary", vary)
    assert p.returncode == 2 and says in p.stderr, p.stderr
    db = tmp_path / "store.sqlite"
    if db.exists():
        con = sqlite3.connect(db)
        assert not con.execute("select 1 from sqlite_master where name='c_experiments'").fetchone() or \
            not con.execute("select count(*) from c_experiments").fetchone()[0]
