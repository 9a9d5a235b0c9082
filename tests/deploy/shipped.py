"""The files in deploy/ as the tests read them: systemd units (their directives, environment and the command
line systemd would run), the example EnvironmentFiles, and the nginx site made runnable in a temporary
prefix (names, certificate and log paths replaced; nothing else changed).

Only what the shipped files use of systemd's syntax is implemented: ``[Section]``, ``Key=value`` lines,
``#``/``;`` comments, the specifiers ``%i %L %S %%``, and in ExecStart ``${VAR}`` (one word) and ``$VAR`` alone
(split at white space), as systemd.service(5) describes them."""

from __future__ import annotations

import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Dict, Iterable, List, Mapping, Match, Optional, Tuple

from tests.support.paths import REPO

DEPLOY = REPO / "deploy"
SYSTEMD = DEPLOY / "systemd"
SERVER_UNIT = SYSTEMD / "exposure-guard-server.service"
SERVER_TEMPLATE = SYSTEMD / "exposure-guard-server@.service"
PROBER_UNIT = SYSTEMD / "exposure-guard-prober.service"
UNITS = (SERVER_UNIT, SERVER_TEMPLATE, PROBER_UNIT)
BACKUP_UNIT = SYSTEMD / "exposure-guard-backup.service"  # a oneshot started by the timer, not a daemon
BACKUP_TIMER = SYSTEMD / "exposure-guard-backup.timer"
SERVER_ENV = DEPLOY / "env" / "server.env"
PROBER_ENV = DEPLOY / "env" / "prober.env"
NGINX_SITE = DEPLOY / "nginx" / "exposure-guard.conf"
LOGROTATE = DEPLOY / "logrotate" / "exposure-guard-prober"
SYSUSERS = DEPLOY / "sysusers" / "exposure-guard.conf"

INSTALL_BIN = "/opt/exposure-guard/bin/"  # where docs/deploy.md installs the venv's entry points
MODULES = {"exposure-guard-server": "exposure_guard_server", "exposure-guard-prober": "exposure_guard_prober"}

# The names and paths the site uses, and what the tests put in their place.
SERVER_NAME, PROBER_NAME = "eg.example.com", "probe.example.com"
CERT_DIR = "/etc/letsencrypt/live/eg.example.com/"
NGINX_LOGS = "/var/log/nginx/"
ACME_ROOT = "/var/www/letsencrypt"


# -- systemd units ------------------------------------------------------------------------------------------

def parse_unit(path: Path) -> Dict[str, List[Tuple[str, str]]]:
    """{section: [(key, value), ...]} in file order (a key may repeat)."""
    sections: Dict[str, List[Tuple[str, str]]] = {}
    current: Optional[List[Tuple[str, str]]] = None
    for number, raw in enumerate(path.read_text("utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        if current is None or "=" not in line or line.endswith("\\"):
            raise ValueError("%s:%d: not a Key=value line in a section: %r" % (path, number, raw))
        key, _, value = line.partition("=")
        current.append((key.strip(), value.strip()))
    return sections


def directives(path: Path, section: str = "Service") -> Dict[str, List[str]]:
    """{key: [values in order]} of one section."""
    out: Dict[str, List[str]] = {}
    for key, value in parse_unit(path).get(section, []):
        out.setdefault(key, []).append(value)
    return out


def read_env_file(path: Path, uncomment: bool = False) -> Dict[str, str]:
    """An EnvironmentFile's NAME=value lines (quotes removed as systemd and sh do); ``uncomment``: also the
    ``#NAME=value`` examples, as if the operator had enabled them all."""
    out: Dict[str, str] = {}
    for raw in path.read_text("utf-8").splitlines():
        line = raw.strip()
        if uncomment and re.match(r"^#[A-Z_][A-Z0-9_]*=", line):
            line = line[1:]
        match = re.match(r"^([A-Z_][A-Z0-9_]*)=(.*)$", line)
        if match:
            words = shlex.split(match.group(2)) if match.group(2) else [""]
            out[match.group(1)] = " ".join(words)
    return out


def unit_environment(unit: Path, env_file: Optional[Path] = None, uncomment: bool = False,
                     overrides: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """What the service's environment holds: Environment= lines, then the EnvironmentFile (read after
    them, so it wins), then ``overrides`` (a test's own paths)."""
    env: Dict[str, str] = {}
    for line in directives(unit).get("Environment", []):
        for word in shlex.split(line):
            name, _, value = word.partition("=")
            env[name] = value
    if env_file is not None:
        env.update(read_env_file(env_file, uncomment))
    env.update(overrides or {})
    return env


def specifiers(text: str, instance: str = "", logs: str = "/var/log", state: str = "/var/lib") -> str:
    table = {"i": instance, "L": logs, "S": state, "%": "%"}

    def one(match: Match[str]) -> str:
        if match.group(1) not in table:
            raise ValueError("specifier %%%s is not one the tests know: add it to shipped.specifiers" % match.group(1))
        return table[match.group(1)]

    return re.sub(r"%(.)", one, text)


def exec_argv(unit: Path, env: Mapping[str, str], instance: str = "", logs: str = "/var/log",
              state: str = "/var/lib") -> List[str]:
    """ExecStart as systemd runs it: specifiers, then ``$VAR`` words split and ``${VAR}`` put in place."""
    (line,) = directives(unit)["ExecStart"]
    line = specifiers(line.lstrip("-@:+!"), instance, logs, state)
    argv: List[str] = []
    for word in shlex.split(line):
        alone = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if alone:
            argv += env.get(alone.group(1), "").split()
            continue
        argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", lambda m: env.get(m.group(1), ""), word))
    return argv


def python_argv(argv: List[str]) -> List[str]:
    """The unit's command with its installed entry point replaced by ``python -m`` of the checkout."""
    binary = argv[0]
    assert binary.startswith(INSTALL_BIN), "ExecStart does not run the venv of docs/deploy.md: %s" % binary
    return [sys.executable, "-m", MODULES[binary[len(INSTALL_BIN):]]] + argv[1:]


def entry_point(name: str, stub_dir: Path) -> str:
    """The installed entry point ``name`` (next to this Python, else on PATH); else an executable stub in
    ``stub_dir`` (systemd-analyze only checks that ExecStart names an executable)."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    stub = stub_dir / name
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    return str(stub)


def rewrite_exec(text: str, stub_dir: Path) -> str:
    """A unit's text with its /opt entry points replaced by the installed ones (see ``entry_point``)."""
    for name in MODULES:
        text = text.replace(INSTALL_BIN + name, entry_point(name, stub_dir))
    return text


# -- nginx ----------------------------------------------------------------------------------------------------

# What Debian's /etc/nginx/nginx.conf puts in the http block around the sites (so a directive the site repeats
# at the same level, e.g. ssl_protocols, fails here as it would there), plus its default site on port 80.
WRAPPER = """\
{user}
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/logs/error.log;
events {{ worker_connections 256; }}
http {{
    client_body_temp_path {prefix}/temp/body;
    proxy_temp_path {prefix}/temp/proxy;
    fastcgi_temp_path {prefix}/temp/fastcgi;
    uwsgi_temp_path {prefix}/temp/uwsgi;
    scgi_temp_path {prefix}/temp/scgi;
    sendfile on;
    tcp_nopush on;
    types_hash_max_size 2048;
    default_type application/octet-stream;
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2 TLSv1.3;
    ssl_prefer_server_ciphers on;
    access_log {prefix}/logs/access.log;
    gzip on;
    server {{
        listen 80 default_server;
        listen [::]:80 default_server;
        server_name _;
        return 404;
    }}
    include {prefix}/site.conf;
}}
"""


def nginx_binary() -> Optional[str]:
    for candidate in ("/usr/sbin/nginx", shutil.which("nginx")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def site_text(prefix: Path, names: Optional[Mapping[str, str]] = None) -> str:
    """The shipped site with its certificate, log and ACME paths inside ``prefix`` and, with ``names``,
    other server names (the lab uses its addresses). Fails if any other absolute path is left."""
    text = NGINX_SITE.read_text("utf-8")
    for old, new in ((CERT_DIR, "%s/tls/" % prefix), (NGINX_LOGS, "%s/logs/" % prefix), (ACME_ROOT, "%s/acme" % prefix)):
        assert old in text, "the site no longer uses %s: update tests/deploy/shipped.py" % old
        text = text.replace(old, new)
    for old, new in (names or {}).items():
        assert old in text, "the site has no %s" % old
        text = text.replace(old, new)
    code = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
    outside = [p for p in re.findall(r"(?<![\w.:/])/[\w.\-/]+", code) if not p.startswith(str(prefix))
               and not p.startswith("/.well-known/") and p not in ("/", "/login", "/metrics", "/v1/probe", "/healthz")]
    assert not outside, "the site names paths the tests do not redirect: %s" % outside
    return text


def nginx_prefix(prefix: Path, cert: Path, key: Path, names: Optional[Mapping[str, str]] = None,
                 user: str = "") -> Path:
    """A runnable nginx prefix: nginx.conf (Debian's http defaults around the site), site.conf, tls/, logs/,
    temp/, acme/. Returns nginx.conf."""
    for sub in ("tls", "logs", "temp", "acme"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    shutil.copy(str(cert), str(prefix / "tls" / "fullchain.pem"))
    shutil.copy(str(key), str(prefix / "tls" / "privkey.pem"))
    (prefix / "tls" / "privkey.pem").chmod(0o600)
    (prefix / "site.conf").write_text(site_text(prefix, names))
    conf = prefix / "nginx.conf"
    conf.write_text(WRAPPER.format(prefix=prefix, user=("user %s;" % user) if user else ""))
    return conf


def nginx_values(directive: str, block: str = "") -> List[str]:
    """The values of ``directive`` in the shipped site (in the server block whose server_name is ``block``,
    or anywhere)."""
    text = "\n".join(line.split("#", 1)[0] for line in NGINX_SITE.read_text("utf-8").splitlines())
    if block:
        chunks = [c for c in re.split(r"\n(?=server\s*\{)", text) if re.search(r"server_name\s+%s;" % re.escape(block), c)]
        assert len(chunks) == 1, "one server block named %s" % block
        text = chunks[0]
    return [m.group(1).strip() for m in re.finditer(r"(?m)^\s*%s\s+([^;]*);" % re.escape(directive), text)]


# -- certificates (openssl) -----------------------------------------------------------------------------------

def make_ca_and_cert(directory: Path, names: Iterable[str], addresses: Iterable[str]) -> Dict[str, Path]:
    """A private CA and a server certificate it signed for ``names`` and ``addresses`` (openssl, EC P-256):
    {"ca", "cert", "key"}."""
    import subprocess

    names, addresses = list(names), list(addresses)
    directory.mkdir(parents=True, exist_ok=True)
    ca, ca_key = directory / "ca.pem", directory / "ca.key"
    cert, key, csr = directory / "server.pem", directory / "server.key", directory / "server.csr"
    ext = directory / "server.ext"
    san = ",".join(["DNS:%s" % n for n in names] + ["IP:%s" % a for a in addresses])
    ext.write_text("basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
                   "extendedKeyUsage=serverAuth\nsubjectAltName=%s\nsubjectKeyIdentifier=hash\n"
                   "authorityKeyIdentifier=keyid,issuer\n" % san)

    def openssl(*args: str) -> None:
        result = subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, "openssl %s: %s" % (args[0], result.stderr)

    curve = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    openssl("req", "-x509", *curve, "-keyout", str(ca_key), "-out", str(ca), "-days", "2",
            "-subj", "/CN=ExposureGuard test CA", "-addext", "basicConstraints=critical,CA:TRUE",
            "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    openssl("req", "-new", *curve, "-keyout", str(key), "-out", str(csr), "-subj", "/CN=%s" % names[0])
    openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
            "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return {"ca": ca, "cert": cert, "key": key}
