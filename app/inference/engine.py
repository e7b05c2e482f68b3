"""The one object the HTTP layer calls for inference: resolve the model, check the input, answer from the
cache or decode in a batch. Answers are finished JSON bodies, so a cache hit costs a dictionary lookup.

Every request's decoding cost is estimated before it runs (model.decoding's cost model). Cheap requests are
batched on the event loop, which is fastest for this model size; a dear one (a large model, a long top-k)
runs alone on a worker thread, so the loop keeps answering everyone else, and a request that waits past
its deadline gets 503 with the reason.

Every top-k answer carries an impression (app.feedback.impressions) when the service mints them: the cache keeps
the body and the facts the token states, and each request splices its own token (its time, nonce and session)
into the cached body, so impressions cost one MAC and no database write.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache, partial
from typing import Any, Protocol, TypeVar

import torch

from model import decoding

from ..errors import InvalidInput, Unavailable
from ..feedback import impressions
from ..metrics import Metrics
from ..registry import LoadedModel, Registry
from . import answer_size
from .batching import Batcher, Work
from .cache import Answer, CacheKey, PredictKey, ResponseCache, TopKKey

HEAVY_QUEUE = 16  # dear requests waiting for the worker thread; beyond this, 503 at once
BATCH_BUDGET_FACTOR = 4  # a batch request may cost this many single requests' budgets

log = logging.getLogger("seq2seq.engine")
T = TypeVar("T")


class Minter(Protocol):
    """What the engine needs of app.feedback.service.Impressions: a token for an answer, or None (impressions
    are off, or this replica has no key yet)."""

    def mint(self, facts: bytes, session: str | None, tag: bytes | None = None) -> bytes | None: ...

    @property
    def minting(self) -> bool: ...


def _dumps(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def check_prefix(field: str, prefix: list[int], loaded: LoadedModel) -> None:
    """The model's own rule (model.decoding.prefix_error), worded for the field the client sent."""
    problem = decoding.prefix_error(prefix, loaded.config)
    if problem is not None:
        raise InvalidInput(field, f"{problem} (model {loaded.id!r})")


def check_prefixes(prefixes: list[list[int]], loaded: LoadedModel, field: str = "prefixes") -> None:
    if len(prefixes) == 1:  # the plain rule: cheaper for one prefix than the tensors first_error builds
        problem = decoding.prefix_error(prefixes[0], loaded.config)
        found = None if problem is None else (0, problem)
    else:
        found = decoding.first_error(prefixes, loaded.config)
    if found is not None:
        raise InvalidInput(f"{field}[{found[0]}]", f"{found[1]} (model {loaded.id!r})")


def check_answer_size(size: int, limit: int, count: int, what: str, loaded: LoadedModel, fewer: str,
                      field: str = "prefixes") -> None:
    """A batch whose answer could exceed `limit` bytes is refused before anything is decoded."""
    if size > limit:
        fit = max(1, count * limit // size)
        raise InvalidInput(field, f"{what} for these {count} prefixes on model {loaded.id!r} could answer up to "
                                  f"{size:,} bytes; a batch answer holds at most {limit:,} "
                                  f"(SEQ2SEQ_MAX_BATCH_ANSWER_BYTES): send at most about {fit:,} prefixes{fewer}")


@lru_cache(maxsize=4096)  # a few hundred (config, length, k) combinations per model: price each once
def _topk_plan(config, prefix_len: int, k: int, budget: int) -> decoding.Plan:
    return decoding.topk_plan(config, prefix_len, k, budget=budget)


@lru_cache(maxsize=1024)
def _greedy_work(config, prefix_len: int) -> int:
    return decoding.greedy_cost(config, [prefix_len]).work


class Engine:
    def __init__(self, registry: Registry, metrics: Metrics, cache_size: int, max_batch: int, max_wait_s: float,
                 threads: int = 1, use_thread: bool = False, decode_budget: int = 2_000_000_000,
                 inline_budget: int = 10_000_000, timeout_s: float = 10.0, minter: Minter | None = None):
        self.registry = registry
        self.minter = minter
        self.metrics = metrics
        self.cache = ResponseCache(cache_size, metrics.cache.labels("hit").inc, metrics.cache.labels("miss").inc)
        registry.on_forget.append(self.cache.forget_model)
        self.batcher = Batcher(self._run_batch, max_batch, max_wait_s, on_batch=metrics.batch_size.observe,
                               thread_init=lambda: torch.set_num_threads(threads), use_thread=use_thread)
        self.decode_budget = decode_budget
        self.inline_budget = inline_budget
        self.timeout_s = timeout_s
        self._heavy = ThreadPoolExecutor(max_workers=1, thread_name_prefix="heavy-decode",
                                         initializer=lambda: torch.set_num_threads(threads))
        self._heavy_waiting = 0
        self._inflight: dict[CacheKey, asyncio.Future[Answer]] = {}  # cache misses being decoded, shared by their twins

    async def predict(self, model_id: str | None, prefix: list[int], attention: bool, field: str) -> bytes:
        loaded = await self.registry.resolve_async(model_id)
        check_prefix(field, prefix, loaded)
        key = PredictKey(loaded.id, tuple(prefix), attention and loaded.config.attention)
        answer = self.cache.get(key) or await self._answer(key, loaded, _greedy_work(loaded.config, len(prefix)))
        return answer.body

    async def topk(self, model_id: str | None, prefix: list[int], k: int, field: str,
                   session: str | None = None, tag: bytes | None = None, head: bytes = b"{") -> bytes:
        """The answer's JSON; `head` replaces its opening brace (the route's `{"alias":...,`), so the answer, the
        alias and the impression are joined in one copy."""
        loaded = await self.registry.resolve_async(model_id)
        check_prefix(field, prefix, loaded)
        key = TopKKey(loaded.id, tuple(prefix), k)
        answer = self.cache.get(key)
        if answer is None:  # priced only on a miss: a hit costs a dictionary lookup
            plan = _topk_plan(loaded.config, len(prefix), k, self.decode_budget)
            if not plan.within_budget:
                raise InvalidInput(field, f"top-{k} for this prefix on model {loaded.id!r} costs more than this "
                                          "service allows; ask for fewer suggestions or a longer prefix")
            answer = await self._answer(key, loaded, plan.work)
        return self._impressed(answer, session, tag, head)

    def impression(self, answer: Answer, session: str | None, tag: bytes | None = None) -> bytes | None:
        """This request's impression of a top-k answer (tag: the rollout it was served under,
        app.feedback.impressions.rollout_tag); None when the service mints none."""
        return self.minter.mint(answer.facts, session, tag) if self.minter is not None else None

    @property
    def minting(self) -> bool:
        return self.minter is not None and self.minter.minting

    def _impressed(self, answer: Answer, session: str | None, tag: bytes | None = None, head: bytes = b"{") -> bytes:
        """The body with this request's impression, `{..., "impression": "TOKEN"}`, opening with `head`; the
        cached body as it is when the service mints none."""
        token = self.impression(answer, session, tag)
        body = answer.body
        if token is None:
            return body if head == b"{" else head + body[1:]
        return b"".join((head, body[1:-1], b',"impression":"', token, b'"}'))

    async def _answer(self, key: CacheKey, loaded: LoadedModel, work: int) -> Answer:
        """Decode a cache miss, once however many requests ask for it at the same moment."""
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        pending = self._inflight[key] = asyncio.get_running_loop().create_future()
        try:
            body = await self._decode(key, loaded, work)
            pending.set_result(body)
            return body
        except Exception as exc:
            pending.set_exception(exc)
            pending.exception()  # retrieved: nobody else may be waiting
            raise
        except BaseException:  # cancelled (shutdown): the twins are cancelled too
            pending.cancel()
            raise
        finally:
            del self._inflight[key]

    async def _decode(self, key: CacheKey, loaded: LoadedModel, work: int) -> Answer:
        """Batched on the event loop when cheap, alone on the worker thread when dear."""
        if work <= self.inline_budget:
            answer = await self.batcher.submit((loaded.id, type(key)), (loaded, key))
        else:
            answer = (await self._decode_alone(loaded, [key]))[key]
        self.cache.put(key, answer)
        return answer

    # -- many prefixes in one request ------------------------------------------------------------------
    # An answer lists one item per prefix, repeats included (they are decoded once): its size is bounded before
    # anything is decoded, so a small request cannot ask for a large answer served again and again from the cache.
    # The batch routes and the Open Inference Protocol (app.http.oip) share greedy_answers and topk_answers (the
    # prefix rule, the pricing, the cache and the decoding); each bounds its own answer's encoding first.
    async def resolve(self, model_id: str | None) -> LoadedModel:
        return await self.registry.resolve_async(model_id)

    async def predict_batch(self, model_id: str | None, prefixes: list[list[int]], attention: bool,
                            max_answer_bytes: int) -> bytes:
        loaded = await self.resolve(model_id)
        want_attention = attention and loaded.config.attention
        size = answer_size.batch(loaded.id, map(len, prefixes), lambda n: answer_size.predict_item(
            loaded.config, loaded.id, n, want_attention))
        check_answer_size(size, max_answer_bytes, len(prefixes), "greedy decoding" + " with attention" * want_attention,
                          loaded, "" if not want_attention else ", or leave attention out")
        answers = await self.greedy_answers(loaded, prefixes, want_attention)
        return _batch_body(loaded.id, [answer.body for answer in answers])

    async def greedy_answers(self, loaded: LoadedModel, prefixes: list[list[int]], attention: bool = False,
                             field: str = "prefixes") -> list[Answer]:
        """One greedy answer per prefix, in order, after the model's prefix rule and the batch's price."""
        check_prefixes(prefixes, loaded, field)
        want_attention = attention and loaded.config.attention
        keys: list[CacheKey] = [PredictKey(loaded.id, tuple(p), want_attention) for p in prefixes]
        work = _greedy_work(loaded.config, len(prefixes[0])) if len(prefixes) == 1 else \
            decoding.greedy_cost(loaded.config, [len(p) for p in prefixes]).work
        if work > self.decode_budget:
            raise InvalidInput(field, f"greedy decoding of these {len(prefixes)} prefixes on model {loaded.id!r} "
                                      "costs more than this service allows; send fewer")
        return await self._answer_many(loaded, keys, work)

    async def topk_batch(self, model_id: str | None, prefixes: list[list[int]], k: int, max_answer_bytes: int,
                         session: str | None = None, tag: bytes | None = None) -> bytes:
        loaded = await self.resolve(model_id)
        session_len = len(session) if session else 0
        minting = self.minting
        size = answer_size.batch(loaded.id, map(len, prefixes), lambda n: answer_size.topk_item(
            loaded.config, loaded.id, n, k) + (answer_size.impression(loaded.id, n, k, session_len, None if tag is None else len(tag)) if minting else 0))
        check_answer_size(size, max_answer_bytes, len(prefixes), f"top-{k}", loaded, f" at k={k}, or ask for a smaller k")
        answers = await self.topk_answers(loaded, prefixes, k)
        return _batch_body(loaded.id, [self._impressed(answer, session, tag) for answer in answers])

    async def topk_answers(self, loaded: LoadedModel, prefixes: list[list[int]], k: int,
                           field: str = "prefixes") -> list[Answer]:
        """One top-k answer per prefix, in order, after the model's prefix rule and the batch's price (impressions
        are the caller's: they depend on the request)."""
        check_prefixes(prefixes, loaded, field)
        keys: list[CacheKey] = [TopKKey(loaded.id, tuple(p), k) for p in prefixes]
        work = 0
        for size, count in Counter(len(p) for p in set(map(tuple, prefixes))).items():
            plan = _topk_plan(loaded.config, size, k, self.decode_budget)
            if not plan.within_budget:
                raise InvalidInput("k", f"top-{k} for {size}-token prefixes on model {loaded.id!r} costs more than "
                                        "this service allows")
            work += count * plan.work
        if work > BATCH_BUDGET_FACTOR * self.decode_budget:
            raise InvalidInput(field, f"top-{k} for these {len(prefixes)} prefixes on model {loaded.id!r} costs "
                                      "more than this service allows; send fewer or ask for a smaller k")
        return await self._answer_many(loaded, keys, work)

    async def score(self, model_id: str | None, sequences: list[list[int]], prefix_length: int,
                    max_answer_bytes: int) -> bytes:
        """log P(each sequence's digits after its first prefix_length | those digits), priced like a batch of
        greedy decodings (one teacher-forced pass each) and bounded like a batch answer; never cached."""
        loaded = await self.resolve(model_id)
        problem = decoding.score_error(sequences, prefix_length, loaded.config)
        if problem is not None:
            index, reason = problem
            raise InvalidInput("prefix_length" if index is None else f"sequences[{index}]",
                               f"{reason} (model {loaded.id!r})")
        size = answer_size.batch(loaded.id, [prefix_length] * len(sequences), lambda n: answer_size.SCORE_ITEM)
        check_answer_size(size, max_answer_bytes, len(sequences), "scoring", loaded, "", field="sequences")
        work = decoding.greedy_cost(loaded.config, [prefix_length] * len(sequences)).work
        if work > BATCH_BUDGET_FACTOR * self.decode_budget:
            raise InvalidInput("sequences", f"scoring these {len(sequences)} sequences on model {loaded.id!r} costs "
                                            "more than this service allows; send fewer")
        prefixes = [seq[:prefix_length] for seq in sequences]
        if work <= self.inline_budget:
            scores = decoding.score(loaded.model, prefixes, sequences)
        else:
            scores = await self._alone(loaded, decoding.score, loaded.model, prefixes, sequences)
        items = [{"log_probability": s, "probability": math.exp(s)} for s in scores]
        return _dumps({"model": loaded.id, "results": items})

    async def _answer_many(self, loaded: LoadedModel, keys: list[CacheKey], work: int) -> list[Answer]:
        """Cached answers as they are, the rest decoded together; one answer per key, in request order. A lone
        key goes the single requests' way (the batcher when cheap)."""
        if len(keys) == 1:  # one prefix: batched with whatever else arrives, and decoded once with its twins
            key = keys[0]
            return [self.cache.get(key) or await self._answer(key, loaded, work)]
        bodies = {key: answer for key in dict.fromkeys(keys) if (answer := self.cache.get(key)) is not None}
        missing = [key for key in dict.fromkeys(keys) if key not in bodies]
        if missing:
            if work <= self.inline_budget:
                fresh = _decode(loaded, missing, self.decode_budget)
            else:
                fresh = await self._decode_alone(loaded, missing)
            for key, body in fresh.items():
                self.cache.put(key, body)
            bodies.update(fresh)
        return [bodies[key] for key in keys]

    async def _decode_alone(self, loaded: LoadedModel, keys: list[CacheKey]) -> dict[CacheKey, Answer]:
        """A dear request, on the worker thread: the event loop stays free, and the wait is bounded."""
        return await self._alone(loaded, _decode, loaded, keys, self.decode_budget)

    async def _alone(self, loaded: LoadedModel, work: Callable[..., T], *args: Any) -> T:
        if self._heavy_waiting >= HEAVY_QUEUE:
            raise Unavailable(f"{self._heavy_waiting} costly requests are already waiting; try again shortly",
                              retry_after=2)
        self._heavy_waiting += 1
        self.metrics.decoded_alone.inc()
        future = asyncio.get_running_loop().run_in_executor(self._heavy, work, *args)
        try:
            return await asyncio.wait_for(asyncio.shield(future), self.timeout_s)
        except TimeoutError:
            future.cancel()  # never starts if still queued; one already running finishes within its budget
            raise Unavailable(f"decoding on model {loaded.id!r} did not finish within {self.timeout_s:g} s; "
                              "the service is busy with costly requests", retry_after=5) from None
        finally:
            self._heavy_waiting -= 1

    def close(self) -> None:
        self._heavy.shutdown(wait=True, cancel_futures=True)

    # -- on the inference thread -------------------------------------------------------------------
    def _run_batch(self, batch: list[Work]) -> list[Answer | Exception]:
        results: list[Answer | Exception] = [RuntimeError("not decoded")] * len(batch)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, work in enumerate(batch):
            groups[work.group].append(i)
        for members in groups.values():
            loaded: LoadedModel = batch[members[0]].payload[0]
            keys: list[CacheKey] = [batch[i].payload[1] for i in members]
            try:
                bodies = _decode(loaded, list(dict.fromkeys(keys)), self.decode_budget)  # twins decoded once
                for i, key in zip(members, keys):
                    results[i] = bodies[key]
            except Exception as exc:
                log.exception("decoding failed for model %s", loaded.id)
                for i in members:
                    results[i] = exc
        return results


def _batch_body(model_id: str, items: list[bytes]) -> bytes:
    return _dumps({"model": model_id})[:-1] + b',"results":[' + b",".join(items) + b"]}"


def _decode(loaded: LoadedModel, keys: list[CacheKey], budget: int) -> dict[CacheKey, Answer]:
    """Answer bodies for distinct keys of one kind (all PredictKey or all TopKKey), already checked."""
    prefixes = list(dict.fromkeys(key.prefix for key in keys))
    if isinstance(keys[0], PredictKey):
        return _predict(loaded, keys, prefixes)  # type: ignore[arg-type]
    return _topk(loaded, keys, prefixes, budget)  # type: ignore[arg-type]


def _predict(loaded: LoadedModel, keys: list[PredictKey], prefixes: list[tuple[int, ...]]) -> dict[CacheKey, Answer]:
    want_attention = any(key.attention for key in keys)
    found = decoding.greedy_unchecked(loaded.model, [list(p) for p in prefixes], want_attention)
    decoded = dict(zip(prefixes, found))
    L = loaded.config.seq_length
    bodies: dict[CacheKey, Answer] = {}
    for key in keys:
        d = decoded[key.prefix]
        probability = math.exp(d.score)
        bodies[key] = Answer(partial(_greedy_body, loaded.id, key, d, probability, L), sequences=(d.sequence,),
                             probabilities=(probability,))
    return bodies


def _greedy_body(model_id: str, key: PredictKey, d: decoding.Decoded, probability: float, L: int) -> bytes:
    first = decoding.known_tokens(len(key.prefix), L)
    payload: dict[str, object] = {
        "model": model_id, "prefix": list(key.prefix), "sequence": d.sequence, "score": d.score,
        "probability": probability,
        "steps": [{"token": t, "probability": p} for t, p in zip(d.sequence[first:], d.token_probs or ())]}
    if key.attention:
        payload["attention"] = d.attention
    return _dumps(payload)


def _topk(loaded: LoadedModel, keys: list[TopKKey], prefixes: list[tuple[int, ...]],
          budget: int) -> dict[CacheKey, Answer]:
    k_max = max(key.k for key in keys)
    found = decoding.topk_unchecked(loaded.model, [list(p) for p in prefixes], k_max, budget=budget)
    by_prefix = dict(zip(prefixes, found))
    bodies: dict[CacheKey, Answer] = {}
    for key in keys:
        chosen = by_prefix[key.prefix][: key.k]
        probabilities = tuple(math.exp(c.score) for c in chosen)
        sequences = tuple(c.sequence for c in chosen)
        bodies[key] = Answer(partial(_topk_body, loaded.id, key, chosen, probabilities),
                             impressions.facts(loaded.id, key.prefix, key.k, list(sequences)), sequences, probabilities)
    return bodies


def _topk_body(model_id: str, key: TopKKey, chosen: list[decoding.Candidate], probabilities: tuple[float, ...]) -> bytes:
    suggestions = [{"sequence": c.sequence, "score": c.score, "probability": p} for c, p in zip(chosen, probabilities)]
    return _dumps({"model": model_id, "prefix": list(key.prefix), "k": key.k, "suggestions": suggestions})
