"""Fixtures of the end-to-end pipeline tests: the Redis broker swap and worker processes."""

pytest_plugins = ["rekindle.testing.pipeline"]
