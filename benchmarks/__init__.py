"""prunekit's benchmarks as declared experiments: see registry.py, or `python -m benchmarks list`."""
