"""S10 config service: bundles (lint, dry-run), simulate and sensitivity, promote (staged rollout), cost curves."""
