"""Benchmarks: commands that print tables (``soundvcm bench ...``); results go to BENCHMARKS.md."""
