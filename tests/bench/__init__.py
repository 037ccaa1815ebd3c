"""Benchmarks and the load generator: `./dev bench <name>` (python -m tests.bench)."""
