"""What checks see: the QTS root, parsed config files, listeners, identity, settings, shared results."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Optional

from exposure_guard.qts.config import QtsConfig
from exposure_guard.qts.identity import DeviceIdentity, read_identity
from exposure_guard.qts.listeners import ListenerTable
from exposure_guard.qts.root import QtsRoot
from exposure_guard.qts.services import process_table
from exposure_guard.settings import Settings, load_settings


class CheckContext:
    def __init__(self, root: QtsRoot, settings: Optional[Settings] = None, *, offline: bool = False,
                 state_dir: Optional[Path] = None) -> None:
        self.root = root
        self.settings = settings or load_settings(None, environ={})
        self.offline = offline
        self.config = QtsConfig(root)
        self.state_dir = state_dir
        # Results one check leaves for another (e.g. router mappings for the reachability ports).
        self.shared: Dict[str, Any] = {}
        self._listeners: Optional[ListenerTable] = None
        self._identity: Optional[DeviceIdentity] = None
        self._processes: Optional[Dict[str, List[int]]] = None

    @property
    def listeners(self) -> ListenerTable:
        if self._listeners is None:
            self._listeners = ListenerTable.read(self.root)
        return self._listeners

    def running(self, *names: str) -> bool:
        """Whether a process of any of these names runs (one /proc scan per run, shared by all checks)."""
        if self._processes is None:
            self._processes = process_table(self.root)
        return any(self._processes.get(name) for name in names)

    @property
    def identity(self) -> DeviceIdentity:
        if self._identity is None:
            extra = list(self.settings.get("agent", "lan_addresses"))
            self._identity = read_identity(self.root, self.config, extra)
        return self._identity

    def refresh(self) -> None:
        """Forget cached reads (after a fix changed files)."""
        self.config = QtsConfig(self.root)
        self._listeners = None
        self._processes = None
        self.shared.clear()
