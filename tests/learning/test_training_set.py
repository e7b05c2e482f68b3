"""A cycle's training set: the usage holdout never in it (its digest is the digest of everything else), no session
above its cap however much it sends, anonymous floods counted as one session, weights made whole."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from app.learning.training_set import applied_weight, build, cap_count, whole_counts
from model.data import corpus_hash

BASE = [[7, 2, 8, 4, 3]] * 6 + [[7, 6, 5, 2, 8]] * 3 + [[7, 9, 1, 2, 4]] + [[1, 0, 9, 1, 1]] * 2


@dataclass(frozen=True)
class Ev:
    seq: int
    session: str | None
    typed: tuple[int, ...] | None
    accepted: tuple[int, ...] | None = None


def made(sessions: int, per_session: int, start: int = 0, sequence=lambda s, i: (3, s % 10, i % 10, 0, 1),
         name: str = "s"):
    """Sessions one after another, each sending `per_session` events."""
    events = []
    for s in range(sessions):
        for i in range(per_session):
            events.append(Ev(start + len(events), f"{name}{s}", sequence(s, i)))
    return events


def built(events, **rules):
    given = {"seq_length": 5, "vocab_size": 10, "holdout_fraction": 0.1, "session_cap": 0.05, "usage_weight": 1.0,
             **rules}
    return build(BASE, events, **given)


def test_the_newest_sessions_are_the_holdout_and_never_in_the_training_set():
    # every session types its own sequence, so a holdout sequence in the training set would show
    events = made(40, 3, sequence=lambda s, i: (3, s // 10, s % 10, 0, 1))
    result = built(events)
    assert result.counts["holdout_sessions"] == 4 and result.counts["training_sessions"] == 36
    held = {(3, s // 10, s % 10, 0, 1) for s in range(36, 40)}  # the four sessions that started last
    assert set(result.holdout) == held and len(result.holdout) == 12
    assert not held & {tuple(s) for s in result.sequences}
    expected = sorted([tuple(s) for s in BASE] + [e.typed for e in events if e.session not in {"s36", "s37", "s38", "s39"}])
    assert result.digests(BASE)["training_sha256"] == corpus_hash([list(s) for s in expected])
    # whatever the holdout sessions send, the training set is the same
    changed = [e if e.session not in {"s37", "s39"} else Ev(e.seq, e.session, (9, 9, 9, 9, 9)) for e in events]
    assert built(changed).digests(BASE)["training_sha256"] == result.digests(BASE)["training_sha256"]
    assert built(changed).digests(BASE)["holdout_sha256"] != result.digests(BASE)["holdout_sha256"]


def test_a_session_is_held_out_by_its_first_event_whatever_it_sent_later():
    early = [Ev(0, "old", (3, 1, 1, 1, 1))]
    others = made(9, 1, start=1)
    late = [Ev(100, "old", (3, 2, 2, 2, 2))]  # the old session came back last: it is still old
    result = built(early + others + late, session_cap=1.0)
    assert result.counts["holdout_sessions"] == 1 and result.holdout == [others[-1].typed]
    assert (3, 2, 2, 2, 2) in result.usage


def test_no_session_makes_more_than_its_cap_of_the_usage():
    flood = [Ev(10_000 + i, "flooder", (3, 3, 3, 3, 3)) for i in range(500)]
    events = made(100, 2) + flood + made(12, 2, start=20_000, name="late")  # the flood is old enough to be trained on
    result = built(events, session_cap=0.01, holdout_fraction=0.1)
    usage = Counter(result.usage)
    flooded = usage[(3, 3, 3, 3, 3)]
    assert flooded <= 0.01 * len(result.usage) and flooded == result.counts["session_limit"] >= 1
    assert result.counts["capped_examples"] == 500 - flooded
    # the cap is the largest that holds: one more example for the flood would break it
    assert flooded + 1 > 0.01 * (len(result.usage) + 1)


def test_an_anonymous_flood_is_one_session_and_capped_like_one():
    flood = [Ev(5_000 + i, None, (3, 4, 4, 4, 4)) for i in range(300)]
    result = built(flood + made(60, 3, start=10_000), session_cap=0.02, holdout_fraction=0.01)
    assert Counter(result.usage)[(3, 4, 4, 4, 4)] <= 0.02 * len(result.usage)
    assert result.counts["sessions"] == 61


def test_too_few_sessions_for_the_cap_leave_nothing_from_usage():
    result = built(made(20, 5), session_cap=0.01)  # 18 training sessions, each would be over 1%
    assert result.usage == [] and result.counts["usage_examples"] == 0
    assert sorted(map(tuple, result.sequences)) == sorted(map(tuple, BASE)) and result.touched == []
    assert cap_count([5] * 18, 0.01) == 0 and cap_count([5] * 200, 0.01) == 5 and cap_count([], 0.5) == 0


def test_typed_else_accepted_and_unusable_events_are_counted_not_trained():
    events = [Ev(0, "a", None, (3, 1, 2, 3, 4)), Ev(1, "a", (3, 1, 2)), Ev(2, "a", (3, 1, 2, 3, 12)),
              Ev(3, "a", None, None), *made(9, 1, start=10)]
    result = built(events, session_cap=1.0)
    assert result.counts["unusable_events"] == 3 and (3, 1, 2, 3, 4) in result.usage


def test_weights_are_whole_in_one_proportion_and_untouched_prefixes_are_judged():
    base = Counter({(7, 2, 8, 4, 3): 6, (1, 0, 9, 1, 1): 2})
    usage = Counter({(3, 1, 1, 1, 1): 3})
    assert whole_counts(base, usage, 0.5) == Counter({(7, 2, 8, 4, 3): 12, (1, 0, 9, 1, 1): 4, (3, 1, 1, 1, 1): 3})
    assert whole_counts(base, usage, 2.0) == Counter({(7, 2, 8, 4, 3): 6, (1, 0, 9, 1, 1): 2, (3, 1, 1, 1, 1): 6})
    huge = whole_counts(Counter({(1, 1, 1, 1, 1): 90_000}), Counter({(2, 2, 2, 2, 2): 30_000}), 1.0)
    assert sum(huge.values()) <= 100_000 and huge[(2, 2, 2, 2, 2)] > 0
    result = built(made(20, 1, sequence=lambda s, i: (7, 0, 0, 0, s % 10)), session_cap=1.0)
    assert result.touched == [7] and {s[0] for s in result.base_eval} == {1}


def test_however_much_usage_piles_up_the_base_keeps_its_share():
    assert applied_weight(100, 900, 1.0, 0.9) == 1.0  # 90%: at the limit, untouched
    lowered = applied_weight(100, 20_000, 1.0, 0.9)
    assert abs(lowered * 20_000 / (100 + lowered * 20_000) - 0.9) < 1e-9
    counts = whole_counts(Counter({(7, 2, 8, 4, 3): 100}), Counter({(3, 1, 1, 1, 1): 20_000}), lowered)
    assert abs(counts[(3, 1, 1, 1, 1)] / sum(counts.values()) - 0.9) < 0.01
    result = built(made(300, 5), session_cap=1.0, max_usage_share=0.5)
    assert result.counts["usage_share"] == 0.5 and result.counts["usage_weight_applied"] < 1
