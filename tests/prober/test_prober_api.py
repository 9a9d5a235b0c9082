"""The prober's HTTP API on loopback: answers follow the schema, and every abuse is refused without
the prober connecting anywhere but the caller (asserted from its own connect log)."""

from __future__ import annotations

import hashlib
import json
import socket
import ssl
import threading
import time

import pytest
import requests

from tests.support.net import TcpServer, free_port, make_cert
from tests.support.wait import wait_for

NONCE = "n0nce-0123456789"


@pytest.fixture
def decoy():
    """A listener on another loopback address: it must never see a connection from the prober (``hits``)."""
    with TcpServer(host="127.0.0.5") as listener:
        yield listener


def probe(url, body, headers=None, **kwargs):
    send = {"Content-Type": "application/json"}
    send.update(headers or {})
    return requests.post(url + "/v1/probe", data=json.dumps(body) if not isinstance(body, bytes) else body,
                         headers=send, timeout=10, **kwargs)


def test_probe_reports_tls_http_banner_closed(start_prober, services, validate):
    prober = start_prober()
    ports = [{"port": services.https_port, "tls": True}, {"port": services.http_port},
             {"port": services.ssh_port, "probe": "banner"}, {"port": services.closed}]
    answer = probe(prober.url(), {"nonce": NONCE, "ports": ports, "upnp": False})
    assert answer.status_code == 200
    document = validate(answer.json(), "probe_response")
    results = {r["port"]: r for r in document["ports"]}
    with open(services.cert) as handle:
        der = ssl.PEM_cert_to_DER_cert(handle.read())
    assert results[services.https_port]["tls"]["sha256"] == hashlib.sha256(der).hexdigest()
    assert results[services.https_port]["http"]["title"] == "QTS login (TLS)"
    assert results[services.http_port]["http"] == {"status": 302, "server": "http server 2.0",
                                                   "location": "/cgi-bin/", "title": "QTS login"}
    assert results[services.ssh_port]["banner"] == "SSH-2.0-OpenSSH_8.0 test-nas"
    assert results[services.closed]["state"] == "closed"
    assert document["observed_address"] == "127.0.0.1" and document["family"] == "ipv4"
    assert document["nonce"] == NONCE and document["upnp"] is None
    assert {c["target"] for c in prober.connects()} == {"127.0.0.1"}


def test_ipv6_listener_probes_the_ipv6_caller(start_prober, validate):
    svc6 = socket.socket(socket.AF_INET6)
    svc6.bind(("::1", 0))
    svc6.listen(4)
    try:
        prober = start_prober()
        answer = probe(prober.url("::1"), {"nonce": NONCE, "ports": [svc6.getsockname()[1]]})
        document = validate(answer.json(), "probe_response")
        assert document["family"] == "ipv6" and document["observed_address"] == "::1"
        assert document["ports"][0]["state"] == "open"
        assert {c["target"] for c in prober.connects()} == {"::1"}
    finally:
        svc6.close()


def test_body_target_is_ignored(start_prober, services, decoy, validate):
    prober = start_prober()
    body = {"nonce": NONCE, "ports": [decoy.port, services.http_port], "target": decoy.host,
            "host": decoy.host, "address": "%s:%d" % (decoy.host, decoy.port)}
    document = validate(probe(prober.url(), body).json(), "probe_response")
    assert document["observed_address"] == "127.0.0.1"
    assert document["ignored_fields"] == ["address", "host", "target"]
    assert decoy.hits == 0
    assert {c["target"] for c in prober.connects()} == {"127.0.0.1"}
    request_log = prober.requests_logged(1)[-1]
    assert request_log["ignored_fields"] == ["address", "host", "target"] and request_log["target"] == "127.0.0.1"


def test_spoofed_forwarded_for_from_untrusted_peer_is_ignored(start_prober, decoy, validate):
    prober = start_prober()
    answer = probe(prober.url(), {"nonce": NONCE, "ports": [decoy.port]},
                   headers={"X-Forwarded-For": decoy.host})
    document = validate(answer.json(), "probe_response")
    assert document["observed_address"] == "127.0.0.1" and document["via_proxy"] is False
    assert decoy.hits == 0
    assert {c["target"] for c in prober.connects()} == {"127.0.0.1"}
    assert prober.requests_logged(1)[-1]["xff_ignored"] is True


def test_forwarded_for_from_trusted_proxy_is_believed(start_prober, decoy, validate):
    prober = start_prober(trusted_proxies=__import__("exposure_guard_prober.config", fromlist=["x"])
                          .parse_networks(["127.0.0.1/32"]))
    # right-most untrusted entry wins: what the client itself claimed further left is not used
    answer = probe(prober.url(), {"nonce": NONCE, "ports": [decoy.port]},
                   headers={"X-Forwarded-For": "127.0.0.9, %s" % decoy.host})
    document = validate(answer.json(), "probe_response")
    assert document["observed_address"] == decoy.host and document["via_proxy"] is True
    assert document["ports"][0]["state"] == "open" and decoy.hits == 1
    assert {c["target"] for c in prober.connects()} == {decoy.host}
    bad = probe(prober.url(), {"nonce": NONCE, "ports": [1]}, headers={"X-Forwarded-For": "not-an-ip"})
    assert bad.status_code == 400 and validate(bad.json(), "error_response")["error"]["code"] == "bad_forwarded_for"


@pytest.mark.parametrize("body, code", [
    ({"nonce": NONCE, "ports": list(range(1000, 1017))}, "too_many_ports"),
    ({"nonce": NONCE, "ports": [80, 80]}, "bad_ports"),
    ({"nonce": NONCE, "ports": []}, "bad_ports"),
    ({"nonce": NONCE, "ports": [0]}, "bad_ports"),
    ({"nonce": NONCE, "ports": [70000]}, "bad_ports"),
    ({"nonce": NONCE, "ports": [True]}, "bad_ports"),
    ({"nonce": NONCE, "ports": [{"port": 80, "tls": "yes"}]}, "bad_ports"),
    ({"nonce": "short", "ports": [80]}, "bad_nonce"),
    ({"nonce": NONCE, "ports": [80], "upnp": "yes"}, "bad_request"),
    (["not", "an", "object"], "bad_request"),
    (b"{not json", "bad_json"),
])
def test_bad_requests_are_refused_without_connecting(start_prober, validate, body, code):
    prober = start_prober()
    answer = probe(prober.url(), body)
    assert answer.status_code == 400
    assert validate(answer.json(), "error_response")["error"]["code"] == code
    assert prober.connects() == []
    assert prober.server.metrics.value("exposure_guard_prober_refused_total", reason=code) == 1


def test_rate_limit_per_source(start_prober, services, validate):
    prober = start_prober(rate_per_minute=1, burst=2)
    statuses = [probe(prober.url(), {"nonce": NONCE, "ports": [services.closed]}).status_code for _ in range(4)]
    assert statuses == [200, 200, 429, 429]
    limited = probe(prober.url(), {"nonce": NONCE, "ports": [services.closed]})
    assert int(limited.headers["Retry-After"]) > 0
    assert validate(limited.json(), "error_response")["error"]["code"] == "rate_limited"
    # another source (::1 is its own /64 bucket) is not affected
    assert probe(prober.url("::1"), {"nonce": NONCE, "ports": [free_port("::1")]}).status_code == 200
    assert len([c for c in prober.connects() if c["target"] == "127.0.0.1"]) == 2


class SlowService(TcpServer):
    """Accepts and says nothing for ``hold`` seconds: keeps a probe job busy."""

    def __init__(self, hold: float) -> None:
        super().__init__(lambda conn: time.sleep(hold))


def test_concurrency_caps(start_prober, validate):
    slow = SlowService(8.0)
    prober = start_prober(max_concurrent=1, queue_wait=0.2, per_client_inflight=1, io_timeout=4.0)
    results = {}

    def first():
        results["first"] = probe(prober.url(), {"nonce": NONCE, "ports": [slow.port]})

    thread = threading.Thread(target=first)
    thread.start()
    # the first job is in flight once it has connected (it then waits up to its 4 s I/O timeout)
    wait_for("the first probe job to connect", lambda: prober.connects())
    same_source = probe(prober.url(), {"nonce": NONCE, "ports": [slow.port]})
    other_source = probe(prober.url("::1"), {"nonce": NONCE, "ports": [free_port("::1")]})
    thread.join()
    slow.sock.close()
    assert results["first"].status_code == 200
    assert same_source.status_code == 429 and validate(same_source.json())["error"]["code"] == "busy"
    assert other_source.status_code == 503 and other_source.headers["Retry-After"]
    assert validate(other_source.json())["error"]["code"] == "busy"


def test_tokens(start_prober, services, validate):
    prober = start_prober(tokens=("t0k3n-alpha", "t0k3n-beta"))
    body = {"nonce": NONCE, "ports": [services.closed]}
    missing = probe(prober.url(), body)
    wrong = probe(prober.url(), body, headers={"Authorization": "Bearer nope"})
    right = probe(prober.url(), body, headers={"Authorization": "Bearer t0k3n-beta"})
    assert missing.status_code == wrong.status_code == 401
    assert validate(wrong.json())["error"]["code"] == "unauthorized"
    assert right.status_code == 200
    assert len(prober.connects()) == 1
    log_text = prober.sink.getvalue()
    assert "t0k3n" not in log_text and "Bearer" not in log_text
    assert prober.requests_logged(3)[-1]["token"] == hashlib.sha256(b"t0k3n-beta").hexdigest()[:8]


def test_refuses_loopback_outside_lab_mode(start_prober, services, validate):
    prober = start_prober(lab_allow=())
    answer = probe(prober.url(), {"nonce": NONCE, "ports": [services.http_port]})
    assert answer.status_code == 403
    document = validate(answer.json(), "error_response")
    assert document["error"]["code"] == "target_refused" and "loopback" in document["error"]["message"]
    assert prober.connects() == []
    assert requests.get(prober.url() + "/healthz", timeout=5).json()["lab_mode"] is False


def raw_exchange(port: int, payload: bytes, wait: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(payload)
        data = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (socket.timeout, ConnectionResetError):
                break
            if not chunk:
                break
            data += chunk
    return data


@pytest.mark.parametrize("payload, status", [
    (b"POST /v1/probe HTTP/1.1\r\nContent-Length: 999999\r\n\r\n", b"413"),
    (b"POST /v1/probe HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"501"),
    (b"POST /v1/probe HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", b"400"),
    (b"GET /v1/probe HTTP/1.1\r\n\r\n", b"405"),
    (b"GET /nothing HTTP/1.1\r\n\r\n", b"404"),
    (b"GARBAGE\r\n\r\n", b"400"),
    (b"GET / HTTP/1.1\r\nX: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
    (b"GET /healthz HTTP/1.1\r\nBad Header Line\r\n\r\n", b"400"),
])
def test_malformed_http_is_answered_cleanly(start_prober, payload, status):
    prober = start_prober()
    answer = raw_exchange(prober.port, payload)
    assert answer.split(b" ")[1] == status, answer[:200]
    assert prober.connects() == []
    assert requests.get(prober.url() + "/healthz", timeout=5).status_code == 200


def test_slow_client_times_out(start_prober):
    prober = start_prober(request_timeout=0.5)
    started = time.monotonic()
    answer = raw_exchange(prober.port, b"POST /v1/probe HTTP/1.1\r\nContent-Le")
    assert answer.split(b" ")[1] == b"408"
    assert time.monotonic() - started < 20  # a hang bound: the 0.5 s request timeout cut it, not the client


def test_health_and_metrics(start_prober, services, validate):
    prober = start_prober()
    assert validate(requests.get(prober.url() + "/healthz", timeout=5).json(), "health_response")["status"] == "ok"
    probe(prober.url(), {"nonce": NONCE, "ports": [services.http_port, services.closed]})
    probe(prober.url(), {"nonce": NONCE, "ports": [services.http_port] * 2})
    text = requests.get(prober.url() + "/metrics", timeout=5).text
    assert 'exposure_guard_prober_port_results_total{state="open"} 1' in text
    assert 'exposure_guard_prober_port_results_total{state="closed"} 1' in text
    assert 'exposure_guard_prober_refused_total{reason="bad_ports"} 1' in text
    assert 'exposure_guard_prober_requests_total{path="/v1/probe",status="200"} 1' in text
    assert "exposure_guard_prober_probe_seconds_count 1" in text
    from exposure_guard_prober.config import parse_networks

    closed_metrics = start_prober(metrics_allow=parse_networks(["192.0.2.0/24"]))
    assert requests.get(closed_metrics.url() + "/metrics", timeout=5).status_code == 403


def test_tls_listener(start_prober, tmp_path):
    cert, key = make_cert(tmp_path, "prober", "/CN=prober.test", san="IP:127.0.0.1")
    prober = start_prober(tls_cert=cert, tls_key=key)
    url = prober.url().replace("http://", "https://")
    health = requests.get(url + "/healthz", timeout=5, verify=cert)
    assert health.status_code == 200
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(url + "/healthz", timeout=5)  # a self-signed certificate is not trusted by default
    assert raw_exchange(prober.port, b"GET /healthz HTTP/1.1\r\n\r\n") == b""  # no plain HTTP on a TLS port
