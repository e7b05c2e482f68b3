"""Real server processes when the active model cannot be loaded or the database is away: a fallback serves,
/readyz says degraded with the reason (200, so the replica stays in rotation), the management API works, and
once the cause is mended the retry picks the active model up and degraded clears. And a PostgreSQL that stops
answering (SIGSTOP) freezes neither /healthz nor inference."""
from __future__ import annotations

import contextlib
import os
import signal
import threading
from pathlib import Path

import httpx
import sqlalchemy as sa
import torch

from app import storage
from app.registry import info_of
from app.storage.schema import models
from model import checkpoint
from model.config import ModelConfig
from model.network import Seq2Seq
from tests.conftest import WEIGHTS, poll
from tests.postgres import postgres_server  # noqa: F401  (fixture)

FAST_RETRY = {"SEQ2SEQ_ACTIVE_RETRY_S": "0.2", "SEQ2SEQ_ACTIVE_RETRY_MAX_S": "1", "SEQ2SEQ_DATABASE_RETRY_S": "0.5"}
GOOD = (WEIGHTS / "default.pt").read_bytes()


def set_bytes(url: str, model_id: str, blob: bytes) -> None:
    opened = storage.open_storage(url, run_migrations=False)
    with opened.engine.begin() as conn:
        conn.execute(sa.update(models).where(models.c.id == model_id).values(checkpoint=blob))
    opened.close()


def readiness(srv) -> dict:
    r = httpx.get(f"{srv.url}/readyz", timeout=10)
    assert r.status_code == 200, r.text  # degraded or ready, never out of rotation while a model is served
    return r.json()


def served(srv) -> str:
    return httpx.post(f"{srv.url}/predict", json={"start": 7}, timeout=10).json()["model"]


def test_a_replica_started_while_the_active_model_cannot_load_serves_the_default_then_picks_it_up(
        make_server, weights_copy, tmp_path):
    url = f"sqlite:///{tmp_path / 'db' / 'seq2seq.db'}"
    (tmp_path / "db").mkdir()
    opened = storage.open_storage(url)
    ckpt = checkpoint.load(WEIGHTS / "default.pt")
    opened.models.register_trained("trained", GOOD, storage.sha256_of(GOOD), ckpt.created_at, info_of(ckpt))
    opened.models.activate("trained")
    opened.close()
    set_bytes(url, "trained", GOOD[:-100])  # the active model's stored bytes are corrupt

    srv = make_server(weights_dir=weights_copy, SEQ2SEQ_DATABASE_URL=url, **FAST_RETRY).start()
    body = poll(lambda: (r := readiness(srv))["status"] == "degraded" and r, 30)
    assert body["model"] == "default" and body["active_model"] == "trained"
    assert "'trained'" in body["reason"] and "SHA-256" in body["reason"] and "shipped 'default'" in body["reason"]
    assert served(srv) == "default"
    with srv.client() as c:  # the management API that can mend it answers
        assert [m["id"] for m in c.get("/models").json() if m["active"]] == ["trained"]

    set_bytes(url, "trained", GOOD)  # mended in place: the retry finds it without an activation
    poll(lambda: readiness(srv) == {"status": "ready", "model": "trained", "active_model": "trained",
                                    "device": "cpu", "database": "ok"}, 15)
    assert served(srv) == "trained"

    with srv.client() as c:
        assert c.post("/models/alt/activate").status_code == 200
    assert readiness(srv)["status"] == "ready" and served(srv) == "alt"


def test_a_shipped_file_that_differs_from_the_registry_is_not_served_until_it_is_restored(make_server, weights_copy):
    srv = make_server(weights_dir=weights_copy, **FAST_RETRY).start()
    srv.wait_ready()
    original = (weights_copy / "alt.pt").read_bytes(), (weights_copy / "alt.pt.sha256").read_text()
    torch.manual_seed(3)  # another valid checkpoint with a matching manifest: only the row's hash can tell
    checkpoint.save(weights_copy / "alt.pt", Seq2Seq(ModelConfig()), {})
    with srv.client() as c:
        r = c.post("/models/alt/activate")
    assert r.status_code == 503 and "do not match the SHA-256 the registry recorded" in r.json()["message"]

    opened = storage.open_storage(storage.default_url(srv.data_dir), run_migrations=False)
    opened.models.activate("alt")  # as a replica whose file matches would
    opened.close()
    body = poll(lambda: (r := readiness(srv))["status"] == "degraded" and r, 10)
    assert body["model"] == "default" and body["active_model"] == "alt" and "last model that loaded" in body["reason"]
    assert served(srv) == "default"

    (weights_copy / "alt.pt").write_bytes(original[0])
    (weights_copy / "alt.pt.sha256").write_text(original[1])
    poll(lambda: readiness(srv)["status"] == "ready", 15)
    assert served(srv) == "alt" and "reason" not in readiness(srv)


def test_a_server_starts_without_its_database_on_the_shipped_weights_and_joins_it_later(
        make_server, postgres_server, weights_copy):  # noqa: F811
    name = "late_database"
    postgres_server.drop_database(name)
    url = postgres_server.url(name)  # does not exist yet: every connection is refused
    srv = make_server(weights_dir=weights_copy, SEQ2SEQ_DATABASE_URL=url, SEQ2SEQ_JOB_WORKERS="0", **FAST_RETRY).start()
    body = poll(lambda: (r := readiness(srv))["status"] == "degraded" and r, 30)
    assert body["model"] == "default" and "database cannot be reached" in body["reason"]
    assert "active_model" not in body and body["database"].startswith("unavailable")
    assert served(srv) == "default"
    with srv.client() as c:
        assert c.get("/models").status_code == 503  # no registry to read yet: said, not hung

    postgres_server.create_database(name)
    try:
        poll(lambda: readiness(srv).get("status") == "ready", 30)
        with srv.client() as c:
            assert c.post("/models/alt/activate").status_code == 200
            assert c.get("/models/active").json()["id"] == "alt"
        assert served(srv) == "alt"
    finally:
        srv.stop()
        postgres_server.drop_database(name)



def postgres_pids(server) -> list[int]:
    """The postmaster (from postmaster.pid) and every process it started: backends and auxiliary processes."""
    postmaster = int((server.data / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == postmaster:
                children.append(int(stat.parent.name))
    return [postmaster, *children]


def test_a_paused_postgresql_freezes_neither_health_nor_inference_and_management_resumes(
        make_server, postgres_server, weights_copy):  # noqa: F811
    url = postgres_server.create_database()
    srv = make_server(weights_dir=weights_copy, SEQ2SEQ_DATABASE_URL=url).start()
    srv.wait_ready()
    with srv.client() as c:
        assert c.get("/models/active").json()["id"] == "default"
    quick = httpx.Client(base_url=srv.url, timeout=2)  # "not frozen": each answer within 2 s, or the test fails
    pids = postgres_pids(postgres_server)
    stuck: list[httpx.Response | Exception] = []

    def management(path: str) -> None:
        try:
            stuck.append(httpx.get(f"{srv.url}{path}", timeout=120, headers={"Authorization": f"Bearer {srv.key}"}))
        except Exception as exc:  # reported by the assertion below
            stuck.append(exc)

    callers = [threading.Thread(target=management, args=(p,)) for p in ["/models/active", "/models", "/info", "/jobs"] * 4]
    try:
        for pid in pids:
            os.kill(pid, signal.SIGSTOP)
        for t in callers:  # calls that wait for the database (models, jobs), in flight during everything below
            t.start()
        for start in range(10):
            assert quick.get("/healthz").json() == {"status": "ok"}
            r = quick.post("/predict", json={"prefix": [start, 2]})
            assert r.status_code == 200 and r.json()["model"] == "default"
            r = quick.get("/topk", params={"start": start, "k": 5})
            assert r.status_code == 200 and len(r.json()["suggestions"]) == 5
        # /readyz answers too (its database probe gives up after 2 s; a result under 1 s old is reused)
        poll(lambda: (r := httpx.get(f"{srv.url}/readyz", timeout=5)).status_code == 200
             and r.json()["database"].startswith("unavailable"), 15, message="/readyz to see the paused database")
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
    for t in callers:
        t.join(60)
    assert [getattr(r, "status_code", r) for r in stuck] == [200] * len(callers)
    with srv.client() as c:
        assert c.post("/models/alt/activate").status_code == 200
        assert c.get("/models/active").json()["id"] == "alt"
    assert quick.post("/predict", json={"start": 7}).json()["model"] == "alt"
    srv.stop()
    postgres_server.drop_database(url.rsplit("/", 1)[1])
