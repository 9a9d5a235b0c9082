"""ExposureGuard fleet server: enrollment, check-ins, dashboard, API, metrics and webhooks."""

from exposure_guard import __version__

__all__ = ["__version__"]
