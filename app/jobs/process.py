"""One training job in its own process: `python -m app.jobs.process SPEC_FILE`, or
`python -m app.jobs.process --standby PARENT_PID`, a warmed-up spare that reads the spec file's path on stdin.

The spec (protocol.RunSpec) holds the job (a model.jobspec.JobSpec), where to write the checkpoint, the checkpoint
of the model active when the job started (for the evaluation gate) and a thread budget. Progress and the result go
to stdout as protocol messages. SIGTERM cancels cooperatively between steps. Imports `model` and the
protocol, never FastAPI or the database.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
import time
from pathlib import Path

import torch

from model import checkpoint
from model.evaluation import evaluate
from model.gate import judge
from model.heldout import Neural
from model.training import Progress, TrainResult, train

from .protocol import Gate, Message, Result, RunMetrics, RunSpec, encode


def emit(message: Message) -> None:
    sys.stdout.write(encode(message))
    sys.stdout.flush()


def gate(run: RunSpec, result: TrainResult) -> Gate:
    """Score the model that was active when the job started on this job's own held-out set."""
    spec = run.spec
    new_score = result.metrics["accuracy"]
    if not run.compare_with:
        reason = "no active model to compare with" if run.compared_id is None else \
            f"the active model {run.compared_id!r} could not be read"
        return Gate(new_score, reason=reason)
    try:
        active = checkpoint.load(run.compare_with)
    except checkpoint.CheckpointError as exc:
        return Gate(new_score, reason=f"active model unreadable: {exc.reason}")
    if (active.config.vocab_size, active.config.seq_length) != (spec.model.vocab_size, spec.model.seq_length):
        return Gate(new_score, reason="the active model has another vocabulary size or sequence length")
    dataset = spec.dataset()
    prefix_lengths = spec.training.prefix_lengths or dataset.default_prefix_lengths()
    return Gate(new_score, evaluate(active.model, dataset.eval_set(spec.training, prefix_lengths)), True)


def learning_gate(run: RunSpec, result: TrainResult) -> dict:
    """A learning cycle's offline gate: the candidate against the alias's model on the usage holdout and on the base
    corpus's untouched prefixes (model.gate). An unreadable alias model refuses, saying so."""
    learning = run.learning or {}
    try:
        if not run.compare_with:
            raise checkpoint.CheckpointError(str(run.compared_id), "it could not be read from the registry")
        control = checkpoint.load(run.compare_with)
    except checkpoint.CheckpointError as exc:
        return {"passed": False, "reason": f"refused: the alias's model {run.compared_id!r} cannot be read ({exc.reason})"}
    if (control.config.vocab_size, control.config.seq_length) != (run.spec.model.vocab_size, run.spec.model.seq_length):
        return {"passed": False, "reason": "refused: the alias's model has another vocabulary size or sequence length"}
    return judge(Neural(control.model), Neural(result.model), learning.get("holdout", []), learning.get("base_eval", []),
                 **learning.get("gate", {}))


def die_with_parent(parent_pid: int | None) -> None:
    """If the service dies, so does its training process (Linux), so no orphan writes a checkpoint later."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if parent_pid is not None and os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


def lower_priority() -> None:
    """Serving comes first: train only on CPU time nobody else wants (SCHED_IDLE), else at the lowest nice."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


def warm_up() -> None:
    """Pay the one-off costs (importing torch and the model, a first training step) before a job arrives."""
    from model.config import ModelConfig, TrainConfig
    from model.training import Dataset

    cfg = ModelConfig(hidden_dim=4, embedding_dim=4)
    train(cfg, TrainConfig(steps=2, batch_size=2, eval_size=10), Dataset(cfg))


def main(argv: list[str]) -> int:
    cancelled = [False]
    signal.signal(signal.SIGTERM, lambda signum, frame: cancelled.__setitem__(0, True))
    if argv[0] == "--standby":  # a spare the service keeps warm: it waits for a job file on stdin
        die_with_parent(int(argv[1]))
        lower_priority()
        warm_up()
        line = sys.stdin.readline().strip()
        if not line:
            return 0  # the service closed the pipe: no job for this spare
        job_path = line
    else:
        job_path = argv[0]
        lower_priority()  # before reading the spec: reading it validates the whole dataset
    run = RunSpec.loads(Path(job_path).read_text())
    die_with_parent(run.parent_pid)
    torch.set_num_threads(run.threads)
    spec = run.spec
    last = [0.0]

    def on_progress(p: Progress) -> None:
        now = time.monotonic()
        if now - last[0] < 0.2 and p.step < p.total_steps and p.accuracy is None:
            return
        last[0] = now
        emit(p)

    result = train(spec.model, spec.training, spec.dataset(), device=run.device,
                   on_progress=on_progress, should_stop=lambda: cancelled[0])
    metrics = RunMetrics.of(result.metrics)
    if result.status == "cancelled":
        emit(Result("cancelled", metrics, result.history))
        return 0
    corpus = spec.sequences  # kept with the model, so a learning cycle can build on it
    if run.learning is not None:
        result.metrics["learning_gate"] = learning_gate(run, result)
        corpus = run.learning.get("base_corpus") or corpus  # a cycle's model keeps its base, not the usage
    checkpoint.save(run.out, result.model, result.metrics, spec.training.to_dict(), result.data, result.history,
                    name=spec.name, corpus=corpus)
    emit(Result("succeeded", metrics, result.history, gate(run, result)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
