"""Target policy, X-Forwarded-For resolution, rate limiting, listen parsing."""

from __future__ import annotations

import ipaddress

import pytest

from exposure_guard_prober.config import parse_listen, parse_networks
from exposure_guard_prober.policy import PolicyError, RateLimiter, client_address, parse_address, rate_key, refusal

LAB = parse_networks(["198.51.100.0/24", "2001:db8::/32"])


@pytest.mark.parametrize("address, reason", [
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("10.1.2.3", "private"), ("192.168.1.1", "private"),
    ("172.16.0.1", "private"), ("169.254.1.1", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"), ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("240.0.0.1", "reserved"), ("100.64.0.1", "not globally routable"), ("198.51.100.7", "private"),
    ("fd00::1", "private"), ("::ffff:10.0.0.1", "private"), ("255.255.255.255", "reserved"),
])
def test_refused_outside_lab_mode(address, reason):
    assert refusal(parse_address(address), ()) == reason


@pytest.mark.parametrize("address", ["8.8.8.8", "2a00:1450:4001::1", "::ffff:1.1.1.1"])
def test_public_addresses_allowed(address):
    assert refusal(parse_address(address), ()) is None


def test_lab_allow_only_opens_the_listed_networks():
    assert refusal(parse_address("198.51.100.1"), LAB) is None
    assert refusal(parse_address("2001:db8:77::10"), LAB) is None
    assert refusal(parse_address("10.77.0.10"), LAB) == "private"
    assert refusal(parse_address("127.0.0.1"), LAB) == "loopback"


def test_forwarded_for():
    trusted = parse_networks(["10.0.0.0/8"])
    assert client_address("203.0.113.5", "1.2.3.4", trusted) == (ipaddress.ip_address("203.0.113.5"), False, True)
    assert client_address("10.0.0.2", "1.2.3.4", trusted) == (ipaddress.ip_address("1.2.3.4"), True, False)
    # the client may prepend anything; the proxy appends the real peer on the right
    assert client_address("10.0.0.2", "9.9.9.9, 1.2.3.4, 10.0.0.3", trusted)[0] == ipaddress.ip_address("1.2.3.4")
    assert client_address("10.0.0.2", None, trusted) == (ipaddress.ip_address("10.0.0.2"), False, False)
    assert client_address("::ffff:10.0.0.2", "2001:db8::5", trusted)[0] == ipaddress.ip_address("2001:db8::5")
    for bad in ("", " , ", "1.2.3.4, nope", ",".join(["1.1.1.1"] * 40)):
        with pytest.raises(PolicyError):
            client_address("10.0.0.2", bad, trusted)


def test_rate_limiter_refills():
    now = [0.0]
    limiter = RateLimiter(per_minute=6, burst=2, clock=lambda: now[0])
    assert limiter.allow("a")[0] and limiter.allow("a")[0]
    allowed, wait = limiter.allow("a")
    assert not allowed and 9 <= wait <= 10.01
    assert limiter.allow("b")[0]
    now[0] = 10.0
    assert limiter.allow("a")[0]
    assert not limiter.allow("a")[0]


def test_rate_limiter_memory_is_bounded():
    now = [0.0]
    limiter = RateLimiter(per_minute=60, burst=1, clock=lambda: now[0], max_keys=100)
    for index in range(1000):
        now[0] += 0.001
        limiter.allow("k%d" % index)
    assert len(limiter._buckets) <= 100


def test_rate_key_groups_ipv6_by_64():
    assert rate_key(parse_address("2001:db8:1:2:aaaa::1")) == rate_key(parse_address("2001:db8:1:2:bbbb::9"))
    assert rate_key(parse_address("2001:db8:1:3::1")) != rate_key(parse_address("2001:db8:1:2::1"))
    assert rate_key(parse_address("1.2.3.4")) == "1.2.3.4"


def test_parse_listen():
    assert (parse_listen("0.0.0.0:8443").host, parse_listen("0.0.0.0:8443").port) == ("0.0.0.0", 8443)
    assert parse_listen("[::]:8443").host == "::"
    assert str(parse_listen("[2001:db8::1]:1")) == "[2001:db8::1]:1"
    for bad in ("8443", "::1:8443", "[::1]8443", "host:http", "1.2.3.4:70000"):
        with pytest.raises(ValueError):
            parse_listen(bad)
