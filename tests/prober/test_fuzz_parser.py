"""Fuzzing the prober's parsers: generated request heads and bodies go to the request-head parser
(httphead.parse_head and body_length) and the probe-request body parser (api.parse_probe_request),
called directly, then a few hundred whole requests through a real socket to the running prober.

The only failures allowed are the defined ones (HttpError, PolicyError, each a 4xx/501 answer); anything
else, or a parser spending longer than the per-input deadline on one input, fails the test. The inputs
really tried are counted and printed at the end of the run."""

from __future__ import annotations

import json
import socket

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exposure_guard_prober.api import parse_probe_request
from exposure_guard_prober.httphead import HttpError, body_length, parse_head
from exposure_guard_prober.policy import PolicyError
from tests.support.fuzz import PER_INPUT_DEADLINE, TALLY, fuzz

HEAD_PARSER = "prober request head (httphead)"
BODY_PARSER = "prober probe body (api)"
SOCKET = "prober whole request (socket)"
SOCKET_EXAMPLES = 300
BODY_CAP = 4096



@st.composite
def mostly(draw: st.DrawFn, valid: st.SearchStrategy, hostile: st.SearchStrategy) -> object:
    """About nine times in ten a valid part, so that many inputs reach past the first check and into the
    later ones (the hostile band sits mid-range: Hypothesis favours the ends of an integer range)."""
    return draw(hostile if 45 <= draw(st.integers(0, 99)) < 55 else valid)


# ------------------------------------------------------------------ request heads
_methods = mostly(st.sampled_from([b"GET", b"POST", b"HEAD"]),
                  st.sampled_from([b"get", b"G\x00T", b"", b"PO ST", b"GET\n"]) | st.binary(max_size=8))
_targets = mostly(st.sampled_from([b"/v1/probe", b"/healthz", b"/metrics", b"/", b"/a?b=c"]),
                  st.sampled_from([b"*", b"http://x/", b"/\x00", b"/\xff", b"/a b"])
                  | st.binary(max_size=30).map(lambda raw: b"/" + raw))
_versions = mostly(st.sampled_from([b"HTTP/1.1", b"HTTP/1.0"]),
                   st.sampled_from([b"HTTP/2", b"HTTP/1.1\n", b"http/1.1", b"HTTP/1.10"]) | st.binary(max_size=10))
_names = mostly(st.sampled_from([b"Content-Length", b"content-length", b"Host", b"Transfer-Encoding",
                                 b"Authorization", b"X-Forwarded-For", b"Content-Type", b"X-Thing"]),
                st.sampled_from([b"Content-Length ", b" Host", b"", b"X\nY", b"X\x00"]) | st.binary(max_size=12))
_lengths = mostly(st.integers(0, 5000).map(lambda n: str(n).encode()),
                  st.sampled_from(["3_5", "+35", " 35 ", "\t35", "\u0663\u0665", "\xa035", "-1", "0x23", "1e3",
                                   "35, 35", "9" * 30, "", "\x0b35", "35\x00", "0" * 50 + "7"])
                  .map(lambda t: t.encode("utf-8")) | st.binary(max_size=12))
_values = mostly(_lengths | st.sampled_from([b"application/json", b"Bearer x", b"127.0.0.1, ::1", b"a\tb"]),
                 st.binary(max_size=40))
_line_ends = st.sampled_from([b"\r\n"] * 40 + [b"\n", b"\r", b"\r\n ", b"\r\n\t", b"\n\r"])
_colons = st.sampled_from([b": "] * 40 + [b" :", b"", b"::", b":", b":\t"])
_spaces = st.sampled_from([b" "] * 40 + [b"  ", b"\t", b""])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    if 45 <= draw(st.integers(0, 99)) < 50:
        return draw(st.binary(max_size=300))  # anything at all
    lines = [draw(_methods) + draw(_spaces) + draw(_targets) + b" " + draw(_versions)]
    for _ in range(draw(st.integers(0, 5))):
        lines.append(draw(_names) + draw(_colons) + draw(_values))
    return b"".join(line + draw(_line_ends) for line in lines) + b"\r\n"


# ------------------------------------------------------------------ probe bodies
_json_scalars = (st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=True)
                 | st.text(max_size=20))
_keys = st.sampled_from(["nonce", "ports", "upnp", "port", "tls", "probe", "target"]) | st.text(max_size=8)
_json = st.recursive(_json_scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(_keys, inner, max_size=4), max_leaves=8)
_port_items = mostly(st.integers(1, 65535) | st.fixed_dictionaries(
                         {"port": st.integers(1, 65535)},
                         optional={"tls": st.booleans(), "probe": st.sampled_from(["http", "banner"])}),
                     st.integers(-1, 70000) | st.booleans() | _json_scalars | st.fixed_dictionaries(
                         {"port": st.integers(-1, 70000) | st.text(max_size=5)},
                         optional={"tls": st.none() | st.integers(0, 1), "probe": st.sampled_from(["x", ""])}))
_requests = st.fixed_dictionaries(
    {"nonce": mostly(st.text("abcXYZ019_-", min_size=8, max_size=64), st.text(max_size=70) | _json_scalars),
     "ports": mostly(st.lists(_port_items, min_size=1, max_size=17), _json_scalars)},
    optional={"upnp": mostly(st.booleans(), _json_scalars), "target": st.text(max_size=10)})


def _encode(document: object) -> bytes:
    return json.dumps(document, allow_nan=True).encode("utf-8")


bodies = st.one_of(
    _requests.map(_encode),
    _requests.map(_encode),
    _json.map(_encode),
    st.builds(lambda n, shape: shape(n), st.integers(0, 3000),
              st.sampled_from([lambda n: b"[" * n + b"]" * n, lambda n: b'{"a":' * n + b"1" + b"}" * n,
                               lambda n: b"[" * n])),
    st.binary(max_size=200),
    st.text(max_size=100).map(lambda t: t.encode("utf-8", "surrogatepass")),
)


# ------------------------------------------------------------------ the parsers, called directly
def check_head(head: bytes) -> None:
    try:
        request = parse_head(head)
        length = body_length(request, BODY_CAP)
    except HttpError as exc:
        assert 400 <= exc.status < 500 or exc.status == 501, exc.status
        return
    assert 0 <= length <= BODY_CAP
    assert request.target.startswith("/") and request.method
    for name, value in request.headers.items():
        assert name == name.lower() and ":" not in name
        assert not any(ord(char) < 0x20 and char != "\t" or char == "\x7f" for char in value), (name, value)


def check_body(body: bytes) -> None:
    try:
        nonce, ports, upnp, ignored = parse_probe_request(body, 16)
    except PolicyError as exc:
        assert exc.status == 400 and exc.code
        return
    assert 8 <= len(nonce) <= 64 and isinstance(upnp, bool) and len(ignored) <= 20
    assert 1 <= len(ports) <= 16 and len({p.port for p in ports}) == len(ports)
    assert all(0 < p.port < 65536 and p.probe in ("http", "banner") for p in ports)


@pytest.mark.slow
@given(head=heads(), body=bodies)
@fuzz(HEAD_PARSER)
def test_fuzz_head_and_body_parsers(head: bytes, body: bytes) -> None:
    check_head(head)
    TALLY[BODY_PARSER] += 1
    check_body(body)


# ------------------------------------------------------------------ whole requests through a socket
def exchange(port: int, payload: bytes) -> bytes:
    """Send ``payload``, end the sending side (so an incomplete request ends at once), read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=20) as sock:
        try:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the prober may answer and close before reading everything
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
    return data


@pytest.fixture
def prober(start_prober):
    return start_prober(head_timeout=2.0, request_timeout=3.0, rate_per_minute=100000, burst=100000,
                        per_client_inflight=4)


@pytest.mark.slow
@settings(max_examples=SOCKET_EXAMPLES, deadline=PER_INPUT_DEADLINE, database=None,
          suppress_health_check=list(HealthCheck))
@given(head=heads(), body=bodies, declared=st.booleans())
def test_fuzz_whole_requests_through_a_socket(prober, head: bytes, body: bytes, declared: bool) -> None:
    TALLY[SOCKET] += 1
    if declared and head.endswith(b"\r\n\r\n"):  # a well-formed frame, so the body parser is reached too
        head = head[:-2] + b"Content-Length: %d\r\nContent-Type: application/json\r\n\r\n" % len(body)
    answer = exchange(prober.port, head + body)
    status_line, _sep, rest = answer.partition(b"\r\n")
    assert status_line.startswith(b"HTTP/1.1 "), answer[:200]
    status = int(status_line.split(b" ")[1])
    assert status != 500 and 200 <= status < 600, answer[:300]
    if status != 200:
        assert "error" in json.loads(rest.partition(b"\r\n\r\n")[2])
