"""Every storage test runs on both engines: `db_url` is a fresh, empty SQLite file or PostgreSQL database;
`storage_url` a fresh one already migrated, and `storage` the stores opened on it."""
from __future__ import annotations

import hashlib

import pytest

from app.storage import Storage, migrate, open_storage
from tests.postgres import postgres_server, postgres_url  # noqa: F401  (fixtures)
from tests.storage.helpers import Ckpt

ENGINES = ["sqlite", "postgresql"]


@pytest.fixture(params=ENGINES)
def db_url(request, tmp_path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'data' / 'seq2seq.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture(params=ENGINES)
def storage_url(request, tmp_path) -> str:
    """A fresh database already migrated (for PostgreSQL: a copy of one migrated once per session)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'data' / 'seq2seq.db'}"
        migrate(url)
        yield url
        return
    server = request.getfixturevalue("postgres_server")
    template = request.getfixturevalue("migrated_postgres_template")
    url = server.create_database(template=template)
    yield url
    server.drop_database(url.rsplit("/", 1)[1])


@pytest.fixture(scope="session")
def migrated_postgres_template(request) -> str:
    url = request.getfixturevalue("postgres_server").create_database("storage_template")
    migrate(url)  # on its own engine, disposed afterwards: a template must have no connections
    return "storage_template"


@pytest.fixture
def storage(storage_url) -> Storage:
    opened = open_storage(storage_url, run_migrations=False)
    yield opened
    opened.close()


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory) -> list[Ckpt]:
    """Three small, real, distinct checkpoints written by model.checkpoint (what a training job produces)."""
    import torch

    from model import checkpoint
    from model.config import ModelConfig
    from model.network import Seq2Seq

    out = []
    folder = tmp_path_factory.mktemp("checkpoints")
    for i in range(3):
        torch.manual_seed(i)
        net = Seq2Seq(ModelConfig(embedding_dim=4, hidden_dim=4 + i, attention=bool(i % 2)))
        path = folder / f"c{i}.pt"
        digest = checkpoint.save(path, net, {"accuracy": 0.5 + i / 10}, name=f"c{i}")
        blob = path.read_bytes()
        assert hashlib.sha256(blob).hexdigest() == digest
        out.append(Ckpt(blob, digest, f"2026-01-0{i + 1}T00:00:00+00:00", {"name": f"c{i}", "n": i}))
    return out
