"""Writes the kustomize base (deploy/k8s/base) from one table of roles, the rule file and the
Grafana dashboards, so the Deployments, the PrometheusRule and the dashboards ConfigMap never drift
from their sources.  ``python deploy/k8s/generate.py``, then commit; tests/unit/test_deploy_k8s.py
fails when the committed files are out of date.

The base expects a Redis Cluster, ArangoDB and MinIO reachable at the ConfigMap's URLs (run them
with their own operators or charts), Prometheus Operator CRDs (kube-prometheus-stack) and a
Secret ``chimera-secrets`` with the account keys and notifier secrets (see docs/deploy.md).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
IMAGE = "chimera"
METRICS_PORT = 9100  # each worker's /metrics, /health, /ready (CHIMERA_METRICS_PORT)
API_PORT = 8000
PART_OF = {"app.kubernetes.io/part-of": "chimera"}

# role -> (replicas, what it is, cpu request, memory request)
ROLES = {
    "scheduler": (2, "due-queue scheduler (one active, lease)", "50m", "96Mi"),
    "s1": (1, "exchange connectors (market + user data, treasury)", "200m", "256Mi"),
    "s2": (2, "feature generator (lease-owned symbol streams)", "200m", "384Mi"),
    "s3": (2, "strategy engine", "200m", "256Mi"),
    "s4": (3, "order router", "200m", "256Mi"),
    "s5": (1, "reconciler", "100m", "192Mi"),
    "s6": (2, "position manager (lease-owned)", "200m", "256Mi"),
    "s7": (1, "label backfill (timers per horizon)", "100m", "256Mi"),
    "s8": (1, "trade autopsy (HTML reports into the object store)", "100m", "256Mi"),
    "s9": (2, "experiments (distributed trials on exp:{trials})", "500m", "768Mi"),
    "s10": (1, "config bundles (lint, dry-run, rollouts)", "200m", "384Mi"),
    "s11": (2, "metrics and health", "100m", "192Mi"),
    "s12": (2, "gateway and web UI", "200m", "256Mi"),
    "notifier": (2, "notifier (Telegram, webhooks)", "50m", "128Mi"),
    "vpos": (1, "virtual positions (attribution, UNASSIGNED, reconcile)", "100m", "192Mi"),
}


def labels(role: str) -> dict:
    return {"app.kubernetes.io/name": "chimera", "app.kubernetes.io/component": role, **PART_OF}


def deployment(role: str) -> dict:
    replicas, what, cpu, mem = ROLES[role]
    ports = [{"name": "metrics", "containerPort": METRICS_PORT}]
    probe_port = "metrics"
    if role == "s12":
        ports.append({"name": "http", "containerPort": API_PORT})
        probe_port = "http"
    container = {
        "name": role, "image": IMAGE, "imagePullPolicy": "IfNotPresent",
        "args": ["chimera-worker", "--role", role],
        "envFrom": [{"configMapRef": {"name": "chimera-config"}}, {"secretRef": {"name": "chimera-secrets"}}],
        "env": [{"name": "CHIMERA_METRICS_HOST", "value": "0.0.0.0"},
                {"name": "CHIMERA_METRICS_PORT", "value": str(METRICS_PORT)},
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": ports,
        "livenessProbe": {"httpGet": {"path": "/health", "port": probe_port}, "periodSeconds": 10,
                          "timeoutSeconds": 3, "failureThreshold": 6},
        "readinessProbe": {"httpGet": {"path": "/ready", "port": probe_port}, "periodSeconds": 5,
                           "timeoutSeconds": 3, "failureThreshold": 3},
        "resources": {"requests": {"cpu": cpu, "memory": mem}, "limits": {"memory": _double(mem)}},
        "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                            "allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                            "capabilities": {"drop": ["ALL"]}},
        "volumeMounts": [{"name": "accounts", "mountPath": "/run/secrets/chimera", "readOnly": True},
                         {"name": "tmp", "mountPath": "/tmp"}],
    }
    if role == "s12":
        container["env"].append({"name": "CHIMERA_API_HOST", "value": "0.0.0.0"})
        # Only written when CHIMERA_JWT_SECRET is empty (one replica generates its own key): the
        # root filesystem is read-only, /tmp is the pod's emptyDir.
        container["env"].append({"name": "CHIMERA_SECRETS_FILE", "value": "/tmp/chimera/secrets.json"})
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": f"chimera-{role}", "labels": labels(role), "annotations": {"chimera/role": what}},
        "spec": {
            "replicas": replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "chimera", "app.kubernetes.io/component": role}},
            # One consumer name per pod (POD_NAME): SIGTERM finishes the entry in hand (30 s grace).
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": labels(role)},
                "spec": {
                    "terminationGracePeriodSeconds": 30,
                    "securityContext": {"runAsNonRoot": True, "fsGroup": 10001,
                                        "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "accounts", "secret": {"secretName": "chimera-accounts"}},
                                {"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def _double(mem: str) -> str:
    return f"{int(mem[:-2]) * 2}Mi"


def service(role: str) -> dict:
    ports = [{"name": "metrics", "port": METRICS_PORT, "targetPort": "metrics"}]
    if role == "s12":
        ports.append({"name": "http", "port": API_PORT, "targetPort": "http"})
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"chimera-{role}", "labels": labels(role)},
            "spec": {"selector": {"app.kubernetes.io/name": "chimera", "app.kubernetes.io/component": role},
                     "ports": ports}}


def config_map() -> dict:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "chimera-config", "labels": PART_OF},
            "data": {"CHIMERA_REDIS_URL": "redis+cluster://redis-cluster:6379/0",
                     "CHIMERA_VENUE": "testnet", "CHIMERA_VENUE_URL": "https://testnet.binancefuture.com",
                     "CHIMERA_ACCOUNTS_FILE": "/run/secrets/chimera/accounts.json",
                     "CHIMERA_LOG_JSON": "1", "CHIMERA_LOG_LEVEL": "INFO"}}


def secrets() -> list[dict]:
    # Placeholders only: a real deployment replaces both (sealed-secrets, external-secrets or
    # `kubectl create secret`); the keys are read through env: references, never stored in a document.
    accounts = '{"accounts": [{"account_id": "main", "api_key": "env:CHIMERA_MAIN_API_KEY", ' \
               '"api_secret": "env:CHIMERA_MAIN_API_SECRET"}]}\n'
    return [
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chimera-accounts", "labels": PART_OF},
         "type": "Opaque", "stringData": {"accounts.json": accounts}},
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "chimera-secrets", "labels": PART_OF},
         "type": "Opaque", "stringData": {
             # The store and object URLs carry credentials, so they live here, not in the ConfigMap.
             "CHIMERA_STORE_URL": "arangodb://chimera:REPLACE_ME@arangodb:8529/chimera",
             "CHIMERA_OBJECTS_URL": "minio://chimera:REPLACE_ME@minio:9000/chimera",
             "CHIMERA_MAIN_API_KEY": "REPLACE_ME", "CHIMERA_MAIN_API_SECRET": "REPLACE_ME",
             "CHIMERA_WEBHOOK_SECRET": "REPLACE_ME", "CHIMERA_TELEGRAM_TOKEN": "REPLACE_ME",
             # The gateway's JWT signing key: one value for every s12 replica (a token signed by one
             # must verify on the other). The gateway refuses to start while it is REPLACE_ME.
             "CHIMERA_JWT_SECRET": "REPLACE_ME"}},
    ]


def service_monitor() -> dict:
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": {"name": "chimera", "labels": {**PART_OF, "release": "kube-prometheus-stack"}},
            "spec": {"selector": {"matchLabels": PART_OF},
                     "endpoints": [{"port": "metrics", "path": "/metrics", "interval": "15s"}]}}


def prometheus_rule() -> dict:
    groups = yaml.safe_load((ROOT / "deploy" / "prometheus" / "chimera-rules.yaml").read_text())["groups"]
    return {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "chimera", "labels": {**PART_OF, "release": "kube-prometheus-stack"}},
            "spec": {"groups": groups}}


def dashboards() -> dict:
    files = sorted((ROOT / "deploy" / "grafana").glob("*.json"))
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "chimera-grafana-dashboards", "labels": {**PART_OF, "grafana_dashboard": "1"}},
            "data": {f"chimera-{p.name}": p.read_text() for p in files}}


def kustomization() -> dict:
    return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
            "labels": [{"pairs": PART_OF, "includeSelectors": False}],
            "resources": ["configmap.yaml", "secrets.yaml", "roles.yaml", "servicemonitor.yaml",
                          "prometheusrule.yaml", "grafana-dashboards.yaml"],
            "images": [{"name": IMAGE, "newName": "ghcr.io/chimera/chimera", "newTag": "0.1.0"}]}


def render() -> dict[str, str]:
    dump = lambda docs: yaml.safe_dump_all(docs, sort_keys=False, width=120)  # noqa: E731
    roles = [doc for role in ROLES for doc in (deployment(role), service(role))]
    out = {"configmap.yaml": dump([config_map()]), "secrets.yaml": dump(secrets()), "roles.yaml": dump(roles),
           "servicemonitor.yaml": dump([service_monitor()]), "prometheusrule.yaml": dump([prometheus_rule()]),
           "grafana-dashboards.yaml": dump([dashboards()]), "kustomization.yaml": dump([kustomization()])}
    header = "# Generated by deploy/k8s/generate.py; edit the generator, not this file.\n"
    return {name: header + text for name, text in out.items()}


def digest() -> str:
    return hashlib.sha256("".join(render().values()).encode()).hexdigest()[:12]


if __name__ == "__main__":
    for name, text in render().items():
        (HERE / "base" / name).write_text(text)
        print(f"wrote {HERE / 'base' / name}")
