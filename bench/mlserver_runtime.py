"""MLServer runtime for bench/oip.py: the shipped checkpoint, loaded by this repository's own `model.checkpoint.load`,
answering the Open Inference Protocol's infer with `model.decoding.greedy`, the way an MLServer user would write it.

Input `prefix` INT64 [N, L]; outputs `sequence` INT64 [N, seq_length] and `probability` FP32 [N], the tensors our
/v2 infer answers without `k`, in the same shapes. The input goes through MLServer's NumpyCodec. The repository root (for the `model`
package) comes from SEQ2SEQ_REPO or PYTHONPATH; the checkpoint from the model settings' `parameters.uri`.
MLServer's adaptive batching concatenates requests along the first axis, so one batch must share L: the bench
sends prefixes of one length.
"""
from __future__ import annotations

import math
import os
import sys

from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput


class Seq2SeqRuntime(MLModel):
    async def load(self) -> bool:
        repo = os.environ.get("SEQ2SEQ_REPO")
        if repo and repo not in sys.path:
            sys.path.insert(0, repo)
        import torch

        from model import checkpoint, decoding

        torch.set_num_threads(int(os.environ.get("MLSERVER_TORCH_THREADS", "1")))  # the service's SEQ2SEQ_THREADS
        self._model = checkpoint.load(self.settings.parameters.uri).model.eval()
        self._greedy = decoding.greedy
        self._greedy(self._model, [[0]])  # warm up, as the service does
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        prefixes = self.decode(payload.inputs[0], default_codec=NumpyCodec).tolist()
        decoded = self._greedy(self._model, prefixes)
        rows = len(decoded)
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=[
            ResponseOutput(name="sequence", datatype="INT64", shape=[rows, len(decoded[0].sequence)],
                           data=[t for d in decoded for t in d.sequence]),
            ResponseOutput(name="probability", datatype="FP32", shape=[rows],
                           data=[math.exp(d.score) for d in decoded])])
