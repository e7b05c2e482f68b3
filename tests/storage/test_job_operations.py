"""JobStore under operations (issue 15), on both engines: the per-claim lease token, conditional activation (an
operator's rollback, another job's activation, a late cancel), hand-back counting and its cap, a stalled attempt's
retry, quotas inside the submit transaction, and a bounded lock wait whose transient error a retry survives."""
from __future__ import annotations

import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa

from app.storage import Lease, LeaseLost, NotFound, QueueFull, QuotaFull, make_engine, transient
from app.storage.clock import db_now
from app.storage.engine import is_postgres
from tests.storage.helpers import new_job, register


def later(storage, seconds: float):
    with storage.engine.connect() as conn:
        return db_now(conn) + timedelta(seconds=seconds)


def finish(storage, lease: Lease, ckpt, **kw):
    return storage.jobs.finish_with_model(lease, model_id=f"m-{lease.job_id}", checkpoint=ckpt.blob,
                                          sha256=ckpt.sha256, created_at=ckpt.created_at, info={}, **kw)


def test_a_stale_claim_of_the_same_runner_writes_nothing_after_the_job_was_claimed_again(storage, checkpoints):
    storage.jobs.submit(new_job("j"), queue_limit=10)
    stale = storage.jobs.claim("runner", "host", 1, lease_s=30).lease
    assert storage.jobs.requeue_expired(later(storage, 60))["requeued"] == ["j"]  # its lease ran out
    fresh = storage.jobs.claim("runner", "host", 1, lease_s=30).lease  # the same runner, another claim
    assert (stale.owner, stale.job_id) == (fresh.owner, fresh.job_id) and stale.token != fresh.token
    assert storage.jobs.get("j").lease == fresh
    assert not storage.jobs.renew(stale, lease_s=30)
    assert not storage.jobs.update_progress(stale, {"step": 99}, [{"step": 99}])
    assert not storage.jobs.finish(stale, "failed", {"error": "stale"})
    assert storage.jobs.release(stale) is None
    assert storage.jobs.retry_or_fail(stale, "stale") is None
    with pytest.raises(LeaseLost):
        finish(storage, stale, checkpoints[0], activate=True)
    with pytest.raises(NotFound):
        storage.models.get("m-j")
    job = storage.jobs.get("j")
    assert (job.status, job.progress, job.error, job.attempt, job.handbacks) == (
        "running", {"step": 0, "total_steps": 10}, None, 2, 0)
    assert storage.jobs.renew(fresh, lease_s=30) and storage.jobs.update_progress(fresh, {"step": 5}, [])
    assert finish(storage, fresh, checkpoints[0], activate=True).activated
    assert storage.models.active() == ("m-j", 1)


def test_if_better_activates_only_from_the_pointer_it_was_compared_with(storage, checkpoints):
    """The operator rolls back while the job trains: the model is kept, not activated, and the job says why."""
    register(storage, "operators-choice", checkpoints[1])
    for job_id in ("kept", "activates"):
        storage.jobs.submit(new_job(job_id), queue_limit=10)
    kept = storage.jobs.claim("w", "host", 1, lease_s=30).lease
    compared = storage.models.active()  # what the job was scored against: nothing activated yet
    assert compared == (None, 0)
    storage.models.activate("operators-choice")  # the rollback, while the job trains
    gate = "activated: scored 0.9000 on this job's held-out set, at least the active model 'default' (0.1000)"
    done = finish(storage, kept, checkpoints[0], activate=True, compared=compared,
                  outcome={"activation_reason": gate})
    assert done.activated is False and done.version is None
    assert "the active model changed while the job trained, from none (version 0) to 'operators-choice' " \
           "(version 1)" in done.reason and "the model is kept" in done.reason and "scored 0.9000" in done.reason
    job = storage.jobs.get("kept")
    assert (job.status, job.activated, job.activation_reason) == ("succeeded", False, done.reason)
    assert storage.models.active() == ("operators-choice", 1)
    assert storage.models.checkpoint_bytes("m-kept") == checkpoints[0].blob  # registered, not lost

    lease = storage.jobs.claim("w", "host", 1, lease_s=30).lease
    done = finish(storage, lease, checkpoints[2], activate=True, compared=storage.models.active())
    assert (done.activated, done.version) == (True, 2) and storage.models.active() == ("m-activates", 2)


def test_of_two_if_better_jobs_compared_with_one_pointer_the_last_finisher_cannot_override(storage, checkpoints):
    for job_id in ("first", "last"):
        storage.jobs.submit(new_job(job_id), queue_limit=10)
    first = storage.jobs.claim("w1", "host", 1, lease_s=30).lease
    last = storage.jobs.claim("w2", "host", 2, lease_s=30).lease
    compared = storage.models.active()  # both scored against the same model
    assert finish(storage, first, checkpoints[0], activate=True, compared=compared).activated
    done = finish(storage, last, checkpoints[1], activate=True, compared=compared)
    assert not done.activated and "to 'm-first' (version 1)" in done.reason
    assert storage.models.active() == ("m-first", 1)
    assert {m.id for m in storage.models.list()} == {"m-first", "m-last"}


def test_a_cancel_that_lands_after_training_keeps_the_model_and_does_not_activate_it(storage, checkpoints):
    storage.jobs.submit(new_job("j"), queue_limit=10)
    lease = storage.jobs.claim("w", "host", 1, lease_s=30).lease
    storage.jobs.request_cancel("j")  # the training process has already exited
    done = finish(storage, lease, checkpoints[0], activate=True)  # even 'always' honours it
    assert not done.activated and "a cancel was asked for after training had ended" in done.reason
    assert storage.models.active() == (None, 0) and storage.models.get("m-j").id == "m-j"
    assert storage.jobs.get("j").activation_reason == done.reason


def test_hand_backs_are_counted_and_capped(storage):
    storage.jobs.submit(new_job("j", max_attempts=1), queue_limit=10)
    for count in (1, 2):
        lease = storage.jobs.claim("w", "host", 1, lease_s=30).lease
        assert storage.jobs.release(lease, max_handbacks=2) == "queued"
        job = storage.jobs.get("j")
        assert (job.status, job.handbacks, job.attempt, job.lease_owner, job.lease_token) == (
            "queued", count, 0, None, None)
    lease = storage.jobs.claim("w", "host", 1, lease_s=30).lease
    assert storage.jobs.release(lease, max_handbacks=2) == "failed"
    job = storage.jobs.get("j")
    assert (job.status, job.handbacks, job.lease_owner) == ("failed", 3, None) and job.finished_at is not None
    assert "handed back to the queue 3 times" in job.error and "SEQ2SEQ_JOB_MAX_HANDBACKS" in job.error
    assert storage.jobs.claim("w", "host", 1, lease_s=30) is None


def test_a_cancelled_job_that_is_handed_back_ends_and_never_starts_again(storage):
    storage.jobs.submit(new_job("j"), queue_limit=10)
    lease = storage.jobs.claim("w", "host", 1, lease_s=30).lease
    storage.jobs.request_cancel("j")
    assert storage.jobs.release(lease, max_handbacks=5) == "cancelled"
    assert storage.jobs.get("j").status == "cancelled"
    assert storage.jobs.claim("w", "host", 1, lease_s=30) is None


def test_a_stalled_attempt_is_retried_while_attempts_remain_then_fails(storage):
    storage.jobs.submit(new_job("j", max_attempts=2), queue_limit=10)
    first = storage.jobs.claim("w", "host", 1, lease_s=30).lease
    assert storage.jobs.retry_or_fail(first, "no progress", {"progress": {"step": 3}}) == "queued"
    job = storage.jobs.get("j")
    assert (job.status, job.attempt, job.error, job.lease_owner, job.progress) == (
        "queued", 1, "no progress", None, {"step": 3})
    second = storage.jobs.claim("w", "host", 1, lease_s=30).lease
    assert storage.jobs.get("j").attempt == 2
    assert storage.jobs.retry_or_fail(second, "no progress again") == "failed"
    job = storage.jobs.get("j")
    assert (job.status, job.error, job.lease_expires_at) == ("failed", "no progress again", None)


def test_quotas_are_checked_inside_the_submit_transaction(storage, checkpoints):
    register(storage, "trained-0", checkpoints[0])
    n, limit = 10, 4  # one trained model, so three jobs fit
    barrier, accepted, refused = threading.Barrier(n), [], []

    def submit(i: int) -> None:
        barrier.wait()
        try:
            accepted.append(storage.jobs.submit(new_job(f"j{i}"), queue_limit=100, trained_models=limit).id)
        except QuotaFull as exc:
            refused.append(exc)

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) == 3 and len(refused) == n - 3 and all(e.limit == limit for e in refused)
    with pytest.raises(QuotaFull, match="job records"):
        storage.jobs.submit(new_job("x"), queue_limit=100, records=3)
    with pytest.raises(QueueFull):
        storage.jobs.submit(new_job("x"), queue_limit=3)


def hold_lock(storage, storage_url):
    """Another connection that holds what a registration needs: SQLite's write lock, or PostgreSQL's lock on the
    active pointer's row (as an activation in progress does). Returns (connection, engine)."""
    engine = make_engine(storage_url)
    conn = engine.connect()
    if is_postgres(conn):
        conn.begin()
        conn.execute(sa.text("SELECT * FROM active_model WHERE id = 1 FOR UPDATE"))
    else:
        conn.execution_options(sqlite_begin="IMMEDIATE").begin()  # BEGIN IMMEDIATE: the write lock, at once
    return conn, engine


def test_a_bounded_lock_wait_fails_transiently_writes_nothing_and_a_retry_registers(storage, storage_url, checkpoints):
    storage.jobs.submit(new_job("j"), queue_limit=10)
    lease = storage.jobs.claim("w", "host", 1, lease_s=60).lease
    conn, engine = hold_lock(storage, storage_url)
    try:
        with pytest.raises(Exception) as caught:
            finish(storage, lease, checkpoints[0], activate=True, compared=(None, 0), lock_wait_s=0.3)
        assert transient(caught.value) and "lock" in str(caught.value.orig), caught.value  # locked / lock timeout
        assert storage.jobs.get("j").status == "running"
    finally:
        conn.rollback()
        conn.close()
        engine.dispose()
    with pytest.raises(NotFound):
        storage.models.get("m-j")
    done = finish(storage, lease, checkpoints[0], activate=True, compared=(None, 0), lock_wait_s=0.3)
    assert done.activated and storage.models.active() == ("m-j", 1)
    # a retry after a commit whose answer was lost: the same claim finds its own outcome
    again = finish(storage, lease, checkpoints[0], activate=True, compared=(None, 0), lock_wait_s=0.3)
    assert (again.activated, again.reason) == (True, done.reason)
    with pytest.raises(LeaseLost):
        finish(storage, Lease("j", "w", "another-claim"), checkpoints[0])


def test_a_sweep_spares_a_lease_renewed_after_it_was_read(storage):
    """A sweep reads the expired leases, then requeues only those nobody renewed or re-claimed in between: a worker
    cut off with the database renews when it comes back, and keeps its job."""
    from tests.conftest import poll

    for job_id in ("a", "b"):
        storage.jobs.submit(new_job(job_id), queue_limit=10)
    comes_back = storage.jobs.claim("w1", "host", 1, lease_s=0.2).lease
    dead = storage.jobs.claim("w2", "host", 2, lease_s=0.2).lease
    seen = poll(lambda: (found := storage.jobs.expired_leases()).tokens.keys() == {"a", "b"} and found, timeout=10,
                message="both leases to expire")
    assert storage.jobs.renew(comes_back, lease_s=30)
    assert storage.jobs.requeue_expired(seen=seen) == {"requeued": [dead.job_id], "failed": [], "cancelled": []}
    assert storage.jobs.get(comes_back.job_id).lease == comes_back
    assert storage.jobs.requeue_expired(seen=seen)["requeued"] == []  # a second pass changes nothing
