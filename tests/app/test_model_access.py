"""Naming a model on the open routes (issue 15, item 3): without the management key only the active model and
the public ones (SEQ2SEQ_PUBLIC_MODELS) answer /predict, /topk and the batch routes; another id, known or not,
is a 403 naming `model`, refused before the registry is asked."""
from __future__ import annotations

import pytest

from tests.conftest import TEST_KEY

NO_KEY = {"Authorization": ""}
WRONG_KEY = {"Authorization": "Bearer " + "x" * len(TEST_KEY)}


def _requests(model: str) -> list[tuple[str, str, dict]]:
    return [("POST", "/predict", {"json": {"start": 7, "model": model}}),
            ("GET", "/topk", {"params": {"start": 7, "k": 2, "model": model}}),
            ("POST", "/predict/batch", {"json": {"prefixes": [[7], [3]], "model": model}}),
            ("POST", "/topk/batch", {"json": {"prefixes": [[7], [3]], "k": 2, "model": model}})]


@pytest.mark.parametrize("headers", [NO_KEY, WRONG_KEY])
def test_another_model_without_the_key_is_refused_naming_model(make_client, weights_copy, headers):
    c = make_client(weights_dir=weights_copy)
    for model in ("alt", "m-unknown"):  # a registered model and an unknown id get the same answer
        for method, path, kw in _requests(model):
            r = c.request(method, path, headers=headers, **kw)
            assert r.status_code == 403, (path, model, r.status_code, r.text[:200])
            assert r.json()["error"] == "forbidden" and r.json()["message"].startswith("model:")
            assert "SEQ2SEQ_PUBLIC_MODELS" in r.json()["message"]


def test_with_the_key_another_model_answers(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy)  # the client carries the key
    for method, path, kw in _requests("alt"):
        r = c.request(method, path, **kw)
        assert r.status_code == 200, (path, r.text[:200])
        assert r.json()["model"] == "alt"
    assert c.post("/predict", json={"start": 7, "model": "m-unknown"}).status_code == 404


def test_the_active_model_named_explicitly_or_not_answers_without_the_key(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy)
    for method, path, kw in _requests("default"):
        r = c.request(method, path, headers=NO_KEY, **kw)
        assert r.status_code == 200 and r.json()["model"] == "default", (path, r.text[:200])
    assert c.post("/predict", json={"start": 7}, headers=NO_KEY).json()["model"] == "default"
    # the rule follows the pointer: once alt is active, alt answers without the key and default does not
    assert c.post("/models/alt/activate").status_code == 200
    assert c.post("/predict", json={"start": 7, "model": "alt"}, headers=NO_KEY).status_code == 200
    assert c.post("/predict", json={"start": 7, "model": "default"}, headers=NO_KEY).status_code == 403


def test_public_models_answer_without_the_key(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy, public_models="alt, other")
    for method, path, kw in _requests("alt"):
        r = c.request(method, path, headers=NO_KEY, **kw)
        assert r.status_code == 200 and r.json()["model"] == "alt", (path, r.text[:200])


def test_with_management_open_any_model_answers(make_client, weights_copy):
    c = make_client(weights_dir=weights_copy, api_key=None, auth="disabled")
    assert c.post("/predict", json={"start": 7, "model": "alt"}, headers=NO_KEY).status_code == 200
