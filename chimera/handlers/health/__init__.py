"""S11 metrics and health: metric downsampling, daily strategy metrics, alerts, the health grade."""
