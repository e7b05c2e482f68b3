"""The Open Inference Protocol's JSON objects, as this service fills them: what OpenAPI shows for /v2 and what the
metadata routes answer. The infer route reads and writes its tensors itself (app.http.oip.codec); these models
describe them."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from model.config import ModelConfig

from ..schemas import MAX_BATCH, MAX_K
from . import codec

PLATFORM = "pytorch"
EXTENSIONS = ["binary_tensor_data"]


class OipError(BaseModel):
    error: str = Field(description="what is wrong, naming the field (e.g. `inputs[0].shape[1]: must be ...`)")


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool


class ModelReady(BaseModel):
    name: str
    ready: bool


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str] = Field(description="binary_tensor_data: Triton's binary tensor extension")


class TensorMetadata(BaseModel):
    name: str
    datatype: str
    shape: list[int] = Field(description="-1 where the size varies")


class ModelMetadata(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "name": "production", "versions": ["m-20260101-120000-a1b2c3", "default"], "platform": PLATFORM,
        "inputs": [{"name": "prefix", "datatype": "INT64", "shape": [-1, -1]}],
        "outputs": [{"name": "sequence", "datatype": "INT64", "shape": [-1, 5]},
                    {"name": "probability", "datatype": "FP32", "shape": [-1]},
                    {"name": "topk_sequences", "datatype": "INT64", "shape": [-1, -1, 5]},
                    {"name": "topk_probabilities", "datatype": "FP32", "shape": [-1, -1]}]}]})

    name: str = Field(description="the name asked for: an alias or a model id")
    versions: list[str] = Field(description="the model ids the alias has pointed to, newest first (a model id: "
                                            "itself); a version names one of them")
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] | None = Field(None, description="the model id that answers now (`model`), and its "
                                              "vocabulary size and sequence length")


def model_metadata(name: str, versions: list[str], model_id: str, config: ModelConfig) -> ModelMetadata:
    length = config.seq_length
    return ModelMetadata(
        name=name, versions=versions, platform=PLATFORM,
        inputs=[TensorMetadata(name=codec.INPUT, datatype="INT64", shape=[-1, -1])],
        outputs=[TensorMetadata(name=codec.SEQUENCE, datatype="INT64", shape=[-1, length]),
                 TensorMetadata(name=codec.PROBABILITY, datatype="FP32", shape=[-1]),
                 TensorMetadata(name=codec.TOPK_SEQUENCES, datatype="INT64", shape=[-1, -1, length]),
                 TensorMetadata(name=codec.TOPK_PROBABILITIES, datatype="FP32", shape=[-1, -1])],
        parameters={"model": model_id, "vocab_size": config.vocab_size, "seq_length": length})


# -- infer, for OpenAPI only (the route reads the body itself) ---------------------------------------------
class RequestInput(BaseModel):
    name: str = Field(description=f"`{codec.INPUT}`, the only input")
    shape: list[int] = Field(description=f"[N, L]: N prefixes (1 to {MAX_BATCH}) of L tokens")
    datatype: str = Field(description="INT64")
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size: the tensor's bytes after the "
                                              "JSON head (Triton's binary extension) instead of `data`")
    data: list[Any] | None = Field(None, description="N*L integers, row-major, flat or nested")


class RequestOutput(BaseModel):
    name: str = Field(description=", ".join(codec.OUTPUTS))
    parameters: dict[str, Any] | None = Field(None, description="binary_data: true for raw bytes after the JSON head")


class InferenceRequest(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "inputs": [{"name": "prefix", "datatype": "INT64", "shape": [2, 2], "data": [7, 2, 3, 1]}],
        "parameters": {"k": 3}}]})

    id: str | None = None
    parameters: dict[str, Any] | None = Field(None, description=(
        f"k: suggestions per prefix (1 to {MAX_K}) for the topk outputs; session: a session id (or the X-Session-ID "
        "header); binary_data_output: every output as binary unless it says otherwise"))
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(None, description="the outputs to answer, in this order; left out: "
                                                "sequence and probability, and the topk outputs when k is given")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = Field(None, description="binary_data_size, for an output sent as binary")
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "model_name": "production", "model_version": "default",
        "outputs": [{"name": "sequence", "datatype": "INT64", "shape": [2, 5], "data": [7, 2, 8, 4, 3, 3, 1, 4, 1, 5]},
                    {"name": "probability", "datatype": "FP32", "shape": [2], "data": [0.6, 0.93]}]}]})

    model_name: str = Field(description="the name asked for")
    model_version: str = Field(description="the model id that answered")
    id: str | None = None
    parameters: dict[str, Any] | None = Field(None, description=(
        "rollout and arm, when the alias is under a rollout; impressions, with the topk outputs while the service "
        "mints them: one token per row, comma-separated, for POST /feedback"))
    outputs: list[ResponseOutput]


def _inlined(schema: dict) -> dict:
    """A model's JSON schema with its $defs put in place: an inline schema's local refs would not resolve in
    OpenAPI, where `#/` is the whole document."""
    defs = schema.pop("$defs", {})

    def put(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return put(defs[ref.removeprefix("#/$defs/")])
            return {key: put(value) for key, value in node.items()}
        if isinstance(node, list):
            return [put(item) for item in node]
        return node

    return put(schema)


INFER_BODY = {"requestBody": {"required": True, "description": (
    "An inference request as JSON (application/json), or its JSON head followed by the binary tensors, the head's "
    "length in the Inference-Header-Content-Length header"),
    "content": {"application/json": {"schema": _inlined(InferenceRequest.model_json_schema())},
                "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
ERRORS: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": OipError, "description": "400 for invalid input, 403 for a model that needs the key, 404 for "
                                              "an unknown model or version, 413, 415"},
    "5XX": {"model": OipError, "description": "503 while no model is ready, or when decoding is too busy"}}
