"""Agent settings: built-in defaults < ini file < ``EXPOSURE_GUARD_<SECTION>_<KEY>`` env < CLI flags.

Every option is declared once in ``OPTIONS``; unknown keys and bad values are errors that name the file,
line, key and the allowed values. Per-check policies live in ``[checks]`` as ``<check id> = report|fix|ignore``
or ``<check id> = accept until YYYY-MM-DD: reason`` (an accepted risk).
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from exposure_guard.contracts import SEVERITIES, Value
from exposure_guard.errors import SettingsError

MODES = ("report", "fix")
POLICIES = ("report", "fix", "ignore")
SEVERITY_NAMES = SEVERITIES

_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$", re.IGNORECASE)
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """``90``, ``30s``, ``15m``, ``1h``, ``2d`` → seconds (at least 60 for the schedule)."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError("a duration like 90s, 15m, 1h or 1d")
    return int(match.group(1)) * _UNIT[match.group(2).lower()]


def _interval(text: str) -> int:
    seconds = parse_duration(text)
    if not 60 <= seconds <= 7 * 86400:
        raise ValueError("between 1m and 7d")
    return seconds


def _choice(*allowed: str) -> Callable[[str], str]:
    def parse(text: str) -> str:
        value = text.strip().lower()
        if value not in allowed:
            raise ValueError("one of: " + ", ".join(allowed))
        return value

    parse.allowed = allowed  # type: ignore[attr-defined]
    return parse


def _url(text: str) -> str:
    value = text.strip()
    if value and not re.match(r"^https?://[^\s/]+", value):
        raise ValueError("empty, or an http:// or https:// URL")
    return value.rstrip("/")


def _text(text: str) -> str:
    return text.strip()


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("true or false")


def _positive_float(text: str) -> float:
    value = float(text)
    if not 0 < value <= 600:
        raise ValueError("a number of seconds between 0 and 600")
    return value


def _int_range(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text.strip())
        if not low <= value <= high:
            raise ValueError("a whole number from %d to %d" % (low, high))
        return value

    return parse


def _address_list(text: str) -> Tuple[str, ...]:
    import ipaddress

    out = []
    for part in text.replace(",", " ").split():
        ipaddress.ip_address(part)  # raises ValueError with a clear type
        out.append(part)
    return tuple(out)


class Option(Value):
    __slots__ = ("parse", "default", "help")

    def __init__(self, parse: Callable[[str], Any], default: str, help: str) -> None:
        self.parse = parse
        self.default = default
        self.help = help


# (section, key) -> Option: every agent setting, declared once. ``[checks]`` (per-check policies) is not here:
# its ids are validated against the catalogue by the check runner.
OPTIONS: Dict[Tuple[str, str], Option] = {
    ("agent", "mode"): Option(_choice(*MODES), "report", "report: only report; fix: apply the safe fixes"),
    ("agent", "interval"): Option(_interval, "1h", "how often `run` checks (jitter up to 10% is added)"),
    ("agent", "fail_on"): Option(_choice(*SEVERITY_NAMES), "low", "lowest severity that makes `check` exit 1"),
    ("agent", "lan_addresses"): Option(_address_list, "", "extra addresses of this NAS (space separated)"),
    ("router", "igd_url"): Option(_url, "", "the router's IGD description URL; empty: find it by SSDP"),
    ("router", "fix_scope"): Option(
        _choice("management", "all"), "management", "which mappings `fix` deletes: management ports only, or all"
    ),
    ("router", "discovery_timeout"): Option(_positive_float, "2", "seconds to wait for SSDP answers"),
    ("router", "discover"): Option(
        _choice("auto", "yes", "no"), "auto",
        "search the LAN for the router by SSDP: auto = only when checking the live system (--root /)",
    ),
    ("reachability", "prober_url"): Option(_url, "", "callback prober; empty: reachability checks are skipped"),
    ("reachability", "token"): Option(_text, "", "bearer token for the prober, if it requires one"),
    ("reachability", "timeout"): Option(_positive_float, "20", "seconds to wait for the prober"),
    ("reachability", "ca_file"): Option(_text, "", "CA bundle for the prober's HTTPS (default: system)"),
    ("reachability", "local_probe"): Option(
        _choice("auto", "yes", "no"), "auto",
        "connect to this NAS's own ports (loopback, its LAN addresses) to fingerprint them: auto = only when "
        "checking the live system (--root /)",
    ),
    ("server", "url"): Option(_url, "", "central check-in server; empty: no check-in"),
    ("server", "ca_file"): Option(_text, "", "CA bundle for the server's HTTPS (default: system)"),
    ("server", "verify_tls"): Option(_bool, "true", "verify the server's certificate (keep true)"),
    ("server", "spool_max"): Option(_int_range(1, 100000), "1000", "undelivered reports kept; oldest dropped"),
}


class Acceptance:
    """``[checks] ID = accept until YYYY-MM-DD: reason``: the owner knows this finding fails and accepts it
    until that day (UTC). The check still runs and reports ``fail``; until then it does not count toward
    the verdict or ``--fail-on``, and it counts again by itself from the day after."""

    def __init__(self, until: _dt.date, reason: str, source: str) -> None:
        self.until, self.reason, self.source = until, reason, source

    def active(self, today: _dt.date) -> bool:
        return today <= self.until

    def __repr__(self) -> str:
        return "Acceptance(%s, %r)" % (self.until.isoformat(), self.reason)


ACCEPT = re.compile(r"^accept\b\s*(?:until\s+(?P<until>\S+?))?\s*(?::\s*(?P<reason>.*))?$", re.IGNORECASE | re.DOTALL)
MAX_REASON = 300


def parse_acceptance(key: str, value: str, file: str, line: int) -> Acceptance:
    """``accept until YYYY-MM-DD: reason``; a missing or wrong date, or no reason, is an error naming the line."""
    form = "write it as `%s = accept until YYYY-MM-DD: why`" % key
    match = ACCEPT.match(value.strip())
    if match is None or not match.group("until"):
        raise SettingsError("[checks] %s: an accepted risk needs the day it ends; %s" % (key, form),
                            file=file, line=line, key=key)
    try:
        until = _dt.date.fromisoformat(match.group("until"))
    except ValueError:
        raise SettingsError("[checks] %s: %r is not a date (YYYY-MM-DD); %s" % (key, match.group("until")[:20], form),
                            file=file, line=line, key=key) from None
    reason = (match.group("reason") or "").strip()
    if not reason:
        raise SettingsError("[checks] %s: an accepted risk needs a reason after the date; %s" % (key, form),
                            file=file, line=line, key=key)
    if len(reason) > MAX_REASON or any(ord(c) < 32 or ord(c) == 127 for c in reason):
        raise SettingsError("[checks] %s: the reason must be one line of at most %d characters; %s"
                            % (key, MAX_REASON, form),
                            file=file, line=line, key=key)
    return Acceptance(until, reason, "%s:%d" % (file, line))


class Settings:
    """Resolved settings. ``get(section, key)`` returns parsed values; ``sources`` says where each came from."""

    def __init__(self, values: Dict[Tuple[str, str], Any], policies: Dict[str, str], sources: Dict[str, str],
                 path: Optional[Path], acceptances: Optional[Dict[str, Acceptance]] = None) -> None:
        self._values = values
        self.policies = policies
        self.sources = sources
        self.path = path
        self.acceptances: Dict[str, Acceptance] = acceptances if acceptances is not None else {}

    def get(self, section: str, key: str) -> Any:
        return self._values[(section, key)]

    @property
    def mode(self) -> str:
        return self.get("agent", "mode")

    def policy(self, check_id: str) -> str:
        """report | fix | ignore for one check: its own override, else the agent mode."""
        return self.policies.get(check_id, "fix" if self.mode == "fix" else "report")

    def with_overrides(self, overrides: Mapping[Tuple[str, str], str], source: str = "command line") -> Settings:
        values = dict(self._values)
        sources = dict(self.sources)
        for (section, key), raw in overrides.items():
            values[(section, key)] = _parse_value(section, key, raw, source, 0)
            sources["%s.%s" % (section, key)] = source
        return Settings(values, dict(self.policies), sources, self.path, dict(self.acceptances))


def _parse_value(section: str, key: str, raw: str, file: str, line: int) -> Any:
    option = OPTIONS[(section, key)]
    try:
        return option.parse(raw)
    except ValueError as exc:
        allowed = str(exc) or "a valid value"
        raise SettingsError(
            "[%s] %s = %r is not valid; allowed: %s" % (section, key, raw, allowed), file=file, line=line, key=key
        ) from None


def parse_option(section: str, key: str, raw: str, source: str) -> Any:
    """One setting's value as the settings file would give it; SettingsError naming the allowed values."""
    return _parse_value(section, key, raw, source, 0)


def _line_numbers(text: str) -> Dict[Tuple[str, str], int]:
    lines: Dict[Tuple[str, str], int] = {}
    section = ""
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if stripped.startswith("[") and "]" in stripped:
            section = stripped[1 : stripped.index("]")].strip().lower()
        elif stripped and stripped[0] not in "#;" and ("=" in stripped or ":" in stripped):
            key = re.split(r"[=:]", stripped, maxsplit=1)[0].strip().lower()
            lines.setdefault((section, key), number)
    return lines


def load_settings(path: Optional[Path] = None, environ: Optional[Mapping[str, str]] = None,
                  required: bool = False) -> Settings:
    """Defaults, then the ini file (when it exists; ``required`` makes a missing one an error), then env."""
    environ = os.environ if environ is None else environ
    values: Dict[Tuple[str, str], Any] = {}
    sources: Dict[str, str] = {}
    policies: Dict[str, str] = {}
    acceptances: Dict[str, Acceptance] = {}
    for (section, key), option in OPTIONS.items():
        values[(section, key)] = option.parse(option.default)
        sources["%s.%s" % (section, key)] = "default"
    if path is not None:
        _read_file(Path(path), values, sources, policies, required, acceptances)
    _read_environment(environ, values, sources, policies)
    return Settings(values, policies, sources, Path(path) if path else None, acceptances)


def _read_file(path: Path, values: Dict[Tuple[str, str], Any], sources: Dict[str, str],
               policies: Dict[str, str], required: bool, acceptances: Dict[str, Acceptance]) -> None:
    shown = str(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise SettingsError("settings file does not exist", file=shown) from None
        return
    except OSError as exc:
        raise SettingsError("settings file cannot be read: %s" % exc.strerror, file=shown) from None
    if len(raw) > 1024 * 1024:
        raise SettingsError("settings file is larger than 1 MiB; is it the right file?", file=shown)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SettingsError("not UTF-8 text (byte %d)" % exc.start, file=shown, line=line) from None
    import configparser  # only when there is a file to read

    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"), strict=True)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text, source=shown)
    except configparser.Error as exc:
        line = getattr(exc, "lineno", 0) or 0
        message = str(exc).splitlines()[0]
        raise SettingsError("cannot parse settings: %s" % message, file=shown, line=line) from None
    lines = _line_numbers(text)
    for section in parser.sections():
        sec = section.strip().lower()
        for key, value in parser.items(section):
            norm = key.strip().lower()
            line = lines.get((sec, norm), 0)
            if sec == "checks":
                # Whether the id exists and has a fix is checked against the catalogue by the check runner.
                policy = value.strip().lower()
                if policy.startswith("accept"):  # still checked and reported, never fixed by the daemon
                    acceptances[norm] = parse_acceptance(key, value, shown, line)
                    policy = "report"
                if policy not in POLICIES:
                    raise SettingsError(
                        "[checks] %s = %r is not valid; allowed: %s, or accept until YYYY-MM-DD: reason"
                        % (key, value, ", ".join(POLICIES)),
                        file=shown, line=line, key=key,
                    )
                policies[norm] = policy
                sources["checks." + norm] = "%s:%d" % (shown, line)
                continue
            if (sec, norm) not in OPTIONS:
                allowed = sorted(k for s, k in OPTIONS if s == sec)
                hint = ("known keys in [%s]: %s" % (sec, ", ".join(allowed))) if allowed else (
                    "known sections: %s, checks" % ", ".join(sorted({s for s, _ in OPTIONS})))
                raise SettingsError("unknown setting [%s] %s; %s" % (section, key, hint), file=shown, line=line,
                                    key=key)
            values[(sec, norm)] = _parse_value(sec, norm, value, shown, line)
            sources["%s.%s" % (sec, norm)] = "%s:%d" % (shown, line)


def _read_environment(environ: Mapping[str, str], values: Dict[Tuple[str, str], Any], sources: Dict[str, str],
                      policies: Dict[str, str]) -> None:
    for (section, key) in OPTIONS:
        name = "EXPOSURE_GUARD_%s_%s" % (section.upper(), key.upper())
        if name in environ:
            values[(section, key)] = _parse_value(section, key, environ[name], "environment " + name, 0)
            sources["%s.%s" % (section, key)] = "environment"


def default_settings_text() -> str:
    return (Path(__file__).with_name("data") / "exposure-guard.ini").read_text("utf-8")
