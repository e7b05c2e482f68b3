"""POST /predict/batch and /topk/batch: many prefixes in one request, answered in request order, each answer
identical to the one the single endpoint gives (less `alias`, which the batch names once), a bad item named by its
index, and bounded sizes."""
import json
import random

import pytest

from tests.conftest import same_answer

PREFIXES = [[7], [7, 2], [3, 1, 4], [9, 9, 9, 9], [1, 2, 3, 4, 5], [7], [0, 5]]


def single(answer: dict) -> dict:
    """A single endpoint's answer as a batch item shows it: the alias is named once, by the batch."""
    assert answer.pop("alias") == "production"
    return answer


def test_predict_batch_answers_in_order_exactly_as_single_requests(client):
    r = client.post("/predict/batch", json={"prefixes": PREFIXES, "attention": True})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "default" and body["alias"] == "production" and len(body["results"]) == len(PREFIXES)
    for prefix, got in zip(PREFIXES, body["results"]):
        alone = single(client.post("/predict", json={"prefix": prefix, "attention": True}).json())
        assert got == alone


def _shown(item: dict) -> dict:
    """An item without its impression, which differs per request by design (a nonce, the time, the session)."""
    return {key: value for key, value in item.items() if key != "impression"}


def test_topk_batch_answers_in_order_exactly_as_single_requests(client):
    rng = random.Random(0)
    prefixes = [[rng.randrange(10) for _ in range(rng.randint(1, 4))] for _ in range(40)]
    body = client.post("/topk/batch", json={"prefixes": prefixes, "k": 4}).json()
    assert [item["prefix"] for item in body["results"]] == prefixes
    assert len({item["impression"] for item in body["results"]}) == len(prefixes)  # one per item, repeats too
    fresh = client.post("/topk/batch", json={"prefixes": prefixes[::-1], "k": 4}).json()
    assert [_shown(item) for item in fresh["results"]] == [_shown(item) for item in body["results"][::-1]]
    for prefix, got in zip(prefixes[:10], body["results"]):
        alone = single(client.get("/topk", params={"prefix": ",".join(map(str, prefix)), "k": 4}).json())
        assert _shown(got) == _shown(alone)


def test_a_large_batch_is_accepted_and_bulk_matches_one_by_one_without_the_cache(make_client):
    c = make_client(cache_size=0)
    prefixes = [[a, b, d] for a in range(10) for b in range(10) for d in range(10)] * 4 + [[5]] * 96
    assert len(prefixes) == 4096
    body = c.post("/predict/batch", content=json.dumps({"prefixes": prefixes}),
                  headers={"content-type": "application/json"}).json()
    assert len(body["results"]) == 4096
    for i in (0, 517, 999, 4095):  # float32 sums depend on the batch's shape: equal up to rounding
        assert same_answer(body["results"][i], single(c.post("/predict", json={"prefix": prefixes[i]}).json()))[0]


@pytest.mark.parametrize("payload,field", [
    ({"prefixes": [[7], [7, 12]]}, "prefixes[1]"),
    ({"prefixes": [[7], []]}, "prefixes[1]"),
    ({"prefixes": [[7], [1, 2, 3, 4, 5, 6]]}, "prefixes[1]"),
    ({"prefixes": [[7], ["x"]]}, "prefixes[1][0]"),
    ({"prefixes": [[7], list(range(500))]}, "prefixes[1]"),
    ({"prefixes": []}, "prefixes"),
    ({"prefixes": [[1]] * 4097}, "prefixes"),
    ({"prefixes": [[7]], "model": "nope"}, None),
])
def test_a_bad_item_is_a_422_naming_its_index(client, payload, field):
    r = client.post("/predict/batch", json=payload)
    if field is None:
        assert r.status_code == 404
        return
    assert r.status_code == 422, r.text
    assert r.json()["fields"][0]["field"] == field
    assert len(r.content) < 4096


def test_topk_batch_checks_k_and_items(client):
    assert client.post("/topk/batch", json={"prefixes": [[7]], "k": 51}).json()["fields"][0]["field"] == "k"
    assert client.post("/topk/batch", json={"prefixes": [[7], [3, 11]], "k": 2}).json()["fields"][0]["field"] == "prefixes[1]"
    assert client.post("/topk/batch", json={"prefixes": [[7]], "attention": True}).status_code == 422
