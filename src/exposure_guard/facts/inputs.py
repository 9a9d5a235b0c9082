"""Every QTS config key the checks read, declared once: file, section, key spelling, accepted values and
the default QTS itself uses when the key is absent. The facts and their sources: docs/qts-facts.md."""

from __future__ import annotations

from typing import Tuple

from exposure_guard.facts.keys import Key
from exposure_guard.qts.root import QID_CONF, QNAPDDNS_CONF, QUFIREWALL_CONF, SMB_CONF, ULINUX_CONF, UPNPC_CONF

# ---- myQNAPcloud Auto Router Configuration (upnpc.conf; QTS falls back to FALSE when the file is absent)
ARC_ENABLE = Key(UPNPC_CONF, "UPnP_Global", "Enable", "FALSE", "TRUE/FALSE", missing_file_ok=True)

# Router-side ports ARC recorded for the services it forwarded (0 or absent: none), with what they publish.
EXT_PORTS: Tuple[Tuple[Key, str], ...] = tuple(
    (Key(ULINUX_CONF, section, key, "0", "router port for " + label, "0 = none"), label)
    for section, key, label in (("System", "ExtPort", "admin HTTP"), ("Stunnel", "ExtSSLPort", "admin HTTPS"),
                                ("QWEB", "ExtPort", "Web Server HTTP"), ("QWEB", "ExtSSLPort", "Web Server HTTPS")))
ADMIN_EXT_HTTP, ADMIN_EXT_HTTPS, WEB_EXT_HTTP, WEB_EXT_HTTPS = (key for key, _label in EXT_PORTS)

# ---- myQNAPcloud DDNS (qnapddns.conf)
DDNS_HOST = Key(QNAPDDNS_CONF, "QNAP DDNS Service", "Host Name", None, missing_file_ok=True)
DDNS_DOMAIN = Key(QNAPDDNS_CONF, "QNAP DDNS Service", "Domain Name Server", "myqnapcloud.com", missing_file_ok=True)

# ---- myQNAPcloud registration (qid.conf; it also holds tokens, which are never read out). Sections of
# DEVICE NAME, QID and DEVICE_ACCESS_CONTROL_MODE are not published: they are looked up in any section.
QID_STATUS = Key(QID_CONF, "QNAP ID Service", "STATUS", "0", note="3 = bound to a QNAP ID", missing_file_ok=True)
QID_DEVICE_NAME = Key(QID_CONF, "*", "DEVICE NAME", None, note="the myQNAPcloud name: <name>.myqnapcloud.com",
                      missing_file_ok=True)
QID_ACCOUNT = Key(QID_CONF, "*", "QID", None, note="the QNAP ID the NAS is bound to (shown masked)",
                  missing_file_ok=True)
QID_ACCESS_MODE = Key(QID_CONF, "*", "DEVICE_ACCESS_CONTROL_MODE", None, note="values unpublished: shown verbatim",
                      missing_file_ok=True)

# ---- System Administration (the admin web UI)
ADMIN_HTTP_PORT = Key(ULINUX_CONF, "System", "Web Access Port", "8080")
HTTPS_ENABLE = Key(ULINUX_CONF, "Stunnel", "Enable", "1", "1/0")
ADMIN_HTTPS_PORT = Key(ULINUX_CONF, "Stunnel", "Port", "443")
FORCE_SSL = Key(ULINUX_CONF, "System", "Force SSL", "0", "1/0")

# ---- remote shells (the Telnet keys are confirmed by a real uLinux.conf and QNAP's diagnostic parser)
SSH_ENABLE = Key(ULINUX_CONF, "LOGIN", "SSH Enable", "FALSE", "TRUE/FALSE")
SSH_PORT = Key(ULINUX_CONF, "LOGIN", "SSH Port", "22")
TELNET_ENABLE = Key(ULINUX_CONF, "LOGIN", "TELNET Enable", "FALSE", "TRUE/FALSE")
TELNET_PORT = Key(ULINUX_CONF, "LOGIN", "TELNET Port", "13131")

# ---- other services the callback asks about
FTP_PORT = Key(ULINUX_CONF, "FTP", "Port", "21")
WEB_HTTP_PORT = Key(ULINUX_CONF, "QWEB", "Port", "80")
WEB_HTTPS_PORT = Key(ULINUX_CONF, "QWEB", "SSL_PORT", "8081")

# ---- file services (the doors of Checkmate, DeadBolt and Qlocker)
SMB_ENABLE = Key(ULINUX_CONF, "Samba", "Enable", "FALSE", "TRUE/FALSE")
# The lowest SMB version is a Samba parameter in smb.conf's [global] (both spellings are Samba's own);
# absent, Samba's built-in default applies: LANMAN1 (SMB1 allowed) before Samba 4.11, SMB2_02 since.
SMB_MIN_PROTOCOL = Key(SMB_CONF, "global", "server min protocol", None, "NT1/SMB2/SMB2_02/SMB2_10/SMB3...",
                       "absent: Samba's own default", missing_file_ok=True)
SMB_MIN_PROTOCOL_ALIAS = Key(SMB_CONF, "global", "min protocol", None, "same as server min protocol",
                             missing_file_ok=True)
SMB_NTLM_AUTH = Key(SMB_CONF, "global", "ntlm auth", None, "yes/no/ntlmv2-only",
                    "absent: QNAP's Samba allows NTLMv1 (a QNAP patch in QTS 4.4.1)", missing_file_ok=True)
AFP_ENABLE = Key(ULINUX_CONF, "Appletalk", "Enable", "FALSE", "TRUE/FALSE")
FTP_ENABLE = Key(ULINUX_CONF, "FTP", "Enable", None, "TRUE/FALSE (real files write False)",
                 "firmware default not published: a running proftpd decides")
WEB_ENABLE = Key(ULINUX_CONF, "QWEB", "Enable", None, "1/0", "firmware default not published")
MYSQL_ENABLE = Key(ULINUX_CONF, "MySQL", "Enable", "FALSE", "TRUE/FALSE", "the built-in MySQL of older firmware")

# ---- SNMP ("Server Enable" in a real file; "Service Enable" in a QuTS hero audit: both are read)
SNMP_ENABLE = Key(ULINUX_CONF, "SNMP", "Server Enable", None, "TRUE/FALSE")
SNMP_ENABLE_ALIAS = Key(ULINUX_CONF, "SNMP", "Service Enable", None, "TRUE/FALSE")

# ---- IP and account access protection (key names from one real file; defaults not published)
IP_BAN_ENABLE = Key(ULINUX_CONF, "Ban Engine", "Ban Enabled", None, "1/0", "IP access protection")
ACCOUNT_BAN_ENABLE = Key(ULINUX_CONF, "Ban Engine", "Account Ban Enabled", None, "1/0",
                         "account access protection")

# ---- QuFirewall (package section `qufirewall`; its own switch in QuFirewall.conf, read by QPKG scripts)
QUFIREWALL_STATUS = Key(QUFIREWALL_CONF, "Global", "firewall_status", "0", "1/0", missing_file_ok=True)

# ---- boot persistence
AUTORUN = Key(ULINUX_CONF, "Misc", "Autorun", "FALSE", "TRUE/FALSE")

# ---- the NAS's own service advertisement (QTS's avahi init script: an absent key means its default)
BONJOUR_ENABLE = Key(ULINUX_CONF, "Bonjour Service", "Enable", "TRUE", "TRUE/FALSE", "master switch")
BONJOUR = tuple(Key(ULINUX_CONF, "Bonjour Service", name, default, "1/0")
                for name, default in (("Web", "1"), ("HTTPS", "0"), ("SAMBA", "1"), ("AFP", "0"), ("SSH", "0"),
                                      ("FTP", "0"), ("UPNP", "0"), ("QMobile", "1"), ("QNAP", "1")))
UPNP_DISCOVERY = Key(ULINUX_CONF, "UPnP Service", "Enable", None, "TRUE/FALSE", "firmware default not published")
