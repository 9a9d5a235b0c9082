"""Device descriptions: the real miniupnpd ones (IGD:2, IGD:1), a WANPPPConnection-only one, URL rules."""

from __future__ import annotations

import pytest

from exposure_guard.upnp.description import parse_description
from exposure_guard.upnp.errors import HostileResponse, UpnpError
from exposure_guard.upnp.models import WANIP1, WANIP2, WANPPP1
from tests.support.paths import IGD_FIXTURES as IGD

LOCATION = "http://10.77.0.1:5000/rootDesc.xml"


def test_igd2_finds_wanipconnection2_three_devices_deep():
    gw = parse_description((IGD / "rootDesc.xml").read_bytes(), LOCATION)
    assert gw.device_type.endswith("InternetGatewayDevice:2")
    assert [(s.service_type, s.control_url) for s in gw.services] == [(WANIP2, "http://10.77.0.1:5000/ctl/IPConn")]
    assert gw.services[0].device_type.endswith("WANConnectionDevice:2")
    assert gw.friendly_name == "lab-igd" and gw.udn.startswith("uuid:3c1e6d3a")


def test_igd1_finds_wanipconnection1():
    gw = parse_description((IGD / "igdv1" / "rootDesc.xml").read_bytes(), LOCATION)
    assert [s.service_type for s in gw.services] == [WANIP1]


def test_ppp_only_gateway():
    gw = parse_description((IGD / "rootDesc-ppp-only.xml").read_bytes(), LOCATION)
    assert [(s.service_type, s.control_url) for s in gw.services] == [(WANPPP1, "http://10.77.0.1:5000/ctl/PPPConn")]


def _desc(control: str, url_base: str = "", extra_service: str = "") -> bytes:
    base = "<URLBase>%s</URLBase>" % url_base if url_base else ""
    return ('<?xml version="1.0"?><root xmlns="urn:schemas-upnp-org:device-1-0">%s<device>'
            "<deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType><deviceList><device>"
            "<deviceType>urn:schemas-upnp-org:device:WANDevice:1</deviceType><deviceList><device>"
            "<deviceType>urn:schemas-upnp-org:device:WANConnectionDevice:1</deviceType><serviceList>%s<service>"
            "<serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>"
            "<controlURL>%s</controlURL></service></serviceList></device></deviceList></device></deviceList>"
            "</device></root>" % (base, extra_service, control)).encode()


@pytest.mark.parametrize("control,base,expected", [
    ("/ctl/IPConn", "", "http://10.77.0.1:5000/ctl/IPConn"),
    ("ctl/IPConn", "", "http://10.77.0.1:5000/ctl/IPConn"),
    ("/upnp/control", "http://10.77.0.1:49152/", "http://10.77.0.1:49152/upnp/control"),
    ("control", "http://10.77.0.1:49152/igd/", "http://10.77.0.1:49152/igd/control"),
    ("http://10.77.0.1:2869/ctl", "", "http://10.77.0.1:2869/ctl"),
    # a URLBase on another host is ignored; the relative URL stays on the description's host
    ("/ctl/IPConn", "http://203.0.113.9/", "http://10.77.0.1:5000/ctl/IPConn"),
])
def test_control_urls_resolve_against_urlbase_else_location(control, base, expected):
    gw = parse_description(_desc(control, base), LOCATION)
    assert gw.services[0].control_url == expected


@pytest.mark.parametrize("control", ["http://203.0.113.9:5000/ctl/IPConn", "file:///etc/passwd",
                                     "ftp://10.77.0.1/ctl", "//evil.example/ctl", ""])
def test_control_urls_off_host_or_not_http_are_refused(control):
    with pytest.raises(HostileResponse):
        parse_description(_desc(control), LOCATION)


def test_one_bad_service_does_not_hide_a_good_one():
    bad = ("<service><serviceType>urn:schemas-upnp-org:service:WANPPPConnection:1</serviceType>"
           "<controlURL>http://198.51.100.66/x</controlURL></service>")
    gw = parse_description(_desc("/ctl/IPConn", extra_service=bad), LOCATION)
    assert [s.service_type for s in gw.services] == [WANIP1]


def test_description_without_connection_service_has_no_services():
    data = (IGD / "rootDesc.xml").read_bytes().replace(b"WANIPConnection", b"SomethingElse")
    assert parse_description(data, LOCATION).services == ()


def test_not_a_description():
    with pytest.raises(UpnpError, match="not a UPnP device description"):
        parse_description(b"<html/>", LOCATION)
    with pytest.raises(UpnpError, match="has no <device>"):
        parse_description(b'<root xmlns="urn:schemas-upnp-org:device-1-0"/>', LOCATION)
