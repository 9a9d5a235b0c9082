"""The lab harness itself: what other lab tests (router audit, reachability) rely on."""

from __future__ import annotations

import os
import subprocess

from tests.support.netlab import Lab


def _namespaces():
    return subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout


def test_nas_servers_static_forward_and_router_web_server(make_lab):
    lab = make_lab(igd=False)
    assert lab.http_get("nas", "http://%s:8080/" % Lab.NAS) == "hello from nas"
    assert lab.http_get("nas", "https://%s/" % Lab.NAS) == "hello from nas https"
    assert lab.http_get("wan", "https://%s:8443/" % Lab.ROUTER_WAN, timeout=2) is None
    lab.add_forward(8443, Lab.NAS, 443)
    assert lab.http_get("wan", "https://%s:8443/" % Lab.ROUTER_WAN) == "hello from nas https"
    lab.remove_forward(8443)
    assert not lab.tcp_open("wan", Lab.ROUTER_WAN, 8443, timeout=1)
    lab.start_http("router", 80, body="router admin page")
    assert lab.http_get("wan", "http://%s/" % Lab.ROUTER_WAN) == "router admin page"
    # the wan host has no route into the LAN: only what the router forwards is reachable
    assert not lab.tcp_open("wan", Lab.NAS, 8080, timeout=1)
    # the nas reaches the "internet" through NAT
    lab.start_http("wan", 8000, body="internet")
    assert lab.http_get("nas", "http://%s:8000/" % Lab.WAN_HOST) == "internet"


def test_ipv6_global_nas_address_is_reachable_from_wan_unless_closed(make_lab):
    open_lab = make_lab(igd=False, ipv6=True, nas_https=None)
    assert open_lab.http_get("wan", "http://[%s]:8080/" % Lab.NAS6) == "hello from nas"
    assert open_lab.http_get("wan", "http://%s:8080/" % Lab.ROUTER_WAN, timeout=1) is None
    closed = make_lab(igd=False, ipv6=True, ipv6_open=False, nas_https=None)
    assert not closed.tcp_open("wan", Lab.NAS6, 8080, timeout=1)
    closed.add_forward(8080, Lab.NAS6, 8080)  # an IPv6 "forward" is just a firewall opening
    assert closed.http_get("wan", "http://[%s]:8080/" % Lab.NAS6) == "hello from nas"


def test_two_labs_coexist_and_teardown_leaves_nothing(make_lab):
    first = make_lab(igd=False, nas_https=None)
    second = Lab(igd=False, nas_https=None).up()
    try:
        assert set(first.ns.values()).isdisjoint(second.ns.values())
        spawned = second.spawn("nas", ["sleep", "300"], "sleeper")
        stray = subprocess.Popen(["ip", "netns", "exec", second.ns["router"], "sleep", "300"])  # not tracked
        workdir = second.dir
    finally:
        second.down()
    assert spawned.poll() is not None and stray.wait(5) is not None
    assert not any(ns in _namespaces() for ns in second.ns.values())
    assert not workdir.exists()
    assert first.http_get("nas", "http://%s:8080/" % Lab.NAS) == "hello from nas"  # the other lab is untouched


def test_lan_host_and_python_helper(make_lab):
    lab = make_lab(igd=False, nas_http=None, nas_https=None)
    lab.add_lan_host("cam", "10.77.0.20")
    result = lab.python("cam", "import socket, sys; print(sys.argv[1], socket.gethostbyname('localhost'))", "x")
    assert result.returncode == 0 and result.stdout.split() == ["x", "127.0.0.1"]
    assert "10.77.0.20/24" in lab.run("cam", ["ip", "-br", "addr"]).stdout
    assert lab.python("nas", "json.tool", "--help").returncode == 0  # -m form


def test_reap_stale_removes_only_dead_runs_leftovers(make_lab):
    live = make_lab(igd=False, nas_http=None, nas_https=None)
    dead_pid = 4000000  # above the usual pid range; checked below
    while os.path.exists("/proc/%d" % dead_pid):
        dead_pid += 1
    stale = "eg%dzzzz-wan" % dead_pid
    subprocess.run(["ip", "netns", "add", stale], check=True)
    sleeper = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "300"])
    try:
        removed = Lab.reap_stale()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)
    assert stale in removed and sleeper.wait(5) is not None
    assert stale not in _namespaces() and live.ns["wan"] in _namespaces()
