"""S6 position manager (issue #6). See docs/execution.md."""
