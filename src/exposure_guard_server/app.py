"""The application: ``create_app`` builds the FastAPI app (routes, error pages, static files) around one
``Server`` and wraps it in the ASGI entry point that serves check-ins itself (asgi.py)."""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import AsyncIterator
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from starlette.staticfiles import StaticFiles

from exposure_guard import __version__
from exposure_guard_server.asgi import ExposureGuardApp, SecurityHeaders
from exposure_guard_server.config import ServerConfig
from exposure_guard_server.errors import ApiError
from exposure_guard_server.pages import render
from exposure_guard_server.routes import admin, agent, dashboard, read_api, repository
from exposure_guard_server.server import Server

HERE = Path(__file__).parent


def _is_api(request: Request) -> bool:
    path = request.url.path
    return path.startswith("/api/") or path in ("/metrics", "/healthz")


async def api_error(request: Request, exc: Exception) -> Response:
    """JSON for the API; for pages a redirect to the login form (401) or an error page."""
    assert isinstance(exc, ApiError)
    if _is_api(request):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)
    if exc.status == 401:
        return RedirectResponse("/login?next=" + quote(request.url.path, safe="/"), status_code=303)
    return render(request, "error.html", {"status": exc.status, "detail": exc.detail}, status=exc.status)


def create_app(config: ServerConfig) -> ExposureGuardApp:
    server = Server(config)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        server.start()
        try:
            yield
        finally:
            entry.close()  # the check-ins queued for the writer are stored before the database closes
            server.close()

    app = FastAPI(title="ExposureGuard server", version=__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None, openapi_url=None)
    app.state.server = server
    app.add_middleware(SecurityHeaders)
    app.add_exception_handler(ApiError, api_error)
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    for module in (agent, read_api, dashboard, admin, repository):
        app.include_router(module.router)
    entry = ExposureGuardApp(app, server)
    return entry


def app_from_env() -> ExposureGuardApp:
    """uvicorn factory for ``serve --workers N`` (each worker process builds its own app)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(ServerConfig.from_env())
