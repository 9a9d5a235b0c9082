"""Server settings: one object, passed to worker processes through the environment."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields

ENV_NAME = "EXPOSURE_GUARD_SERVER_CONFIG"


@dataclass
class ServerConfig:
    db_url: str
    max_body: int = 1024 * 1024  # bytes, compressed and decompressed
    stale_grace: float = 600.0  # seconds added to 2 × the device's interval
    default_interval: int = 3600  # until a device tells its own (X-ExposureGuard-Interval)
    max_clock_skew: float = 300.0  # a report dated further ahead of its arrival is ordered by its arrival
    cookie_secure: str = "auto"  # auto (when the request is HTTPS) | always | never
    public_metrics: bool = False  # /metrics without an API token
    session_ttl: float = 12 * 3600.0
    webhook_backoff: float = 10.0  # first retry after ~this many seconds, doubling
    background: bool = True  # webhook sender, stale sweep and counter flush in this process
    sweep_every: float = 30.0
    pool_size: int = 10
    # HTTP transport limits, per server process (transport.py)
    header_timeout: float = 10.0  # seconds to send a complete request head
    body_timeout: float = 30.0  # seconds to send a complete request body once its head is in
    max_header_bytes: int = 64 * 1024  # request line and headers
    max_connections: int = 1000  # open connections (lowered to what the descriptor limit allows)
    max_connections_per_source: int = 64  # from one address (an IPv6 client: its /64); trusted proxies exempt
    proxy: str = ""  # trusted proxy addresses (--proxy), exempt from the per-source cap
    tls_cert: str = ""  # HTTPS: certificate and key files (PEM); the handshake is done in transport.py
    tls_key: str = ""
    # Webhook deliveries (webhooks.py)
    webhook_timeout: float = 10.0  # total seconds per delivery: connect, TLS, send, answer
    webhook_allow: str = ""  # internal networks webhooks may reach anyway (comma separated), e.g. 127.0.0.1/32
    webhook_workers: int = 4  # deliveries in flight at once (one per webhook)
    qpkg_dir: str = ""  # an App Center repository: the folder ./build.sh wrote (routes/repository.py)

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ServerConfig:
        raw = os.environ.get(ENV_NAME)
        if not raw:
            raise RuntimeError("%s is not set; start the server with `exposure-guard-server serve`" % ENV_NAME)
        data = json.loads(raw)
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})
