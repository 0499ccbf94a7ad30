"""A failed books check prints S1's and S6's last log lines (their last words on a report that did not
reach the books)."""

from __future__ import annotations

from chimera.ops.tools.drill import _log_tail


def test_the_last_lines_of_each_named_log_and_a_missing_log_said_so(tmp_path):
    (tmp_path / "s1.log").write_text("".join(f"line {i}\n" for i in range(30)))
    assert _log_tail(tmp_path, ("s1", "s6"), 3) == ["s1.log: line 27", "s1.log: line 28", "s1.log: line 29",
                                                     "s6.log: (no log)"]
