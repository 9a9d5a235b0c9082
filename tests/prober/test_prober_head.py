"""The request head and body are parsed strictly (RFC 9110/9112): anything a lenient parser would
"repair" is refused with 400, never guessed at, and never a 500."""

from __future__ import annotations

import json

import pytest

from tests.prober.test_prober_api import raw_exchange

NONCE = "n0nce-0123456789"


def answer_of(raw: bytes):
    head, _sep, body = raw.partition(b"\r\n\r\n")
    return int(head.split(b" ")[1]), json.loads(body)


def probe_with_length(length_value: bytes, body: bytes) -> bytes:
    return (b"POST /v1/probe HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: "
            + length_value + b"\r\n\r\n" + body)


BODY = json.dumps({"nonce": NONCE, "ports": [1]}).encode()  # a valid request of len(BODY) bytes


@pytest.mark.parametrize("length_value", [
    b"%d_%d" % divmod(len(BODY), 10),      # int() accepts underscores: "3_5" == 35
    b"+%d" % len(BODY),                    # int() accepts a sign
    b"\xa0%d" % len(BODY),                 # int() strips NBSP (latin-1) like whitespace
    b"\x0b%d" % len(BODY),                 # ... and vertical tab
    b"%d\x0c" % len(BODY),                 # ... and form feed
    b"%d %d" % divmod(len(BODY), 10),      # a space inside the number
    b"0x%x" % len(BODY),
    b"%d, %d" % (len(BODY), len(BODY)),    # a list, even of equal values
    b"",
])
def test_content_length_must_be_plain_ascii_digits(start_prober, length_value):
    prober = start_prober()
    status, document = answer_of(raw_exchange(prober.port, probe_with_length(length_value, BODY)))
    assert status == 400, (length_value, document)
    assert document["error"]["code"] == "bad_request" and "Content-Length" in document["error"]["message"]
    assert prober.connects() == []


def test_huge_content_length_is_413_without_converting_it(start_prober):
    prober = start_prober()
    status, document = answer_of(raw_exchange(prober.port, probe_with_length(b"9" * 5000, BODY)))
    assert status == 413 and document["error"]["code"] == "body_too_large"


def test_surrounding_blanks_are_optional_whitespace_and_allowed(start_prober, services):
    # RFC 9112 5: spaces and tabs around a field value are not part of it ("Content-Length:  35 " is 35)
    prober = start_prober()
    body = json.dumps({"nonce": NONCE, "ports": [services.closed]}).encode()
    status, document = answer_of(raw_exchange(prober.port, probe_with_length(b" \t%d \t" % len(body), body)))
    assert status == 200, document


@pytest.mark.parametrize("head", [
    b"GET /healthz HTTP/1.1\r\nX-Thing: a\x00b\r\n\r\n",           # NUL in a value
    b"GET /healthz HTTP/1.1\r\nX-Thing: a\x01b\r\n\r\n",           # another CTL
    b"GET /healthz HTTP/1.1\r\nX-Thing: a\x7fb\r\n\r\n",           # DEL
    b"GET /healthz HTTP/1.1\r\nX-Thing: a\nInjected: 1\r\n\r\n",   # a bare LF inside a line
    b"GET /healthz HTTP/1.1\r\nX-Thing: a\rb\r\n\r\n",             # a bare CR
    b"GET /healthz HTTP/1.1\r\nX-Thing\n: a\r\n\r\n",              # LF at the end of a field name
    b"GET /healthz HTTP/1.1\r\nX-Thing : a\r\n\r\n",               # space before the colon
    b"GET /healthz HTTP/1.1\r\nX-Thing: a\r\n folded\r\n\r\n",     # obsolete line folding
    b"GET /health\x00z HTTP/1.1\r\n\r\n",                          # NUL in the target
    b"GET\n /healthz HTTP/1.1\r\n\r\n",                            # LF at the end of the method
    b"GET /healthz HTTP/1.1\n\r\n\r\n",                            # LF at the end of the version
    b"GET  /healthz HTTP/1.1\r\n\r\n",                             # two spaces
])
def test_control_characters_and_malformed_lines_are_400(start_prober, head):
    prober = start_prober()
    status, document = answer_of(raw_exchange(prober.port, head))
    assert status == 400, (head, document)
    assert document["error"]["code"] == "bad_request"


def test_deeply_nested_json_is_a_bad_json_answer_not_a_500(start_prober):
    prober = start_prober()
    body = b"[" * 2000 + b"]" * 2000
    status, document = answer_of(raw_exchange(prober.port, probe_with_length(b"%d" % len(body), body)))
    assert status == 400, document
    assert document["error"]["code"] == "bad_json"
    nested_object = b'{"a":' * 400 + b"1" + b"}" * 400  # within the 4 KiB body cap, beyond the nesting cap
    status, document = answer_of(raw_exchange(prober.port, probe_with_length(b"%d" % len(nested_object),
                                                                             nested_object)))
    assert status == 400 and document["error"]["code"] == "bad_json"
    logged = prober.requests_logged(2)
    assert logged[-1]["status"] == 400
    assert not [r for r in logged if r["status"] >= 500]
