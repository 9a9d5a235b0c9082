"""Settings precedence and error messages that name file, line, key and the allowed values."""

from __future__ import annotations

from pathlib import Path

import pytest

from exposure_guard.errors import SettingsError
from exposure_guard.settings import default_settings_text, load_settings, parse_duration


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "exposure-guard.ini"
    path.write_text(text)
    return path


def test_defaults():
    s = load_settings(None, environ={})
    assert s.mode == "report" and s.get("agent", "interval") == 3600
    assert s.policy("myqnapcloud.upnp-forwarding") == "report"


def test_precedence_default_file_env_cli(tmp_path: Path):
    path = write(tmp_path, "[agent]\nmode = fix\ninterval = 15m\n")
    s = load_settings(path, environ={})
    assert s.mode == "fix" and s.get("agent", "interval") == 900
    assert s.sources["agent.mode"].endswith(":2")
    s = load_settings(path, environ={"EXPOSURE_GUARD_AGENT_MODE": "report"})
    assert s.mode == "report" and s.sources["agent.mode"] == "environment"
    s = s.with_overrides({("agent", "mode"): "fix"})
    assert s.mode == "fix" and s.sources["agent.mode"] == "command line"


def test_shipped_default_file_is_valid_and_matches_defaults(tmp_path: Path):
    s = load_settings(write(tmp_path, default_settings_text()), environ={}, required=True)
    d = load_settings(None, environ={})
    for key in ("mode", "interval", "fail_on"):
        assert s.get("agent", key) == d.get("agent", key)


@pytest.mark.parametrize(
    "text,line,fragment",
    [
        ("[agent]\nmode = fix\nmode2 = x\n", 3, "unknown setting [agent] mode2; known keys in [agent]"),
        ("[agent]\n\nmode = sometimes\n", 3, "allowed: one of: report, fix"),
        ("[agent]\ninterval = 5s\n", 2, "between 1m and 7d"),
        ("[agent]\ninterval = soon\n", 2, "a duration like"),
        ("[nope]\nx = 1\n", 2, "unknown setting [nope] x; known sections"),
        ("[checks]\nservice.telnet = always\n", 2, "allowed: report, fix, ignore"),
        ("[server]\nurl = ftp://x\n", 2, "an http:// or https:// URL"),
        ("[agent]\nmode = fix\n[agent]\nmode = report\n", 3, "cannot parse settings"),
        ("mode = fix\n", 1, "cannot parse settings"),
    ],
)
def test_bad_values_name_file_line_key_and_allowed(tmp_path: Path, text: str, line: int, fragment: str):
    path = write(tmp_path, text)
    with pytest.raises(SettingsError) as info:
        load_settings(path, environ={})
    message = str(info.value)
    assert message.startswith("%s:%d: " % (path, line)), message
    assert fragment in message


@pytest.mark.parametrize("text,fragment", [
    ("[checks]\nno.such-check = fix\n", "unknown check id 'no.such-check'"),
    ("[checks]\nservice.ssh = fix\n", "has no automatic fix; allowed: report, ignore"),
])
def test_check_ids_are_validated_against_the_catalogue_naming_the_line(tmp_path: Path, text: str, fragment: str):
    """The settings reader knows no check; the runner validates [checks] before any check runs."""
    from exposure_guard.checks.runner import validate_policies

    path = write(tmp_path, "[agent]\nmode = report\n" + text)
    settings = load_settings(path, environ={})
    with pytest.raises(SettingsError) as info:
        validate_policies(settings)
    message = str(info.value)
    assert message.startswith("%s:4: " % path), message
    assert fragment in message


def test_bad_environment_value_is_named():
    with pytest.raises(SettingsError, match="EXPOSURE_GUARD_AGENT_MODE.*allowed: one of: report, fix"):
        load_settings(None, environ={"EXPOSURE_GUARD_AGENT_MODE": "loud"})


def test_binary_and_missing_files(tmp_path: Path):
    path = tmp_path / "bin.ini"
    path.write_bytes(b"[agent]\nmode = \xff\xfe\n")
    with pytest.raises(SettingsError, match="not UTF-8"):
        load_settings(path, environ={})
    with pytest.raises(SettingsError, match="does not exist"):
        load_settings(tmp_path / "missing.ini", environ={}, required=True)
    assert load_settings(tmp_path / "missing.ini", environ={}).mode == "report"


def test_policy_per_check(tmp_path: Path):
    s = load_settings(write(tmp_path, "[agent]\nmode = fix\n[checks]\nservice.telnet = report\n"
                                      "upnp.nas-discovery = ignore\n"), environ={})
    assert s.policy("service.telnet") == "report"
    assert s.policy("myqnapcloud.upnp-forwarding") == "fix"
    assert s.policy("upnp.nas-discovery") == "ignore"


@pytest.mark.parametrize("text,seconds", [("90", 90), ("30s", 30), ("15m", 900), ("1h", 3600), ("2D", 172800)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds
