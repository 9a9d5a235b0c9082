"""Administration over HTTP: the admin page and its forms (re-enrollments waiting for approval, enrollment
secrets, API tokens, webhooks), and the admin JSON API (the same re-enrollments; enrollment secrets; the
webhooks and their deliveries). The three kinds are managed
through one interface (services/admin.py), so each form route below is written once for all three."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from exposure_guard_server.deps import FORM_MAX_BODY, api_read, api_write, csrf_form, get_server, json_body, require_user
from exposure_guard_server.errors import ApiError
from exposure_guard_server.inputs import parse_int
from exposure_guard_server.pages import render
from exposure_guard_server.reportlogic import TRANSITION_KINDS
from exposure_guard_server.server import Server

router = APIRouter()


@dataclass(frozen=True)
class FormKind:
    path: str  # /admin/<path> creates one, /admin/<path>/<id>/<verb> removes one
    attribute: str  # which of Admin's managed kinds
    verb: str
    shows: str  # the admin page's field for the new secret (shown once)
    message: str


FORM_KINDS = (
    FormKind("groups", "groups", "delete", "new_group", "Group created."),
    FormKind("enroll-secrets", "enroll_secrets", "revoke", "new_secret", "Enrollment secret created."),
    FormKind("api-tokens", "api_tokens", "revoke", "new_token", "API token created."),
    FormKind("webhooks", "webhooks", "delete", "new_webhook_secret", "Webhook added."),
)


def admin_page(request: Request, server: Server, extra: Dict[str, Any]) -> Response:
    admin = server.admin
    context = {"reenrollments": server.enrollment.pending(), "secrets": admin.enroll_secrets.list(),
               "groups": admin.groups.list(), "new_group": "",
               "tokens": admin.api_tokens.list(),
               "webhooks": admin.webhooks.list(), "deliveries": admin.webhooks.deliveries(50),
               "kinds": TRANSITION_KINDS, "new_secret": "", "new_token": "", "new_webhook_secret": "", "message": ""}
    context.update(extra)
    return render(request, "admin.html", context)


@router.get("/admin", dependencies=[Depends(require_user)])
def admin(request: Request, server: Server = Depends(get_server)) -> Response:
    return admin_page(request, server, {})


def _create_route(kind: FormKind) -> Callable[..., Response]:
    def create(request: Request, fields: Dict[str, str] = Depends(csrf_form),
               server: Server = Depends(get_server)) -> Response:
        managed = getattr(server.admin, kind.attribute)
        _id, secret = managed.create(**{name: fields.get(name, "") for name in managed.fields})
        return admin_page(request, server, {kind.shows: secret, "message": kind.message})

    return create


def _remove_route(kind: FormKind) -> Callable[..., Response]:
    def remove(item_id: str, server: Server = Depends(get_server)) -> Response:
        getattr(server.admin, kind.attribute).remove(parse_int(item_id, "id", minimum=1))
        return RedirectResponse("/admin", status_code=303)

    return remove


for _kind in FORM_KINDS:
    router.add_api_route("/admin/" + _kind.path, _create_route(_kind), methods=["POST"])
    router.add_api_route("/admin/%s/{item_id}/%s" % (_kind.path, _kind.verb), _remove_route(_kind), methods=["POST"],
                         dependencies=[Depends(csrf_form)])


# -- re-enrollments waiting for an operator (services/enroll.py) ---------------------------------------------

def _decide(server: Server, action: str, request_id: str, by: str) -> str:
    """Approve or reject a pending re-enrollment; returns the device id."""
    ident = parse_int(request_id, "re-enrollment id", minimum=1)
    if action == "approve":
        return server.enrollment.approve(ident, by)
    return server.enrollment.reject(ident)


@router.post("/admin/re-enroll/{request_id}/{action}", dependencies=[Depends(csrf_form)])
def decide_reenrollment(request_id: str, action: str, session: Dict[str, Any] = Depends(require_user),
                        server: Server = Depends(get_server)) -> Response:
    if action not in ("approve", "reject"):
        raise ApiError(404, "unknown action %r" % action[:20])
    _decide(server, action, request_id, session["username"])
    return RedirectResponse("/admin", status_code=303)


@router.get("/api/v1/re-enroll", dependencies=[Depends(api_read)])
def list_reenrollments(server: Server = Depends(get_server)) -> Response:
    return JSONResponse({"pending": server.enrollment.pending()})


@router.post("/api/v1/re-enroll/{request_id}/{action}")
def decide_reenrollment_api(request_id: str, action: str, caller: str = Depends(api_write),
                            server: Server = Depends(get_server)) -> Response:
    if action not in ("approve", "reject"):
        raise ApiError(404, "unknown action %r" % action[:20])
    device_id = _decide(server, action, request_id, "api " + caller)
    return JSONResponse({"device_id": device_id, action + "d": True})


# -- JSON API ------------------------------------------------------------------------------------------

@router.get("/api/v1/enroll-secrets", dependencies=[Depends(api_read)])
def list_enroll_secrets(server: Server = Depends(get_server)) -> Response:
    return JSONResponse({"enroll_secrets": server.admin.enroll_secrets.list()})


@router.post("/api/v1/enroll-secrets", dependencies=[Depends(api_write)])
def create_enroll_secret(body: Any = Depends(json_body(FORM_MAX_BODY, "body must be JSON", empty_is_object=True)),
                         server: Server = Depends(get_server)) -> Response:
    fields = body if isinstance(body, dict) else {}
    group = fields.get("group") or ""
    secret_id, secret = server.admin.enroll_secrets.create(str(fields.get("name", "")), str(group))
    return JSONResponse({"id": secret_id, "secret": secret, "group": str(group)}, status_code=201)


@router.delete("/api/v1/enroll-secrets/{secret_id}", dependencies=[Depends(api_write)])
def revoke_enroll_secret(secret_id: str, server: Server = Depends(get_server)) -> Response:
    row_id = parse_int(secret_id, "id", minimum=1)
    if not server.admin.enroll_secrets.remove(row_id):
        raise ApiError(404, "no active enrollment secret %d" % row_id)
    return JSONResponse({"revoked": row_id})


@router.get("/api/v1/webhooks", dependencies=[Depends(api_read)])
def list_webhooks(server: Server = Depends(get_server)) -> Response:
    return JSONResponse({"webhooks": server.admin.webhooks.list(), "deliveries": server.admin.webhooks.deliveries(100)})


@router.get("/api/v1/groups", dependencies=[Depends(api_read)])
def list_groups(server: Server = Depends(get_server)) -> Response:
    """Every group with its devices by state, riskiest first (the Groups page)."""
    return JSONResponse({"groups": server.reader.groups()})


@router.post("/api/v1/groups", dependencies=[Depends(api_write)])
def create_group(body: Any = Depends(json_body(FORM_MAX_BODY, "body must be JSON")),
                 server: Server = Depends(get_server)) -> Response:
    name = body.get("name", "") if isinstance(body, dict) else ""
    group_id, name = server.admin.groups.create(str(name))
    return JSONResponse({"id": group_id, "name": name}, status_code=201)


@router.delete("/api/v1/groups/{ident}", dependencies=[Depends(api_write)])
def remove_group(ident: str, server: Server = Depends(get_server)) -> Response:
    if not server.admin.groups.remove(ident):
        raise ApiError(404, "no group %r" % ident[:100])
    return JSONResponse({"removed": ident})


@router.put("/api/v1/devices/{device_id:path}/group", dependencies=[Depends(api_write)])
def move_device(device_id: str, body: Any = Depends(json_body(FORM_MAX_BODY, "body must be JSON")),
                server: Server = Depends(get_server)) -> Response:
    """Body ``{"group": NAME}`` (null or "" for no group)."""
    group = body.get("group") if isinstance(body, dict) else None
    if group is not None and not isinstance(group, str):
        raise ApiError(400, "group must be a group's name, or null for none")
    return JSONResponse({"device_id": device_id, "group": server.admin.groups.move(device_id, group or "")})
