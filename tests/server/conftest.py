"""Fixtures for the server tests: every API/auth test runs on SQLite and on a real PostgreSQL.

PostgreSQL comes from EXPOSURE_GUARD_TEST_PG_URL (set by .ci/start-postgres.sh); each test gets its own
database cloned from a migrated template, dropped afterwards. Helpers are in server_helpers.py."""

from __future__ import annotations

import os
from typing import Any, Iterator, Optional

import pytest
from tests.support.server import ADMIN_PASSWORD, ADMIN_USER, PG_ENV, PG_SKIP, Admin, Api, PgCluster, make_engine, migrate


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Optional[PgCluster]]:
    url = os.environ.get(PG_ENV)
    if not url:
        yield None
        return
    cluster = PgCluster(url)
    try:
        yield cluster
    finally:
        cluster.close()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: Any, tmp_path: Any, pg_cluster: Optional[PgCluster]) -> Iterator[str]:
    """A freshly migrated, empty database URL: SQLite file or PostgreSQL database."""
    if request.param == "sqlite":
        url = "sqlite:///%s" % (tmp_path / "server.db")
        engine = make_engine(url)
        migrate(engine)
        engine.dispose()
        yield url
        return
    if pg_cluster is None:
        pytest.skip(PG_SKIP)
    name = pg_cluster.create()
    try:
        yield pg_cluster.url_for(name)
    finally:
        pg_cluster.drop(name)


@pytest.fixture
def engine(db_url: str) -> Iterator[Any]:
    eng = make_engine(db_url)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def admin(engine: Any) -> Admin:
    adm = Admin(engine)
    adm.set_password(ADMIN_USER, ADMIN_PASSWORD)
    return adm


@pytest.fixture
def api(db_url: str, admin: Admin) -> Iterator[Api]:
    from fastapi.testclient import TestClient

    from exposure_guard_server.app import create_app
    from exposure_guard_server.config import ServerConfig

    _id, secret = admin.enroll_secrets.create("tests")
    app = create_app(ServerConfig(db_url=db_url, background=False, max_body=256 * 1024))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield Api(client, admin, secret, app.state.server)

