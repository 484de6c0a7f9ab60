"""Benchmarks that print figures (speed, memory, accuracy); results are written under benchmarks/results/."""
