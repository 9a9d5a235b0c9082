"""UPnP IGD client for the router audit: SSDP discovery, device description, SOAP control.

Everything here treats the LAN as hostile: any device can answer SSDP. Responses are size-capped
(:data:`exposure_guard.hostilehttp.MAX_BODY`), every exchange has a total deadline (a slow-drip body cannot hang the
agent), XML goes through defusedxml, and control URLs must stay on the description's host.
"""

from __future__ import annotations

from exposure_guard.upnp.errors import HostileResponse, SoapFault, UpnpError
from exposure_guard.upnp.models import Gateway, PortMapping, SsdpAnswer, WanService

__all__ = ["Gateway", "HostileResponse", "PortMapping", "SoapFault", "SsdpAnswer", "UpnpError", "WanService"]
