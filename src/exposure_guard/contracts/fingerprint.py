"""Service fingerprints: what answers on a TCP port, reduced to values that can be compared.

The prober (from the internet) and the agent (through loopback and the LAN address) fingerprint the
same services with the same normalisation, so "the internet sees *this* NAS" becomes an equality test:
same TLS leaf certificate, or same HTTP answer (status, Server, Location path, title), or same banner.
Pure functions here are shared with the prober; ``fingerprint_local`` is the agent's blocking probe.
"""

from __future__ import annotations

import hashlib
import re
import socket
import ssl
import time
from typing import Any, Dict, List, Optional, Tuple

# Caps: a fingerprint is a few short strings, never a page.
READ_CAP = 64 * 1024
TEXT_CAP = 200
USER_AGENT = "exposure-guard-fingerprint/1"

_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"', "&#39;": "'", "&nbsp;": " "}


def clean_text(value: Any, cap: int = TEXT_CAP) -> str:
    """Printable, whitespace-collapsed, capped text from untrusted bytes or str."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = "".join(ch if ch.isprintable() else " " for ch in str(value))
    return " ".join(text.split())[:cap]


def extract_title(body: bytes) -> str:
    # Plain finds, not a lazy regex: 64 KiB of "<title>" must not cost seconds (a regex would go quadratic).
    lower = body[:READ_CAP].lower()
    start = lower.find(b"<title")
    opened = lower.find(b">", start) if start >= 0 else -1
    end = lower.find(b"</title", opened) if opened >= 0 else -1
    if end < 0:
        return ""
    title = clean_text(body[opened + 1 : end], TEXT_CAP * 2)
    for entity, char in _ENTITIES.items():
        title = title.replace(entity, char)
    return clean_text(title)


def normalise_location(value: str) -> str:
    """Keep the path and query of a redirect: the host part differs between loopback and the internet."""
    value = clean_text(value, 1000)
    match = re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/?#]*(.*)$", value)
    if match:
        value = match.group(1) or "/"
    elif value.startswith("//"):
        rest = value[2:]
        value = rest[rest.find("/"):] if "/" in rest else "/"
    return value[:TEXT_CAP]


def header_fields(lines: List[bytes], wanted: Tuple[str, ...], cap: int = TEXT_CAP) -> Dict[str, str]:
    """The ``wanted`` headers (lower-case names; the first of each wins) of an HTTP-style head, each value
    cleaned and capped."""
    headers: Dict[str, str] = {}
    for raw in lines:
        name, colon, value = raw.partition(b":")
        if colon:
            key = clean_text(name, 64).lower()
            if key in wanted and key not in headers:
                headers[key] = clean_text(value, cap)
    return headers


def parse_http_response(data: bytes) -> Optional[Dict[str, Any]]:
    """Normalised fingerprint of an HTTP response (head + start of body); None when it is not HTTP."""
    head, _sep, body = data.partition(b"\r\n\r\n")
    if not _sep:
        head, _sep, body = data.partition(b"\n\n")
    lines = head.split(b"\n")
    match = re.match(rb"^HTTP/\d(?:\.\d)?\s+(\d{3})\b", lines[0].strip()) if lines else None
    if not match:
        return None
    headers = header_fields(lines[1:100], ("server", "location"))
    return {
        "status": int(match.group(1)),
        "server": headers.get("server", ""),
        "location": normalise_location(headers["location"]) if "location" in headers else "",
        "title": extract_title(body),
    }


def banner_of(data: bytes) -> str:
    """First line a server sends on its own (SSH, FTP): the fingerprint of a non-HTTP service."""
    return clean_text(data.split(b"\n", 1)[0])


def http_request(host_header: str) -> bytes:
    # HTTP/1.0 + Connection: close: the server ends the body by closing, no chunking to undo.
    return ("GET / HTTP/1.0\r\nHost: %s\r\nUser-Agent: %s\r\nAccept: */*\r\nConnection: close\r\n\r\n"
            % (host_header, USER_AGENT)).encode("ascii")


def host_header(address: str, port: int) -> str:
    return ("[%s]:%d" % (address, port)) if ":" in address else ("%s:%d" % (address, port))


def certificate_sha256(der: Optional[bytes]) -> Optional[str]:
    return hashlib.sha256(der).hexdigest() if der else None


def compare(local: Dict[str, Any], remote: Dict[str, Any]) -> Optional[str]:
    """Why two open-port fingerprints are the same service ("tls-certificate", "http", "banner"), or None.

    A TLS leaf certificate is the strongest tie (the private key lives on the NAS). An HTTP answer counts
    only when it says something (a Server header, a title or a redirect target): two empty 404s prove nothing.
    """
    local_tls, remote_tls = local.get("tls") or {}, remote.get("tls") or {}
    if local_tls.get("sha256") and remote_tls.get("sha256"):
        return "tls-certificate" if local_tls["sha256"] == remote_tls["sha256"] else None
    local_http, remote_http = local.get("http"), remote.get("http")
    if local_http and remote_http:
        keys = ("status", "server", "location", "title")
        same = all(local_http.get(k) == remote_http.get(k) for k in keys)
        telling = any(local_http.get(k) for k in ("server", "location", "title"))
        return "http" if same and telling else None
    if local.get("banner") and local.get("banner") == remote.get("banner"):
        return "banner"
    return None


# ---------------------------------------------------------------- certificate names (minimal DER reader)
_NAME_OIDS = {b"\x55\x04\x03": "CN", b"\x55\x04\x0a": "O", b"\x55\x04\x0b": "OU", b"\x55\x04\x06": "C"}
_STRING_TAGS = {0x0C, 0x13, 0x14, 0x16, 0x1E}


def _tlv(data: bytes, pos: int) -> Tuple[int, int, int]:
    """(tag, start of value, end of value) of the DER element at pos; ValueError when malformed."""
    if pos + 2 > len(data):
        raise ValueError("truncated DER")
    tag, first = data[pos], data[pos + 1]
    pos += 2
    if first < 0x80:
        length = first
    else:
        count = first & 0x7F
        if not 0 < count <= 4 or pos + count > len(data):
            raise ValueError("bad DER length")
        length = int.from_bytes(data[pos : pos + count], "big")
        pos += count
    if pos + length > len(data):
        raise ValueError("truncated DER")
    return tag, pos, pos + length


def _children(data: bytes, start: int, end: int) -> List[Tuple[int, int, int]]:
    out = []
    while start < end:
        tag, value_start, value_end = _tlv(data, start)
        if value_end > end:
            raise ValueError("DER element overruns its parent")
        out.append((tag, value_start, value_end))
        start = value_end
    return out


def _name(data: bytes, start: int, end: int) -> Dict[str, str]:
    found: Dict[str, str] = {}
    for _set_tag, set_start, set_end in _children(data, start, end):
        for _seq_tag, seq_start, seq_end in _children(data, set_start, set_end):
            parts = _children(data, seq_start, seq_end)
            if len(parts) != 2 or parts[0][0] != 0x06:
                continue
            label = _NAME_OIDS.get(data[parts[0][1] : parts[0][2]])
            tag, value_start, value_end = parts[1]
            if label and tag in _STRING_TAGS and label not in found:
                raw = data[value_start:value_end]
                text = raw.decode("utf-16-be", "replace") if tag == 0x1E else raw.decode("utf-8", "replace")
                found[label] = clean_text(text)
    return found


def certificate_names(der: bytes) -> Dict[str, Any]:
    """Subject and issuer (CN, O, OU, C) of an X.509 certificate; ``{}`` when it cannot be read."""
    try:
        _tag, cert_start, cert_end = _tlv(der, 0)
        _tag, tbs_start, tbs_end = _children(der, cert_start, cert_end)[0]
        fields = _children(der, tbs_start, tbs_end)
        if fields and fields[0][0] == 0xA0:  # explicit version
            fields = fields[1:]
        # serialNumber, signature, issuer, validity, subject
        issuer, subject = fields[2], fields[4]
        result: Dict[str, Any] = {"issuer": _name(der, issuer[1], issuer[2]),
                                  "subject": _name(der, subject[1], subject[2])}
    except (ValueError, IndexError):
        return {}
    result["self_signed"] = bool(result["subject"]) and result["subject"] == result["issuer"]
    return result


# ---------------------------------------------------------------- the agent's own probe (blocking)
def no_verify_context() -> ssl.SSLContext:
    """A TLS client that accepts whatever certificate is served: it is what both sides fingerprint, and
    verifying it would hide the self-signed factory one."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _read_capped(sock: socket.socket, deadline: float, cap: int = READ_CAP) -> bytes:
    """Read until the peer closes, ``cap`` bytes, the deadline, or the page title has been seen."""
    data = b""
    while len(data) < cap:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(min(16384, cap - len(data)))
        except (socket.timeout, OSError):
            break
        if not chunk:
            break
        data += chunk
        if b"</title" in data[-len(chunk) - 8 :].lower():
            break
    return data


def fingerprint_local(address: str, port: int, *, tls: Optional[bool] = None, probe: str = "http",
                      timeout: float = 2.0) -> Dict[str, Any]:
    """Fingerprint ``address:port`` like the prober does. ``tls=None`` tries TLS first, then plain."""
    if tls is None:
        first = fingerprint_local(address, port, tls=True, probe=probe, timeout=timeout)
        if first["state"] != "open" or (first.get("tls") or {}).get("sha256"):
            return first
        return fingerprint_local(address, port, tls=False, probe=probe, timeout=timeout)
    result: Dict[str, Any] = {"port": port, "state": "closed", "tls": None, "http": None, "banner": None,
                              "error": None, "address": address}
    deadline = time.monotonic() + timeout * 2
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    stream: Any = socket.socket(family, socket.SOCK_STREAM)
    try:
        stream.settimeout(timeout)
        try:
            stream.connect((address, port))
        except ConnectionRefusedError:
            return result
        except socket.timeout:
            result["state"] = "filtered"
            return result
        except OSError as exc:
            result["state"], result["error"] = "filtered", clean_text(exc.strerror or str(exc))
            return result
        result["state"] = "open"
        if tls:
            try:
                stream = no_verify_context().wrap_socket(stream)
                der = stream.getpeercert(binary_form=True)
            except (ssl.SSLError, OSError) as exc:
                result["tls"] = {"sha256": None, "error": clean_text(str(exc))}
                return result
            result["tls"] = {"sha256": certificate_sha256(der), "error": None}
            if der:
                result["tls"]["names"] = certificate_names(der)
        if probe == "banner":
            data = _read_capped(stream, min(deadline, time.monotonic() + timeout), 1024)
            result["banner"] = banner_of(data) or None
            return result
        try:
            stream.sendall(http_request(host_header(address, port)))
        except OSError as exc:
            result["error"] = clean_text(str(exc))
            return result
        data = _read_capped(stream, deadline)
        result["http"] = parse_http_response(data)
        if result["http"] is None and data:
            result["banner"] = banner_of(data) or None
        return result
    finally:
        try:
            stream.close()
        except OSError:
            pass
