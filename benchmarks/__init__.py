"""Benchmark suite for afc-jax: `python -m benchmarks.run` (see benchmarks/README.md)."""
