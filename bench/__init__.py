"""Benchmarks that drive the real bot against the local fake Bot API (not tests)."""
