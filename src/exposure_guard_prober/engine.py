"""The probing engine: the caller's ports (and the WAN-side UPnP test) probed concurrently under one
deadline, every connection opened through ``connector.Connector``."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from exposure_guard.contracts.fingerprint import (
    banner_of,
    certificate_sha256,
    clean_text,
    host_header,
    http_request,
    no_verify_context,
    parse_http_response,
)
from exposure_guard_prober.config import ProberConfig
from exposure_guard_prober.connector import (
    CLOSED,
    FILTERED,
    OPEN,
    ConnectFiltered,
    Connector,
    ConnectRefused,
    close_writer,
    read_capped,
)
from exposure_guard_prober.upnpwan import wan_upnp_test


@dataclass(frozen=True)
class PortRequest:
    port: int
    tls: bool = False
    probe: str = "http"  # http: send GET / ; banner: only listen (SSH, FTP speak first)


NO_OUTBOUND_SLOT = "not probed before the deadline: the prober was at its outbound connection cap"


async def probe_port(connector: Connector, address: str, request: PortRequest, config: ProberConfig,
                     result: Dict[str, Any]) -> None:
    """Fill ``result`` step by step (so a deadline still leaves what was learnt so far)."""
    loop = asyncio.get_running_loop()
    result["error"] = NO_OUTBOUND_SLOT  # until the connector has a slot for this port
    started = loop.time()

    def slot_taken() -> None:
        nonlocal started
        result["error"], started = None, loop.time()

    try:
        async with connector.tcp(address, request.port, config.connect_timeout, on_slot=slot_taken) as sock:
            result["state"] = OPEN
            result["connect_ms"] = round((loop.time() - started) * 1000, 1)
            await _fingerprint(sock, address, request, config, result)
    except ConnectRefused:
        result["state"] = CLOSED
    except ConnectFiltered as exc:
        result["state"], result["error"] = FILTERED, str(exc)


async def _fingerprint(sock: socket.socket, address: str, request: PortRequest, config: ProberConfig,
                       result: Dict[str, Any]) -> None:
    """TLS certificate, HTTP answer or banner of an open port (the socket is closed by the caller's block)."""
    loop = asyncio.get_running_loop()
    writer: Optional[asyncio.StreamWriter] = None
    try:
        if request.tls:
            try:
                reader, writer = await asyncio.open_connection(
                    sock=sock, ssl=no_verify_context(), server_hostname="",
                    ssl_handshake_timeout=config.tls_timeout)
            except (ssl.SSLError, OSError, asyncio.TimeoutError, ConnectionError) as exc:
                result["tls"] = {"sha256": None, "error": clean_text(str(exc) or type(exc).__name__)}
                return
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            result["tls"] = {"sha256": certificate_sha256(der), "error": None}
        else:
            reader, writer = await asyncio.open_connection(sock=sock)
        deadline = loop.time() + config.io_timeout
        if request.probe == "banner":
            data = await read_capped(reader, 1024, deadline, until_line=True)
            result["banner"] = banner_of(data) or None
            return
        writer.write(http_request(host_header(address, request.port)))
        await asyncio.wait_for(writer.drain(), config.io_timeout)
        data = await read_capped(reader, config.read_cap, deadline)
        result["http"] = parse_http_response(data)
        if result["http"] is None and data:
            result["banner"] = banner_of(data) or None
    except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
        result["error"] = clean_text(str(exc) or type(exc).__name__)
    finally:
        await close_writer(writer)


def new_port_result(request: PortRequest) -> Dict[str, Any]:
    return {"port": request.port, "state": FILTERED, "connect_ms": None, "tls": None, "http": None,
            "banner": None, "error": None}


async def run_job(connector: Connector, address: str, ports: List[PortRequest], config: ProberConfig,
                  upnp: bool) -> Tuple[List[Dict[str, Any]], Optional[Dict[str, Any]], float]:
    """Probe every port (and the WAN-side UPnP test) concurrently; stop at the total deadline."""
    started = time.monotonic()
    results = [new_port_result(request) for request in ports]
    tasks = [asyncio.ensure_future(_guarded(probe_port(connector, address, request, config, result), result))
             for request, result in zip(ports, results)]
    upnp_result: Optional[Dict[str, Any]] = None
    if upnp:
        upnp_result = {"ssdp": None, "igd": None, "exposed": False, "error": None}
        tasks.append(asyncio.ensure_future(_guarded(wan_upnp_test(connector, address, config, upnp_result),
                                                    upnp_result)))
    if tasks:
        _done, pending = await asyncio.wait(tasks, timeout=config.deadline)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
            for result in results:
                if result["state"] == OPEN and not (result["http"] or result["banner"] or result["error"]):
                    result["error"] = "deadline reached"
            if upnp_result is not None and upnp_result["error"] is None and not upnp_result["exposed"]:
                upnp_result["error"] = "deadline reached"
    return results, upnp_result, time.monotonic() - started


async def _guarded(job: Any, result: Dict[str, Any]) -> None:
    # One port's surprise must not lose the others' results: it becomes that port's error.
    try:
        await job
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        result["error"] = clean_text("%s: %s" % (type(exc).__name__, exc))
