"""Aliases in storage (issue 16, item 1), on both engines: compare-and-swap moves (two at once with the same
expected generation: one wins), the history and what an alias named at a time, production as the active pointer
(every move recorded with its actor, `previous` following), the refusals, and a watcher that follows moves."""
from __future__ import annotations

import pytest

from app.storage import ActiveWatcher, AliasStore, Conflict, NotFound, StaleGeneration
from app.storage.clock import db_now, iso
from tests.postgres import poll
from tests.storage.helpers import new_job, race, register


def now(storage) -> str:
    with storage.engine.connect() as conn:
        return iso(db_now(conn))


def instant(storage) -> str:
    """A time after every write so far and before every later one (timestamps have millisecond resolution)."""
    t = now(storage)
    poll(lambda: now(storage) > t, 1.0, message="the database's clock to tick")
    return t


@pytest.fixture
def three(storage, checkpoints):
    for i in range(3):
        register(storage, f"m-{i}", checkpoints[i])
    return storage


def test_moves_are_compare_and_swap_on_the_generation(three):
    aliases = three.aliases
    created = aliases.move("champion", "m-0", expected_generation=0, reason="first")
    assert (created.name, created.model, created.generation, created.public) == ("champion", "m-0", 1, False)
    with pytest.raises(StaleGeneration) as stale:
        aliases.move("champion", "m-1", expected_generation=0)
    assert stale.value.current == 1 and "generation 1" in str(stale.value)
    assert aliases.get("champion").model == "m-0"  # the lost swap changed nothing
    moved = aliases.move("champion", "m-1", expected_generation=1, public=True)
    assert (moved.model, moved.generation, moved.public) == ("m-1", 2, True)
    assert aliases.move("champion", "m-2").public is True  # without a generation: unconditional; public kept
    history = aliases.history("champion")
    assert [(m.generation, m.model, m.previous, m.reason, m.actor) for m in history] == [
        (3, "m-2", "m-1", None, "api"), (2, "m-1", "m-0", None, "api"), (1, "m-0", None, "first", "api")]
    assert [m.generation for m in aliases.history("champion", limit=2)] == [3, 2]


def test_two_moves_with_the_same_expected_generation_one_wins(three, storage_url):
    three.aliases.move("champion", "m-0")
    results = race(storage_url, lambda engine, i: AliasStore(engine).move("champion", f"m-{i + 1}",
                                                                          expected_generation=1))
    won = [r for r in results if not isinstance(r, StaleGeneration)]
    lost = [r for r in results if isinstance(r, StaleGeneration)]
    assert len(won) == 1 and len(lost) == 1, results
    assert lost[0].current == 2 and three.aliases.get("champion").model == won[0].model
    assert [m.generation for m in three.aliases.history("champion")] == [2, 1]


def test_at_answers_what_an_alias_named_then_across_a_deletion(three):
    aliases = three.aliases
    before = instant(three)
    aliases.move("canary", "m-0")
    t1 = instant(three)
    aliases.move("canary", "m-1")
    t2 = instant(three)
    aliases.delete("canary", expected_generation=2)
    t3 = instant(three)
    assert aliases.history("canary", at=before) == []  # did not exist yet
    assert aliases.history("canary", at=t1)[0].model == "m-0"
    assert aliases.history("canary", at=t2)[0].model == "m-1"
    assert aliases.history("canary", at=t3)[0].model is None  # deleted: a move to nothing, recorded
    with pytest.raises(NotFound):
        aliases.get("canary")
    with pytest.raises(StaleGeneration) as stale:  # a deleted alias is at its deletion's generation
        aliases.move("canary", "m-2", expected_generation=0)
    assert stale.value.current == 3
    again = aliases.move("canary", "m-2", expected_generation=3)
    assert again.generation == 4 and [m.generation for m in aliases.history("canary")] == [4, 3, 2, 1]


def test_production_is_the_active_pointer_and_every_move_is_recorded_with_previous_following(three):
    models, aliases = three.models, three.aliases
    assert aliases.get("production").model is None and aliases.get("production").generation == 0
    models.activate("m-0")  # as POST /models/m-0/activate does
    assert aliases.get("production").model == "m-0" and aliases.get("production").generation == 1
    with pytest.raises(NotFound):
        aliases.get("previous")  # nothing before the first activation to go back to
    models.activate("m-1", reason="better")
    assert aliases.get("previous").model == "m-0"
    with pytest.raises(StaleGeneration) as stale:
        aliases.move("production", "m-2", expected_generation=1)
    assert stale.value.current == 2 and models.active() == ("m-1", 2)
    production = aliases.move("production", "m-2", expected_generation=2, actor="rollout r-1")
    assert (production.model, production.generation) == ("m-2", 3) and models.active() == ("m-2", 3)
    assert [(m.generation, m.model, m.previous, m.reason, m.actor) for m in aliases.history("production")] == [
        (3, "m-2", "m-1", None, "rollout r-1"), (2, "m-1", "m-0", "better", "api"), (1, "m-0", None, None, "api")]
    assert [(m.model, m.previous, m.actor) for m in aliases.history("previous")] == [
        ("m-1", "m-0", "rollout r-1"), ("m-0", None, "api")]
    assert [a.name for a in aliases.list()] == ["production", "previous"]
    assert aliases.pointing_at("m-2") == ["production"] and aliases.pointing_at("m-1") == ["previous"]


def test_a_jobs_activation_is_recorded_with_the_job_as_its_actor(storage, checkpoints):
    storage.jobs.submit(new_job("j"), queue_limit=10)
    lease = storage.jobs.claim("w", "host", 1, lease_s=30).lease
    c = checkpoints[0]
    storage.jobs.finish_with_model(lease, model_id="m-j", checkpoint=c.blob, sha256=c.sha256, created_at=c.created_at,
                                   info={}, activate=True, outcome={"activation_reason": "activated: always"})
    [move] = storage.aliases.history("production")
    assert (move.model, move.actor, move.reason, move.generation) == ("m-j", "job j", "activated: always", 1)


def test_refusals(three, checkpoints):
    aliases, models = three.aliases, three.models
    with pytest.raises(NotFound, match="not registered"):
        aliases.move("champion", "m-unknown")
    with pytest.raises(Conflict, match="model's id"):
        aliases.move("m-0", "m-1")  # a model's id is never an alias's name
    with pytest.raises(Conflict, match="production cannot be deleted"):
        aliases.delete("production")
    aliases.move("champion", "m-1")
    with pytest.raises(Conflict, match="alias 'champion'"):
        models.delete("m-1")  # an alias names it
    assert models.get("m-1").id == "m-1"
    for name in ("champion", "production", "previous"):  # and an alias's name is never a model's id
        with pytest.raises(Conflict, match="alias's name"):
            register(three, name, checkpoints[0])
    aliases.delete("champion")
    models.delete("m-1")  # once no alias names it


def test_a_watcher_follows_alias_moves_within_a_second(three, storage_url):
    versions: list[int] = []
    watcher = ActiveWatcher(storage_url, lambda *_: None, on_aliases=versions.append)  # as another process
    watcher.start()
    try:
        assert versions == [0]
        three.aliases.move("champion", "m-0")
        poll(lambda: versions[-1] == 1, 1.0, message="the alias move")
        three.models.activate("m-0")
        three.models.activate("m-1")  # production's second move moves previous: the aliases changed
        poll(lambda: versions[-1] == 2, 1.0, message="previous following production")
    finally:
        watcher.stop()
