"""What agents call (besides the check-in, served by asgi.py): enrollment; and the health check."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from exposure_guard import __version__
from exposure_guard_server.deps import get_server, json_body
from exposure_guard_server.server import Server

ENROLL_MAX_BODY = 64 * 1024

router = APIRouter()
enroll_body = json_body(ENROLL_MAX_BODY, "body must be JSON: {\"enroll_secret\": ..., \"device\": {...}}")


@router.post("/api/v1/enroll")
def enroll(request: Request, body: Any = Depends(enroll_body), server: Server = Depends(get_server)) -> Response:
    # 201 for every enrollment: a new device, a proven re-enrollment and one waiting for approval alike.
    result = server.enrollment.enroll(body, client=request.client.host if request.client else "")
    handoff = server.settings.prober_handoff()
    if handoff:  # every enrolled NAS gets the callback check without editing its settings
        result["prober"] = handoff
    return JSONResponse(result, status_code=201)


@router.get("/healthz")
def healthz(server: Server = Depends(get_server)) -> Response:
    try:
        with server.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return JSONResponse({"status": "error", "database": str(exc)[:200]}, status_code=503)
    return JSONResponse({"status": "ok", "version": __version__})
