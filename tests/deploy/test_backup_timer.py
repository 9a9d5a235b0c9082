"""The shipped daily backup (deploy/systemd/exposure-guard-backup.service and .timer): systemd accepts both,
the service has the server's hardening and reads the server's settings, and its own command line, run as
systemd would run it, writes dated private backups, keeps the newest EG_BACKUP_KEEP and touches nothing
else; a backup it wrote restores."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path
from typing import List

import pytest

from exposure_guard_server.backup import BACKUP_NAME, backup_into
from tests.deploy.shipped import (
    BACKUP_TIMER,
    BACKUP_UNIT,
    SERVER_ENV,
    SERVER_UNIT,
    directives,
    exec_argv,
    python_argv,
    rewrite_exec,
    unit_environment,
)
from tests.deploy.test_systemd_units import HARDENING, assert_exposure_ok, needs_systemd, verify
from tests.support.serverproc import cli, pg_database

BACKUP_DIR = "/var/lib/exposure-guard-backup"


def _installed(directory: Path) -> List[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    out = []
    for unit in (BACKUP_UNIT, BACKUP_TIMER):
        (directory / unit.name).write_text(rewrite_exec(unit.read_text("utf-8"), directory))
        out.append(directory / unit.name)
    return out


@needs_systemd
def test_systemd_accepts_the_backup_service_and_timer(tmp_path: Path) -> None:
    units = _installed(tmp_path / "units")
    assert verify(units, tmp_path / "units") == []
    broken = (tmp_path / "units" / BACKUP_TIMER.name)
    broken.write_text(broken.read_text().replace("OnCalendar=daily", "OnCalendar=dayly"))
    assert any("dayly" in line or "OnCalendar" in line for line in verify([broken], tmp_path / "units"))


@needs_systemd
def test_systemd_rates_the_backup_services_exposure_ok(tmp_path: Path) -> None:
    assert_exposure_ok(_installed(tmp_path / "units")[0])


def test_backup_service_runs_as_the_server_with_its_settings_and_hardening() -> None:
    backup, server = directives(BACKUP_UNIT), directives(SERVER_UNIT)
    for key, value in HARDENING.items():
        assert backup.get(key) == [value], "%s=%s expected, found %s" % (key, value, backup.get(key))
    for key in ("User", "Group", "EnvironmentFile", "RestrictAddressFamilies", "SystemCallFilter", "UMask"):
        assert backup[key] == server[key], key
    assert backup["Type"] == ["oneshot"] and "Restart" not in backup
    assert backup["StateDirectory"] == ["exposure-guard-server exposure-guard-backup"]
    assert backup["StateDirectoryMode"] == ["0700"]
    argv = exec_argv(BACKUP_UNIT, unit_environment(BACKUP_UNIT, SERVER_ENV, uncomment=True))
    assert argv[1:] == ["backup", "--into", BACKUP_DIR, "--keep", "14"] and "--db" not in argv
    assert unit_environment(BACKUP_UNIT)["EXPOSURE_GUARD_SERVER_DATA"] == \
        unit_environment(SERVER_UNIT)["EXPOSURE_GUARD_SERVER_DATA"]
    timer = directives(BACKUP_TIMER, "Timer")
    assert timer["OnCalendar"] == ["daily"] and timer["Persistent"] == ["true"]
    assert directives(BACKUP_TIMER, "Install")["WantedBy"] == ["timers.target"]


@pytest.mark.parametrize("engine_name", ["sqlite", "postgresql"])
def test_the_units_command_writes_private_dated_backups_and_keeps_the_newest(engine_name: str, tmp_path: Path) -> None:
    if engine_name == "sqlite":
        db_url = "sqlite:///%s" % (tmp_path / "server" / "exposure-guard.db")
    else:
        db_url = pg_database("eg_backup_timer_%d" % os.getpid()) or ""
        if not db_url:
            pytest.skip("needs PostgreSQL: set EXPOSURE_GUARD_TEST_PG_URL (.ci/run starts one)")
    cli("init", "--db", db_url)
    backups = tmp_path / "backups"
    argv = exec_argv(BACKUP_UNIT, unit_environment(BACKUP_UNIT, SERVER_ENV, overrides={"EG_BACKUP_KEEP": "2"}))
    argv = [backups.as_posix() if word == BACKUP_DIR else word for word in python_argv(argv)]
    env = dict(os.environ, EXPOSURE_GUARD_SERVER_DB=db_url)
    backups.mkdir(mode=0o700)
    (backups / "notes.txt").write_text("mine")  # not a backup this command made: never removed
    (backups / "eg-old.backup").write_text("mine too")
    written = []
    for run in range(3):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=300, env=env)
        assert result.returncode == 0, result.stderr
        written.append(result.stdout.split(" written to ")[1].split(":")[0])
        if run == 2:
            assert "removed 1 older backup(s), keeping the newest 2" in result.stdout, result.stdout
    names = sorted(p.name for p in backups.iterdir())
    kept = [n for n in names if BACKUP_NAME.match(n)]
    assert set(kept) == {Path(w).name for w in written[1:]}, (names, written)  # the newest 2, the oldest removed
    assert not Path(written[0]).exists() and all(Path(w).exists() for w in written[1:])
    assert {"notes.txt", "eg-old.backup"} <= set(names)
    for path in written[1:]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    restored = "sqlite:///%s" % (tmp_path / "restored.db") if engine_name == "sqlite" else \
        pg_database("eg_backup_timer_restored_%d" % os.getpid()) or ""
    out = cli("restore", "--db", restored, written[-1]).stdout
    assert "schema revision" in out


def test_backups_in_the_same_second_are_numbered_and_pruned_oldest_first(tmp_path: Path) -> None:
    db_url = "sqlite:///%s" % (tmp_path / "eg.db")
    cli("init", "--db", db_url)
    moment = 1_800_000_000.0
    made = [backup_into(db_url, tmp_path / "b", keep=2, now=moment)[0].name for _ in range(3)]
    assert made == ["eg-20270115T080000Z.backup", "eg-20270115T080000Z-1.backup", "eg-20270115T080000Z-2.backup"]
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == sorted(made[1:])
    assert stat.S_IMODE((tmp_path / "b").stat().st_mode) == 0o700
    later, _kind, removed = backup_into(db_url, tmp_path / "b", keep=1, now=moment + 86400)
    assert later.name == "eg-20270116T080000Z.backup" and sorted(p.name for p in removed) == sorted(made[1:])
    refused = cli("backup", "--db", db_url, "--into", str(tmp_path / "b"), "--keep", "0", check=False)
    assert refused.returncode != 0 and "--keep must be 1 or more" in refused.stderr
    both = cli("backup", "--db", db_url, str(tmp_path / "x.backup"), "--into", str(tmp_path / "b"), check=False)
    assert both.returncode != 0 and "either a backup FILE or --into DIR" in both.stderr
