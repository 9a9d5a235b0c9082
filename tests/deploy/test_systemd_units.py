"""The shipped systemd units (deploy/systemd/): systemd itself accepts every line (``systemd-analyze verify``,
with ExecStart pointing at the installed entry points), they are hardened (the directives, and systemd's own
exposure score), the server template does not drift from the single unit, the command lines use only options
the CLIs have, and the sysusers file makes the user the server runs as."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Dict, List, Optional

import pytest

from tests.deploy.shipped import (
    PROBER_ENV,
    PROBER_UNIT,
    SERVER_ENV,
    SERVER_TEMPLATE,
    SERVER_UNIT,
    SYSUSERS,
    UNITS,
    directives,
    exec_argv,
    rewrite_exec,
    unit_environment,
)


def _systemd_analyze() -> Optional[str]:
    found = shutil.which("systemd-analyze")
    if found:
        return found
    return "/usr/bin/systemd-analyze" if Path("/usr/bin/systemd-analyze").is_file() else None


SYSTEMD_ANALYZE = _systemd_analyze()
needs_systemd = pytest.mark.skipif(SYSTEMD_ANALYZE is None,
                                   reason="systemd-analyze is not installed (apt-get install systemd): units not verified")


def systemd_version() -> int:
    assert SYSTEMD_ANALYZE is not None
    out = subprocess.run([SYSTEMD_ANALYZE, "--version"], capture_output=True, text=True, timeout=60).stdout
    match = re.match(r"systemd (\d+)", out)
    return int(match.group(1)) if match else 0


def install_copies(directory: Path, texts: Optional[Dict[str, str]] = None) -> Dict[str, Path]:
    """The units copied into ``directory`` with ExecStart on the installed entry points; ``texts`` replaces
    a unit's text (by file name) before that. Returns {file name: what to verify} (the template as an instance)."""
    directory.mkdir(parents=True, exist_ok=True)
    out = {}
    for unit in UNITS:
        text = (texts or {}).get(unit.name, unit.read_text("utf-8"))
        (directory / unit.name).write_text(rewrite_exec(text, directory))
        out[unit.name] = directory / (unit.name.replace("@.", "@8445.") if "@." in unit.name else unit.name)
    return out


def verify(paths: List[Path], directory: Path) -> List[str]:
    """What ``systemd-analyze verify`` says about these units, one run per unit (given several, with an
    instance among them, systemd 252 skipped the ones after it): every line naming a unit or the folder
    they are in, plus everything when it exits non-zero. Unknown keys and bad values are only warnings to
    systemd (exit 0), so the lines count, not the exit code alone."""
    assert SYSTEMD_ANALYZE is not None
    names = [p.name for p in paths] + [u.name for u in UNITS]
    problems: List[str] = []
    for path in paths:
        result = subprocess.run([SYSTEMD_ANALYZE, "verify", str(path)], capture_output=True, text=True, timeout=300,
                                env=dict(os.environ, SYSTEMD_LOG_COLOR="0", SYSTEMD_PAGER="", SYSTEMD_COLORS="0"))
        lines = (result.stdout + result.stderr).splitlines()
        ours = [line for line in lines if str(directory) in line or any(name in line for name in names)]
        if result.returncode != 0:
            ours = ours or lines or ["systemd-analyze verify %s exited %d" % (path.name, result.returncode)]
        problems += ours
    return problems


@needs_systemd
def test_systemd_accepts_every_line_of_the_units(tmp_path: Path) -> None:
    units = install_copies(tmp_path / "units")
    problems = verify(list(units.values()), tmp_path / "units")
    assert problems == [], "\n".join(problems)


@needs_systemd
@pytest.mark.parametrize("unit, old, new, says", [
    (SERVER_UNIT, "ProtectSystem=strict", "ProtectSystm=strict", "Unknown key"),
    (PROBER_UNIT, "ProtectSystem=strict", "ProtectSystem=stricter", "stricter"),
    (SERVER_TEMPLATE, "ProtectHome=yes", "ProtectHme=yes", "Unknown key"),
    (PROBER_UNIT, "bin/exposure-guard-prober serve", "bin/exposure-guard-prober-missing serve", "executable"),
], ids=["typo-in-key", "bad-value", "typo-in-template", "missing-binary"])
def test_verification_fails_on_a_broken_unit(tmp_path: Path, unit: Path, old: str, new: str, says: str) -> None:
    """The check above is not vacuous: one broken line in one unit makes it report that unit."""
    text = unit.read_text("utf-8")
    assert old in text
    units = install_copies(tmp_path / "units", {unit.name: text.replace(old, new, 1)})
    problems = verify(list(units.values()), tmp_path / "units")
    assert problems and any(says in line for line in problems), problems


@needs_systemd
@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_systemd_rates_the_units_exposure_ok(tmp_path: Path, unit: Path) -> None:
    """``systemd-analyze security`` scores a unit's sandbox from 0 (locked down) to 10; 2.0 or less is
    the best band it names (OK)."""
    assert_exposure_ok(install_copies(tmp_path / "units")[unit.name])


def assert_exposure_ok(unit: Path) -> None:
    """``systemd-analyze security --offline`` rates the installed copy ``unit`` 2.0 or better."""
    if systemd_version() < 250:
        pytest.skip("systemd-analyze security --offline needs systemd 250 or newer")
    result = subprocess.run([SYSTEMD_ANALYZE or "", "security", "--offline=true", "--threshold=20", "--no-pager",
                             str(unit)], capture_output=True, text=True, timeout=300,
                            env=dict(os.environ, SYSTEMD_COLORS="0"))
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert result.returncode == 0 and score, result.stdout[-3000:] + result.stderr[-2000:]
    assert float(score.group(1)) <= 2.0, result.stdout[-3000:]


# -- the directives themselves (no systemd needed) ---------------------------------------------------------

HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectKernelLogs": "yes", "ProtectControlGroups": "yes", "ProtectClock": "yes", "ProtectHostname": "yes",
    "RestrictNamespaces": "yes", "RestrictRealtime": "yes", "RestrictSUIDSGID": "yes", "LockPersonality": "yes",
    "MemoryDenyWriteExecute": "yes", "SystemCallArchitectures": "native", "CapabilityBoundingSet": "",
    "AmbientCapabilities": "", "ProtectProc": "invisible", "RemoveIPC": "yes", "PrivateMounts": "yes",
}


@pytest.mark.parametrize("unit", UNITS, ids=lambda u: u.name)
def test_units_are_hardened(unit: Path) -> None:
    service = directives(unit)
    for key, value in HARDENING.items():
        assert service.get(key) == [value], "%s: %s=%s expected, found %s" % (unit.name, key, value, service.get(key))
    # An unprivileged identity: a system user of its own (with its state directory) or a dynamic one.
    assert service.get("DynamicUser") == ["yes"] or (service.get("User") == ["exposure-guard"]
                                                     and service.get("StateDirectory")), unit.name
    assert "User" not in service or service["User"] != ["root"]
    families = service["RestrictAddressFamilies"][0].split()
    assert set(families) <= {"AF_UNIX", "AF_INET", "AF_INET6"} and "AF_INET" in families, families
    filters = service["SystemCallFilter"]
    assert filters[0] == "@system-service" and "~@privileged" in filters, filters
    assert service.get("SystemCallErrorNumber") == ["EPERM"]
    # Settings from a file under /etc/exposure-guard/, shipped as an example in deploy/env/.
    (env_file,) = service["EnvironmentFile"]
    assert env_file.startswith("/etc/exposure-guard/") and (SERVER_ENV.parent / Path(env_file).name).is_file(), env_file
    assert service.get("Restart") == ["on-failure"]
    assert parse_install(unit) == ["multi-user.target"]


def parse_install(unit: Path) -> List[str]:
    return directives(unit, "Install").get("WantedBy", [])


def test_server_listens_on_loopback_and_trusts_only_the_proxy_on_this_host() -> None:
    argv = exec_argv(SERVER_UNIT, unit_environment(SERVER_UNIT, SERVER_ENV))
    assert argv[:2] == ["/opt/exposure-guard/bin/exposure-guard-server", "serve"]
    assert option(argv, "--listen") == "127.0.0.1:8443" and option(argv, "--proxy") == "127.0.0.1", argv
    assert "--tls-cert" not in argv and "--public-metrics" not in argv  # TLS is nginx's; /metrics needs a token
    template = exec_argv(SERVER_TEMPLATE, unit_environment(SERVER_TEMPLATE, SERVER_ENV), instance="8445")
    assert option(template, "--listen") == "127.0.0.1:8445" and option(template, "--proxy") == "127.0.0.1", template
    # The database URL (a password) never goes on the command line: the server reads it from the environment.
    assert "--db" not in argv and "--db" not in template
    assert unit_environment(SERVER_UNIT)["EXPOSURE_GUARD_SERVER_DATA"] == "/var/lib/exposure-guard-server"
    assert directives(SERVER_UNIT)["StateDirectory"] == ["exposure-guard-server"]


def test_prober_listens_on_loopback_trusts_only_the_proxy_and_logs_where_logrotate_looks() -> None:
    argv = exec_argv(PROBER_UNIT, unit_environment(PROBER_UNIT, PROBER_ENV))
    assert argv[:2] == ["/opt/exposure-guard/bin/exposure-guard-prober", "serve"]
    assert option(argv, "--listen") == "127.0.0.1:8480" and option(argv, "--trusted-proxy") == "127.0.0.1/32", argv
    assert "--lab-allow" not in argv and "--token" not in argv  # tokens come from the environment file
    assert option(argv, "--log-file") == "/var/log/exposure-guard-prober/access.jsonl"
    assert directives(PROBER_UNIT)["LogsDirectory"] == ["exposure-guard-prober"]


def option(argv: List[str], name: str) -> str:
    assert argv.count(name) == 1, "%s once in %s" % (name, argv)
    return argv[argv.index(name) + 1]


def test_server_template_has_the_single_units_hardening() -> None:
    """exposure-guard-server@.service differs from exposure-guard-server.service only where the port comes from."""
    single, template = directives(SERVER_UNIT), directives(SERVER_TEMPLATE)
    for key in set(single) | set(template):
        if key in ("ExecStart", "Environment"):
            continue
        assert single.get(key) == template.get(key), "%s: %s vs %s" % (key, single.get(key), template.get(key))
    assert single["ExecStart"][0].replace("${EG_PORT}", "%i") == template["ExecStart"][0]
    assert unit_environment(SERVER_UNIT).items() - unit_environment(SERVER_TEMPLATE).items() == {("EG_PORT", "8443")}


@pytest.mark.parametrize("unit, env_file", [(SERVER_UNIT, SERVER_ENV), (SERVER_TEMPLATE, SERVER_ENV),
                                            (PROBER_UNIT, PROBER_ENV)], ids=lambda v: Path(str(v)).name)
@pytest.mark.parametrize("examples", [False, True], ids=["defaults", "every-example-enabled"])
def test_command_lines_use_only_options_the_cli_has(unit: Path, env_file: Path, examples: bool) -> None:
    """The ExecStart line, with the example file as shipped and with every commented example enabled, is
    accepted by the real argument parser of the command it runs."""
    argv = exec_argv(unit, unit_environment(unit, env_file, uncomment=examples), instance="8445")
    if "prober" in unit.name:
        from exposure_guard_prober.cli import build_parser, config_from_args

        config_from_args(parse(build_parser(), argv[1:]))
    else:
        from exposure_guard_server.addresses import parse_networks
        from exposure_guard_server.cli import build_parser, parse_listen

        args = parse(build_parser(), argv[1:])
        parse_listen(args.listen)
        parse_networks(args.proxy)
        parse_networks(args.webhook_allow_internal)


def parse(parser: argparse.ArgumentParser, argv: List[str]) -> argparse.Namespace:
    try:
        return parser.parse_args(argv)
    except SystemExit as exc:
        raise AssertionError("the CLI refuses %s (exit %s)" % (argv, exc.code)) from None


def test_env_examples_set_only_what_the_units_or_commands_read() -> None:
    """Every NAME in deploy/env/*.env is one the unit expands or the program reads."""
    known = {SERVER_ENV: {"EXPOSURE_GUARD_SERVER_DB", "EG_PORT", "EG_WORKERS", "EG_SERVER_ARGS", "EG_BACKUP_KEEP"},
             PROBER_ENV: {"EXPOSURE_GUARD_PROBER_TOKENS", "EG_PROBER_PORT", "EG_PROBER_ARGS"}}
    for env_file, names in known.items():
        found = set(re.findall(r"(?m)^#?([A-Z_][A-Z0-9_]*)=", env_file.read_text("utf-8")))
        assert found == names, (env_file.name, found ^ names)


def test_sysusers_file_creates_the_servers_user(tmp_path: Path) -> None:
    tool = shutil.which("systemd-sysusers")
    if tool is None:
        pytest.skip("systemd-sysusers is not installed (apt-get install systemd)")
    (tmp_path / "etc").mkdir()
    result = subprocess.run([tool, "--root", str(tmp_path), str(SYSUSERS)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    (user,) = directives(SERVER_UNIT)["User"]
    entry = [line.split(":") for line in (tmp_path / "etc" / "passwd").read_text().splitlines() if line.startswith(user + ":")]
    assert entry, (tmp_path / "etc" / "passwd").read_text()
    name, _x, uid, gid, _gecos, home, shell = entry[0]
    assert 0 < int(uid) < 1000 and home == "/var/lib/exposure-guard-server" and shell.endswith("nologin"), entry
    assert any(line.startswith("%s:x:%s:" % (directives(SERVER_UNIT)["Group"][0], gid))
               for line in (tmp_path / "etc" / "group").read_text().splitlines())
