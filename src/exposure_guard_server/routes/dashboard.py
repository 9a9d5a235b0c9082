"""The dashboard's pages for logged-in users: the fleet, one device, one report, events; login and logout.
The admin page is in routes/admin.py."""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Dict, FrozenSet, Optional, Tuple
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from exposure_guard_server.catalogue import VERSION as CATALOGUE_VERSION
from exposure_guard_server.deps import (
    ADMIN_FORM,
    OPERATOR_FORM,
    VIEWER,
    VIEWER_FORM,
    device_filter,
    event_filter,
    form,
    get_server,
    secure_cookies,
    session_cookie_name,
    session_token,
)
from exposure_guard_server.errors import ApiError
from exposure_guard_server.inputs import parse_int
from exposure_guard_server.pages import render
from exposure_guard_server.reportlogic import TRANSITION_KINDS, format_time
from exposure_guard_server.roles import Caller
from exposure_guard_server.routes.read_api import devices_csv
from exposure_guard_server.server import Server
from exposure_guard_server.services.events import EventFilter
from exposure_guard_server.services.fleet import MAX_PAGE, NO_GROUP, PER_PAGE_CHOICES, SORTS, DeviceFilter
from exposure_guard_server.services.trend import NO_GROUP_KEY
from exposure_guard_server.services.trend import svg as trend_svg

LOGIN_COOKIE = "eg_login"  # the login form's CSRF token (the form comes before any session)
USER = [Depends(VIEWER)]

router = APIRouter()


def _safe_next(target: str) -> str:
    """Only same-site paths after login (no open redirect)."""
    if not target.startswith("/") or target.startswith("//") or "\\" in target or "\n" in target:
        return "/"
    return target


@router.get("/login")
def login_form(request: Request, server: Server = Depends(get_server)) -> Response:
    token = secrets.token_urlsafe(24)
    response = render(request, "login.html", {"login_csrf": token, "error": "",
                                              "next": _safe_next(request.query_params.get("next", "/"))})
    response.set_cookie(LOGIN_COOKIE, token, max_age=1800, httponly=True, samesite="strict",
                        secure=secure_cookies(request, server), path="/login")
    return response


@router.post("/login")
def login(request: Request, fields: Dict[str, str] = Depends(form), server: Server = Depends(get_server)) -> Response:
    target = _safe_next(fields.get("next", "/"))
    expected = request.cookies.get(LOGIN_COOKIE, "")
    if not expected or not hmac.compare_digest(fields.get("csrf", ""), expected):
        raise ApiError(403, "the login form expired (CSRF check failed); reload the page and log in again")
    client = request.client.host if request.client else "?"
    user_id = server.admin.login(fields.get("username", ""), fields.get("password", ""), client)
    if user_id is None:
        return render(request, "login.html", {"login_csrf": expected, "error": "Wrong user name or password.",
                                              "next": target}, status=401)
    token, _csrf = server.admin.create_session(user_id)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(session_cookie_name(request, server), token, max_age=int(server.config.session_ttl),
                        httponly=True, samesite="lax", secure=secure_cookies(request, server), path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


@router.post("/logout", dependencies=[Depends(VIEWER_FORM)])
def logout(request: Request, server: Server = Depends(get_server)) -> Response:
    server.admin.end_session(session_token(request, server))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(session_cookie_name(request, server), path="/")
    return response


@router.get("/")
def fleet(request: Request, flt: DeviceFilter = Depends(device_filter), caller: Caller = Depends(VIEWER),
          server: Server = Depends(get_server)) -> Response:
    trend_groups = _trend_groups(server, flt, caller)
    return render(request, "fleet.html", {
        "trend": Markup(trend_svg(server.trend.series(30, trend_groups))),
        "accepted": len(server.acceptances.list(caller)),
        "summary": server.reader.summary(scope=flt), "listing": server.reader.devices(flt), "flt": flt,
        "sorts": list(SORTS), "per_pages": PER_PAGE_CHOICES, "firmwares": server.reader.firmware_versions(scope=flt),
        "groups": server.admin.groups.list(caller.groups), "no_group": NO_GROUP,
        "link": lambda **kw: "/?" + urlencode(flt.query_args(**kw)),
        "csv_link": "/devices.csv?" + urlencode(flt.query_args(page=None)),
    })


def _trend_groups(server: Server, flt: DeviceFilter, caller: Caller) -> Optional[FrozenSet[int]]:
    """The group keys the trend chart adds up: the filtered group, else the caller's groups, else all."""
    if flt.group == NO_GROUP:
        return frozenset({NO_GROUP_KEY}) if caller.groups is None else frozenset()
    if flt.group:
        ids = {g["id"] for g in server.admin.groups.list(caller.groups) if g["name"] == flt.group}
        return frozenset(ids)
    return caller.groups


@router.get("/groups")
def groups_page(request: Request, caller: Caller = Depends(VIEWER), server: Server = Depends(get_server)) -> Response:
    return render(request, "groups.html", {"ranking": server.reader.groups(allowed=caller.groups), "no_group": NO_GROUP})


router.add_api_route("/devices.csv", devices_csv, dependencies=USER)


# Before the device page: its {device_id:path} would take ".../printable" as a device id.
@router.get("/devices/{device_id:path}/printable")
def printable_report(request: Request, device_id: str, caller: Caller = Depends(VIEWER),
                     server: Server = Depends(get_server)) -> Response:
    """One box's findings with what they mean and how to fix them, for an MSP to send its customer (print
    it, or save it as PDF from the browser's print dialog)."""
    device = server.reader.device(device_id, history=1, allowed=caller.groups)
    return render(request, "printable.html", {"d": device, "catalogue_version": CATALOGUE_VERSION})


@router.get("/devices/{device_id:path}")
def device_page(request: Request, device_id: str, caller: Caller = Depends(VIEWER),
                server: Server = Depends(get_server)) -> Response:
    page = parse_int(request.query_params.get("page"), "page", default=1, minimum=1, maximum=MAX_PAGE)
    device = server.reader.device(device_id, history=25, history_page=page, allowed=caller.groups)
    accepted = server.acceptances.list(caller, device_id=device_id)
    by_check = {a["check_id"]: a for a in accepted}
    for finding in device["findings"]:  # accepted on the server: shown like the agent's own acceptances
        if finding.get("status") == "fail" and str(finding.get("id")) in by_check and finding["effect"] != "accepted":
            finding["effect"], finding["server_accepted"] = "accepted", by_check[str(finding.get("id"))]
    return render(request, "device.html", {"d": device, "groups": server.admin.groups.list(caller.groups),
                                           "no_group": NO_GROUP, "acceptances": accepted,
                                           "today": time.strftime("%Y-%m-%d", time.gmtime())})


@router.post("/devices/{device_id:path}/accept")
def accept_risk(device_id: str, sent: Tuple[Caller, Dict[str, str]] = Depends(OPERATOR_FORM),
                server: Server = Depends(get_server)) -> Response:
    caller, fields = sent
    whole_group = fields.get("scope") == "group"
    group = server.reader.device(device_id, history=1, allowed=caller.groups)["group"] if whole_group else ""
    if whole_group and not group:
        raise ApiError(400, "this box is in no group: accept it for the box alone")
    server.acceptances.accept(fields.get("check_id", ""), fields.get("reason", ""), fields.get("until", ""), caller,
                              device_id="" if whole_group else device_id, group=group)
    return RedirectResponse("/devices/" + quote(device_id, safe=""), status_code=303)


@router.post("/devices/{device_id:path}/revoke-acceptance")
def revoke_acceptance(device_id: str, sent: Tuple[Caller, Dict[str, str]] = Depends(OPERATOR_FORM),
                      server: Server = Depends(get_server)) -> Response:
    caller, fields = sent
    server.acceptances.revoke(parse_int(fields.get("id"), "id", minimum=1), caller)
    return RedirectResponse("/devices/" + quote(device_id, safe=""), status_code=303)


@router.post("/devices/{device_id:path}/group")
def move_device(device_id: str, sent: Tuple[Caller, Dict[str, str]] = Depends(OPERATOR_FORM),
                server: Server = Depends(get_server)) -> Response:
    caller, fields = sent
    server.admin.groups.move(device_id, fields.get("group", ""), caller)
    return RedirectResponse("/devices/" + quote(device_id, safe=""), status_code=303)


@router.post("/devices/{device_id:path}/details")
def device_details(device_id: str, sent: Tuple[Caller, Dict[str, str]] = Depends(OPERATOR_FORM),
                   server: Server = Depends(get_server)) -> Response:
    caller, fields = sent
    server.lifecycle.update(device_id, caller, note=fields.get("note", ""), tags=fields.get("tags", ""))
    return RedirectResponse("/devices/" + quote(device_id, safe=""), status_code=303)


@router.post("/devices/{device_id:path}/retire")
def retire_device(device_id: str, sent: Tuple[Caller, Dict[str, str]] = Depends(OPERATOR_FORM),
                  server: Server = Depends(get_server)) -> Response:
    caller, fields = sent
    server.lifecycle.update(device_id, caller, retired=fields.get("retired", "true") != "false")
    return RedirectResponse("/devices/" + quote(device_id, safe=""), status_code=303)


@router.post("/devices/{device_id:path}/delete")
def delete_device(device_id: str, sent: Tuple[Caller, Dict[str, str]] = Depends(ADMIN_FORM),
                  server: Server = Depends(get_server)) -> Response:
    caller, fields = sent
    if fields.get("confirm", "") != device_id:
        raise ApiError(400, "type the device id to confirm: the box and its whole history are deleted")
    server.lifecycle.delete(device_id, caller)
    return RedirectResponse("/", status_code=303)


@router.get("/reports/{report_id}")
def report_page(request: Request, report_id: str, caller: Caller = Depends(VIEWER),
                server: Server = Depends(get_server)) -> Response:
    return render(request, "report.html", {"r": server.reader.report(report_id, caller.groups)})


@router.get("/events")
def events_page(request: Request, flt: EventFilter = Depends(event_filter), caller: Caller = Depends(VIEWER),
                server: Server = Depends(get_server)) -> Response:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    return render(request, "events.html", {
        "listing": server.events.list(flt), "flt": flt, "kinds": TRANSITION_KINDS,
        "groups": server.admin.groups.list(caller.groups),
        "no_group": NO_GROUP, "link": lambda **kw: "/events?" + urlencode(flt.query_args(**kw)),
        "presets": [("Today", {"since": today, "until": today}), ("Yesterday", {"since": yesterday, "until": yesterday}),
                    ("Last 7 days", {"since": time.strftime("%Y-%m-%d", time.gmtime(time.time() - 6 * 86400))})],
        "since_day": format_time(flt.since)[:10], "until_day": format_time(flt.until - 1)[:10] if flt.until else "",
    })
