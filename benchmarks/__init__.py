"""Benchmarks comparing robustpool with other Python process pools (``python -m benchmarks``)."""
