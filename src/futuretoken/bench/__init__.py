"""Benchmarks: measured speed and memory, written as JSON with the device named."""
