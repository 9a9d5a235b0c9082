"""Outbound connections: every socket the prober opens goes through ``Connector``, which only ever receives
the one address the API layer resolved for the caller (a global cap on open sockets, an optional connect
log). The port probes (``engine``) and the WAN-side UPnP test (``upnpwan``) both build on it."""

from __future__ import annotations

import asyncio
import socket
import ssl
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Dict, List, Optional, Tuple

from exposure_guard.contracts.fingerprint import clean_text
from exposure_guard_prober.config import ProberConfig

OPEN, CLOSED, FILTERED = "open", "closed", "filtered"


class ConnectRefused(Exception):
    """RST: nothing listens."""


class ConnectFiltered(Exception):
    """No answer in time, or an ICMP error: something drops or rejects the packets."""



class Connector:
    """The single place that opens outbound sockets, with a global cap (``max_outbound`` sockets open at
    once: each one holds a slot from before it is created until it is closed) and an optional connect log."""

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

    @asynccontextmanager
    async def tcp(self, address: str, port: int, timeout: float,
                  on_slot: Callable[[], None] = lambda: None) -> AsyncIterator[socket.socket]:
        """A connected socket to address:port for the ``async with`` block, closed after it (unless the
        block handed it to a transport that closed it). Waits for a free outbound slot first and calls
        ``on_slot`` once it has one; raises ConnectRefused / ConnectFiltered."""
        async with self.slots:
            on_slot()
            sock = await self._connect(address, port, timeout)
            try:
                yield sock
            finally:
                if sock.fileno() != -1:
                    sock.close()

    async def _connect(self, address: str, port: int, timeout: float) -> socket.socket:
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
        async with self.slots:
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
                await asyncio.sleep(0)  # the transport closes its socket on the next loop turn
        return received


async def read_capped(reader: asyncio.StreamReader, cap: int, deadline: float, until_line: bool = False) -> bytes:
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


async def close_writer(writer: Optional[asyncio.StreamWriter]) -> None:
    if writer is None:
        return
    try:
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 1.0)
    except (OSError, ssl.SSLError, asyncio.TimeoutError, ConnectionError):
        writer.transport.abort()  # a peer that does not read must not keep the socket (and its slot)
