"""Who is calling and what they may do: three roles and, per user or API token, an optional limit to some
groups.

- ``viewer`` reads: pages, the read API, CSV, /metrics;
- ``operator`` also acts on devices: accepts risks, moves, tags, notes and retires boxes, approves
  re-enrollments and manages the enrollment secrets of its groups;
- ``admin`` also manages users, API tokens, groups, webhooks and settings, and deletes devices.

A caller limited to groups sees and acts on the boxes of those groups only (not on boxes in no group);
every other box answers 404, as if it did not exist. ``deps.caller_with`` checks this on every route."""

from __future__ import annotations

from dataclasses import dataclass
from typing import FrozenSet, Optional

ROLES = ("viewer", "operator", "admin")
RANK = {name: rank for rank, name in enumerate(ROLES)}


@dataclass(frozen=True)
class Caller:
    kind: str  # "session" | "token"
    name: str  # the user name, or "token NAME (#ID)": who did it, in the audit log
    role: str
    groups: Optional[FrozenSet[int]] = None  # group ids the caller is limited to; None: every box
    csrf_token: str = ""  # a session's, for its forms and API writes

    def allows(self, role: str) -> bool:
        return RANK.get(self.role, -1) >= RANK[role]

    def sees_group(self, group_id: Optional[int]) -> bool:
        return self.groups is None or (group_id is not None and group_id in self.groups)


def check_role(text: str) -> str:
    """A role name as typed (CLI, API, form); ValueError names the choices."""
    value = (text or "").strip().lower()
    if value not in RANK:
        raise ValueError("role must be one of: " + ", ".join(ROLES))
    return value
