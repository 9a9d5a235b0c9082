"""Old import path of the admin service, kept only for ``tests/lab/advisory.py`` (outside the server's
files): import ``exposure_guard_server.services.admin`` instead. Delete this module once that test uses
``services.admin.Admin(engine).webhooks.create(...)``."""

from __future__ import annotations

from typing import Sequence, Tuple

from exposure_guard_server.services import admin as _admin


class Admin(_admin.Admin):
    def create_webhook(self, name: str, url: str, events: Sequence[str], secret: str = "") -> Tuple[int, str]:
        return self.webhooks.create(name, url, events, secret)
