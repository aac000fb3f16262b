"""Benchmarks for keras_momentum, each runnable as `python -m benchmarks.<name>`."""
