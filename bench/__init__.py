"""Benchmarks: the gateway against a bare Starlette endpoint, in the same run."""
