"""An error the API turns into an HTTP status with a JSON ``{"detail": ...}`` body."""

from __future__ import annotations


class ApiError(Exception):
    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.headers = headers or {}
        self.counted = False  # already in the per-process counters (check-in rejections)
