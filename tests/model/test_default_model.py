"""The shipped default model: loads, stays small, and ranks each start digit's continuations by corpus frequency."""
import json
import math
from collections import Counter
from pathlib import Path

from model import checkpoint, decoding
from model.data import corpus_hash

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"


def test_default_checkpoint_loads_and_is_under_one_megabyte():
    ckpt = checkpoint.load(WEIGHTS / "default.pt")
    assert (WEIGHTS / "default.pt").stat().st_size < 1_000_000
    assert ckpt.config.attention and ckpt.config.seq_length == 5 and ckpt.config.vocab_size == 10
    assert ckpt.metrics["top1_agreement"] == 1.0


def test_default_model_was_trained_on_the_shipped_corpus_and_ranks_by_frequency():
    sequences = json.loads((WEIGHTS / "corpus.json").read_text())["sequences"]
    ckpt = checkpoint.load(WEIGHTS / "default.pt")
    assert ckpt.data["sha256"] == corpus_hash(sequences)
    for seed_example in ([7, 2, 8, 4, 3], [6, 9, 4, 7, 1], [2, 5, 1, 8, 5], [7, 6, 5, 2, 8], [7, 9, 1, 2, 4]):
        assert seed_example in sequences
    counts = Counter(map(tuple, sequences))
    for start in range(10):
        expected = sorted((s for s in counts if s[0] == start), key=lambda s: -counts[s])
        top = decoding.topk(ckpt.model, [[start]], len(expected))[0]
        assert [tuple(c.sequence) for c in top] == expected
        assert math.exp(top[0].score) > 0.4
