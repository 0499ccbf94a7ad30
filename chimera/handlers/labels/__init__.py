"""S7 label backfill: ROI_net of each signal at 12/24/36 hours (``docs/research.md``)."""
