"""One exception family for everything a user can act on; exit codes are decided here only."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class ExposureGuardError(Exception):
    """Base class: the message says what happened and what to do."""

    exit_code = EXIT_INTERNAL


class UsageError(ExposureGuardError):
    """Bad command line or bad settings: exit 2."""

    exit_code = EXIT_USAGE


class SettingsError(UsageError):
    """A settings value is wrong; the message names file, line, key and the allowed values."""

    def __init__(self, message: str, *, file: str = "", line: int = 0, key: str = "") -> None:
        where = file + (":%d" % line if line else "") if file else ""
        full = "%s: %s" % (where, message) if where else message
        if key and key not in message:
            full += " (key %s)" % key
        super().__init__(full)
        self.file, self.line, self.key = file, line, key


class PeerError(ExposureGuardError):
    """A device or service on the network could not be reached or answered something unusable; the message
    says which and where. (The UPnP client calls it UpnpError.)"""


class HostileResponse(PeerError):
    """The peer answered something we refuse to process: too big, too slow, an XML bomb, an external
    entity, a control URL on another host, a non-HTTP scheme."""


class TooLarge(HostileResponse):
    """The answer was (or announced itself) larger than the cap."""


class TooSlow(HostileResponse):
    """The exchange did not finish within its total deadline."""


class ConnectFailed(PeerError):
    """No connection could be made (refused, unreachable, no route, name unknown)."""


class TlsFailed(ConnectFailed):
    """The TLS handshake failed (certificate not trusted, protocol error)."""


class ConfigFileError(ExposureGuardError):
    """A QTS config file could not be read or written."""


class JournalError(ExposureGuardError):
    """The change journal is unreadable or an undo cannot be done safely."""


class UnsafePathError(UsageError):
    """A state dir another user could tamper with, or a path that leaves the checked root: exit 2. The
    message names the path and how to make it safe."""


class JournalEntryRefused(JournalError):
    """One journal line points outside the checked root or the state dir's backups: that change is not
    undone (the others are)."""


class RefusedError(UsageError):
    """An action needs confirmation that was not given (no --yes and no TTY)."""


class LockedError(ExposureGuardError):
    """Another agent instance holds the lock."""


class Unknowable(Exception):
    """A check cannot tell: its input is missing or unreadable. The message is the reason; the check
    runner turns it into an ``unknown`` finding. Not an ExposureGuardError: it never reaches the user as one."""


class CheckinError(ExposureGuardError):
    """Enrollment or check-in failed; the message says why and what to do."""


class EnrollmentError(CheckinError):
    """The server refused the enrollment (bad or revoked secret, bad identity)."""


class NotEnrolledError(CheckinError):
    """No node key yet: ``exposure-guard enroll`` has not been run (or its key was removed)."""


class ServerUnreachableError(CheckinError):
    """The server could not be reached (DNS, refused connection, time-out)."""


class TLSVerificationError(CheckinError):
    """The server's certificate could not be verified, or it does not speak TLS at all: a setting to change
    (the URL's scheme, [server] ca_file), so exit 2 like any other usage error."""

    exit_code = EXIT_USAGE
