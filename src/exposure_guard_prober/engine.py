"""The probing engine: every outbound connection goes through ``Connector``, which only ever receives
the one address the API layer resolved for the caller. Ports are probed concurrently under one deadline."""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Tuple

from exposure_guard.fingerprint import (
    banner_of,
    certificate_sha256,
    clean_text,
    host_header,
    http_request,
    parse_http_response,
)
from exposure_guard_prober.config import ProberConfig

OPEN, CLOSED, FILTERED = "open", "closed", "filtered"


@dataclass(frozen=True)
class PortRequest:
    port: int
    tls: bool = False
    probe: str = "http"  # http: send GET / ; banner: only listen (SSH, FTP speak first)


class ConnectRefused(Exception):
    """RST: nothing listens."""


class ConnectFiltered(Exception):
    """No answer in time, or an ICMP error: something drops or rejects the packets."""


def tls_client_context() -> ssl.SSLContext:
    # Whatever certificate is served is what we fingerprint; verifying it would hide self-signed ones.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class Connector:
    """The single place that opens outbound sockets, with a global cap and an optional connect log."""

    def __init__(self, config: ProberConfig, log: Optional[Callable[[Dict[str, Any]], None]] = None,
                 count: Optional[Callable[[str], None]] = None) -> None:
        self.config = config
        self.slots = asyncio.Semaphore(config.max_outbound)
        self.log = log
        self.count = count or (lambda _proto: None)

    def _note(self, proto: str, address: str, port: int, result: str) -> None:
        self.count(proto)
        if self.log is not None and self.config.log_connects:
            self.log({"event": "connect", "proto": proto, "target": address, "port": port, "result": result})

    async def tcp(self, address: str, port: int, timeout: float) -> socket.socket:
        loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, (address, port)), timeout)
        except ConnectionRefusedError:
            sock.close()
            self._note("tcp", address, port, CLOSED)
            raise ConnectRefused() from None
        except asyncio.TimeoutError:
            sock.close()
            self._note("tcp", address, port, FILTERED)
            raise ConnectFiltered("no answer within %.1f s" % timeout) from None
        except OSError as exc:
            sock.close()
            self._note("tcp", address, port, FILTERED)
            raise ConnectFiltered(clean_text(exc.strerror or str(exc))) from None
        except BaseException:
            sock.close()
            raise
        self._note("tcp", address, port, OPEN)
        return sock

    async def udp_exchange(self, address: str, port: int, payload: bytes, timeout: float,
                           max_datagrams: int = 4) -> List[bytes]:
        """Send one datagram to address:port; collect what that same address answers within ``timeout``."""
        loop = asyncio.get_running_loop()
        received: List[bytes] = []
        done = loop.create_future()

        class Protocol(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: Tuple[Any, ...]) -> None:
                # A connected UDP socket only delivers datagrams from the peer; keep a few, capped.
                if len(received) < max_datagrams:
                    received.append(data[:8192])

            def error_received(self, exc: Exception) -> None:  # ICMP port unreachable
                if not done.done():
                    done.set_exception(ConnectRefused())

        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        transport, _protocol = await loop.create_datagram_endpoint(Protocol, remote_addr=(address, port),
                                                                   family=family)
        self._note("udp", address, port, "sent")
        try:
            transport.sendto(payload)
            try:
                await asyncio.wait_for(asyncio.shield(done), timeout)
            except asyncio.TimeoutError:
                pass
            except ConnectRefused:
                if not received:
                    raise
        finally:
            transport.close()
        return received


async def _read_capped(reader: asyncio.StreamReader, cap: int, deadline: float, until_line: bool = False) -> bytes:
    data = b""
    loop = asyncio.get_running_loop()
    while len(data) < cap:
        left = deadline - loop.time()
        if left <= 0:
            break
        try:
            chunk = await asyncio.wait_for(reader.read(min(16384, cap - len(data))), left)
        except (asyncio.TimeoutError, OSError, ssl.SSLError, asyncio.IncompleteReadError):
            break
        if not chunk:
            break
        data += chunk
        if until_line and b"\n" in data:
            break
        if b"</title" in data[-len(chunk) - 8 :].lower():
            break
    return data


async def _close(writer: Optional[asyncio.StreamWriter]) -> None:
    if writer is None:
        return
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
        pass


async def probe_port(connector: Connector, address: str, request: PortRequest, config: ProberConfig,
                     result: Dict[str, Any]) -> None:
    """Fill ``result`` step by step (so a deadline still leaves what was learnt so far)."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    try:
        sock = await connector.tcp(address, request.port, config.connect_timeout)
    except ConnectRefused:
        result["state"] = CLOSED
        return
    except ConnectFiltered as exc:
        result["state"], result["error"] = FILTERED, str(exc)
        return
    result["state"] = OPEN
    result["connect_ms"] = round((loop.time() - started) * 1000, 1)
    writer: Optional[asyncio.StreamWriter] = None
    try:
        if request.tls:
            try:
                reader, writer = await asyncio.open_connection(
                    sock=sock, ssl=tls_client_context(), server_hostname="",
                    ssl_handshake_timeout=config.tls_timeout)
            except (ssl.SSLError, OSError, asyncio.TimeoutError, ConnectionError) as exc:
                sock.close()
                result["tls"] = {"sha256": None, "error": clean_text(str(exc) or type(exc).__name__)}
                return
            ssl_object = writer.get_extra_info("ssl_object")
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            result["tls"] = {"sha256": certificate_sha256(der), "error": None}
        else:
            reader, writer = await asyncio.open_connection(sock=sock)
        deadline = loop.time() + config.io_timeout
        if request.probe == "banner":
            data = await _read_capped(reader, 1024, deadline, until_line=True)
            result["banner"] = banner_of(data) or None
            return
        writer.write(http_request(host_header(address, request.port)))
        await asyncio.wait_for(writer.drain(), config.io_timeout)
        data = await _read_capped(reader, config.read_cap, deadline)
        result["http"] = parse_http_response(data)
        if result["http"] is None and data:
            result["banner"] = banner_of(data) or None
    except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError) as exc:
        result["error"] = clean_text(str(exc) or type(exc).__name__)
    finally:
        if writer is not None:
            await _close(writer)
        else:
            sock.close()


def new_port_result(request: PortRequest) -> Dict[str, Any]:
    return {"port": request.port, "state": FILTERED, "connect_ms": None, "tls": None, "http": None,
            "banner": None, "error": None}


async def run_job(connector: Connector, address: str, ports: List[PortRequest], config: ProberConfig,
                  upnp: bool) -> Tuple[List[Dict[str, Any]], Optional[Dict[str, Any]], float]:
    """Probe every port (and the WAN-side UPnP test) concurrently; stop at the total deadline."""
    from exposure_guard_prober.upnpwan import wan_upnp_test

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
