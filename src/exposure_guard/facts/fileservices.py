"""Facts about the NAS's network services that are not a single config key: the SMB protocol floor
(Samba's names and defaults), the SNMP communities in the generated snmpd.conf, and QuFirewall's state.
Sources: docs/qts-facts.md#network-services."""

from __future__ import annotations

import re
from typing import Any, Dict, List, Optional, Tuple

from exposure_guard.contracts import Value
from exposure_guard.errors import Unknowable
from exposure_guard.facts import inputs
from exposure_guard.facts.keys import KeyRead, read_key
from exposure_guard.facts.packages import Package, read_packages
from exposure_guard.qts.config import QtsConfig
from exposure_guard.qts.root import SNMPD_CONF, QtsRoot

# Samba's protocol names, oldest first; everything before SMB2_02 is SMB1.
SMB1_NAMES = ("CORE", "COREPLUS", "LANMAN1", "LANMAN2", "NT1", "SMB1")
SMB2_NAMES = ("SMB2", "SMB2_02", "SMB2_10", "SMB2_22", "SMB2_24", "SMB3", "SMB3_00", "SMB3_02", "SMB3_10",
              "SMB3_11")
SAMBA_SMB2_DEFAULT_FROM = (4, 5)  # QTS release from which the shipped Samba's own default is not known


class SmbFloor(Value):
    """The lowest SMB version smbd accepts: ``smb1`` True/False, or None when the settings cannot tell."""

    __slots__ = ("smb1", "value", "reason", "read")

    def __init__(self, smb1: Optional[bool], value: Optional[str], reason: str, read: KeyRead) -> None:
        self.smb1 = smb1
        self.value = value
        self.reason = reason
        self.read = read


def smb_floor(config: QtsConfig, firmware: Tuple[int, ...]) -> SmbFloor:
    """From smb.conf's ``server min protocol`` (or its older name ``min protocol``). Absent, Samba's own
    default decides: LANMAN1 before Samba 4.11. QTS 4.4.1 ships Samba 4.7.12 (QNAP's GPL source), so on
    firmware older than 4.5 an absent floor allows SMB1; on later firmware the Samba version, hence the
    default, is not known."""
    read = read_key(config, inputs.SMB_MIN_PROTOCOL)
    if read.value is None:
        alias = read_key(config, inputs.SMB_MIN_PROTOCOL_ALIAS)
        if alias.value is not None:
            read = alias
    value = (read.value or "").strip().strip('"').upper()
    if not value:
        unset = "there is no /etc/config/smb.conf" if read.file_missing else "smb.conf sets no lowest version"
        if firmware and firmware[:2] < SAMBA_SMB2_DEFAULT_FROM:
            return SmbFloor(True, None, "%s, and the Samba of QTS before 4.5 (4.7 on QTS 4.4.1) then accepts "
                            "LANMAN1, i.e. SMB1" % unset, read)
        return SmbFloor(None, None, "%s; Samba's own default then decides (SMB1 before Samba 4.11) and this "
                        "firmware's Samba version is not known" % unset, read)
    if value in SMB1_NAMES:
        return SmbFloor(True, value, "the lowest version is %s (SMB1)" % value, read)
    if value in SMB2_NAMES:
        return SmbFloor(False, value, "the lowest version is %s" % value, read)
    return SmbFloor(None, value, "the lowest version %r is not a Samba protocol name" % value, read)


# ---- SNMP communities -------------------------------------------------------------------------------------
_COMMUNITY = re.compile(r"^\s*(rocommunity6?|rwcommunity6?|com2sec6?)\s+(\S+)(?:\s+(\S+))?(?:\s+(\S+))?",
                        re.IGNORECASE)
WELL_KNOWN_COMMUNITIES = ("public", "private")
MAX_SNMPD_BYTES = 256 * 1024


def snmp_communities(root: QtsRoot) -> Optional[List[Dict[str, Any]]]:
    """v1/v2c communities in /etc/config/snmpd.conf: ``{"directive", "writable", "well_known", "source"}``
    per line (the community itself is a password: only whether it is a well-known one is kept); None
    when the file does not exist; Unknowable when it cannot be read."""
    path = root.path(SNMPD_CONF)
    if not path.exists():
        return None
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_SNMPD_BYTES + 1)
    except OSError as exc:
        raise Unknowable("cannot read /%s: %s" % (SNMPD_CONF, exc.strerror or exc)) from None
    if len(raw) > MAX_SNMPD_BYTES:
        raise Unknowable("/%s is larger than %d KiB: not read" % (SNMPD_CONF, MAX_SNMPD_BYTES // 1024))
    found = []
    for line in raw.decode("utf-8", "replace").splitlines():
        match = _COMMUNITY.match(line)
        if not match:
            continue
        directive = match.group(1).lower()
        # com2sec NAME SOURCE COMMUNITY; ro/rwcommunity COMMUNITY [SOURCE]
        community = match.group(4) if directive.startswith("com2sec") else match.group(2)
        source = match.group(3) if directive.startswith("com2sec") else match.group(3)
        found.append({"directive": directive, "writable": directive.startswith("rwcommunity"),
                      "well_known": (community or "").lower() in WELL_KNOWN_COMMUNITIES,
                      "source": (source or "any address")[:64]})
    return found


# ---- the FTP server's generated configuration ----------------------------------------------------------------
# QTS's proftpd writes its own config from uLinux.conf at start ([FTP] CreateConf); where it puts it is not
# published: the usual places are tried, and the directives are proftpd's own.
PROFTPD_CONFS = ("etc/config/proftpd.conf", "etc/proftpd.conf", "etc/proftpd/proftpd.conf")
MAX_PROFTPD_BYTES = 256 * 1024


def ftp_tls(root: QtsRoot) -> Optional[Dict[str, Any]]:
    """TLSEngine / TLSRequired / PassivePorts / anonymous access from the proftpd config, when one is found;
    None otherwise. Unreadable or oversized files are named, not guessed."""
    for rel in PROFTPD_CONFS:
        path = root.path(rel)
        if not path.is_file():
            continue
        found: Dict[str, Any] = {"file": root.rel(rel), "tls_engine": None, "tls_required": None,
                                 "passive_ports": None, "anonymous": False}
        try:
            with path.open("rb") as handle:
                raw = handle.read(MAX_PROFTPD_BYTES + 1)
        except OSError as exc:
            found["error"] = "cannot read: %s" % (exc.strerror or exc)
            return found
        if len(raw) > MAX_PROFTPD_BYTES:
            found["error"] = "larger than %d KiB: not read" % (MAX_PROFTPD_BYTES // 1024)
            return found
        for line in raw.decode("utf-8", "replace").splitlines():
            words = line.split("#", 1)[0].split()
            if not words:
                continue
            name = words[0].lower()
            if name == "tlsengine" and len(words) > 1:
                found["tls_engine"] = words[1].lower() == "on"
            elif name == "tlsrequired" and len(words) > 1:
                found["tls_required"] = words[1].lower() in ("on", "ctrl", "both", "ctrl+data", "auth+data", "auth")
            elif name == "passiveports" and len(words) > 2:
                found["passive_ports"] = "%s-%s" % (words[1][:6], words[2][:6])
            elif name.startswith("<anonymous"):
                found["anonymous"] = True
        return found
    return None


# ---- QuFirewall -------------------------------------------------------------------------------------------
QUFIREWALL_SECTION = "qufirewall"


class FirewallState(Value):
    __slots__ = ("installed", "enabled", "running_switch", "version")

    def __init__(self, installed: bool, enabled: Optional[bool], running_switch: Optional[KeyRead],
                 version: Optional[str]) -> None:
        self.installed = installed
        self.enabled = enabled  # the package's App Center switch (qpkg.conf Enable)
        self.running_switch = running_switch  # QuFirewall.conf [Global] firewall_status
        self.version = version

    @property
    def on(self) -> Optional[bool]:
        if not self.installed or self.enabled is False:
            return False
        switch = self.running_switch.as_bool() if self.running_switch is not None else None
        if self.enabled and switch is not None:
            return switch
        return None


def firewall_state(config: QtsConfig) -> FirewallState:
    package = _package(read_packages(config), QUFIREWALL_SECTION)
    if package is None:
        return FirewallState(False, None, None, None)
    return FirewallState(True, package.enabled, read_key(config, inputs.QUFIREWALL_STATUS), package.get("Version"))


def _package(packages: List[Package], section: str) -> Optional[Package]:
    return next((p for p in packages if p.section.lower() == section), None)


def installed(config: QtsConfig, *sections: str) -> List[Package]:
    """The installed packages among ``sections`` (matched without case)."""
    wanted = {s.lower() for s in sections}
    return [p for p in read_packages(config) if p.section.lower() in wanted]
