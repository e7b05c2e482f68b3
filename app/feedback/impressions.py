"""Impressions: a signed, self-describing token in every top-k answer, so the service can later tell which
model suggested what, for which prefix and session, without writing anything while it answers.

A token is base64 (standard alphabet, padded) of a small binary payload and a MAC:

    version (1) | issued, Unix seconds (4) | nonce (4) | session length (1) | session
    | facts: model length (1) | model | k (1) | prefix length (1) | prefix (2 bytes a token)
             | suggestions (1) | a 4-byte digest per suggestion, best first
    | MAC of all the above (12 bytes)

Version 2, minted for answers served under a rollout, adds after the session: tag length (1) | rollout id | step (1)
| arm (1: 0 control, 1 candidate, 2 control and sampled for the shadow), so feedback counts per arm on whichever
replica takes it. Versions 1 and 2 are MACed with HMAC-SHA256 cut to 12 bytes; versions 3 and 4 are the same
layouts MACed with keyed BLAKE2b (12-byte digest, a key derived from the shared one), one compression of a small
payload where HMAC runs SHA-256 twice: a mint went from 2.8 to 1.3 us, and the token was most of what impressions
cost a cached /topk. Every replica verifies all four; SEQ2SEQ_IMPRESSION_MAC=hmac-sha256 mints 1 and 2, for a
rolling upgrade while replicas from before formats 3 and 4 still take feedback. Tokens were base64url without
padding until 2026-12-02: the standard alphabet is what binascii writes in one call (the translation and the
strip took about an eighth of a mint inside the server), JSON carries it as it is, and verification reads either.

The facts depend only on the cached answer, so they are built once when the answer is decoded and kept beside
it; a request adds the time, a nonce (two users who ask the same thing in the same second get two
impressions; the fast path takes the clock's nanoseconds, which differ between any two mints of one process) and
its session, then one MAC on a precomputed key. A digest per suggestion lets feedback check
that `accepted` was among them and find its rank, with k short digests rather than k sequences. The id of an
impression, its unique key in the feedback table, is its MAC in hex.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import random
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

MacName = Literal["blake2b", "hmac-sha256"]
VERSIONS: dict[MacName, tuple[int, int]] = {"hmac-sha256": (1, 2), "blake2b": (3, 4)}  # (plain, tagged)
TAGGED = frozenset(tagged for _, tagged in VERSIONS.values())
HMAC_VERSIONS = frozenset(VERSIONS["hmac-sha256"])
READ = frozenset(version for pair in VERSIONS.values() for version in pair)
ARMS = ("control", "candidate", "shadow")  # the tag's arm byte; "shadow": served by the control, sampled for the shadow
# Sized for what each part must resist, since every /topk answer carries the token: a 96-bit MAC (forgery), a 32-bit
# digest per suggestion (it only has to tell the k suggestions of one signed answer apart, and claiming an
# unseen sequence needs a 2^-32 match), a 32-bit nonce (with the second and the session, tells repeats apart).
MAC_BYTES = 12
DIGEST_BYTES = 4
NONCE_BYTES = 4
NONCE_BITS = 8 * NONCE_BYTES
_HEAD = struct.Struct(">BII")  # version, issued, nonce
_MINT_HEAD = struct.Struct(">BIIB")  # the same, and the session's length
# Minting runs for every top-k answer: what it calls, bound once (a module attribute lookup each is measurable).
_pack, _time, _time_ns, _nonce = _MINT_HEAD.pack, time.time, time.time_ns, random.getrandbits
_b64, _join = binascii.b2a_base64, b"".join
_TOKENS = {n: struct.Struct(f">{n}H") for n in range(0, 256)}


def _tokens(tokens: Sequence[int]) -> bytes:
    return _TOKENS[len(tokens)].pack(*tokens)


def suggestion_digest(sequence: Sequence[int]) -> bytes:
    """What a token keeps of one suggestion: enough to recognise it again, not to rebuild it."""
    return hashlib.blake2b(_tokens(sequence), digest_size=DIGEST_BYTES).digest()


def facts(model_id: str, prefix: Sequence[int], k: int, suggestions: Sequence[Sequence[int]]) -> bytes:
    """The part of a token that depends only on the answer: built once per decoded answer and cached with it."""
    model = model_id.encode()
    return (bytes((len(model),)) + model + bytes((k, len(prefix))) + _tokens(prefix)
            + bytes((len(suggestions),)) + b"".join(suggestion_digest(s) for s in suggestions))


def rollout_tag(rollout_id: str, step: int, arm: str) -> bytes:
    """What a version-2 token says of the rollout an answer was served under."""
    return rollout_id.encode() + bytes((min(step, 255), ARMS.index(arm)))


def encoded_length(model_id: str, prefix_len: int, suggestions: int, session_len: int, tag_len: int | None = None
                   ) -> int:
    """The exact length of a token's text, for the answer-size bound; tag_len: the
    rollout tag's length (version 2), None for none."""
    raw = (_HEAD.size + 1 + session_len + (0 if tag_len is None else 1 + tag_len) + 1 + len(model_id.encode()) + 2 + 2 * prefix_len + 1
           + DIGEST_BYTES * suggestions + MAC_BYTES)
    return 4 * -(-raw // 3)  # padded


@dataclass(frozen=True, slots=True)
class Impression:
    """A verified token's content."""

    id: str  # the MAC in hex: unique per impression
    issued: int  # Unix seconds
    session: str | None
    model: str
    k: int
    prefix: tuple[int, ...]
    digests: tuple[bytes, ...]  # one per suggestion, best first
    rollout: tuple[str, int, str] | None = None  # (rollout id, step, arm) for an answer served under a rollout

    def rank_of(self, sequence: Sequence[int]) -> int | None:
        """1 for the best suggestion; None when the sequence was not among them."""
        digest = suggestion_digest(sequence)
        return self.digests.index(digest) + 1 if digest in self.digests else None


class Forged(ValueError):
    """Not a token this service signed, or one altered since."""


class Expired(ValueError):
    pass


class Signer:
    """Mints and verifies tokens with one key (shared by every replica: see app.feedback.service)."""

    def __init__(self, key: bytes, ttl_s: float, mac: MacName = "blake2b"):
        self._hmac = hmac.new(key, digestmod=hashlib.sha256)  # copied per token: the key's pads are computed once
        # Keyed once: BLAKE2b spends a whole compression on its key block, so each token copies this state instead.
        self._blake = hashlib.blake2b(key=hashlib.sha256(b"seq2seq impressions, keyed BLAKE2b\0" + key).digest(),
                                      digest_size=MAC_BYTES)
        self._plain, self._tagged = VERSIONS[mac]
        self.ttl_s = ttl_s
        # What every untagged top-k answer calls: the general mint's work in the fewest steps. Measured inside the
        # server (a cached /topk, impressions toggled every few hundred requests), each step of a mint cost three
        # to five times what it costs in a loop of mints alone, so the branches the common case never takes cost
        # as much as the MAC.
        self.plain: Callable[[bytes, bytes], bytes] = (
            _blake_plain(self._blake, self._plain) if mac == "blake2b" else lambda facts, session: self.mint(facts, session))

    def mint(self, facts: bytes, session: bytes | None, now: float | None = None, tag: bytes | None = None) -> bytes:
        """The token's ASCII bytes, ready to splice into a JSON answer; with a rollout tag (rollout_tag), the
        tagged format."""
        session = session or b""
        version = self._plain if tag is None else self._tagged
        head = _pack(version, int(_time() if now is None else now), _nonce(NONCE_BITS), len(session))
        payload = (_join((head, session, facts)) if tag is None else
                   _join((head, session, bytes((len(tag),)), tag, facts)))
        return _b64(payload + self._mac(payload, version), newline=False)

    def _mac(self, payload: bytes, version: int) -> bytes:
        mac = (self._hmac if version in HMAC_VERSIONS else self._blake).copy()
        mac.update(payload)
        return mac.digest()[:MAC_BYTES]  # BLAKE2b's digest is already that long

    def verify(self, token: str, now: float | None = None) -> Impression:
        """The impression a token describes; Forged or Expired otherwise."""
        try:  # base64url unpadded (minted before 2026-12-02) or standard padded: urlsafe_b64decode reads both
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            raise Forged("not an impression this service issued") from None
        payload, given = raw[:-MAC_BYTES], raw[-MAC_BYTES:]
        if len(raw) <= _HEAD.size + MAC_BYTES or not hmac.compare_digest(self._mac(payload, raw[0]), given):
            raise Forged("not an impression this service issued, or altered since")
        impression = _parse(payload, given.hex())  # signed by us: well formed unless the format changed
        if (time.time() if now is None else now) > impression.issued + self.ttl_s:
            raise Expired(f"issued more than {self.ttl_s:g} s ago (SEQ2SEQ_IMPRESSION_TTL_S)")
        return impression


def _blake_plain(blake: hashlib.blake2b, version: int) -> Callable[[bytes, bytes], bytes]:
    """Signer.mint(facts, session) for an untagged token MACed with keyed BLAKE2b (`blake`, already keyed)."""
    salt = _nonce(NONCE_BITS)  # two replicas whose clocks agree to the nanosecond still mint two nonces

    def plain(facts: bytes, session: bytes) -> bytes:
        ns = _time_ns()  # the second, and the nanoseconds as the nonce: one call where two were
        payload = _join((_pack(version, ns // 1_000_000_000, (ns ^ salt) & 0xFFFFFFFF, len(session)), session, facts))
        keyed = blake.copy()
        keyed.update(payload)
        return _b64(payload + keyed.digest(), newline=False)
    return plain


def _parse(payload: bytes, mac_hex: str) -> Impression:
    try:
        version, issued, _ = _HEAD.unpack_from(payload)
        if version not in READ:
            raise Forged(f"an impression of format {version}, which this version does not read")
        at = _HEAD.size
        n = payload[at]
        session = payload[at + 1: at + 1 + n].decode("ascii") if n else None
        at += 1 + n
        rollout = None
        if version in TAGGED:
            n = payload[at]
            tag = payload[at + 1: at + 1 + n]
            rollout = (tag[:-2].decode(), tag[-2], ARMS[tag[-1]])
            at += 1 + n
        n = payload[at]
        model = payload[at + 1: at + 1 + n].decode()
        at += 1 + n
        k, n = payload[at], payload[at + 1]
        prefix = _TOKENS[n].unpack_from(payload, at + 2)
        at += 2 + 2 * n
        n = payload[at]
        digests = tuple(payload[at + 1 + i * DIGEST_BYTES: at + 1 + (i + 1) * DIGEST_BYTES] for i in range(n))
        if at + 1 + n * DIGEST_BYTES != len(payload):
            raise Forged("an impression of the wrong length")
    except (IndexError, struct.error, UnicodeDecodeError):
        raise Forged("not an impression this service issued") from None
    return Impression(mac_hex, issued, session, model, k, tuple(prefix), digests, rollout)
