"""Batched greedy decoding, exact top-k and beam search over whole sequences.

A prefix shorter than the sequence length is forced into the decoder, so every answer starts with it and
scores only the generated part. A full-length prefix is the seed's copy task: the encoder reads it all and
the decoder rebuilds it from its first token.

Exact top-k expands the tree of continuations level by level: a state is computed once per distinct
partial sequence (1 + V + V^2 + ... rows instead of V^n full sequences), and the top k are taken from all
V^n complete scores. Beam search is the same expansion, pruned to a width at each level. Which of the two
runs, and how rows are split into decoder calls, is decided from an estimate of the work and memory
(model/cost.py), so a small vocabulary with long sequences and a large hidden size cannot make one request
enumerate tens of thousands of rows.
"""
from __future__ import annotations

import gc
from array import array
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import chain, repeat
from typing import NamedTuple

import torch
from torch import Tensor

from . import frozen
from .config import ModelConfig
from .cost import (
    EXACT_LIMIT,
    TOPK_BYTES_BUDGET,
    TOPK_WORK_BUDGET,
    Cost,
    Plan,
    chunk_rows,
    greedy_cost,
    known_tokens,
    topk_plan,
)
from .network import Memory, Seq2Seq, State

__all__ = ["EXACT_LIMIT", "TOPK_WORK_BUDGET", "Candidate", "Cost", "Decoded", "Plan", "PrefixError", "check_batch",
           "check_prefix", "first_error", "greedy", "greedy_cost", "greedy_tensor", "greedy_unchecked", "known_tokens",
           "pad_prefixes", "prefix_error", "score", "score_error", "topk", "topk_plan", "topk_unchecked"]


class PrefixError(ValueError):
    """A prefix the model cannot decode; the message says why."""


class Decoded(NamedTuple):
    """One greedy answer. A named tuple so that a batch's results are built by C code (see _build)."""

    sequence: list[int]
    score: float  # log-probability of the generated part
    token_probs: list[float] | None = None  # probability of each generated token, in order
    attention: list[list[float]] | None = None  # one row per generated position, one column per prefix position


class Candidate(NamedTuple):
    sequence: list[int]
    score: float


def _build(cls: type, *columns) -> list:
    """Instances of a named tuple from columns of values, without a Python call per instance."""
    return list(map(partial(tuple.__new__, cls), zip(*columns)))


class _NoGC:
    """Pause the cyclic garbage collector while a batch's many result lists are built (they hold no cycles):
    its collections triggered by the allocations would otherwise cost as much as building them."""

    def __enter__(self) -> None:
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc) -> None:
        if self.was_enabled:
            gc.enable()


def prefix_error(prefix: Sequence[int], config: ModelConfig) -> str | None:
    """Why `config`'s model cannot decode this prefix, or None: the one rule every caller applies."""
    if not 1 <= len(prefix) <= config.seq_length:
        return f"must have 1 to {config.seq_length} tokens, got {len(prefix)}"
    for i, tok in enumerate(prefix):
        where = f" (position {i})" if len(prefix) > 1 else ""
        if type(tok) is not int:
            return f"tokens must be integers; got {str(tok)[:20]!r}{where}"
        if not 0 <= tok < config.vocab_size:
            return f"token {tok} is outside the vocabulary 0..{config.vocab_size - 1}{where}"
    return None


def check_prefix(prefix: list[int], model: Seq2Seq) -> None:
    problem = prefix_error(prefix, model.config)
    if problem is not None:
        raise PrefixError(problem)


def _stack(prefixes) -> tuple[Tensor, Tensor]:
    """Right-padded tokens and lengths, from one C-level pass over all tokens (array('q') refuses non-integers)."""
    sizes = list(map(len, prefixes))
    width = max(sizes)
    flat = torch.frombuffer(array("q", chain.from_iterable(prefixes)), dtype=torch.long)
    lengths = torch.tensor(sizes, dtype=torch.long)
    if min(sizes) == width:
        return flat.view(len(sizes), width), lengths
    src = torch.zeros(len(sizes), width, dtype=torch.long)
    src[torch.arange(width).unsqueeze(0) < lengths.unsqueeze(1)] = flat
    return src, lengths


def pad_prefixes(prefixes, device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """Right-pad prefixes with zeros into one tensor; also return their lengths (on the CPU, as packing wants)."""
    src, lengths = _stack(prefixes)
    return src.to(device), lengths


def first_error(prefixes: list[list[int]], config: ModelConfig) -> tuple[int, str] | None:
    """(index, reason) of the first prefix the model cannot decode, or None, found with tensor operations so
    that one prefix and 65,536 cost alike; the reason is prefix_error's."""
    sizes = list(map(len, prefixes))
    suspects: Iterable[int] = range(len(prefixes))
    if min(sizes) >= 1 and max(sizes) <= config.seq_length:
        try:
            src, _ = _stack(prefixes)
        except (TypeError, OverflowError):
            pass  # not all integers: look at each
        else:
            bad = ((src < 0) | (src >= config.vocab_size)).any(1)
            if not bool(bad.any()):
                return None
            suspects = bad.nonzero().squeeze(1).tolist()
    for i in suspects:
        problem = prefix_error(prefixes[i], config)
        if problem is not None:
            return i, problem
    return None


def score_error(sequences: list[list[int]], prefix_length: int, config: ModelConfig) -> tuple[int | None, str] | None:
    """(index or None for the whole request, reason) of what `config`'s model cannot score, or None: every sequence
    must be complete (seq_length tokens in the vocabulary) and the given prefix shorter than it."""
    L = config.seq_length
    if not 1 <= prefix_length <= L - 1:
        return None, f"prefix_length must be 1 to {L - 1} for sequences of {L} tokens, got {prefix_length}"
    for i, seq in enumerate(sequences):
        if len(seq) != L:
            return i, f"has {len(seq)} tokens; a scored sequence is complete: {L} tokens"
    return first_error(sequences, config)


def check_batch(prefixes: list[list[int]], model: Seq2Seq) -> None:
    """Raise PrefixError, as check_prefix words it, for a batch's first bad prefix."""
    found = first_error(prefixes, model.config)
    if found is not None:
        raise PrefixError(found[1])


def _device(model: Seq2Seq) -> torch.device:
    return next(model.parameters()).device


@torch.inference_mode()
def greedy_tensor(model: Seq2Seq, src: Tensor, lengths: Tensor | None, known: Tensor,
                  want_attention: bool = False, chunk: int | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Greedy decoding of a batch. known[i] leading tokens of src[i] are forced.

    Returns sequences (B, L), per-position log-probabilities of the chosen tokens (B, L-1, zero where
    forced), per-position probabilities, and attention (B, L-1, src_len) when asked for. A batch larger than
    `chunk` rows (default: what one decoder call's budget allows, cost.chunk_rows) runs in several calls.
    """
    rows = chunk or chunk_rows(model.config, src.size(1))
    if src.size(0) <= rows:
        return _greedy(model, src, lengths, known, want_attention)
    parts = [_greedy(model, src[i:i + rows], None if lengths is None else lengths[i:i + rows], known[i:i + rows],
                     want_attention) for i in range(0, src.size(0), rows)]
    return tuple(None if part[0] is None else torch.cat(part) for part in zip(*parts))  # type: ignore[return-value]


def _greedy(model: Seq2Seq, src: Tensor, lengths: Tensor | None, known: Tensor,
            want_attention: bool) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    L = model.config.seq_length
    B = src.size(0)
    forced_until = min(int(known.max()), src.size(1))  # past this step no row has a forced token
    net = frozen.of(model)
    state, memory = net.encode(src, lengths)
    known = known.to(src.device)
    seq = torch.zeros(B, L, dtype=torch.long, device=src.device)
    seq[:, 0] = src[:, 0]
    step_logits, attn = [], []
    for t in range(1, L):
        logits, state, weights = net.step(seq[:, t - 1], state, memory)
        best = logits.argmax(dim=1)
        seq[:, t] = torch.where(t < known, src[:, t], best) if t < forced_until else best
        step_logits.append(logits)
        if want_attention and weights is not None:
            attn.append(weights)
    # Chosen logit minus log-sum-exp, once over all steps: a full log-softmax over 10 classes is ~4x slower on CPU.
    logits = torch.stack(step_logits, dim=1)
    logp = logits.gather(2, seq[:, 1:].unsqueeze(2)).squeeze(2) - logits.logsumexp(dim=2)
    probs = logp.exp()
    generated = torch.arange(1, L, device=src.device).unsqueeze(0) >= known.unsqueeze(1)
    logps = logp * generated
    attention = torch.stack(attn, dim=1) if attn else None
    return seq, logps, probs, attention


def greedy(model: Seq2Seq, prefixes: list[list[int]], want_attention: bool = False) -> list[Decoded]:
    """The most likely next token at each step, for many prefixes of any lengths at once (PrefixError for a
    prefix the model cannot decode).

    The batch is decoded and turned into results with a few whole-tensor operations and .tolist() calls (one
    per group of prefixes sharing a length), so Python work per prefix is one object."""
    if not prefixes:
        return []
    check_batch(prefixes, model)
    return greedy_unchecked(model, prefixes, want_attention)


def greedy_unchecked(model: Seq2Seq, prefixes: list[list[int]], want_attention: bool = False) -> list[Decoded]:
    """greedy() for prefixes already checked (prefix_error, first_error): the service checks at its edge, once."""
    if not prefixes:
        return []
    src, lengths = _stack(prefixes)
    L = model.config.seq_length
    known = torch.where(lengths < L, lengths, 1)
    uniform = bool((lengths == src.size(1)).all())
    seq, logps, probs, attention = greedy_tensor(model, src.to(_device(model)), None if uniform else lengths, known,
                                                 want_attention)
    with _NoGC():
        return _decoded(seq, logps, probs, attention, lengths, known, uniform, L)


def _decoded(seq: Tensor, logps: Tensor, probs: Tensor, attention: Tensor | None, lengths: Tensor, known: Tensor,
             uniform: bool, L: int) -> list[Decoded]:
    seqs, scores = seq.tolist(), logps.sum(1).tolist()
    if uniform:
        first = int(known[0]) - 1  # the first generated position, counted from position 1
        token_probs = probs[:, first:].tolist()
        att = attention[:, first:].tolist() if attention is not None else repeat(None)
    else:
        token_probs, att = [None] * len(seqs), [None] * len(seqs)
        for size in lengths.unique().tolist():
            rows = (lengths == size).nonzero().squeeze(1)
            first = known_tokens(size, L) - 1
            index = rows.tolist()
            for i, row in zip(index, probs[rows.to(probs.device), first:].tolist()):
                token_probs[i] = row
            if attention is not None:
                for i, row in zip(index, attention[rows.to(attention.device), first:, :size].tolist()):
                    att[i] = row
    return _build(Decoded, seqs, scores, token_probs, att)


def _step(net: frozen.Frozen, tokens: Tensor, state: State, memory: Memory | None, chunk: int) -> tuple[Tensor, State]:
    """One decoder step over B*N rows (N per prefix, prefix-major), in calls of at most `chunk` rows.

    Each call takes whole prefixes' rows when they fit, else part of one prefix's rows, with the memory of
    just those prefixes, shared by broadcasting."""
    R = tokens.size(0)
    if chunk >= R:
        logits, state, _ = net.step(tokens, state, memory)
        return logits, state
    spans: list[tuple[int, int, Memory | None]]
    if memory is None:
        spans = [(i, min(i + chunk, R), None) for i in range(0, R, chunk)]
    else:
        B = memory.outputs.size(0)
        N = R // B
        if chunk >= N:
            per = chunk // N
            spans = [(b * N, min(b + per, B) * N, memory.slice(b, min(b + per, B))) for b in range(0, B, per)]
        else:
            spans = [(b * N + i, b * N + min(i + chunk, N), memory.slice(b, b + 1))
                     for b in range(B) for i in range(0, N, chunk)]
    out, hs, cs = [], [], []
    for lo, hi, mem in spans:
        logits, (h, c), _ = net.step(tokens[lo:hi], (state[0][lo:hi], state[1][lo:hi]), mem)
        out.append(logits)
        hs.append(h)
        cs.append(c)
    return torch.cat(out), (torch.cat(hs), torch.cat(cs))


@torch.inference_mode()
def _expand(model: Seq2Seq, src: Tensor, known: int, k: int, width: int | None,
            chunk: int) -> tuple[Tensor, Tensor]:
    """Tree expansion for B prefixes sharing `known`: returns (B, k') sequences and scores, best first.

    The N partial sequences of a prefix are N decoder rows that attend over that prefix's one memory."""
    V, L = model.config.vocab_size, model.config.seq_length
    B = src.size(0)
    net = frozen.of(model)
    state, memory = net.encode(src)
    tokens = src[:, 0]
    for t in range(1, known):
        _, state = _step(net, tokens, state, memory, chunk)
        tokens = src[:, t]
    seqs = src[:, :known].unsqueeze(1)  # (B, N, t)
    scores = torch.zeros(B, 1, device=src.device)
    offsets = torch.arange(B, device=src.device).view(B, 1)
    for t in range(known, L):
        N = scores.size(1)
        logits, state = _step(net, tokens, state, memory, chunk)
        cand = (scores.unsqueeze(2) + torch.log_softmax(logits, dim=1).view(B, N, V)).view(B, N * V)
        keep = min(k, N * V) if t == L - 1 else (N * V if width is None else min(width, N * V))
        if keep < N * V or t == L - 1:
            scores, idx = cand.topk(keep, dim=1)
        else:
            scores, idx = cand, torch.arange(N * V, device=src.device).expand(B, N * V)
        parent, token = idx // V, idx % V
        seqs = torch.cat((seqs.gather(1, parent.unsqueeze(2).expand(-1, -1, seqs.size(2))), token.unsqueeze(2)), dim=2)
        if t < L - 1:
            rows = (offsets * N + parent).view(-1)
            state = (state[0].index_select(0, rows), state[1].index_select(0, rows))
            tokens = token.reshape(-1)
    return seqs, scores


def topk(model: Seq2Seq, prefixes: list[list[int]], k: int, beam_width: int | None = None,
         exact_limit: int = EXACT_LIMIT, budget: int = TOPK_WORK_BUDGET,
         chunk: int | None = None) -> list[list[Candidate]]:
    """The k most likely distinct complete sequences for each prefix, best first.

    Exact (every continuation scored) when topk_plan says it fits `budget` (multiply-adds per prefix) and
    exact_limit, and no beam width is given; otherwise beam search with the given width or the plan's.
    `chunk` caps the rows of one decoder call (default: the plan's).
    """
    if k < 1:
        raise PrefixError(f"k must be at least 1, got {k}")
    if not prefixes:
        return []
    check_batch(prefixes, model)
    return topk_unchecked(model, prefixes, k, beam_width, exact_limit, budget, chunk)


def topk_unchecked(model: Seq2Seq, prefixes: list[list[int]], k: int, beam_width: int | None = None,
                   exact_limit: int = EXACT_LIMIT, budget: int = TOPK_WORK_BUDGET,
                   chunk: int | None = None) -> list[list[Candidate]]:
    """topk() for prefixes already checked, and k >= 1."""
    if not prefixes:
        return []
    src, lengths = _stack(prefixes)
    L = model.config.seq_length
    device = _device(model)
    results: list[list[Candidate] | None] = [None] * len(prefixes)
    for size in lengths.unique().tolist():
        members = (lengths == size).nonzero().squeeze(1)
        plan = topk_plan(model.config, size, k, beam_width, exact_limit, budget)
        per_call = max(1, TOPK_BYTES_BUDGET // max(plan.bytes, 1))  # prefixes searched together
        for start in range(0, members.size(0), per_call):
            part = members[start:start + per_call]
            seqs, scores = _expand(model, src[part, :size].to(device), known_tokens(size, L), k,
                                   None if plan.exact else plan.width, chunk or plan.chunk_rows)
            with _NoGC():
                for i, s, v in zip(part.tolist(), seqs.tolist(), scores.tolist()):
                    results[i] = _build(Candidate, s, v)
    return results  # type: ignore[return-value]


@torch.inference_mode()
def score(model: Seq2Seq, prefixes: list[list[int]], sequences: list[list[int]]) -> list[float]:
    """Teacher-forced log-probability of each whole sequence's generated part: the brute-force reference."""
    L = model.config.seq_length
    device = _device(model)
    src, lengths = pad_prefixes(prefixes, device)
    trg = torch.tensor(sequences, dtype=torch.long, device=device)
    logp = torch.log_softmax(model(src, trg, lengths), dim=2).gather(2, trg[:, 1:].unsqueeze(2)).squeeze(2)
    known = torch.tensor([known_tokens(len(p), L) for p in prefixes], device=device)
    generated = torch.arange(1, L, device=device).unsqueeze(0) >= known.unsqueeze(1)
    return (logp * generated).sum(1).tolist()
