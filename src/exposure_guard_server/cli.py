"""``exposure-guard-server``: init, serve, enroll-secret, user, api-token, re-enroll."""

from __future__ import annotations

import argparse
import getpass
import os
import re
import secrets
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from exposure_guard import __version__
from exposure_guard_server.reportlogic import format_time
from exposure_guard_server.roles import ROLES

EXIT_OK, EXIT_ERROR, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    pass


@dataclass(frozen=True)
class CredentialCommand:
    """How the CLI shows one kind of credential (the service behind it: services/admin.py)."""

    attribute: str  # Admin.enroll_secrets or Admin.api_tokens
    help: str
    create_help: str
    list_help: str
    revoke_help: str
    ident_type: Callable[[str], Any]
    ident_metavar: str
    created: str  # % (id, secret): the secret alone on the last line
    list_header: str
    list_row: Callable[[Dict[str, Any]], str]
    not_found: str  # % ident
    revoked: str


def _secret_row(row: Dict[str, Any]) -> str:
    state = ("revoked " + format_time(row["revoked_at"])) if row["revoked_at"] else "active"
    return "%-4d %-24s %-12s %-20s %-11d %s\n" % (row["id"], row["name"][:24], row["prefix"] + "…",
                                                  format_time(row["created_at"]), row["enrolled_count"], state)


def _token_row(row: Dict[str, Any]) -> str:
    return "%-4d %-24s %s… created %s%s\n" % (row["id"], row["name"][:24], row["prefix"], format_time(row["created_at"]),
                                              " REVOKED" if row["revoked_at"] else "")


CREDENTIALS = {
    "enroll-secret": CredentialCommand(
        attribute="enroll_secrets", help="manage enrollment secrets",
        create_help="create a secret; printed alone on the last line", list_help="list secrets (never their values)",
        revoke_help="revoke by id, name, shown prefix or the secret itself",
        ident_type=str, ident_metavar="ID|NAME|PREFIX|SECRET",
        created="enrollment secret %d created; on each NAS run: exposure-guard enroll --server URL --secret <the "
                "line below>\n%s\n",
        list_header="%-4s %-24s %-12s %-20s %-11s %s\n" % ("ID", "NAME", "PREFIX", "CREATED", "ENROLLMENTS", "STATE"),
        list_row=_secret_row, not_found="no active enrollment secret matches %r (see `enroll-secret list`)",
        revoked="revoked; devices already enrolled with it keep their node keys\n"),
    "api-token": CredentialCommand(
        attribute="api_tokens", help="manage API tokens for automation",
        create_help="create a token; printed alone on the last line", list_help="", revoke_help="",
        ident_type=int, ident_metavar="id",
        created="API token %d created (use as Authorization: Bearer TOKEN):\n%s\n",
        list_header="", list_row=_token_row, not_found="no active API token %d", revoked="revoked\n"),
}


def parse_listen(text: str) -> Tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (loopback)."""
    match = re.match(r"^\[([0-9a-fA-F:.]+)\]:(\d+)$", text) or re.match(r"^([^:\[\]]*):(\d+)$", text)
    if not match:
        raise CliError("--listen must be HOST:PORT (e.g. 127.0.0.1:8443 or [::1]:8443), not %r" % text)
    host, port = match.group(1) or "127.0.0.1", int(match.group(2))
    if not 0 < port < 65536:
        raise CliError("port %d is out of range" % port)
    return host, port


def _db_arg(parser: argparse.ArgumentParser) -> None:
    from exposure_guard_server.db import default_db_url

    parser.add_argument("--db", default=None, metavar="URL",
                        help="sqlite:///PATH or postgresql://USER@HOST/DB (default: env EXPOSURE_GUARD_SERVER_DB, "
                             "else exposure-guard.db in env EXPOSURE_GUARD_SERVER_DATA (a folder), else %s)"
                             % default_db_url())


def _credential_parser(sub: Any, command: str) -> None:
    """``COMMAND create|list|revoke`` for enroll-secret and api-token."""
    spec = CREDENTIALS[command]
    actions = sub.add_parser(command, help=spec.help).add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for action, help_text in (("create", spec.create_help), ("list", spec.list_help), ("revoke", spec.revoke_help)):
        q = actions.add_parser(action, **({"help": help_text} if help_text else {}))  # no help: not listed
        _db_arg(q)
        if action == "create":
            q.add_argument("--name", default="")
            if command == "enroll-secret":
                q.add_argument("--group", default="", metavar="NAME",
                               help="the group (customer or site) boxes enrolled with it land in")
            else:
                q.add_argument("--role", default="viewer", choices=ROLES,
                               help="what the token may do (default viewer: reads only)")
                q.add_argument("--groups", default="", metavar="NAMES",
                               help="limit the token to these groups (comma separated; default: every group)")
        elif action == "revoke":
            q.add_argument("ident", type=spec.ident_type, metavar=spec.ident_metavar)


def _positive(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError("not a number: %r" % text) from None
        if not value > 0 or value != value or value == float("inf"):
            raise argparse.ArgumentTypeError("must be a positive number, not %r" % text)
        return value
    return parse


def _transport_args(p: argparse.ArgumentParser) -> None:
    """``serve``'s limits against slow and greedy clients (transport.py) and for webhook deliveries."""
    from exposure_guard_server.config import ServerConfig

    d = ServerConfig(db_url="")
    g = p.add_argument_group("connection limits (per server process; see docs/server.md)")
    g.add_argument("--header-timeout", type=_positive(float), default=d.header_timeout, metavar="SECONDS",
                   help="a request head (line and headers) must arrive within this, else 408 (default %g)"
                        % d.header_timeout)
    g.add_argument("--body-timeout", type=_positive(float), default=d.body_timeout, metavar="SECONDS",
                   help="a request body must arrive within this after its head, else 408 (default %g)" % d.body_timeout)
    g.add_argument("--max-header-bytes", type=_positive(int), default=d.max_header_bytes, metavar="BYTES",
                   help="largest request head, else 431 (default %d)" % d.max_header_bytes)
    g.add_argument("--max-connections", type=_positive(int), default=d.max_connections, metavar="N",
                   help="open connections; more are refused with 503 (default %d, lowered to what the "
                        "descriptor limit allows)" % d.max_connections)
    g.add_argument("--max-connections-per-source", type=_positive(int), default=d.max_connections_per_source,
                   metavar="N", help="open connections from one address (IPv6: one /64); --proxy addresses are "
                                     "exempt (default %d)" % d.max_connections_per_source)
    g = p.add_argument_group("webhook deliveries")
    g.add_argument("--webhook-timeout", type=_positive(float), default=d.webhook_timeout, metavar="SECONDS",
                   help="total time for one delivery: connect, TLS, request, answer (default %g)" % d.webhook_timeout)
    g.add_argument("--webhook-allow-internal", default=d.webhook_allow, metavar="NETWORKS",
                   help="internal networks webhooks may reach (comma separated, e.g. 10.1.2.3/32); loopback, "
                        "private, link-local and metadata addresses are refused otherwise")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exposure-guard-server",
                                     description="ExposureGuard fleet server: enrollment, check-ins, dashboard, API.")
    parser.add_argument("--version", action="version", version="%(prog)s " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("init", help="create or migrate the database, an admin login and a first enrollment secret")
    _db_arg(p)
    p.add_argument("--admin-user", default="admin")
    p.add_argument("--admin-password-file", default="", metavar="FILE",
                   help="read the admin password from FILE (default: env EXPOSURE_GUARD_ADMIN_PASSWORD, else a "
                        "random one is generated and printed once)")

    p = sub.add_parser("serve", help="run the server")
    _db_arg(p)
    p.add_argument("--listen", default="127.0.0.1:8443", metavar="HOST:PORT")
    p.add_argument("--workers", type=int, default=1, metavar="N", help="server processes (default 1)")
    p.add_argument("--migrate", action="store_true",
                   help="create or upgrade the database schema first (instances starting at once take turns); "
                        "without it the server refuses an outdated schema")
    p.add_argument("--qpkg-dir", default="", metavar="DIR",
                   help="also serve an App Center repository from DIR (what ./build.sh writes): /qpkg/ExposureGuard.xml")
    p.add_argument("--tls-cert", default="", metavar="FILE", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--tls-key", default="", metavar="FILE", help="private key for --tls-cert")
    p.add_argument("--max-body", type=int, default=1024 * 1024, metavar="BYTES",
                   help="largest check-in body, compressed or not (default 1 MiB)")
    p.add_argument("--stale-grace", type=float, default=600, metavar="SECONDS",
                   help="a device is stale when not seen for 2 × its interval + this (default 600)")
    p.add_argument("--default-interval", type=int, default=3600, metavar="SECONDS",
                   help="check interval assumed until a device reports its own (default 3600)")
    p.add_argument("--max-clock-skew", type=_positive(float), default=300, metavar="SECONDS",
                   help="a report dated more than this ahead of its arrival is ordered by its arrival (default 300)")
    p.add_argument("--cookie-secure", choices=("auto", "always", "never"), default="auto",
                   help="Secure flag on the session cookie (auto: when the request is HTTPS)")
    p.add_argument("--public-metrics", action="store_true", help="serve /metrics without an API token")
    p.add_argument("--proxy", default="", metavar="ADDRESSES",
                   help="trust X-Forwarded-For/-Proto from these proxy addresses (comma separated)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"))
    p.add_argument("--access-log", action="store_true", help="log every request")
    _transport_args(p)

    p = sub.add_parser("backup", help="write a backup of the database to FILE, or into a folder of dated backups "
                                      "(SQLite: a consistent copy while the server runs; PostgreSQL: pg_dump's "
                                      "custom format)")
    _db_arg(p)
    p.add_argument("file", metavar="FILE", nargs="?", help="the backup file (or use --into)")
    p.add_argument("--into", metavar="DIR", help="write DIR/eg-YYYYMMDDTHHMMSSZ.backup (UTC) and remove the oldest "
                   "such backups beyond --keep (what the daily backup timer runs)")
    p.add_argument("--keep", metavar="N", type=int, default=14,
                   help="with --into: how many backups to keep, the new one included (default 14)")
    p = sub.add_parser("restore", help="restore a backup into the database (stop the servers on it first) and "
                                       "migrate it to this version's schema")
    _db_arg(p)
    p.add_argument("file", metavar="FILE")
    p.add_argument("--replace", action="store_true",
                   help="overwrite a database that already holds devices (it is refused otherwise)")
    _credential_parser(sub, "enroll-secret")
    actions = sub.add_parser("group", help="manage groups (customers or sites) that enrollment secrets put boxes in"
                             ).add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    for action, help_text in (("create", "create a group"), ("list", "list groups with their device counts"),
                              ("remove", "remove a group (its boxes and secrets stay, in no group)"),
                              ("move", "put a device in a group")):
        q = actions.add_parser(action, help=help_text)
        _db_arg(q)
        if action in ("create", "remove"):
            q.add_argument("name", metavar="NAME" if action == "create" else "NAME|ID")
        elif action == "move":
            q.add_argument("device_id", metavar="DEVICE_ID")
            q.add_argument("name", metavar="GROUP", help='a group name, or "" for no group')
    p = sub.add_parser("user", help="set a dashboard user's password, role and groups (creates the user if needed)")
    _db_arg(p)
    p.add_argument("username")
    p.add_argument("--password-file", default="", metavar="FILE")
    p.add_argument("--role", default=None, choices=ROLES,
                   help="viewer, operator or admin (a new user: admin unless given; an existing one keeps its role)")
    p.add_argument("--groups", default=None, metavar="NAMES",
                   help='limit the user to these groups (comma separated; "" lifts the limit)')
    _credential_parser(sub, "api-token")
    actions = sub.add_parser("re-enroll", help="re-enrollments of known devices that wait for approval").add_subparsers(
        dest="action", metavar="ACTION")
    actions.required = True
    for action, help_text in (("list", "list the waiting requests"),
                              ("approve", "give the device the requested node key (its current key stops working)"),
                              ("reject", "drop the request (its node key never works)")):
        q = actions.add_parser(action, help=help_text)
        _db_arg(q)
        if action != "list":
            q.add_argument("request_id", metavar="ID", help="the request's id (see `re-enroll list`)")
    return parser


def _engine(args: argparse.Namespace, *, migrate: bool = False, check: bool = True):  # type: ignore[no-untyped-def]
    from exposure_guard_server import db

    url = db.normalise_url(args.db or db.default_db_url())
    engine = db.make_engine(url)
    if migrate:
        db.migrate(engine)
    elif check:
        db.require_current(engine)
    return url, engine


def _password(file: str, env: str = "EXPOSURE_GUARD_ADMIN_PASSWORD") -> Optional[str]:
    if file:
        try:
            with open(file, encoding="utf-8") as handle:
                return handle.readline().rstrip("\r\n")
        except OSError as exc:
            raise CliError("cannot read the password file %s: %s" % (file, exc.strerror)) from None
    return os.environ.get(env) or None


def cmd_init(args: argparse.Namespace) -> int:
    from exposure_guard_server.db.lock import schema_lock

    url, engine = _engine(args, migrate=False, check=False)
    # One init at a time on a database (instances started at once each run it): the second finds the schema
    # migrated, the admin login and the first secret made, and says so.
    with schema_lock(engine):
        _init_locked(args, url, engine)
    engine.dispose()
    return EXIT_OK


def _init_locked(args: argparse.Namespace, url: str, engine: Any) -> None:
    from exposure_guard_server.db import head_revision, migrate, safe_url
    from exposure_guard_server.services.admin import Admin

    migrate(engine, locked=True)
    admin = Admin(engine)
    out = sys.stdout
    out.write("database %s is at schema revision %s\n" % (safe_url(url), head_revision()))
    if not admin.has_users():
        password = _password(args.admin_password_file)
        generated = password is None
        if generated:
            password = secrets.token_urlsafe(15)
        admin.set_password(args.admin_user, password or "")
        out.write("admin login created: user %s" % args.admin_user)
        out.write(", password %s (shown once; change it with `exposure-guard-server user %s`)\n" % (
            password, args.admin_user) if generated else " (password from your file/environment)\n")
    else:
        out.write("admin login already exists (change a password with `exposure-guard-server user NAME`)\n")
    active = [s for s in admin.enroll_secrets.list() if not s["revoked_at"]]
    if not active:
        _id, secret = admin.enroll_secrets.create("first secret")
        out.write("first enrollment secret (shown once): %s\n" % secret)
        out.write("  on each NAS: exposure-guard enroll --server http://THIS-SERVER:8443 --secret %s\n" % secret)
        out.write("  (https://THIS-SERVER:8443 once the server runs with --tls-cert/--tls-key or behind a TLS proxy; "
                  "a private CA goes into the agents' [server] ca_file)\n")
    else:
        out.write("%d active enrollment secret(s); create another with `exposure-guard-server enroll-secret "
                  "create`\n" % len(active))
    db_flag = "" if not args.db else " --db '%s'" % safe_url(url)
    out.write("start the server with:\n  exposure-guard-server serve%s --listen 127.0.0.1:8443\n" % db_flag)
    out.write("  (for other machines: --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem)\n")


def cmd_backup(args: argparse.Namespace) -> int:
    from exposure_guard_server import db
    from exposure_guard_server.backup import BackupError, backup, backup_into

    if (args.file is None) == (args.into is None):
        raise CliError("give either a backup FILE or --into DIR")
    url = db.normalise_url(args.db or db.default_db_url())
    started = time.monotonic()
    removed: List[Path] = []
    try:
        if args.into is not None:
            target, kind, removed = backup_into(url, Path(args.into), args.keep)
        else:
            target = Path(args.file)
            kind = backup(url, target)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    size = os.path.getsize(target)
    sys.stdout.write("backup of %s (%s) written to %s: %s bytes in %.1f s\n" % (
        db.safe_url(url), kind, target, format(size, ","), time.monotonic() - started))
    if removed:
        sys.stdout.write("removed %d older backup(s), keeping the newest %d: %s\n" % (
            len(removed), args.keep, ", ".join(path.name for path in removed)))
    return EXIT_OK


def cmd_restore(args: argparse.Namespace) -> int:
    from exposure_guard_server import db
    from exposure_guard_server.backup import BackupError, restore

    url = db.normalise_url(args.db or db.default_db_url())
    started = time.monotonic()
    try:
        revision, devices = restore(url, Path(args.file), replace=args.replace)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    sys.stdout.write("restored %s into %s in %.1f s: %s device(s), schema revision %s\n" % (
        args.file, db.safe_url(url), time.monotonic() - started, format(devices, ","), revision))
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    import importlib.util
    import ssl

    import uvicorn

    from exposure_guard_server.addresses import parse_networks
    from exposure_guard_server.config import ENV_NAME, ServerConfig
    from exposure_guard_server.db import safe_url
    from exposure_guard_server.transport import raise_fd_limit, tls_context

    host, port = parse_listen(args.listen)
    if args.workers < 1 or args.workers > 64:
        raise CliError("--workers must be between 1 and 64")
    if bool(args.tls_cert) != bool(args.tls_key):
        raise CliError("--tls-cert and --tls-key go together")
    # Refuses to start on an empty or outdated schema, unless told to migrate it (safe with instances starting at once).
    url, engine = _engine(args, migrate=args.migrate)
    engine.dispose()
    try:
        parse_networks(args.proxy)
        parse_networks(args.webhook_allow_internal)
    except ValueError as exc:
        raise CliError("--proxy / --webhook-allow-internal: %s" % exc) from None
    if importlib.util.find_spec("httptools") is None:
        raise CliError("the server needs httptools: pip install 'exposure-guard[server]'")
    if args.tls_cert:
        try:
            tls_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise CliError("cannot use --tls-cert %s / --tls-key %s: %s" % (args.tls_cert, args.tls_key, exc)) from None
    raise_fd_limit()  # worker processes inherit it; the connection cap is checked against it
    config = ServerConfig(db_url=url, max_body=args.max_body, stale_grace=args.stale_grace,
                          default_interval=args.default_interval, max_clock_skew=args.max_clock_skew,
                          cookie_secure=args.cookie_secure, public_metrics=args.public_metrics,
                          header_timeout=args.header_timeout,
                          body_timeout=args.body_timeout, max_header_bytes=args.max_header_bytes,
                          max_connections=args.max_connections,
                          max_connections_per_source=args.max_connections_per_source, proxy=args.proxy,
                          webhook_timeout=args.webhook_timeout, webhook_allow=args.webhook_allow_internal,
                          tls_cert=args.tls_cert, tls_key=args.tls_key, qpkg_dir=args.qpkg_dir)
    os.environ[ENV_NAME] = config.to_env()
    scheme = "https" if args.tls_cert else "http"
    shown = "[%s]" % host if ":" in host else host
    sys.stderr.write("exposure-guard-server %s: %s://%s:%d/ (database %s, %d worker%s)\n" % (
        __version__, scheme, shown, port, safe_url(url), args.workers, "" if args.workers == 1 else "s"))
    uvicorn.run("exposure_guard_server.app:app_from_env", factory=True, host=host, port=port, workers=args.workers,
                log_level=args.log_level,  # TLS: the protocol does the handshake (transport.py), not uvicorn
                access_log=args.access_log, proxy_headers=bool(args.proxy),
                forwarded_allow_ips=args.proxy or None, server_header=False, timeout_graceful_shutdown=10,
                http="exposure_guard_server.transport:GuardedHttpToolsProtocol",
                # TLS is started by the protocol after accept; uvloop may read the ClientHello before the
                # protocol can hand the connection to TLS, asyncio's loop reads only when asked to.
                loop="asyncio" if args.tls_cert else "auto")
    return EXIT_OK


def cmd_credential(args: argparse.Namespace) -> int:
    """enroll-secret and api-token: create, list, revoke."""
    from exposure_guard_server.services.admin import Admin

    spec = CREDENTIALS[args.command]
    _url, engine = _engine(args)
    managed = getattr(Admin(engine), spec.attribute)
    out = sys.stdout
    if args.action == "create":
        extra = {"group": args.group} if args.command == "enroll-secret" else {"role": args.role, "groups": args.groups}
        new_id, secret = managed.create(args.name, **extra)
        out.write(spec.created % (new_id, secret))
    elif args.action == "list":
        out.write(spec.list_header)
        for row in managed.list():
            out.write(spec.list_row(row))
    else:
        if not managed.remove(args.ident):
            raise CliError(spec.not_found % args.ident)
        out.write(spec.revoked)
    engine.dispose()
    return EXIT_OK


def cmd_group(args: argparse.Namespace) -> int:
    from exposure_guard_server.services.admin import Admin

    _url, engine = _engine(args)
    groups = Admin(engine).groups
    out = sys.stdout
    try:
        if args.action == "create":
            new_id, name = groups.create(args.name)
            out.write("group %d %r created; enroll its boxes with a secret of its own: exposure-guard-server "
                      "enroll-secret create --group %s\n" % (new_id, name, shlex.quote(name)))
        elif args.action == "list":
            out.write("%-4s %-32s %-8s %s\n" % ("ID", "NAME", "DEVICES", "ACTIVE SECRETS"))
            for row in groups.list():
                out.write("%-4d %-32s %-8d %d\n" % (row["id"], row["name"][:32], row["devices"],
                                                    row["active_secrets"]))
        elif args.action == "remove":
            if not groups.remove(args.name):
                raise CliError("no group %r (see `group list`)" % args.name)
            out.write("removed; its boxes and enrollment secrets are now in no group\n")
        else:
            name = groups.move(args.device_id, args.name)
            out.write("%s is now in %s\n" % (args.device_id, repr(name) if name else "no group"))
    finally:
        engine.dispose()
    return EXIT_OK


def cmd_user(args: argparse.Namespace) -> int:
    from exposure_guard_server.services.admin import Admin

    _url, engine = _engine(args)
    password = _password(args.password_file)
    if password is None:
        if not sys.stdin.isatty():
            raise CliError("no password: use --password-file FILE or env EXPOSURE_GUARD_ADMIN_PASSWORD")
        password = getpass.getpass("new password for %s: " % args.username)
        if getpass.getpass("again: ") != password:
            raise CliError("the passwords differ")
    created = Admin(engine).set_password(args.username, password, args.role, args.groups)
    sys.stdout.write("user %s %s\n" % (args.username, "created" if created else "password changed; sessions ended"))
    engine.dispose()
    return EXIT_OK


def cmd_reenroll(args: argparse.Namespace) -> int:
    """re-enroll list|approve|reject: the operator's side of a re-enrollment without proof."""
    from exposure_guard_server.db.lock import WriteLock
    from exposure_guard_server.inputs import parse_int
    from exposure_guard_server.services.counters import Counters
    from exposure_guard_server.services.enroll import Enrollment

    _url, engine = _engine(args)
    enrollment = Enrollment(engine, WriteLock(engine), Counters(engine))
    out = sys.stdout
    if args.action == "list":
        out.write("%-5s %-32s %-20s %-24s %-16s %s\n" % ("ID", "DEVICE", "KNOWN AS", "REQUEST SAYS", "FROM",
                                                        "REQUESTED"))
        for row in enrollment.pending():
            out.write("%-5d %-32s %-20s %-24s %-16s %s\n" % (
                row["id"], row["device_id"][:32], row["hostname"][:20], row["requested_hostname"][:24],
                row["client"][:16], format_time(row["requested_at"])))
    else:
        ident = parse_int(args.request_id, "ID", minimum=1)
        if args.action == "approve":
            device_id = enrollment.approve(ident, "cli:" + getpass.getuser())
            out.write("approved: %s now uses the requested node key; its previous key no longer works\n" % device_id)
        else:
            out.write("rejected the request for %s; its node key will never work\n" % enrollment.reject(ident))
    engine.dispose()
    return EXIT_OK


COMMANDS = {"init": cmd_init, "serve": cmd_serve, "backup": cmd_backup, "restore": cmd_restore,
            "enroll-secret": cmd_credential, "group": cmd_group, "user": cmd_user, "api-token": cmd_credential,
            "re-enroll": cmd_reenroll}


def main(argv: Optional[List[str]] = None) -> int:
    from exposure_guard_server.db import DatabaseError
    from exposure_guard_server.errors import ApiError

    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except (CliError, DatabaseError) as exc:
        sys.stderr.write("exposure-guard-server: %s\n" % exc)
        return EXIT_USAGE
    except ApiError as exc:
        sys.stderr.write("exposure-guard-server: %s\n" % exc.detail)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a database that cannot be reached, etc.
        name = exc.__class__.__name__
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        sys.stderr.write("exposure-guard-server: %s: %s\n" % (name, first[:500]))
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
