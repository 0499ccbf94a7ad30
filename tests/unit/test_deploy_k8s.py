"""Kubernetes manifests: the generated base is up to date, the paper overlay renders (a small
kustomize-equivalent below, cross-checked with ``kubectl kustomize`` when kubectl is installed) and
every core resource validates against the Kubernetes 1.37 schemas with ``kubernetes-validate
--strict``; the Prometheus Operator resources are checked by hand (no schema ships for CRDs)."""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from chimera.workers.registry import ROLES

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
K8S_VERSION = "1.37.0"


def _module(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem + "_gen", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _merge(base: dict, patch: dict) -> dict:
    """Strategic merge for what the overlay patches (maps merge, scalars and lists replace)."""
    out = copy.deepcopy(base)
    for k, v in patch.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _json_patch(doc: dict, ops: list[dict]) -> None:
    for op in ops:
        assert op["op"] == "replace", op
        *path, last = [p for p in op["path"].split("/") if p]
        node = doc
        for p in path:
            node = node[p]
        node[last] = op["value"]


def render(directory: Path) -> list[dict]:
    """The subset of kustomize this repo uses: resources, namespace, labels, images, patches."""
    k = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for res in k.get("resources", []):
        path = directory / res
        docs += render(path) if path.is_dir() else [d for d in yaml.safe_load_all(path.read_text()) if d]
    for label in k.get("labels", []):
        for d in docs:
            d.setdefault("metadata", {}).setdefault("labels", {}).update(label["pairs"])
    for img in k.get("images", []):
        for d in docs:
            for c in d.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if c["image"] == img["name"]:
                    c["image"] = f"{img.get('newName', img['name'])}:{img['newTag']}"
    for p in k.get("patches", []):
        if "path" in p:
            patch = yaml.safe_load((directory / p["path"]).read_text())
            for i, d in enumerate(docs):
                if (d["kind"], d["metadata"]["name"]) == (patch["kind"], patch["metadata"]["name"]):
                    docs[i] = _merge(d, patch)
        else:
            target = p["target"]
            for d in docs:
                if d["kind"] == target["kind"] and re.fullmatch(target["name"], d["metadata"]["name"]):
                    _json_patch(d, yaml.safe_load(p["patch"]))
    if "namespace" in k:
        for d in docs:
            if d["kind"] != "Namespace":
                d["metadata"]["namespace"] = k["namespace"]
    return docs


def by_kind(docs: list[dict], kind: str) -> dict[str, dict]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def test_generated_files_are_up_to_date():
    for name, text in _module(K8S / "generate.py").render().items():
        assert (K8S / "base" / name).read_text() == text, f"deploy/k8s/base/{name} is stale: python deploy/k8s/generate.py"
    grafana = ROOT / "deploy" / "grafana"
    for name, text in _module(grafana / "generate.py").render().items():
        assert (grafana / name).read_text() == text, f"deploy/grafana/{name} is stale: python deploy/grafana/generate.py"


@pytest.fixture(scope="module")
def paper() -> list[dict]:
    return render(K8S / "overlays" / "paper")


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed: the python renderer alone")
def test_renderer_agrees_with_kubectl_kustomize(paper):
    got = subprocess.run(["kubectl", "kustomize", str(K8S / "overlays" / "paper")], capture_output=True, text=True,
                         timeout=120)
    assert got.returncode == 0, got.stderr
    theirs = [d for d in yaml.safe_load_all(got.stdout) if d]
    key = lambda d: (d["kind"], d["metadata"]["name"])  # noqa: E731
    assert sorted(map(key, theirs)) == sorted(map(key, paper))
    ours = {key(d): d for d in paper}
    for d in theirs:
        assert d == ours[key(d)], f"{key(d)} differs between kubectl kustomize and the test renderer"


def test_every_core_resource_validates_strictly(paper):
    checked = 0
    for doc in paper + render(K8S / "base"):
        if doc["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)  # raises ValidationError with the path
        checked += 1
    assert checked >= 30


def test_a_bad_manifest_is_rejected(paper):
    bad = copy.deepcopy(by_kind(paper, "Deployment")["chimera-s4"])
    bad["spec"]["replicas"] = "three"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, K8S_VERSION, strict=True)


def test_paper_overlay_shape(paper):
    deployments, services = by_kind(paper, "Deployment"), by_kind(paper, "Service")
    workers = {r.code for r in ROLES if r.code not in ("noop", "sqlite-bench")}
    # Paper mode is the whole system on fake money: every built role, research and config included.
    assert {"scheduler", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "s12",
            "notifier"} <= workers
    assert {f"chimera-{c}" for c in workers} | {"chimera-venue", "chimera-redis"} == set(deployments)
    assert set(deployments) == set(services)
    assert all(d["metadata"]["namespace"] == "chimera-paper" for d in paper if d["kind"] != "Namespace")
    assert deployments["chimera-scheduler"]["spec"]["replicas"] == 2  # one active, one standby
    assert deployments["chimera-s4"]["spec"]["replicas"] == 1
    assert deployments["chimera-s9"]["spec"]["replicas"] == 1  # one trial walker is enough on paper
    for name, d in deployments.items():
        pod = d["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False, name
            assert "readinessProbe" in c and c["resources"]["limits"]["memory"], name
            if name.startswith("chimera-") and name not in ("chimera-venue", "chimera-redis"):
                assert c["image"] == "ghcr.io/chimera/chimera:0.1.0" and c["args"][:2] == ["chimera-worker", "--role"]
                assert {"configMapRef": {"name": "chimera-config"}} in c["envFrom"]
    cfg = by_kind(paper, "ConfigMap")["chimera-config"]["data"]
    assert cfg["CHIMERA_VENUE"] == "paper" and cfg["CHIMERA_VENUE_URL"] == "http://chimera-venue:8765"
    secrets = by_kind(paper, "Secret")
    assert json.loads(secrets["chimera-accounts"]["stringData"]["accounts.json"])["accounts"][0]["account_id"] == "main"
    assert "REPLACE_ME" not in secrets["chimera-secrets"]["stringData"]["CHIMERA_MAIN_API_KEY"]
    # The gateway's signing key: paper generates one per pod (so one replica); the base ships the
    # placeholder the gateway refuses, never a key in git.
    assert secrets["chimera-secrets"]["stringData"]["CHIMERA_JWT_SECRET"] == ""
    assert deployments["chimera-s12"]["spec"]["replicas"] == 1
    s12 = deployments["chimera-s12"]["spec"]["template"]["spec"]["containers"][0]
    secrets_file = next(e["value"] for e in s12["env"] if e["name"] == "CHIMERA_SECRETS_FILE")
    assert any(secrets_file.startswith(m["mountPath"] + "/") for m in s12["volumeMounts"] if not m.get("readOnly"))
    base = by_kind(render(K8S / "base"), "Secret")["chimera-secrets"]["stringData"]
    assert base["CHIMERA_JWT_SECRET"] == "REPLACE_ME"


def test_monitoring_resources(paper):
    sm = by_kind(paper, "ServiceMonitor")["chimera"]
    selector = sm["spec"]["selector"]["matchLabels"]
    monitored = [s for s in by_kind(paper, "Service").values()
                 if all(s["metadata"].get("labels", {}).get(k) == v for k, v in selector.items())]
    assert len(monitored) >= 10 and all(any(p["name"] == "metrics" for p in s["spec"]["ports"]) for s in monitored)
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    rule = by_kind(paper, "PrometheusRule")["chimera"]
    alerts = {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}
    assert {"ChimeraHealthRed", "ChimeraHealthStale", "ChimeraDeadLetters", "ChimeraWorkerDown"} <= alerts
    dashboards = by_kind(paper, "ConfigMap")["chimera-grafana-dashboards"]
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert {"chimera-overview.json", "chimera-execution.json", "chimera-risk.json", "chimera-account.json"} == \
        set(dashboards["data"])
