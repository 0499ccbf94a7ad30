"""S4 order router (issue #6). See docs/execution.md."""
