"""Performance benchmarks P1–P6 (issue 8): ``python -m benchmarks [--quick] [--only ...]``."""
