"""Benchmarks that write measured figures into docs/benchmarks.md (`edgecut bench ...`)."""
