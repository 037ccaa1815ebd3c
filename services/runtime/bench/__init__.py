"""Benchmarks: an open-loop load generator (loadgen) and the scenarios that drive it."""
