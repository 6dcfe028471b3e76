"""Benchmarks of the kit runtime against the raw client and peers (see bench/pipeline.py)."""
