"""The ``exposure-guard`` command line: every subcommand and its options, built on demand."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Dict, Optional, Tuple

from exposure_guard import __version__
from exposure_guard.settings import SEVERITY_NAMES


class Formatter(argparse.HelpFormatter):
    """argparse's formatter, told the terminal width up front: its default asks shutil, which costs a
    few ms of every agent start (argparse builds a formatter for each add_argument)."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: Optional[int] = None) -> None:
        if width is None:
            width = _terminal_columns() - 2
        super().__init__(prog, indent_increment, max_help_position, width)


def _terminal_columns() -> int:
    """What shutil.get_terminal_size() says: $COLUMNS, else the terminal's width, else 80."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80  # type: ignore[union-attr]
    except (AttributeError, ValueError, OSError):
        return 80


class Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", Formatter)
        super().__init__(*args, **kwargs)


def _common(p: argparse.ArgumentParser, settings: bool = True) -> None:
    p.add_argument("--root", default="/", metavar="DIR", help="QTS root (default /); tests use fake trees")
    p.add_argument("--state-dir", metavar="DIR",
                   help="journal/backups/spool (default: from the QPKG, or DIR/var/exposure-guard)")
    if settings:
        p.add_argument("--settings", metavar="FILE", help="settings ini (default: $EXPOSURE_GUARD_SETTINGS)")
        p.add_argument("--igd", metavar="URL", help="the router's IGD description URL (skips SSDP discovery)")
        p.add_argument("--prober", metavar="URL", help="callback prober URL ([reachability] prober_url)")


def _check_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--json", action="store_true", help="print exactly one report document (schema report/v1)")
    p.add_argument("--only", metavar="ID,...", help="run only these checks")
    p.add_argument("--offline", action="store_true", help="skip router and reachability checks")
    p.add_argument("--fail-on", choices=SEVERITY_NAMES, help="lowest severity that makes the exit code 1")
    p.add_argument("--verbose", "-v", action="store_true", help="also list skipped checks")


def _fix_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--only", metavar="ID,...", help="fix only these checks")
    p.add_argument("--offline", action="store_true", help="skip router and reachability checks")
    p.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true", help="print the report after fixing as JSON")


def _undo_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("change_id", nargs="?", metavar="CHANGE_ID")
    group.add_argument("--last", action="store_true", help="undo the most recent fix run")
    group.add_argument("--all", action="store_true", help="undo every change, newest first")


def _history_args(p: argparse.ArgumentParser) -> None:
    _common(p, settings=False)
    p.add_argument("--json", action="store_true")


def _checks_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true")


def _explain_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("check_id", metavar="ID")


def _run_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--once", action="store_true", help="one cycle, then exit")
    p.add_argument("--offline", action="store_true", help="skip router and reachability checks")


def _enroll_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    p.add_argument("--server", required=True, metavar="URL")
    p.add_argument("--secret", required=True, metavar="SECRET")


def _web_args(p: argparse.ArgumentParser) -> None:
    _common(p)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", metavar="HOST:PORT", help="serve the page on HOST:PORT (keep it on loopback)")
    where.add_argument("--cgi", action="store_true",
                       help="answer one request as a CGI script of QTS's web server (what the package does)")
    p.add_argument("--qts-auth", metavar="URL",
                   help="QTS's authLogin.cgi (loopback only; default: 127.0.0.1 at the NAS's admin port)")
    p.add_argument("--offline", action="store_true", help="skip router and reachability checks")


# command -> (help, how to add its arguments), in the order `--help` lists them
SUBCOMMANDS: Dict[str, Tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "check": ("check the NAS and report its exposure", _check_args),
    "fix": ("apply the safe fixes (journaled, undoable)", _fix_args),
    "undo": ("undo changes from the journal", _undo_args),
    "history": ("list the change journal", _history_args),
    "checks": ("list the check catalogue", _checks_args),
    "explain": ("rationale, evidence read and manual fix of one check", _explain_args),
    "run": ("the scheduled daemon (check every interval, fix per settings, check in)", _run_args),
    "enroll": ("enroll this NAS with a central ExposureGuard server", _enroll_args),
    "demo": ("check the bundled example NAS (no network, no root)", lambda p: None),
    "web": ("serve the page for QTS administrators (inside QTS)", _web_args),
}


def build_parser(only: Optional[str] = None) -> argparse.ArgumentParser:
    """The command line; ``only`` builds just that command's subparser (argparse builds every subparser
    up front, a quarter of the agent's start-up; the full set is built for --help and unknown commands)."""
    parser = Parser(
        prog="exposure-guard",
        description="Find and close the internet exposure of a QNAP NAS (QNAP advisory, January 2022).",
    )
    parser.add_argument("--version", action="version", version="exposure-guard " + __version__)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    for name, (text, add_arguments) in SUBCOMMANDS.items():
        if only is None or name == only:
            add_arguments(sub.add_parser(name, help=text))
    return parser
