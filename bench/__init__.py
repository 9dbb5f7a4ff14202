"""Benchmarks: each prints its figures and ratios against the physical bound."""
