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
    cookie_secure: str = "auto"  # auto (when the request is HTTPS) | always | never
    public_metrics: bool = False  # /metrics without an API token
    session_ttl: float = 12 * 3600.0
    webhook_backoff: float = 10.0  # first retry after ~this many seconds, doubling
    background: bool = True  # webhook sender, stale sweep and counter flush in this process
    sweep_every: float = 30.0
    pool_size: int = 10

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
