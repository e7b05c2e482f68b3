"""Decoding speed on the shipped default model, beside the seed's own batched forward pass.

- Batched greedy decoding of 4,096 prefixes (start digits, and full sequences as in the seed's copy task)
  against the seed reference's `model(X, Y, teacher_forcing_ratio=0.0)` on 4,096 sequences, same weights
  shape, same torch thread count, same process.
- Exact top-5 for one start digit (10,000 continuations scored).
- The Python API against the tensor core: decoding.greedy on 4,096 and 65,536 start digits given as lists
  (checked, decoded and returned as Decoded objects) against greedy_tensor on the same prefixes as a tensor.

  python bench/decode_speed.py [--threads 2] [--repeats 100]
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
import time

import torch
from common import REFERENCE, ROOT, median, write

sys.path.insert(0, str(ROOT))
from model import checkpoint, decoding

N = 4096


def load_reference():
    spec = importlib.util.spec_from_file_location("seed_reference", REFERENCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.device = torch.device("cpu")
    return module


def seconds(fns, repeats: int) -> list[float]:
    """Median time of each function, run in turn (A, B, C, A, B, C, ...) so drifts in machine load hit all alike."""
    for fn in fns:
        for _ in range(3):
            fn()
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            bucket.append(time.perf_counter() - t0)
    return [median(t) for t in times]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    ref = load_reference()
    model = checkpoint.load(ROOT / "weights" / "default.pt").model
    gen = torch.Generator().manual_seed(0)
    X = torch.randint(1, 10, (N, 5), generator=gen)
    report = {"threads": args.threads, "batch": N}
    ok = True
    for attention in (False, True):
        torch.manual_seed(0)
        if attention:
            enc = ref.Encoder(10, 16, 32, return_outputs=True)
            seed_model = ref.Seq2Seq(enc, ref.AttnDecoder(10, 16, 32, ref.Attention(32)), True).eval()
        else:
            seed_model = ref.Seq2Seq(ref.Encoder(10, 16, 32), ref.Decoder(10, 16, 32), False).eval()
        ours = model if attention else decoding_model(attention=False)

        # Each closure binds this iteration's values (default arguments): they run within it, but say so.
        def seed_forward(seed_model=seed_model):
            with torch.inference_mode():
                seed_model(X, X, teacher_forcing_ratio=0.0).argmax(2)

        starts = X[:, :1].contiguous()
        ones = torch.ones(N, dtype=torch.long)

        def ours_start(ours=ours, starts=starts, ones=ones):
            decoding.greedy_tensor(ours, starts, None, ones)

        def ours_copy(ours=ours, ones=ones):
            decoding.greedy_tensor(ours, X, None, ones)

        prefixes = X[:, :1].tolist()

        def ours_api(ours=ours, prefixes=prefixes):
            decoding.greedy(ours, prefixes)

        name = "attention" if attention else "plain"
        t_seed, t_start, t_copy, t_api = seconds([seed_forward, ours_start, ours_copy, ours_api], args.repeats)
        row = {"seed_forward_seq_per_s": N / t_seed, "ours_start_digit_seq_per_s": N / t_start,
               "ours_copy_seq_per_s": N / t_copy, "ours_python_api_seq_per_s": N / t_api}
        row["ratio_copy_vs_seed"] = round(row["ours_copy_seq_per_s"] / row["seed_forward_seq_per_s"], 2)
        row["ratio_start_vs_seed"] = round(row["ours_start_digit_seq_per_s"] / row["seed_forward_seq_per_s"], 2)
        ok &= row["ratio_copy_vs_seed"] >= 1.0 and row["ratio_start_vs_seed"] >= 1.0
        report[f"greedy_{name}"] = row
        print(f"greedy {name:9s} seed forward {row['seed_forward_seq_per_s']:,.0f} seq/s | ours: start digit "
              f"{row['ours_start_digit_seq_per_s']:,.0f} ({row['ratio_start_vs_seed']}x), copy "
              f"{row['ours_copy_seq_per_s']:,.0f} ({row['ratio_copy_vs_seed']}x), via greedy() with lists "
              f"{row['ours_python_api_seq_per_s']:,.0f}", flush=True)
    for digit in (7,):
        (t,) = seconds([lambda digit=digit: decoding.topk(model, [[digit]], 5)], args.repeats * 4)
        report["exact_top5_one_start_digit_ms"] = round(t * 1e3, 3)
        ok &= t < 0.020
        print(f"exact top-5 for start digit {digit} (10,000 continuations): median {t * 1e3:.2f} ms (target < 20 ms)")
    for n in (4096, 65536):
        starts = torch.randint(0, 10, (n, 1), generator=gen)
        prefixes, ones = starts.tolist(), torch.ones(n, dtype=torch.long)
        t_tensor, t_api = seconds([lambda starts=starts, ones=ones: decoding.greedy_tensor(model, starts, None, ones),
                                   lambda prefixes=prefixes: decoding.greedy(model, prefixes)],
                                  max(5, args.repeats * 4096 // n // 2))
        row = {"greedy_tensor_s": t_tensor, "greedy_s": t_api, "ratio": round(t_api / t_tensor, 3), "target_ratio": 1.3}
        ok &= row["ratio"] <= 1.3
        report[f"bulk_greedy_{n}"] = row
        print(f"bulk greedy, {n:,} start digits: greedy_tensor {t_tensor * 1e3:.1f} ms, greedy (lists in, Decoded out) "
              f"{t_api * 1e3:.1f} ms: {row['ratio']}x (target <= 1.3x)", flush=True)
    print("written to", write(f"decode_speed_threads{args.threads}", report))
    return 0 if ok else 1


def decoding_model(attention: bool):
    """A plain (no attention) model of the default shape; speed does not depend on the weights' values."""
    from model.config import ModelConfig
    from model.network import Seq2Seq
    torch.manual_seed(0)
    return Seq2Seq(ModelConfig(attention=attention)).eval()


if __name__ == "__main__":
    sys.exit(main())
