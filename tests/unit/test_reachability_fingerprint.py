"""Fingerprint normalisation and the minimal certificate reader, including hostile input."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from exposure_guard.contracts.fingerprint import (
    certificate_names,
    clean_text,
    compare,
    extract_title,
    normalise_location,
    parse_http_response,
)
from tests.support.net import make_cert


def test_http_response_normalised():
    data = (b"HTTP/1.1 302 Found\r\nserver:  nginx/1.2 \r\nLocation: https://192.168.1.20:8080/cgi-bin/?x=1\r\n"
            b"Content-Type: text/html\r\n\r\n<html><head><TITLE>\n  QTS &amp; Co\n</TITLE></head>")
    assert parse_http_response(data) == {"status": 302, "server": "nginx/1.2", "location": "/cgi-bin/?x=1",
                                         "title": "QTS & Co"}
    assert parse_http_response(b"SSH-2.0-OpenSSH\r\n") is None
    assert parse_http_response(b"") is None


def test_location_forms():
    assert normalise_location("http://1.2.3.4:8080/a") == "/a"
    assert normalise_location("http://[2001:db8::1]:8080") == "/"
    assert normalise_location("//host/p?q") == "/p?q"
    assert normalise_location("/relative") == "/relative"
    assert normalise_location("x" * 999) == "x" * 200


def test_compare_rules():
    http = {"status": 200, "server": "s", "location": "", "title": "t"}
    assert compare({"http": http}, {"http": dict(http)}) == "http"
    assert compare({"http": http}, {"http": dict(http, title="other")}) is None
    assert compare({"tls": {"sha256": "a"}}, {"tls": {"sha256": "a"}}) == "tls-certificate"
    # a different certificate is decisive even if the pages look alike
    assert compare({"tls": {"sha256": "a"}, "http": http}, {"tls": {"sha256": "b"}, "http": http}) is None
    assert compare({"banner": "SSH-2.0-x"}, {"banner": "SSH-2.0-x"}) == "banner"
    assert compare({"banner": None}, {"banner": None}) is None


def test_certificate_names_from_a_real_certificate(tmp_path):
    cert, _key = make_cert(tmp_path, "c", "/C=TW/O=QNAP Systems Inc./OU=NAS/CN=QNAP NAS")
    der = ssl.PEM_cert_to_DER_cert(Path(cert).read_text())
    names = certificate_names(der)
    assert names["subject"] == {"C": "TW", "O": "QNAP Systems Inc.", "OU": "NAS", "CN": "QNAP NAS"}
    assert names["self_signed"] is True


def test_certificate_names_issuer_differs(tmp_path):
    ca, ca_key = make_cert(tmp_path, "ca", "/CN=Lab CA")
    key = tmp_path / "leaf.key"
    csr = tmp_path / "leaf.csr"
    leaf = tmp_path / "leaf.crt"
    subprocess.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-subj", "/CN=QNAP NAS", "-keyout", str(key), "-out", str(csr)], check=True, capture_output=True)
    subprocess.run(["openssl", "x509", "-req", "-in", str(csr), "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
                    "-days", "2", "-out", str(leaf)], check=True, capture_output=True)
    names = certificate_names(ssl.PEM_cert_to_DER_cert(leaf.read_text()))
    assert names["subject"]["CN"] == "QNAP NAS" and names["issuer"]["CN"] == "Lab CA"
    assert names["self_signed"] is False


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_hostile_bytes_never_raise(data):
    assert isinstance(certificate_names(data), dict)
    result = parse_http_response(data)
    assert result is None or (len(result["title"]) <= 200 and len(result["server"]) <= 200)
    assert len(extract_title(data)) <= 200
    assert all(ch.isprintable() for ch in clean_text(data))


def test_certificate_length_lies():
    assert certificate_names(b"\x30\x84\xff\xff\xff\xff") == {}
    assert certificate_names(b"\x30\x85" + b"\x00" * 10) == {}


def test_pathological_markup():
    # Quadratic for a lazy regex; plain finds handle it (bench-free check: it must simply finish right).
    assert extract_title(b"<title>" * 9000) == ""
    assert extract_title(b"<title" * 10000) == ""
    assert extract_title(b"<TITLE lang=x>\n Hi &amp; you </title>") == "Hi & you"
