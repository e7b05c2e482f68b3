"""Command line: train a model, or decode with one.

  python -m model train --data random --attention --target-accuracy 0.999 --out weights/copy.pt
  python -m model train --data corpus.json --steps 3000 --out my.pt
  python -m model train --job job.json --out my.pt          (the service's POST /jobs body, offline)
  python -m model decode --checkpoint weights/default.pt --prefix 7 --k 3
  python -m model decode --checkpoint weights/default.pt --input prefixes.txt [--k 3] > answers.jsonl
  python -m model score --checkpoint weights/default.pt --input sequences.txt [--prefix-length 1] > scores.jsonl

`train` prints progress (a bar on a terminal, a line per tenth otherwise) on stderr; its last line of
stdout is one JSON object with steps, train_seconds, total_seconds, seq_acc or top1_agreement, and more.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import torch

from . import checkpoint, decoding
from .config import RECIPES, ModelConfig, TrainConfig
from .data import DataError
from .jobspec import parse_job
from .training import Dataset, Progress, resolve_device, train


def _load_corpus(path: str) -> tuple[list[list[int]], bool]:
    """A corpus file: a list of sequences, or {"sequences": [...], "frequencies": "sampled" | "exact"}."""
    data = json.loads(Path(path).read_text())
    if isinstance(data, dict):
        return data["sequences"], data.get("frequencies", "sampled") == "exact"
    return data, False


def _progress_printer():
    tty = sys.stderr.isatty()
    last_tenth = [-1]

    def show(p: Progress) -> None:
        acc = "-" if p.accuracy is None else f"{p.accuracy:.4f}"
        line = f"step {p.step}/{p.total_steps} loss {p.loss:.4f} acc {acc} eta {p.eta_seconds:.1f}s"
        if tty:
            filled = int(30 * p.step / p.total_steps)
            print(f"\r[{'#' * filled}{'.' * (30 - filled)}] {line}", end="", file=sys.stderr, flush=True)
        elif p.step * 10 // p.total_steps > last_tenth[0]:
            last_tenth[0] = p.step * 10 // p.total_steps
            print(line, file=sys.stderr, flush=True)

    return show


def cmd_train(args: argparse.Namespace) -> int:
    if args.job:
        spec = parse_job(json.loads(Path(args.job).read_text()))
        model_config, train_config, dataset = spec.model, spec.training, spec.dataset()
    else:
        model_config = ModelConfig(vocab_size=args.vocab_size, seq_length=args.seq_length,
                                   embedding_dim=args.embedding_dim, hidden_dim=args.hidden_dim,
                                   attention=args.attention)
        given = {"steps": args.steps, "batch_size": args.batch_size, "learning_rate": args.lr,
                 "teacher_forcing_ratio": args.teacher_forcing, "lr_decay": args.lr_decay,
                 "full_batch": args.full_batch, "eval_every": args.eval_every}
        train_config = TrainConfig(recipe=args.recipe, seed=args.seed, target_accuracy=args.target_accuracy,
                                   prefix_lengths=tuple(args.prefix_lengths) if args.prefix_lengths else None,
                                   **{k: v for k, v in given.items() if v is not None})
        sequences, exact = (None, False) if args.data == "random" else _load_corpus(args.data)
        dataset = Dataset(model_config, sequences, exact=exact or args.exact)
    if args.target_accuracy is not None and args.job:
        train_config = TrainConfig.from_dict({**train_config.to_dict(), "target_accuracy": args.target_accuracy})
    torch.set_num_threads(args.threads)
    result = train(model_config, train_config, dataset, device=args.device, on_progress=_progress_printer())
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if args.out:
        checkpoint.save(args.out, result.model, result.metrics, train_config.to_dict(), result.data,
                        result.history, name=args.name)
    summary = {"attention": model_config.attention, "status": result.status, **result.metrics}
    if args.out:
        summary["out"] = args.out
    print(json.dumps(summary))
    return 0


def _read_prefixes(lines) -> list[list[int]]:
    """One prefix per line, tokens separated by commas or spaces; blank lines are skipped."""
    prefixes = []
    for number, line in enumerate(lines, 1):
        text = line.replace(",", " ").split()
        if not text:
            continue
        try:
            prefixes.append([int(t) for t in text])
        except ValueError:
            raise decoding.PrefixError(f"line {number}: {line.strip()[:80]!r} is not a list of integer tokens") from None
    return prefixes


def _decode_lines(model, prefixes: list[list[int]], k: int | None, batch: int) -> None:
    """Greedy (and top-k when k is given) for each prefix, as JSON lines, a batch of prefixes at a time."""
    for start in range(0, len(prefixes), batch):
        part = prefixes[start:start + batch]
        try:
            best = decoding.greedy(model, part)
            top = decoding.topk(model, part, k) if k else None
        except decoding.PrefixError as exc:
            bad = next(i for i, p in enumerate(part) if _refused(p, model))
            raise decoding.PrefixError(f"prefix {start + bad + 1} {part[bad]}: {exc}") from None
        lines = []
        for i, (prefix, d) in enumerate(zip(part, best)):
            row = {"prefix": prefix, "sequence": d.sequence, "score": d.score, "probability": math.exp(d.score)}
            if top is not None:
                row["topk"] = [{"sequence": c.sequence, "score": c.score} for c in top[i]]
            lines.append(json.dumps(row))
        sys.stdout.write("\n".join(lines) + "\n")


def _refused(prefix: list[int], model) -> bool:
    try:
        decoding.check_prefix(prefix, model)
    except decoding.PrefixError:
        return True
    return False


def cmd_decode(args: argparse.Namespace) -> int:
    if (args.prefix is None) == (args.input is None):
        raise ValueError("give exactly one of --prefix and --input")
    ckpt = checkpoint.load(args.checkpoint, resolve_device(args.device))
    torch.set_num_threads(args.threads)
    if args.input is not None:
        if args.input == "-":
            prefixes = _read_prefixes(sys.stdin)
        else:
            with open(args.input) as f:
                prefixes = _read_prefixes(f)
        _decode_lines(ckpt.model, prefixes, args.k, args.batch)
        return 0
    prefix = _read_prefixes([args.prefix])[0] if args.prefix.strip() else []
    best = decoding.greedy(ckpt.model, [prefix])[0]
    top = decoding.topk(ckpt.model, [prefix], args.k or 3)[0]
    print(json.dumps({"prefix": prefix, "sequence": best.sequence, "score": best.score,
                      "topk": [{"sequence": c.sequence, "score": c.score} for c in top]}))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    """log P(the rest | the first --prefix-length digits) of each sequence, as JSON lines, in input order."""
    ckpt = checkpoint.load(args.checkpoint, resolve_device(args.device))
    torch.set_num_threads(args.threads)
    if args.input == "-":
        sequences = _read_prefixes(sys.stdin)
    else:
        with open(args.input) as f:
            sequences = _read_prefixes(f)
    for start in range(0, len(sequences), args.batch):
        part = sequences[start:start + args.batch]
        problem = decoding.score_error(part, args.prefix_length, ckpt.config)
        if problem is not None:
            index, reason = problem
            where = "" if index is None else f"sequence {start + index + 1} {part[index]}: "
            raise decoding.PrefixError(where + reason)
        scores = decoding.score(ckpt.model, [s[:args.prefix_length] for s in part], part)
        sys.stdout.write("".join(json.dumps({"sequence": seq, "prefix_length": args.prefix_length,
                                             "log_probability": v, "probability": math.exp(v)}) + "\n"
                                 for seq, v in zip(part, scores)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m model", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train a model and save a checkpoint")
    t.add_argument("--data", default="random", help='"random" (the seed\'s generator) or a JSON corpus file')
    t.add_argument("--exact", action="store_true", help="the corpus's counts are exact frequencies to reproduce, "
                                                         "not a sample: no held-out part, no smoothing")
    t.add_argument("--job", help="a POST /jobs body as a JSON file (overrides the model and training flags)")
    t.add_argument("--attention", action=argparse.BooleanOptionalAction, default=True)
    t.add_argument("--vocab-size", type=int, default=10)
    t.add_argument("--seq-length", type=int, default=5)
    t.add_argument("--embedding-dim", type=int, default=16)
    t.add_argument("--hidden-dim", type=int, default=32)
    t.add_argument("--recipe", default="default", choices=sorted(RECIPES),
                   help="training preset; the flags below override its values (default: the product's recipe)")
    t.add_argument("--steps", type=int, help="optimizer steps (the seed's epochs); the most when a target is set")
    t.add_argument("--batch-size", type=int)
    t.add_argument("--lr", type=float, help="Adam's learning rate")
    t.add_argument("--lr-decay", type=float, help="fraction of the steps, at the end, over which the rate falls to 0")
    t.add_argument("--full-batch", type=int, help="train a corpus with at most this many distinct examples on all "
                                                   "of them at every step (0: never)")
    t.add_argument("--teacher-forcing", type=float, help="probability of feeding the true token")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--target-accuracy", type=float, default=None, help="stop once the held-out metric reaches this")
    t.add_argument("--eval-every", type=int, help="steps between held-out evaluations (a cheap screen; the full set "
                                                  "once it meets the target)")
    t.add_argument("--prefix-lengths", type=int, nargs="+", help="prefix lengths to train on (default: 1..L for a corpus, L for random)")
    t.add_argument("--threads", type=int, default=1, help="torch threads (small models train fastest on one)")
    t.add_argument("--device", default="auto", help="auto, cpu or cuda")
    t.add_argument("--name", help="a label stored in the checkpoint")
    t.add_argument("--out", help="checkpoint file to write")
    t.set_defaults(func=cmd_train)
    d = sub.add_parser("decode", help="greedy and top-k continuations of a prefix")
    d.add_argument("--checkpoint", required=True)
    d.add_argument("--prefix", help="comma-separated tokens, e.g. 7 or 7,2")
    d.add_argument("--input", help="a file (or - for stdin) with one prefix per line, comma- or space-separated; "
                                   "writes one JSON object per line")
    d.add_argument("--k", type=int, default=None, help="top-k suggestions (default 3 with --prefix; none with --input)")
    d.add_argument("--batch", type=int, default=65_536, help="prefixes decoded per call with --input")
    d.add_argument("--threads", type=int, default=1, help="torch threads")
    d.add_argument("--device", default="cpu")
    d.set_defaults(func=cmd_decode)
    s = sub.add_parser("score", help="log-probability of whole sequences given their first digits")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--input", required=True, help="a file (or - for stdin) with one sequence per line, comma- or "
                                                  "space-separated; writes one JSON object per line")
    s.add_argument("--prefix-length", type=int, default=1, help="leading digits given (default 1)")
    s.add_argument("--batch", type=int, default=65_536, help="sequences scored per call")
    s.add_argument("--threads", type=int, default=1, help="torch threads")
    s.add_argument("--device", default="cpu")
    s.set_defaults(func=cmd_score)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (DataError, ValueError, checkpoint.CheckpointError, decoding.PrefixError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
