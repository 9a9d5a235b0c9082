"""Install, upgrade and remove the built .qpkg in a simulated QTS (tests/support/qts_rig.py), run by busybox
sh and bash.

The package file itself is executed (``sh ExposureGuard_<ver>.qpkg``) exactly as App Center's manual
install does; the QTS commands it calls are test doubles, the agent it starts is the real one, on
Python 3.8, inside a network namespace with no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Dict, Optional

import pytest

from tests.support.paths import REPO
from tests.support.qpkg_build import Built
from tests.support.qts_rig import QPKG_DIR, RIG_SKIPS, Rig, find_python38
from tests.support.wait import wait_for

NAME = "ExposureGuard"
PKG_DIR = QPKG_DIR + "/" + NAME
SERVICE = "/etc/init.d/exposure-guard.sh"
NAS_TREE = REPO / "tests/fixtures/qts/exposed"
WEBUI = "/cgi-bin/qpkg/%s/index.cgi" % NAME
WEBUI_DIR = "/home/httpd/cgi-bin/qpkg/" + NAME

pytestmark = RIG_SKIPS


def install(rig: Rig, package: Built, env: Optional[Dict[str, str]] = None):
    """Copy the package onto the NAS and run it with the rig's /bin/sh, like App Center does."""
    target = "/share/CACHEDEV1_DATA/Public/" + package.path.name
    shutil.copy(str(package.path), str(rig.path(target)))
    started = time.monotonic()
    proc = rig.run("sh " + target, env=env)
    return proc, time.monotonic() - started


def report(rig: Rig) -> Optional[dict]:
    path = rig.path(PKG_DIR + "/var/last-report.json")
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError:
        return None


def report_of_version(rig: Rig, version: str) -> Optional[dict]:
    document = report(rig)
    return document if document and document["agent"]["version"] == version else None


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture(params=["busybox", "bash"])
def rig(request, tmp_path):
    with Rig(tmp_path, shell=request.param, python=find_python38(), nas_tree=NAS_TREE) as simulated:
        yield simulated


@pytest.fixture
def busybox_rig(tmp_path):
    with Rig(tmp_path, shell="busybox", python=find_python38(), nas_tree=NAS_TREE) as simulated:
        yield simulated


# ---------------------------------------------------------------------------------------------------------

def check_installed(rig: Rig, package: Built) -> None:
    qdir = rig.path(PKG_DIR)
    for rel, executable in (("exposure-guard.sh", True), ("etc/exposure-guard.ini", False),
                            ("etc/exposure-guard.ini.default", False), ("lib/exposure_guard/__main__.py", False),
                            ("lib/requests/__init__.py", False), (".qpkg_icon.gif", False), (".list", False),
                            (".uninstall.sh", True)):
        assert (qdir / rel).is_file(), rel
        assert bool((qdir / rel).stat().st_mode & 0o111) == executable, rel
    assert (qdir / "var").stat().st_mode & 0o777 == 0o700
    assert not rig.path(QPKG_DIR + "/.tmp-" + NAME).exists(), "the extract dir is removed"

    section = rig.ini("/etc/config/qpkg.conf")[NAME]
    assert section["Name"] == NAME
    assert section["Display_Name"] == NAME
    assert section["Version"] == package.version
    assert section["Author"] == "ExposureGuard"
    assert section["QPKG_File"] == "ExposureGuard.qpkg"
    assert section["Shell"] == PKG_DIR + "/exposure-guard.sh"
    assert section["Install_Path"] == PKG_DIR
    assert section["RC_Number"] == "190"
    assert section["Enable"] == "TRUE"
    assert section["Build"] == "20231114"  # built_info from SOURCE_DATE_EPOCH=1700000000
    assert len(section["Date"]) == 10 and section["Date"][4] == "-"
    assert section["FW_Ver_Min"] == "4.3.0"
    assert section["Status"] == "complete"  # as App Center and real packages write it after an install
    # the agent was compiled at install with the NAS's Python (3.8 here): the first check is not slower
    assert list((qdir / "lib/exposure_guard/__pycache__").glob("cli.cpython-38.pyc")), "precompiled bytecode"
    assert section["cfg:etc/exposure-guard.ini"] == md5(qdir / "etc/exposure-guard.ini.default")
    assert rig.ini("/etc/config/qpkg.conf")["Python3"]["Install_Path"] == QPKG_DIR + "/Python3"

    # the page: declared for App Center and the QTS desktop, linked into QTS's admin web server, answering
    # as its CGI script (without a QTS session: 401 and nothing else)
    assert (section["WebUI"], section["Desktop"], section["Win_Width"], section["Win_Height"], section["Visible"]) \
        == (WEBUI, "1", "1100", "600", "1")
    assert os.readlink(str(rig.path(WEBUI_DIR))) == PKG_DIR + "/ui"
    assert (qdir / "ui/index.cgi").stat().st_mode & 0o111 and (qdir / "ui/.htaccess").is_file()
    answer = rig.run(WEBUI_DIR + "/index.cgi 2>/dev/null", env={"REQUEST_METHOD": "GET", "SCRIPT_NAME": WEBUI})
    assert answer.stdout.startswith("Status: 401 Unauthorized\n"), answer.stdout  # (read as text; stderr: the server log)
    assert "Content-Security-Policy: default-src 'none'" in answer.stdout and "csrf" not in answer.stdout

    assert os.readlink(str(rig.path(SERVICE))) == PKG_DIR + "/exposure-guard.sh"
    assert os.readlink(str(rig.path("/etc/rcS.d/QS190" + NAME))) == SERVICE
    assert os.readlink(str(rig.path("/etc/rcK.d/QK810" + NAME))) == SERVICE
    for icon in ("", "_80", "_gray"):
        assert rig.path("/home/httpd/RSS/images/%s%s.gif" % (NAME, icon)).read_bytes()[:4] == b"\x89PNG"
    assert rig.read("/tmp/update_process").strip() == "3"
    assert "0 [ExposureGuard] installed ExposureGuard %s in %s." % (package.version, PKG_DIR) in rig.log_lines("log_tool")


def test_install_upgrade_remove(rig: Rig, built: Built, built_upgrade: Built):
    # ---- install -----------------------------------------------------------------------------------
    proc, seconds = install(rig, built)
    assert proc.returncode == 10, proc.stdout
    print("install (%s): %.2f s" % (rig.shell, seconds))
    check_installed(rig, built)
    assert len(rig.agent_pids()) == 1, "the service was started"
    first = wait_for("the first check run's last-report.json", lambda: report_of_version(rig, built.version))
    assert first["schema"] == "exposure-guard/report/v1"
    assert first["agent"]["python"].startswith("3.8.")
    assert first["device"]["model_family"] == "TS-X53D", "checked the simulated NAS's own /etc/config"
    assert {f["id"]: f["status"] for f in first["findings"]}["myqnapcloud.upnp-forwarding"] == "fail"
    assert rig.run(SERVICE + " status").returncode == 0

    # ---- the owner edits settings; the agent fixes something; state accumulates -----------------------
    qdir = rig.path(PKG_DIR)
    settings = qdir / "etc/exposure-guard.ini"
    edited = settings.read_text().replace("mode = report", "mode = fix") + "; edited by the owner\n"
    settings.write_text(edited)
    (qdir / "var/node_key").write_text("node-key-kept-across-upgrades\n")
    (qdir / "var/node_key").chmod(0o600)
    (qdir / "var/spool").mkdir()
    (qdir / "var/spool/undelivered.json").write_text("{}")
    restart = rig.run(SERVICE + " restart")
    assert restart.returncode == 0, restart.stdout
    wait_for("the UPnP fix", lambda: rig.ini("/etc/config/upnpc.conf")["UPnP_Global"]["Enable"] == "FALSE")
    journal = qdir / "var/journal.jsonl"
    wait_for("the journal entry", lambda: journal.exists() and '"event": "applied"' in journal.read_text())
    journal_before = journal.read_bytes()
    (qdir / "etc/obsolete.conf").write_text("from an older version\n")
    with open(str(qdir / ".list"), "a") as handle:
        handle.write("./etc/obsolete.conf\n")

    # ---- upgrade -------------------------------------------------------------------------------------
    proc, seconds = install(rig, built_upgrade)
    assert proc.returncode == 10, proc.stdout
    print("upgrade (%s): %.2f s" % (rig.shell, seconds))
    assert "upgrading to %s" % built_upgrade.version in proc.stdout
    check_installed(rig, built_upgrade)
    assert settings.read_text() == edited, "the owner's settings survive the upgrade"
    assert (qdir / "etc/exposure-guard.ini.default").read_bytes() == (REPO / "qpkg/shared/etc/exposure-guard.ini").read_bytes()
    assert journal.read_bytes().startswith(journal_before), "the journal survives the upgrade"
    assert (qdir / "var/node_key").read_text() == "node-key-kept-across-upgrades\n"
    assert (qdir / "var/node_key").stat().st_mode & 0o777 == 0o600
    assert (qdir / "var/spool/undelivered.json").exists()
    assert not (qdir / "etc/obsolete.conf").exists(), "files the new version does not ship are removed"
    assert '__version__ = "%s"' % built_upgrade.version in (qdir / "lib/exposure_guard/__init__.py").read_text()
    assert len(rig.agent_pids()) == 1, "exactly one agent after the upgrade"
    upgraded = wait_for("a report from the new version", lambda: report_of_version(rig, built_upgrade.version))
    assert upgraded["agent"]["mode"] == "fix", "the kept settings are in force"

    # ---- remove (what App Center runs) ----------------------------------------------------------------
    proc = rig.run("sh %s/.uninstall.sh" % PKG_DIR)
    assert proc.returncode == 0, proc.stdout
    wait_for("the agent to stop", lambda: not rig.agent_pids())
    assert not qdir.exists()
    conf = rig.ini("/etc/config/qpkg.conf")
    assert NAME not in conf, "unregistered"
    assert conf["Python3"]["Enable"] == "TRUE", "other apps untouched"
    for link in (SERVICE, "/etc/rcS.d/QS190" + NAME, "/etc/rcK.d/QK810" + NAME, "/home/httpd/RSS/images/%s.gif" % NAME,
                 WEBUI_DIR):
        assert not os.path.lexists(str(rig.path(link))), link
    assert rig.ini("/etc/config/upnpc.conf")["UPnP_Global"]["Enable"] == "FALSE", "NAS settings stay as they are"
    saved = rig.path(QPKG_DIR + "/.ExposureGuard-journal/journal.jsonl")
    assert saved.read_bytes().startswith(journal_before)
    removed = [line for line in rig.log_lines("log_tool") if "removed." in line]
    assert removed and removed[-1].startswith("1 [ExposureGuard] removed. NAS settings it changed were left as they are")
    events = [json.loads(line)["event"] for line in saved.read_text().splitlines() if line.strip()]
    in_effect = events.count("applied") - events.count("undone")
    assert in_effect >= 1
    assert "(%d changes still in effect)" % in_effect in removed[-1] and "cli undo --all" in removed[-1]

    # ---- reinstall brings the journal back, and undo reverts the change ----------------------------------
    proc, _ = install(rig, built)
    assert proc.returncode == 10, proc.stdout
    assert (qdir / "var/journal.jsonl").read_bytes().startswith(journal_before)
    assert not saved.exists()
    undo = rig.run(SERVICE + " cli undo --all")
    assert undo.returncode == 0, undo.stdout
    assert rig.ini("/etc/config/upnpc.conf")["UPnP_Global"]["Enable"] == "TRUE"


# ---- the service script ---------------------------------------------------------------------------------

def test_service_script(busybox_rig: Rig, built: Built, built_upgrade: Built):
    rig = busybox_rig
    proc, _ = install(rig, built)
    assert proc.returncode == 10, proc.stdout
    wait_for("the first report", lambda: report(rig))

    # start twice is one process
    again = rig.run(SERVICE + " start")
    assert again.returncode == 0 and "already running" in again.stdout
    assert len(rig.agent_pids()) == 1

    # stop, and stop when stopped
    assert rig.run(SERVICE + " stop").returncode == 0
    assert not rig.agent_pids()
    assert not rig.path(PKG_DIR + "/var/exposure-guard.pid").exists()
    stopped = rig.run(SERVICE + " stop")
    assert stopped.returncode == 0 and "not running" in stopped.stdout
    assert rig.run(SERVICE + " status").returncode == 3

    # a stale pidfile (recycled pid) does not count as running
    rig.path(PKG_DIR + "/var/exposure-guard.pid").write_text("1\n")
    assert rig.run(SERVICE + " status").returncode == 3

    # the one-shot check
    check = rig.run(SERVICE + " check --json --offline")
    assert check.returncode in (0, 1), check.stdout
    assert json.loads(check.stdout)["schema"] == "exposure-guard/report/v1"

    # a broken settings file: start fails and says why in the event log
    settings = rig.path(PKG_DIR + "/etc/exposure-guard.ini")
    good = settings.read_text()
    settings.write_text(good.replace("mode = report", "mode = sometimes"))
    bad = rig.run(SERVICE + " start")
    assert bad.returncode == 1, bad.stdout
    assert not rig.agent_pids()
    assert any(line.startswith("2 [ExposureGuard] did not start") for line in rig.log_lines("log_tool"))
    settings.write_text(good)

    # disabled in qpkg.conf: does not start
    assert rig.run("setcfg %s Enable FALSE -f /etc/config/qpkg.conf" % NAME).returncode == 0
    disabled = rig.run(SERVICE + " start")
    assert disabled.returncode == 1 and "disabled" in disabled.stdout
    assert not rig.agent_pids()

    # an upgrade keeps it disabled and stopped
    proc, _ = install(rig, built_upgrade)
    assert proc.returncode == 10, proc.stdout
    assert rig.ini("/etc/config/qpkg.conf")[NAME]["Enable"] == "FALSE"
    assert not rig.agent_pids()

    # no Python 3 at start (QTS 5.2 starts packages in parallel; Entware's /opt may come later): the service
    # waits for it in the background, bounded, and says so; if none comes, a clear event-log error
    python_dir = rig.ini("/etc/config/qpkg.conf")["Python3"]["Install_Path"]
    assert rig.run("setcfg %s Enable TRUE -f /etc/config/qpkg.conf && rmcfg Python3 -f /etc/config/qpkg.conf"
                   % NAME).returncode == 0
    missing = rig.run(SERVICE + " start", env={"EXPOSURE_GUARD_PYTHON_WAIT": "4"})
    assert missing.returncode == 0 and "waiting for it in the background" in missing.stdout, missing.stdout
    assert any(line.startswith("0 [ExposureGuard] waiting up to 4 s for Python") for line in rig.log_lines("log_tool"))
    wait_for("the event-log error after the wait", lambda: any(
        line.startswith("2 [ExposureGuard] cannot run: no Python 3.8 or newer appeared within 4 s")
        for line in rig.log_lines("log_tool")))
    assert not rig.agent_pids()
    # ... and when Python turns up during the wait, the agent starts by itself
    late = rig.run(SERVICE + " start", env={"EXPOSURE_GUARD_PYTHON_WAIT": "120"})
    assert late.returncode == 0 and "waiting" in late.stdout
    assert rig.run("setcfg Python3 Install_Path %s -f /etc/config/qpkg.conf" % python_dir).returncode == 0
    wait_for("the agent started once Python appeared", lambda: len(rig.agent_pids()) == 1)
    assert rig.run(SERVICE + " stop").returncode == 0

    # EXPOSURE_GUARD_PYTHON names one explicitly; EXPOSURE_GUARD_QTS_ROOT points the agent elsewhere
    python = str(find_python38() / "bin/python3.8")
    shutil.copytree(str(REPO / "tests/fixtures/qts/hardened"), str(rig.path("/srv/other-nas")))
    checked = rig.run(SERVICE + " check --json --offline",
                      env={"EXPOSURE_GUARD_PYTHON": python, "EXPOSURE_GUARD_QTS_ROOT": "/srv/other-nas"})
    assert checked.returncode in (0, 1), checked.stdout
    document = json.loads(checked.stdout)
    assert document["agent"]["python"].startswith("3.8.")


def test_install_refused_without_python(tmp_path: Path, built: Built):
    with Rig(tmp_path, shell="busybox", python=None, nas_tree=NAS_TREE) as rig:
        proc, _ = install(rig, built)
        assert proc.returncode == 1, proc.stdout
        assert "Installation Abort." in proc.stdout
        errors = [line for line in rig.log_lines("log_tool") if line.startswith("2 ")]
        assert errors and "needs Python 3.8 or newer" in errors[-1]
        assert NAME not in rig.ini("/etc/config/qpkg.conf")
        assert not rig.path(PKG_DIR).exists()
        assert not rig.path(QPKG_DIR + "/.tmp-" + NAME).exists()
        assert rig.read("/tmp/update_process").strip() == "-1"


def test_install_refused_on_old_firmware(tmp_path: Path, built: Built):
    with Rig(tmp_path, shell="busybox", python=find_python38(), nas_tree=NAS_TREE) as rig:
        rig.write("/etc/default_config/uLinux.conf", "[System]\nVersion = 4.2.6\n")
        proc, _ = install(rig, built)
        assert proc.returncode == 1, proc.stdout
        assert "needs firmware 4.3.0 or newer; this NAS runs 4.2.6" in proc.stdout
        assert NAME not in rig.ini("/etc/config/qpkg.conf")


def test_install_on_the_volume_app_center_chose(tmp_path: Path, built: Built):
    with Rig(tmp_path, shell="bash", python=find_python38(), nas_tree=NAS_TREE) as rig:
        rig.path("/share/CACHEDEV2_DATA/.qpkg").mkdir(parents=True)
        proc, _ = install(rig, built, env={"QINSTALL_PATH": "/share/CACHEDEV2_DATA/.qpkg"})
        assert proc.returncode == 10, proc.stdout
        assert rig.ini("/etc/config/qpkg.conf")[NAME]["Install_Path"] == "/share/CACHEDEV2_DATA/.qpkg/" + NAME
        assert rig.path("/share/CACHEDEV2_DATA/.qpkg/%s/exposure-guard.sh" % NAME).is_file()
        wait_for("the first report", lambda: rig.path("/share/CACHEDEV2_DATA/.qpkg/%s/var/last-report.json"
                                                      % NAME).exists())


def test_package_refuses_to_run_off_nas(built: Built, tmp_path: Path):
    import subprocess

    if "/mnt/HDA_ROOT" in Path("/proc/mounts").read_text():
        pytest.skip("this machine looks like a QNAP NAS")
    # No /mnt/HDA_ROOT mount on this machine: the header stops before touching anything.
    proc = subprocess.run(["busybox", "sh", str(built.path)], env={"QINSTALL_PATH": str(tmp_path / "qpkg"),
                                                                   "PATH": "/usr/bin:/bin"},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "installs only on QTS" in proc.stdout
    assert not (tmp_path / "qpkg").exists()


def test_commands_never_import_from_the_callers_directory(rig: Rig, built: Built):
    """Run from a share that holds an ``exposure_guard`` package (anyone with write access to the share can
    plant one), the service script's commands still run the installed agent, never the planted code."""
    proc, _ = install(rig, built)
    assert proc.returncode == 10, proc.stdout
    share = "/share/CACHEDEV1_DATA/Public"
    planted = rig.path(share + "/exposure_guard")
    planted.mkdir(parents=True)
    marker = share + "/PWNED"
    (planted / "__init__.py").write_text("open(%r, 'w').write('ran as root')\n" % marker)
    (planted / "__main__.py").write_text("open(%r, 'w').write('ran as root')\n" % marker)
    for command in ("cli --version", "check --offline --json"):
        out = rig.run(SERVICE + " " + command, cwd=share)
        assert out.returncode in (0, 1), out.stdout
        assert not rig.path(marker).exists(), command
    assert "exposure-guard " + built.version in rig.run(SERVICE + " cli --version", cwd=share).stdout
