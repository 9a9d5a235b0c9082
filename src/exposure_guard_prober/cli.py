"""``exposure-guard-prober serve``: run the callback prober."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from typing import Any, Dict, List, Optional, Tuple

from exposure_guard_prober import __version__
from exposure_guard_prober.config import DEFAULT_IGD_PROBES, ProberConfig, parse_listen, parse_networks
from exposure_guard_prober.server import AccessLog, ProberServer

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="exposure-guard-prober",
                                     description="Callback prober: connects back only to the address that asks.")
    parser.add_argument("--version", action="version", version="exposure-guard-prober " + __version__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve POST /v1/probe, GET /healthz, GET /metrics")
    serve.add_argument("--listen", action="append", metavar="HOST:PORT",
                       help="address to listen on, repeatable ([::]:8443 for IPv6); default 127.0.0.1:8443")
    serve.add_argument("--tls-cert", metavar="FILE", help="PEM certificate (chain); without it: plain HTTP")
    serve.add_argument("--tls-key", metavar="FILE", help="PEM private key (if not inside --tls-cert)")
    serve.add_argument("--token", action="append", default=[], metavar="T",
                       help="accepted bearer token, repeatable (prefer --token-file: argv is visible to ps)")
    serve.add_argument("--token-file", action="append", default=[], metavar="FILE",
                       help="file with one accepted token per line")
    serve.add_argument("--lab-allow", action="append", default=[], metavar="CIDR,...",
                       help="LAB MODE: also probe these networks (private/reserved); never on the internet")
    serve.add_argument("--trusted-proxy", action="append", default=[], metavar="CIDR,...",
                       help="reverse proxies whose X-Forwarded-For is believed")
    serve.add_argument("--metrics-allow", action="append", default=[], metavar="CIDR,...",
                       help="who may read /metrics (default: loopback only)")
    serve.add_argument("--rate", type=float, default=6.0, help="probe requests per minute per source (default 6)")
    serve.add_argument("--burst", type=int, default=4, help="requests a source may make at once (default 4)")
    serve.add_argument("--per-client", type=int, default=2, help="probes per source running at once (default 2)")
    serve.add_argument("--max-concurrent", type=int, default=32, help="probe jobs at once, all sources (default 32)")
    serve.add_argument("--queue-wait", type=float, default=2.0,
                       help="seconds a request may wait for a free probe slot before 503 (default 2)")
    serve.add_argument("--max-connections", type=int, default=512,
                       help="inbound connections at once, counted from accept, before any TLS handshake (default "
                            "512; lowered to fit the descriptor limit)")
    serve.add_argument("--max-connections-per-source", type=int, default=8,
                       help="inbound connections at once per IPv4 address or IPv6 /64; trusted proxies are exempt "
                            "(default 8)")
    serve.add_argument("--head-timeout", type=float, default=5.0,
                       help="seconds from accept to the end of the request head, TLS handshake included (default 5)")
    serve.add_argument("--request-timeout", type=float, default=10.0,
                       help="seconds from accept to the end of the request body (default 10)")
    serve.add_argument("--max-outbound", type=int, default=512,
                       help="outbound probe sockets open at once, all jobs (default 512; lowered to fit the "
                            "descriptor limit)")
    serve.add_argument("--max-ports", type=int, default=16, help="ports per request, at most 16 (default 16)")
    serve.add_argument("--connect-timeout", type=float, default=3.0, help="seconds per TCP connect (default 3)")
    serve.add_argument("--io-timeout", type=float, default=3.0, help="seconds for TLS handshake / reads (default 3)")
    serve.add_argument("--deadline", type=float, default=10.0, help="seconds for a whole probe job (default 10)")
    serve.add_argument("--no-upnp", action="store_true", help="never run the WAN-side UPnP test")
    serve.add_argument("--ssdp-port", type=int, default=1900, help=argparse.SUPPRESS)
    serve.add_argument("--igd-probe", action="append", default=[], metavar="PORT/PATH",
                       help="where to look for an IGD description (repeatable; replaces the built-in list)")
    serve.add_argument("--log-file", metavar="FILE", help="JSON-lines access log (default: stderr)")
    serve.add_argument("--log-connects", action="store_true", help="log every outbound socket (audit/lab)")
    return parser


def _read_tokens(files: List[str]) -> List[str]:
    tokens: List[str] = []
    for name in files:
        with open(name, encoding="utf-8") as handle:
            tokens += [line.strip() for line in handle if line.strip() and not line.startswith("#")]
    return tokens


def _igd_probes(values: List[str]) -> Tuple[Tuple[int, str], ...]:
    if not values:
        return DEFAULT_IGD_PROBES
    out = []
    for value in values:
        port, slash, path = value.partition("/")
        if not slash or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("--igd-probe wants PORT/PATH, e.g. 5000/rootDesc.xml, got %r" % value)
        out.append((int(port), "/" + path))
    return tuple(out)


def config_from_args(args: argparse.Namespace) -> ProberConfig:
    if bool(args.tls_key) and not args.tls_cert:
        raise ValueError("--tls-key needs --tls-cert")
    if not 1 <= args.max_ports <= 16:
        raise ValueError("--max-ports must be between 1 and 16")
    for name in ("rate", "connect_timeout", "io_timeout", "deadline", "head_timeout", "request_timeout"):
        if getattr(args, name) <= 0:
            raise ValueError("--%s must be positive" % name.replace("_", "-"))
    tokens = tuple(args.token) + tuple(_read_tokens(args.token_file))
    env_tokens = os.environ.get("EXPOSURE_GUARD_PROBER_TOKENS", "")
    tokens += tuple(t for t in env_tokens.replace(",", " ").split() if t)
    extra: Dict[str, Any] = {}
    if args.metrics_allow:
        extra["metrics_allow"] = parse_networks(args.metrics_allow)
    return ProberConfig(
        listen=tuple(parse_listen(v) for v in (args.listen or ["127.0.0.1:8443"])),
        tls_cert=args.tls_cert, tls_key=args.tls_key, tokens=tokens,
        lab_allow=parse_networks(args.lab_allow), trusted_proxies=parse_networks(args.trusted_proxy),
        max_ports=args.max_ports, rate_per_minute=args.rate, burst=max(1, args.burst),
        per_client_inflight=max(1, args.per_client), max_concurrent=max(1, args.max_concurrent),
        max_connections=max(1, args.max_connections),
        max_connections_per_source=max(1, args.max_connections_per_source), max_outbound=max(1, args.max_outbound),
        head_timeout=args.head_timeout, request_timeout=max(args.request_timeout, args.head_timeout),
        queue_wait=max(0.0, args.queue_wait), connect_timeout=args.connect_timeout,
        tls_timeout=args.io_timeout, io_timeout=args.io_timeout, deadline=args.deadline,
        upnp=not args.no_upnp, ssdp_port=args.ssdp_port, igd_probes=_igd_probes(args.igd_probe),
        log_connects=args.log_connects, **extra)


async def serve(config: ProberConfig, log: AccessLog) -> None:
    server = ProberServer(config, log)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(signum, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    await stop.wait()
    log({"event": "stopping"})
    await server.close()


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except (ValueError, OSError) as exc:
        print("exposure-guard-prober: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    stream = open(args.log_file, "a", encoding="utf-8") if args.log_file else None  # noqa: SIM115
    try:
        asyncio.run(serve(config, AccessLog(stream)))
    except OSError as exc:  # cannot bind, unreadable or bad certificate/key (ssl.SSLError is an OSError)
        print("exposure-guard-prober: %s" % exc, file=sys.stderr)
        return EXIT_USAGE
    finally:
        if stream is not None:
            stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
