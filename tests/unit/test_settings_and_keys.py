from __future__ import annotations

import pytest

from chimera.errors import FatalError
from chimera.ops.settings import load_settings
from chimera.streams import keys
from chimera.streams.redis import keyslot
from chimera.workers.registry import find_role, load_spec


def test_defaults_are_valid():
    s = load_settings({})
    assert s.venue == "paper" and s.store_url.startswith("sqlite:///") and not s.redis_cluster


@pytest.mark.parametrize("env, needle", [
    ({"CHIMERA_REDIS_URL": "http://x"}, "CHIMERA_REDIS_URL"),
    ({"CHIMERA_STORE_URL": "mysql://x"}, "CHIMERA_STORE_URL"),
    ({"CHIMERA_OBJECTS_URL": "ftp://x"}, "CHIMERA_OBJECTS_URL"),
    ({"CHIMERA_VENUE": "moon"}, "paper, testnet, live"),
    ({"CHIMERA_MAX_ATTEMPTS": "many"}, "CHIMERA_MAX_ATTEMPTS"),
    ({"CHIMERA_SYMBOLS": " , "}, "CHIMERA_SYMBOLS"),
])
def test_bad_settings_name_the_variable(env, needle):
    with pytest.raises(FatalError, match=needle):
        load_settings(env)


def test_cluster_url():
    s = load_settings({"CHIMERA_REDIS_URL": "redis+cluster://10.0.0.1:7000/0"})
    assert s.redis_cluster and s.redis_url == "redis://10.0.0.1:7000/0"


def test_keys_that_change_together_share_a_slot():
    assert keyslot(keys.RISK_BUDGET_INUSE) == keyslot(keys.risk_concurrency("BTCUSDT"))
    assert keyslot(keys.lock_pos("p1")) == keyslot(keys.fence_key(keys.lock_pos("p1")))
    assert keyslot(keys.SCHED_DUE) == keyslot(keys.SCHED_PAYLOADS)
    assert keys.mkt_stream("perp", "BTCUSDT") == "mkt:events:{perp}:BTCUSDT"
    assert keys.lock_treasury("MAIN", "UMFUTURE") == "lock:{treasury}:MAIN:UMFUTURE"


def test_roles_and_aliases():
    assert find_role("router").code == "s4" and find_role("S2").code == "s2"
    with pytest.raises(FatalError, match="unknown role"):
        find_role("s99")
    assert load_spec("noop").role == "noop"


def test_bundle_param_reads_flat_then_nested_and_parses_by_the_default_type():
    from decimal import Decimal
    from types import MappingProxyType

    import pytest

    from chimera.errors import PermanentError
    from chimera.workers.config import ActiveConfig

    cfg = ActiveConfig("b", 1, MappingProxyType({"router.maker_wait_ms": "250", "router": {"maker_wait_ms": 9,
                                                 "twap": "false", "tick": "0.5", "bad": "x"}}))
    assert cfg.param("router", "maker_wait_ms", 3000) == 250  # the flat key wins
    assert cfg.param("router", "twap", True) is False  # bool("false") would be True
    assert cfg.param("router", "tick", Decimal("1")) == Decimal("0.5")
    assert cfg.param("router", "missing", 7) == 7
    assert cfg.param("positions", "anything", 1.5) == 1.5
    with pytest.raises(PermanentError, match=r"router\.bad='x': expected int"):
        cfg.param("router", "bad", 1)
