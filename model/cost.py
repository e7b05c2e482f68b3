"""What a decoding costs before it runs, and the budgets that bound it.

Work is counted in multiply-adds (MACs) of the decoder's arithmetic, per row (one partial sequence) per
step: the LSTM cell 4H(E+C+H), the output layer V(H+C), and with attention the query H*H plus the
energies, scores and context over the source, 3*S*H (C is the context width, H with attention, else 0).
The encoder adds S*4H(E+H) per prefix (and S*H*H for attention keys). Bytes are the transient float32
tensors of one decoder call (attention's (rows, S, H) energies dominate) plus what a search keeps between
levels (states, candidate scores, sequences).

The service can price a request with these pure functions (no model, no tensors) and refuse or split it;
decoding itself uses them to choose exact top-k or beam search and to chunk rows so that one decoder call
stays under DECODER_CALL_BYTES and DECODER_CALL_WORK.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .config import ModelConfig

EXACT_LIMIT = 100_000  # continuations scored exhaustively at most; beyond this, beam search
# Work one prefix's top-k may cost: exact search only when it fits, a beam narrowed to fit otherwise. On the
# project's 2-core CPU the shipped model decodes about 5e9 MACs/s, so 1e8 is about 20 ms.
TOPK_WORK_BUDGET = 100_000_000
TOPK_BYTES_BUDGET = 256 * 2**20  # memory one prefix's top-k search may hold at once
# One decoder call (one step over a chunk of rows): rows beyond these are split into several calls, so a
# large batch or a wide search never needs more than this much transient memory or time per call.
DECODER_CALL_BYTES = 128 * 2**20
DECODER_CALL_WORK = 2**30
FLOAT, LONG = 4, 8  # bytes


@dataclass(frozen=True)
class Cost:
    """Estimated cost of a decoding: decoder rows, multiply-adds and peak bytes, and the rows per call."""

    rows: int
    work: int
    bytes: int
    chunk_rows: int


@dataclass(frozen=True)
class Plan(Cost):
    """How top-k will run for one prefix: exact enumeration, or beam search of `width`; costs per prefix."""

    exact: bool = True
    width: int | None = None  # beam width; None when exact
    within_budget: bool = True  # False when even the narrowest useful beam (width k) exceeds the budget


def step_work(config: ModelConfig, src_len: int) -> int:
    """Multiply-adds of one decoder step for one row."""
    H, E, V = config.hidden_dim, config.embedding_dim, config.vocab_size
    C = H if config.attention else 0
    work = 4 * H * (E + C + H) + V * (H + C)
    if config.attention:
        work += H * H + 3 * src_len * H
    return work


def step_bytes(config: ModelConfig, src_len: int) -> int:
    """Transient bytes of one decoder step for one row: gates, states, logits and attention's intermediates."""
    H, E, V = config.hidden_dim, config.embedding_dim, config.vocab_size
    floats = 4 * H + 4 * H + 3 * V + E
    if config.attention:
        floats += 2 * src_len * H + 2 * src_len + 3 * H
    return FLOAT * floats


def encoder_work(config: ModelConfig, src_len: int) -> int:
    H, E = config.hidden_dim, config.embedding_dim
    work = src_len * 4 * H * (E + H)
    if config.attention:
        work += src_len * H * H  # attention keys, once per source position
    return work


def chunk_rows(config: ModelConfig, src_len: int) -> int:
    """Rows one decoder call may take so that it stays under DECODER_CALL_BYTES and DECODER_CALL_WORK."""
    by_bytes = DECODER_CALL_BYTES // step_bytes(config, src_len)
    by_work = DECODER_CALL_WORK // step_work(config, src_len)
    return max(1, min(by_bytes, by_work))


def known_tokens(prefix_len: int, seq_length: int) -> int:
    """How many leading tokens the decoder is given: the whole prefix, or just the first in the copy task."""
    return prefix_len if prefix_len < seq_length else 1


def greedy_cost(config: ModelConfig, prefix_lens: Sequence[int] | int) -> Cost:
    """Cost of greedy decoding a batch: prefix lengths, or a count of prefixes (priced at full length)."""
    lens = [config.seq_length] * prefix_lens if isinstance(prefix_lens, int) else list(prefix_lens)
    if not lens:
        return Cost(0, 0, 0, chunk_rows(config, config.seq_length))
    S = max(lens)  # one padded batch: every row attends over the longest prefix
    L = config.seq_length
    rows = len(lens) * (L - 1)
    work = sum(encoder_work(config, n) for n in lens) + rows * step_work(config, S)
    chunk = chunk_rows(config, S)
    live = min(len(lens), chunk)
    kept = len(lens) * (L * LONG + 3 * (L - 1) * FLOAT + 2 * S * config.hidden_dim * FLOAT)  # outputs, memory
    return Cost(rows, work, kept + live * step_bytes(config, S), chunk)


def _count_at_most(V: int, generated: int, limit: int) -> bool:
    """Whether V**generated <= limit, without building a huge number for long sequences."""
    count = 1
    for _ in range(generated):
        count *= V
        if count > limit:
            return False
    return True


def _levels(V: int, generated: int, width: int | None, cap: int) -> list[int] | None:
    """Rows at each level of the search tree for one prefix (1, V, V^2, ... or capped at the width); None past cap."""
    levels, rows, total = [], 1, 0
    for _ in range(generated):
        levels.append(rows)
        total += rows
        if total > cap:
            return None
        rows = rows * V if width is None else min(rows * V, width)
    return levels


def _search_cost(config: ModelConfig, prefix_len: int, levels: list[int], k: int) -> Cost:
    V, H, L = config.vocab_size, config.hidden_dim, config.seq_length
    known = known_tokens(prefix_len, L)
    S = prefix_len
    per_row = step_work(config, S)
    rows = (known - 1) + sum(levels)
    work = encoder_work(config, S) + rows * per_row + sum(n * V for n in levels)  # + candidate selection
    chunk = chunk_rows(config, S)
    peak = 0
    for j, n in enumerate(levels):
        t = known + j + 1
        held = n * (2 * 2 * H * FLOAT)  # states, and their copies reordered for the next level
        held += n * V * (3 * FLOAT + LONG)  # log-probabilities, candidate scores, candidate indices
        held += min(n * V, max(levels[j + 1] if j + 1 < len(levels) else k, 1)) * t * LONG * 2  # sequences
        peak = max(peak, held + min(n, chunk) * step_bytes(config, S))
    memory = 2 * S * H * FLOAT if config.attention else 0
    return Cost(rows, work, peak + memory, chunk)


def topk_plan(config: ModelConfig, prefix_len: int, k: int, beam_width: int | None = None,
              exact_limit: int = EXACT_LIMIT, budget: int = TOPK_WORK_BUDGET,
              bytes_budget: int = TOPK_BYTES_BUDGET) -> Plan:
    """Exact when every continuation can be scored within the budget (and there are at most exact_limit of
    them) and no beam width is asked for; otherwise beam search, its default width max(4k, 32) narrowed
    (not below k) until it fits. Costs are for one prefix; a batch costs the sum over its prefixes."""
    V, L = config.vocab_size, config.seq_length
    generated = L - known_tokens(prefix_len, L)
    per_row = step_work(config, prefix_len)
    if beam_width is None and _count_at_most(V, generated, exact_limit):
        levels = _levels(V, generated, None, cap=budget // per_row + 1)
        if levels is not None:
            cost = _search_cost(config, prefix_len, levels, k)
            if cost.work <= budget and cost.bytes <= bytes_budget:
                return Plan(**vars(cost), exact=True, width=None, within_budget=True)

    def beam(width: int) -> Cost:
        levels = _levels(V, generated, width, cap=2**62)
        assert levels is not None  # a width caps every level far below 2**62
        return _search_cost(config, prefix_len, levels, k)

    def fits(cost: Cost) -> bool:
        return cost.work <= budget and cost.bytes <= bytes_budget

    if beam_width is not None:
        cost = beam(beam_width)
        return Plan(**vars(cost), exact=False, width=beam_width, within_budget=fits(cost))
    lo, hi = k, max(4 * k, 32)
    if fits(beam(hi)):
        lo = hi
    elif fits(beam(lo)):
        while hi - lo > 1:  # widest beam that fits: cost grows with the width
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if fits(beam(mid)) else (lo, mid)
    cost = beam(lo)
    return Plan(**vars(cost), exact=False, width=lo, within_budget=fits(cost))
