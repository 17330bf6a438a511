"""Benchmarks: each prints a readable table and writes JSON."""
