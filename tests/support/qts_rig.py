"""A simulated QTS system to install a real .qpkg into (see docs/qpkg-format.md#Simulated QTS for tests).

One rig = a directory laid out like a QNAP NAS root, entered through new mount, PID and network
namespaces plus chroot (root only):

* a busybox userland like QTS's: ``/bin/busybox`` with its applets linked in /bin and /usr/bin, and
  ``/bin/sh`` = busybox ash, or bash (QTS ships both);
* test doubles of QTS's own commands in /sbin: getcfg, setcfg, rmcfg (ini semantics of the real ones:
  case-insensitive sections and keys, ``-f -d -u``, ``setcfg -e``), log_tool and daemon_mgr (they record
  their calls in /var/log/*.log);
* ``/etc/config`` (qpkg.conf, smb.conf with the Public share, the fake NAS's uLinux.conf/upnpc.conf ...),
  ``/etc/default_config/uLinux.conf`` (firmware version), /etc/init.d, rcS.d, rcK.d, the App Center icon
  dir, a data volume /share/CACHEDEV1_DATA with Public and .qpkg, and a tmpfs on /mnt/HDA_ROOT (the
  header refuses to run where that is not mounted);
* Python 3.8 from pyenv as QNAP's "Python3" app (registered in qpkg.conf, interpreter at
  <Install_Path>/opt/python3/bin/python3), or no Python at all.

The namespaces are held by a small reaper process (PID 1 of the rig, like init it reaps orphans); every command runs inside with
``nsenter``. The rig has its own, empty network namespace (loopback down): nothing the installed agent
does can reach any network. Stopping the holder ends every process of the rig and drops its mounts.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
from pathlib import Path
from typing import Callable, Dict, List, Optional, TypeVar

import pytest

from tests.support.wait import wait_for

VOLUME = "/share/CACHEDEV1_DATA"
QPKG_DIR = VOLUME + "/.qpkg"

GETCFG = r"""#!/bin/sh
# Test double of QTS /sbin/getcfg: getcfg SECTION KEY [-f FILE] [-d DEFAULT] [-u]
section=$1; key=$2; shift 2
file=/etc/config/uLinux.conf; default=; has_default=0; upper=0
while [ $# -gt 0 ]; do
	case "$1" in
		-f) file=$2; shift 2 ;;
		-d) default=$2; has_default=1; shift 2 ;;
		-u) upper=1; shift ;;
		*) shift ;;
	esac
done
echo "getcfg [$section] $key -f $file" >> /var/log/getcfg.log
value=$(awk -v s="$section" -v k="$key" '
	BEGIN { s = tolower(s); k = tolower(k); in_s = (s == ""); found = 0 }
	/^[ \t]*\[/ { n = $0; sub(/^[ \t]*\[/, "", n); sub(/\].*$/, "", n); in_s = (tolower(n) == s); next }
	in_s {
		eq = index($0, "="); if (eq == 0) next
		n = substr($0, 1, eq - 1); gsub(/^[ \t]+|[ \t]+$/, "", n)
		if (tolower(n) == k) { v = substr($0, eq + 1); gsub(/^[ \t]+|[ \t]+$/, "", v); print v; found = 1; exit }
	}
	END { exit(found ? 0 : 1) }' "$file" 2>/dev/null)
status=$?
if [ $status -ne 0 ]; then
	[ $has_default = 1 ] && value=$default || exit 1
fi
[ $upper = 1 ] && value=$(echo "$value" | tr 'a-z' 'A-Z')
echo "$value"
exit $status
"""

SETCFG = r"""#!/bin/sh
# Test double of QTS /sbin/setcfg: setcfg SECTION KEY VALUE [-f FILE]; setcfg [-e] SECTION KEY [-f FILE] [-e]
file=/etc/config/uLinux.conf; erase=0; n=0
while [ $# -gt 0 ]; do
	case "$1" in
		-f) file=$2; shift 2 ;;
		-e) erase=1; shift ;;
		-c) shift ;;
		*) n=$((n + 1)); eval "arg$n=\$1"; shift ;;
	esac
done
section=$arg1; key=$arg2; value=$arg3
echo "setcfg [$section] $key = $value (erase=$erase) -f $file" >> /var/log/setcfg.log
[ -f "$file" ] || : > "$file" || exit 1
awk -v s="$section" -v k="$key" -v val="$value" -v erase="$erase" '
	function emit() { if (!erase) print k " = " val; done = 1 }
	BEGIN { ls = tolower(s); lk = tolower(k); in_s = 0; done = 0; seen = 0 }
	/^[ \t]*\[/ {
		if (in_s && !done) emit()
		n = $0; sub(/^[ \t]*\[/, "", n); sub(/\].*$/, "", n)
		in_s = (tolower(n) == ls); if (in_s) seen = 1
		print; next
	}
	in_s {
		eq = index($0, "=")
		if (eq) { n = substr($0, 1, eq - 1); gsub(/^[ \t]+|[ \t]+$/, "", n); if (tolower(n) == lk) { if (!done) emit(); next } }
	}
	{ print }
	END { if (in_s && !done) emit(); if (!seen && !erase) { print "[" s "]"; print k " = " val } }
' "$file" > "$file.setcfg.$$" && mv -f "$file.setcfg.$$" "$file"
"""

RMCFG = r"""#!/bin/sh
# Test double of QTS /sbin/rmcfg: rmcfg SECTION [-f FILE] removes the whole section.
section=$1; shift
file=/etc/config/uLinux.conf
while [ $# -gt 0 ]; do case "$1" in -f) file=$2; shift 2 ;; *) shift ;; esac; done
echo "rmcfg [$section] -f $file" >> /var/log/rmcfg.log
[ -f "$file" ] || exit 1
awk -v s="$section" '
	BEGIN { ls = tolower(s); skip = 0 }
	/^[ \t]*\[/ { n = $0; sub(/^[ \t]*\[/, "", n); sub(/\].*$/, "", n); skip = (tolower(n) == ls) }
	!skip { print }
' "$file" > "$file.rmcfg.$$" && mv -f "$file.rmcfg.$$" "$file"
"""

LOG_TOOL = r"""#!/bin/sh
# Test double of QTS /sbin/log_tool: records "LEVEL MESSAGE" for -tN ... -a MESSAGE.
level=?; message=
while [ $# -gt 0 ]; do
	case "$1" in
		-t) level=$2; shift 2 ;;
		-t*) level=${1#-t}; shift ;;
		-a) message=$2; shift 2 ;;
		*) shift ;;
	esac
done
echo "$level $message" >> /var/log/log_tool.log
"""

DAEMON_MGR = r"""#!/bin/sh
# Test double of QTS /sbin/daemon_mgr: records the call.
echo "$*" >> /var/log/daemon_mgr.log
"""

# PID 1 of the rig, like QTS's init it reaps orphans (the service's daemon is one): busybox ash collects
# every exited child (waitpid(-1)) while it waits for its own `sleep`.
INIT = "while :; do /bin/busybox sleep 1; done; : rig-init"

BUSYBOX_APPLETS = [
    "[", "ash", "awk", "basename", "cat", "chmod", "chown", "cp", "cut", "date", "dd", "dirname", "echo",
    "env", "expr", "false", "find", "grep", "gunzip", "gzip", "head", "hostname", "id", "kill", "ln", "ls",
    "md5sum", "mkdir", "mktemp", "mv", "od", "pidof", "printf", "ps", "pwd", "readlink", "rm", "rmdir", "sed",
    "seq", "sha256sum", "sleep", "sort", "stat", "sync", "tail", "tar", "test", "touch", "tr", "true", "uname",
    "uniq", "wc", "xargs",
]


def find_python38() -> Optional[Path]:
    """pyenv's newest 3.8 (the oldest Python the agent supports)."""
    home = os.environ.get("HOME", "/root")
    found = sorted(glob.glob(os.path.join(home, ".pyenv/versions/3.8.*/bin/python3.8")))
    return Path(found[-1]).parent.parent if found else None


def find_python27() -> Optional[Path]:
    """pyenv's newest 2.7: stands for the firmware's own Python 2 (/usr/local/bin/python on QTS 4.x)."""
    home = os.environ.get("HOME", "/root")
    found = sorted(glob.glob(os.path.join(home, ".pyenv/versions/2.7.*/bin/python2.7")))
    return Path(found[-1]).parent.parent if found else None


# What a test that runs a rig needs from the machine (the tests skip, saying what is missing).
RIG_SKIPS = [
    pytest.mark.skipif(os.geteuid() != 0, reason="the simulated QTS needs root (mount/pid/net namespaces, chroot)"),
    pytest.mark.skipif(shutil.which("unshare") is None or shutil.which("nsenter") is None,
                       reason="util-linux unshare/nsenter not installed"),
    pytest.mark.skipif(shutil.which("busybox") is None, reason="busybox not installed"),
    pytest.mark.skipif(find_python38() is None, reason="pyenv Python 3.8 not installed (~/.pyenv/versions/3.8.*)"),
]

Test = TypeVar("Test", bound=Callable[..., object])


def needs_rig(test: Test) -> Test:
    for mark in RIG_SKIPS:
        test = mark(test)
    return test


class Rig:
    """A simulated QTS root. Use as a context manager; ``run()`` executes a shell command inside.

    ``firmware_python2`` (a Python 2.7 prefix) adds what QNAP's own QDK installer relies on and
    ExposureGuard's installer does not: the firmware's Python 2 at /usr/local/bin/python (QDK's header
    truncates the data archive with it) and a /bin/tar that recognises gzip by itself (QDK's installer runs
    ``tar xvf data.tar.gz``; GNU tar stands in for QTS's). Without it the rig keeps busybox tar, the
    stricter of the two, for our own installer."""

    def __init__(self, base: Path, shell: str = "busybox", python: Optional[Path] = None,
                 nas_tree: Optional[Path] = None, firmware_python2: Optional[Path] = None) -> None:
        if shell not in ("busybox", "bash"):
            raise ValueError("shell must be busybox or bash")
        self.firmware_python2 = firmware_python2
        self.base = Path(base)
        self.root = self.base / "root"
        self.shell = shell
        self.python = python
        self.nas_tree = nas_tree
        self.holder: Optional[subprocess.Popen] = None
        self.pid = 0

    # -- layout ------------------------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        """A rig path (absolute inside the rig) as seen from the host."""
        return self.root / rel.lstrip("/")

    def write(self, rel: str, text: str, mode: int = 0o644) -> None:
        target = self.path(rel)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
        target.chmod(mode)

    def build(self) -> None:
        root = self.root
        for rel in ("bin", "sbin", "usr/bin", "usr/sbin", "usr/lib", "usr/lib64", "usr/local/bin",
                    "etc/config", "etc/default_config", "etc/init.d", "etc/rcS.d", "etc/rcK.d",
                    "home/httpd/RSS/images", "home/httpd/cgi-bin", VOLUME + "/Public", QPKG_DIR, "mnt/HDA_ROOT", "proc", "dev",
                    "tmp", "var/log", "root", "opt"):
            (root / rel.lstrip("/")).mkdir(parents=True, exist_ok=True)
        (root / "tmp").chmod(0o1777)
        os.symlink("usr/lib", str(root / "lib"))
        os.symlink("usr/lib64", str(root / "lib64"))
        busybox = shutil.which("busybox")
        if not busybox:
            raise RuntimeError("busybox is not installed")
        shutil.copy2(busybox, str(root / "bin/busybox"))
        for applet in BUSYBOX_APPLETS:
            for directory in ("bin", "usr/bin"):
                link = root / directory / applet
                if not link.exists():
                    os.symlink("/bin/busybox", str(link))
        if self.shell == "bash":
            bash = shutil.which("bash")
            assert bash
            shutil.copy2(bash, str(root / "bin/bash"))
            os.symlink("/bin/bash", str(root / "bin/sh"))
        else:
            os.symlink("/bin/busybox", str(root / "bin/sh"))
        for name, text in (("getcfg", GETCFG), ("setcfg", SETCFG), ("rmcfg", RMCFG), ("log_tool", LOG_TOOL),
                           ("daemon_mgr", DAEMON_MGR)):
            self.write("/sbin/" + name, text, 0o755)
        if self.nas_tree is not None:
            # The NAS's own configuration (what the agent checks); /proc comes from the real proc mount.
            for rel in ("etc", "tmp"):
                source = self.nas_tree / rel
                if source.is_dir():
                    shutil.copytree(str(source), str(root / rel), dirs_exist_ok=True)
        self.write("/etc/config/smb.conf", "[global]\nworkgroup = NAS\n\n[Public]\npath = %s/Public\n" % VOLUME)
        if not self.path("/etc/default_config/uLinux.conf").exists():
            self.write("/etc/default_config/uLinux.conf", "[System]\nVersion = 5.1.0\nBuild Number = 20230926\n")
        if not self.path("/etc/platform.conf").exists():  # the NAS tree's own (its DISPLAY_NAME is the model)
            self.write("/etc/platform.conf", "[System]\nPLATFORM = X86_GEMINILAKE\n")
        self.write("/etc/passwd", "admin:x:0:0:administrator:/share/homes/admin:/bin/sh\n")
        self.write("/etc/group", "administrators:x:0:admin\n")
        qpkg_conf = ""
        if self.python is not None:
            app = QPKG_DIR + "/Python3"
            (root / app.lstrip("/") / "opt").mkdir(parents=True)
            os.symlink(str(self.python), str(root / app.lstrip("/") / "opt/python3"))
            (root / str(self.python).lstrip("/")).mkdir(parents=True)
            qpkg_conf = ("[Python3]\nName = Python3\nVersion = 3.8.18\nEnable = TRUE\nInstall_Path = %s\n"
                         "Shell = %s/python3.sh\n" % (app, app))
        self.write("/etc/config/qpkg.conf", qpkg_conf)
        self.write("/tmp/update_process", "")
        if self.firmware_python2 is not None:
            (root / str(self.firmware_python2).lstrip("/")).mkdir(parents=True)
            os.symlink(str(self.firmware_python2 / "bin/python2.7"), str(root / "usr/local/bin/python"))
            gnu_tar = shutil.which("tar")
            assert gnu_tar and not os.path.islink(gnu_tar), "GNU tar is not installed"
            os.unlink(str(root / "bin/tar"))
            shutil.copy2(gnu_tar, str(root / "bin/tar"))

    # -- namespaces --------------------------------------------------------------------------------------
    def start(self) -> None:
        self.build()
        ready = self.base / "ready"
        binds = [("/usr/lib", "usr/lib"), ("/usr/lib64", "usr/lib64")]
        for prefix in (self.python, self.firmware_python2):
            if prefix is not None:
                binds.append((str(prefix), str(prefix).lstrip("/")))
        script = ["set -e", 'R="%s"' % self.root,
                  'mount -t tmpfs -o size=4m tmpfs "$R/mnt/HDA_ROOT"',
                  'mount -t proc proc "$R/proc"',
                  'mount --rbind /dev "$R/dev"']
        for source, target in binds:
            script.append('mount --bind -o ro "%s" "$R/%s"' % (source, target))
        script.append('touch "%s"' % ready)
        # PID 1 of the rig: reaps orphans (the service's daemon ends up its child) like QTS's init.
        script.append('exec chroot "$R" /bin/busybox sh -c "%s"' % INIT)
        holder = self.holder = subprocess.Popen(
            ["unshare", "--mount", "--net", "--pid", "--fork", "--propagation", "private",
             "/bin/sh", "-c", "\n".join(script)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        try:
            wait_for("the QTS rig to start", lambda: ready.exists() or holder.poll() is not None)
        except AssertionError:
            pass
        if not ready.exists():
            exited = self.holder.poll() is not None
            output = self.holder.stdout.read().decode() if exited and self.holder.stdout else "(still running)"
            self.stop()
            raise RuntimeError("the QTS rig did not start: %s" % output)
        # `ready` is touched just BEFORE `exec chroot`: until the exec'd busybox runs, the process's root is
        # still the host's, and nsenter -r would run commands with the host's /bin/sh (dash) outside the
        # rig. Wait for the final exec, not just for the process.
        try:
            self.pid = wait_for("the QTS rig's init process (chrooted busybox)", self._init_pid)
        except AssertionError:
            self.stop()
            raise RuntimeError("the QTS rig's init process did not start") from None

    def _init_pid(self) -> int:
        """The rig's PID 1 (host PID) once it is the chrooted busybox running INIT; 0 before."""
        assert self.holder is not None
        children = Path("/proc/%d/task/%d/children" % (self.holder.pid, self.holder.pid))
        try:
            pids = children.read_text().split()
            if not pids:
                return 0
            cmdline = Path("/proc/%s/cmdline" % pids[0]).read_bytes()
            root = os.readlink("/proc/%s/root" % pids[0])
        except OSError:
            return 0
        if cmdline.startswith(b"/bin/busybox\0sh\0-c\0") and b"rig-init" in cmdline and root == os.path.realpath(str(self.root)):
            return int(pids[0])
        return 0

    def stop(self) -> None:
        if self.holder is not None:
            if self.holder.poll() is None:
                # SIGKILL to the rig's PID 1 ends every process inside its PID namespace.
                if self.pid:
                    try:
                        os.kill(self.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                self.holder.kill()
            self.holder.wait(timeout=30)
            if self.holder.stdout:
                self.holder.stdout.close()
            self.holder = None

    def __enter__(self) -> Rig:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- running -----------------------------------------------------------------------------------------
    def run(self, command: str, env: Optional[Dict[str, str]] = None, timeout: float = 120,
            cwd: str = "/") -> subprocess.CompletedProcess:
        """``/bin/sh -c COMMAND`` inside the rig (its /bin/sh: busybox ash or bash)."""
        environment = {"PATH": "/bin:/sbin:/usr/bin:/usr/sbin", "HOME": "/root", "LANG": "C"}
        environment.update(env or {})
        argv: List[str] = ["nsenter", "-t", str(self.pid), "-m", "-n", "-p", "-r", "-w", "--",
                           "/bin/sh", "-c", "cd %s && %s" % (cwd, command)]
        return subprocess.run(argv, env=environment, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, timeout=timeout, check=False,
                              text=True)

    def read(self, rel: str) -> str:
        return self.path(rel).read_text(encoding="utf-8", errors="replace")

    def log_lines(self, name: str) -> List[str]:
        path = self.path("/var/log/%s.log" % name)
        return path.read_text(encoding="utf-8").splitlines() if path.exists() else []

    def ini(self, rel: str) -> Dict[str, Dict[str, str]]:
        """A QTS ini file as {section: {key: value}} (section and key case kept)."""
        sections: Dict[str, Dict[str, str]] = {}
        current: Optional[Dict[str, str]] = None
        for line in self.read(rel).splitlines():
            stripped = line.strip()
            if stripped.startswith("[") and "]" in stripped:
                current = sections.setdefault(stripped[1:stripped.index("]")], {})
            elif current is not None and "=" in stripped:
                key, value = stripped.split("=", 1)
                current[key.strip()] = value.strip()
        return sections

    def agent_pids(self) -> List[int]:
        """Host PIDs of agent daemons running inside this rig."""
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                if b"exposure_guard run" in cmdline and os.readlink(str(entry / "root")) == str(self.root) \
                        and b"State:\tZ" not in (entry / "status").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
        return pids
