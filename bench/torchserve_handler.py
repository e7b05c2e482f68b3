"""TorchServe handler for bench/torchserve.py: the shipped checkpoint, loaded by this repository's own
`model.checkpoint.load`, answering each request of the batch TorchServe forms with `model.decoding.greedy`.

Request body: {"prefix": [7, 2]} (or {"start": 7}); answer: {"sequence": [...], "score": ...}, as /predict's.
The archive carries default.pt and its .sha256 manifest; the repository root (for the `model` package) comes
from SEQ2SEQ_REPO or PYTHONPATH. A function entry point (TorchServe calls handle(None, context) once to
initialise), so the handler needs neither numpy nor pyyaml from ts.torch_handler.base_handler.
"""
from __future__ import annotations

import json
import os
import sys

_model = None
_greedy = None


def _initialise(context) -> None:
    global _model, _greedy
    repo = os.environ.get("SEQ2SEQ_REPO")
    if repo and repo not in sys.path:
        sys.path.insert(0, repo)
    import torch

    from model import checkpoint, decoding

    torch.set_num_threads(int(os.environ.get("TS_TORCH_THREADS", "1")))  # the service's SEQ2SEQ_THREADS default
    model_dir = context.system_properties.get("model_dir")
    _model = checkpoint.load(os.path.join(model_dir, "default.pt")).model.eval()
    _greedy = decoding.greedy
    _greedy(_model, [[0]])  # warm up, as the service does


def _prefix(row) -> list[int]:
    body = row.get("body") if row.get("body") is not None else row.get("data")
    if isinstance(body, (bytes, bytearray, str)):
        body = json.loads(body)
    if "prefix" in body:
        return [int(t) for t in body["prefix"]]
    return [int(body["start"])]


def handle(data, context):
    if data is None:  # TorchServe's initialisation call for a function entry point
        _initialise(context)
        return None
    prefixes = [_prefix(row) for row in data]
    return [{"sequence": d.sequence, "score": d.score} for d in _greedy(_model, prefixes)]
