"""POST /score: log P(the rest of each sequence | its first prefix_length digits), checked against a product of
step probabilities computed one decoder step at a time, with bad items named by index and bounded answers."""
import itertools
import math
import random

import pytest
import torch

from model import checkpoint
from tests.conftest import ROOT

SHIPPED = ROOT / "weights" / "default.pt"


@torch.inference_mode()
def stepwise(model, sequence: list[int], prefix_length: int) -> float:
    """P(sequence[p:] | sequence[:p]) as the product of each decoder step's softmax, one step at a time."""
    src = torch.tensor([sequence[:prefix_length]])
    state, memory = model.encode(src)
    logp = 0.0
    for t in range(1, len(sequence)):
        out, state, _ = model.decoder.step(torch.tensor([sequence[t - 1]]), state, memory)
        if t >= prefix_length:
            logp += float(torch.log_softmax(out, 1)[0, sequence[t]])
    return logp


@pytest.mark.parametrize("prefix_length", [1, 2, 4])
def test_scores_are_products_of_step_probabilities(client, prefix_length):
    model = checkpoint.load(SHIPPED).model
    rng = random.Random(prefix_length)
    sequences = [[rng.randrange(10) for _ in range(5)] for _ in range(40)]
    r = client.post("/score", json={"sequences": sequences, "prefix_length": prefix_length})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["alias"] == "production" and body["model"] == client.get("/models/active").json()["id"]
    assert len(body["results"]) == len(sequences)
    for seq, item in zip(sequences, body["results"]):
        assert item["log_probability"] == pytest.approx(stepwise(model, seq, prefix_length), abs=1e-4)
        assert item["probability"] == pytest.approx(math.exp(item["log_probability"]), rel=1e-9)


def test_the_continuations_of_a_prefix_sum_to_one(client):
    rest = [list(c) for c in itertools.product(range(10), repeat=2)]
    r = client.post("/score", json={"sequences": [[3, 1, 4, *c] for c in rest], "prefix_length": 3})
    assert r.status_code == 200, r.text
    assert sum(item["probability"] for item in r.json()["results"]) == pytest.approx(1.0, abs=1e-4)


def test_a_suggestions_probability_is_its_score(client):
    """/topk and /score reach the same probability by different paths (a search, a teacher-forced pass)."""
    for start in (0, 7):
        best = client.get("/topk", params={"start": start, "k": 3}).json()["suggestions"]
        scored = client.post("/score", json={"sequences": [s["sequence"] for s in best]}).json()["results"]
        for suggestion, item in zip(best, scored):
            assert item["probability"] == pytest.approx(suggestion["probability"], rel=1e-4)


@pytest.mark.parametrize("payload, field", [
    ({"sequences": [[7, 2, 8, 4, 3], [7, 2, 8]]}, "sequences[1]"),
    ({"sequences": [[7, 2, 8, 4, 3], [7, 2, 8, 4, 12]]}, "sequences[1]"),
    ({"sequences": [[7, 2, 8, 4, 3], [7, 2, "x", 4, 3]]}, "sequences[1][2]"),
    ({"sequences": [[7, 2, 8, 4, 3], list(range(500))]}, "sequences[1]"),
    ({"sequences": []}, "sequences"),
    ({"sequences": [[1, 2, 3, 4, 5]] * 4097}, "sequences"),
    ({"sequences": [[1, 2, 3, 4, 5]], "prefix_length": 5}, "prefix_length"),
    ({"sequences": [[1, 2, 3, 4, 5]], "prefix_length": 0}, "prefix_length"),
    ({"sequences": [[1, 2, 3, 4, 5]], "extra": 1}, "extra"),
])
def test_a_bad_item_is_a_422_naming_it(client, payload, field):
    r = client.post("/score", json=payload)
    assert r.status_code == 422, r.text
    assert r.json()["fields"][0]["field"] == field
    assert len(r.content) < 4096


def test_an_unknown_model_is_a_404_and_a_pinned_one_answers(client):
    assert client.post("/score", json={"sequences": [[1, 2, 3, 4, 5]], "model": "nope"}).status_code == 404
    active = client.get("/models/active").json()["id"]
    r = client.post("/score", json={"sequences": [[1, 2, 3, 4, 5]], "model": active})
    assert r.status_code == 200 and r.json()["alias"] is None and r.json()["model"] == active


def test_an_answer_too_large_is_refused_before_scoring(make_client):
    client = make_client(max_batch_answer_bytes=65_536)  # about 780 results
    r = client.post("/score", json={"sequences": [[1, 2, 3, 4, 5]] * 1000})
    assert r.status_code == 422 and r.json()["fields"][0]["field"] == "sequences"
    assert "at most" in r.json()["message"]
    assert client.post("/score", json={"sequences": [[1, 2, 3, 4, 5]] * 500}).status_code == 200
