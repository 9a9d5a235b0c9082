"""Benchmarks that print figures. Run them from the repository root as modules, e.g.
``python3 -m bench.bench_agent``: the root is then on sys.path and they share the test helpers in
tests/support without touching sys.path."""
