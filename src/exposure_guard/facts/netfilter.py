"""What QuFirewall really enforces: its ``QUFIREWALL`` chain in the live netfilter rules (``iptables-save -t
filter``; QuFirewall's own rule files are not documented, the kernel's rules are the ground truth). Read
only on the live NAS (``QtsRoot.tool``), bounded in time and size, and judged conservatively: the chain
admits only LAN sources when every ACCEPT before its final DROP/REJECT is limited to loopback, a private
or link-local source, or established connections. Anything this reader does not understand (ipsets,
GeoIP matches, jumps to other chains) leaves the answer undecided, never "LAN only"."""

from __future__ import annotations

import ipaddress
import shlex
import subprocess
from typing import List, Optional

from exposure_guard.contracts import Value
from exposure_guard.qts.root import QtsRoot

CHAIN = "QUFIREWALL"
TOOLS = ("sbin/iptables-save", "usr/sbin/iptables-save")
MAX_OUTPUT = 2 * 1024 * 1024
MAX_RULES = 2000
TIMEOUT = 10.0
ESTABLISHED = ("RELATED,ESTABLISHED", "ESTABLISHED,RELATED", "ESTABLISHED")


class ChainVerdict(Value):
    """``lan_only``: True (only LAN sources reach the NAS), False (public sources are accepted or the chain
    does not end in a drop), None (this reader cannot tell); ``reason`` says why."""

    __slots__ = ("found", "lan_only", "reason", "rules")

    def __init__(self, found: bool, lan_only: Optional[bool], reason: str, rules: int) -> None:
        self.found = found
        self.lan_only = lan_only
        self.reason = reason
        self.rules = rules

    def to_dict(self) -> dict:
        return {"chain": CHAIN, "found": self.found, "lan_only": self.lan_only, "reason": self.reason,
                "rules": self.rules, "read_with": "iptables-save -t filter"}


# What "LAN" means here: RFC 1918, loopback, link-local and IPv6 ULA. (Python's is_private also counts the
# documentation ranges, which are public addresses as far as a firewall rule is concerned.)
LAN_NETWORKS = tuple(ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8",
                                                       "169.254.0.0/16", "fc00::/7", "fe80::/10", "::1/128"))


def _private(network: str) -> bool:
    """True when the rule's source is one network inside a LAN range."""
    if "," in network:
        return False
    try:
        net = ipaddress.ip_network(network, strict=False)
    except ValueError:
        return False
    return any(net.version == lan.version and net.subnet_of(lan) for lan in LAN_NETWORKS)  # type: ignore[arg-type]


def _value(rule: List[str], flag: str) -> Optional[str]:
    """The argument after ``flag`` in a rule, or None."""
    if flag in rule:
        index = rule.index(flag)
        if index + 1 < len(rule):
            return rule[index + 1]
    return None


def judge_chain(text: str, chain: str = CHAIN) -> ChainVerdict:
    rules: List[List[str]] = []
    for line in text.splitlines():
        if line.startswith("-A %s " % chain):
            try:
                rules.append(shlex.split(line)[2:])
            except ValueError:
                return ChainVerdict(True, None, "a rule of %s cannot be read: %r" % (chain, line[:120]), len(rules))
            if len(rules) > MAX_RULES:
                return ChainVerdict(True, None, "%s has more than %d rules: not judged" % (chain, MAX_RULES), len(rules))
    if not rules and (":%s " % chain) not in text:
        return ChainVerdict(False, None, "no %s chain: QuFirewall's rules are not loaded" % chain, 0)
    for index, rule in enumerate(rules, start=1):
        target = _value(rule, "-j") or ""
        if target in ("DROP", "REJECT"):
            rest = list(rule)
            for flag in ("-j", "--reject-with"):
                if flag in rest:
                    at = rest.index(flag)
                    del rest[at:at + 2]
            if rest:
                continue  # a drop of something specific: the rules after it still decide the rest
            return ChainVerdict(True, True, "every ACCEPT before rule %d (a final %s) admits only LAN, loopback or "
                                "established traffic" % (index, target), len(rules))
        if target != "ACCEPT":
            return ChainVerdict(True, None, "rule %d jumps to %s: not judged" % (index, target or "?"), len(rules))
        if _value(rule, "-i") == "lo" or (_value(rule, "--ctstate") or _value(rule, "--state")) in ESTABLISHED:
            continue
        if "--match-set" in rule or "geoip" in " ".join(rule).lower():
            return ChainVerdict(True, None, "rule %d accepts by an address set or country: not judged" % index,
                                len(rules))
        source = _value(rule, "-s")
        if source is None or "!" in rule:
            return ChainVerdict(True, False, "rule %d accepts any source" % index, len(rules))
        if not _private(source):
            return ChainVerdict(True, False, "rule %d accepts the public source %s" % (index, source[:60]), len(rules))
    return ChainVerdict(True, False, "%s does not end in a DROP or REJECT of everything else" % chain, len(rules))


def read_chain(root: QtsRoot) -> Optional[ChainVerdict]:
    """The QUFIREWALL chain as the kernel has it; None where this run may not or cannot ask (not the live
    NAS, no iptables-save, it failed)."""
    tool = next((t for t in (root.tool(name) for name in TOOLS) if t), None)
    if tool is None:
        return None
    try:
        proc = subprocess.run([tool, "-t", "filter"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                              stdin=subprocess.DEVNULL, timeout=TIMEOUT, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    if proc.returncode != 0 or len(proc.stdout) > MAX_OUTPUT:
        return None
    return judge_chain(proc.stdout.decode("utf-8", "replace"))
