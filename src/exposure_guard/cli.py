"""``exposure-guard``: a thin layer that parses arguments (cliparser.py), calls the core and renders the result."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Dict, List, Optional, Sequence, TextIO, Tuple

from exposure_guard.cliparser import SUBCOMMANDS, build_parser
from exposure_guard.contracts.terminal import clean, json_for_terminal
from exposure_guard.errors import (
    EXIT_FINDINGS,
    EXIT_INTERNAL,
    EXIT_OK,
    EXIT_USAGE,
    ExposureGuardError,
    RefusedError,
    UsageError,
)
from exposure_guard.settings import Settings, load_settings

if TYPE_CHECKING:
    from exposure_guard.context import CheckContext
    from exposure_guard.qts.root import QtsRoot

DEMO_ROOT = Path(__file__).resolve().parent / "data" / "demo_nas"


# ---------------------------------------------------------------------------------------------- helpers
def settings_for(args: argparse.Namespace) -> Settings:
    """Settings for a command that checks or fixes: the ini file, env, then the flags; [checks] ids are
    validated against the catalogue here, so a typo fails before anything runs."""
    from exposure_guard.checks.runner import validate_policies

    path = getattr(args, "settings", None)
    required = path is not None
    if path is None:
        path = os.environ.get("EXPOSURE_GUARD_SETTINGS") or None
    settings = load_settings(Path(path) if path else None, required=required)
    overrides: Dict[Tuple[str, str], str] = {}
    if getattr(args, "fail_on", None):
        overrides[("agent", "fail_on")] = args.fail_on
    if getattr(args, "igd", None):
        overrides[("router", "igd_url")] = args.igd
    if getattr(args, "prober", None):
        overrides[("reachability", "prober_url")] = args.prober
    settings = settings.with_overrides(overrides) if overrides else settings
    validate_policies(settings)
    return settings


def state_dir_for(args: argparse.Namespace) -> Path:
    from exposure_guard.qts.root import default_state_dir

    if getattr(args, "state_dir", None):
        return Path(args.state_dir)
    return default_state_dir(args.root)


def private_state_dir(args: argparse.Namespace, create: bool = True) -> Path:
    """The state dir for a command that writes or trusts it: refused (UnsafePathError, exit 2) when another
    user could tamper with it or with its parents inside --root."""
    from exposure_guard.qts.root import secure_state_dir

    return secure_state_dir(state_dir_for(args), args.root, create=create)


def root_for(args: argparse.Namespace) -> QtsRoot:
    from exposure_guard.qts.root import QtsRoot

    root = Path(args.root)
    if not root.is_dir():
        raise UsageError("--root %s is not a directory" % args.root)
    return QtsRoot(root)


def context_for(args: argparse.Namespace, settings: Settings) -> CheckContext:
    from exposure_guard.context import CheckContext

    return CheckContext(root_for(args), settings, offline=getattr(args, "offline", False),
                        state_dir=state_dir_for(args))


def say(line: str, stream: Optional[TextIO] = None) -> None:
    """Print one line built from device, config or journal data: control sequences shown inert."""
    (stream or sys.stdout).write(clean(line) + "\n")


def only_list(args: argparse.Namespace) -> Optional[List[str]]:
    return [item for item in args.only.split(",") if item.strip()] if getattr(args, "only", None) else None


# ---------------------------------------------------------------------------------------------- commands
def cmd_check(args: argparse.Namespace) -> int:
    from exposure_guard.core import check_once
    from exposure_guard.render import render_report

    settings = settings_for(args)
    ctx = context_for(args, settings)
    report = check_once(ctx, only_list(args)).report
    if args.json:
        sys.stdout.write(json_for_terminal(report.to_json()) + "\n")
    else:
        sys.stdout.write(render_report(report, sys.stdout, verbose=args.verbose))
    return EXIT_FINDINGS if report.failing(settings.get("agent", "fail_on")) else EXIT_OK


def confirm(question: str) -> bool:
    if not sys.stdin.isatty():
        raise RefusedError("refusing to change the NAS without confirmation: stdin is not a terminal; "
                           "re-run with --yes (or --dry-run to only see the plan)")
    sys.stdout.write(question + " [y/N] ")
    sys.stdout.flush()
    return sys.stdin.readline().strip().lower() in ("y", "yes")


def cmd_fix(args: argparse.Namespace) -> int:
    from exposure_guard.core import check_once, fix_once, plan_fixes, write_last_report
    from exposure_guard.render import render_report

    settings = settings_for(args)
    ctx = context_for(args, settings)
    planned = plan_fixes(ctx, check_once(ctx, only_list(args)).outcomes, daemon=False)
    out = sys.stdout
    if not planned:
        out.write("Nothing to fix: no failing check has a safe automatic fix that is still needed.\n")
        return EXIT_OK
    out.write("Plan (%d change%s):\n" % (len(planned), "" if len(planned) == 1 else "s"))
    for item in planned:
        say("  [%s] %s" % (item.action.check_id, item.description), out)
    if args.dry_run:
        out.write("Dry run: nothing was changed.\n")
        return EXIT_OK
    private_state_dir(args)  # before asking: the journal must be safe to write
    if not args.yes and not confirm("Apply these changes?"):
        out.write("Nothing was changed.\n")
        return EXIT_OK
    run = fix_once(ctx, planned, only_list(args))
    result, report = run.result, run.report
    for record in result.applied:
        say("applied %s  %s: %r -> %r" % (record.change_id, record.target, record.before, record.after), out)
    for line in result.failed:
        say("FAILED  %s" % line, out)
    report.mode = "fix"
    problem = write_last_report(state_dir_for(args), report)
    if problem:
        say("exposure-guard: warning: %s" % problem, sys.stderr)
    out.write("\nAfter the fix:\n")
    out.write(json_for_terminal(report.to_json()) + "\n" if args.json else render_report(report, out))
    say("Undo with: exposure-guard undo --last%s" % ("" if args.root == "/" else " --root %s" % args.root), out)
    if result.failed:
        return EXIT_INTERNAL
    return EXIT_FINDINGS if report.failing(settings.get("agent", "fail_on")) else EXIT_OK


def cmd_undo(args: argparse.Namespace) -> int:
    from exposure_guard.fixes.apply import undo_changes
    from exposure_guard.fixes.journal import ChangeJournal

    settings = settings_for(args)
    ctx = context_for(args, settings)
    journal = ChangeJournal(private_state_dir(args, create=False), args.root)
    records = [r for r in journal.changes() if r.state in ("applied", "planned")]
    if args.change_id:
        records = [journal.get(args.change_id)]
    elif args.last and records:
        newest = records[-1].batch
        records = [r for r in records if r.batch == newest] if newest else records[-1:]
    if not records:
        sys.stdout.write("Nothing to undo: the journal has no applied change.\n")
        return EXIT_OK
    lines = undo_changes(ctx, journal, records)
    for line in lines:
        say(line)
    return EXIT_INTERNAL if lines.refused or lines.failed else EXIT_OK


def cmd_history(args: argparse.Namespace) -> int:
    from exposure_guard.fixes.journal import ChangeJournal

    records = ChangeJournal(private_state_dir(args, create=False), args.root).changes()
    if args.json:
        sys.stdout.write(json.dumps([r.to_dict() for r in records], indent=2) + "\n")
        return EXIT_OK
    if not records:
        sys.stdout.write("The change journal is empty.\n")
        return EXIT_OK
    for r in records:
        say("%s  %-8s %-28s %s: %r -> %r%s" % (
            r.at[:19], r.state, r.check_id, r.target, r.before, r.after,
            ("  (undone %s)" % r.undone_at[:19]) if r.undone_at else ""))
        say("    id %s" % r.change_id)
    return EXIT_OK


def cmd_checks(args: argparse.Namespace) -> int:
    from exposure_guard.checks import all_checks

    checks = all_checks()
    if args.json:
        sys.stdout.write(json.dumps([c.catalogue_entry() for c in checks], indent=2) + "\n")
        return EXIT_OK
    width = max(len(c.id) for c in checks)
    for c in checks:
        sys.stdout.write("%-*s  %-8s %-3s  %s\n" % (width, c.id, c.severity, "fix" if c.fixable else "", c.title))
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    import textwrap

    from exposure_guard.checks import get_check

    c = get_check(args.check_id)
    if c is None:
        raise UsageError("unknown check id %r; run `exposure-guard checks` for the list" % args.check_id)
    fill = lambda text: textwrap.fill(" ".join(text.split()), 100, initial_indent="  ", subsequent_indent="  ")  # noqa: E731
    parts = ["%s — %s" % (c.id, c.title), "severity: %s   family: %s   automatic fix: %s" % (
        c.severity, c.family, "yes (undoable)" if c.fixable else "no"), "", "Why it matters:", fill(c.rationale),
        "", "What it reads:"] + ["  - " + r for r in c.read_lines()] + ["", "How to fix it by hand:", fill(c.remediation)]
    if c.confirm:
        parts += ["", "How to confirm the setting on your NAS:", fill(c.confirm)]
    if c.references:
        parts += ["", "References:"] + ["  - " + r for r in c.references]
    sys.stdout.write("\n".join(parts) + "\n")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from exposure_guard.daemon import Daemon

    settings = settings_for(args)
    daemon = Daemon(root_for(args), settings, private_state_dir(args), offline=args.offline)
    return daemon.run_forever() if not args.once else daemon.run_once_locked()


def cmd_enroll(args: argparse.Namespace) -> int:
    from exposure_guard import checkin
    from exposure_guard.qts.config import QtsConfig
    from exposure_guard.qts.identity import read_identity

    settings = settings_for(args)
    root = root_for(args)
    identity = read_identity(root, QtsConfig(root), list(settings.get("agent", "lan_addresses")))
    message = checkin.enroll(args.server, args.secret, identity, private_state_dir(args),
                             ca_file=settings.get("server", "ca_file"), verify_tls=settings.get("server", "verify_tls"))
    say(message)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    from exposure_guard.context import CheckContext
    from exposure_guard.core import check_once, plan_fixes
    from exposure_guard.qts.root import QtsRoot
    from exposure_guard.render import render_report

    out = sys.stdout
    out.write("ExposureGuard demo: checking the bundled example NAS (%s),\n"
              "a box set up the way QNAP's January 2022 advisory warned about. No network, nothing is changed.\n\n"
              % DEMO_ROOT)
    ctx = CheckContext(QtsRoot(DEMO_ROOT), load_settings(None, environ={}), offline=True)
    run = check_once(ctx)
    out.write(render_report(run.report, out))
    planned = plan_fixes(ctx, run.outcomes, daemon=False)
    out.write("\nWhat `exposure-guard fix` would change on this NAS (each change journaled and undoable):\n")
    for item in planned:
        out.write("  [%s] %s\n" % (item.action.check_id, item.description))
    out.write("\nNever changed automatically (the owner's ways in): admin ports, HTTPS, accounts, SSH, firewall.\n"
              "On a real NAS the router audit and the callback reachability check run too (here: --offline).\n"
              "Try: exposure-guard explain myqnapcloud.upnp-forwarding\n")
    return EXIT_OK  # the demo worked; `check` is the command whose exit code reports findings


def cmd_web(args: argparse.Namespace) -> int:
    from exposure_guard.web.app import WebApp, make_server, run_cgi
    from exposure_guard.web.auth import is_loopback
    from exposure_guard.web.csrf import stored_secret

    settings = settings_for(args)
    state_dir = private_state_dir(args)
    try:
        app = WebApp(root_for(args), settings, state_dir, args.qts_auth, offline=args.offline,
                     secret=stored_secret(state_dir))
    except (ValueError, OSError) as exc:
        raise UsageError(str(exc)) from None
    if args.cgi:
        return run_cgi(app, dict(os.environ), sys.stdin.buffer, sys.stdout.buffer)
    host, sep, port = args.listen.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UsageError("--listen wants HOST:PORT, e.g. 127.0.0.1:8765 (got %r)" % args.listen)
    try:
        server = make_server(app, host, int(port))
    except OSError as exc:
        raise UsageError("cannot listen on %s: %s" % (args.listen, exc.strerror or exc)) from None
    if not is_loopback(host):
        say("exposure-guard: warning: serving on %s, not loopback: only QTS's web server should reach this page"
            % host, sys.stderr)
    say("serving the ExposureGuard page on http://%s:%s/ (Ctrl-C stops)" % (host, port))
    sys.stdout.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return EXIT_OK


COMMANDS = {"check": cmd_check, "fix": cmd_fix, "undo": cmd_undo, "history": cmd_history, "checks": cmd_checks,
            "explain": cmd_explain, "run": cmd_run, "enroll": cmd_enroll, "demo": cmd_demo, "web": cmd_web}


def main(argv: Optional[Sequence[str]] = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = next((word for word in words if not word.startswith("-")), None)
    parser = build_parser(command if command in SUBCOMMANDS else None)
    try:
        args = parser.parse_args(words)
    except SystemExit as exc:  # argparse exits 2 on usage errors, 0 for --help
        return int(exc.code or 0)
    if not args.command:
        parser.print_help()
        return EXIT_USAGE
    try:
        return COMMANDS[args.command](args)
    except ExposureGuardError as exc:
        sys.stderr.write("exposure-guard: %s\n" % clean(exc, keep_newlines=True))
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("exposure-guard: interrupted\n")
        return EXIT_INTERNAL
    except BrokenPipeError:
        return EXIT_OK
    except Exception as exc:  # the last line of defence: never a bare traceback for a user
        import traceback

        sys.stderr.write("exposure-guard: internal error: %s\n" % clean(exc, keep_newlines=True))
        if os.environ.get("EXPOSURE_GUARD_DEBUG"):
            traceback.print_exc()
        else:
            sys.stderr.write("(set EXPOSURE_GUARD_DEBUG=1 for the traceback)\n")
        return EXIT_INTERNAL

