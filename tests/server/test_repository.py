"""The fleet server as an App Center repository: the feed from `serve --qpkg-dir` with its locations pointing
at this server, the package and icon downloadable, nothing else of the folder (or of the disk) reachable."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any, Iterator

import pytest
from tests.support.qpkg_build import builder

build_qpkg = builder()


@pytest.fixture
def repo_client(tmp_path: Path) -> Iterator[Any]:
    from fastapi.testclient import TestClient

    from exposure_guard_server.app import create_app
    from exposure_guard_server.config import ServerConfig
    from exposure_guard_server.db import make_engine

    folder = tmp_path / "dist"
    folder.mkdir()
    cfg = (Path(build_qpkg.__file__).resolve().parents[1] / "qpkg/qpkg.cfg").read_bytes()
    (folder / "ExposureGuard.xml").write_bytes(build_qpkg.make_feed("1.2.3", "ExposureGuard_1.2.3.qpkg",
                                                                     "https://build.invalid/x/", cfg, 1700000000))
    (folder / "ExposureGuard_1.2.3.qpkg").write_bytes(b"package bytes")
    (folder / "ExposureGuard_80.gif").write_bytes(b"\x89PNG icon")
    (folder / "secret.txt").write_text("not for App Center")
    (folder / "ExposureGuard_link.qpkg").symlink_to("/etc/hostname")
    db_url = "sqlite:///%s" % (tmp_path / "server.db")
    make_engine(db_url).dispose()
    from exposure_guard_server.cli import main as server_cli

    assert server_cli(["init", "--db", db_url]) == 0
    app = create_app(ServerConfig(db_url=db_url, background=False, qpkg_dir=str(folder)))
    with TestClient(app, base_url="http://fleet.example:8443") as client:
        yield client


def test_the_feed_points_at_this_server(repo_client):
    answer = repo_client.get("/qpkg/ExposureGuard.xml")
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(answer.content)
    item = root.find("item")
    assert item.findtext("internalName") == "ExposureGuard" and item.findtext("version") == "1.2.3"
    locations = {p.findtext("location") for p in item.findall("platform")}
    assert locations == {"http://fleet.example:8443/qpkg/ExposureGuard_1.2.3.qpkg"}
    assert item.findtext("icon80") == "http://fleet.example:8443/qpkg/ExposureGuard_80.gif"


def test_the_package_and_icon_download_and_nothing_else(repo_client):
    assert repo_client.get("/qpkg/ExposureGuard_1.2.3.qpkg").content == b"package bytes"
    assert repo_client.get("/qpkg/ExposureGuard_80.gif").content == b"\x89PNG icon"
    for name in ("secret.txt", "ExposureGuard_link.qpkg", "..%2Fserver.db", "ExposureGuard_9.qpkg", "%2Fetc%2Fpasswd"):
        assert repo_client.get("/qpkg/" + name).status_code == 404, name


def test_without_a_repository_folder_there_is_none(tmp_path):
    from fastapi.testclient import TestClient

    from exposure_guard_server.app import create_app
    from exposure_guard_server.cli import main as server_cli
    from exposure_guard_server.config import ServerConfig

    db_url = "sqlite:///%s" % (tmp_path / "server.db")
    assert server_cli(["init", "--db", db_url]) == 0
    with TestClient(create_app(ServerConfig(db_url=db_url, background=False))) as client:
        assert client.get("/qpkg/ExposureGuard.xml").status_code == 404
