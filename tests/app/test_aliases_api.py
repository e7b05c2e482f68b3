"""Aliases over HTTP and pinning (issue 16, items 1 and 2), in one process on SQLite (two real instances on both
engines: test_multi_instance.py): production is the active model both ways, `previous` follows it, moves are
compare-and-swap, every move is in the history and `?at=` answers what an alias named then; `model` on the
inference routes takes an alias; and the refusals."""
from __future__ import annotations

from app import storage
from app.registry import info_of
from app.storage.clock import db_now, iso
from model import checkpoint
from tests.conftest import WEIGHTS, poll

NO_KEY = {"Authorization": ""}


def database_time(c) -> str:
    with c.app.state.storage.engine.connect() as conn:
        return iso(db_now(conn))


def alias(c, name: str) -> dict:
    r = c.get(f"/aliases/{name}")
    assert r.status_code == 200, r.text
    return r.json()


def test_production_is_the_active_model_both_ways_and_previous_follows(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy)
    assert c.get("/aliases").json() == [{"name": "production", "model": "default", "generation": 0, "public": True,
                                         "updated_at": None, "rollout": None}]
    assert c.post("/models/alt/activate").status_code == 200  # the old way moves production
    production = alias(c, "production")
    assert (production["model"], production["generation"]) == ("alt", 1)
    assert alias(c, "previous")["model"] == "default"  # the unset pointer served the default: it is what to go back to
    moved = c.put("/aliases/production", json={"model": "default", "expected_generation": 1, "reason": "back"})
    assert moved.status_code == 200, moved.text  # the new way moves the active model
    assert moved.json()["model"] == "default" and moved.json()["generation"] == 2
    assert c.get("/models/active").json()["id"] == "default"
    assert c.post("/predict", json={"start": 7}).json()["model"] == "default"
    assert alias(c, "previous")["model"] == "alt"
    history = c.get("/aliases/production/history").json()
    assert [(h["generation"], h["model"], h["previous"], h["reason"], h["actor"]) for h in history] == [
        (2, "default", "alt", "back", "api"), (1, "alt", "default", None, "api"),
        (0, "default", None, "the service's default model, before any activation", "service")]
    assert c.get("/models/default").json()["aliases"] == ["production"]
    assert c.get("/models/alt").json()["aliases"] == ["previous"]
    assert c.put("/aliases/production", json={"model": "alt", "public": False}).status_code == 422


def test_moves_are_compare_and_swap_and_the_history_answers_at_a_time(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy)
    created = c.put("/aliases/champion", json={"model": "alt", "expected_generation": 0, "reason": "try it"})
    assert created.status_code == 200 and created.json()["generation"] == 1 and created.json()["public"] is False
    first = c.get("/aliases/champion/history").json()[0]["at"]
    poll(lambda: database_time(c) > first, 1.0, message="the next millisecond")  # the next move lands after `first`
    stale = c.put("/aliases/champion", json={"model": "default", "expected_generation": 0})
    assert stale.status_code == 409 and stale.json()["current_generation"] == 1
    assert "generation 1" in stale.json()["message"]
    assert c.put("/aliases/champion", json={"model": "default", "expected_generation": 1}).status_code == 200
    assert alias(c, "champion")["model"] == "default"
    assert c.get("/aliases/champion", params={"at": first}).json()["model"] == "alt"
    assert c.get("/aliases/champion/history", params={"at": first}).json()[0]["model"] == "alt"
    assert c.get("/aliases/champion", params={"at": "2000-01-01T00:00:00Z"}).status_code == 404
    assert c.get("/aliases/champion", params={"at": "yesterday"}).json()["fields"][0]["field"] == "at"
    history = c.get("/aliases/champion/history", params={"limit": 1}).json()
    assert [(h["model"], h["previous"], h["generation"]) for h in history] == [("default", "alt", 2)]
    assert c.get("/aliases/champion/history", params={"limit": 1001}).status_code == 422
    assert [a["name"] for a in c.get("/aliases").json()] == ["production", "champion"]
    assert c.get("/models/default").json()["aliases"] == ["production", "champion"]


def register_copy(c, model_id: str) -> None:
    """A trained model straight into the app's registry: the shipped checkpoint's bytes under a new id."""
    blob = (WEIGHTS / "default.pt").read_bytes()
    ckpt = checkpoint.load(WEIGHTS / "default.pt")
    c.app.state.storage.models.register_trained(model_id, blob, storage.sha256_of(blob), ckpt.created_at,
                                                info_of(ckpt))


def test_refusals(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy)
    register_copy(c, "trained")
    assert c.put("/aliases/champion", json={"model": "m-unknown"}).status_code == 404
    for bad in ("Champion", "x" * 33, "m-20260101-120000-a1b2c3", "a.b"):
        r = c.put(f"/aliases/{bad}", json={"model": "alt"})
        assert r.status_code == 422 and r.json()["fields"][0]["field"] == "name", (bad, r.text)
    taken = c.put("/aliases/alt", json={"model": "default"})  # a model's id
    assert taken.status_code == 409 and "model's id" in taken.json()["message"]
    assert c.put("/aliases/champion", json={"model": "alt", "extra": 1}).status_code == 422
    assert c.delete("/aliases/production").status_code == 409
    assert c.delete("/aliases/champion").status_code == 404
    assert c.put("/aliases/champion", json={"model": "trained"}).status_code == 200
    refused = c.delete("/models/trained")
    assert refused.status_code == 409 and "'champion'" in refused.json()["message"]
    assert c.delete("/aliases/champion", params={"expected_generation": 5}).status_code == 409
    assert c.delete("/aliases/champion", params={"expected_generation": 1}).status_code == 204
    assert c.get("/aliases/champion").status_code == 404
    assert c.get("/aliases/champion/history").json()[0]["model"] is None  # the deletion is recorded
    assert c.delete("/models/trained").status_code == 204  # once no alias names it
    for method, path in (("PUT", "/aliases/x"), ("DELETE", "/aliases/x")):
        assert c.request(method, path, json={"model": "alt"}, headers=NO_KEY).status_code == 401


def test_pinning_by_id_and_by_alias_and_who_may(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy)
    assert c.put("/aliases/champion", json={"model": "alt"}).status_code == 200
    assert c.put("/aliases/open", json={"model": "alt", "public": True}).status_code == 200
    answers = {
        None: ("default", "production"), "production": ("default", "production"), "default": ("default", None),
        "alt": ("alt", None), "champion": ("alt", "champion"), "open": ("alt", "open")}
    for name, (model, via) in answers.items():
        extra = {"model": name} if name else {}
        for r in (c.post("/predict", json={"start": 7, **extra}), c.get("/topk", params={"start": 7, **extra}),
                  c.post("/predict/batch", json={"prefixes": [[7]], **extra}),
                  c.post("/topk/batch", json={"prefixes": [[7]], **extra})):
            assert r.status_code == 200, (name, r.text)
            assert (r.json()["model"], r.json()["alias"]) == (model, via), name
    assert c.post("/predict", json={"start": 7, "model": "nope"}).status_code == 404  # never a silent fallback
    # Without the key: production, public aliases and the active model; not another alias or id
    for name, status in (("production", 200), ("open", 200), ("default", 200), ("champion", 403), ("alt", 403)):
        r = c.post("/predict", json={"start": 7, "model": name}, headers=NO_KEY)
        assert r.status_code == status, (name, r.text)
    assert c.put("/aliases/open", json={"model": "default", "public": False}).status_code == 200
    assert c.post("/predict", json={"start": 7, "model": "open"}, headers=NO_KEY).status_code == 403
    # a move is served at once by the process that made it
    assert c.put("/aliases/champion", json={"model": "default"}).status_code == 200
    assert c.get("/topk", params={"start": 7, "model": "champion"}).json()["model"] == "default"
