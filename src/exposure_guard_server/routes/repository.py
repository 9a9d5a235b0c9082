"""An App Center repository for the fleet: the feed (``/qpkg/ExposureGuard.xml``) and the files it names
(the package, its checksum, the icon), from the folder ``serve --qpkg-dir`` names (what ``./build.sh`` wrote
to dist/). The feed's locations are rewritten to this server's own address, so the same build serves from any
host name. Public, like any App Center repository: the NASes fetch it without a login."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from fastapi.responses import FileResponse, Response

from exposure_guard_server.deps import get_server
from exposure_guard_server.errors import ApiError
from exposure_guard_server.server import Server

router = APIRouter()
FEED = "ExposureGuard.xml"
MAX_FEED = 1024 * 1024
_FILE = re.compile(r"^ExposureGuard[A-Za-z0-9_.\-]{0,80}\.(qpkg|sha256|gif)$")
_LOCATION = re.compile(r"(<location>)([^<]*/)?([^</]+)(</location>)")
_ICON = re.compile(r"(<icon(?:80|100)><!\[CDATA\[)([^\]]*/)?([^\]/]+)(\]\]>)")


def _folder(server: Server) -> Path:
    if not server.config.qpkg_dir:
        raise ApiError(404, "this server hosts no App Center repository (serve --qpkg-dir)")
    return Path(server.config.qpkg_dir)


def _base(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/qpkg/"


@router.get("/qpkg/" + FEED, include_in_schema=False)
def feed(request: Request, server: Server = Depends(get_server)) -> Response:
    path = _folder(server) / FEED
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_FEED + 1)
    except OSError:
        raise ApiError(404, "no feed in the repository folder (run ./build.sh into it)") from None
    if len(data) > MAX_FEED:
        raise ApiError(500, "the feed in the repository folder is larger than 1 MiB")
    base = _base(request)
    text = data.decode("utf-8", "replace")
    text = _LOCATION.sub(lambda m: m.group(1) + base + m.group(3) + m.group(4), text)
    text = _ICON.sub(lambda m: m.group(1) + base + m.group(3) + m.group(4), text)
    return Response(text.encode("utf-8"), media_type="application/xml", headers={"cache-control": "no-cache"})


@router.get("/qpkg/{name}", include_in_schema=False)
def package_file(name: str, server: Server = Depends(get_server)) -> Response:
    if not _FILE.match(name):
        raise ApiError(404, "not a file of this repository")
    path = _folder(server) / name
    if not path.is_file() or path.is_symlink():
        raise ApiError(404, "not a file of this repository")
    media = {"qpkg": "application/octet-stream", "sha256": "text/plain", "gif": "image/png"}[name.rsplit(".", 1)[1]]
    return FileResponse(str(path), media_type=media)
