"""The settings an owner changes from the page: mode, check interval, callback prober. Each value is checked
with the same parser as the settings file; the file is changed in place (comments and other keys kept),
written atomically after a copy of the previous version (``<file>.bak``), and read back whole before the
change counts. A value that does not parse changes nothing."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, List, Tuple

from exposure_guard.atomicio import atomic_write
from exposure_guard.errors import SettingsError
from exposure_guard.qts.config import ConfigDocument, read_bytes_capped
from exposure_guard.settings import Settings, load_settings, parse_option

EDITABLE: List[Tuple[str, str, str]] = [
    ("agent", "mode", "Mode (report: only report; fix: also apply the safe fixes by itself)"),
    ("agent", "interval", "Check every (e.g. 1h, 30m, 3600)"),
    ("reachability", "prober_url", "Callback prober URL (empty: no check from the internet)"),
]


def current_values(settings: Settings) -> Dict[str, str]:
    out = {}
    for section, key, _label in EDITABLE:
        value = settings.get(section, key)
        out["%s.%s" % (section, key)] = str(value) if value is not None else ""
    return out


def apply(settings: Settings, fields: Dict[str, str]) -> Settings:
    """Write the changed values to the settings file; returns the settings read back. SettingsError (nothing
    written) when a value is invalid or there is no settings file to change."""
    path = settings.path
    if path is None:
        raise SettingsError("this agent runs without a settings file, so there is nothing to change here")
    wanted: Dict[Tuple[str, str], str] = {}
    for section, key, _label in EDITABLE:
        name = "%s.%s" % (section, key)
        if name not in fields:
            continue
        raw = fields[name].strip()
        if any(ch in raw for ch in "\r\n\0") or len(raw) > 500:
            raise SettingsError("[%s] %s: one line of at most 500 characters, please" % (section, key))
        parse_option(section, key, raw, "the page")  # raises SettingsError with the allowed values
        wanted[(section, key)] = raw
    try:
        before = read_bytes_capped(Path(path))
    except FileNotFoundError:
        before = b""
    except OSError as exc:
        raise SettingsError("cannot read %s: %s" % (path, exc.strerror)) from None
    after = before
    for (section, key), raw in wanted.items():
        after = ConfigDocument(after).with_value(section, key, raw)
    if after == before:
        return settings
    backup = Path(str(path) + ".bak")
    try:
        if before:
            atomic_write(backup, before, mode=0o600)
        atomic_write(Path(path), after, mode=0o600)
    except OSError as exc:
        raise SettingsError("cannot write %s: %s; nothing was changed" % (path, exc.strerror or exc)) from None
    try:
        return load_settings(Path(path), environ=os.environ, required=True)
    except SettingsError:
        atomic_write(Path(path), before, mode=0o600)  # put the working file back
        raise
