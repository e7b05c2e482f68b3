"""The feedback store on both engines: one row per impression however often (and however concurrently) its
feedback arrives, and one signing key for every replica."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from app.storage import FeedbackEvent, NotFound, open_storage


def event(impression_id: str, **changes) -> FeedbackEvent:
    fields = dict(impression_id=impression_id, model_id="default", prefix=(7,), k=3, suggestions=3, session="s-1",
                  accepted=(7, 2, 8, 4, 3), accepted_rank=1, typed=(7, 2, 8, 4, 3), typed_rank=1,
                  impression_at="2026-01-01T00:00:00.000+00:00")
    return FeedbackEvent(**{**fields, **changes})


def test_an_event_reads_back_as_written_and_a_repeat_adds_nothing(storage):
    assert storage.feedback.record([event("a")]) == [True]
    row = storage.feedback.get("a")
    assert (row.model_id, row.prefix, row.k, row.suggestions, row.session) == ("default", (7,), 3, 3, "s-1")
    assert (row.accepted, row.accepted_rank, row.typed, row.typed_rank) == ((7, 2, 8, 4, 3), 1, (7, 2, 8, 4, 3), 1)
    assert row.impression_at == "2026-01-01T00:00:00.000+00:00" and row.received_at > row.impression_at
    assert storage.feedback.record([event("a", accepted=None, accepted_rank=None)]) == [False]
    assert storage.feedback.get("a").accepted == (7, 2, 8, 4, 3)  # the first event stands
    assert storage.feedback.count() == 1


def test_nulls_round_trip(storage):
    storage.feedback.record([event("n", session=None, accepted=None, accepted_rank=None, typed=None, typed_rank=None)])
    row = storage.feedback.get("n")
    assert (row.session, row.accepted, row.accepted_rank, row.typed, row.typed_rank) == (None, None, None, None, None)
    with pytest.raises(NotFound):
        storage.feedback.get("nothing")


def test_a_list_is_one_transaction_answering_per_event_repeats_included(storage):
    storage.feedback.record([event("old")])
    ids = [f"e{i}" for i in range(1450)]  # more rows than SQLAlchemy puts in one INSERT (1,000)
    answers = storage.feedback.record([event(i) for i in ids[:300]] + [event("old"), event("e1")]
                                      + [event(i) for i in ids[300:]])
    assert answers == [True] * 300 + [False, False] + [True] * 1150
    assert storage.feedback.count() == 1451 and storage.feedback.count("default") == 1451
    assert storage.feedback.record([]) == []
    assert storage.feedback.count("other") == 0


def test_concurrent_repeats_from_two_replicas_record_once(storage_url):
    """Two engines (two replicas) send the same impressions' feedback at the same time: one row each."""
    replicas = [open_storage(storage_url, run_migrations=False) for _ in range(2)]
    try:
        ids = [f"c{i}" for i in range(40)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda j: replicas[j % 2].feedback.record([event(i) for i in ids]), range(8)))
        assert [sum(column) for column in zip(*answers)] == [1] * len(ids)  # each impression recorded exactly once
        assert replicas[0].feedback.count() == len(ids)
    finally:
        for replica in replicas:
            replica.close()


def test_every_replica_gets_the_same_signing_key_created_once(storage_url):
    replicas = [open_storage(storage_url, run_migrations=False) for _ in range(4)]
    try:
        with ThreadPoolExecutor(4) as pool:
            keys = list(pool.map(lambda s: s.feedback.signing_key(), replicas))
        assert len(set(keys)) == 1 and len(keys[0]) == 32
        assert replicas[0].feedback.signing_key() == keys[0]  # read again, not made again
    finally:
        for replica in replicas:
            replica.close()
