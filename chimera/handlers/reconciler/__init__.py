"""S5 reconciler (issue #7). See chimera/handlers/reconciler/core.py and docs/gateway.md."""
