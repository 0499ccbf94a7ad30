"""The Prometheus rules: syntax (``promtool check rules``) and behaviour (``promtool test rules`` on
deploy/prometheus/tests/*.yaml), plus: a failing expectation is reported as a failure (the harness
can fail), and the PrometheusRule shipped to Kubernetes carries exactly the same groups."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "chimera-rules.yaml"
TESTS = sorted((ROOT / "deploy" / "prometheus" / "tests").glob("*.yaml"))
PROMTOOL = shutil.which("promtool") or "/usr/bin/promtool"

pytestmark = pytest.mark.skipif(not Path(PROMTOOL).exists(), reason="promtool is not installed (apt-get install prometheus)")


def promtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=120)


def test_rules_are_valid():
    got = promtool("check", "rules", str(RULES))
    assert got.returncode == 0, got.stdout + got.stderr
    assert "SUCCESS" in got.stdout


@pytest.mark.parametrize("case", TESTS, ids=[p.name for p in TESTS])
def test_rule_unit_tests(case):
    got = promtool("test", "rules", str(case))
    assert got.returncode == 0, got.stdout + got.stderr


def test_a_wrong_expectation_fails(tmp_path):
    doc = yaml.safe_load(TESTS[0].read_text())
    doc["rule_files"] = [str(RULES)]
    doc["tests"][0]["alert_rule_test"][0]["exp_alerts"] = [{"exp_labels": {"severity": "critical"}}]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    got = promtool("test", "rules", str(bad))
    assert got.returncode != 0 and "FAILED" in got.stdout + got.stderr


def test_prometheusrule_matches_the_rule_file():
    crd = yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml").read_text())
    assert crd["kind"] == "PrometheusRule" and crd["apiVersion"] == "monitoring.coreos.com/v1"
    assert crd["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
