"""Benchmarks that ship with kvlab (run through the ``kvlab bench`` command)."""
