"""Administration over HTTP: the admin page and its forms (re-enrollments waiting for approval, enrollment
secrets, API tokens, webhooks), and the admin JSON API (the same re-enrollments; enrollment secrets; the
webhooks and their deliveries). The three kinds are managed
through one interface (services/admin.py), so each form route below is written once for all three."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from exposure_guard_server.deps import (
    ADMIN,
    ADMIN_FORM,
    ADMIN_WRITE,
    FORM_MAX_BODY,
    OPERATOR,
    OPERATOR_FORM,
    OPERATOR_WRITE,
    VIEWER,
    get_server,
    json_body,
)
from exposure_guard_server.errors import ApiError
from exposure_guard_server.inputs import parse_int
from exposure_guard_server.pages import render
from exposure_guard_server.reportlogic import TRANSITION_KINDS
from exposure_guard_server.roles import ROLES, Caller
from exposure_guard_server.server import Server
from exposure_guard_server.services.audit import record
from exposure_guard_server.services.server_settings import KNOWN as KNOWN_SETTINGS
from exposure_guard_server.webhook_formats import FORMATS

ALERT_KINDS = [k for k in TRANSITION_KINDS if k not in ("enrolled", "first_report")]

router = APIRouter()
Sent = Tuple[Caller, Dict[str, str]]


@dataclass(frozen=True)
class FormKind:
    path: str  # /admin/<path> creates one, /admin/<path>/<id>/<verb> removes one
    attribute: str  # which of Admin's managed kinds
    verb: str
    shows: str  # the admin page's field for the new secret (shown once)
    message: str
    role: str  # who may create and remove them
    audited: bool = True  # False: the service records it itself (it knows the group)


FORM_KINDS = (
    FormKind("groups", "groups", "delete", "new_group", "Group created.", "admin"),
    FormKind("enroll-secrets", "enroll_secrets", "revoke", "new_secret", "Enrollment secret created.", "operator",
             audited=False),
    FormKind("api-tokens", "api_tokens", "revoke", "new_token", "API token created.", "admin"),
    FormKind("webhooks", "webhooks", "delete", "new_webhook_secret", "Webhook added.", "admin"),
)
FORMS = {"admin": ADMIN_FORM, "operator": OPERATOR_FORM}


def admin_page(request: Request, server: Server, caller: Caller, extra: Dict[str, Any]) -> Response:
    """Operators see the re-enrollments and enrollment secrets of their groups; admins everything."""
    admin = server.admin
    is_admin = caller.allows("admin")
    context = {"reenrollments": server.enrollment.pending(caller.groups), "secrets": admin.enroll_secrets.list(caller.groups),
               "groups": admin.groups.list(caller.groups), "is_admin": is_admin, "roles": ROLES,
               "users": admin.users() if is_admin else [], "tokens": admin.api_tokens.list() if is_admin else [],
               "webhooks": admin.webhooks.list() if is_admin else [],
               "deliveries": admin.webhooks.deliveries(50) if is_admin else [],
               "settings": server.settings.all() if is_admin else {}, "formats": FORMATS,
               "emails": server.mailer.log(50) if is_admin else [], "alert_kinds": ALERT_KINDS,
               "kinds": TRANSITION_KINDS, "new_group": "", "new_secret": "", "new_token": "", "new_webhook_secret": "",
               "message": ""}
    context.update(extra)
    return render(request, "admin.html", context)


@router.get("/admin")
def admin(request: Request, caller: Caller = Depends(OPERATOR), server: Server = Depends(get_server)) -> Response:
    return admin_page(request, server, caller, {})


def _audit(server: Server, caller: Caller, action: str, target: str, **detail: Any) -> None:
    with server.engine.begin() as conn:
        record(conn, caller.name, action, target, **detail)


def _create_route(kind: FormKind) -> Callable[..., Response]:
    def create(request: Request, sent: Sent = Depends(FORMS[kind.role]), server: Server = Depends(get_server)) -> Response:
        caller, fields = sent
        managed = getattr(server.admin, kind.attribute)
        values = {name: fields.get(name, "") for name in managed.fields}
        if kind.audited:
            new_id, secret = managed.create(**values)
            _audit(server, caller, kind.attribute.rstrip("s").replace("_", "-") + ".create", "%s:%s" % (
                kind.path, new_id), name=values.get("name", ""), role=values.get("role", ""))
        else:
            new_id, secret = managed.create(caller=caller, **values)
        return admin_page(request, server, caller, {kind.shows: secret, "message": kind.message})

    return create


def _remove_route(kind: FormKind) -> Callable[..., Response]:
    def remove(item_id: str, sent: Sent = Depends(FORMS[kind.role]), server: Server = Depends(get_server)) -> Response:
        caller, _fields = sent
        ident = parse_int(item_id, "id", minimum=1)
        managed = getattr(server.admin, kind.attribute)
        if kind.audited:
            if managed.remove(ident):
                _audit(server, caller, kind.attribute.rstrip("s").replace("_", "-") + "." + kind.verb,
                       "%s:%d" % (kind.path, ident))
        elif not managed.remove(ident, caller=caller):
            raise ApiError(404, "no active %s %d" % (managed.what, ident))
        return RedirectResponse("/admin", status_code=303)

    return remove


for _kind in FORM_KINDS:
    router.add_api_route("/admin/" + _kind.path, _create_route(_kind), methods=["POST"])
    router.add_api_route("/admin/%s/{item_id}/%s" % (_kind.path, _kind.verb), _remove_route(_kind), methods=["POST"])


@router.post("/admin/webhooks/{item_id}/test")
def test_webhook(item_id: str, sent: Sent = Depends(ADMIN_FORM), server: Server = Depends(get_server)) -> Response:
    """Queue a test event for this webhook; the delivery log shows how it went."""
    delivery = server.admin.webhooks.send_test(parse_int(item_id, "id", minimum=1), server.settings.all()["public_url"])
    _audit(server, sent[0], "webhook.test", "webhooks:%s" % item_id, delivery=delivery)
    return RedirectResponse("/admin#deliveries", status_code=303)


@router.post("/admin/settings")
def change_settings(sent: Sent = Depends(ADMIN_FORM), server: Server = Depends(get_server)) -> Response:
    """The settings form: each field given is set (the SMTP password only when a new one is typed)."""
    caller, fields = sent
    for name in KNOWN_SETTINGS:
        if name in fields and not (name in ("smtp_password", "prober_token") and not fields[name]):
            server.settings.set(name, fields[name], caller)
    return RedirectResponse("/admin#settings", status_code=303)


@router.post("/admin/users/{username}/alerts")
def user_alerts(username: str, sent: Sent = Depends(ADMIN_FORM), server: Server = Depends(get_server)) -> Response:
    caller, fields = sent
    server.admin.set_alerts(username, fields.get("email", ""), fields.get("alert_kinds", ""),
                            fields.get("digest", "") in ("on", "true", "1"))
    _audit(server, caller, "user.alerts", "user:" + username[:64], email=fields.get("email", ""),
           kinds=fields.get("alert_kinds", ""), digest=fields.get("digest", ""))
    return RedirectResponse("/admin#users", status_code=303)


@router.get("/api/v1/settings", dependencies=[Depends(ADMIN)])
def read_settings(server: Server = Depends(get_server)) -> Response:
    return JSONResponse(server.settings.all())


@router.put("/api/v1/settings")
def put_settings(caller: Caller = Depends(ADMIN_WRITE), body: Any = Depends(json_body(FORM_MAX_BODY, "body must be JSON")),
                 server: Server = Depends(get_server)) -> Response:
    """Body ``{"public_url": "https://…"}`` ("" clears it)."""
    if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
        raise ApiError(400, "body must be an object of setting names and text values")
    for name, value in body.items():
        server.settings.set(name, value, caller)
    return JSONResponse(server.settings.all())


# -- users (admins only) -------------------------------------------------------------------------------------

@router.post("/admin/users")
def set_user(request: Request, sent: Sent = Depends(ADMIN_FORM), server: Server = Depends(get_server)) -> Response:
    """Create a user, or change one's password, role and groups (no group chosen: every group)."""
    caller, fields = sent
    username = fields.get("username", "")
    groups = [g for g in fields.get("groups", "").split(",") if g]
    created = server.admin.set_password(username, fields.get("password", ""), fields.get("role") or "viewer", groups)
    _audit(server, caller, "user.create" if created else "user.change", "user:" + username.strip()[:64],
           role=fields.get("role") or "viewer", groups=groups)
    return admin_page(request, server, caller, {"message": "User %s %s." % (username.strip(),
                                                                           "created" if created else "changed")})


@router.post("/admin/users/{username}/delete")
def remove_user(username: str, sent: Sent = Depends(ADMIN_FORM), server: Server = Depends(get_server)) -> Response:
    caller, _fields = sent
    if caller.kind == "session" and username == caller.name:
        raise ApiError(409, "you cannot remove yourself; log in as another admin")
    if not server.admin.remove_user(username):
        raise ApiError(404, "no user %r" % username[:64])
    _audit(server, caller, "user.remove", "user:" + username[:64])
    return RedirectResponse("/admin", status_code=303)


# -- re-enrollments waiting for an operator (services/enroll.py) ---------------------------------------------

def _decide(server: Server, action: str, request_id: str, caller: Caller) -> str:
    """Approve or reject a pending re-enrollment (of a box the caller may see); returns the device id."""
    if action not in ("approve", "reject"):
        raise ApiError(404, "unknown action %r" % action[:20])
    ident = parse_int(request_id, "re-enrollment id", minimum=1)
    if action == "approve":
        device_id = server.enrollment.approve(ident, caller.name, allowed=caller.groups)
    else:
        device_id = server.enrollment.reject(ident, allowed=caller.groups)
    _audit(server, caller, "re-enroll." + action, "device:" + device_id, request_id=ident)
    return device_id


@router.post("/admin/re-enroll/{request_id}/{action}")
def decide_reenrollment(request_id: str, action: str, sent: Sent = Depends(OPERATOR_FORM),
                        server: Server = Depends(get_server)) -> Response:
    _decide(server, action, request_id, sent[0])
    return RedirectResponse("/admin", status_code=303)


@router.get("/api/v1/re-enroll")
def list_reenrollments(caller: Caller = Depends(VIEWER), server: Server = Depends(get_server)) -> Response:
    return JSONResponse({"pending": server.enrollment.pending(caller.groups)})


@router.post("/api/v1/re-enroll/{request_id}/{action}")
def decide_reenrollment_api(request_id: str, action: str, caller: Caller = Depends(OPERATOR_WRITE),
                            server: Server = Depends(get_server)) -> Response:
    device_id = _decide(server, action, request_id, caller)
    return JSONResponse({"device_id": device_id, action + "d": True})


# -- JSON API ------------------------------------------------------------------------------------------

@router.get("/api/v1/enroll-secrets")
def list_enroll_secrets(caller: Caller = Depends(OPERATOR), server: Server = Depends(get_server)) -> Response:
    return JSONResponse({"enroll_secrets": server.admin.enroll_secrets.list(caller.groups)})


@router.post("/api/v1/enroll-secrets")
def create_enroll_secret(caller: Caller = Depends(OPERATOR_WRITE),
                         body: Any = Depends(json_body(FORM_MAX_BODY, "body must be JSON", empty_is_object=True)),
                         server: Server = Depends(get_server)) -> Response:
    fields = body if isinstance(body, dict) else {}
    group = fields.get("group") or ""
    secret_id, secret = server.admin.enroll_secrets.create(str(fields.get("name", "")), str(group), caller=caller)
    return JSONResponse({"id": secret_id, "secret": secret, "group": str(group)}, status_code=201)


@router.delete("/api/v1/enroll-secrets/{secret_id}")
def revoke_enroll_secret(secret_id: str, caller: Caller = Depends(OPERATOR_WRITE),
                         server: Server = Depends(get_server)) -> Response:
    row_id = parse_int(secret_id, "id", minimum=1)
    if not server.admin.enroll_secrets.remove(row_id, caller=caller):
        raise ApiError(404, "no active enrollment secret %d" % row_id)
    return JSONResponse({"revoked": row_id})


@router.get("/api/v1/webhooks", dependencies=[Depends(ADMIN)])
def list_webhooks(server: Server = Depends(get_server)) -> Response:
    return JSONResponse({"webhooks": server.admin.webhooks.list(), "deliveries": server.admin.webhooks.deliveries(100)})


@router.get("/api/v1/groups")
def list_groups(caller: Caller = Depends(VIEWER), server: Server = Depends(get_server)) -> Response:
    """The caller's groups with their devices by state, riskiest first (the Groups page)."""
    return JSONResponse({"groups": server.reader.groups(allowed=caller.groups)})


@router.post("/api/v1/groups")
def create_group(caller: Caller = Depends(ADMIN_WRITE), body: Any = Depends(json_body(FORM_MAX_BODY, "body must be JSON")),
                 server: Server = Depends(get_server)) -> Response:
    name = body.get("name", "") if isinstance(body, dict) else ""
    group_id, name = server.admin.groups.create(str(name))
    _audit(server, caller, "group.create", "groups:%d" % group_id, name=name)
    return JSONResponse({"id": group_id, "name": name}, status_code=201)


@router.delete("/api/v1/groups/{ident}")
def remove_group(ident: str, caller: Caller = Depends(ADMIN_WRITE), server: Server = Depends(get_server)) -> Response:
    if not server.admin.groups.remove(ident):
        raise ApiError(404, "no group %r" % ident[:100])
    _audit(server, caller, "group.delete", "group:" + ident[:100])
    return JSONResponse({"removed": ident})


@router.put("/api/v1/devices/{device_id:path}/group")
def move_device(device_id: str, caller: Caller = Depends(OPERATOR_WRITE),
                body: Any = Depends(json_body(FORM_MAX_BODY, "body must be JSON")),
                server: Server = Depends(get_server)) -> Response:
    """Body ``{"group": NAME}`` (null or "" for no group)."""
    group = body.get("group") if isinstance(body, dict) else None
    if group is not None and not isinstance(group, str):
        raise ApiError(400, "group must be a group's name, or null for none")
    return JSONResponse({"device_id": device_id, "group": server.admin.groups.move(device_id, group or "", caller)})


@router.patch("/api/v1/devices/{device_id:path}")
def update_device(device_id: str, caller: Caller = Depends(OPERATOR_WRITE),
                  body: Any = Depends(json_body(FORM_MAX_BODY, "body must be JSON")),
                  server: Server = Depends(get_server)) -> Response:
    """Body with any of ``note`` (text), ``tags`` (a list), ``retired`` (true/false)."""
    if not isinstance(body, dict) or not set(body) <= {"note", "tags", "retired"}:
        raise ApiError(400, "body must be an object with note, tags and/or retired")
    retired = body.get("retired")
    if retired is not None and not isinstance(retired, bool):
        raise ApiError(400, "retired must be true or false")
    return JSONResponse(server.lifecycle.update(device_id, caller, note=body.get("note"), tags=body.get("tags"),
                                                retired=retired))


@router.delete("/api/v1/devices/{device_id:path}")
def delete_device(device_id: str, caller: Caller = Depends(ADMIN_WRITE), server: Server = Depends(get_server)) -> Response:
    """The box and its whole history; it must enroll again to report."""
    return JSONResponse({"deleted": device_id, "reports_deleted": server.lifecycle.delete(device_id, caller)})


@router.get("/api/v1/acceptances")
def list_acceptances(request: Request, caller: Caller = Depends(VIEWER), server: Server = Depends(get_server)) -> Response:
    """Accepted risks the caller may see: active ones, or every one with ``all=true``; ``device_id`` for one box."""
    qp = request.query_params
    return JSONResponse({"acceptances": server.acceptances.list(
        caller, device_id=qp.get("device_id", "")[:128], active=qp.get("all", "") not in ("1", "true"))})


@router.post("/api/v1/acceptances")
def create_acceptance(caller: Caller = Depends(OPERATOR_WRITE),
                      body: Any = Depends(json_body(FORM_MAX_BODY, "body must be JSON")),
                      server: Server = Depends(get_server)) -> Response:
    """Body ``{"check_id", "reason", "until": "YYYY-MM-DD", "device_id" | "group"}``."""
    if not isinstance(body, dict) or not all(isinstance(v, str) for v in body.values()):
        raise ApiError(400, "body must be an object of text values: check_id, reason, until, device_id or group")
    new_id = server.acceptances.accept(body.get("check_id", ""), body.get("reason", ""), body.get("until", ""), caller,
                                       device_id=body.get("device_id", ""), group=body.get("group", ""))
    return JSONResponse({"id": new_id}, status_code=201)


@router.delete("/api/v1/acceptances/{acceptance_id}")
def revoke_acceptance(acceptance_id: str, caller: Caller = Depends(OPERATOR_WRITE),
                      server: Server = Depends(get_server)) -> Response:
    server.acceptances.revoke(parse_int(acceptance_id, "id", minimum=1), caller)
    return JSONResponse({"revoked": int(acceptance_id)})


@router.get("/api/v1/audit")
def audit_api(request: Request, caller: Caller = Depends(OPERATOR), server: Server = Depends(get_server)) -> Response:
    """Who did what, newest first (a caller limited to groups: about its groups only)."""
    qp = request.query_params
    before = parse_int(qp.get("before"), "before", minimum=1) if qp.get("before") else None
    limit = parse_int(qp.get("limit"), "limit", default=100, minimum=1, maximum=500)
    return JSONResponse(server.audit.list(caller, target=qp.get("target", "")[:255], before=before, limit=limit))


@router.get("/audit")
def audit_page(request: Request, caller: Caller = Depends(OPERATOR), server: Server = Depends(get_server)) -> Response:
    before = parse_int(request.query_params.get("before"), "before", minimum=1) if request.query_params.get("before") \
        else None
    return render(request, "audit.html", {"log": server.audit.list(caller, before=before, limit=100)})
