"""Inference: the engine the routes call, dynamic batching, the response cache."""
