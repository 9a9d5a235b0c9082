"""Agent side of the central check-in (docs/server.md, "How reports travel").

Enrollment stores a per-device node key (``state_dir/node_key``, mode 0600). Every report is written to
the spool first (spool.py) and deleted only after the server answered 2xx; delivery is ordered (oldest first, never skipping ahead
over a transient failure), retried with exponential backoff and jitter inside a total deadline, and
idempotent on the server thanks to ``report_id``. TLS verification is on unless the settings turn it off.

Standard library + requests only; runs on Python 3.8.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Union

import requests

from exposure_guard import __version__
from exposure_guard.atomicio import atomic_write, fsync_dir
from exposure_guard.contracts import utc_now
from exposure_guard.errors import (
    CheckinError,
    EnrollmentError,
    NotEnrolledError,
    ServerUnreachableError,
    TLSVerificationError,
)
from exposure_guard.report import reduced_report
from exposure_guard.spool import dropped_count, reject, spool_lock, spool_report, spooled_files

# The spool's API is part of the check-in's: callers spool a report, then deliver the spool.
__all__ = ["CheckinError", "DeliveryResult", "EnrollmentError", "NotEnrolledError", "ServerUnreachableError",
           "TLSVerificationError", "backoff_delay", "deliver_spool", "dropped_count", "enroll", "read_enrollment",
           "read_node_key", "spool_report", "spooled_files"]

log = logging.getLogger("exposure_guard.checkin")

NODE_KEY_FILE = "node_key"
ENROLLMENT_FILE = "enrollment.json"
ENROLL_PATH = "/api/v1/enroll"
CHECKIN_PATH = "/api/v1/checkin"
INTERVAL_HEADER = "X-ExposureGuard-Interval"
MAX_BACKOFF = 60.0
BASE_BACKOFF = 1.0


@dataclass
class DeliveryResult:
    """What one ``deliver_spool`` call did. ``error`` is empty when nothing went wrong."""

    delivered: int = 0  # stored by the server now
    duplicates: int = 0  # the server already had them (a previous attempt got through)
    rejected: int = 0  # refused for good (400/422, 409, 413 even reduced): moved to spool/rejected/
    reduced: int = 0  # refused as too large (413), then delivered without evidence (counted in delivered too)
    remaining: int = 0  # still in the spool, will be retried
    attempts: int = 0  # HTTP requests made
    error: str = ""  # the last problem, phrased for a person
    fatal: bool = False  # retrying will not help until someone acts (401 → re-enroll, TLS, no key)
    messages: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.error and self.remaining == 0

    def summary(self) -> str:
        text = "check-in: %d delivered%s, %d already on the server, %d rejected, %d waiting in the spool" % (
            self.delivered, " (%d reduced)" % self.reduced if self.reduced else "", self.duplicates, self.rejected,
            self.remaining)
        return text + ("; " + self.error if self.error else "")


# -- helpers -------------------------------------------------------------------------------------------

def _verify(ca_file: str, verify_tls: bool) -> Union[bool, str]:
    if not verify_tls:
        return False
    if ca_file:
        if not os.path.isfile(ca_file):
            raise CheckinError("[server] ca_file %s does not exist or is not a file" % ca_file)
        return ca_file
    return True


def _base_url(server_url: str) -> str:
    url = (server_url or "").strip().rstrip("/")
    if not re.match(r"^https?://[^\s/]+", url):
        raise CheckinError("server URL %r is not an http:// or https:// URL" % server_url)
    return url


# What OpenSSL says when the other end answers a TLS ClientHello in plain HTTP.
PLAIN_HTTP_SIGNS = ("WRONG_VERSION_NUMBER", "wrong version number", "http request", "record layer failure",
                    "packet length too long", "unknown protocol")


def _explain_exception(exc: Exception, url: str) -> CheckinError:
    if isinstance(exc, requests.exceptions.SSLError) and any(s in str(exc) for s in PLAIN_HTTP_SIGNS):
        plain = "http://" + url.split("://", 1)[-1]
        return TLSVerificationError(
            "the server at %s answers plain HTTP, not TLS: use %s (what `exposure-guard-server serve` speaks "
            "without --tls-cert), or serve it with --tls-cert/--tls-key or behind a TLS proxy" % (url, plain))
    if isinstance(exc, requests.exceptions.SSLError):
        return TLSVerificationError(
            "TLS verification of %s failed (%s); if the server uses a private CA, set [server] ca_file to its "
            "CA bundle" % (url, _short(exc)))
    if isinstance(exc, requests.exceptions.Timeout):
        return ServerUnreachableError("the server %s did not answer in time (%s)" % (url, _short(exc)))
    if isinstance(exc, requests.exceptions.ConnectionError):
        return ServerUnreachableError("cannot reach the server %s (%s)" % (url, _short(exc)))
    return CheckinError("request to %s failed: %s" % (url, _short(exc)))


def _short(exc: BaseException) -> str:
    text = str(exc) or exc.__class__.__name__
    # requests nests urllib3 reasons; keep the innermost readable part.
    match = re.search(r"\(Caused by \w+\((.*)\)\)$", text)
    if match:
        text = match.group(1)
    return text[:300]


def _server_detail(response: requests.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return (response.text or "").strip()[:200]
    if isinstance(body, dict):
        detail = body.get("detail") or body.get("error") or ""
        if isinstance(detail, (list, dict)):
            detail = json.dumps(detail)[:200]
        return str(detail)[:300]
    return ""


def read_node_key(state_dir: Path) -> str:
    path = Path(state_dir) / NODE_KEY_FILE
    try:
        key = path.read_text("ascii").strip()
    except FileNotFoundError:
        raise NotEnrolledError(
            "this NAS is not enrolled (no %s): run `exposure-guard enroll --server URL --secret SECRET`" % path
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NotEnrolledError("cannot read the node key %s: %s; enroll again" % (path, exc)) from None
    if not key:
        raise NotEnrolledError("the node key %s is empty: enroll again" % path)
    return key


def read_enrollment(state_dir: Path) -> Dict[str, Any]:
    """What ``enroll`` recorded besides the key (server URL, device id, time); {} when absent."""
    try:
        data = json.loads((Path(state_dir) / ENROLLMENT_FILE).read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# -- enrollment ----------------------------------------------------------------------------------------

def enroll(server_url: str, secret: str, identity: Any, state_dir: Path, *, ca_file: str = "",
           verify_tls: bool = True, timeout: float = 20) -> str:
    """Enroll this NAS with ``server_url`` using an enrollment ``secret``; store the node key (0600).

    Re-enrolling the same device (same device id) keeps its history on the server and gives it a fresh node
    key: at once when this NAS still has its key for that server (sent as proof), else once an operator
    approves. Returns a one-line message for a person."""
    base = _base_url(server_url)
    secret = (secret or "").strip()
    if not secret:
        raise EnrollmentError("the enrollment secret is empty; get one with `exposure-guard-server enroll-secret "
                              "create` or from the server's admin page")
    verify = _verify(ca_file, verify_tls)
    device = identity.to_dict() if hasattr(identity, "to_dict") else dict(identity)
    body = {"enroll_secret": secret, "device": device, "agent": {"version": __version__}}
    previous = _previous_node_key(Path(state_dir), base)
    if previous:
        body["previous_node_key"] = previous  # proves to the server that this is the NAS it enrolled
    url = base + ENROLL_PATH
    try:
        response = requests.post(url, json=body, timeout=timeout, verify=verify,
                                 headers={"User-Agent": "exposure-guard/%s" % __version__})
    except requests.exceptions.RequestException as exc:
        raise _explain_exception(exc, base) from None
    if response.status_code in (401, 403):
        raise EnrollmentError("the server %s refused the enrollment secret (HTTP %d: %s); check it, or create a "
                              "new one with `exposure-guard-server enroll-secret create`"
                              % (base, response.status_code, _server_detail(response) or "invalid secret"))
    if response.status_code == 404:
        raise EnrollmentError("%s has no enrollment endpoint (HTTP 404): is this an ExposureGuard server URL?" % url)
    if not 200 <= response.status_code < 300:
        raise EnrollmentError("enrollment at %s failed: HTTP %d %s" % (
            base, response.status_code, _server_detail(response)))
    try:
        answer = response.json()
        node_key = str(answer["node_key"])
    except (ValueError, KeyError, TypeError):
        raise EnrollmentError("the server %s answered the enrollment without a node key; is it an "
                              "ExposureGuard server?" % base) from None
    if not re.match(r"^[A-Za-z0-9_.\-]{16,200}$", node_key):
        raise EnrollmentError("the server %s sent a malformed node key" % base)
    state = Path(state_dir)
    state.mkdir(parents=True, exist_ok=True)
    atomic_write(state / NODE_KEY_FILE, (node_key + "\n").encode("ascii"), 0o600)
    os.chmod(str(state / NODE_KEY_FILE), 0o600)
    record = {"server_url": base, "device_id": device.get("device_id", ""), "enrolled_at": utc_now("s")}
    prober = _handed_prober(answer)
    if prober:
        record["prober"] = prober
    atomic_write(state / ENROLLMENT_FILE, (json.dumps(record, indent=2) + "\n").encode("utf-8"), 0o600)
    again = " again" if answer.get("re_enrolled") else ""
    note = "" if answer.get("re_enrolled") else (
        " (if the server knew this NAS before and it lost its node key, the key works once an operator approves"
        " the re-enrollment)")
    return "enrolled%s %s (%s) with %s; node key stored in %s%s" % (
        again, device.get("hostname", ""), device.get("device_id", ""), base, state / NODE_KEY_FILE, note)


def _handed_prober(answer: Any) -> Dict[str, str]:
    """The callback prober the server hands its agents (``{"url", "token"}``), checked like the setting
    would be; {} when there is none or it is not usable."""
    prober = answer.get("prober") if isinstance(answer, dict) else None
    if not isinstance(prober, dict):
        return {}
    url, token = prober.get("url"), prober.get("token", "")
    if not isinstance(url, str) or not isinstance(token, str) or len(url) > 300 or len(token) > 200 \
            or not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", url) or not re.fullmatch(r"[A-Za-z0-9._~+/=-]*", token):
        return {}
    return {"url": url, "token": token}


def remember_prober(state_dir: Path, answer: Any) -> bool:
    """Keep the prober a check-in answer hands over when it differs from the recorded one; True if changed."""
    prober = _handed_prober(answer)
    if not prober:
        return False
    record = read_enrollment(state_dir)
    if not record or record.get("prober") == prober:
        return False
    record["prober"] = prober
    path = Path(state_dir) / ENROLLMENT_FILE
    atomic_write(path, (json.dumps(record, indent=2) + "\n").encode("utf-8"), 0o600)
    os.chmod(str(path), 0o600)  # it holds the prober's token (atomic_write keeps an existing file's mode)
    return True


def with_server_prober(settings: Any, state_dir: Path) -> Any:
    """``settings`` with the callback prober the fleet server handed over, unless the owner set one
    (``[reachability] prober_url`` wins)."""
    if settings.get("reachability", "prober_url"):
        return settings
    prober = _handed_prober(read_enrollment(state_dir))
    if not prober:
        return settings
    try:
        return settings.with_overrides({("reachability", "prober_url"): prober["url"],
                                        ("reachability", "token"): prober["token"]}, source="the fleet server")
    except Exception:  # a value the settings refuse: run without it, as before
        return settings


def _previous_node_key(state_dir: Path, base: str) -> str:
    """The node key this NAS holds for ``base`` ("" if none): never sent to any other server."""
    if read_enrollment(state_dir).get("server_url") != base:
        return ""
    try:
        return read_node_key(state_dir)
    except NotEnrolledError:
        return ""


def backoff_delay(attempt: int, base: float = BASE_BACKOFF, cap: float = MAX_BACKOFF,
                  rng: Optional[random.Random] = None) -> float:
    """Exponential backoff with jitter ("equal jitter"): half fixed, half random, capped."""
    ceiling = min(cap, base * (2 ** max(0, attempt)))
    return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


# -- delivery ------------------------------------------------------------------------------------------

def deliver_spool(settings: Any, state_dir: Path, *, deadline: float = 60,
                  sleep: Any = time.sleep) -> DeliveryResult:
    """Deliver every spooled report, oldest first, within ``deadline`` seconds.

    A report is deleted only after a 2xx. 5xx/429/network errors are retried with exponential backoff
    and jitter until the deadline (the rest stays spooled for next time). 401/403 stop delivery with a
    re-enroll message; 400/409/422 move that one report to ``spool/rejected/`` and go on. A report refused
    as too large (413) is sent again without evidence (``reduced``); only if that is refused too is it
    moved to ``spool/rejected/``."""
    result = DeliveryResult()
    state = Path(state_dir)
    started = time.monotonic()
    end = started + max(0.0, float(deadline))
    url = settings.get("server", "url") or read_enrollment(state).get("server_url", "")
    if not url:
        result.remaining = len(spooled_files(state))
        result.error = "no check-in server configured ([server] url is empty)"
        result.fatal = True
        return result
    try:
        base = _base_url(url)
        verify = _verify(settings.get("server", "ca_file"), settings.get("server", "verify_tls"))
        node_key = read_node_key(state)
    except CheckinError as exc:
        result.remaining = len(spooled_files(state))
        result.error, result.fatal = str(exc), True
        return result
    interval = _setting(settings, "agent", "interval", 3600)
    headers = {
        "Authorization": "Bearer " + node_key,
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
        "User-Agent": "exposure-guard/%s" % __version__,
        INTERVAL_HEADER: str(int(interval)),
    }
    with spool_lock(state) as locked:
        if not locked:
            result.remaining = len(spooled_files(state))
            result.error = "another delivery of this spool is running"
            return result
        with requests.Session() as session:
            _deliver_locked(session, base, verify, headers, state, end, result, sleep)
    result.remaining = len(spooled_files(state))
    return result


def _setting(settings: Any, section: str, key: str, default: Any) -> Any:
    try:
        return settings.get(section, key)
    except KeyError:
        return default


def _deliver_locked(session: requests.Session, base: str, verify: Union[bool, str], headers: Dict[str, str],
                    state: Path, end: float, result: DeliveryResult, sleep: Any) -> None:
    url = base + CHECKIN_PATH
    failures = 0
    for path in spooled_files(state):
        try:
            raw = path.read_bytes()
            document = json.loads(raw.decode("utf-8"))
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            reject(state, path, "spooled report %s is unreadable (%s); moved to spool/rejected/" % (path.name, exc))
            result.rejected += 1
            continue
        body = gzip.compress(raw, 6)
        reduced = False
        while True:
            remaining = end - time.monotonic()
            if remaining <= 0:
                if not result.error:
                    result.error = "delivery deadline reached; reports stay in the spool for the next run"
                return
            outcome, message = _post_once(session, url, base, body, headers, verify, min(20.0, max(1.0, remaining)),
                                          state)
            result.attempts += 1
            if outcome == "delivered" or outcome == "duplicate":
                _delete_delivered(path)
                if outcome == "delivered":
                    result.delivered += 1
                else:
                    result.duplicates += 1
                result.reduced += int(reduced)
                failures = 0
                result.error = ""
                break
            if outcome == "too-large" and not reduced and isinstance(document, dict):
                # Retrying the same bytes would be refused forever: send every finding without its evidence.
                body = gzip.compress(_reduced_bytes(document, message), 6)
                reduced = True
                log.warning("check-in: %s; sending report %s again without evidence (reduced)",
                            message, document.get("report_id", path.name))
                continue
            if outcome in ("reject", "too-large"):
                if outcome == "too-large":
                    message += ("; even without evidence (reduced). It was moved to spool/rejected/ — raise the "
                                "server's --max-body")
                reject(state, path, message)
                result.rejected += 1
                result.messages.append(message)
                break
            if outcome == "fatal":
                result.error, result.fatal = message, True
                log.error("check-in: %s", message)
                return
            # transient: wait and retry the same report (ordered delivery never skips ahead)
            result.error = message
            delay = backoff_delay(failures)
            failures += 1
            if time.monotonic() + delay >= end:
                log.warning("check-in: %s; giving up until the next run", message)
                return
            log.info("check-in: %s; retrying in %.1f s", message, delay)
            sleep(delay)


def _reduced_bytes(document: Dict[str, Any], why: str) -> bytes:
    reason = "the server refused the full report as too large (%s)" % why
    return json.dumps(reduced_report(document, reason[:1000]), ensure_ascii=False,
                      separators=(",", ":")).encode("utf-8")


def _delete_delivered(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    fsync_dir(path.parent)


def _post_once(session: requests.Session, url: str, base: str, body: bytes, headers: Dict[str, str],
               verify: Union[bool, str], timeout: float, state: Optional[Path] = None) -> Tuple[str, str]:
    """One POST → (delivered|duplicate|too-large|reject|fatal|transient, message). A stored report's answer
    may hand over the fleet's callback prober: it is kept in ``state``."""
    try:
        response = session.post(url, data=body, headers=headers, timeout=(min(timeout, 10.0), timeout),
                                verify=verify)
    except requests.exceptions.SSLError as exc:
        return "fatal", str(_explain_exception(exc, base))
    except requests.exceptions.RequestException as exc:
        return "transient", str(_explain_exception(exc, base))
    code = response.status_code
    detail = _server_detail(response)
    if 200 <= code < 300:
        try:
            answer = response.json()
            duplicate = bool(answer.get("duplicate"))
        except (ValueError, AttributeError):
            answer, duplicate = None, False
        if state is not None:
            try:
                remember_prober(state, answer)
            except OSError:
                pass  # the state dir cannot be written: the next check-in tries again
        return ("duplicate" if duplicate else "delivered"), ""
    if code == 401 and response.headers.get("X-ExposureGuard-Enrollment") == "pending-approval":
        # Enrolling again would only file another request (approving one drops the others): wait instead.
        return "fatal", ("the server %s has not accepted this NAS's node key yet: its enrollment waits for the "
                         "server operator's approval (HTTP 401%s); the reports stay queued" % (base, _paren(detail)))
    if code == 401:
        return "fatal", ("the server %s no longer accepts this NAS's node key (HTTP 401%s): re-enroll with "
                         "`exposure-guard enroll --server %s --secret SECRET`" % (base, _paren(detail), base))
    if code == 403:
        return "fatal", ("the server %s refused the report for this node key (HTTP 403%s): the device identity "
                         "changed since enrollment; re-enroll with `exposure-guard enroll --server %s --secret "
                         "SECRET`" % (base, _paren(detail), base))
    if code == 413:
        return "too-large", "the server %s refused a report as too large (HTTP 413%s)" % (base, _paren(detail))
    if code in (400, 409, 415, 422):
        return "reject", ("the server %s refused a report (HTTP %d%s); it was moved to spool/rejected/"
                          % (base, code, _paren(detail)))
    if code == 429 or code >= 500:
        return "transient", "the server %s had a problem (HTTP %d%s)" % (base, code, _paren(detail))
    if code == 404:
        return "fatal", "%s answered HTTP 404: is [server] url an ExposureGuard server?" % url
    return "transient", "unexpected answer from %s: HTTP %d%s" % (base, code, _paren(detail))


def _paren(detail: str) -> str:
    return (": " + detail) if detail else ""
