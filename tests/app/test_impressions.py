"""The impression token on its own: what it carries, that any change to it is refused, that it expires, and that
its length is exactly what the batch answer bound counts."""
from __future__ import annotations

import base64
import random

import pytest

from app.feedback.impressions import MAC_BYTES, VERSIONS, Expired, Forged, Signer, encoded_length, facts, rollout_tag

KEY = b"k" * 32
SUGGESTIONS = [[7, 2, 8, 4, 3], [7, 6, 5, 2, 8], [7, 9, 1, 2, 4]]


def test_a_token_carries_model_prefix_k_session_time_and_the_suggestions():
    signer = Signer(KEY, ttl_s=60)
    token = signer.mint(facts("default", [7], 3, SUGGESTIONS), b"user-1", now=1_000_000).decode()
    found = signer.verify(token, now=1_000_030)
    assert (found.model, found.prefix, found.k, found.session, found.issued) == ("default", (7,), 3, "user-1", 1_000_000)
    assert [found.rank_of(s) for s in SUGGESTIONS] == [1, 2, 3]
    assert found.rank_of([7, 1, 1, 1, 1]) is None
    assert len(found.id) == 2 * MAC_BYTES


def test_two_tokens_for_the_same_answer_are_two_impressions():
    signer = Signer(KEY, ttl_s=60)
    same = facts("default", [7], 3, SUGGESTIONS)
    a, b = (signer.verify(signer.mint(same, None, now=5).decode(), now=5) for _ in range(2))
    assert a.id != b.id and a.session is None


@pytest.mark.parametrize("mac", sorted(VERSIONS))
def test_any_flipped_bit_or_another_key_is_refused(mac):
    signer = Signer(KEY, ttl_s=60, mac=mac)
    raw = base64.urlsafe_b64decode(signer.mint(facts("default", [7, 2], 3, SUGGESTIONS), b"s", now=5) + b"==")
    rng = random.Random(0)
    for position in range(len(raw)):
        flipped = bytearray(raw)
        flipped[position] ^= 1 << rng.randrange(8)
        with pytest.raises(Forged):
            signer.verify(base64.urlsafe_b64encode(bytes(flipped)).decode(), now=5)
    for junk in ("", "AA", "not base64 at all!", "A" * 1000):
        with pytest.raises(Forged):
            signer.verify(junk, now=5)
    for other in VERSIONS:
        with pytest.raises(Forged):
            Signer(b"o" * 32, ttl_s=60, mac=other).verify(base64.urlsafe_b64encode(raw).decode(), now=5)


def test_a_token_expires_after_the_ttl():
    signer = Signer(KEY, ttl_s=60)
    token = signer.mint(facts("default", [7], 3, SUGGESTIONS), None, now=1000).decode()
    assert signer.verify(token, now=1060).model == "default"
    with pytest.raises(Expired, match="SEQ2SEQ_IMPRESSION_TTL_S"):
        signer.verify(token, now=1061)


@pytest.mark.parametrize("model_id,prefix,k,session", [
    ("default", [7], 3, b""), ("m" * 64, list(range(64)), 50, b"s" * 64), ("x", [999, 0], 1, b"abc")])
def test_the_length_is_known_before_the_token_is_made(model_id, prefix, k, session):
    suggestions = [[1] * 64] * k
    token = Signer(KEY, 60).mint(facts(model_id, prefix, k, suggestions), session)
    assert len(token) == encoded_length(model_id, len(prefix), k, len(session))
    assert len(token) <= 1024  # FeedbackRequest's bound on `impression`


def test_a_token_minted_under_a_rollout_names_it_and_its_length_is_known():
    signer = Signer(KEY, 60)
    tag = rollout_tag("r-20260101-120000-abcdef", 2, "candidate")
    token = signer.mint(facts("alt", [7, 2], 3, SUGGESTIONS), b"user-1", tag=tag).decode()
    assert len(token) == encoded_length("alt", 2, 3, len(b"user-1"), len(tag))
    seen = signer.verify(token)
    assert (seen.rollout, seen.model, seen.session) == (("r-20260101-120000-abcdef", 2, "candidate"), "alt", "user-1")
    plain = signer.mint(facts("alt", [7], 3, SUGGESTIONS), None).decode()
    assert signer.verify(plain).rollout is None
    assert [base64.urlsafe_b64decode(t + "==")[0] for t in (plain, token)] == list(VERSIONS["blake2b"])


@pytest.mark.parametrize("minted_with", sorted(VERSIONS))
def test_every_replica_reads_both_formats_whichever_it_mints(minted_with):
    """A rolling upgrade: feedback on an impression reaches a replica that mints the other format (HMAC-SHA256,
    formats 1 and 2, is what replicas before keyed BLAKE2b mint and read)."""
    minter = Signer(KEY, 60, mac=minted_with)
    tag = rollout_tag("r-1", 1, "control")
    tokens = [minter.mint(facts("alt", [7], 3, SUGGESTIONS), b"u", now=10, tag=t).decode() for t in (None, tag)]
    assert [base64.urlsafe_b64decode(t + "==")[0] for t in tokens] == list(VERSIONS[minted_with])
    for reader in VERSIONS:
        seen = [Signer(KEY, 60, mac=reader).verify(t, now=10) for t in tokens]
        assert [(s.model, s.session, s.rollout) for s in seen] == [("alt", "u", None), ("alt", "u", ("r-1", 1, "control"))]
        assert [s.rank_of(SUGGESTIONS[1]) for s in seen] == [2, 2]


@pytest.mark.parametrize("mac", sorted(VERSIONS))
def test_the_fast_path_mints_what_the_general_one_does(mac):
    """Signer.plain (what every untagged top-k answer calls) against Signer.mint: same format, same facts, both
    verified, and its length the one the answer-size bound counts."""
    signer = Signer(KEY, 60, mac=mac)
    for session in (b"", b"user-1", b"s" * 64):
        fast = signer.plain(facts("alt", [7, 2], 3, SUGGESTIONS), session).decode()
        slow = signer.mint(facts("alt", [7, 2], 3, SUGGESTIONS), session).decode()
        assert len(fast) == len(slow) == encoded_length("alt", 2, 3, len(session))
        seen = [signer.verify(t) for t in (fast, slow)]
        assert [(s.model, s.prefix, s.session, s.rollout) for s in seen] == [("alt", (7, 2), session.decode() or None,
                                                                                None)] * 2
        assert base64.b64decode(fast)[0] == VERSIONS[mac][0] and seen[0].id != seen[1].id


def test_tokens_minted_as_unpadded_base64url_before_are_still_read():
    """Replicas before 2026-12-02 minted base64url without padding; feedback on those reaches replicas after."""
    signer = Signer(KEY, 60)
    for session in (b"", b"u", b"us"):  # every padding length
        raw = base64.b64decode(signer.mint(facts("alt", [7], 3, SUGGESTIONS), session, now=10))
        old = base64.urlsafe_b64encode(raw).decode().rstrip("=")
        assert signer.verify(old, now=10).session == (session.decode() or None)
