"""The chaos drill on two accounts (main and sub1) at once: both trade both symbols under the same
kills and venue faults, and nothing ever lands on the other account.

The cross-account figure is read from the venue's own books (each order carries the account that
placed it), the per-account quantities from each account's venue position; S5 must end consistent
for each account separately.
"""

from __future__ import annotations

import pytest

from chimera.ops.tools.drill import run_drill
from tests.e2e.test_drill import assert_books_printed, ci_config

pytestmark = pytest.mark.timeout(300)


def test_drill_with_two_accounts_has_no_cross_account_order(redis_server, tmp_path):
    report = run_drill(ci_config(tmp_path, redis_url=redis_server.url, flush=True, accounts=2))
    print(report.text())
    assert report.ok, report.failures
    res = report.resolution
    assert not res.lost and len(res.filled) + sum(res.rejected.values()) + sum(res.skipped.values()) == 80
    assert report.orders.duplicates == 0 and not report.orders.missing and not report.orders.phantom
    assert not report.protection.uncovered and report.time_to_consistent_s is not None
    assert sum(report.kills.values()) >= 5 and report.faults.get("error_5xx", 0) > 0
    assert report.accounts == ("main", "sub1")
    assert report.cross_account == [] and report.quantity_mismatches == []
    # The vpos role ran under the chaos too: per account, symbol and side its virtual positions add up
    # to the venue's own position.
    assert report.virtual_gaps == []
    # Both accounts really traded, both symbols (the drill bundle stacks positions in one direction).
    assert report.filled_by_account.get("main", 0) >= 10 and report.filled_by_account.get("sub1", 0) >= 10
    assert {a for a, run in report.final_runs.items() if run["consistent"] and not run["deferred"]} == {"main", "sub1"}
    assert {run["summary"]["account_id"] for run in report.final_runs.values()} == {"main", "sub1"}
    # Each account holds positions of its own at the venue (the protection check covered each).
    assert {k.split(":")[0] for k in report.protection.positions} == {"main", "sub1"}
    assert_books_printed(report)
