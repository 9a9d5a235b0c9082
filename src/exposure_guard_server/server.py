"""Everything one server process holds: its settings, the database engine and the services on it. The
FastAPI app keeps one in ``app.state.server``; routes get it with ``Depends(deps.get_server)``."""

from __future__ import annotations

import contextlib
from typing import Optional

from exposure_guard_server.config import ServerConfig
from exposure_guard_server.db.engine import make_engine
from exposure_guard_server.db.lock import WriteLock
from exposure_guard_server.housekeeping import Housekeeping
from exposure_guard_server.services.acceptances import Acceptances
from exposure_guard_server.services.admin import Admin
from exposure_guard_server.services.audit import AuditLog
from exposure_guard_server.services.counters import Counters
from exposure_guard_server.services.emails import Mailer
from exposure_guard_server.services.enroll import Enrollment
from exposure_guard_server.services.events import EventLog
from exposure_guard_server.services.fleet import Reader
from exposure_guard_server.services.ingest import Ingest
from exposure_guard_server.services.lifecycle import Lifecycle
from exposure_guard_server.services.server_settings import ServerSettings
from exposure_guard_server.services.stale import StaleSweep
from exposure_guard_server.services.trend import Trend
from exposure_guard_server.webhooks import WebhookSender


class Server:
    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.engine = make_engine(config.db_url, pool_size=config.pool_size)
        lock = WriteLock(self.engine)
        self.counters = Counters(self.engine)
        self.ingest = Ingest(self.engine, lock, self.counters, max_clock_skew=config.max_clock_skew)
        self.enrollment = Enrollment(self.engine, lock, self.counters, default_interval=config.default_interval)
        self.stale = StaleSweep(lock, grace=config.stale_grace)
        self.events = EventLog(self.engine)
        self.audit = AuditLog(self.engine)
        self.lifecycle = Lifecycle(self.engine)
        self.settings = ServerSettings(self.engine)
        self.acceptances = Acceptances(self.engine, lock)
        self.reader = Reader(self.engine, stale_grace=config.stale_grace, max_clock_skew=config.max_clock_skew)
        self.trend = Trend(self.engine, self.reader)
        self.mailer = Mailer(self.engine, self.reader, self.events, self.acceptances,
                             timeout=max(10.0, 2 * config.webhook_timeout))
        self.admin = Admin(self.engine, session_ttl=config.session_ttl, webhook_allow=config.webhook_allow)
        self.webhooks = WebhookSender(self.engine, backoff_base=config.webhook_backoff, timeout=config.webhook_timeout,
                                      allow=config.webhook_allow, workers=config.webhook_workers)
        self._housekeeping: Optional[Housekeeping] = None

    def start(self) -> None:
        """The background threads (housekeeping; webhook deliveries in their own pool), unless the settings
        leave them to another process (or to tests)."""
        if self.config.background:
            self.webhooks.start()
            self.mailer.start()
            self._housekeeping = Housekeeping([
                (self.config.sweep_every, self.stale.run),
                (5, self.counters.flush),
                (600, self.admin.purge_sessions),
                (60, self.acceptances.expire),
                (60, self.mailer.queue_digests),
                (300, self.trend.snapshot),
            ], on_close=self.counters.flush)
            self._housekeeping.start()

    def close(self) -> None:
        """Stop the background thread, flush the counters and close the database connections."""
        if self._housekeeping is not None:
            self.webhooks.close()
            self.mailer.close()
            self._housekeeping.close()
            self._housekeeping = None
        else:
            with contextlib.suppress(Exception):
                self.counters.flush()
        self.engine.dispose()
