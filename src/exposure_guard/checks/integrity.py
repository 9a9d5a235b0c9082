"""``integrity.*``: signs that someone has already been in — persistence, blocked updates, ransom notes.
Report only: nothing here is ever changed automatically (it is evidence, and the owner's call)."""

from __future__ import annotations

import os
import re
import time
from typing import Any, Dict, List, Optional, Set, Tuple
from urllib.parse import urlsplit

from exposure_guard.checks.references import QSNATCH, SECURITY_ADVISORIES
from exposure_guard.checks.registry import Outcome, Unknowable, check, failed, passed, unknown
from exposure_guard.context import CheckContext
from exposure_guard.facts.packages import Package, inside_qpkg_folder, read_packages
from exposure_guard.qts.root import DEFAULT_ULINUX_CONF, ULINUX_CONF

CHECKMATE = "https://www.qnap.com/en/security-advisory/qsa-22-21"
SHOWN = 20  # findings listed in evidence; the rest are counted
TEXT_CAP = 1024 * 1024  # bytes read of /etc/hosts, the crontab, the login page


def _listed(items: List[Any]) -> Dict[str, Any]:
    out: Dict[str, Any] = {"found": items[:SHOWN]}
    if len(items) > SHOWN:
        out["not_shown"] = len(items) - SHOWN
    return out


def _read_text(ctx: CheckContext, rel: str) -> Optional[str]:
    """A small system file as text; None when absent. Unreadable: Unknowable."""
    path = ctx.root.path(rel)
    try:
        with path.open("rb") as handle:
            return handle.read(TEXT_CAP).decode("utf-8", "replace")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise Unknowable("/%s cannot be read: %s" % (rel, exc.strerror)) from None


# ---------------------------------------------------------------- qpkg.conf
@check(
    "integrity.qpkg-entries",
    title="qpkg.conf starts something that is not an installed package",
    severity="high",
    family="local",
    rationale="""
QTS runs the Shell of every enabled section of /etc/config/qpkg.conf at boot, like a package's start
script. Malware and hand-made hacks add a section there (or point a package's Shell elsewhere) to survive
reboots and firmware updates, outside anything the App Center shows.""",
    remediation="""
Look at the section in /etc/config/qpkg.conf and at the script it names. If it is not a package you
installed (App Center lists them), run Malware Remover, update the firmware, change all passwords, and
remove the section (`rmcfg SECTION -f /etc/config/qpkg.conf`) once you have kept a copy for analysis.""",
    reads=("/etc/config/qpkg.conf: every section's Shell, Install_Path, Enable and installer keys (QPKG_File, "
           "Version, Date, Author, Class); a Shell or Install_Path outside <volume>/.qpkg/<Name>/ is flagged",),
    references=(QSNATCH,),
)
def qpkg_entries(ctx: CheckContext) -> Outcome:
    packages = read_packages(ctx.config)
    suspicious: List[Dict[str, Any]] = []
    for package in packages:
        why = _package_problem(package)
        if why:
            suspicious.append({"section": package.section, "shell": package.shell,
                               "install_path": package.install_path, "enabled": package.enabled, "why": why})
    evidence = dict(_listed(suspicious), file="/etc/config/qpkg.conf", sections=len(packages))
    if suspicious:
        names = ", ".join("[%s]" % s["section"] for s in suspicious[:5])
        return failed("qpkg.conf has %d section(s) that are not ordinary installed packages: %s" % (
            len(suspicious), names), evidence)
    if not packages:
        return passed("no package is registered in qpkg.conf", evidence)
    return passed("all %d qpkg.conf section(s) are packages in their own .qpkg folder" % len(packages), evidence)


# Where QNAP's own firmware apps live (helpdesk in /mnt/HDA_ROOT/update_pkg, Qboost and the myQNAPcloud
# certificate agent in /mnt/ext/opt): real qpkg.conf files register them there.
FIRMWARE_APP_DIRS = ("/mnt/HDA_ROOT/update_pkg/", "/mnt/ext/opt/")


def _hidden_parts(path: str) -> List[str]:
    """The hidden folder names in a path (a leading dot), the .qpkg parent of every package excepted."""
    return [p for p in path.split("/") if p.startswith(".") and p not in (".qpkg", ".", "..")]


def _package_place(path: str) -> str:
    """Why ``path`` is no place for a package to live; "" when it is one."""
    if inside_qpkg_folder(path):
        return ""
    hidden = _hidden_parts(path)
    if any(path.startswith(d) for d in FIRMWARE_APP_DIRS) and not hidden and ".." not in path.split("/"):
        return ""
    return "in a hidden folder" if hidden else "outside a .qpkg folder and QTS's own app folders"


def _package_problem(package: Package) -> str:
    where = _package_place(package.shell) if package.shell else ""
    if where:
        return "its Shell (run at boot) is %s" % where
    where = _package_place(package.install_path) if package.install_path else ""
    if where:
        return "its Install_Path is %s" % where
    if not package.looks_installed and package.shell:
        return "it names a Shell but none of the keys App Center writes for an installed package"
    return ""


# ---------------------------------------------------------------- update sources
UPDATE_KEYS = ("Live Update XML", "QPKG CENTER XML")
QNAP_DOMAINS = ("qnap.com", "qnap.com.cn", "myqnapcloud.com")
# Hosts an attacker blocks in /etc/hosts to stop firmware, App Center and anti-virus updates.
UPDATE_HOST_WORDS = ("qnap.com", "qnap.com.cn", "clamav.net", "mcafee.com", "nai.com")


def _is_qnap_url(url: str) -> bool:
    try:
        host = (urlsplit(url.strip()).hostname or "").lower()
    except ValueError:
        return False
    return any(host == d or host.endswith("." + d) for d in QNAP_DOMAINS)


@check(
    "integrity.update-sources",
    title="Firmware or App Center updates are redirected or blocked",
    severity="high",
    family="local",
    rationale="""
QSnatch rewrote the Live Update and App Center (QPKG CENTER) URLs in uLinux.conf and wrote QNAP's update and
anti-virus hosts into /etc/hosts, so the NAS could never install the fixes or the Malware Remover that
would remove it. An update source that is not QNAP's, or a QNAP host pinned in /etc/hosts, is a red flag.""",
    remediation="""
Update the firmware by hand (download it from QNAP's site and use Control Panel > Firmware Update >
Browse), run Malware Remover, and follow QNAP's QSnatch advisory. Remove the /etc/hosts lines naming
QNAP or anti-virus hosts, and restore the update URLs (a firmware update rewrites them).""",
    reads=tuple("/%s [System] %s (absent = the firmware's own source)" % (f, k)
                for f in (ULINUX_CONF, DEFAULT_ULINUX_CONF) for k in UPDATE_KEYS)
    + ("/etc/hosts: entries for qnap.com, clamav.net, mcafee.com, nai.com hosts",),
    references=(QSNATCH,),
)
def update_sources(ctx: CheckContext) -> Outcome:
    problems: List[str] = []
    sources: List[Dict[str, Any]] = []
    for file in (ULINUX_CONF, DEFAULT_ULINUX_CONF):
        for key in UPDATE_KEYS:
            value = ctx.config.getcfg("System", key, file)
            if value is None:
                continue
            sources.append({"file": "/" + file, "key": key, "value": value})
            if value.strip() and not _is_qnap_url(value):
                problems.append("/%s [System] %s points at %r, not QNAP" % (file, key, value.strip()[:120]))
    hosts_text = _read_text(ctx, "etc/hosts") or ""
    pinned = []
    for line in hosts_text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and any(w in name.lower() for name in fields[1:] for w in UPDATE_HOST_WORDS):
            pinned.append(" ".join(fields)[:200])
    if pinned:
        problems.append("/etc/hosts pins update or anti-virus hosts: %s" % "; ".join(pinned[:3]))
    evidence: Dict[str, Any] = {"update_sources": sources, "hosts_entries": pinned[:SHOWN]}
    if problems:
        return failed("updates are redirected or blocked: " + "; ".join(problems[:3]), evidence)
    return passed("firmware and App Center update sources are QNAP's and /etc/hosts blocks none of them", evidence)


# ---------------------------------------------------------------- crontab
CRONTAB = "etc/config/crontab"
_PATH = re.compile(r"(/[^\s;|&'\"<>()]+)")


@check(
    "integrity.crontab",
    title="A scheduled task runs from a share folder or a hidden folder",
    severity="high",
    family="local",
    rationale="""
QTS's own schedule (/etc/config/crontab) runs system tools and installed packages. A line running a
program from a share folder, or from a hidden folder (a name starting with a dot, e.g. inside .qpkg), is
how QSnatch-style malware keeps itself alive and re-infects the NAS after a clean-up.""",
    remediation="""
Read the line in /etc/config/crontab and the program it runs. If you did not add it, keep a copy for
analysis, remove the line, reload with `crontab /etc/config/crontab -c /tmp/cron/crontabs`, run Malware
Remover, update the firmware and change all passwords.""",
    reads=("/etc/config/crontab: every active line's program paths (lines managed by QTS, tagged #_QSC_, too)",
           "/etc/config/qpkg.conf Install_Path of every package (their own folders are fine)"),
    references=(QSNATCH,),
)
def crontab(ctx: CheckContext) -> Outcome:
    text = _read_text(ctx, CRONTAB)
    if text is None:
        return unknown("/etc/config/crontab does not exist (every QTS box has one)", {"file": "/" + CRONTAB})
    try:
        own = [p.install_path.rstrip("/") + "/" for p in read_packages(ctx.config) if p.install_path]
    except Unknowable:
        own = []
    flagged: List[Dict[str, str]] = []
    lines = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        lines += 1
        why = _cron_problem(line, own)
        if why:
            flagged.append({"line": line[:300], "why": why})
    evidence = dict(_listed(flagged), file="/" + CRONTAB, active_lines=lines)
    if flagged:
        return failed("%d scheduled task(s) run from a share or hidden folder: %s" % (
            len(flagged), flagged[0]["line"][:120]), evidence)
    return passed("none of the %d scheduled task(s) runs from a share or hidden folder" % lines, evidence)


def _cron_problem(line: str, package_folders: List[str]) -> str:
    for path in _PATH.findall(line):
        parts = [p for p in path.split("/") if p]
        hidden = _hidden_parts(path)
        if hidden:
            return "runs from a hidden folder (%s)" % "/".join(hidden[:2])
        if parts and parts[0] == "share" and not any(path.startswith(f) for f in package_folders):
            if ".qpkg" in parts and inside_qpkg_folder(path):
                return "runs from a .qpkg folder of no installed package"
            return "runs from a share folder"
    return ""


# ---------------------------------------------------------------- ransomware traces
# Note names and file extensions that QNAP and incident write-ups give for the campaigns that hit QNAP NAS.
RANSOM_NOTES = {"!checkmate_decryption_readme": "Checkmate", "!checkmate_decryption_readme.txt": "Checkmate",
                "!!!read_me.txt": "Qlocker", "readme_for_decrypt.txt": "eCh0raix"}
RANSOM_EXTENSIONS = {".deadbolt": "DeadBolt", ".checkmate": "Checkmate", ".encrypt": "eCh0raix"}
SCAN_DEPTH = 2  # levels below each share root
SCAN_ENTRIES = 20000
SCAN_SECONDS = 3.0
LOGIN_PAGE = "home/httpd/index.html"


@check(
    "integrity.ransomware",
    title="Traces of DeadBolt, Checkmate, Qlocker or eCh0raix",
    severity="critical",
    family="local",
    rationale="""
Ransomware that hit QNAP NAS leaves cheap-to-find traces: Checkmate, Qlocker and eCh0raix put ransom notes
in the share folders, DeadBolt renames files to .deadbolt and replaces the login page, Checkmate and
eCh0raix add their own extensions. Finding one means the NAS has been broken into.""",
    remediation="""
Disconnect the NAS from the internet now (remove router forwards, turn off UPnP), do not reboot or
reset it, and contact QNAP support: for some campaigns QNAP and researchers have recovery help. Then
update the firmware, change every password and restore clean data from an offline backup.""",
    reads=("share folders below /share (at most %d levels deep, %d entries, %.0f s): ransom note names and "
           "encrypted-file extensions" % (SCAN_DEPTH, SCAN_ENTRIES, SCAN_SECONDS),
           "/home/httpd/index.html (the login page DeadBolt replaced): whether it names DeadBolt"),
    references=(CHECKMATE, SECURITY_ADVISORIES),
)
def ransomware(ctx: CheckContext) -> Outcome:
    scan = _scan_shares(ctx)
    hits: List[Dict[str, str]] = list(scan["hits"])
    try:
        page = _read_text(ctx, LOGIN_PAGE)
    except Unknowable:
        page = None
    if page and "deadbolt" in page.lower():
        hits.insert(0, {"path": "/" + LOGIN_PAGE, "campaign": "DeadBolt", "what": "login page replaced"})
    evidence = dict(_listed(hits), shares=scan["shares"], entries_looked_at=scan["entries"],
                    complete=scan["complete"])
    if hits:
        campaigns = sorted({h["campaign"] for h in hits})
        return failed("signs of %s ransomware: %s" % (" and ".join(campaigns), hits[0]["path"]), evidence)
    if not scan["shares"]:
        return unknown("no share folder found below /share to look in", evidence)
    tail = "" if scan["complete"] else " (the bounded scan stopped early: %s)" % scan["stopped"]
    return passed("no ransom note or encrypted-file extension in %d share folder(s)%s" % (
        len(scan["shares"]), tail), evidence)


def _share_roots(ctx: CheckContext) -> List[Tuple[str, str]]:
    """(shown path, real path) of each share: /share/<Name> links and the folders of each data volume.
    Links are resolved inside the checked root, never outside it."""
    base = ctx.root.path("share")
    roots: Dict[str, Tuple[str, str]] = {}
    try:
        entries = sorted(os.scandir(str(base)), key=lambda e: e.name)
    except OSError:
        return []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        real = _inside_root(ctx, entry.path)
        if real is None or not os.path.isdir(real):
            continue
        if re.match(r"^(CACHEDEV\d+|MD\d+|HDA|HDB|USB\w*)_DATA$", entry.name):
            try:
                children = sorted(os.scandir(real), key=lambda e: e.name)
            except OSError:
                continue
            for child in children:
                if not child.name.startswith((".", "@")) and child.is_dir(follow_symlinks=False):
                    roots.setdefault(os.path.realpath(child.path), ("/share/%s/%s" % (entry.name, child.name),
                                                                    child.path))
        else:
            roots.setdefault(os.path.realpath(real), ("/share/" + entry.name, real))
    return list(roots.values())


def _inside_root(ctx: CheckContext, path: str) -> Optional[str]:
    """``path`` with links resolved as the NAS would (absolute targets below the checked root); None when
    it leads outside the root."""
    top = os.path.realpath(str(ctx.root.root))
    current = path
    for _hop in range(8):
        if not os.path.islink(current):
            break
        target = os.readlink(current)
        current = str(ctx.root.path(target)) if target.startswith("/") else os.path.join(os.path.dirname(current),
                                                                                         target)
    real = os.path.realpath(current)
    return real if real == top or real.startswith(top.rstrip("/") + "/") else None


def _scan_shares(ctx: CheckContext) -> Dict[str, Any]:
    deadline = time.monotonic() + SCAN_SECONDS
    hits: List[Dict[str, str]] = []
    seen_ext: Set[Tuple[str, str]] = set()
    state: Dict[str, Any] = {"entries": 0, "complete": True, "stopped": ""}
    shares = _share_roots(ctx)

    def walk(shown: str, real: str, depth: int) -> None:
        try:
            entries = list(os.scandir(real))
        except OSError:
            return
        for entry in entries:
            state["entries"] += 1
            if state["entries"] > SCAN_ENTRIES or time.monotonic() > deadline:
                state["complete"] = False
                state["stopped"] = "entry limit" if state["entries"] > SCAN_ENTRIES else "time limit"
                return
            name = entry.name.lower()
            where = "%s/%s" % (shown, entry.name)
            if name in RANSOM_NOTES:
                hits.append({"path": where, "campaign": RANSOM_NOTES[name], "what": "ransom note"})
            for ext, campaign in RANSOM_EXTENSIONS.items():
                if name.endswith(ext) and (shown, ext) not in seen_ext:
                    seen_ext.add((shown, ext))  # one hit per folder and extension is enough
                    hits.append({"path": where, "campaign": campaign, "what": "encrypted file (%s)" % ext})
            if depth < SCAN_DEPTH and entry.is_dir(follow_symlinks=False) and not entry.name.startswith((".", "@")):
                walk(where, entry.path, depth + 1)
            if not state["complete"]:
                return

    for shown, real in shares:
        walk(shown, real, 1)
        if not state["complete"]:
            break
    return {"hits": hits, "shares": [s for s, _r in shares][:SHOWN], "entries": state["entries"],
            "complete": state["complete"], "stopped": state["stopped"]}
