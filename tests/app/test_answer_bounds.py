"""Batch amplification (issue 15, item 1): a batch answer's size is bounded before anything is decoded, every
item counted (repeated prefixes are decoded once but answered each time), so a small request cannot ask for a
large answer the cache would then serve again and again."""
from __future__ import annotations

import json
import random
import re

import pytest

from app.inference import answer_size
from model import checkpoint
from tests.conftest import WEIGHTS

CONFIG = checkpoint.load(WEIGHTS / "default.pt").model.config
LIMIT = 64 * 1024  # the smallest SEQ2SEQ_MAX_BATCH_ANSWER_BYTES allowed: the boundary is reached with few prefixes


def _misses(client) -> float:
    found = re.search(r'^seq2seq_cache_total\{result="miss"\} (\S+)$', client.get("/metrics").text, re.M)
    assert found, "the cache's miss counter is exported"
    return float(found.group(1))


def test_the_issues_request_is_refused_before_decoding_with_a_small_body(client):
    before = _misses(client)
    r = client.post("/topk/batch", json={"prefixes": [[7]] * 4096, "k": 50})  # 20.5 KB that answered 18.4 MB
    assert r.status_code == 422, r.text[:300]
    assert len(r.content) < 2048
    body = r.json()
    assert body["fields"][0]["field"] == "prefixes"
    assert "k=50" in body["message"] and "SEQ2SEQ_MAX_BATCH_ANSWER_BYTES" in body["message"]
    assert f"{4 * 1024 * 1024:,}" in body["message"]  # the default limit, named
    assert _misses(client) == before  # nothing was looked up, let alone decoded


def _largest_accepted(item_bytes, limit: int) -> int:
    """The most prefixes of one length whose answer's bound stays within limit."""
    n = 1
    while answer_size.batch("default", [1] * (n + 1), item_bytes) <= limit:
        n += 1
    return n


def _topk_item(size: int, k: int, session: str = "") -> int:
    """One top-k item's bound with its impression (on by default), whose length follows from the session's."""
    return answer_size.topk_item(CONFIG, "default", size, k) + answer_size.impression("default", size, k, len(session))


@pytest.mark.parametrize("k,session", [(1, ""), (7, ""), (50, ""), (7, "s" * 64)])
def test_topk_batch_just_under_the_bound_works_and_one_more_repeat_is_refused(make_client, k, session):
    c = make_client(max_batch_answer_bytes=LIMIT)
    n = _largest_accepted(lambda size: _topk_item(size, k, session), LIMIT)
    extra = {"session": session} if session else {}
    ok = c.post("/topk/batch", json={"prefixes": [[7]] * n, "k": k, **extra})
    assert ok.status_code == 200, ok.text[:300]
    assert len(ok.json()["results"]) == n and len(ok.content) <= LIMIT
    assert all("impression" in item for item in ok.json()["results"])
    refused = c.post("/topk/batch", json={"prefixes": [[7]] * (n + 1), "k": k, **extra})  # repeats priced as answered
    assert refused.status_code == 422 and refused.json()["fields"][0]["field"] == "prefixes"
    assert f"{LIMIT:,}" in refused.json()["message"] and f"k={k}" in refused.json()["message"]


@pytest.mark.parametrize("attention", [False, True])
def test_predict_batch_just_under_the_bound_works_and_one_more_is_refused(make_client, attention):
    c = make_client(max_batch_answer_bytes=LIMIT)
    n = _largest_accepted(lambda size: answer_size.predict_item(CONFIG, "default", size, attention), LIMIT)
    prefixes = [[1]] * n
    ok = c.post("/predict/batch", json={"prefixes": prefixes, "attention": attention})
    assert ok.status_code == 200 and len(ok.json()["results"]) == n and len(ok.content) <= LIMIT
    refused = c.post("/predict/batch", json={"prefixes": [*prefixes, [2]], "attention": attention})
    assert refused.status_code == 422 and refused.json()["fields"][0]["field"] == "prefixes"
    assert ("leave attention out" in refused.json()["message"]) == attention


def test_the_bound_holds_every_real_answer_and_errs_high_by_little(client):
    """The bound is an upper bound on what the engine writes, item by item, and not a loose one."""
    rng = random.Random(0)
    prefixes = [[rng.randrange(10) for _ in range(rng.randint(1, CONFIG.seq_length))] for _ in range(60)]
    for k in (1, 5, 50):
        for item in client.post("/topk/batch", json={"prefixes": prefixes, "k": k}).json()["results"]:
            real = len(json.dumps(item, separators=(",", ":"))) + 1
            bound = _topk_item(len(item["prefix"]), k)
            assert real <= bound
            if len(item["suggestions"]) == k:  # short prefixes have all k; the bound then is within 25%
                assert bound <= 1.25 * real
                # and the impression's share is exact
                assert len(f',"impression":"{item["impression"]}"') == answer_size.impression(
                    "default", len(item["prefix"]), k, 0)
    for attention in (False, True):
        for item in client.post("/predict/batch", json={"prefixes": prefixes, "attention": attention}).json()["results"]:
            real = len(json.dumps(item, separators=(",", ":")))
            bound = answer_size.predict_item(CONFIG, "default", len(item["prefix"]), attention)
            assert real <= bound <= 1.5 * real
