from tests.support.netlab import Lab  # noqa: F401  shim for bench/bench_prober.py (`from netlab import Lab`); remove once it imports tests.support.netlab
