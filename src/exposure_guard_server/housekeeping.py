"""The per-process background thread: runs each task every so many seconds (checking once a second) and
keeps going when one fails. ``server.Server.start`` gives it the stale sweep, the counter flush and the
purge of expired sessions (webhook deliveries have threads of their own: a slow receiver cannot delay these)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, List, Sequence, Tuple

log = logging.getLogger("exposure_guard_server")

Task = Callable[[], object]
ROUND = 1.0


class Housekeeping:
    def __init__(self, tasks: Sequence[Tuple[float, Task]], *, on_close: Task) -> None:
        """``tasks``: (every so many seconds, what to call); ``on_close`` runs once more at close."""
        self.tasks = list(tasks)
        self.on_close = on_close
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="eg-background", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=15)
        self._safe(self.on_close)

    def _safe(self, func: Task) -> None:
        try:
            func()
        except Exception:  # keep housekeeping alive; the next round retries
            log.exception("background task %s failed", getattr(func, "__name__", func))

    def _run(self) -> None:
        due: List[float] = [0.0] * len(self.tasks)
        while not self.stop.is_set():
            now = time.monotonic()
            for i, (every, func) in enumerate(self.tasks):
                if now >= due[i]:
                    self._safe(func)
                    due[i] = now + every
            self.stop.wait(ROUND)
