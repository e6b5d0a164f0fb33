"""Benchmarks (not shipped): `python -m bench.engine`."""
