"""ExposureGuard callback prober: connects back only to the address that asked, and says what answers."""

__version__ = "1.0.0"
API_SCHEMA = "exposure-guard/prober/v1"
