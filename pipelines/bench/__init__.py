"""Benchmarks: `orchestra-ray bench NAME` (runner.py) and the load test of a served orchestrator."""
