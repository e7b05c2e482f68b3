from __future__ import annotations

import contextlib

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.settings import Settings
from tests.conftest import TEST_KEY
from tests.postgres import postgres_server  # noqa: F401  (fixture)


@pytest.fixture
def make_client(tmp_path):
    clients = []

    def make(**overrides) -> TestClient:
        settings = Settings(**{"data_dir": tmp_path / f"data{len(clients)}", "device": "cpu", "api_key": TEST_KEY,
                               **overrides})
        headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
        client = TestClient(create_app(settings), headers=headers)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        with contextlib.suppress(RuntimeError):  # a test closed it already
            c.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> str:
    """A database several real servers share: a SQLite file, or a fresh database on the test PostgreSQL."""
    if request.param == "sqlite":
        (tmp_path / "shared").mkdir(exist_ok=True)
        yield f"sqlite:///{tmp_path / 'shared' / 'seq2seq.db'}"
        return
    server = request.getfixturevalue("postgres_server")
    url = server.create_database()
    yield url
    server.drop_database(url.rsplit("/", 1)[1])
