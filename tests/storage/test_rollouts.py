"""RolloutStore on SQLite and PostgreSQL: one running rollout per alias (also when two starts race), counters that
replicas add to, a decision applied once when two processes decide at once, and the promotion's alias move."""
from __future__ import annotations

import pytest

from app.storage import Conflict, NotFound, Outcome, RolloutStore
from app.storage.aliases import UnderRollout
from tests.storage import helpers
from tests.storage.helpers import register


@pytest.fixture
def three(storage, checkpoints):
    for i in range(3):
        register(storage, f"m-{i}", checkpoints[i])
    storage.models.activate("m-0")
    return storage


def start(store: RolloutStore, candidate: str = "m-1", alias: str = "production"):
    return store.start(alias=alias, candidate=candidate, config={"steps": [10, 100]}, percent=10.0, shadow=False,
                       default_model="m-0")


def race(storage_url: str, work) -> list[object]:
    """work(store) on two engines (two processes' worth of connections) at the same moment."""
    return helpers.race(storage_url, lambda engine, _: work(RolloutStore(engine)))


def test_one_running_rollout_per_alias_even_when_two_starts_race(three, storage_url):
    results = race(storage_url, lambda store: start(store, "m-1"))
    assert sorted(type(r).__name__ for r in results) == ["Conflict", "RolloutRow"], results
    with pytest.raises(NotFound):
        start(three.rollouts, "m-9")
    with pytest.raises(Conflict):
        start(three.rollouts, "m-0")  # production names it already
    running, _ = three.rollouts.running()
    assert [r.candidate for r in running] == ["m-1"]
    with pytest.raises(UnderRollout):
        three.aliases.move("production", "m-2")
    with pytest.raises(Conflict):
        three.models.delete("m-1")  # the candidate


def test_counters_add_up_across_flushes_and_replicas(three, storage_url):
    store = three.rollouts
    store.add({("model:m-0", "requests"): 3, ("model:m-0", "ms2"): 3})
    race(storage_url, lambda s: s.add({("model:m-0", "requests"): 5, ("model:m-1", "errors"): 1}))
    assert store.counters(["model:m-0", "model:m-1", "model:m-2"]) == {
        "model:m-0": {"requests": 13, "ms2": 3}, "model:m-1": {"errors": 2}, "model:m-2": {}}


def test_a_decision_is_applied_once_and_a_promotion_moves_the_alias(three, storage_url):
    rollout = start(three.rollouts)
    calls: list[int] = []

    def judge(row, counters, now):
        calls.append(row.step)
        return Outcome("promote", row.step, 100.0, "better", {"n": 1})

    results = race(storage_url, lambda s: s.decide(rollout.id, 0, judge))
    assert sorted(r is None for r in results) == [False, True], results  # one applied it, the other found it done
    assert calls == [0]  # the loser never even judged: the rollout was no longer running at step 0
    assert three.rollouts.get(rollout.id).status == "promoted"
    assert [d.action for d in three.rollouts.decisions(rollout.id)] == ["start", "promote"]
    move = three.aliases.history("production")[0]
    assert (move.model, move.actor) == ("m-1", f"rollout {rollout.id}")
    assert three.aliases.get("previous").model == "m-0"
    assert start(three.rollouts, "m-2").status == "running"  # the alias is free again
