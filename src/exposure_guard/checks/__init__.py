"""Checks: one module per family (local, router, reachability) registered in ``registry``."""
