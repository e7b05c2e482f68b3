"""The traffic split of a rollout.

A request with a session goes to the arm its session's bucket says: a keyed 64-bit hash of the rollout id and the
session, reduced to one of `BUCKETS` buckets. It depends on nothing a process chooses (no `hash()`, which
PYTHONHASHSEED salts), so every replica routes a session alike, and the candidate's buckets at a step are
`[0, percent * 100)`: a session in the candidate at 10% is still in it at 50%. Rollout ids salt the hash, so the
sessions in the first 10% differ from one rollout to the next. A request without a session is drawn per request.

Shadow rollouts send no traffic to the candidate; `shadow_sampled` picks the requests it decodes off the hot path,
deterministically per key under a different salt, so the shadow sample is independent of any split."""
from __future__ import annotations

import hashlib
import random
from enum import StrEnum

BUCKETS = 10_000  # a percent to two decimals
MAX_SESSION_LENGTH = 64

_SPLIT = b"rollout-split"
_SHADOW = b"rollout-shadow"
_random = random.Random()  # per-request draws; not a secret, so not `secrets`


class Arm(StrEnum):
    CONTROL = "control"
    CANDIDATE = "candidate"


def _hash64(salt: bytes, rollout_id: str | int, key: str) -> int:
    # Lengths are framed so that ("ab", "c") and ("a", "bc") never collide.
    rid, k = str(rollout_id).encode(), key.encode()
    data = len(rid).to_bytes(4, "big") + rid + len(k).to_bytes(4, "big") + k
    return int.from_bytes(hashlib.blake2b(data, digest_size=8, person=salt).digest(), "big")


def bucket(rollout_id: str | int, session: str) -> int:
    """The session's bucket in [0, BUCKETS) for this rollout (2**64 mod 10,000 leaves a bias under 1e-15)."""
    return _hash64(_SPLIT, rollout_id, session) % BUCKETS


def threshold(percent: float) -> int:
    """The number of buckets, counted from 0, that go to the candidate at `percent`."""
    if not 0 <= percent <= 100:
        raise ValueError(f"percent must be within [0, 100], not {percent}")
    return round(percent * BUCKETS / 100)


def choose_arm(rollout_id: str | int, percent: float, session: str | None = None, *,
               rng: random.Random | None = None) -> Arm:
    """The arm for one request: by the session's bucket when there is a session, otherwise drawn (from `rng`, or
    the module's generator)."""
    cut = threshold(percent)
    b = bucket(rollout_id, session) if session is not None else (rng or _random).randrange(BUCKETS)
    return Arm.CANDIDATE if b < cut else Arm.CONTROL


def shadow_sampled(rollout_id: str | int, rate: float, key: str | None = None, *,
                   rng: random.Random | None = None) -> bool:
    """Whether a shadow rollout decodes this request with the candidate too. With a key (an impression id, or the
    session and prefix) the answer is the same on every replica and every retry; without one it is drawn."""
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be within [0, 1], not {rate}")
    if key is None:
        return (rng or _random).random() < rate
    return _hash64(_SHADOW, rollout_id, key) < rate * 2**64
