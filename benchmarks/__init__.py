"""Benchmarks that print figures and write results/*.json and PNG charts: ``python -m benchmarks NAME``."""
