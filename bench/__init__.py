"""Benchmarks of our implementation against the reference (official) algorithm; see bench/README.md."""
