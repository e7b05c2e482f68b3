"""LearningStore on SQLite and PostgreSQL: a policy per alias, a cycle started once per threshold crossing however
many replicas see the crossing at the same moment, conditional advances, and a session's events deleted."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from app.storage import LearningStore, NewCycle, Outcome, Storage, Unchanged
from app.storage.learning import cycle_id
from tests.storage import helpers
from tests.storage.helpers import new_job, register
from tests.storage.test_feedback import event

MIN_FEEDBACK = 20


def crossing(storage: Storage, start: int, n: int = MIN_FEEDBACK, model: str = "default") -> None:
    storage.feedback.record([event(f"i{start + i}", model_id=model, session=f"s{(start + i) % 7}") for i in range(n)])


def next_id() -> str:
    return cycle_id(datetime.now(UTC))


def trigger(store: LearningStore, tag: str) -> object:
    """What each replica's trigger does: read the state, and start a cycle if the threshold is crossed."""
    due = store.due("production", "default")
    if due is None or due.open_cycle is not None or due.new_events < MIN_FEEDBACK:
        return None
    new = NewCycle(id=f"c-{tag}", trigger="threshold", control=due.control, feedback_through=due.newest_seq,
                   counts={"new_events": due.new_events}, data={}, job=new_job(f"job-{tag}-{due.policy.cycles}"))
    return store.start_cycle("production", (due.policy.last_seq, due.policy.cycles), new, queue_limit=100)


def test_a_policy_reads_back_and_turning_it_on_starts_its_clock(storage):
    assert storage.learning.policy("production") is None
    off = storage.learning.put_policy("production", False, {"min_feedback": 5})
    assert (off.enabled, off.config, off.enabled_at, off.last_seq, off.cycles) == (False, {"min_feedback": 5}, None, 0, 0)
    on = storage.learning.put_policy("production", True, {"min_feedback": 7})
    assert on.enabled and on.enabled_at is not None and on.config == {"min_feedback": 7}
    again = storage.learning.put_policy("production", True, {"min_feedback": 8})
    assert again.enabled_at == on.enabled_at  # still on: the clock keeps running
    assert [p.alias for p in storage.learning.policies()] == ["production"]


@pytest.mark.parametrize("crossings", [3])
def test_n_threshold_crossings_seen_by_two_replicas_at_once_make_n_cycles(storage, storage_url, crossings):
    storage.learning.put_policy("production", True, {})
    for n in range(crossings):
        def look(engine, i, n=n):
            return trigger(LearningStore(engine), f"{n}-{i}")

        crossing(storage, n * MIN_FEEDBACK, MIN_FEEDBACK - 1)
        assert helpers.race(storage_url, look) == [None, None]  # one short of the threshold: nothing
        crossing(storage, n * MIN_FEEDBACK + MIN_FEEDBACK - 1, 1)  # the crossing
        results = helpers.race(storage_url, look)
        started = [r for r in results if isinstance(r, tuple)]
        assert len(started) == 1, results
        assert all(r is None or isinstance(r, (tuple, Unchanged)) for r in results), results
        cycle, job = started[0]
        assert (cycle.number, cycle.feedback_after, cycle.status, cycle.job_id) == (n + 1, n * MIN_FEEDBACK, "training",
                                                                                     job.id)
        assert cycle.counts["new_events"] == MIN_FEEDBACK
        # another look while it runs starts nothing, and neither does one after it ends without new events
        assert trigger(storage.learning, "again") is None
        assert storage.learning.end(cycle.id, "training", "refused", "the gate said no")
        assert trigger(storage.learning, "after") is None
    cycles = storage.learning.list()
    assert [c.number for c in cycles] == list(range(crossings, 0, -1))
    assert len({c.job_id for c in cycles}) == crossings
    assert storage.jobs.counts()["queued"] == crossings
    assert storage.learning.policy("production").last_seq == crossings * MIN_FEEDBACK


def test_a_stale_read_starts_nothing_and_only_one_cycle_is_open(storage):
    storage.learning.put_policy("production", True, {})
    crossing(storage, 0)
    due = storage.learning.due("production", "default")
    assert (due.new_events, due.control) == (MIN_FEEDBACK, "default")
    new = NewCycle(next_id(), "manual", "default", due.newest_seq, {}, {}, new_job("job-a"))
    storage.learning.start_cycle("production", (0, 0), new, queue_limit=10)
    with pytest.raises(Unchanged):  # the state it was read at has moved
        storage.learning.start_cycle("production", (0, 0), NewCycle(next_id(), "manual", "default", 9, {}, {}, new_job("job-b")),
                                     queue_limit=10)
    with pytest.raises(Unchanged):  # the state is current, but a cycle is open
        storage.learning.start_cycle("production", (due.newest_seq, 1),
                                     NewCycle(next_id(), "manual", "default", 9, {}, {}, new_job("job-c")), queue_limit=10)
    assert {j.id for j in storage.jobs.list()} == {"job-a"}  # nothing half-started: no job without its cycle


def test_usage_is_the_feedback_on_models_the_alias_named(storage, checkpoints):
    register(storage, "m-a", checkpoints[0])
    register(storage, "m-b", checkpoints[1])
    storage.learning.put_policy("production", True, {})
    crossing(storage, 0, 3, model="default")
    crossing(storage, 100, 4, model="m-a")
    assert storage.learning.due("production", "default").new_events == 3  # m-a never served production
    storage.models.activate("m-a")
    due = storage.learning.due("production", "default")
    assert (due.new_events, due.control) == (7, "m-a")
    assert [e.model_id for e in storage.learning.events("production", "default", due.newest_seq, 5)] == \
        ["default"] + ["m-a"] * 4  # the newest 5, oldest first


def test_advances_are_conditional_and_a_rollout_that_cannot_start_ends_the_cycle(storage, checkpoints):
    register(storage, "m-a", checkpoints[0])
    storage.learning.put_policy("production", True, {})
    crossing(storage, 0)
    cycle, _ = storage.learning.start_cycle(
        "production", (0, 0), NewCycle(next_id(), "manual", "default", 5, {}, {}, new_job("job-a", model_id="m-a")), queue_limit=9)
    rollout = storage.learning.roll_out(cycle.id, {"passed": True}, config={"steps": [10, 100]}, percent=10.0,
                                        default_model="default")
    assert rollout is not None and (rollout.control, rollout.candidate) == ("default", "m-a")
    assert storage.learning.roll_out(cycle.id, {"passed": True}, config={}, percent=10.0, default_model="default") is None
    moved = storage.learning.get(cycle.id)
    assert (moved.status, moved.rollout_id, moved.gate) == ("rolling_out", rollout.id, {"passed": True})
    assert not storage.learning.end(cycle.id, "training", "failed", "stale")  # read at another status: nothing
    assert storage.learning.end(cycle.id, "rolling_out", "promoted", "the rollout promoted it")
    ended = storage.learning.get(cycle.id)
    assert (ended.status, ended.outcome, ended.reason) == ("ended", "promoted", "the rollout promoted it")
    # a second cycle whose alias moved meanwhile: its rollout cannot start, and the cycle ends saying why
    crossing(storage, 100)
    policy = storage.learning.policy("production")
    second, _ = storage.learning.start_cycle("production", (policy.last_seq, policy.cycles),
                                             NewCycle(next_id(), "manual", "default", 9, {}, {}, new_job("job-b", model_id="m-a")),
                                             queue_limit=9)
    storage.rollouts.end(rollout.id, Outcome("abort", 0, 0.0, "by hand", {}))
    storage.models.activate("m-a")
    assert storage.learning.roll_out(second.id, {"passed": True}, config={"steps": [10, 100]}, percent=10.0,
                                     default_model="default") is None
    failed = storage.learning.get(second.id)
    assert (failed.status, failed.outcome) == ("ended", "failed") and "names 'm-a' now" in failed.reason


def test_a_sessions_events_are_deleted_and_no_one_elses(storage):
    storage.feedback.record([event("a", session="s-1"), event("b", session="s-1"), event("c", session="s-2"),
                             event("d", session=None)])
    assert storage.feedback.delete_session("s-1") == 2
    assert storage.feedback.delete_session("s-1") == 0
    assert storage.feedback.count() == 2


@pytest.fixture
def base_model(storage, tmp_path):
    """A trained model that keeps its corpus, active on production."""
    import torch

    from model import checkpoint
    from model.config import ModelConfig
    from model.network import Seq2Seq

    torch.manual_seed(0)
    path = tmp_path / "base.pt"
    digest = checkpoint.save(path, Seq2Seq(ModelConfig(embedding_dim=4, hidden_dim=8)), {}, corpus=[[7, 2, 8, 4, 3]] * 3)
    storage.models.register_trained("m-base", path.read_bytes(), digest, "2026-01-01T00:00:00+00:00", {})
    storage.models.activate("m-base")
    return "m-base"


def test_the_loops_own_trigger_on_two_replicas_starts_one_cycle_per_crossing(storage, storage_url, base_model,
                                                                           tmp_path):
    from app.learning import Learning, Policy
    from app.settings import Settings

    settings = Settings(data_dir=tmp_path, weights_dir=tmp_path, device="cpu")
    storage.learning.put_policy("production", True, Policy(min_feedback=MIN_FEEDBACK).config())
    for n in range(3):
        crossing(storage, 1000 * n, MIN_FEEDBACK, model=base_model)
        results = helpers.race(storage_url, lambda engine, _: Learning(Storage(engine), settings).trigger("production"))
        started = [r for r in results if r is not None]
        assert len(started) == 1 and not any(isinstance(r, Exception) for r in results), results
        cycle = started[0]
        assert (cycle.number, cycle.control, cycle.counts["new_events"]) == (n + 1, base_model, MIN_FEEDBACK)
        assert storage.learning.end(cycle.id, "training", "refused", "test")
    assert [c.number for c in storage.learning.list()] == [3, 2, 1]
    assert {j.config["trigger"] for j in storage.jobs.list()} == {"learning"} and len(storage.jobs.list()) == 3
