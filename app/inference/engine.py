"""The one object the HTTP layer calls for inference: resolve the model, check the input, answer from the
cache or decode in a batch. Answers are finished JSON bodies, so a cache hit costs a dictionary lookup.

Every request's decoding cost is estimated before it runs (model.decoding's cost model). Cheap requests are
batched on the event loop, which is fastest for this model size; a dear one (a large model, a long top-k)
runs alone on a worker thread, so the loop keeps answering everyone else, and a request that waits past
its deadline gets 503 with the reason.
"""
from __future__ import annotations

import asyncio
import json
import logging
import math
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import torch

from model import decoding

from ..errors import InvalidInput, Unavailable
from ..metrics import Metrics
from ..registry import LoadedModel, Registry
from .batching import Batcher, Work
from .cache import ResponseCache

HEAVY_QUEUE = 16  # dear requests waiting for the worker thread; beyond this, 503 at once
BATCH_BUDGET_FACTOR = 4  # a batch request may cost this many single requests' budgets

log = logging.getLogger("seq2seq.engine")


def _dumps(payload: dict) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def check_tokens(field: str, prefix: list[int], loaded: LoadedModel) -> None:
    cfg = loaded.config
    if not 1 <= len(prefix) <= cfg.seq_length:
        raise InvalidInput(field, f"must have 1 to {cfg.seq_length} tokens for model {loaded.id!r}, got {len(prefix)}")
    for i, tok in enumerate(prefix):
        if not 0 <= tok < cfg.vocab_size:
            where = "" if field == "start" else f" (position {i})"
            raise InvalidInput(field, f"token {tok}{where} is outside model {loaded.id!r}'s vocabulary 0..{cfg.vocab_size - 1}")


@lru_cache(maxsize=4096)  # a few hundred (config, length, k) combinations per model: price each once
def _topk_plan(config, prefix_len: int, k: int, budget: int) -> decoding.Plan:
    return decoding.topk_plan(config, prefix_len, k, budget=budget)


@lru_cache(maxsize=1024)
def _greedy_work(config, prefix_len: int) -> int:
    return decoding.greedy_cost(config, [prefix_len]).work


class Engine:
    def __init__(self, registry: Registry, metrics: Metrics, cache_size: int, max_batch: int, max_wait_s: float,
                 threads: int = 1, use_thread: bool = False, decode_budget: int = 2_000_000_000,
                 inline_budget: int = 10_000_000, timeout_s: float = 10.0):
        self.registry = registry
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
        self._inflight: dict[tuple, asyncio.Future] = {}  # cache misses being decoded, shared by their twins

    async def predict(self, model_id: str | None, prefix: list[int], attention: bool, field: str) -> bytes:
        loaded = await self.registry.resolve_async(model_id)
        check_tokens(field, prefix, loaded)
        want_attention = attention and loaded.config.attention
        key = (loaded.id, "predict", tuple(prefix), want_attention)
        return self.cache.get(key) or await self._answer(key, loaded, _greedy_work(loaded.config, len(prefix)))

    async def topk(self, model_id: str | None, prefix: list[int], k: int, field: str) -> bytes:
        loaded = await self.registry.resolve_async(model_id)
        check_tokens(field, prefix, loaded)
        key = (loaded.id, "topk", tuple(prefix), k)
        body = self.cache.get(key)
        if body is not None:  # priced only on a miss: a hit costs a dictionary lookup
            return body
        plan = _topk_plan(loaded.config, len(prefix), k, self.decode_budget)
        if not plan.within_budget:
            raise InvalidInput(field, f"top-{k} for this prefix on model {loaded.id!r} costs more than this service "
                                      "allows; ask for fewer suggestions or a longer prefix")
        return await self._answer(key, loaded, plan.work)

    async def _answer(self, key: tuple, loaded: LoadedModel, work: int) -> bytes:
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

    async def _decode(self, key: tuple, loaded: LoadedModel, work: int) -> bytes:
        """Batched on the event loop when cheap, alone on the worker thread when dear."""
        if work <= self.inline_budget:
            body = await self.batcher.submit((loaded.id, key[1]), (loaded, key))
        else:
            decode = self._predict if key[1] == "predict" else self._topk
            body = (await self._decode_alone(loaded, decode, [key], [key[2]]))[key]
        self.cache.put(key, body)
        return body

    # -- many prefixes in one request ------------------------------------------------------------------
    async def predict_batch(self, model_id: str | None, prefixes: list[list[int]], attention: bool) -> bytes:
        loaded = await self.registry.resolve_async(model_id)
        for i, prefix in enumerate(prefixes):
            check_tokens(f"prefixes[{i}]", prefix, loaded)
        want_attention = attention and loaded.config.attention
        keys = [(loaded.id, "predict", tuple(p), want_attention) for p in prefixes]
        work = decoding.greedy_cost(loaded.config, [len(p) for p in prefixes]).work
        if work > self.decode_budget:
            raise InvalidInput("prefixes", f"greedy decoding of these {len(prefixes)} prefixes on model {loaded.id!r} "
                                           "costs more than this service allows; send fewer")
        return await self._answer_many(loaded, keys, work)

    async def topk_batch(self, model_id: str | None, prefixes: list[list[int]], k: int) -> bytes:
        loaded = await self.registry.resolve_async(model_id)
        for i, prefix in enumerate(prefixes):
            check_tokens(f"prefixes[{i}]", prefix, loaded)
        keys = [(loaded.id, "topk", tuple(p), k) for p in prefixes]
        work = 0
        for size, count in Counter(len(p) for p in set(map(tuple, prefixes))).items():
            plan = _topk_plan(loaded.config, size, k, self.decode_budget)
            if not plan.within_budget:
                raise InvalidInput("k", f"top-{k} for {size}-token prefixes on model {loaded.id!r} costs more than "
                                        "this service allows")
            work += count * plan.work
        if work > BATCH_BUDGET_FACTOR * self.decode_budget:
            raise InvalidInput("prefixes", f"top-{k} for these {len(prefixes)} prefixes on model {loaded.id!r} costs "
                                           "more than this service allows; send fewer or ask for a smaller k")
        return await self._answer_many(loaded, keys, work)

    async def _answer_many(self, loaded: LoadedModel, keys: list[tuple], work: int) -> bytes:
        """Cached answers as they are, the rest decoded together; the body lists them in request order."""
        bodies = {key: body for key in dict.fromkeys(keys) if (body := self.cache.get(key)) is not None}
        missing = [key for key in dict.fromkeys(keys) if key not in bodies]
        if missing:
            decode = self._predict if missing[0][1] == "predict" else self._topk
            prefixes = list(dict.fromkeys(key[2] for key in missing))
            if work <= self.inline_budget:
                fresh = decode(loaded, missing, prefixes)
            else:
                fresh = await self._decode_alone(loaded, decode, missing, prefixes)
            for key, body in fresh.items():
                self.cache.put(key, body)
            bodies.update(fresh)
        head = _dumps({"model": loaded.id})[:-1]
        return head + b',"results":[' + b",".join(bodies[key] for key in keys) + b"]}"

    async def _decode_alone(self, loaded: LoadedModel, decode, keys: list[tuple], prefixes: list[tuple]) -> dict:
        """A dear request, on the worker thread: the event loop stays free, and the wait is bounded."""
        if self._heavy_waiting >= HEAVY_QUEUE:
            raise Unavailable(f"{self._heavy_waiting} costly requests are already waiting; try again shortly",
                              retry_after=2)
        self._heavy_waiting += 1
        self.metrics.decoded_alone.inc()
        future = asyncio.get_running_loop().run_in_executor(self._heavy, decode, loaded, keys, prefixes)
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
    def _run_batch(self, batch: list[Work]) -> list[bytes | Exception]:
        results: list[bytes | Exception] = [RuntimeError("not decoded")] * len(batch)
        groups: dict[tuple, list[int]] = defaultdict(list)
        for i, work in enumerate(batch):
            groups[work.group].append(i)
        for (_, kind), members in groups.items():
            loaded: LoadedModel = batch[members[0]].payload[0]
            keys = [batch[i].payload[1] for i in members]
            try:
                unique = list(dict.fromkeys(keys))  # identical requests in a batch are decoded once
                prefixes = list(dict.fromkeys(k[2] for k in unique))
                decode = self._predict if kind == "predict" else self._topk
                bodies = decode(loaded, unique, prefixes)
                for i, key in zip(members, keys):
                    results[i] = bodies[key]
            except Exception as exc:
                log.exception("decoding failed for model %s", loaded.id)
                for i in members:
                    results[i] = exc
        return results

    def _predict(self, loaded: LoadedModel, unique: list[tuple], prefixes: list[tuple]) -> dict[tuple, bytes]:
        want_attention = any(k[3] for k in unique)
        decoded = dict(zip(prefixes, decoding.greedy(loaded.model, [list(p) for p in prefixes], want_attention)))
        L = loaded.config.seq_length
        bodies = {}
        for key in unique:
            prefix, d = list(key[2]), decoded[key[2]]
            first = decoding.known_tokens(len(prefix), L)
            payload = {"model": loaded.id, "prefix": prefix, "sequence": d.sequence, "score": d.score,
                       "probability": math.exp(d.score),
                       "steps": [{"token": t, "probability": p} for t, p in zip(d.sequence[first:], d.token_probs)]}
            if key[3]:
                payload["attention"] = d.attention
            bodies[key] = _dumps(payload)
        return bodies

    def _topk(self, loaded: LoadedModel, unique: list[tuple], prefixes: list[tuple]) -> dict[tuple, bytes]:
        k_max = max(k[3] for k in unique)
        found = dict(zip(prefixes, decoding.topk(loaded.model, [list(p) for p in prefixes], k_max,
                                                 budget=self.decode_budget)))
        bodies = {}
        for key in unique:
            suggestions = [{"sequence": c.sequence, "score": c.score, "probability": math.exp(c.score)}
                           for c in found[key[2]][: key[3]]]
            bodies[key] = _dumps({"model": loaded.id, "prefix": list(key[2]), "k": key[3], "suggestions": suggestions})
        return bodies
