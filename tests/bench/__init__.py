"""Benchmarks, run as scripts by ``make bench`` (not collected by pytest)."""
