"""The shipped nginx site (deploy/nginx/exposure-guard.conf): nginx accepts it inside Debian's own http block
(``nginx -t`` with a test certificate, everything in a temporary prefix), and what it says matches the
units and the programs behind it: upstream ports, body and head caps, timeouts, the forwarding headers the
backends trust, and TLS only. What it does with real traffic: tests/deploy/test_deploy_lab.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict

import pytest

from tests.deploy.shipped import (
    NGINX_SITE,
    PROBER_ENV,
    PROBER_NAME,
    PROBER_UNIT,
    SERVER_ENV,
    SERVER_NAME,
    SERVER_UNIT,
    exec_argv,
    make_ca_and_cert,
    nginx_binary,
    nginx_prefix,
    nginx_values,
    unit_environment,
)

NGINX = nginx_binary()
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt-get install nginx-light)")


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Path]:
    return make_ca_and_cert(tmp_path_factory.mktemp("tls"), [SERVER_NAME, PROBER_NAME], [])


def nginx_test(conf: Path) -> str:
    """``nginx -t`` on ``conf``: "" when nginx accepts it without a warning, else what it said."""
    assert NGINX is not None
    result = subprocess.run([NGINX, "-t", "-p", str(conf.parent), "-c", str(conf)], capture_output=True, text=True,
                            timeout=120)
    out = result.stdout + result.stderr
    if result.returncode == 0 and "test is successful" in out and "[warn]" not in out and "[emerg]" not in out:
        return ""
    return out or "nginx -t exited %d" % result.returncode


@needs_nginx
def test_nginx_accepts_the_site_in_debians_http_block(tmp_path: Path, certificate: Dict[str, Path]) -> None:
    conf = nginx_prefix(tmp_path / "nginx", certificate["cert"], certificate["key"])
    assert nginx_test(conf) == ""


@needs_nginx
@pytest.mark.parametrize("line, says", [
    ("ssl_protocols TLSv1.2 TLSv1.3;", 'duplicate value "TLSv1.2"'),   # Debian's http block sets it: a warning
    ("upstream exposure_guard_server { server 127.0.0.1:1; }", "duplicate upstream"),
    ("server { listen 80 default_server; server_name x.example; }", "duplicate default server"),
], ids=["http-level-ssl-protocols", "duplicate-upstream", "second-default-server"])
def test_nginx_refuses_what_would_break_on_a_debian_host(tmp_path: Path, certificate: Dict[str, Path], line: str,
                                                        says: str) -> None:
    """The check above is not vacuous: the wrapper is Debian's http block and its default site, so a line
    that clashes with them makes ``nginx -t`` fail (or warn) here as it would on the host."""
    conf = nginx_prefix(tmp_path / "nginx", certificate["cert"], certificate["key"])
    site = conf.parent / "site.conf"
    site.write_text(line + "\n" + site.read_text())
    said = nginx_test(conf)
    assert said and says in said, said


# -- what the site says, against the units and the programs -----------------------------------------------

def size(text: str) -> int:
    units = {"k": 1024, "m": 1024 * 1024}
    return int(text[:-1]) * units[text[-1].lower()] if text[-1].lower() in units else int(text)


def seconds(text: str) -> float:
    assert text.endswith("s"), text
    return float(text[:-1])


def test_upstreams_are_the_ports_the_units_listen_on() -> None:
    server = exec_argv(SERVER_UNIT, unit_environment(SERVER_UNIT, SERVER_ENV))
    prober = exec_argv(PROBER_UNIT, unit_environment(PROBER_UNIT, PROBER_ENV))
    text = "\n".join(line.split("#", 1)[0] for line in NGINX_SITE.read_text("utf-8").splitlines())
    upstreams = {name: body for name, body in
                 re.findall(r"upstream (\w+) \{(.*?)\n\}", text, flags=re.S)}
    live = {name: [line.split()[1].rstrip(";") for line in body.splitlines() if line.strip().startswith("server ")]
            for name, body in upstreams.items()}
    assert live == {"exposure_guard_server": [server[server.index("--listen") + 1]],
                    "exposure_guard_prober": [prober[prober.index("--listen") + 1]]}, live
    assert "keepalive" not in upstreams["exposure_guard_prober"]  # the prober serves one request per connection


def test_caps_and_timeouts_match_the_server_and_the_prober() -> None:
    from exposure_guard_prober.config import ProberConfig
    from exposure_guard_server.config import ServerConfig

    server, prober = ServerConfig(db_url=""), ProberConfig()
    assert [size(v) for v in nginx_values("client_max_body_size", SERVER_NAME)] == [server.max_body]
    assert [seconds(v) for v in nginx_values("client_header_timeout", SERVER_NAME)] == [server.header_timeout]
    assert [seconds(v) for v in nginx_values("client_body_timeout", SERVER_NAME)] == [server.body_timeout]
    assert [size(v) for v in nginx_values("client_max_body_size", PROBER_NAME)] == [prober.body_cap]
    assert [size(v.split()[1]) for v in nginx_values("large_client_header_buffers", PROBER_NAME)] == [prober.header_cap]
    assert [seconds(v) for v in nginx_values("client_header_timeout", PROBER_NAME)] == [prober.head_timeout]
    assert [seconds(v) for v in nginx_values("client_body_timeout", PROBER_NAME)] == [prober.request_timeout]
    # A probe job may take --deadline after waiting --queue-wait: nginx waits longer for the answer.
    assert seconds(nginx_values("proxy_read_timeout", PROBER_NAME)[0]) > prober.deadline + prober.queue_wait
    assert nginx_values("limit_conn", PROBER_NAME) == ["eg_probe_conn %d" % prober.max_connections_per_source]


def test_the_forwarding_headers_are_set_by_nginx_never_passed_on() -> None:
    """The backends trust X-Forwarded-For (and the server -Proto) from 127.0.0.1: each TLS block sets them
    from the connection itself; nothing appends to what the client sent."""
    assert "proxy_add_x_forwarded_for" not in NGINX_SITE.read_text("utf-8")
    for block in (SERVER_NAME, PROBER_NAME):
        headers = {v.split()[0].lower(): " ".join(v.split()[1:]) for v in nginx_values("proxy_set_header", block)}
        assert headers["x-forwarded-for"] == "$remote_addr", (block, headers)
        assert headers["forwarded"] == '""' and headers["x-real-ip"] == '""', (block, headers)
        assert nginx_values("proxy_pass", block), block
        assert all(v.startswith("http://exposure_guard_") for v in nginx_values("proxy_pass", block))
    assert {v.split()[0].lower(): v.split()[1] for v in nginx_values("proxy_set_header", SERVER_NAME)}[
        "x-forwarded-proto"] == "$scheme"


def test_only_tls_reaches_the_backends() -> None:
    text = "\n".join(line.split("#", 1)[0] for line in NGINX_SITE.read_text("utf-8").splitlines())
    blocks = [b for b in re.split(r"\n(?=server\s*\{)", text) if b.startswith("server")]
    assert len(blocks) == 3, len(blocks)
    for block in blocks:
        listens = re.findall(r"listen\s+([^;]+);", block)
        if any("ssl" in v for v in listens):
            assert all("ssl" in v for v in listens) and any(v.startswith("[::]") for v in listens), listens
            assert "ssl_protocols TLSv1.2 TLSv1.3;" in block
        else:  # port 80: the ACME challenge and a redirect, nothing proxied
            assert "proxy_pass" not in block and "return 301 https://$host$request_uri;" in block, block
    # The prober's /metrics trusts loopback peers, which is every request through nginx: only two paths pass.
    prober_block = [b for b in blocks if "server_name %s;" % PROBER_NAME in b][0]
    proxied = re.findall(r"location\s+=\s+(\S+)\s*\{\s*proxy_pass", prober_block)
    assert sorted(proxied) == ["/healthz", "/v1/probe"], proxied
    assert prober_block.count("proxy_pass") == 2 and re.search(r"location\s+/\s*\{\s*return 404;", prober_block)
