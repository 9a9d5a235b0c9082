"""ExposureGuard agent: finds and closes the internet exposure of a QNAP NAS."""

__version__ = "1.0.0"
