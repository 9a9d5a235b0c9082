"""The read API for automation (an API token, or a dashboard session): fleet summary, devices (JSON and
CSV), one device, one report, transitions; and /metrics."""

from __future__ import annotations

import time
from typing import Optional

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from starlette.responses import StreamingResponse

from exposure_guard_server.catalogue import VERSION as CATALOGUE_VERSION
from exposure_guard_server.catalogue import catalogue
from exposure_guard_server.deps import VIEWER, device_filter, event_filter, get_server, metrics_access
from exposure_guard_server.inputs import parse_int
from exposure_guard_server.roles import Caller
from exposure_guard_server.server import Server
from exposure_guard_server.services.events import EventFilter
from exposure_guard_server.services.fleet import MAX_PAGE, DeviceFilter
from exposure_guard_server.services.metrics import prometheus_text

router = APIRouter()
READ = [Depends(VIEWER)]


def devices_csv(flt: DeviceFilter = Depends(device_filter), server: Server = Depends(get_server)) -> Response:
    """Every device matching the filter as a CSV attachment, streamed page by page. Also the dashboard's
    /devices.csv (routes/dashboard.py registers it with its own authentication)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return StreamingResponse(server.reader.iter_csv(flt), media_type="text/csv; charset=utf-8",
                             headers={"content-disposition": 'attachment; filename="devices-%s.csv"' % stamp})


@router.get("/metrics")
def metrics(caller: Optional[Caller] = Depends(metrics_access), flt: DeviceFilter = Depends(device_filter),
            server: Server = Depends(get_server)) -> Response:
    """The numbers of the caller's groups, or of one ``?group=`` of them (``--public-metrics`` without a
    token: the fleet's, or the group's)."""
    scope = flt if caller is not None else DeviceFilter(group=flt.group)
    return PlainTextResponse(prometheus_text(server.reader, server.counters.totals(), scope=scope),
                             media_type="text/plain; version=0.0.4; charset=utf-8")


@router.get("/api/v1/summary")
def summary(flt: DeviceFilter = Depends(device_filter), caller: Caller = Depends(VIEWER),
            server: Server = Depends(get_server)) -> Response:
    """The summary of the caller's boxes, or of one ``group`` / enrollment ``secret`` of them."""
    return JSONResponse(server.reader.summary(scope=flt))


@router.get("/api/v1/devices", dependencies=READ)
def devices(flt: DeviceFilter = Depends(device_filter), server: Server = Depends(get_server)) -> Response:
    return JSONResponse(server.reader.devices(flt))


router.add_api_route("/api/v1/devices.csv", devices_csv, dependencies=READ)


@router.get("/api/v1/devices/{device_id:path}")
def device(request: Request, device_id: str, caller: Caller = Depends(VIEWER),
           server: Server = Depends(get_server)) -> Response:
    qp = request.query_params
    history = parse_int(qp.get("history"), "history", default=50, minimum=1, maximum=500)
    page = parse_int(qp.get("history_page"), "history_page", default=1, minimum=1, maximum=MAX_PAGE)
    return JSONResponse(server.reader.device(device_id, history=history, history_page=page, allowed=caller.groups))


@router.get("/api/v1/reports/{report_id}")
def report(report_id: str, caller: Caller = Depends(VIEWER), server: Server = Depends(get_server)) -> Response:
    return JSONResponse(server.reader.report(report_id, caller.groups))


@router.get("/api/v1/transitions", dependencies=READ)
def transitions(flt: EventFilter = Depends(event_filter), server: Server = Depends(get_server)) -> Response:
    """Events newest first: ``since``/``until`` (RFC 3339, YYYY-MM-DD or epoch), ``kind`` (comma separated),
    ``group``, ``device``, ``limit``; the next page with ``before=<next_before>``."""
    return JSONResponse(server.events.list(flt))


@router.get("/api/v1/checks", dependencies=READ)
def checks() -> Response:
    """The check catalogue this server explains findings with (the agent's, at ``version``)."""
    return JSONResponse({"version": CATALOGUE_VERSION, "checks": list(catalogue().values())})
