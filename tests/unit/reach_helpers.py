from tests.support.reach import Services  # noqa: F401  shim for bench/bench_prober.py; remove once it imports tests.support.reach
