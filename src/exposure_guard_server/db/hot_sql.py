"""The check-in path's statements, compiled once for the dialect and run on the driver's cursor:
SQLAlchemy's per-execution bookkeeping costs several times what SQLite takes to run them.

A stored report is three statements (services/ingest.py): ``device_for_update`` (the device's row, locked,
checked against the caller's node key, and whether any acceptance could apply to it), ``insert_report``
(which answers nothing for a ``report_id`` already stored: the duplicate is then looked up with ``seen``)
and one ``UPDATE`` of the device that sets only the columns whose values change (``update``): an indexed
column left out of the ``SET`` list costs SQLite no index work, and the search triggers of the host name,
model and addresses do not fire."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

from sqlalchemy import bindparam, exists, select, update

from exposure_guard_server.db import models as m

Compiled = Tuple[str, Optional[List[str]]]  # SQL text, and the parameter order for a positional paramstyle

# What device_for_update answers, in this order.
DEVICE_COLUMNS = ("id", "interval_s", "last_generated_at", "verdict", "failing", "stale", "report_count",
                  "retired_at", "hostname", "model", "firmware", "build", "lan_addresses", "agent_version")


class HotSql:
    """The statements by name (``whoami``, ``pending_key``, ``seen``, ``device_for_update``, ``accepted``,
    ``insert_report``); ``run`` executes one with named parameters, ``update`` the device's update."""

    def __init__(self, dialect: Any) -> None:
        self.dialect = dialect
        d, r, a = m.devices.c, m.reports.c, m.acceptances.c
        if dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert  # type: ignore[assignment]
        report_columns = ("report_id", "device_pk", "generated_at", "received_at", "verdict", "fail_count",
                          "body_sha256", "body")
        statements = {
            "whoami": select(d.id, d.device_id).where(d.node_key_hash == bindparam("h")),
            # Only after whoami found nothing: is the key one that waits for an operator's approval?
            "pending_key": select(d.device_id).join_from(m.enroll_requests, m.devices,
                                                         m.enroll_requests.c.device_pk == d.id)
            .where(m.enroll_requests.c.node_key_hash == bindparam("h")),
            "seen": select(r.device_pk, r.body_sha256, r.verdict).where(r.report_id == bindparam("rid")),
            # The device's row for the caller's key (none: the key stopped working since it was checked) and
            # whether an acceptance of this box or its group is in force (services/acceptances.py).
            "device_for_update": select(*(d[name] for name in DEVICE_COLUMNS), exists().where(
                a.ended_at.is_(None), (a.device_pk == d.id) | (a.group_id == d.group_id)).label("accepting"))
            .where(d.id == bindparam("pk"), d.node_key_hash == bindparam("h")).with_for_update(of=m.devices),
            # The checks accepted on the server for this box or its group (when device_for_update said any).
            "accepted": select(a.check_id).where(
                a.ended_at.is_(None),
                (a.device_pk == bindparam("pk")) | (a.group_id == select(d.group_id).where(
                    d.id == bindparam("pk2")).scalar_subquery())),
            # No row back: this report_id is stored already (a duplicate delivery, or another device's id).
            "insert_report": upsert(m.reports).values({c: bindparam(c) for c in report_columns})
            .on_conflict_do_nothing(index_elements=["report_id"]).returning(r.id),
        }
        self.compiled: Dict[str, Compiled] = {name: self._compile(statement) for name, statement in statements.items()}
        self._updates: Dict[Tuple[str, ...], Compiled] = {}

    def _compile(self, statement: Any) -> Compiled:
        compiled = statement.compile(dialect=self.dialect)
        order = list(compiled.positiontup or []) if compiled.positional else None
        return compiled.string, order

    def run(self, cursor: Any, name: str, **params: Any) -> Any:
        """Execute on a DBAPI cursor (inside the SQLAlchemy connection's transaction); returns the cursor."""
        text, order = self.compiled[name]
        cursor.execute(text, tuple(params[key] for key in order) if order is not None else params)
        return cursor

    def update(self, cursor: Any, pk: int, values: Dict[str, Any]) -> None:
        """``UPDATE devices SET <the keys of values> WHERE id = pk`` (one compiled statement per column set)."""
        columns = tuple(values)
        compiled = self._updates.get(columns)
        if compiled is None:
            statement = update(m.devices).where(m.devices.c.id == bindparam("pk_")).values(
                {c: bindparam(c) for c in columns})
            compiled = self._updates[columns] = self._compile(statement)
        text, order = compiled
        values["pk_"] = pk
        cursor.execute(text, tuple(values[key] for key in order) if order is not None else values)
