"""What checks and fixes see of one run: the QTS root, its parsed config files, the settings, and the
facts every check may ask for. Each fact is read once, on first use, and cached for the run, so checks
never depend on each other's order."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional

from exposure_guard.facts.keys import Key, KeyRead, read_key
from exposure_guard.qts.config import QtsConfig
from exposure_guard.qts.identity import DeviceIdentity, read_identity
from exposure_guard.qts.listeners import ListenerTable
from exposure_guard.qts.root import QtsRoot
from exposure_guard.qts.services import process_table
from exposure_guard.settings import Settings, load_settings

if TYPE_CHECKING:
    from exposure_guard.facts.containers import ContainerPorts
    from exposure_guard.facts.netfilter import ChainVerdict
    from exposure_guard.facts.reachability import ReachabilityRun
    from exposure_guard.facts.router import RouterFacts

_UNREAD = object()
NO_PROBER = "no callback prober configured ([reachability] prober_url is empty)"


class CheckContext:
    def __init__(self, root: QtsRoot, settings: Optional[Settings] = None, *, offline: bool = False,
                 state_dir: Optional[Path] = None) -> None:
        self.root = root
        self.settings = settings or load_settings(None, environ={})
        self.offline = offline
        self.config = QtsConfig(root)
        self.state_dir = state_dir
        self._listeners: Optional[ListenerTable] = None
        self._identity: Optional[DeviceIdentity] = None
        self._processes: Optional[Dict[str, List[int]]] = None
        self._router: object = _UNREAD
        self._reachability: Optional[ReachabilityRun] = None
        self._containers: Optional[ContainerPorts] = None
        self._qufirewall_chain: object = _UNREAD

    def read(self, key: Key) -> KeyRead:
        """A declared config key, like getcfg (raises Unknowable when its file cannot be read)."""
        return read_key(self.config, key)

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
    def containers(self) -> ContainerPorts:
        """Ports published by containers (docker-proxy processes and the engine's state), read once per run."""
        if self._containers is None:
            from exposure_guard.facts.containers import container_ports

            self._containers = container_ports(self.root)
        return self._containers

    @property
    def qufirewall_chain(self) -> Optional[ChainVerdict]:
        """QuFirewall's chain in the live netfilter rules (None when not the live NAS or not readable)."""
        if self._qufirewall_chain is _UNREAD:
            from exposure_guard.facts.netfilter import read_chain

            self._qufirewall_chain = read_chain(self.root)
        return self._qufirewall_chain  # type: ignore[return-value]

    def firewall_guard(self) -> str:
        """Why exposure through the router matters less here, or "": QuFirewall is on and its live rules
        admit only LAN sources, so forwarded ports are dropped on the NAS itself."""
        from exposure_guard.errors import Unknowable
        from exposure_guard.facts.fileservices import firewall_state

        try:
            if not firewall_state(self.config).on:  # (before running iptables-save: most NAS have no QuFirewall)
                return ""
        except Unknowable:
            return ""
        chain = self.qufirewall_chain
        if chain is None or chain.lan_only is not True:
            return ""
        return "QuFirewall admits only LAN sources, so forwarded ports are dropped on the NAS itself"

    @property
    def identity(self) -> DeviceIdentity:
        if self._identity is None:
            extra = list(self.settings.get("agent", "lan_addresses"))
            self._identity = read_identity(self.root, self.config, extra)
        return self._identity

    def lan_addresses(self) -> List[str]:
        """This NAS's LAN addresses; empty when its identity cannot be read (the runner reports why)."""
        try:
            return list(self.identity.lan_addresses)
        except Exception:
            return []

    @property
    def router(self) -> Optional[RouterFacts]:
        """The router audit (IGDs and their mapping tables); None when this run may not look for a router
        (see ``facts.router.discovery_allowed``)."""
        if self._router is _UNREAD:
            # The router facts load the UPnP models: only when a check asks for the router.
            from exposure_guard.facts.router import audit_router

            self._router = audit_router(self.root, self.settings, self.lan_addresses())
        return self._router  # type: ignore[return-value]

    def provide_router(self, facts: Optional[RouterFacts]) -> None:
        """Use an audit made elsewhere (a caller that already read the router, or a test)."""
        self._router = facts

    @property
    def prober_configured(self) -> bool:
        return bool(self.settings.get("reachability", "prober_url"))

    @property
    def reachability(self) -> ReachabilityRun:
        """The callback prober's answer for this run (asked once per address family)."""
        if self._reachability is None:
            # The prober client and the fingerprints pull in requests and ssl: only when a check needs them.
            from exposure_guard.facts.reachability import reachability_run

            self._reachability = reachability_run(self)
        return self._reachability

    def refresh(self) -> None:
        """Forget cached reads (after a fix changed files or the router's table)."""
        self.config = QtsConfig(self.root)
        self._listeners = None
        self._processes = None
        self._router = _UNREAD
        self._reachability = None
        self._containers = None
        self._qufirewall_chain = _UNREAD
